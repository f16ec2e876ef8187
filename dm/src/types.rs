//! Newtypes for what crosses the device-mapper interface: UUIDs here; names, sizes and device
//! numbers from tosskey-sysutil.

use std::fmt;
use std::str::FromStr;

use crate::error::Error;
use crate::ioctl::{DM_NAME_LEN, DM_UUID_LEN};

/// Sector and byte units live in tosskey-sysutil, shared with every tosskey crate.
pub use tosskey_sysutil::{Bytes, Sectors, SECTOR_SIZE};

// The name rule (tosskey-sysutil) allows the kernel's longest name.
const _: () = assert!(tosskey_sysutil::DM_NAME_MAX_BYTES == DM_NAME_LEN - 1);

/// A device-mapper device name that passed [`tosskey_sysutil::check_dm_name`] (1 to 127 bytes
/// of ASCII letters, digits and `-_.+:@`, not `.` or `..`, not starting with `-`), or one the
/// kernel reported.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct DmName(String);

impl DmName {
    /// Validates `name`.
    pub fn new(name: &str) -> Result<Self, Error> {
        tosskey_sysutil::check_dm_name(name)?;
        Ok(Self(name.to_owned()))
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

/// A block device number (`MAJ:MIN` in dm tables): the one type all tosskey crates share.
pub use tosskey_sysutil::DevId;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_the_sysutil_rules() {
        assert_eq!(
            DmName::new("ephemeral-encrypted").unwrap().as_str(),
            "ephemeral-encrypted"
        );
        let err = DmName::new("-v").unwrap_err().to_string();
        assert!(err.contains("starts with '-'"), "{err}");
        assert!("a/b".parse::<DmName>().is_err());
    }

    #[test]
    fn uuids_are_validated() {
        assert!(DmUuid::new("TOSSKEY-0123-ephemeral").is_ok());
        assert!(DmUuid::new(&"u".repeat(128)).is_ok());
        assert!(DmUuid::new(&"u".repeat(129)).is_err());
        assert!(DmUuid::new("has space").is_err());
        assert!(DmUuid::new("").is_err());
    }
}
