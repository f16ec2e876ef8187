//! Table lines: `crypt`, `striped` and `linear` targets, rendered for TABLE_LOAD and parsed
//! back from TABLE_STATUS.
//!
//! Parameters are built in a [`Zeroizing<String>`] whose capacity is reserved up front, so a
//! hex key is written exactly once into memory that is wiped on drop (no reallocation leaves a
//! stray copy behind), and `Debug` of every type here elides keys.

use std::fmt::{self, Write as _};

use zeroize::Zeroizing;

use crate::error::Error;
use crate::ioctl::{lock_in_memory, DM_MAX_TYPE_NAME};
use crate::types::{DevId, Sectors, SECTOR_SIZE};

/// The token shown instead of a hex key in elided tables.
pub const ELIDED_KEY: &str = "<key-elided>";

/// One line of a device-mapper table: `<start> <length> <type> <params>`.
pub struct TargetLine {
    start: Sectors,
    length: Sectors,
    target_type: String,
    params: Zeroizing<String>,
    carries_key: bool,
}

impl fmt::Debug for TargetLine {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TargetLine")
            .field("start", &self.start)
            .field("length", &self.length)
            .field("target_type", &self.target_type)
            .field("params", &elide_params(&self.target_type, &self.params))
            .finish()
    }
}

impl TargetLine {
    /// A target line of any type. `carries_key` marks parameters holding key material: the
    /// table load then uses `DM_SECURE_DATA_FLAG` and displays elide them.
    pub fn new(
        start: Sectors,
        length: Sectors,
        target_type: &str,
        params: Zeroizing<String>,
        carries_key: bool,
    ) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidTarget {
            target: "device-mapper",
            reason,
        };
        if target_type.is_empty()
            || target_type.len() >= DM_MAX_TYPE_NAME
            || !target_type.bytes().all(|b| b.is_ascii_graphic())
        {
            return Err(invalid(format!(
                "target type {target_type:?} is not 1-15 printable bytes"
            )));
        }
        if length.0 == 0 {
            return Err(invalid("a target cannot have length 0".into()));
        }
        if params.contains('\0') {
            return Err(invalid("parameters contain a NUL byte".into()));
        }
        Ok(Self {
            start,
            length,
            target_type: target_type.to_owned(),
            params,
            carries_key,
        })
    }

    pub fn start(&self) -> Sectors {
        self.start
    }

    pub fn length(&self) -> Sectors {
        self.length
    }

    pub fn target_type(&self) -> &str {
        &self.target_type
    }

    /// Whether the parameters hold key material (a hex key).
    pub fn carries_key(&self) -> bool {
        self.carries_key
    }

    /// The parameters as loaded, key included. Only the table load reads this.
    pub(crate) fn params_secret(&self) -> &str {
        &self.params
    }

    /// The whole line with any hex crypt key replaced by [`ELIDED_KEY`]: safe to print.
    pub fn display_elided(&self) -> String {
        format!(
            "{} {} {} {}",
            self.start,
            self.length,
            self.target_type,
            elide_params(&self.target_type, &self.params)
        )
    }
}

/// Returns `params` with the key of a `crypt` target replaced by [`ELIDED_KEY`] unless it is a
/// keyring reference (`:<bytes>:<type>:<description>`, no secret) or `-` (no key). Other
/// target types are returned unchanged. Builds the result from the non-key tokens only, so the
/// key is never copied into the returned (ordinary) String.
pub fn elide_params(target_type: &str, params: &str) -> String {
    if target_type != "crypt" {
        return params.to_owned();
    }
    let mut out = String::with_capacity(params.len() + ELIDED_KEY.len());
    for (index, token) in params.split(' ').enumerate() {
        if index > 0 {
            out.push(' ');
        }
        if index == 1 && !token.starts_with(':') && token != "-" {
            out.push_str(ELIDED_KEY);
        } else {
            out.push_str(token);
        }
    }
    out
}

/// Lower-case hex of key material, written once into locked, zeroizing memory of exactly the
/// right capacity (no reallocation leaves a stray copy). The digits are computed without a
/// table lookup or branch indexed by secret nibbles, so cache timing says nothing about the
/// key. The one hex encoder of tosskey: tosskey-crypto's `VolumeKey::to_hex` uses it too.
pub fn hex_encode_secret(bytes: &[u8]) -> Zeroizing<String> {
    let mut hex = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    lock_in_memory(hex.as_ptr(), hex.capacity());
    for &byte in bytes {
        hex.push(char::from(hex_digit(byte >> 4)));
        hex.push(char::from(hex_digit(byte & 0x0f)));
    }
    hex
}

/// `nibble` (0..=15) as a lower-case hex digit, branch- and table-free.
fn hex_digit(nibble: u8) -> u8 {
    // 9 - nibble wraps to >= 0xf6 exactly when nibble >= 10; its top bit selects the
    // distance from '0'+10 to 'a' (39).
    let above_nine = (9u8.wrapping_sub(nibble) >> 7).wrapping_neg();
    b'0' + nibble + (above_nine & 39)
}

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
    /// device as a path (see the test `cryptsetup_builds_the_same_table`).
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

