//! A crypt table line's parameters as the kernel shows them: [`CryptParams`], which displays
//! and parses the kernel's text (the key only as its kind and length).

use std::fmt;
use std::str::FromStr;

use super::{CryptOptions, CryptTarget};
use crate::error::Error;
use crate::target::{syntax, write_counted, Words, ELIDED_KEY};
use crate::types::{DevId, Sectors};

/// The key field of a crypt table line as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptKeyField {
    /// `:<bytes>:<type>:<description>`: the key lives (lived) in the kernel keyring.
    Keyring {
        bytes: usize,
        key_type: String,
        description: String,
    },
    /// A hex key of this many bytes; its value is not kept (it displays as [`ELIDED_KEY`]).
    Hex { bytes: usize },
    /// `-`: no key (cipher_null).
    None,
    /// [`ELIDED_KEY`]: the line was elided before parsing.
    Elided,
}

impl fmt::Display for CryptKeyField {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Keyring {
                bytes,
                key_type,
                description,
            } => write!(f, ":{bytes}:{key_type}:{description}"),
            Self::Hex { .. } | Self::Elided => f.write_str(ELIDED_KEY),
            Self::None => f.write_str("-"),
        }
    }
}

impl FromStr for CryptKeyField {
    type Err = Error;
    /// Parses the key word. The error never quotes it: it may be (part of) a key.
    fn from_str(token: &str) -> Result<Self, Error> {
        if token == "-" {
            return Ok(Self::None);
        }
        if token == ELIDED_KEY {
            return Ok(Self::Elided);
        }
        if let Some(rest) = token.strip_prefix(':') {
            let mut parts = rest.splitn(3, ':');
            let (Some(bytes), Some(key_type), Some(description)) =
                (parts.next(), parts.next(), parts.next())
            else {
                return Err(syntax(
                    "crypt",
                    "the keyring key field is not :<bytes>:<type>:<description>".into(),
                ));
            };
            return Ok(Self::Keyring {
                bytes: bytes
                    .parse()
                    .map_err(|_| syntax("crypt", "the keyring key size is not a number".into()))?,
                key_type: key_type.to_owned(),
                description: description.to_owned(),
            });
        }
        if token.len().is_multiple_of(2) && token.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Ok(Self::Hex {
                bytes: token.len() / 2,
            });
        }
        Err(syntax(
            "crypt",
            "the key field is neither hex, '-', nor a keyring reference".into(),
        ))
    }
}

/// A crypt target's parameters as read back from TABLE_STATUS: `<cipher> <key> <iv_offset>
/// <dev> <offset> [<#opt> <opt>...]`, the key only as its kind and length.
///
/// Displays in the kernel's order (dm-crypt's `crypt_status`): `allow_discards`,
/// `same_cpu_crypt`, `high_priority`, `submit_from_crypt_cpus`, `no_read_workqueue`,
/// `no_write_workqueue`, `integrity:…`, `sector_size:N`, `iv_large_sectors`. That differs
/// from [`CryptTarget::params`], which writes cryptsetup's order; both parse to the same
/// value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptParams {
    pub cipher: String,
    pub key: CryptKeyField,
    pub iv_offset: Sectors,
    pub device: DevId,
    pub offset: Sectors,
    pub options: CryptOptions,
    /// Optional words this crate does not model (e.g. `integrity:...`, `high_priority`).
    pub other_options: Vec<String>,
}

impl CryptParams {
    /// The index of the key among the words of crypt parameters.
    pub const KEY_WORD: usize = 1;
    /// The index of the device among the words of crypt parameters.
    pub const DEVICE_WORD: usize = 3;

    /// Parses crypt parameters (with a real, elided or keyring key field): the [`FromStr`]
    /// parse with the error as text. Nothing derived from a hex key other than its length
    /// is kept.
    pub fn parse(params: &str) -> Result<Self, String> {
        params.parse().map_err(|err: Error| err.to_string())
    }

    /// The target these parameters describe over `length` sectors, or `None` when they hold
    /// options [`CryptTarget`] does not model (`other_options`).
    pub fn target(&self, length: Sectors) -> Result<Option<CryptTarget>, Error> {
        if !self.other_options.is_empty() {
            return Ok(None);
        }
        Ok(Some(
            CryptTarget::new(&self.cipher, self.device, length)?
                .with_offset(self.offset)
                .with_iv_offset(self.iv_offset)
                .with_options(self.options),
        ))
    }

    /// The optional words in the kernel's order.
    fn option_words(&self) -> Vec<String> {
        let o = &self.options;
        let other = |keep: &dyn Fn(&str) -> bool| -> Vec<String> {
            self.other_options
                .iter()
                .filter(|w| keep(w))
                .cloned()
                .collect()
        };
        let flag = |on: bool, word: &str| {
            if on {
                vec![word.to_owned()]
            } else {
                Vec::new()
            }
        };
        let is_high_priority = |w: &str| w == "high_priority";
        let is_integrity = |w: &str| w.starts_with("integrity:");
        [
            flag(o.allow_discards, "allow_discards"),
            flag(o.same_cpu_crypt, "same_cpu_crypt"),
            other(&is_high_priority),
            flag(o.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
            flag(o.no_read_workqueue, "no_read_workqueue"),
            flag(o.no_write_workqueue, "no_write_workqueue"),
            other(&is_integrity),
            if o.sector_size == 512 {
                Vec::new()
            } else {
                vec![format!("sector_size:{}", o.sector_size)]
            },
            flag(o.iv_large_sectors, "iv_large_sectors"),
            other(&|w| !is_high_priority(w) && !is_integrity(w)),
        ]
        .concat()
    }
}

impl fmt::Display for CryptParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {} {}",
            self.cipher, self.key, self.iv_offset, self.device, self.offset
        )?;
        let words = self.option_words();
        write_counted(f, &words.iter().map(String::as_str).collect::<Vec<_>>())
    }
}

