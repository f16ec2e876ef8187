//! Spreading a large run of sectors over all cores: the run is cut on crypt-sector
//! boundaries into one contiguous piece per core, each piece knowing its own start
//! sector, so the result is byte-identical to the sequential path.

use crate::error::Error;
use crate::sector::SectorCipher;

/// Runs smaller than this stay on the calling thread (thread start-up would dominate).
const MIN_PARALLEL_BYTES: usize = 256 * 1024;

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
        let sector_bytes = self.layout().sector_size.bytes();
        let sectors = data.len() / sector_bytes;
        if threads < 2 || data.len() < MIN_PARALLEL_BYTES || sectors < 2 {
            self.run(start, data, encrypt);
            return;
        }
        let piece = sectors.div_ceil(threads) * sector_bytes;
        std::thread::scope(|scope| {
            let mut pieces = data.chunks_mut(piece).enumerate();
            // The calling thread takes the first piece itself.
            let first = pieces.next();
            for (index, chunk) in pieces {
                let piece_start = start + units_before(index, piece);
                scope.spawn(move || self.run(piece_start, chunk, encrypt));
            }
            if let Some((_, chunk)) = first {
                self.run(start, chunk, encrypt);
            }
        });
    }
}

/// 512-byte units before piece `index` (bounded by the validated run length).
fn units_before(index: usize, piece: usize) -> u64 {
    u64::try_from(index * piece / 512).unwrap_or(u64::MAX)
}
