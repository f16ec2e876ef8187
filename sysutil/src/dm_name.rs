//! The rules of a device-mapper device name as tosskey creates them, shared by the crate that
//! creates devices (tosskey-dm, whose `DmName` holds a name that passed them) and the ones
//! that only check a recorded name (tosskey-crypto's escrow file).

use std::fmt;

/// Longest name the kernel takes: `DM_NAME_LEN` (128) including the NUL.
pub const DM_NAME_MAX_BYTES: usize = 127;

/// A name [`check_dm_name`] refuses, and which rule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InvalidDmName {
    pub name: String,
    /// Why, e.g. "it contains '/'".
    pub reason: &'static str,
}

impl fmt::Display for InvalidDmName {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid device-mapper name {:?}: {}; use 1-127 bytes of letters, digits and -_.+:@",
            self.name, self.reason
        )
    }
}

impl std::error::Error for InvalidDmName {}

/// Checks `name`: 1 to 127 bytes of ASCII letters, digits and `-_.+:@`, not `.` or `..`, not
/// starting with `-`. The kernel itself only forbids `/` (and NUL), but the name also becomes
/// `/dev/mapper/<name>`, a keyring description, a word of the printed stock-tool commands and
/// a log word, so tosskey keeps it plain.
pub fn check_dm_name(name: &str) -> Result<(), InvalidDmName> {
    let reason = if name.is_empty() {
        "it is empty"
    } else if name.len() > DM_NAME_MAX_BYTES {
        "it is longer than 127 bytes"
    } else if name.contains('/') {
        "it contains '/'"
    } else if name.starts_with('-') {
        // A command line that names the device (dmsetup, cryptsetup, the commands
        // `escrow decrypt` prints) would read it as an option.
        "it starts with '-', which tools read as an option"
    } else if name == "." || name == ".." {
        "'.' and '..' cannot be device nodes"
    } else if !name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b"-_.+:@".contains(&b))
    {
        "it contains characters other than letters, digits and -_.+:@"
    } else {
        return Ok(());
    };
    Err(InvalidDmName {
        name: name.to_owned(),
        reason,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_validated() {
        assert!(check_dm_name("ephemeral-encrypted").is_ok());
        assert!(check_dm_name(&"a".repeat(127)).is_ok());
        for bad in ["", "a/b", ".", "..", "a b", "tab\t", "nul\0", "é"] {
            assert!(check_dm_name(bad).is_err(), "{bad:?} accepted");
        }
        let err = check_dm_name(&"a".repeat(128)).unwrap_err();
        assert_eq!(err.reason, "it is longer than 127 bytes");
        assert!(err.to_string().contains("longer than 127 bytes"), "{err}");
    }

    #[test]
    fn a_name_that_reads_as_an_option_is_refused() {
        for bad in ["-v", "--batch-mode", "-"] {
            let err = check_dm_name(bad).unwrap_err();
            assert!(err.reason.contains("starts with '-'"), "{bad}: {err}");
        }
        assert!(check_dm_name("a-b-").is_ok());
    }
}