impl FromStr for CryptParams {
    type Err = Error;
    fn from_str(params: &str) -> Result<Self, Error> {
        let mut words = Words::new("crypt", params);
        let cipher = words.next("cipher")?.to_owned();
        let key = words.next("key")?.parse()?;
        let iv_offset = words.sectors("iv_offset")?;
        let device = words.device("device")?;
        let offset = words.sectors("offset")?;
        let mut options = CryptOptions::default();
        let mut other_options = Vec::new();
        if words.peek().is_some() {
            let count: usize = words.number("option count")?;
            for _ in 0..count {
                let word = words.next("optional parameter")?;
                if !options.set_word(word)? {
                    other_options.push(word.to_owned());
                }
            }
        }
        words.end()?;
        Ok(Self {
            cipher,
            key,
            iv_offset,
            device,
            offset,
            options,
            other_options,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::KeyRef;

    const KEY64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                         202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

    #[test]
    fn parses_kernel_table_lines() {
        // As the kernel echoes them: sector_size before iv_large_sectors.
        let text = "twofish-xts-plain64 :64:logon:tosskey:t1 0 252:0 0 3 allow_discards sector_size:4096 iv_large_sectors";
        let parsed: CryptParams = text.parse().unwrap();
        assert_eq!(parsed.to_string(), text);
        assert_eq!(parsed.cipher, "twofish-xts-plain64");
        assert_eq!(
            parsed.key,
            CryptKeyField::Keyring {
                bytes: 64,
                key_type: "logon".into(),
                description: "tosskey:t1".into()
            }
        );
        assert_eq!(parsed.device, DevId::new(252, 0));
        assert!(parsed.options.allow_discards && parsed.options.iv_large_sectors);
        assert_eq!(parsed.options.sector_size, 4096);
        let hex = CryptParams::parse(&format!("aes-xts-plain64 {KEY64} 16 7:1 8")).unwrap();
        assert_eq!(hex.key, CryptKeyField::Hex { bytes: 64 });
        assert_eq!((hex.iv_offset, hex.offset), (Sectors(16), Sectors(8)));
        assert!(!format!("{hex:?}").contains("0a0b"));
        // A parsed table holds no key: the hex key displays elided, as DmControl::table has it.
        assert_eq!(
            hex.to_string(),
            format!("aes-xts-plain64 {ELIDED_KEY} 16 7:1 8")
        );
        let other =
            CryptParams::parse("aes-xts-plain64 - 0 7:1 0 2 high_priority integrity:28:aead")
                .unwrap();
        assert_eq!(other.other_options, ["high_priority", "integrity:28:aead"]);
        assert!(CryptParams::parse("aes-xts-plain64").is_err());
        assert!(CryptParams::parse("aes-xts-plain64 - 0 7:1 0 2 allow_discards").is_err());
        assert!(CryptParams::parse("aes-xts-plain64 - 0 /dev/sda 0").is_err());
        let err = CryptParams::parse("aes-xts-plain64 zz01secret 0 7:1 0").unwrap_err();
        assert!(!err.contains("secret"), "{err}");
    }

    /// The kernel's option order (dm-crypt `crypt_status`), with words this crate does not
    /// model in their kernel places, survives a parse and display.
    #[test]
    fn every_kernel_option_round_trips_in_kernel_order() {
        for text in [
            "aes-xts-plain64 - 0 7:1 0",
            "aes-xts-plain64 :32:logon:tosskey:a-s1 2048 7:1 2048 1 iv_large_sectors",
            "capi:xts(aes)-plain64 <key-elided> 0 253:4 0 1 sector_size:4096",
            "aes-xts-plain64 - 0 7:1 0 9 allow_discards same_cpu_crypt high_priority \
             submit_from_crypt_cpus no_read_workqueue no_write_workqueue integrity:28:aead \
             sector_size:4096 iv_large_sectors",
        ] {
            let parsed: CryptParams = text.parse().unwrap();
            assert_eq!(parsed.to_string(), text);
            let again: CryptParams = parsed.to_string().parse().unwrap();
            assert_eq!(again, parsed);
        }
    }

    /// What tosskey loads (cryptsetup's order) and what the kernel shows back (its order)
    /// are the same parameters.
    #[test]
    fn loaded_text_and_kernel_text_parse_alike() {
        let options = CryptOptions {
            allow_discards: true,
            iv_large_sectors: true,
            sector_size: 4096,
            ..CryptOptions::default()
        };
        let target = CryptTarget::new("twofish-xts-plain64", DevId::new(7, 0), Sectors(4096))
            .unwrap()
            .with_options(options);
        let key = KeyRef::Keyring {
            bytes: 64,
            description: "tosskey:v".into(),
        };
        let loaded = target.params(&key).unwrap();
        assert!(loaded.ends_with("3 allow_discards iv_large_sectors sector_size:4096"));
        let kernel = "twofish-xts-plain64 :64:logon:tosskey:v 0 7:0 0 3 allow_discards sector_size:4096 iv_large_sectors";
        let parsed: CryptParams = loaded.parse().unwrap();
        assert_eq!(parsed, kernel.parse().unwrap());
        assert_eq!(parsed.to_string(), kernel);
        assert_eq!(parsed.target(Sectors(4096)).unwrap(), Some(target));
    }
}
