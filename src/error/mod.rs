//! The binary's one error type: which documented exit code a failure gets is a `match` on
//! it, and [`render`] turns it into the one line the user sees.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success (including "already provisioned, nothing changed") |
//! | 1 | the operation failed; what this run built was rolled back (a kernel facility that cannot be brought up fails here, before anything is built) |
//! | 2 | usage error (bad flags or values) |
//! | 3 | refused by a safety check, `--measure-pcr N` with no usable TPM, or a setuid/setgid run: nothing was written |
//! | 4 | verification mismatch: the kernel does not encrypt as claimed; the mapping was removed |
//! | 5 | rollback incomplete: something built could not be removed (the message lists it) |
//! | 6 | `status --check`: the volume is degraded (a member of a redundant array failed; it serves from the others) |
//! | 7 | `status --check`: the volume failed (a member failed with no redundancy to cover it, an array md stopped, a mapping suspended, shredded or gone, a run that did not finish) |

mod refusal;
mod safety;
#[cfg(test)]
mod said_tests;
mod usage;

pub use refusal::{wrong_escrow_file, HeldMountPoint, Refusal, WRONG_ESCROW_FILE_FIX};
pub use safety::SafetyError;
pub use usage::Usage;

/// Why a command did not succeed.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A flag or value that cannot work, found before touching anything.
    #[error("{0}")]
    Usage(Usage),
    /// Refused before writing anything: names the device or volume and the fix.
    #[error("{0}")]
    Refused(Refusal),
    /// A member failed a safety check.
    #[error(transparent)]
    Safety(#[from] SafetyError),
    /// The userspace re-derivation disagreed with what the mapping returned.
    #[error("{}", mismatch_said(mapping, *mismatched, *checked))]
    VerifyMismatch {
        mapping: String,
        mismatched: usize,
        checked: usize,
    },
    /// A failure after which everything the run built was removed again.
    #[error("{}", render(self))]
    RolledBack { failure: Box<Error> },
    /// A failure whose rollback could not remove everything.
    #[error("{}", render(self))]
    RollbackIncomplete {
        failure: Box<Error>,
        leftovers: Vec<Leftover>,
    },
    /// Anything else: the operation failed (what it built was rolled back).
    #[error(transparent)]
    Failed(anyhow::Error),
    /// `status --check`: the volume is not healthy (the message says which member failed).
    #[error("{message}")]
    Unhealthy {
        state: UnhealthyState,
        message: String,
    },
}

/// How bad an unhealthy volume is, which `status --check`'s exit code says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UnhealthyState {
    /// Serving from the others after a member of a redundant array failed.
    Degraded,
    /// Not serving all of its data (or not known to).
    Failed,
}

/// An undo action that failed: what was left behind, for the user to clean up.
#[derive(Debug)]
pub struct Leftover {
    pub what: String,
    pub error: String,
}

impl std::fmt::Display for Leftover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} ({})", self.what, self.error)
    }
}

/// What a refusal or a usage error says, in two parts kept apart so that [`render`] puts
/// each where it belongs: the statement (`<what>: <cause>`, naming the device, volume or
/// flag) and the fix.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Said {
    pub what: String,
    pub fix: Option<String>,
}

impl Said {
    fn fix(what: String, fix: impl Into<String>) -> Said {
        Said {
            what,
            fix: Some(fix.into()),
        }
    }

    /// A statement with no fix of its own (the cause names what to change).
    fn stated(what: String) -> Said {
        Said { what, fix: None }
    }
}

impl std::fmt::Display for Said {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.what)?;
        match &self.fix {
            Some(fix) => write!(f, "; {fix}"),
            None => Ok(()),
        }
    }
}

/// The documented exit codes.
pub const FAILED: u8 = 1;
pub const USAGE: u8 = 2;
pub const REFUSED: u8 = 3;
pub const VERIFY_MISMATCH: u8 = 4;
pub const ROLLBACK_INCOMPLETE: u8 = 5;
pub const DEGRADED: u8 = 6;
pub const VOLUME_FAILED: u8 = 7;

