//! The volume key: random, locked in memory, wiped on drop, never printable.
//!
//! # Where the bytes come from
//!
//! Straight from the kernel's CSPRNG through getrandom(2) into the locked page. The issue
//! suggested a userspace `ChaCha20Rng` seeded from getrandom; that adds no entropy (the
//! kernel generator is itself ChaCha20-based, seeded and reseeded from hardware noise) but
//! it would add a second copy of the secret — the RNG state, from which the key can be
//! recomputed — in ordinary memory that `rand_chacha` neither locks nor zeroizes. Reading
//! getrandom(2) directly into the destination leaves no such copy.
//!
//! # Where the bytes live
//!
//! In whole pages of an anonymous mapping that no other allocation shares, locked with
//! mlock(2) and excluded from core dumps (`MADV_DONTDUMP`): see `LockedPages`. A
//! [`VolumeKey`] has one page to itself. A [`KeyArena`] packs the keys of every segment of a
//! volume (hundreds with a small key scope) into one such mapping: 64 bytes per 512-bit key,
//! so 300 keys lock 5 pages instead of 300, far below an 8 MiB `RLIMIT_MEMLOCK`. Nothing is
//! ever resized, so addresses are stable for the keys' lifetime; on drop the memory is
//! zeroized before it is unmapped (which also unlocks it).
//!
//! # Equal XTS halves
//!
//! XTS uses the first half of the key for the data and the second for the tweak; equal halves
//! weaken it, FIPS 140-3 (IG C.I) requires rejecting them and the kernel refuses such keys in
//! FIPS mode. A generated key whose halves are equal (probability 2^-128 or 2^-256) is drawn
//! again.
//!
//! Process-wide protections (no core dumps, not ptrace-able) are the binary's job
//! (`prctl(PR_SET_DUMPABLE, 0)`); these types only keep their own bytes off swap and out of
//! dumps, and wipe them.

use std::fmt;
use std::path::Path;

use zeroize::Zeroizing;

use crate::error::{Error, Result};
use crate::locked::LockedPages;

/// Volume key sizes (`--key-size`). XTS splits the key in two: 512 bits is two 256-bit keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum KeySize {
    Bits256,
    Bits512,
}

impl KeySize {
    pub fn from_bits(bits: u32) -> Result<KeySize> {
        match bits {
            256 => Ok(KeySize::Bits256),
            512 => Ok(KeySize::Bits512),
            _ => Err(Error::UnsupportedKeySize { bits }),
        }
    }

    fn from_len(len: usize) -> Result<KeySize> {
        match len {
            32 => Ok(KeySize::Bits256),
            64 => Ok(KeySize::Bits512),
            _ => Err(Error::KeyLength { len }),
        }
    }

    pub fn bits(self) -> u32 {
        match self {
            KeySize::Bits256 => 256,
            KeySize::Bits512 => 512,
        }
    }

    pub fn bytes(self) -> usize {
        match self {
            KeySize::Bits256 => 32,
            KeySize::Bits512 => 64,
        }
    }
}

impl TryFrom<u32> for KeySize {
    type Error = Error;

    fn try_from(bits: u32) -> Result<KeySize> {
        KeySize::from_bits(bits)
    }
}

/// A dm-crypt volume key. Not `Clone`, not `Display`; its `Debug` shows only the size.
pub struct VolumeKey {
    /// One page of its own; the key is at its start.
    pages: LockedPages,
    size: KeySize,
}

impl VolumeKey {
    /// A fresh random key from the operating system's CSPRNG, generated in locked memory;
    /// never one with equal XTS halves.
    pub fn generate(size: KeySize) -> Result<VolumeKey> {
        let mut key = VolumeKey::locked_zeroed(size)?;
        draw_xts_key(
            &mut key.pages.as_mut_slice()[..size.bytes()],
            getrandom_fill,
        )?;
        Ok(key)
    }

    /// A key recovered from escrow (or read from a key file). `secret` is wiped when dropped
    /// here; its length must be 32 or 64 bytes.
    pub fn from_secret_bytes(secret: Zeroizing<Vec<u8>>) -> Result<VolumeKey> {
        let size = KeySize::from_len(secret.len())?;
        let mut key = VolumeKey::locked_zeroed(size)?;
        key.pages.as_mut_slice()[..size.bytes()].copy_from_slice(&secret);
        Ok(key)
    }

