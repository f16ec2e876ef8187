//! The crate's one error type. Every message is one line that names the device and says
//! what to do about it.

use std::io;
use std::path::PathBuf;

/// Everything tosskey-raid can fail with.
#[derive(Debug, thiserror::Error)]
pub enum RaidError {
    /// An md ioctl failed; `device` names the array (and the member, for ADD_NEW_DISK).
    #[error("{command} on {device} failed ({source}): {fix}", fix = ioctl_fix(command, source))]
    Ioctl {
        /// The request's name in `md_u.h`, e.g. `ADD_NEW_DISK`.
        command: &'static str,
        /// The md device, e.g. `/dev/md127 (member /dev/vdb)`.
        device: String,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// A file operation on a device node, sysfs or procfs failed.
    #[error("cannot {action} {path}: {source}; {fix}", fix = io_fix(source))]
    Io {
        /// What was being done, e.g. "read" or "mknod".
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
    },
    /// The array description was refused before any ioctl was issued.
    #[error("invalid md array: {problem}")]
    InvalidSpec {
        /// What is wrong and how to fix it.
        problem: String,
    },
    /// A member is already part of an md array (this tool's or anyone else's).
    #[error("{member} is already a member of md array {array}; stop that array (tosskey close, or mdadm --stop /dev/{array}) or choose another device")]
    MemberInArray {
        /// The member's path.
        member: PathBuf,
        /// Kernel name of the array holding it, e.g. `md127`.
        array: String,
    },
    /// A member is held by another block device (device-mapper, bcache, …).
    #[error("{member} is in use by {holders}; remove what holds it (dmsetup/lvm/tosskey close) or choose another device")]
    MemberHeld {
        /// The member's path.
        member: PathBuf,
        /// The holders' kernel names, comma separated.
        holders: String,
    },
    /// A sysfs or procfs file had unexpected contents.
    #[error("{path}: unexpected contents {found:?} ({expected}); is sysfs mounted on /sys and procfs on /proc?")]
    Parse {
        /// The file.
        path: PathBuf,
        /// What it contained.
        found: String,
        /// What was expected.
        expected: &'static str,
    },
    /// RUN_ARRAY failed because the kernel has no driver for the level.
    #[error("RUN_ARRAY on {device} failed: the kernel has no md {level} personality loaded (not in /proc/mdstat); load it with modprobe {module}")]
    MissingPersonality {
        /// The md device.
        device: String,
        /// `raid0`, `raid1`, `linear`.
        level: &'static str,
        /// The module to load.
        module: &'static str,
    },
    /// The kernel built an array of another size than the spec implies.
    #[error("{device}: the kernel built {built} bytes, expected {expected}; refusing an array of unexpected geometry (check dmesg)")]
    UnexpectedSize {
        /// The md device.
        device: String,
        /// Size the kernel reports.
        built: u64,
        /// Size computed from the spec.
        expected: u64,
    },
    /// Every md minor from 127 down to 0 is taken.
    #[error("no free md minor (md0..md127 are all in use); stop an unused md array and retry")]
    NoFreeMinor,
    /// A named array (`md_NAME`) already exists.
    #[error("md array {name} already exists; stop it (tosskey close) or choose another name")]
    NameInUse {
        /// The kernel name, e.g. `md_tosskey`.
        name: String,
    },
    /// The md array does not exist.
    #[error(
        "md array {name} does not exist (not in /sys/block); check tosskey status or /proc/mdstat"
    )]
    NoSuchArray {
        /// The kernel name asked for.
        name: String,
    },
    /// A device node exists but is not the expected block device.
    #[error("{path} exists but is not block device {expected}; remove the stale node and retry")]
    NodeConflict {
        /// The node.
        path: PathBuf,
        /// `MAJOR:MINOR` expected.
        expected: String,
    },
    /// Building failed and undoing the partial array failed too.
    #[error("{primary}; undoing it also failed, stop {array} by hand (echo clear > /sys/block/{array}/md/array_state): {cleanup}")]
    Rollback {
        /// Kernel name of the half-built array.
        array: String,
        /// The error that made the build fail.
        primary: Box<RaidError>,
        /// The error of the cleanup.
        #[source]
        cleanup: Box<RaidError>,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, RaidError>;

/// What to do about a failed md ioctl.
fn ioctl_fix(command: &str, source: &io::Error) -> &'static str {
    const ENOTSUPP: i32 = 524; // kernel-internal, leaks out of raid0's run()
    match (command, source.raw_os_error()) {
        (_, Some(libc::EACCES | libc::EPERM)) => "run as root (CAP_SYS_ADMIN is required)",
        ("ADD_NEW_DISK", Some(libc::EBUSY)) => {
            "the member is in use (mounted, opened exclusively, or in another array or mapping); release it or choose another device"
        }
        ("ADD_NEW_DISK", Some(libc::ENXIO | libc::ENODEV | libc::ENOENT)) => {
            "the member device disappeared; check that it still exists"
        }
        ("STOP_ARRAY", Some(libc::EBUSY)) => {
            "the array is still open or held (mounted, or a dm mapping on top); close what uses it first"
        }
        ("RUN_ARRAY", Some(libc::EOPNOTSUPP | ENOTSUPP)) => {
            "the kernel refused a multi-zone raid0; use members of equal size"
        }
        ("RUN_ARRAY", Some(libc::EINVAL)) => {
            "the kernel refused the geometry or lacks the personality; check dmesg and modprobe raid0/raid1/linear"
        }
        ("SET_ARRAY_INFO", Some(libc::EBUSY)) => {
            "the md device is already configured by someone else; choose another md device"
        }
        (_, Some(libc::ENOTTY)) => "the device is not an md array",
        (_, Some(libc::ENODEV)) => "the md device has no array configured",
        _ => "check dmesg for the md driver's reason",
    }
}

/// What to do about a failed file operation.
fn io_fix(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EACCES | libc::EPERM | libc::EROFS) => {
            "run as root with /sys, /proc and /dev mounted read-write"
        }
        Some(libc::ENOENT) => {
            "it does not exist: is the md_mod module loaded (modprobe md_mod) and sysfs mounted?"
        }
        Some(libc::EEXIST) => "it already exists; choose another name",
        Some(libc::EBUSY) => "it is in use; release it first",
        _ => "check dmesg",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ioctl_errors_are_one_line_with_device_and_fix() {
        let error = RaidError::Ioctl {
            command: "ADD_NEW_DISK",
            device: "/dev/md127 (member /dev/vdb)".to_owned(),
            source: io::Error::from_raw_os_error(libc::EBUSY),
        };
        let text = error.to_string();
        assert!(!text.contains('\n'), "{text}");
        assert!(text.contains("/dev/md127 (member /dev/vdb)"), "{text}");
        assert!(text.contains("release it"), "{text}");
        assert!(std::error::Error::source(&error).is_some());
    }

    #[test]
    fn rollback_error_keeps_both_causes() {
        let error = RaidError::Rollback {
            array: "md127".to_owned(),
            primary: Box::new(RaidError::NoFreeMinor),
            cleanup: Box::new(RaidError::NoSuchArray {
                name: "md127".to_owned(),
            }),
        };
        let text = error.to_string();
        assert!(text.starts_with("no free md minor"), "{text}");
        assert!(text.contains("/sys/block/md127/md/array_state"), "{text}");
        assert!(!text.contains('\n'));
    }
}
