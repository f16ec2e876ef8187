//! Read-only proof that the kernel encrypts exactly as claimed.
//!
//! For a set of sectors spread over the volume (for each key of the mapping, the first, the
//! last and random sectors of its range), read the raw ciphertext from the device under the
//! crypt target, decrypt it in userspace with that key still in memory, read the same sectors
//! through the mapping, and compare. Nothing is
//! written: on a blank disk both sides are the decryption of zeros, which is as good a
//! witness as any plaintext. Both reads use O_DIRECT so neither side can come from a stale
//! page cache.
//!
//! Over a mirrored array (md raid1, raid10) the raw side is not read through the array:
//! its never-written sectors differ between the mirrors (the array is built without a
//! resync, and the disks held other data before), and md may serve the raw read and the
//! mapped read from different mirrors. Every copy of the sector is read from its member
//! directly instead, and the sector matches when the userspace decryption of one of them
//! is what the mapping returned: that proves the cipher on the copy md served, whichever
//! it was, and still writes nothing (so recovering a volume that holds data verifies the
//! same way). Writing a known pattern through the mapping first would also do, but only
//! on a fresh volume: recovery must not write.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use tosskey_crypto::sector::{SectorCipher, SectorLayout};
use tosskey_crypto::spec::BlockCipher;
use tosskey_sysutil::AlignedBuf;
use zeroize::Zeroize as _;

/// How many random sectors are checked besides the first and the last (shared out over the
/// keys of a mapping with a key scope: at least one per key).
pub const RANDOM_SECTORS: usize = 6;

/// One verified sector.
#[derive(Debug, Clone, Serialize, PartialEq, Eq)]
pub struct SectorCheck {
    /// Byte offset inside the mapping.
    pub offset: u64,
    pub matched: bool,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub sector_size: u32,
    pub checks: Vec<SectorCheck>,
}

impl VerifyReport {
    pub fn all_matched(&self) -> bool {
        !self.checks.is_empty() && self.checks.iter().all(|c| c.matched)
    }
}

/// Byte offsets (sector-aligned, inside the mapping) to verify: the first sector, the last,
/// and `random` others drawn from `seed` material.
pub fn spread_offsets(volume_bytes: u64, sector_size: u32, random: &[u64]) -> Vec<u64> {
    let sector = u64::from(sector_size);
    let sectors = volume_bytes / sector;
    if sectors == 0 {
        return Vec::new();
    }
    let mut offsets = vec![0, (sectors - 1) * sector];
    offsets.extend(random.iter().map(|r| (r % sectors) * sector));
    offsets.sort_unstable();
    offsets.dedup();
    offsets
}

/// `random` sector picks from the operating system's random source.
pub fn random_picks(count: usize) -> Result<Vec<u64>> {
    let mut bytes = vec![0u8; count * 8];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("getrandom failed: {e}"))?;
    Ok(bytes
        .chunks_exact(8)
        .map(|c| u64::from_le_bytes(c.try_into().expect("chunks of 8")))
        .collect())
}

/// One key's part of the mapping: bytes `start..start + length`, encrypted with `key`.
#[derive(Clone, Copy)]
pub struct KeyedRange<'k> {
    pub start: u64,
    pub length: u64,
    pub key: &'k [u8],
}

impl std::fmt::Debug for KeyedRange<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("KeyedRange")
            .field("start", &self.start)
            .field("length", &self.length)
            .finish_non_exhaustive()
    }
}

/// How the mapping encrypts: cipher and sector layout (sector size, IV numbering).
#[derive(Debug, Clone, Copy)]
pub struct Encryption {
    pub cipher: BlockCipher,
    pub layout: SectorLayout,
}

/// One sector to check: its byte offset inside the mapping and the range (key) it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pick {
    pub range: usize,
    pub offset: u64,
}

/// Every range's first and last sector and `random_per_range` random ones (from the
/// operating system's random source), in mapping order.
pub fn pick_sectors(
    ranges: &[KeyedRange<'_>],
    sector_size: u32,
    random_per_range: usize,
) -> Result<Vec<Pick>> {
    let random = random_picks(random_per_range * ranges.len())?;
    let mut picks = Vec::new();
    for (index, range) in ranges.iter().enumerate() {
        let draws = &random[index * random_per_range..(index + 1) * random_per_range];
        picks.extend(
            spread_offsets(range.length, sector_size, draws)
                .into_iter()
                .map(|offset| Pick {
                    range: index,
                    offset: range.start + offset,
                }),
        );
    }
    Ok(picks)
}

/// Where the ciphertext under the crypt target is read, every file opened with O_DIRECT.
#[derive(Clone, Copy)]
pub enum RawSide<'a> {
    /// The device under the crypt target.
    Device(&'a File),
    /// A mirrored array under the crypt target, read copy by copy from its members.
    Mirrors {
        /// The array's members, in slot order.
        members: &'a [File],
        /// Where the copies of an array byte offset lie: (member index, member offset).
        copies: &'a dyn Fn(u64) -> Vec<(usize, u64)>,
    },
}

impl std::fmt::Debug for RawSide<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            RawSide::Device(file) => f.debug_tuple("Device").field(file).finish(),
            RawSide::Mirrors { members, .. } => f
                .debug_struct("Mirrors")
                .field("members", members)
                .finish_non_exhaustive(),
        }
    }
}