    fn locked_zeroed(size: KeySize) -> Result<VolumeKey> {
        Ok(VolumeKey {
            pages: lock_key_memory(size.bytes(), 1)?,
            size,
        })
    }

    /// The raw key bytes, borrowed. Copy them only into zeroizing buffers.
    pub fn expose_secret(&self) -> &[u8] {
        &self.pages.as_slice()[..self.size.bytes()]
    }

    pub fn key_size(&self) -> KeySize {
        self.size
    }

    pub fn bits(&self) -> u32 {
        self.size.bits()
    }

    /// Length in bytes (32 or 64; never zero).
    #[allow(clippy::len_without_is_empty, reason = "a volume key is never empty")]
    pub fn len(&self) -> usize {
        self.size.bytes()
    }

    /// Lower-case hex of the key, for a dm-crypt table line when the kernel keyring is not
    /// available. The buffer is allocated at its final size (no reallocation leaves a stray
    /// copy) and wiped on drop. Digits are computed without a table lookup indexed by secret
    /// nibbles.
    pub fn to_hex(&self) -> Zeroizing<String> {
        tosskey_sysutil::hex_encode_secret(self.expose_secret())
    }

    /// Write the raw key bytes to a new file with mode 0400 (for `tosskey escrow decrypt
    /// --key-out`, to feed `cryptsetup open --type plain --key-file`). Atomic: the file
    /// appears complete or not at all. Refuses to replace an existing file.
    pub fn write_key_file(&self, path: &Path) -> Result<()> {
        crate::escrow::write_new_file(path, self.expose_secret(), false)
    }
}

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeKey(<{} bits>)", self.bits())
    }
}

/// The keys of every segment of a volume (one key per key-scope segment), all of one size,
/// packed into one locked, never-dumped mapping: see the module documentation. Not `Clone`;
/// `Debug` shows only the count and the size; zeroized on drop.
pub struct KeyArena {
    pages: LockedPages,
    size: KeySize,
    count: usize,
}

impl KeyArena {
    /// Largest number of keys in one arena: far more than any volume has segments (336 TB
    /// under 1 TiB keys is 306), small enough that a bad count fails before allocating.
    pub const MAX_KEYS: usize = 4096;

    /// `count` fresh random keys (none with equal XTS halves), each drawn from the
    /// operating system's CSPRNG straight into the arena.
    pub fn generate(size: KeySize, count: usize) -> Result<KeyArena> {
        KeyArena::from_fn(size, count, |_, slot| draw_xts_key(slot, getrandom_fill))
    }

    /// An arena whose key `index` is written by `fill` into its (zeroed) slot; used by the
    /// generator and by escrow recovery. Any error drops (and wipes) the partial arena.
    pub(crate) fn from_fn(
        size: KeySize,
        count: usize,
        mut fill: impl FnMut(usize, &mut [u8]) -> Result<()>,
    ) -> Result<KeyArena> {
        if count == 0 || count > KeyArena::MAX_KEYS {
            return Err(Error::KeyCount {
                count,
                max: KeyArena::MAX_KEYS,
            });
        }
        let mut pages = lock_key_memory(size.bytes(), count)?;
        for (index, slot) in pages
            .as_mut_slice()
            .chunks_exact_mut(size.bytes())
            .take(count)
            .enumerate()
        {
            fill(index, slot)?;
        }
        Ok(KeyArena { pages, size, count })
    }

    /// Key `index` (segment order), borrowed. Copy it only into zeroizing buffers.
    pub fn key(&self, index: usize) -> Option<&[u8]> {
        (index < self.count).then(|| {
            let bytes = self.size.bytes();
            &self.pages.as_slice()[index * bytes..(index + 1) * bytes]
        })
    }

    /// Every key in segment order.
    pub fn iter(&self) -> impl ExactSizeIterator<Item = &[u8]> {
        self.pages
            .as_slice()
            .chunks_exact(self.size.bytes())
            .take(self.count)
    }