/// A `linear` target: `<dev> <offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearTarget {
    pub device: DevId,
    pub offset: Sectors,
    pub length: Sectors,
}

impl LinearTarget {
    /// The line `<start> <length> linear <dev> <offset>`.
    pub fn line(&self, start: Sectors) -> Result<TargetLine, Error> {
        TargetLine::new(
            start,
            self.length,
            "linear",
            Zeroizing::new(format!("{} {}", self.device, self.offset)),
            false,
        )
    }
}

/// One member of a striped target: the usable region is `offset..size` of `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeMember {
    pub device: DevId,
    pub offset: Sectors,
    /// Size of the whole member device.
    pub size: Sectors,
}

/// A `striped` target: `<n> <chunk> <dev0> <off0> ...` over equal-width members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedTarget {
    chunk: Sectors,
    members: Vec<StripeMember>,
}

impl StripedTarget {
    /// `chunk` must be a power of two of at least 8 sectors (4 KiB, so 4Kn members stay
    /// aligned); every member needs at least one chunk after its offset.
    pub fn new(chunk: Sectors, members: Vec<StripeMember>) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidTarget {
            target: "striped",
            reason,
        };
        if chunk.0 < 8 || !chunk.0.is_power_of_two() {
            return Err(invalid(format!(
                "chunk {chunk} sectors is not a power of two of at least 8 sectors"
            )));
        }
        if members.is_empty() {
            return Err(invalid("no members".into()));
        }
        for member in &members {
            if member.size.0.saturating_sub(member.offset.0) < chunk.0 {
                return Err(invalid(format!(
                    "member {} has less than one {chunk}-sector chunk after offset {}",
                    member.device, member.offset
                )));
            }
        }
        Ok(Self { chunk, members })
    }

    /// Usable sectors per member: the smallest member's room, rounded down to whole chunks.
    pub fn member_width(&self) -> Sectors {
        let min = self
            .members
            .iter()
            .map(|m| m.size.0 - m.offset.0)
            .min()
            .unwrap_or(0);
        Sectors(min / self.chunk.0 * self.chunk.0)
    }

    /// `n × floor((min − off) / chunk) × chunk`.
    pub fn length(&self) -> Sectors {
        Sectors(self.member_width().0 * self.members.len() as u64)
    }

    pub fn chunk(&self) -> Sectors {
        self.chunk
    }

    pub fn members(&self) -> &[StripeMember] {
        &self.members
    }

    /// The line `<start> <length> striped <n> <chunk> <dev0> <off0> ...`.
    pub fn line(&self, start: Sectors) -> Result<TargetLine, Error> {
        let mut params = format!("{} {}", self.members.len(), self.chunk);
        for member in &self.members {
            params.push_str(&format!(" {} {}", member.device, member.offset));
        }
        TargetLine::new(
            start,
            self.length(),
            "striped",
            Zeroizing::new(params),
            false,
        )
    }
}

/// The key field of a crypt table line as read back from the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum CryptKeyField {
    /// `:<bytes>:<type>:<description>`: the key lives (lived) in the kernel keyring.
    Keyring {
        bytes: usize,
        key_type: String,
        description: String,
    },
    /// A hex key of this many bytes; its value is not kept.
    Hex { bytes: usize },
    /// `-`: no key (cipher_null).
    None,
    /// [`ELIDED_KEY`]: the line was elided before parsing.
    Elided,
}

