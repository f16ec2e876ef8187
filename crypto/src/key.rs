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
//! In one whole memory page, locked with mlock(2) (the `region` crate's safe `lock`, whose
//! guard unlocks on drop). The page lies inside a heap allocation of two pages, so no other
//! allocation shares it: munlock works on whole pages and is not counted, so a page shared
//! with another key would be unlocked when that other key is dropped. The allocation is
//! never resized, so the address is stable for the key's lifetime. On drop the allocation
//! is zeroized before it is unlocked and freed.
//!
//! Process-wide protections (no core dumps, not ptrace-able) are the binary's job
//! (`prctl(PR_SET_DUMPABLE, 0)`); this type only keeps its own bytes off swap and wipes them.

use std::fmt;
use std::path::Path;

use zeroize::{Zeroize, Zeroizing};

use crate::error::{Error, Result};

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
    // Drop order is declaration order, after `Drop::drop` has zeroized `storage`:
    // unlock first, then free.
    _lock: region::LockGuard,
    /// Two pages; the key is at the start of the page-aligned page inside.
    storage: Vec<u8>,
    /// Offset of that page in `storage`.
    offset: usize,
    size: KeySize,
}

impl VolumeKey {
    /// A fresh random key from the operating system's CSPRNG, generated in locked memory.
    pub fn generate(size: KeySize) -> Result<VolumeKey> {
        let mut key = VolumeKey::locked_zeroed(size)?;
        getrandom::fill(key.bytes_mut()).map_err(Error::Random)?;
        Ok(key)
    }

    /// A key recovered from escrow (or read from a key file). `secret` is wiped when dropped
    /// here; its length must be 32 or 64 bytes.
    pub fn from_secret_bytes(secret: Zeroizing<Vec<u8>>) -> Result<VolumeKey> {
        let size = KeySize::from_len(secret.len())?;
        let mut key = VolumeKey::locked_zeroed(size)?;
        key.bytes_mut().copy_from_slice(&secret);
        Ok(key)
    }

    fn locked_zeroed(size: KeySize) -> Result<VolumeKey> {
        let page = region::page::size();
        let storage = vec![0u8; 2 * page];
        let misalignment = storage.as_ptr().addr() % page;
        let offset = (page - misalignment) % page;
        let lock = region::lock(storage[offset..].as_ptr(), page).map_err(Error::LockMemory)?;
        Ok(VolumeKey {
            _lock: lock,
            storage,
            offset,
            size,
        })
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.size.bytes();
        &mut self.storage[self.offset..self.offset + len]
    }

    /// The raw key bytes, borrowed. Copy them only into zeroizing buffers.
    pub fn expose_secret(&self) -> &[u8] {
        &self.storage[self.offset..self.offset + self.size.bytes()]
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
        let mut hex = Zeroizing::new(String::with_capacity(2 * self.len()));
        for &byte in self.expose_secret() {
            hex.push(char::from(hex_digit(byte >> 4)));
            hex.push(char::from(hex_digit(byte & 0x0f)));
        }
        hex
    }

    /// Write the raw key bytes to a new file with mode 0400 (for `tosskey escrow decrypt
    /// --key-out`, to feed `cryptsetup open --type plain --key-file`). Atomic: the file
    /// appears complete or not at all. Refuses to replace an existing file.
    pub fn write_key_file(&self, path: &Path) -> Result<()> {
        crate::escrow::write_new_file(path, self.expose_secret(), false)
    }
}

/// `nibble` (0..=15) as a lower-case hex digit, branch- and table-free.
fn hex_digit(nibble: u8) -> u8 {
    // 9 - nibble wraps to >= 0xf6 exactly when nibble >= 10; its top bit selects the
    // distance from '0'+10 to 'a' (39).
    let above_nine = (9u8.wrapping_sub(nibble) >> 7).wrapping_neg();
    b'0' + nibble + (above_nine & 39)
}

impl Drop for VolumeKey {
    fn drop(&mut self) {
        self.storage.zeroize();
    }
}

impl fmt::Debug for VolumeKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "VolumeKey(<{} bits>)", self.bits())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_the_table() {
        for nibble in 0u8..16 {
            assert_eq!(hex_digit(nibble), b"0123456789abcdef"[usize::from(nibble)]);
        }
    }
}
