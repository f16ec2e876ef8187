//! The crate's one error type. Messages are one line naming the device and the fix; none of
//! them can contain key material (no variant carries a table parameter string).

use std::io;
use std::path::PathBuf;

use crate::ioctl::Command;

/// What to do when the control node cannot be opened: a permission error needs root (the
/// module is loaded, or a user could not tell), anything else the dm_mod module.
fn control_open_fix(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => "run as root",
        _ => "load the dm_mod kernel module (modprobe dm_mod)",
    }
}

/// Everything that can go wrong talking to device-mapper.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// `/dev/mapper/control` could not be opened or created.
    #[error(
        "cannot open the device-mapper control node {path}: {source}; {}",
        control_open_fix(source)
    )]
    ControlOpen {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A device-mapper ioctl failed.
    #[error("{command} for device-mapper device {device:?} failed ({errno}): {fix}", errno = errno_name(source.raw_os_error()))]
    Ioctl {
        command: &'static str,
        device: String,
        fix: &'static str,
        #[source]
        source: io::Error,
    },
    /// The kernel's answer did not fit the buffer (over 16 MiB, or a secure request that cannot
    /// be re-sent).
    #[error("{command} for device-mapper device {device:?}: the kernel's answer does not fit the ioctl buffer; this is a bug, please report it")]
    BufferTooLarge {
        command: &'static str,
        device: String,
    },
    /// DEV_REMOVE kept failing with EBUSY.
    #[error(
        "device-mapper device {device} is in use (open count {open_count}; {holders}); \
         unmount it and stop whatever holds it, then retry"
    )]
    Busy {
        device: String,
        open_count: i32,
        /// Who holds it, as far as sysfs, mountinfo and /proc tell.
        holders: String,
        #[source]
        source: io::Error,
    },
    /// A device-mapper name was refused before reaching the kernel.
    #[error(transparent)]
    InvalidName(#[from] tosskey_sysutil::InvalidDmName),
    /// A device-mapper UUID was refused before reaching the kernel.
    #[error("invalid device-mapper UUID {uuid:?}: {reason}; use 1-128 printable ASCII bytes without spaces")]
    InvalidUuid { uuid: String, reason: &'static str },
    /// A target line was refused before reaching the kernel (never contains the key).
    #[error("invalid {target} target: {reason}")]
    InvalidTarget {
        target: &'static str,
        reason: String,
    },
    /// Table parameters that do not have the target's syntax (never contains the key).
    #[error("cannot read {target} table parameters: {reason}")]
    TableSyntax {
        target: &'static str,
        reason: String,
    },
    /// The kernel answered something this crate cannot parse.
    #[error("unexpected answer from the kernel for device-mapper device {device:?}: {what}; please report this with your kernel version")]
    Parse { device: String, what: String },
    /// Creating or removing a `/dev/mapper` node failed.
    #[error("cannot {action} device node {path}: {source}; check that /dev is writable (devtmpfs) and you are root")]
    Node {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Something that is not our block node occupies `/dev/mapper/<name>`.
    #[error(
        "{path} exists but is not the {expected} (found {found}); remove it or pick another name"
    )]
    NodeConflict {
        path: PathBuf,
        expected: String,
        found: String,
    },
    /// A kernel keyring call failed.
    #[error("cannot {action} kernel keyring key {description:?} ({errno}): {fix}", errno = errno_name(source.raw_os_error()), fix = keyring_fix(source.raw_os_error()))]
    Keyring {
        action: &'static str,
        description: String,
        #[source]
        source: io::Error,
    },
    /// An operation failed and so did undoing it: the device may be left behind.
    #[error("{primary}; undoing it also failed, remove device-mapper device {device} by hand: {cleanup}")]
    Rollback {
        device: String,
        primary: Box<Error>,
        cleanup: Box<Error>,
    },
}

impl Error {
    /// The errno behind this error, when the kernel gave one.
    pub fn errno(&self) -> Option<i32> {
        match self {
            Error::ControlOpen { source, .. }
            | Error::Ioctl { source, .. }
            | Error::Busy { source, .. }
            | Error::Node { source, .. }
            | Error::Keyring { source, .. } => source.raw_os_error(),
            Error::Rollback { primary, .. } => primary.errno(),
            _ => None,
        }
    }
}

