//! Newtypes for what crosses the device-mapper interface: names, UUIDs, sizes, device numbers.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::ioctl::{DM_NAME_LEN, DM_UUID_LEN};

/// Bytes in a device-mapper sector: table lengths and offsets are always in 512-byte units,
/// whatever the device's logical block size.
pub const SECTOR_SIZE: u64 = 512;

/// A device-mapper device name: 1 to 127 bytes of ASCII letters, digits and `-_.+:@`, not
/// `.` or `..`. The kernel itself only forbids `/` (and NUL), but the name also becomes
/// `/dev/mapper/<name>`, a keyring description and a log word, so tosskey keeps it plain.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmName(String);

impl DmName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        let reason = if name.is_empty() {
            Some("it is empty")
        } else if name.len() > DM_NAME_LEN - 1 {
            Some("it is longer than 127 bytes")
        } else if name.contains('/') {
            Some("it contains '/'")
        } else if name.starts_with('-') {
            // A command line that names the device (dmsetup, cryptsetup, the commands
            // `escrow decrypt` prints) would read it as an option.
            Some("it starts with '-', which tools read as an option")
        } else if name == "." || name == ".." {
            Some("'.' and '..' cannot be device nodes")
        } else if !name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.+:@".contains(&b))
        {
            Some("it contains characters other than letters, digits and -_.+:@")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidName {
                name: name.to_owned(),
                reason,
            }),
            None => Ok(Self(name.to_owned())),
        }
    }

    /// A name the kernel reported (LIST_DEVICES, DEV_STATUS): valid for the kernel by
    /// definition, even if another tool chose characters [`DmName::new`] would refuse.
    pub(crate) fn from_kernel(name: String) -> Self {
        Self(name)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl FromStr for DmName {
    type Err = Error;
    fn from_str(s: &str) -> Result<Self, Error> {
        Self::new(s)
    }
}

/// A device-mapper UUID: 1 to 128 printable ASCII bytes without spaces. tosskey tags its
/// devices with a `TOSSKEY-` prefix here.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct DmUuid(String);

impl DmUuid {
    /// Validates `uuid`.
    pub fn new(uuid: &str) -> Result<Self, Error> {
        let reason = if uuid.is_empty() {
            Some("it is empty")
        } else if uuid.len() > DM_UUID_LEN - 1 {
            Some("it is longer than 128 bytes")
        } else if !uuid.bytes().all(|b| b.is_ascii_graphic()) {
            Some("it contains spaces or non-printable bytes")
        } else {
            None
        };
        match reason {
            Some(reason) => Err(Error::InvalidUuid {
                uuid: uuid.to_owned(),
                reason,
            }),
            None => Ok(Self(uuid.to_owned())),
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for DmUuid {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A count of 512-byte sectors (device-mapper's unit for table starts, lengths and offsets).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sectors(pub u64);

impl Sectors {
    /// The same size in bytes; `None` on overflow (beyond 8 EiB).
    pub fn to_bytes(self) -> Option<Bytes> {
        self.0.checked_mul(SECTOR_SIZE).map(Bytes)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A count of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// Whole sectors in this many bytes (rounded down).
    pub fn sectors_floor(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }

    /// The sector count when this is a whole number of sectors.
    pub fn sectors_exact(self) -> Option<Sectors> {
        self.0
            .is_multiple_of(SECTOR_SIZE)
            .then_some(Sectors(self.0 / SECTOR_SIZE))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A block device number (`MAJ:MIN` in dm tables): the one type all tosskey crates share.
pub use tosskey_sysutil::DevId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert_eq!(
            DmName::new("ephemeral-encrypted").unwrap().as_str(),
            "ephemeral-encrypted"
        );
        assert!(DmName::new(&"a".repeat(127)).is_ok());
        for bad in ["", "a/b", ".", "..", "a b", "tab\t", "nul\0", "é"] {
            assert!(DmName::new(bad).is_err(), "{bad:?} accepted");
        }
        let err = DmName::new(&"a".repeat(128)).unwrap_err().to_string();
        assert!(err.contains("longer than 127 bytes"), "{err}");
    }

    #[test]
    fn a_name_that_reads_as_an_option_is_refused() {
        for bad in ["-v", "--batch-mode", "-"] {
            let err = DmName::new(bad).unwrap_err().to_string();
            assert!(err.contains("starts with '-'"), "{bad}: {err}");
        }
        assert!(DmName::new("a-b-").is_ok());
    }

    #[test]
    fn uuids_are_validated() {
        assert!(DmUuid::new("TOSSKEY-0123-ephemeral").is_ok());
        assert!(DmUuid::new(&"u".repeat(128)).is_ok());
        assert!(DmUuid::new(&"u".repeat(129)).is_err());
        assert!(DmUuid::new("has space").is_err());
        assert!(DmUuid::new("").is_err());
    }

    #[test]
    fn sizes_convert() {
        assert_eq!(Sectors(8).to_bytes(), Some(Bytes(4096)));
        assert_eq!(Sectors(u64::MAX).to_bytes(), None);
        assert_eq!(Bytes(4097).sectors_floor(), Sectors(8));
        assert_eq!(Bytes(4097).sectors_exact(), None);
        assert_eq!(Bytes(4096).sectors_exact(), Some(Sectors(8)));
    }
}