impl Error {
    pub fn exit_code(&self) -> u8 {
        match self {
            Error::Usage(_) => USAGE,
            Error::Refused(_) | Error::Safety(_) => REFUSED,
            Error::VerifyMismatch { .. } => VERIFY_MISMATCH,
            Error::RolledBack { failure } => failure.exit_code(),
            Error::RollbackIncomplete { .. } => ROLLBACK_INCOMPLETE,
            Error::Failed(_) => FAILED,
            Error::Unhealthy { state, .. } => match state {
                UnhealthyState::Degraded => DEGRADED,
                UnhealthyState::Failed => VOLUME_FAILED,
            },
        }
    }
}

impl Error {
    /// What a kind that carries its own words says, statement and fix apart ([`Line::of`]
    /// says the same), for one met inside a chain; `None` for the kinds that wrap other
    /// errors (their text is the chain's).
    fn said(&self) -> Option<Said> {
        match self {
            Error::Usage(usage) => Some(usage.said()),
            Error::Refused(refusal) => Some(refusal.said()),
            Error::VerifyMismatch {
                mapping,
                mismatched,
                checked,
            } => Some(mismatch_said(mapping, *mismatched, *checked)),
            Error::Unhealthy { message, .. } => Some(Said::stated(message.clone())),
            Error::Safety(_)
            | Error::RolledBack { .. }
            | Error::RollbackIncomplete { .. }
            | Error::Failed(_) => None,
        }
    }
}

/// What [`Error::VerifyMismatch`] says.
fn mismatch_said(mapping: &str, mismatched: usize, checked: usize) -> Said {
    Said::fix(
        format!("verification failed on {mapping}: {mismatched} of {checked} sectors differ from the userspace decryption"),
        "the mapping was removed (wrong key, cipher or sector size in the kernel?)",
    )
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
    tosskey_xfs::Error,
    tosskey_kmod::Error,
    tosskey_tpm::Error,
);

pub type Result<T, E = Error> = std::result::Result<T, E>;

/// What a rolled-back run says when a disk returned I/O errors: the steps the failed
/// operation would suggest (format again, retry) cannot help while a disk fails writes.
const IO_ERROR_FIX: &str = "a disk under the volume returned I/O errors (EIO): check the members (dmesg, SMART) and replace or leave out the failing one";

/// The error on one line, `<what failed>: <cause>; <what to do>`, each cause said once and
/// each fix said once.
///
/// Every level of an error chain is one message. A refusal or usage error carries its
/// statement and its fix apart ([`Said`]); the errors of the other crates and `anyhow`
/// contexts put their advice after `"; "` in their text (`"cannot open X; give an existing
/// device"`), the one place text is split. The levels' statements are joined outermost
/// first with `": "`, a level whose text an outer one already includes (`"opening X:
/// <cause>"`) is left out, and the advice of all levels follows at the end.
pub fn render(error: &Error) -> String {
    Line::of(error).to_string()
}

/// [`render`] for an error that is not (yet) a command's [`Error`], such as a failed undo step.
pub fn render_chain(error: &anyhow::Error) -> String {
    Line::of_chain(error.chain()).to_string()
}

/// An error's statements (outermost first) and the advice that follows them.
#[derive(Default)]
struct Line {
    statements: Vec<String>,
    fixes: Vec<String>,
    /// Whether the chain holds an `EIO`: the device, not the operation, is what failed.
    io_error: bool,
}