/// The symbolic name of an errno, for one-line messages.
pub(crate) fn errno_name(errno: Option<i32>) -> String {
    let name = match errno {
        Some(libc::EPERM) => "EPERM",
        Some(libc::ENOENT) => "ENOENT",
        Some(libc::EINTR) => "EINTR",
        Some(libc::EIO) => "EIO",
        Some(libc::ENXIO) => "ENXIO",
        Some(libc::EAGAIN) => "EAGAIN",
        Some(libc::ENOMEM) => "ENOMEM",
        Some(libc::EACCES) => "EACCES",
        Some(libc::EFAULT) => "EFAULT",
        Some(libc::EBUSY) => "EBUSY",
        Some(libc::EEXIST) => "EEXIST",
        Some(libc::ENODEV) => "ENODEV",
        Some(libc::EINVAL) => "EINVAL",
        Some(libc::ENOSPC) => "ENOSPC",
        Some(libc::EDQUOT) => "EDQUOT",
        Some(libc::ENOTTY) => "ENOTTY",
        Some(libc::ENOSYS) => "ENOSYS",
        Some(libc::ENOKEY) => "ENOKEY",
        Some(libc::EKEYREVOKED) => "EKEYREVOKED",
        Some(libc::EKEYREJECTED) => "EKEYREJECTED",
        Some(libc::EOPNOTSUPP) => "EOPNOTSUPP",
        Some(other) => return format!("errno {other}"),
        None => "no errno",
    };
    name.to_owned()
}

/// What to do about a failed keyring call.
fn keyring_fix(errno: Option<i32>) -> &'static str {
    match errno {
        Some(libc::EDQUOT) => {
            "the key quota is used up; raise /proc/sys/kernel/keys/root_maxkeys or use hex key loading"
        }
        Some(libc::ENOSYS | libc::EOPNOTSUPP) => {
            "this kernel has no keyring support; use hex key loading"
        }
        Some(libc::EPERM | libc::EACCES) => {
            "a security policy (seccomp, container, LSM) refuses keyring calls; use hex key loading"
        }
        _ => "use hex key loading",
    }
}

/// What to do about a failed device-mapper ioctl.
pub(crate) fn ioctl_fix(command: Command, errno: Option<i32>) -> &'static str {
    match (command, errno) {
        (_, Some(libc::EPERM | libc::EACCES)) => "run as root (device-mapper needs CAP_SYS_ADMIN)",
        (Command::Version, _) | (_, Some(libc::ENOTTY)) => {
            "the kernel's device-mapper interface is older than 4.20 or missing; use a newer kernel"
        }
        (Command::DevCreate, Some(libc::EBUSY)) => {
            "a device-mapper device with this name or UUID already exists; pick another name or remove it first"
        }
        (_, Some(libc::ENXIO)) => "no device-mapper device has this name; check the name",
        (Command::TableLoad, Some(libc::ENOKEY | libc::EKEYREVOKED)) => {
            "the kernel found no usable keyring key; load the table from the thread that added it, or use hex key loading"
        }
        (Command::TableLoad, Some(libc::ENOENT)) => {
            "the kernel has no such cipher or target type; check the cipher spec and that its module (dm-crypt, xts, twofish/aes) is available"
        }
        (Command::TableLoad, Some(libc::EBUSY)) => {
            "a backing device is held exclusively (mounted, in another mapping or md array, or opened with O_EXCL); release it"
        }
        (Command::TableLoad, Some(libc::EINVAL)) => {
            "the kernel refused the table (unknown cipher or target, wrong key size, device too small); the kernel log (dmesg) names the reason"
        }
        (Command::DevSuspend, Some(libc::EAGAIN)) => {
            "the crypt target has no key (it was wiped); the mapping can only be removed"
        }
        (Command::TargetMsg, Some(libc::EINVAL)) => {
            "the target refused the message (crypt key messages need a suspended device); see dmesg"
        }
        _ => "the kernel log (dmesg) has the device-mapper reason",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_error_is_one_line_naming_command_device_errno_and_fix() {
        let err = Error::Ioctl {
            command: Command::DevCreate.name(),
            device: "scratch".into(),
            fix: ioctl_fix(Command::DevCreate, Some(libc::EBUSY)),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let text = err.to_string();
        assert_eq!(
            text,
            "DM_DEV_CREATE for device-mapper device \"scratch\" failed (EBUSY): a device-mapper \
             device with this name or UUID already exists; pick another name or remove it first"
        );
        assert!(!text.contains('\n'));
        assert_eq!(err.errno(), Some(libc::EBUSY));
    }

    #[test]
    fn keyring_errors_say_what_to_do() {
        let err = Error::Keyring {
            action: "add",
            description: "tosskey:x".into(),
            source: io::Error::from_raw_os_error(libc::EDQUOT),
        };
        assert_eq!(
            err.to_string(),
            "cannot add kernel keyring key \"tosskey:x\" (EDQUOT): the key quota is used up; \
             raise /proc/sys/kernel/keys/root_maxkeys or use hex key loading"
        );
    }

    #[test]
    fn fixes_depend_on_command_and_errno() {
        assert!(ioctl_fix(Command::TableLoad, Some(libc::ENOKEY)).contains("keyring"));
        assert!(ioctl_fix(Command::DevSuspend, Some(libc::EAGAIN)).contains("wiped"));
        assert!(
            ioctl_fix(Command::DevStatus, Some(libc::ENXIO)).contains("no device-mapper device")
        );
        assert!(ioctl_fix(Command::TableLoad, Some(libc::EPERM)).contains("root"));
        assert_eq!(errno_name(Some(9999)), "errno 9999");
    }
}
