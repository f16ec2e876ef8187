//! Table lines and the table syntax of every target tosskey builds or reads back: `crypt`,
//! `striped`, `linear`, `error`, `zero` and `raid` (dm-raid, the stock recipe for raid10),
//! one module each.
//!
//! Each target's parameters are a type that implements [`fmt::Display`] and
//! [`std::str::FromStr`] and round-trips the kernel's own table text (what DM_TABLE_STATUS
//! with the table flag returns, what `dmsetup table` prints): `parse(text).to_string() ==
//! text`. [`TargetParams`] dispatches on the target type. The one exception is a crypt key:
//! a parsed crypt table never holds key bytes, so a hex key displays as [`ELIDED_KEY`] (the
//! text [`DmControl::table`](crate::DmControl::table) returns).
//!
//! Parameters that carry a key are built in a [`Zeroizing<String>`] whose capacity is
//! reserved up front, so a hex key is written exactly once into memory that is wiped on drop
//! (no reallocation leaves a stray copy behind), and `Debug` of every type here elides keys.

mod crypt;
mod error;
mod linear;
mod raid;
mod striped;
mod zero;

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use crate::error::Error;
use crate::ioctl::DM_MAX_TYPE_NAME;
use crate::types::Sectors;

pub use crypt::{CryptKeyField, CryptOptions, CryptParams, CryptTarget, KeyRef};
pub use error::ErrorParams;
pub use linear::{LinearParams, LinearTarget};
pub use raid::{RaidDevice, RaidOption, RaidParams};
pub use striped::{StripeDevice, StripeMember, StripedParams, StripedTarget};
pub use zero::ZeroParams;

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

    /// The whole line with any hex crypt key replaced by [`ELIDED_KEY`]: safe to print. The
    /// layout is `dmsetup table`'s, `<start> <length> <type> <params>`, so a target without
    /// parameters (`error`, `zero`) ends in a space.
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

/// The parameters of one table line, parsed by target type. Displays as the parameter text
/// (the part after `<start> <length> <type> `).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TargetParams {
    Crypt(CryptParams),
    Striped(StripedParams),
    Linear(LinearParams),
    Error(ErrorParams),
    Zero(ZeroParams),
    Raid(RaidParams),
    /// A target type this crate does not model, its parameters kept as text. Never a crypt
    /// target, so it cannot carry a key.
    Other {
        target_type: String,
        params: String,
    },
}

impl TargetParams {
    /// Parses `params` as the parameters of a `target_type` line.
    pub fn parse(target_type: &str, params: &str) -> Result<Self, Error> {
        Ok(match target_type {
            "crypt" => Self::Crypt(params.parse()?),
            "striped" => Self::Striped(params.parse()?),
            "linear" => Self::Linear(params.parse()?),
            "error" => Self::Error(params.parse()?),
            "zero" => Self::Zero(params.parse()?),
            "raid" => Self::Raid(params.parse()?),
            other => Self::Other {
                target_type: other.to_owned(),
                params: params.to_owned(),
            },
        })
    }

    /// The target type these parameters belong to.
    pub fn target_type(&self) -> &str {
        match self {
            Self::Crypt(_) => "crypt",
            Self::Striped(_) => "striped",
            Self::Linear(_) => "linear",
            Self::Error(_) => "error",
            Self::Zero(_) => "zero",
            Self::Raid(_) => "raid",
            Self::Other { target_type, .. } => target_type,
        }
    }
}

impl TargetParams {
    /// The index, among the words of the parameter text, of each device these parameters
    /// name, in order: crypt its device; striped each stripe's; linear its device; raid each
    /// metadata and data device that is present, slot by slot; none for the others.
    pub fn device_words(&self) -> Vec<usize> {
        match self {
            Self::Crypt(_) => vec![CryptParams::DEVICE_WORD],
            Self::Striped(params) => (0..params.stripes.len()).map(|i| 2 + 2 * i).collect(),
            Self::Linear(_) => vec![0],
            Self::Raid(params) => params.device_words(),
            Self::Error(_) | Self::Zero(_) | Self::Other { .. } => Vec::new(),
        }
    }
}

