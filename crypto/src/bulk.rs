//! Spreading a large run of sectors over all cores: the run is cut on crypt-sector
//! boundaries into 256 KiB pieces, each knowing its own start sector (so the result is
//! byte-identical to the sequential path), which one thread per core takes from a
//! shared queue until none are left.

use std::sync::Mutex;

use crate::error::Error;
use crate::sector::SectorCipher;
use tosskey_sysutil::SECTOR_SIZE;

/// Runs smaller than this stay on the calling thread (thread start-up would dominate).
const MIN_PARALLEL_BYTES: usize = 512 * 1024;
/// Work unit handed to a thread: a multiple of both sector sizes, small enough that
/// the last pieces even out, large enough that taking one costs nothing.
const PIECE_BYTES: usize = 256 * 1024;

impl SectorCipher {
    /// [`SectorCipher::encrypt`] on all available cores.
    pub fn encrypt_parallel(&self, start: u64, data: &mut [u8]) -> Result<(), Error> {
        self.check(start, data.len())?;
        self.run_parallel(start, data, true);
        Ok(())
    }

    /// [`SectorCipher::decrypt`] on all available cores.
    pub fn decrypt_parallel(&self, start: u64, data: &mut [u8]) -> Result<(), Error> {
        self.check(start, data.len())?;
        self.run_parallel(start, data, false);
        Ok(())
    }

    fn run_parallel(&self, start: u64, data: &mut [u8], encrypt: bool) {
        let threads = std::thread::available_parallelism().map_or(1, usize::from);
        if threads < 2 || data.len() < MIN_PARALLEL_BYTES {
            self.run(start, data, encrypt);
            return;
        }
        // Pieces are handed out one at a time, so a core that is busy with something
        // else simply takes fewer of them instead of holding everyone up.
        let piece = PIECE_BYTES.max(self.layout().sector_size.bytes());
        let mut pieces: Vec<(u64, &mut [u8])> = data
            .chunks_mut(piece)
            .enumerate()
            .map(|(index, chunk)| (start + units_before(index, piece), chunk))
            .collect();
        pieces.reverse();
        let queue = Mutex::new(pieces);
        let work = || loop {
            // A poisoned queue means another worker panicked; the scope re-raises it.
            let Ok(Some((piece_start, chunk))) = queue.lock().map(|mut q| q.pop()) else {
                break;
            };
            self.run(piece_start, chunk, encrypt);
        };
        std::thread::scope(|scope| {
            // A thread that cannot start (RLIMIT_NPROC, no memory for its stack) only means
            // fewer helpers: the calling thread takes whatever pieces are left.
            for _ in 1..threads {
                if std::thread::Builder::new()
                    .spawn_scoped(scope, work)
                    .is_err()
                {
                    break;
                }
            }
            work();
        });
    }
}

/// 512-byte units before piece `index` (bounded by the validated run length).
fn units_before(index: usize, piece: usize) -> u64 {
    u64::try_from(index * piece).map_or(u64::MAX, |bytes| bytes / SECTOR_SIZE)
}