impl Line {
    fn of(error: &Error) -> Line {
        match error {
            Error::Failed(error) => Line::of_chain(error.chain()),
            Error::Safety(error) => Line::of_chain(std::iter::successors(
                Some(error as &(dyn std::error::Error + 'static)),
                |e| e.source(),
            )),
            Error::RolledBack { failure } => {
                Line::of(failure).rolled_back("the run was rolled back and nothing it built is left".to_owned())
            }
            Error::RollbackIncomplete { failure, leftovers } => Line::of(failure).rolled_back(format!(
                "the run was rolled back but left behind: {}; remove them by hand (tosskey close NAME)",
                leftovers.iter().map(ToString::to_string).collect::<Vec<_>>().join(", ")
            )),
            Error::Usage(usage) => Line::of_said(usage.said()),
            Error::Refused(refusal) => Line::of_said(refusal.said()),
            Error::VerifyMismatch {
                mapping,
                mismatched,
                checked,
            } => Line::of_said(mismatch_said(mapping, *mismatched, *checked)),
            Error::Unhealthy { message, .. } => Line::of_said(Said::stated(message.clone())),
        }
    }

    fn of_said(said: Said) -> Line {
        Line {
            statements: vec![said.what],
            fixes: said.fix.into_iter().collect(),
            io_error: false,
        }
    }

    fn of_chain<'a>(causes: impl Iterator<Item = &'a (dyn std::error::Error + 'static)>) -> Line {
        let mut line = Line::default();
        let mut said = String::new();
        for cause in causes {
            line.io_error |= is_eio(cause);
            let text = cause.to_string();
            if said.contains(&text) {
                continue;
            }
            said.push_str(&text);
            said.push('\n');
            let Said { what, fix } = said_by(cause, text);
            line.statements.push(what);
            if let Some(fix) = fix {
                line.add_fix(fix);
            }
        }
        line
    }

    /// The run was undone: say so before any advice, and when a disk failed, point at it
    /// instead of at steps of the undone operation.
    fn rolled_back(mut self, what_is_left: String) -> Line {
        if self.io_error {
            self.fixes = vec![IO_ERROR_FIX.to_owned()];
        }
        self.fixes.insert(0, what_is_left);
        self
    }

    fn add_fix(&mut self, fix: String) {
        if !self.fixes.contains(&fix) {
            self.fixes.push(fix);
        }
    }
}

impl std::fmt::Display for Line {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.statements.join(": "))?;
        for fix in &self.fixes {
            write!(f, "; {fix}")?;
        }
        Ok(())
    }
}