/// A crypt target's parameters parsed from TABLE_STATUS (keys never included).
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
    /// Parses crypt parameters (with a real, elided or keyring key field). Nothing derived from
    /// a hex key other than its length is kept.
    pub fn parse(params: &str) -> Result<Self, String> {
        let mut tokens = params.split(' ').filter(|t| !t.is_empty());
        let mut next = |what: &str| {
            tokens
                .next()
                .ok_or_else(|| format!("crypt parameters lack the {what}"))
        };
        let cipher = next("cipher")?.to_owned();
        let key_token = next("key")?;
        let key = parse_key_field(key_token)?;
        let iv_offset = Sectors(parse_number(next("iv_offset")?, "iv_offset")?);
        let device_token = next("device")?;
        let device = device_token
            .parse::<DevId>()
            .map_err(|_| format!("crypt device {device_token:?} is not MAJ:MIN"))?;
        let offset = Sectors(parse_number(next("offset")?, "offset")?);
        let mut options = CryptOptions::default();
        let mut other_options = Vec::new();
        if let Ok(count_token) = next("option count") {
            let count = parse_number(count_token, "option count")?;
            for _ in 0..count {
                let word = next("optional parameter")?;
                match word {
                    "allow_discards" => options.allow_discards = true,
                    "same_cpu_crypt" => options.same_cpu_crypt = true,
                    "submit_from_crypt_cpus" => options.submit_from_crypt_cpus = true,
                    "no_read_workqueue" => options.no_read_workqueue = true,
                    "no_write_workqueue" => options.no_write_workqueue = true,
                    "iv_large_sectors" => options.iv_large_sectors = true,
                    _ => match word.strip_prefix("sector_size:") {
                        Some(size) => {
                            options.sector_size = size
                                .parse()
                                .map_err(|_| format!("bad crypt sector size {size:?}"))?;
                        }
                        None => other_options.push(word.to_owned()),
                    },
                }
            }
        }
        if let Ok(extra) = next("end") {
            return Err(format!("unexpected word {extra:?} after the crypt options"));
        }
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

fn parse_number(token: &str, what: &str) -> Result<u64, String> {
    token
        .parse()
        .map_err(|_| format!("crypt {what} {token:?} is not a number"))
}

fn parse_key_field(token: &str) -> Result<CryptKeyField, String> {
    if token == "-" {
        return Ok(CryptKeyField::None);
    }
    if let Some(rest) = token.strip_prefix(':') {
        let mut parts = rest.splitn(3, ':');
        let (Some(bytes), Some(key_type), Some(description)) =
            (parts.next(), parts.next(), parts.next())
        else {
            return Err("crypt keyring key field is not :<bytes>:<type>:<description>".into());
        };
        return Ok(CryptKeyField::Keyring {
            bytes: bytes
                .parse()
                .map_err(|_| "crypt keyring key size is not a number".to_owned())?,
            key_type: key_type.to_owned(),
            description: description.to_owned(),
        });
    }
    if token == ELIDED_KEY {
        return Ok(CryptKeyField::Elided);
    }
    if token.len().is_multiple_of(2) && token.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Ok(CryptKeyField::Hex {
            bytes: token.len() / 2,
        });
    }
    // Do not echo the token: it may be (part of) a key.
    Err("crypt key field is neither hex, '-', nor a keyring reference".into())
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
    fn hex_digits_match_the_table() {
        for nibble in 0u8..16 {
            assert_eq!(hex_digit(nibble), b"0123456789abcdef"[usize::from(nibble)]);
        }
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        assert_eq!(hex_encode_secret(&all).as_str(), expected);
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
    fn cryptsetup_builds_the_same_table() {
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

    #[test]
    fn elision_keeps_keyring_references_and_other_targets() {
        assert_eq!(
            elide_params("crypt", &format!("aes-xts-plain64 {KEY64} 0 7:0 0")),
            format!("aes-xts-plain64 {ELIDED_KEY} 0 7:0 0")
        );
        let keyring = "aes-xts-plain64 :64:logon:tosskey:x 0 7:0 0 1 sector_size:4096";
        assert_eq!(elide_params("crypt", keyring), keyring);
        assert_eq!(
            elide_params("crypt", "cipher_null-ecb - 0 7:0 0"),
            "cipher_null-ecb - 0 7:0 0"
        );
        assert_eq!(elide_params("linear", "7:0 0"), "7:0 0");
    }

    #[test]
    fn parses_kernel_table_lines() {
        // As the kernel echoes them: sector_size before iv_large_sectors.
        let parsed = CryptParams::parse(
            "twofish-xts-plain64 :64:logon:tosskey:t1 0 252:0 0 3 allow_discards sector_size:4096 iv_large_sectors",
        )
        .unwrap();
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

    #[test]
    fn striped_length_is_whole_chunks_of_the_smallest_member() {
        let members = vec![
            StripeMember {
                device: DevId::new(7, 0),
                offset: Sectors(0),
                size: Sectors(10_000),
            },
            StripeMember {
                device: DevId::new(7, 1),
                offset: Sectors(8),
                size: Sectors(9_000),
            },
        ];
        let striped = StripedTarget::new(Sectors(1024), members).unwrap();
        // min(10000 - 0, 9000 - 8) = 8992 → 8 chunks of 1024 = 8192 per member.
        assert_eq!(striped.member_width(), Sectors(8192));
        assert_eq!(striped.length(), Sectors(16_384));
        let line = striped.line(Sectors(0)).unwrap();
        assert_eq!(line.display_elided(), "0 16384 striped 2 1024 7:0 0 7:1 8");
        assert!(StripedTarget::new(Sectors(1000), vec![]).is_err());
        let tiny = vec![StripeMember {
            device: DevId::new(7, 2),
            offset: Sectors(0),
            size: Sectors(100),
        }];
        assert!(StripedTarget::new(Sectors(128), tiny).is_err());
    }

    #[test]
    fn linear_line() {
        let linear = LinearTarget {
            device: DevId::new(8, 16),
            offset: Sectors(2048),
            length: Sectors(100),
        };
        assert_eq!(
            linear.line(Sectors(0)).unwrap().display_elided(),
            "0 100 linear 8:16 2048"
        );
        assert!(TargetLine::new(
            Sectors(0),
            Sectors(0),
            "linear",
            Zeroizing::new(String::new()),
            false
        )
        .is_err());
        assert!(TargetLine::new(
            Sectors(0),
            Sectors(1),
            "a-very-long-type-name",
            Zeroizing::new(String::new()),
            false
        )
        .is_err());
    }
}