/// The two sides a verification compares, and how to get from one to the other.
#[derive(Debug, Clone, Copy)]
pub struct Sides<'a> {
    /// The ciphertext under the crypt target.
    pub raw: RawSide<'a>,
    /// Where the crypt target's data starts on `raw` (the table's `<offset>`, in bytes).
    pub raw_offset: u64,
    /// The mapping, opened with O_DIRECT.
    pub mapping: &'a File,
    /// The mapping's encryption sector in bytes: what one check reads.
    pub sector_size: u32,
    /// How userspace decrypts (normally the mapping's sector size again).
    pub encryption: Encryption,
    /// The mapping's key ranges; a [`Pick`] names one by index.
    pub ranges: &'a [KeyedRange<'a>],
}

/// Most sectors read in one call: picks on consecutive sectors (the last sector of one key's
/// range and the first of the next) are read together.
const MAX_RUN_SECTORS: usize = 8;

/// `picks` cut into runs of consecutive sectors (each at most [`MAX_RUN_SECTORS`]), as index
/// ranges into `picks`: each run is one read per side.
fn runs(picks: &[Pick], sector_bytes: u64) -> Vec<std::ops::Range<usize>> {
    let mut runs = Vec::new();
    let mut start = 0;
    for index in 1..=picks.len() {
        let continues = index < picks.len()
            && index - start < MAX_RUN_SECTORS
            && picks[index].offset == picks[index - 1].offset + sector_bytes;
        if !continues {
            runs.push(start..index);
            start = index;
        }
    }
    runs
}

/// A read buffer for decrypted sectors, zeroized when dropped on every path out of
/// [`verify_ranges`] (an error included), with writes the compiler may not drop as dead
/// stores (a `fill(0)` right before the free may be removed). The plaintext is zeros or
/// user data, not key material; still, it is not left in freed memory.
struct WipedBuf(AlignedBuf);

impl WipedBuf {
    fn new(len: usize) -> Self {
        WipedBuf(AlignedBuf::new(len))
    }

    fn as_slice(&self) -> &[u8] {
        self.0.as_slice()
    }

    fn as_mut_slice(&mut self) -> &mut [u8] {
        self.0.as_mut_slice()
    }

    /// What drop does: every byte overwritten with zero.
    fn wipe(&mut self) {
        self.0.as_mut_slice().zeroize();
    }
}

impl Drop for WipedBuf {
    fn drop(&mut self) {
        self.wipe();
    }
}

impl zeroize::ZeroizeOnDrop for WipedBuf {}

/// Compare userspace decryption of the raw side against what the mapping returns, for every
/// picked sector, each decrypted with the key of its range; the report lists them in the
/// order given. Picks on consecutive sectors are read with one call per side. A range's
/// cipher is built when the checks reach it, and dropped before the next one is built (one
/// locked cipher at a time).
///
/// The reads dominate (in the emulated guest, 180 sectors of 60 keys: 0.9-2.6 s of raw reads
/// and 1.5-4.0 s of mapped reads, 0.2-1.2 s building ciphers, 0.1 s decrypting). Checking on
/// 16 threads was tried and made a one-key verification many times slower there (0.04-0.22 s
/// to 0.3-1.8 s): the reads stay one after the other.
pub fn verify_ranges(sides: Sides<'_>, picks: &[Pick]) -> Result<VerifyReport> {
    ensure!(!picks.is_empty(), "no sectors to verify");
    let len = usize::try_from(sides.sector_size).expect("sector sizes fit usize");
    let mut laps = Laps::new(crate::exec::hooks::step_times_requested());
    let mut expected = WipedBuf::new(len * MAX_RUN_SECTORS);
    let mut actual = WipedBuf::new(len * MAX_RUN_SECTORS);
    let mut cipher: Option<(usize, SectorCipher)> = None;
    let mut checks = Vec::with_capacity(picks.len());
    let runs = runs(picks, len as u64);
    for run in &runs {
        let mut since = std::time::Instant::now();
        let first = picks[run.start].offset;
        let bytes = run.len() * len;
        if let RawSide::Device(raw) = sides.raw {
            raw.read_exact_at(
                &mut expected.as_mut_slice()[..bytes],
                sides.raw_offset + first,
            )
            .with_context(|| {
                format!(
                    "reading raw ciphertext at byte {}",
                    sides.raw_offset + first
                )
            })?;
        }
        laps.lap(Laps::RAW_READS, &mut since);
        sides
            .mapping
            .read_exact_at(&mut actual.as_mut_slice()[..bytes], first)
            .with_context(|| format!("reading the mapping at byte {first}"))?;
        laps.lap(Laps::MAPPED_READS, &mut since);
        for (at, pick) in picks[run.clone()].iter().enumerate() {
            let sector_cipher = cipher_for(&mut cipher, &sides, pick)?;
            laps.lap(Laps::CIPHERS, &mut since);
            let sector = at * len..(at + 1) * len;
            let mapped = &actual.as_slice()[sector.clone()];
            let decrypted = &mut expected.as_mut_slice()[sector];
            let matched = check_sector(&sides, pick, sector_cipher, decrypted, mapped)?;
            checks.push(SectorCheck {
                offset: pick.offset,
                matched,
            });
            laps.lap(Laps::DECRYPTION, &mut since);
        }
    }
    laps.report(checks.len(), runs.len());
    Ok(VerifyReport {
        sector_size: sides.sector_size,
        checks,
    })
}

