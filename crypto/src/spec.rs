//! dm-crypt cipher specifications (`twofish-xts-plain64`, `aes-xts-plain64`).
//!
//! dm-crypt names a cipher `cipher-chainmode-ivmode` (or `capi:chainmode(cipher)-ivmode`).
//! tosskey supports exactly the specs its userspace sector cipher can re-derive, so that
//! every volume it builds can be verified; anything else is refused with the list of what
//! is supported.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::error::{Error, Result};

/// The block cipher under XTS. Both have 128-bit blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockCipher {
    Aes,
    Twofish,
}

impl BlockCipher {
    /// The name dm-crypt and the kernel crypto API use.
    pub fn name(self) -> &'static str {
        match self {
            BlockCipher::Aes => "aes",
            BlockCipher::Twofish => "twofish",
        }
    }
}

impl fmt::Display for BlockCipher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// The chaining mode. Only XTS: it is what dm-crypt plain volumes use today, and the only
/// mode the userspace verifier implements.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ChainMode {
    Xts,
}

impl ChainMode {
    pub fn name(self) -> &'static str {
        match self {
            ChainMode::Xts => "xts",
        }
    }
}

/// The IV generator. Only `plain64`: the 64-bit little-endian sector number, zero-padded
/// to the 16-byte block.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum IvGenerator {
    Plain64,
}

impl IvGenerator {
    pub fn name(self) -> &'static str {
        match self {
            IvGenerator::Plain64 => "plain64",
        }
    }
}

/// A dm-crypt cipher specification such as `twofish-xts-plain64`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct CipherSpec {
    block_cipher: BlockCipher,
    mode: ChainMode,
    iv: IvGenerator,
}

/// The specs tosskey accepts, default first, as printed in errors and help.
pub const SUPPORTED_CIPHER_NAMES: &str = "twofish-xts-plain64, aes-xts-plain64";

impl CipherSpec {
    /// The default, as in the original provisioning script.
    pub const TWOFISH_XTS_PLAIN64: CipherSpec = CipherSpec {
        block_cipher: BlockCipher::Twofish,
        mode: ChainMode::Xts,
        iv: IvGenerator::Plain64,
    };

    pub const AES_XTS_PLAIN64: CipherSpec = CipherSpec {
        block_cipher: BlockCipher::Aes,
        mode: ChainMode::Xts,
        iv: IvGenerator::Plain64,
    };

    /// Every supported spec, default first.
    pub const SUPPORTED: [CipherSpec; 2] = [Self::TWOFISH_XTS_PLAIN64, Self::AES_XTS_PLAIN64];

    pub fn block_cipher(&self) -> BlockCipher {
        self.block_cipher
    }

    pub fn mode(&self) -> ChainMode {
        self.mode
    }

    pub fn iv_generator(&self) -> IvGenerator {
        self.iv
    }

    /// Key sizes the spec takes, in bits. XTS splits the key into a data key and a tweak
    /// key of equal size: 256 bits = two 128-bit keys, 512 bits = two 256-bit keys.
    pub fn supported_key_bits(&self) -> &'static [u32] {
        match self.mode {
            ChainMode::Xts => &[256, 512],
        }
    }

    /// Refuse a key size this spec cannot use.
    pub fn validate_key_bits(&self, bits: u32) -> Result<()> {
        if self.supported_key_bits().contains(&bits) {
            Ok(())
        } else {
            Err(Error::KeyBitsForCipher {
                spec: self.to_string(),
                bits,
            })
        }
    }

    /// The kernel crypto API skcipher name, e.g. `xts(twofish)` (for AF_ALG).
    pub fn kernel_skcipher_name(&self) -> &'static str {
        match (self.mode, self.block_cipher) {
            (ChainMode::Xts, BlockCipher::Twofish) => "xts(twofish)",
            (ChainMode::Xts, BlockCipher::Aes) => "xts(aes)",
        }
    }

    fn from_parts(cipher: &str, mode: &str, iv: &str) -> Option<CipherSpec> {
        let block_cipher = match cipher {
            "twofish" => BlockCipher::Twofish,
            "aes" => BlockCipher::Aes,
            _ => return None,
        };
        let mode = match mode {
            "xts" => ChainMode::Xts,
            _ => return None,
        };
        let iv = match iv {
            "plain64" => IvGenerator::Plain64,
            _ => return None,
        };
        Some(CipherSpec {
            block_cipher,
            mode,
            iv,
        })
    }

    /// `cipher-mode-iv`, or the kernel API form `capi:mode(cipher)-iv`.
    fn parse_str(spec: &str) -> Option<CipherSpec> {
        if let Some(capi) = spec.strip_prefix("capi:") {
            let (skcipher, iv) = capi.rsplit_once('-')?;
            let (mode, rest) = skcipher.split_once('(')?;
            let cipher = rest.strip_suffix(')')?;
            return Self::from_parts(cipher, mode, iv);
        }
        let mut parts = spec.split('-');
        let (cipher, mode, iv) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        Self::from_parts(cipher, mode, iv)
    }
}

impl Default for CipherSpec {
    fn default() -> Self {
        Self::TWOFISH_XTS_PLAIN64
    }
}

impl FromStr for CipherSpec {
    type Err = Error;

    fn from_str(spec: &str) -> Result<Self> {
        Self::parse_str(spec).ok_or_else(|| Error::UnsupportedCipher {
            spec: spec.escape_debug().to_string(),
        })
    }
}

/// The canonical dm-crypt form, `cipher-mode-iv`.
impl fmt::Display for CipherSpec {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}",
            self.block_cipher.name(),
            self.mode.name(),
            self.iv.name()
        )
    }
}

/// Serialized as its dm-crypt string.
impl Serialize for CipherSpec {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        serializer.collect_str(self)
    }
}

/// Only the canonical form is accepted when deserializing (files are written canonical).
impl<'de> Deserialize<'de> for CipherSpec {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> std::result::Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        let spec: CipherSpec = text.parse().map_err(serde::de::Error::custom)?;
        if spec.to_string() != text {
            return Err(serde::de::Error::custom(format!(
                "cipher \"{}\" is not in canonical form \"{spec}\"",
                text.escape_debug()
            )));
        }
        Ok(spec)
    }
}