/// Words before the parameters in a table line: `<start> <length> <type>`.
const LINE_PREFIX_WORDS: usize = 3;

/// `line` (`<start> <length> <type> <params>`, as [`TargetLine::display_elided`] or
/// `dmsetup table` writes it) with its devices, in [`TargetParams::device_words`] order,
/// written as `names` instead of `MAJ:MIN`: for commands that name devices by path. The
/// other words, and their order, are kept.
pub fn name_devices_in_line(line: &str, names: &[String]) -> Result<String, Error> {
    let entry: crate::TableEntry = line.parse()?;
    let positions = entry.target_params()?.device_words();
    if positions.len() != names.len() {
        return Err(syntax(
            "device-mapper",
            format!(
                "{} device names for a {} line with {} devices",
                names.len(),
                entry.target_type,
                positions.len()
            ),
        ));
    }
    let mut words: Vec<&str> = line.split(' ').collect();
    for (position, name) in positions.iter().zip(names) {
        words[LINE_PREFIX_WORDS + position] = name;
    }
    Ok(words.join(" "))
}

/// A crypt `line` cut around its key word: the text before the key (with its trailing
/// space) and after it (with its leading space), so a command can splice the key in from a
/// file. Only the words before the key are read, so the devices may already be paths. Fails
/// for a line that is not a crypt target.
pub fn split_crypt_line_at_key(line: &str) -> Result<(String, String), Error> {
    let words: Vec<&str> = line.split(' ').collect();
    let key = LINE_PREFIX_WORDS + CryptParams::KEY_WORD;
    if words.get(2) != Some(&"crypt") || words.len() <= key + 1 {
        return Err(syntax(
            "crypt",
            "the line is not `<start> <length> crypt <cipher> <key> ...`".into(),
        ));
    }
    Ok((
        format!("{} ", words[..key].join(" ")),
        format!(" {}", words[key + 1..].join(" ")),
    ))
}

impl fmt::Display for TargetParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Crypt(params) => params.fmt(f),
            Self::Striped(params) => params.fmt(f),
            Self::Linear(params) => params.fmt(f),
            Self::Error(params) => params.fmt(f),
            Self::Zero(params) => params.fmt(f),
            Self::Raid(params) => params.fmt(f),
            Self::Other { params, .. } => f.write_str(params),
        }
    }
}

/// The words of a parameter string, one at a time, with errors that name the target and the
/// missing word. The kernel separates words with single spaces; runs of spaces are accepted.
struct Words<'a> {
    target: &'static str,
    words: std::str::SplitWhitespace<'a>,
}

impl<'a> Words<'a> {
    fn new(target: &'static str, params: &'a str) -> Self {
        Self {
            target,
            words: params.split_whitespace(),
        }
    }

    fn next(&mut self, what: &str) -> Result<&'a str, Error> {
        self.words
            .next()
            .ok_or_else(|| syntax(self.target, format!("the {what} is missing")))
    }

    fn number<T: FromStr>(&mut self, what: &str) -> Result<T, Error> {
        let word = self.next(what)?;
        word.parse()
            .map_err(|_| syntax(self.target, format!("the {what} {word:?} is not a number")))
    }

    fn sectors(&mut self, what: &str) -> Result<Sectors, Error> {
        self.number(what).map(Sectors)
    }

    fn device(&mut self, what: &str) -> Result<crate::types::DevId, Error> {
        let word = self.next(what)?;
        word.parse()
            .map_err(|_| syntax(self.target, format!("the {what} {word:?} is not MAJ:MIN")))
    }

    /// Whether words remain (without consuming one).
    fn peek(&self) -> Option<&'a str> {
        self.words.clone().next()
    }

    /// Fails if a word is left over.
    fn end(mut self) -> Result<(), Error> {
        match self.words.next() {
            None => Ok(()),
            Some(extra) => Err(syntax(
                self.target,
                format!("unexpected word {extra:?} after the parameters"),
            )),
        }
    }
}

