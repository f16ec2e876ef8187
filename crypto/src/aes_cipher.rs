//! AES for the XTS layer: the `aes` crate (which picks AES-NI at run time and
//! pipelines batches of blocks, or falls back to a constant-time bitsliced software
//! implementation). The VAES/AVX-512 sector path lives in `crate::simd_x86`.

use aes::cipher::{BlockCipherDecrypt, BlockCipherEncrypt, KeyInit};

use crate::xts::{Block, BlockBatch};

/// An AES-128 or AES-256 key schedule (zeroized on drop by the `aes` crate's
/// `zeroize` feature). Its `Debug` prints no key material.
// Stored inline in the sector cipher's locked pages and never moved after that.
#[allow(clippy::large_enum_variant)]
pub(crate) enum AesKey {
    Aes128(aes::Aes128),
    Aes256(aes::Aes256),
}

impl core::fmt::Debug for AesKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        match self {
            Self::Aes128(_) => f.write_str("AesKey::Aes128(..)"),
            Self::Aes256(_) => f.write_str("AesKey::Aes256(..)"),
        }
    }
}

impl AesKey {
    /// A schedule of the all-zero AES-128 key: a non-secret stand-in before a key is
    /// expanded in place and after it is wiped.
    pub(crate) fn placeholder() -> Self {
        Self::Aes128(aes::Aes128::new(&[0u8; 16].into()))
    }

    /// Expands a 16- or 32-byte key; `None` for any other length.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        match key.len() {
            16 => aes::Aes128::new_from_slice(key).ok().map(Self::Aes128),
            32 => aes::Aes256::new_from_slice(key).ok().map(Self::Aes256),
            _ => None,
        }
    }
}

impl BlockBatch for AesKey {
    fn encrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            Self::Aes128(k) => k.encrypt_blocks(blocks),
            Self::Aes256(k) => k.encrypt_blocks(blocks),
        }
    }

    fn decrypt_blocks(&self, blocks: &mut [Block]) {
        match self {
            Self::Aes128(k) => k.decrypt_blocks(blocks),
            Self::Aes256(k) => k.decrypt_blocks(blocks),
        }
    }
}
