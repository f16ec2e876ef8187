//! The `crypt` target: `<cipher> <key> <iv_offset> <dev> <offset> [<#opt> <opt>...]`, built
//! from a [`CryptTarget`] and a [`KeyRef`] for TABLE_LOAD (here) and read back as
//! [`CryptParams`] (`params`).

mod params;

pub use params::{CryptKeyField, CryptParams};

use std::fmt::{self, Write as _};

use zeroize::Zeroizing;

use super::{syntax, TargetLine, ELIDED_KEY};
use crate::error::Error;
use crate::ioctl::lock_in_memory;
use crate::types::{DevId, Sectors, SECTOR_SIZE};
use tosskey_sysutil::hex_encode_secret;

/// How the crypt target gets its key.
pub enum KeyRef {
    /// A key in the kernel keyring: rendered `:<bytes>:logon:<description>`. dm-crypt looks
    /// it up during TABLE_LOAD in the loading thread's keyrings.
    Keyring { bytes: usize, description: String },
    /// A hex-encoded key (lower case), carried in the table itself.
    Hex(Zeroizing<String>),
}

impl fmt::Debug for KeyRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            KeyRef::Keyring { bytes, description } => f
                .debug_struct("Keyring")
                .field("bytes", bytes)
                .field("description", description)
                .finish(),
            KeyRef::Hex(hex) => write!(f, "Hex(<{} bytes elided>)", hex.len() / 2),
        }
    }
}

impl KeyRef {
    /// Hex-encodes `key` with [`hex_encode_secret`].
    pub fn hex_from_bytes(key: &[u8]) -> Self {
        KeyRef::Hex(hex_encode_secret(key))
    }

    /// Key length in bytes.
    pub fn key_bytes(&self) -> usize {
        match self {
            KeyRef::Keyring { bytes, .. } => *bytes,
            KeyRef::Hex(hex) => hex.len() / 2,
        }
    }

    fn rendered_len(&self) -> usize {
        match self {
            KeyRef::Keyring { description, .. } => description.len() + 32,
            KeyRef::Hex(hex) => hex.len(),
        }
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: &str| Error::InvalidTarget {
            target: "crypt",
            reason: reason.to_owned(),
        };
        match self {
            KeyRef::Keyring { bytes, description } => {
                if *bytes == 0 {
                    return Err(invalid("the keyring key size is 0"));
                }
                if description.is_empty()
                    || !description.contains(':')
                    || !description.bytes().all(|b| b.is_ascii_graphic())
                {
                    return Err(invalid(
                        "a logon key description must be printable, without spaces, and look like prefix:name",
                    ));
                }
            }
            KeyRef::Hex(hex) => {
                // The message must not contain the key: report only the shape.
                if hex.is_empty() || !hex.len().is_multiple_of(2) {
                    return Err(invalid("the hex key has an odd or zero number of digits"));
                }
                if !hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                    return Err(invalid("the hex key contains non-hex characters"));
                }
            }
        }
        Ok(())
    }
}

/// Optional parameters of the crypt target. `Default` is what `cryptsetup open --type plain`
/// uses without performance flags: 512-byte sectors, IV in 512-byte units, no discards.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CryptOptions {
    /// Pass discards down (leaks which blocks are in use).
    pub allow_discards: bool,
    pub same_cpu_crypt: bool,
    pub submit_from_crypt_cpus: bool,
    /// Kernel 5.9+.
    pub no_read_workqueue: bool,
    /// Kernel 5.9+.
    pub no_write_workqueue: bool,
    /// Count the IV in `sector_size` units instead of 512-byte units.
    pub iv_large_sectors: bool,
    /// Encryption sector size in bytes: 512, 1024, 2048 or 4096.
    pub sector_size: u32,
}

impl Default for CryptOptions {
    fn default() -> Self {
        Self {
            allow_discards: false,
            same_cpu_crypt: false,
            submit_from_crypt_cpus: false,
            no_read_workqueue: false,
            no_write_workqueue: false,
            iv_large_sectors: false,
            sector_size: 512,
        }
    }
}

impl CryptOptions {
    /// Sets the option an optional-parameter word names: `Ok(false)` for a word this type
    /// does not model (kept by the caller), an error for a malformed `sector_size:N`.
    fn set_word(&mut self, word: &str) -> Result<bool, Error> {
        let flag = match word {
            "allow_discards" => &mut self.allow_discards,
            "same_cpu_crypt" => &mut self.same_cpu_crypt,
            "submit_from_crypt_cpus" => &mut self.submit_from_crypt_cpus,
            "no_read_workqueue" => &mut self.no_read_workqueue,
            "no_write_workqueue" => &mut self.no_write_workqueue,
            "iv_large_sectors" => &mut self.iv_large_sectors,
            _ => {
                let Some(size) = word.strip_prefix("sector_size:") else {
                    return Ok(false);
                };
                self.sector_size = size
                    .parse()
                    .map_err(|_| syntax("crypt", format!("bad sector size {size:?}")))?;
                return Ok(true);
            }
        };
        *flag = true;
        Ok(true)
    }

