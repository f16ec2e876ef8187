//! Every reason a member is refused by the safety checks (`crate::host::safety`), here at the
//! bottom with the one error type so that it names no type of the layers above.

use std::io;
use std::path::{Path, PathBuf};

use tosskey_sysutil::DevId;

/// Every reason a member is refused. Each message is one line: device, reason, fix.
#[derive(Debug, thiserror::Error)]
pub enum SafetyError {
    #[error("{path}: {}", not_found_advice(path))]
    NotFound { path: PathBuf },

    #[error("{path}: cannot inspect it: {source}{}", permission_advice(source))]
    Inspect {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} is a {kind}, not a block device: name a disk such as /dev/nvme1n1")]
    NotBlockDevice { path: PathBuf, kind: &'static str },

    #[error("cannot read the block device inventory under {sys} or {proc}: {source} (are sysfs and procfs mounted?)")]
    Inventory {
        sys: PathBuf,
        proc: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} (block device {dev}) is not listed in {sys}/class/block: is sysfs mounted?")]
    NotInSysfs {
        path: PathBuf,
        dev: DevId,
        sys: PathBuf,
    },

    #[error("{path} and {other} are the same device ({device}): name each member once")]
    Duplicate {
        path: PathBuf,
        other: PathBuf,
        device: String,
    },

    #[error(
        "{path} is a partition of {other}, which is also a member: name whole disks, each once"
    )]
    Overlap { path: PathBuf, other: PathBuf },

    #[error("{path} is on the system disk {disk} (it holds {mount_point}): never encrypt the disk the system runs from; pick another device")]
    SystemDisk {
        path: PathBuf,
        disk: String,
        mount_point: String,
    },

    #[error("{path} is mounted at {mount_point}: unmount it first, or pick another device")]
    Mounted { path: PathBuf, mount_point: String },

    #[error("{path} is active swap: swapoff {path} first, or pick another device")]
    Swap { path: PathBuf },

    #[error("{path} is held by {holder}: {fix}")]
    Held {
        path: PathBuf,
        holder: String,
        fix: String,
    },

    #[error(
        "{path} has partition {partition} in use ({usage}): free it first, or pick another device"
    )]
    PartitionInUse {
        path: PathBuf,
        partition: String,
        usage: String,
    },

    #[error(
        "{path} is a partition of {disk}, which is in use ({usage}): pick a whole unused disk"
    )]
    DiskInUse {
        path: PathBuf,
        disk: String,
        usage: String,
    },

    #[error("{path} is read-only: it cannot hold an encrypted volume; pick another device")]
    ReadOnly { path: PathBuf },

    #[error("{path} is too small ({size} bytes, at least {min} needed): pick a larger device")]
    TooSmall { path: PathBuf, size: u64, min: u64 },

    #[error("{path} is in use by another process or the kernel (exclusive open failed): stop what uses it (see fuser -v {path}, /proc/mdstat, /sys/class/block/*/holders)")]
    Busy {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} changed while it was checked: it was {expected}, the exclusive open reached {found}: make sure nothing renames or replaces device nodes while tosskey runs, then retry")]
    Changed {
        path: PathBuf,
        expected: String,
        found: String,
    },

    #[error("{path}: cannot open it: {source}{}", permission_advice(source))]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error(
        "{path}: cannot read its first and last blocks: {source}{}",
        permission_advice(source)
    )]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("{path} carries a partition table ({partitions}): pass --force to overwrite it, or pick another device")]
    HasPartitions { path: PathBuf, partitions: String },

    #[error("{path} has {signature}: pass --force to overwrite it, or pick another device")]
    /// `signature` says what was found where (`an ext4 filesystem signature at offset
    /// 1024`).
    Signature { path: PathBuf, signature: String },

    #[error("no instance-store disks found for {cloud}: {detail} (use explicit device paths)")]
    NoDisksFound { cloud: String, detail: String },

    /// `provision --wait-timeout` ran out before the disks it waits for were all there.
    #[error("timed out after {waited} waiting for {expected}: found {found}: {fix}")]
    DisksLate {
        waited: String,
        expected: String,
        found: String,
        fix: &'static str,
    },
}

/// A permission error's advice: disks and device-mapper are root's.
fn permission_advice(source: &io::Error) -> &'static str {
    match source.raw_os_error() {
        Some(libc::EACCES | libc::EPERM) => "; run as root",
        _ => "",
    }
}

/// What to say about a path that does not exist: a bare name that is a device under /dev
/// gets that path; a /dev path gets the stable names; anything else (an image file) is a
/// path to check.
fn not_found_advice(path: &Path) -> String {
    let bare = path.components().count() == 1 && path.is_relative();
    let under_dev = Path::new("/dev").join(path);
    if bare && under_dev.exists() {
        format!(
            "no such file in the current directory; give the device's path: {}",
            under_dev.display()
        )
    } else if path.starts_with("/dev") {
        "no such device; check the name (ls /dev/disk/by-id lists stable names)".to_owned()
    } else {
        "no such file or device; check the path".to_owned()
    }
}