    /// Number of keys (at least 1).
    #[allow(
        clippy::len_without_is_empty,
        reason = "an arena holds at least one key"
    )]
    pub fn len(&self) -> usize {
        self.count
    }

    pub fn key_size(&self) -> KeySize {
        self.size
    }

    /// Bytes of locked memory the arena holds (whole pages): the cost of its keys.
    /// Write key `index`'s raw bytes to a new file with mode 0400 (`escrow decrypt
    /// --key-out`, one file per segment), as [`VolumeKey::write_key_file`].
    pub fn write_key_file(&self, index: usize, path: &Path) -> Result<()> {
        let key = self.key(index).ok_or(Error::KeyCount {
            count: index + 1,
            max: self.count,
        })?;
        crate::escrow::write_new_file(path, key, false)
    }

    pub fn locked_bytes(&self) -> usize {
        self.pages.as_slice().len()
    }

    /// Zeroizes every key and unmaps their memory now; true when the memory read back as
    /// zeros and was unmapped (dropping the arena does the same without saying).
    pub fn wipe(self) -> bool {
        self.pages.wipe()
    }
}

impl fmt::Debug for KeyArena {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "KeyArena(<{} keys of {} bits>)",
            self.count,
            self.size.bits()
        )
    }
}

/// Locked, never-dumped memory for `count` keys of `bytes` each.
fn lock_key_memory(bytes: usize, count: usize) -> Result<LockedPages> {
    let total = bytes.saturating_mul(count);
    LockedPages::new(total).map_err(|source| Error::LockKeys {
        bytes: total,
        source,
    })
}

fn getrandom_fill(slot: &mut [u8]) -> Result<()> {
    getrandom::fill(slot).map_err(Error::Random)
}

/// Fills `slot` from `random` until its two XTS halves differ (module documentation).
fn draw_xts_key(slot: &mut [u8], mut random: impl FnMut(&mut [u8]) -> Result<()>) -> Result<()> {
    loop {
        random(slot)?;
        let (data, tweak) = slot.split_at(slot.len() / 2);
        if !halves_equal(data, tweak) {
            return Ok(());
        }
    }
}

/// Compares without an early exit, so the time taken says nothing about where the halves
/// differ.
fn halves_equal(data: &[u8], tweak: &[u8]) -> bool {
    data.iter()
        .zip(tweak)
        .fold(0u8, |diff, (a, b)| diff | (a ^ b))
        == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_key_with_equal_xts_halves_is_drawn_again() {
        // A scripted source: first equal halves, then different ones.
        let mut draws = 0;
        let mut slot = [0u8; 64];
        draw_xts_key(&mut slot, |out| {
            draws += 1;
            for (i, byte) in out.iter_mut().enumerate() {
                *byte = (if draws == 1 { i % 32 } else { i }).to_le_bytes()[0];
            }
            Ok(())
        })
        .unwrap();
        assert_eq!(draws, 2);
        assert_ne!(slot[..32], slot[32..]);
        assert!(halves_equal(&[1, 2], &[1, 2]));
        assert!(!halves_equal(&[1, 2], &[1, 3]));
    }

    #[test]
    fn arena_slots_are_disjoint_and_filled_in_order() {
        let arena = KeyArena::from_fn(KeySize::Bits256, 300, |index, slot| {
            slot.fill(index.to_le_bytes()[0]);
            slot[31] = 0xee;
            Ok(())
        })
        .unwrap();
        assert_eq!(arena.len(), 300);
        assert_eq!(arena.iter().len(), 300);
        for (index, key) in arena.iter().enumerate() {
            assert_eq!(key.len(), 32);
            assert_eq!(key[0], index.to_le_bytes()[0]);
            assert_eq!(Some(key), arena.key(index));
        }
        assert!(arena.key(300).is_none());
        // 300 x 32 bytes = 9600 bytes, in whole pages (three of 4 KiB).
        let page = tosskey_sysutil::mlock::page_size();
        assert_eq!(arena.locked_bytes(), 9600usize.div_ceil(page) * page);
        assert!(matches!(
            KeyArena::from_fn(KeySize::Bits256, 0, |_, _| Ok(())),
            Err(Error::KeyCount { .. })
        ));
    }
}