    /// The optional-parameter words in the order cryptsetup's `get_dm_crypt_params()`
    /// (lib/libdevmapper.c) emits them: flags first, `sector_size:N` last, and only the ones
    /// that are set. (The kernel echoes them in its own order: sector_size before
    /// iv_large_sectors.)
    pub fn words(&self) -> Vec<String> {
        let mut words = Vec::new();
        let flags = [
            (self.allow_discards, "allow_discards"),
            (self.same_cpu_crypt, "same_cpu_crypt"),
            (self.submit_from_crypt_cpus, "submit_from_crypt_cpus"),
            (self.no_read_workqueue, "no_read_workqueue"),
            (self.no_write_workqueue, "no_write_workqueue"),
            (self.iv_large_sectors, "iv_large_sectors"),
        ];
        words.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, word)| (*word).to_owned()),
        );
        if self.sector_size != 512 {
            words.push(format!("sector_size:{}", self.sector_size));
        }
        words
    }
}

/// A `crypt` target without its key: `<cipher> <key> <iv_offset> <dev> <offset> [<#opt> <opt>...]`.
/// The key is supplied at render time ([`CryptTarget::line`]), so a plan can be built, shown
/// and checked before any key exists.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptTarget {
    cipher: String,
    device: DevId,
    offset: Sectors,
    length: Sectors,
    iv_offset: Sectors,
    options: CryptOptions,
}

impl CryptTarget {
    /// `length` sectors of `device` from sector 0, encrypted with `cipher` (a dm-crypt cipher
    /// spec such as `twofish-xts-plain64`).
    pub fn new(cipher: &str, device: DevId, length: Sectors) -> Result<Self, Error> {
        if cipher.is_empty() || !cipher.bytes().all(|b| b.is_ascii_graphic()) {
            return Err(Error::InvalidTarget {
                target: "crypt",
                reason: format!("cipher spec {cipher:?} is empty or contains spaces"),
            });
        }
        Ok(Self {
            cipher: cipher.to_owned(),
            device,
            offset: Sectors(0),
            length,
            iv_offset: Sectors(0),
            options: CryptOptions::default(),
        })
    }

    /// Start of the encrypted data on the backing device (cryptsetup `--offset`).
    pub fn with_offset(mut self, offset: Sectors) -> Self {
        self.offset = offset;
        self
    }

    /// Added to the sector number for the IV (cryptsetup `--skip`).
    pub fn with_iv_offset(mut self, iv_offset: Sectors) -> Self {
        self.iv_offset = iv_offset;
        self
    }

    pub fn with_options(mut self, options: CryptOptions) -> Self {
        self.options = options;
        self
    }

    pub fn cipher(&self) -> &str {
        &self.cipher
    }
    pub fn device(&self) -> DevId {
        self.device
    }
    pub fn offset(&self) -> Sectors {
        self.offset
    }
    pub fn length(&self) -> Sectors {
        self.length
    }
    pub fn iv_offset(&self) -> Sectors {
        self.iv_offset
    }
    pub fn options(&self) -> CryptOptions {
        self.options
    }

