//! AES for the XTS layer: the `aes` crate (which picks AES-NI at run time and
//! pipelines batches of blocks, or falls back to a constant-time bitsliced software
//! implementation). The VAES/AVX-512 sector path lives in `crate::simd_x86`.

use aes::cipher::{BlockDecrypt, BlockEncrypt, KeyInit};

use crate::xts::{Block, BlockBatch};

/// An AES-128 or AES-256 key schedule (zeroized on drop by the `aes` crate's
/// `zeroize` feature). Its `Debug` prints no key material.
pub(crate) enum AesKey {
    Aes128(Box<aes::Aes128>),
    Aes256(Box<aes::Aes256>),
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
    /// Expands a 16- or 32-byte key; `None` for any other length.
    pub(crate) fn new(key: &[u8]) -> Option<Self> {
        match key.len() {
            16 => aes::Aes128::new_from_slice(key)
                .ok()
                .map(|k| Self::Aes128(Box::new(k))),
            32 => aes::Aes256::new_from_slice(key)
                .ok()
                .map(|k| Self::Aes256(Box::new(k))),
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
