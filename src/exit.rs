//! Documented exit codes and the errors that select them.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (including "already provisioned, nothing changed") |
//! | 1 | the operation failed; what this run built was rolled back |
//! | 2 | usage error (bad flags or values) |
//! | 3 | refused by a safety check: nothing was written |
//! | 4 | verification mismatch: the kernel does not encrypt as claimed; the mapping was removed |
//! | 5 | rollback incomplete: something built could not be removed (the message lists it) |

use std::process::ExitCode;

use crate::rollback::Leftover;

pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const VERIFY_MISMATCH: u8 = 4;
pub const ROLLBACK_INCOMPLETE: u8 = 5;

/// A safety refusal: the device and the reason, and the flag or fix.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Refused(pub String);

/// The userspace re-derivation disagreed with what the mapping returned.
#[derive(Debug, thiserror::Error)]
#[error("verification failed on {mapping}: {mismatched} of {checked} sectors differ from the userspace decryption; the mapping was removed (wrong key, cipher or sector size in the kernel?)")]
pub struct VerifyMismatch {
    pub mapping: String,
    pub mismatched: usize,
    pub checked: usize,
}

/// A failure whose rollback could not remove everything.
#[derive(Debug, thiserror::Error)]
#[error("{failure:#}; rollback left behind: {} — remove them by hand (tosskey close NAME)", .leftovers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", "))]
pub struct RollbackIncomplete {
    pub failure: anyhow::Error,
    pub leftovers: Vec<Leftover>,
}

/// Map an error chain to its exit code: the most specific cause wins.
pub fn code_for(error: &anyhow::Error) -> u8 {
    if error.downcast_ref::<RollbackIncomplete>().is_some() {
        return ROLLBACK_INCOMPLETE;
    }
    for cause in error.chain() {
        if cause.is::<crate::config::UsageError>() {
            return USAGE;
        }
        if cause.is::<VerifyMismatch>() {
            return VERIFY_MISMATCH;
        }
        if cause.is::<Refused>() || cause.is::<crate::safety::SafetyError>() {
            return REFUSED;
        }
    }
    FAILED
}

/// Print the error chain on one line and pick the exit code.
pub fn report(error: &anyhow::Error) -> ExitCode {
    eprintln!("tosskey: {error:#}");
    ExitCode::from(code_for(error))
}