    fn validate(&self) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidTarget {
            target: "crypt",
            reason,
        };
        let size = self.options.sector_size;
        if !matches!(size, 512 | 1024 | 2048 | 4096) {
            return Err(invalid(format!(
                "sector size {size} is not 512, 1024, 2048 or 4096"
            )));
        }
        let per = u64::from(size) / SECTOR_SIZE;
        for (what, value) in [
            ("length", self.length),
            ("iv_offset", self.iv_offset),
            ("offset", self.offset),
        ] {
            if !value.0.is_multiple_of(per) {
                return Err(invalid(format!(
                    "{what} {value} (512-byte sectors) is not a multiple of the {size}-byte sector size"
                )));
            }
        }
        if self.length.0 == 0 {
            return Err(invalid("length is 0".into()));
        }
        Ok(())
    }

    /// The parameter string with `key`, in zeroizing memory reserved up front.
    pub fn params(&self, key: &KeyRef) -> Result<Zeroizing<String>, Error> {
        self.validate()?;
        key.validate()?;
        let mut params = Zeroizing::new(String::with_capacity(
            self.cipher.len() + key.rendered_len() + 256,
        ));
        let capacity = params.capacity();
        lock_in_memory(params.as_ptr(), capacity);
        params.push_str(&self.cipher);
        params.push(' ');
        match key {
            KeyRef::Keyring { bytes, description } => {
                write!(params, ":{bytes}:logon:{description}").expect("writing to a String");
            }
            KeyRef::Hex(hex) => params.push_str(hex),
        }
        write!(
            params,
            " {} {} {}",
            self.iv_offset, self.device, self.offset
        )
        .expect("writing to a String");
        let words = self.options.words();
        if !words.is_empty() {
            write!(params, " {}", words.len()).expect("writing to a String");
            for word in &words {
                params.push(' ');
                params.push_str(word);
            }
        }
        debug_assert_eq!(
            params.capacity(),
            capacity,
            "the key buffer was reallocated"
        );
        Ok(params)
    }

    /// The table line `0 <length> crypt <params>` with `key`.
    pub fn line(&self, key: &KeyRef) -> Result<TargetLine, Error> {
        self.line_at(Sectors(0), key)
    }

    /// The table line `<start> <length> crypt <params>` with `key`: this target placed at
    /// sector `start` of the mapping (a segment of a [`crate::CryptTable`]).
    pub fn line_at(&self, start: Sectors, key: &KeyRef) -> Result<TargetLine, Error> {
        let carries_key = matches!(key, KeyRef::Hex(_));
        TargetLine::new(start, self.length, "crypt", self.params(key)?, carries_key)
    }

    /// The table line with the key shown as [`ELIDED_KEY`], for plans and dry runs.
    pub fn line_elided(&self) -> Result<String, Error> {
        self.line_elided_at(Sectors(0))
    }

    /// [`CryptTarget::line_elided`] for this target placed at sector `start` of the mapping.
    pub fn line_elided_at(&self, start: Sectors) -> Result<String, Error> {
        self.validate()?;
        let mut line = format!(
            "{start} {} crypt {} {ELIDED_KEY} {} {} {}",
            self.length, self.cipher, self.iv_offset, self.device, self.offset
        );
        let words = self.options.words();
        if !words.is_empty() {
            line.push_str(&format!(" {} {}", words.len(), words.join(" ")));
        }
        Ok(line)
    }

    /// The `cryptsetup` arguments that open the same mapping with stock tools from a raw key
    /// file: `open --type plain --cipher C --key-size BITS --key-file FILE [--offset N]
    /// [--skip N] [--sector-size N] [--iv-large-sectors] [--allow-discards] [--perf-*] --
    /// DEVICE NAME`. cryptsetup then builds exactly [`CryptTarget::line`] with the key in hex and the
    /// device as a path (see the test `cryptsetup_open_args_transcribe_the_table`).
    pub fn cryptsetup_open_args(
        &self,
        key_bytes: usize,
        key_file: &str,
        device_path: &str,
        name: &str,
    ) -> Vec<String> {
        let mut args: Vec<String> = [
            "open",
            "--type",
            "plain",
            "--cipher",
            &self.cipher,
            "--key-size",
            &(key_bytes * 8).to_string(),
            "--key-file",
            key_file,
        ]
        .iter()
        .map(|s| (*s).to_owned())
        .collect();
        if self.offset.0 != 0 {
            args.extend(["--offset".to_owned(), self.offset.to_string()]);
        }
        if self.iv_offset.0 != 0 {
            args.extend(["--skip".to_owned(), self.iv_offset.to_string()]);
        }
        let o = &self.options;
        if o.sector_size != 512 {
            args.extend(["--sector-size".to_owned(), o.sector_size.to_string()]);
        }
        let flags = [
            (o.iv_large_sectors, "--iv-large-sectors"),
            (o.allow_discards, "--allow-discards"),
            (o.same_cpu_crypt, "--perf-same_cpu_crypt"),
            (o.submit_from_crypt_cpus, "--perf-submit_from_crypt_cpus"),
            (o.no_read_workqueue, "--perf-no_read_workqueue"),
            (o.no_write_workqueue, "--perf-no_write_workqueue"),
        ];
        args.extend(
            flags
                .iter()
                .filter(|(on, _)| *on)
                .map(|(_, f)| (*f).to_owned()),
        );
        // `--`: a device path or name that starts with '-' is still an operand.
        args.extend(["--".to_owned(), device_path.to_owned(), name.to_owned()]);
        args
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                         202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

    fn hex_key() -> KeyRef {
        KeyRef::Hex(Zeroizing::new(KEY64.to_owned()))
    }

    #[test]
    fn hex_from_bytes_is_lower_case_and_exact() {
        let bytes: Vec<u8> = (0u8..64).collect();
        let KeyRef::Hex(hex) = KeyRef::hex_from_bytes(&bytes) else {
            panic!("not hex")
        };
        assert_eq!(hex.as_str(), KEY64);
        assert_eq!(hex.capacity(), 128);
        assert_eq!(KeyRef::hex_from_bytes(&[0xab, 0xff]).key_bytes(), 2);
    }

    #[test]
    fn crypt_line_with_keyring_key() {
        let target = CryptTarget::new("twofish-xts-plain64", DevId::new(252, 0), Sectors(2048))
            .unwrap()
            .with_options(CryptOptions {
                sector_size: 4096,
                ..CryptOptions::default()
            });
        let key = KeyRef::Keyring {
            bytes: 64,
            description: "tosskey:t1".into(),
        };
        let line = target.line(&key).unwrap();
        assert_eq!(
            line.params_secret(),
            "twofish-xts-plain64 :64:logon:tosskey:t1 0 252:0 0 1 sector_size:4096"
        );
        assert!(!line.carries_key());
        assert_eq!(
            line.display_elided(),
            "0 2048 crypt twofish-xts-plain64 :64:logon:tosskey:t1 0 252:0 0 1 sector_size:4096"
        );
    }

    #[test]
    fn crypt_line_with_hex_key_is_secret_and_elided_in_debug_and_display() {
        let target = CryptTarget::new("aes-xts-plain64", DevId::new(7, 0), Sectors(64))
            .unwrap()
            .with_offset(Sectors(8))
            .with_iv_offset(Sectors(16));
        let line = target.line(&hex_key()).unwrap();
        assert!(line.carries_key());
        assert_eq!(
            line.params_secret(),
            format!("aes-xts-plain64 {KEY64} 16 7:0 8")
        );
        let shown = line.display_elided();
        assert_eq!(
            shown,
            format!("0 64 crypt aes-xts-plain64 {ELIDED_KEY} 16 7:0 8")
        );
        assert!(!format!("{line:?}").contains("0a0b0c"));
        assert!(!format!("{:?}", hex_key()).contains("0a0b0c"));
        assert_eq!(target.line_elided().unwrap(), shown);
    }

    #[test]
    fn every_option_in_cryptsetup_order() {
        let options = CryptOptions {
            allow_discards: true,
            same_cpu_crypt: true,
            submit_from_crypt_cpus: true,
            no_read_workqueue: true,
            no_write_workqueue: true,
            iv_large_sectors: true,
            sector_size: 4096,
        };
        assert_eq!(
            options.words().join(" "),
            "allow_discards same_cpu_crypt submit_from_crypt_cpus no_read_workqueue \
             no_write_workqueue iv_large_sectors sector_size:4096"
        );
        assert!(CryptOptions::default().words().is_empty());
    }

    /// What cryptsetup's `get_dm_crypt_params()` (lib/libdevmapper.c, 2.7) prints for a
    /// plain device, transcribed independently of `CryptTarget`: `"%s %s %llu %s %llu%s"` with
    /// cipher, hex key, iv_offset (`--skip`), device path, offset (`--offset`) and the
    /// features `" %d"` count followed by `allow_discards`, `same_cpu_crypt`,
    /// `submit_from_crypt_cpus`, `no_read_workqueue`, `no_write_workqueue`,
    /// `iv_large_sectors`, `high_priority`, `sector_size:%u` (when not 512), each only when set.
    fn cryptsetup_plain_params(
        cipher: &str,
        hex_key: &str,
        skip: u64,
        device: &str,
        offset: u64,
        flags: &[&str],
        sector_size: u32,
    ) -> String {
        let mut features = String::new();
        let count = flags.len() + usize::from(sector_size != 512);
        if count > 0 {
            features = format!(" {count}");
            for order in [
                "allow_discards",
                "same_cpu_crypt",
                "submit_from_crypt_cpus",
                "no_read_workqueue",
                "no_write_workqueue",
                "iv_large_sectors",
            ] {
                if flags.contains(&order) {
                    features.push(' ');
                    features.push_str(order);
                }
            }
            if sector_size != 512 {
                features.push_str(&format!(" sector_size:{sector_size}"));
            }
        }
        format!("{cipher} {hex_key} {skip} {device} {offset}{features}")
    }

    #[test]
    fn cryptsetup_open_args_transcribe_the_table() {
        // cryptsetup passes the device as a path; the kernel resolves it and reports MAJ:MIN.
        // tosskey passes MAJ:MIN directly. Compare with the path replaced by MAJ:MIN.
        let dev = DevId::new(254, 16);
        let cases: [(&[&str], u32, u64, u64); 4] = [
            (&[], 512, 0, 0),
            (&[], 4096, 0, 0),
            (&["allow_discards", "iv_large_sectors"], 4096, 2048, 4096),
            (
                &[
                    "same_cpu_crypt",
                    "no_read_workqueue",
                    "no_write_workqueue",
                    "submit_from_crypt_cpus",
                ],
                512,
                0,
                8,
            ),
        ];
        for (flags, sector_size, offset, skip) in cases {
            let options = CryptOptions {
                allow_discards: flags.contains(&"allow_discards"),
                same_cpu_crypt: flags.contains(&"same_cpu_crypt"),
                submit_from_crypt_cpus: flags.contains(&"submit_from_crypt_cpus"),
                no_read_workqueue: flags.contains(&"no_read_workqueue"),
                no_write_workqueue: flags.contains(&"no_write_workqueue"),
                iv_large_sectors: flags.contains(&"iv_large_sectors"),
                sector_size,
            };
            let target = CryptTarget::new("twofish-xts-plain64", dev, Sectors(1 << 20))
                .unwrap()
                .with_offset(Sectors(offset))
                .with_iv_offset(Sectors(skip))
                .with_options(options);
            let ours = target.params(&hex_key()).unwrap();
            let theirs = cryptsetup_plain_params(
                "twofish-xts-plain64",
                KEY64,
                skip,
                &dev.to_string(),
                offset,
                flags,
                sector_size,
            );
            assert_eq!(ours.as_str(), theirs);
            // And the command line that makes cryptsetup build it.
            let args =
                target.cryptsetup_open_args(64, "/root/key.bin", "/dev/nvme1n1", "recovered");
            let joined = args.join(" ");
            assert!(joined.starts_with(
                "open --type plain --cipher twofish-xts-plain64 --key-size 512 --key-file /root/key.bin"
            ));
            assert!(joined.ends_with(" -- /dev/nvme1n1 recovered"), "{joined}");
            assert_eq!(joined.contains("--sector-size 4096"), sector_size == 4096);
            assert_eq!(joined.contains(&format!("--offset {offset}")), offset != 0);
            assert_eq!(joined.contains(&format!("--skip {skip}")), skip != 0);
            for flag in flags {
                let option = match *flag {
                    "allow_discards" => "--allow-discards".to_owned(),
                    "iv_large_sectors" => "--iv-large-sectors".to_owned(),
                    other => format!("--perf-{other}"),
                };
                assert!(joined.contains(&option), "{joined} lacks {option}");
            }
        }
    }

    #[test]
    fn crypt_geometry_is_checked_against_the_sector_size() {
        let base = CryptTarget::new("aes-xts-plain64", DevId::new(7, 0), Sectors(4096)).unwrap();
        let big = CryptOptions {
            sector_size: 4096,
            ..CryptOptions::default()
        };
        assert!(base.clone().with_options(big).params(&hex_key()).is_ok());
        let err = base
            .clone()
            .with_options(big)
            .with_iv_offset(Sectors(3))
            .params(&hex_key())
            .unwrap_err()
            .to_string();
        assert!(err.contains("iv_offset 3"), "{err}");
        assert!(base
            .clone()
            .with_offset(Sectors(1))
            .with_options(big)
            .params(&hex_key())
            .is_err());
        let odd = CryptOptions {
            sector_size: 3000,
            ..CryptOptions::default()
        };
        assert!(base.clone().with_options(odd).params(&hex_key()).is_err());
        assert!(CryptTarget::new("aes xts", DevId::new(7, 0), Sectors(8)).is_err());
    }

    #[test]
    fn bad_keys_are_refused_without_echoing_them() {
        let target = CryptTarget::new("aes-xts-plain64", DevId::new(7, 0), Sectors(8)).unwrap();
        let secretish = "0123456789abcdeZ";
        let err = target
            .params(&KeyRef::Hex(Zeroizing::new(secretish.to_owned())))
            .unwrap_err()
            .to_string();
        assert!(!err.contains(secretish) && err.contains("non-hex"), "{err}");
        assert!(target
            .params(&KeyRef::Hex(Zeroizing::new("abc".into())))
            .is_err());
        let keyring = |description: &str| KeyRef::Keyring {
            bytes: 64,
            description: description.into(),
        };
        assert!(target.params(&keyring("nocolon")).is_err());
        assert!(target.params(&keyring("tosskey:has space")).is_err());
    }
}