/// A parameter string of `target` that does not have the kernel's syntax.
fn syntax(target: &'static str, reason: String) -> Error {
    Error::TableSyntax { target, reason }
}

/// Writes `count` then the words, each after a space: the `<#opt> <opt>...` tail of a table
/// line (nothing when there are no words, as the kernel prints it).
fn write_counted(f: &mut fmt::Formatter<'_>, words: &[&str]) -> fmt::Result {
    if words.is_empty() {
        return Ok(());
    }
    write!(f, " {}", words.len())?;
    for word in words {
        write!(f, " {word}")?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY64: &str = "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f\
                         202122232425262728292a2b2c2d2e2f303132333435363738393a3b3c3d3e3f";

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
    fn target_lines_are_checked() {
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

    #[test]
    fn devices_are_named_in_place_and_the_key_is_cut_out() {
        let names = |n: &[&str]| n.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
        assert_eq!(
            name_devices_in_line(
                "0 8 crypt aes-xts-plain64 :64:logon:tosskey:v 0 7:0 0 2 iv_large_sectors sector_size:4096",
                &names(&["/dev/vdb"])
            )
            .unwrap(),
            "0 8 crypt aes-xts-plain64 :64:logon:tosskey:v 0 /dev/vdb 0 2 iv_large_sectors sector_size:4096"
        );
        assert_eq!(
            name_devices_in_line(
                "0 512 striped 2 128 7:0 0 7:1 8",
                &names(&["/dev/a", "/dev/b"])
            )
            .unwrap(),
            "0 512 striped 2 128 /dev/a 0 /dev/b 8"
        );
        assert_eq!(
            name_devices_in_line("0 8 linear 7:0 24", &names(&["/dev/a"])).unwrap(),
            "0 8 linear /dev/a 24"
        );
        assert_eq!(
            name_devices_in_line(
                "0 24576 raid raid10 6 128 nosync raid10_copies 2 raid10_format near 2 253:5 7:3 - 7:4",
                &names(&["/dev/mapper/m0", "/dev/vdb", "/dev/vdc"])
            )
            .unwrap(),
            "0 24576 raid raid10 6 128 nosync raid10_copies 2 raid10_format near 2 /dev/mapper/m0 /dev/vdb - /dev/vdc"
        );
        assert!(name_devices_in_line("0 8 linear 7:0 24", &[]).is_err());
        assert_eq!(name_devices_in_line("0 8 zero ", &[]).unwrap(), "0 8 zero ");

        let (before, after) = split_crypt_line_at_key(&format!(
            "0 8 crypt aes-xts-plain64 {ELIDED_KEY} 16 /dev/vdb 0 1 allow_discards"
        ))
        .unwrap();
        assert_eq!(before, "0 8 crypt aes-xts-plain64 ");
        assert_eq!(after, " 16 /dev/vdb 0 1 allow_discards");
        assert!(split_crypt_line_at_key("0 8 linear 7:0 24").is_err());
        assert!(split_crypt_line_at_key("0 8 crypt aes-xts-plain64").is_err());
    }

    #[test]
    fn params_dispatch_on_the_target_type() {
        for (target_type, params) in [
            ("crypt", "aes-xts-plain64 :64:logon:tosskey:v 0 7:0 0"),
            ("striped", "2 128 7:0 0 7:1 0"),
            ("linear", "7:0 8"),
            ("error", ""),
            ("zero", ""),
            ("raid", "raid1 1 0 2 - 7:0 - 7:1"),
            ("thin-pool", "253:0 253:1 128 0"),
        ] {
            let parsed = TargetParams::parse(target_type, params).unwrap();
            assert_eq!(parsed.target_type(), target_type);
            assert_eq!(parsed.to_string(), params);
        }
        assert!(matches!(
            TargetParams::parse("linear", "7:0 8").unwrap(),
            TargetParams::Linear(_)
        ));
        assert!(TargetParams::parse("striped", "7:0 8").is_err());
    }
}