/// Test-only (see exec::hooks::crash_point): where verification spends its time.
struct Laps {
    timing: bool,
    spent: [std::time::Duration; 4],
}

impl Laps {
    const CIPHERS: usize = 0;
    const RAW_READS: usize = 1;
    const DECRYPTION: usize = 2;
    const MAPPED_READS: usize = 3;

    fn new(timing: bool) -> Self {
        Laps {
            timing,
            spent: [std::time::Duration::ZERO; 4],
        }
    }

    /// The time since `since` goes to `slot`; `since` becomes now.
    fn lap(&mut self, slot: usize, since: &mut std::time::Instant) {
        if self.timing {
            let now = std::time::Instant::now();
            self.spent[slot] += now - *since;
            *since = now;
        }
    }

    fn report(&self, sectors: usize, reads: usize) {
        if self.timing {
            let [ciphers, raw_reads, decryption, mapped_reads] =
                self.spent.map(|d| d.as_secs_f64());
            eprintln!(
                "tosskey: verify of {sectors} sectors in {reads} reads per side: ciphers {ciphers:.3}, raw reads {raw_reads:.3}, decryption {decryption:.3}, mapped reads {mapped_reads:.3}",
            );
        }
    }
}

/// The userspace cipher of `pick`'s range: the one in `cipher` if it is that range's, else
/// built after the previous one is dropped (one locked cipher at a time).
fn cipher_for<'c>(
    cipher: &'c mut Option<(usize, SectorCipher)>,
    sides: &Sides<'_>,
    pick: &Pick,
) -> Result<&'c SectorCipher> {
    if cipher.as_ref().map(|(range, _)| *range) != Some(pick.range) {
        drop(cipher.take());
        let range = sides
            .ranges
            .get(pick.range)
            .with_context(|| format!("sector {} names range {}", pick.offset, pick.range))?;
        *cipher = Some((
            pick.range,
            SectorCipher::new(sides.encryption.cipher, range.key, sides.encryption.layout)
                .context("userspace cipher")?,
        ));
    }
    let Some((_, sector_cipher)) = cipher else {
        unreachable!("built above")
    };
    Ok(sector_cipher)
}