/// What one level of a chain says: an [`Error`] that carries its own words (a refusal, a
/// usage error, …) keeps its parts after travelling through `anyhow`; the text of any other
/// error (another crate's, an `anyhow` context) is split at its first `"; "`.
fn said_by(cause: &(dyn std::error::Error + 'static), text: String) -> Said {
    match cause.downcast_ref::<Error>().and_then(Error::said) {
        Some(said) => said,
        None => match text.split_once("; ") {
            Some((what, fix)) => Said::fix(what.to_owned(), fix),
            None => Said::stated(text),
        },
    }
}

fn is_eio(cause: &(dyn std::error::Error + 'static)) -> bool {
    let eio = Some(libc::EIO);
    cause
        .downcast_ref::<std::io::Error>()
        .is_some_and(|io| io.raw_os_error() == eio)
        || cause
            .downcast_ref::<nix::errno::Errno>()
            .is_some_and(|errno| Some(*errno as i32) == eio)
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn each_kind_has_its_documented_code() {
        assert_eq!(Error::Usage(Usage::NoDevice).exit_code(), 2);
        assert_eq!(Error::Refused(Refusal::SecureExec).exit_code(), 3);
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
        let unhealthy = |state| Error::Unhealthy {
            state,
            message: "v: degraded".into(),
        };
        assert_eq!(unhealthy(UnhealthyState::Degraded).exit_code(), 6);
        assert_eq!(unhealthy(UnhealthyState::Failed).exit_code(), 7);
    }

    #[test]
    fn a_typed_error_keeps_its_kind_through_anyhow() {
        let wrapped: anyhow::Error = Error::Refused(Refusal::SecureExec).into();
        assert_eq!(Error::from(wrapped).exit_code(), REFUSED);
        let io = std::io::Error::other("disk on fire");
        let plain = Err::<(), _>(io).context("reading /dev/vdb").unwrap_err();
        assert_eq!(Error::from(plain).exit_code(), FAILED);
    }

    /// No statement or fix of a rendered line appears twice, and it is one line.
    fn assert_said_once(line: &str) {
        assert_eq!(line.lines().count(), 1, "not one line: {line}");
        let parts: Vec<&str> = line.split(": ").flat_map(|p| p.split("; ")).collect();
        for (index, part) in parts.iter().enumerate() {
            assert!(
                !parts[..index].contains(part),
                "{part:?} said twice in: {line}"
            );
        }
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

    #[test]
    fn the_os_error_is_said_once_and_the_fix_comes_after_it() {
        // The dm crate's own error includes its source and its fix.
        let control = tosskey_dm::Error::ControlOpen {
            path: "/dev/mapper/control".into(),
            source: std::io::Error::from_raw_os_error(libc::EACCES),
        };
        let line = render(&control.into());
        assert_eq!(
            line,
            "cannot open the device-mapper control node /dev/mapper/control: Permission denied (os error 13); run as root"
        );
        // A context that carries advice: the cause goes before it.
        let error: Error = anyhow::Error::new(std::io::Error::from_raw_os_error(libc::ENOENT))
            .context("/dev/ram0: no such RAM disk; load brd")
            .into();
        assert_eq!(
            render(&error),
            "/dev/ram0: no such RAM disk: No such file or directory (os error 2); load brd"
        );
    }

    /// The failure the issue quotes: formatting fails because the disk fails writes, and
    /// provision rolled everything back.
    fn format_failed_on_eio() -> Error {
        let eio = std::io::Error::from_raw_os_error(libc::EIO);
        anyhow::Error::new(tosskey_ext4::Error::Io {
            action: "sync",
            target: "/dev/mapper/fw".into(),
            source: eio,
        })
        .context("formatting /dev/mapper/fw")
        .into()
    }

    #[test]
    fn a_rolled_back_run_says_so_and_points_at_the_failing_disk() {
        let error = Error::RolledBack {
            failure: Box::new(format_failed_on_eio()),
        };
        assert_eq!(error.exit_code(), FAILED);
        assert_eq!(
            render(&error),
            "formatting /dev/mapper/fw: cannot sync /dev/mapper/fw: Input/output error (os error 5); the run was rolled back and nothing it built is left; a disk under the volume returned I/O errors (EIO): check the members (dmesg, SMART) and replace or leave out the failing one"
        );
        // Without an I/O error the failed step's own advice stays.
        let other = Error::RolledBack {
            failure: Box::new(anyhow::anyhow!("loading the table; load dm_crypt").into()),
        };
        assert_eq!(
            render(&other),
            "loading the table; the run was rolled back and nothing it built is left; load dm_crypt"
        );
    }

    #[test]
    fn every_kind_renders_one_line_saying_each_part_once() {
        let errors = [
            Error::Usage(Usage::BadKeySize {
                reason: "100 bits: give 256 or 512".into(),
            }),
            Error::Refused(Refusal::NoSuchVolume { name: "x".into() }),
            Error::Safety(SafetyError::NotFound {
                path: "/dev/vdz".into(),
            }),
            Error::VerifyMismatch {
                mapping: "fw".into(),
                mismatched: 1,
                checked: 8,
            },
            Error::RolledBack {
                failure: Box::new(format_failed_on_eio()),
            },
            Error::RollbackIncomplete {
                failure: Box::new(format_failed_on_eio()),
                leftovers: vec![Leftover {
                    what: "dm fw".into(),
                    error: "removing dm mapping fw: Device or resource busy (os error 16)".into(),
                }],
            },
            format_failed_on_eio(),
        ];
        for error in &errors {
            let line = render(error);
            assert_said_once(&line);
            if matches!(
                error,
                Error::RolledBack { .. } | Error::RollbackIncomplete { .. }
            ) {
                assert_eq!(line, error.to_string(), "Display and render agree");
            }
        }
    }
}
