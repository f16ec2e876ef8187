//! Read-only proof that the kernel encrypts exactly as claimed.
//!
//! For a set of sectors spread over the volume (first, last, and random ones), read the raw
//! ciphertext from the device under the crypt target, decrypt it in userspace with the key
//! still in memory, read the same sectors through the mapping, and compare. Nothing is
//! written: on a blank disk both sides are the decryption of zeros, which is as good a
//! witness as any plaintext. Both reads use O_DIRECT so neither side can come from a stale
//! page cache.

use std::fs::File;
use std::os::unix::fs::FileExt;

use anyhow::{ensure, Context, Result};
use serde::Serialize;
use tosskey_crypto::SectorCipher;
use tosskey_sysutil::AlignedBuf;

/// How many random sectors are checked besides the first and the last.
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

/// Compare userspace decryption of `raw` against what `mapping` returns.
///
/// `raw_offset` is where the crypt target's data starts on the raw device (the table's
/// `<offset>`, in bytes).
pub fn verify_sectors(
    raw: &File,
    raw_offset: u64,
    mapping: &File,
    cipher: &SectorCipher,
    sector_size: u32,
    offsets: &[u64],
) -> Result<VerifyReport> {
    ensure!(!offsets.is_empty(), "no sectors to verify");
    let len = usize::try_from(sector_size).expect("sector size fits usize");
    let mut expected = AlignedBuf::new(len);
    let mut actual = AlignedBuf::new(len);
    let mut checks = Vec::with_capacity(offsets.len());
    for &offset in offsets {
        raw.read_exact_at(expected.as_mut_slice(), raw_offset + offset)
            .with_context(|| format!("reading raw ciphertext at byte {}", raw_offset + offset))?;
        cipher
            .decrypt(offset / 512, expected.as_mut_slice())
            .context("userspace decryption")?;
        mapping
            .read_exact_at(actual.as_mut_slice(), offset)
            .with_context(|| format!("reading the mapping at byte {offset}"))?;
        checks.push(SectorCheck {
            offset,
            matched: expected.as_mut_slice() == actual.as_mut_slice(),
        });
    }
    // The plaintext copies are only zeros-decrypted or user data; still, do not leave them.
    expected.as_mut_slice().fill(0);
    actual.as_mut_slice().fill(0);
    Ok(VerifyReport {
        sector_size,
        checks,
    })
}