/// Whether `mapped` (what the mapping returned for `pick`) is the userspace decryption of
/// its raw ciphertext: `decrypted` holds the raw sector read from a device, and is where each
/// mirror's copy is read and decrypted until one matches.
fn check_sector(
    sides: &Sides<'_>,
    pick: &Pick,
    sector_cipher: &SectorCipher,
    decrypted: &mut [u8],
    mapped: &[u8],
) -> Result<bool> {
    match sides.raw {
        RawSide::Device(_) => {
            sector_cipher
                .decrypt(pick.offset / tosskey_sysutil::SECTOR_SIZE, decrypted)
                .context("userspace decryption")?;
            Ok(*decrypted == *mapped)
        }
        RawSide::Mirrors { members, copies } => {
            for (member, at) in copies(sides.raw_offset + pick.offset) {
                let file = members
                    .get(member)
                    .with_context(|| format!("sector {} names member {member}", pick.offset))?;
                file.read_exact_at(decrypted, at).with_context(|| {
                    format!("reading raw ciphertext of member {member} at byte {at}")
                })?;
                sector_cipher
                    .decrypt(pick.offset / tosskey_sysutil::SECTOR_SIZE, decrypted)
                    .context("userspace decryption")?;
                if *decrypted == *mapped {
                    return Ok(true);
                }
            }
            Ok(false)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What a test can see: the buffers are the type that wipes itself on drop (the
    /// `ZeroizeOnDrop` bound does not compile for a plain `AlignedBuf`), and its wipe
    /// leaves only zeros. Freed memory itself cannot be read from safe code.
    #[test]
    fn the_sector_buffers_wipe_themselves_on_drop() {
        fn wipes_on_drop<T: zeroize::ZeroizeOnDrop>(_: &T) {}
        let mut buffer = WipedBuf::new(2 * 4096);
        wipes_on_drop(&buffer);
        buffer.as_mut_slice().fill(0xa5);
        buffer.wipe();
        assert!(buffer.as_slice().iter().all(|&b| b == 0));
    }

    fn pick(range: usize, offset: u64) -> Pick {
        Pick { range, offset }
    }

    /// A file of `data`, read back with positioned reads like a block device.
    fn file_of(data: &[u8]) -> File {
        let mut file = tempfile::tempfile().unwrap();
        std::io::Write::write_all(&mut file, data).unwrap();
        file
    }

    #[test]
    fn a_mirrored_sector_matches_when_the_copy_md_served_decrypts_to_it() {
        const SECTORS: usize = 4;
        let sector_size = usize::try_from(tosskey_sysutil::SECTOR_SIZE).unwrap();
        let key = [7u8; 64];
        let encryption = Encryption {
            cipher: BlockCipher::Twofish,
            layout: SectorLayout::DEFAULT,
        };
        let cipher = SectorCipher::new(encryption.cipher, &key, encryption.layout).unwrap();
        // What the mapping returns: plaintext whose ciphertext is on mirror 1 only; mirror
        // 0 holds other bytes in sectors 1 and 3 (never written since the array was built).
        let plaintext: Vec<u8> = (0..SECTORS * sector_size)
            .map(|i| u8::try_from(i % 251).unwrap())
            .collect();
        let mut ciphertext = plaintext.clone();
        cipher.encrypt(0, &mut ciphertext).unwrap();
        let mut other = ciphertext.clone();
        for sector in [1, 3] {
            other[sector * sector_size..(sector + 1) * sector_size].fill(0x5a);
        }
        let members = [file_of(&other), file_of(&ciphertext)];
        let mapping = file_of(&plaintext);
        let ranges = [KeyedRange {
            start: 0,
            length: (SECTORS * sector_size) as u64,
            key: &key,
        }];
        let picks: Vec<Pick> = (0..SECTORS as u64)
            .map(|s| pick(0, s * sector_size as u64))
            .collect();
        let verify = |copies: &dyn Fn(u64) -> Vec<(usize, u64)>, raw_members: &[File]| {
            verify_ranges(
                Sides {
                    raw: RawSide::Mirrors {
                        members: raw_members,
                        copies,
                    },
                    raw_offset: 0,
                    mapping: &mapping,
                    sector_size: u32::try_from(sector_size).unwrap(),
                    encryption,
                    ranges: &ranges,
                },
                &picks,
            )
            .unwrap()
        };
        // Both mirrors are candidates: every sector matches one of them.
        assert!(verify(&|offset| vec![(0, offset), (1, offset)], &members).all_matched());
        // Mirror 0 alone: the sectors it never got differ, so a wrong cipher would too.
        let only_first = verify(&|offset| vec![(0, offset)], &members);
        let matched: Vec<bool> = only_first.checks.iter().map(|c| c.matched).collect();
        assert_eq!(matched, [true, false, true, false]);
        // The raw side read through the array (the old way) sees mirror 0 here.
        let through_array = verify_ranges(
            Sides {
                raw: RawSide::Device(&members[0]),
                raw_offset: 0,
                mapping: &mapping,
                sector_size: u32::try_from(sector_size).unwrap(),
                encryption,
                ranges: &ranges,
            },
            &picks,
        )
        .unwrap();
        assert!(!through_array.all_matched());
    }

    #[test]
    fn consecutive_sectors_across_a_key_boundary_are_one_read() {
        // Two ranges of 1 MiB: first, a random and last sector of each.
        let picks = [
            pick(0, 0),
            pick(0, 40_960),
            pick(0, (1 << 20) - 4096),
            pick(1, 1 << 20),
            pick(1, (1 << 20) + 8192),
            pick(1, (2 << 20) - 4096),
        ];
        assert_eq!(runs(&picks, 4096), [0..1, 1..2, 2..4, 4..5, 5..6]);
        // A long stretch of consecutive sectors is cut at MAX_RUN_SECTORS.
        let stretch: Vec<Pick> = (0..20).map(|i| pick(0, i * 4096)).collect();
        assert_eq!(runs(&stretch, 4096), [0..8, 8..16, 16..20]);
        let two_small = runs(&[pick(0, 512), pick(0, 1024)], 512);
        assert_eq!((two_small.len(), two_small[0].clone()), (1, 0..2));
        assert!(runs(&[], 4096).is_empty());
    }
}
