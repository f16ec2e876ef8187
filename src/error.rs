//! The binary's one error type: which documented exit code a failure gets is a `match` on
//! it, and [`render`] turns it into the one line the user sees.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (including "already provisioned, nothing changed") |
//! | 1 | the operation failed; what this run built was rolled back (a kernel facility that cannot be brought up fails here, before anything is built) |
//! | 2 | usage error (bad flags or values) |
//! | 3 | refused by a safety check, or `--measure-pcr N` with no usable TPM: nothing was written |
//! | 4 | verification mismatch: the kernel does not encrypt as claimed; the mapping was removed |
//! | 5 | rollback incomplete: something built could not be removed (the message lists it) |

use crate::rollback::Leftover;
use crate::safety::SafetyError;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or value that cannot work, found before touching anything.
    #[error("{0}")]
    Usage(String),
    /// Refused before writing anything: the message names the device or volume and the fix.
    #[error("{0}")]
    Refused(String),
    /// A member failed a safety check.
    #[error(transparent)]
    Safety(#[from] SafetyError),
    /// The userspace re-derivation disagreed with what the mapping returned.
    #[error("verification failed on {mapping}: {mismatched} of {checked} sectors differ from the userspace decryption; the mapping was removed (wrong key, cipher or sector size in the kernel?)")]
    VerifyMismatch {
        mapping: String,
        mismatched: usize,
        checked: usize,
    },
    /// A failure whose rollback could not remove everything.
    #[error("{}; rollback left behind: {} — remove them by hand (tosskey close NAME)", render(.failure), .leftovers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
    RollbackIncomplete {
        failure: Box<Error>,
        leftovers: Vec<Leftover>,
    },
    /// Anything else: the operation failed (what it built was rolled back).
    #[error(transparent)]
    Failed(anyhow::Error),
}

/// The documented exit codes.
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const VERIFY_MISMATCH: u8 = 4;
pub const ROLLBACK_INCOMPLETE: u8 = 5;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => USAGE,
            Error::Refused(_) | Error::Safety(_) => REFUSED,
            Error::VerifyMismatch { .. } => VERIFY_MISMATCH,
            Error::RollbackIncomplete { .. } => ROLLBACK_INCOMPLETE,
            Error::Failed(_) => FAILED,
        }
    }
}

impl From<anyhow::Error> for Error {
    /// A typed error that travelled through an `anyhow` helper keeps its kind.
    fn from(error: anyhow::Error) -> Self {
        match error.downcast::<Error>() {
            Ok(typed) => typed,
            Err(error) => match error.downcast::<SafetyError>() {
                Ok(safety) => Error::Safety(safety),
                Err(error) => Error::Failed(error),
            },
        }
    }
}

macro_rules! failed_from {
    ($($source:ty),* $(,)?) => {
        $(impl From<$source> for Error {
            fn from(error: $source) -> Self {
                Error::Failed(error.into())
            }
        })*
    };
}

failed_from!(
    std::io::Error,
    serde_json::Error,
    tosskey_dm::Error,
    tosskey_raid::RaidError,
    tosskey_crypto::Error,
    tosskey_ext4::Error,
    tosskey_kmod::Error,
    tosskey_tpm::Error,
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// The error on one line, each cause said once: a cause whose text its parent already
/// includes (`"opening X: <cause>"`) is not repeated.
pub fn render(error: &Error) -> String {
    match error {
        Error::Failed(error) => chain(error.chain()),
        Error::Safety(error) => chain(std::iter::successors(
            Some(error as &(dyn std::error::Error + 'static)),
            |e| e.source(),
        )),
        other => other.to_string(),
    }
}

fn chain<'a>(causes: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> String {
    let mut line = String::new();
    for cause in causes {
        let text = cause.to_string();
        if !line.contains(&text) {
            if !line.is_empty() {
                line.push_str(": ");
            }
            line.push_str(&text);
        }
    }
    line
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn each_kind_has_its_documented_code() {
        assert_eq!(Error::Usage("x".into()).exit_code(), 2);
        assert_eq!(Error::Refused("x".into()).exit_code(), 3);
        let mismatch = Error::VerifyMismatch {
            mapping: "m".into(),
            mismatched: 1,
            checked: 8,
        };
        assert_eq!(mismatch.exit_code(), 4);
        let incomplete = Error::RollbackIncomplete {
            failure: Box::new(Error::Failed(anyhow::anyhow!("mkfs failed"))),
            leftovers: Vec::new(),
        };
        assert_eq!(incomplete.exit_code(), 5);
        assert_eq!(Error::Failed(anyhow::anyhow!("x")).exit_code(), 1);
    }

    #[test]
    fn a_typed_error_keeps_its_kind_through_anyhow() {
        let wrapped: anyhow::Error = Error::Refused("no".into()).into();
        assert_eq!(Error::from(wrapped).exit_code(), REFUSED);
        let io = std::io::Error::other("disk on fire");
        let plain = Err::<(), _>(io).context("reading /dev/vdb").unwrap_err();
        assert_eq!(Error::from(plain).exit_code(), FAILED);
    }

    #[test]
    fn a_cause_already_in_its_parent_is_said_once() {
        let io = std::io::Error::other("EBUSY");
        let error: Error = anyhow::Error::new(io)
            .context("removing dm mapping x: EBUSY")
            .context("closing x")
            .into();
        assert_eq!(render(&error), "closing x: removing dm mapping x: EBUSY");
    }
}
