//! Safety checks on every member before anything is written.
//!
//! [`check_members`] is what `provision` calls: it refuses, with one line naming the
//! device, the reason and the fix, any member that is missing, not a block device, listed
//! twice (under any name), mounted (itself or a partition), active swap, held by another
//! device (dm, md, LVM — the holder is named), part of the root/boot disk, a partition of a
//! disk in use, read-only, too small, claimed by someone else (exclusive open fails), or
//! that carries partitions or a strong signature ([`crate::host::signature`]) without `--force`.
//!
//! Nothing here writes. A [`CheckedDevice`] keeps its exclusive (`O_EXCL`) open until
//! [`CheckedDevice::release_claim`], or hands it to [`MemberClaims`]: nobody can mount or
//! claim the member between the check and the moment provisioning builds on it. The
//! executor releases each claim right before the md array or dm mapping over that member
//! is created: the kernel claims the member exclusively itself and would see ours. The
//! claimed descriptor is `fstat`ed: it must be the very device (or file) the checks looked
//! at, not whatever the path names by the time it is opened.

use std::fs::{self, File, OpenOptions};
use std::io;
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

pub use crate::error::SafetyError;
use crate::host::signature::{self, Signature};
use crate::host::sysfs::{BlockDevice, DevId, HolderKind, SystemRoot, SystemState};

/// Smallest member accepted: below this a "disk" is a mistake (a loop image, a partition
/// of the wrong disk) rather than an ephemeral disk.
pub const MIN_MEMBER_BYTES: u64 = 16 * 1024 * 1024;

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct CheckOptions {
    /// `--force`: overwrite partitions and strong signatures. Never overrides a refusal
    /// about use (mounted, held, swap, busy, system disk).
    pub force: bool,
    /// Accept regular files as members (image files in tests). Off for every real run.
    pub allow_regular_file: bool,
}

/// What a member is.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberKind {
    /// A block device, with everything sysfs knows about it.
    Block(Box<BlockDevice>),
    /// An image file (only with [`CheckOptions::allow_regular_file`]).
    RegularFile,
}

/// A member that passed every check.
#[derive(Debug)]
pub struct CheckedDevice {
    /// The path as given (`/dev/nvme1n1`, `/dev/disk/by-id/...`).
    pub path: PathBuf,
    pub kind: MemberKind,
    pub size_bytes: u64,
    /// For regular files: 512 (any size is addressable).
    pub logical_block_size: u32,
    /// For regular files: 4096 (the page cache's unit).
    pub physical_block_size: u32,
    /// Signatures found and overridden by `--force` (empty otherwise): the plan shows them.
    pub overridden: Vec<Signature>,
    claim: Option<File>,
}

impl CheckedDevice {
    /// The block device number (None for an image file).
    pub fn dev(&self) -> Option<DevId> {
        match &self.kind {
            MemberKind::Block(device) => Some(device.dev),
            MemberKind::RegularFile => None,
        }
    }

    /// Whether this process still holds the exclusive open taken by the check.
    pub fn is_claimed(&self) -> bool {
        self.claim.is_some()
    }

    /// Close the exclusive open; do it right before handing the member to md or dm.
    pub fn release_claim(&mut self) {
        self.claim = None;
    }

    /// The descriptor the checks looked at (and scanned), for a writer that must write to
    /// that very device or file rather than reopen its path (`tosskey mkfs`).
    pub fn take_claim(&mut self) -> Option<File> {
        self.claim.take()
    }
}

/// The exclusive opens of a run's members, by member index (the plan's member order),
/// held until the executor creates what is built on each.
#[derive(Debug, Default)]
pub struct MemberClaims(Vec<Option<File>>);

impl MemberClaims {
    /// Take over the claims of `checked` (in member order).
    pub fn take(checked: &mut [CheckedDevice]) -> Self {
        MemberClaims(checked.iter_mut().map(|c| c.claim.take()).collect())
    }

    /// Whether member `index`'s exclusive open is still held.
    pub fn is_held(&self, index: usize) -> bool {
        self.0.get(index).is_some_and(Option::is_some)
    }

    /// Close member `index`'s exclusive open (md or dm is about to claim it).
    pub fn release(&mut self, index: usize) {
        if let Some(claim) = self.0.get_mut(index) {
            *claim = None;
        }
    }
}

/// How the claim is opened: read-only for members md or dm take over, read-write for a
/// target tosskey writes itself through the claim ([`CheckedDevice::take_claim`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Access {
    Read,
    ReadWrite,
}

/// Check one member against a fresh snapshot of the system.
pub fn check_member(
    root: &SystemRoot,
    path: &Path,
    opts: &CheckOptions,
) -> Result<CheckedDevice, SafetyError> {
    let mut checked = check_members_with(root, &[path.to_path_buf()], opts, Access::Read)?;
    Ok(checked.remove(0))
}

/// [`check_member`] with the claim opened read-write, for formatting through it.
pub fn check_member_writable(
    root: &SystemRoot,
    path: &Path,
    opts: &CheckOptions,
) -> Result<CheckedDevice, SafetyError> {
    let mut checked = check_members_with(root, &[path.to_path_buf()], opts, Access::ReadWrite)?;
    Ok(checked.remove(0))
}

/// Check every member: duplicates and overlaps first (a member named twice would
/// otherwise fail its second exclusive open and look "busy"), then each member in order.
pub fn check_members(
    root: &SystemRoot,
    paths: &[PathBuf],
    opts: &CheckOptions,
) -> Result<Vec<CheckedDevice>, SafetyError> {
    check_members_with(root, paths, opts, Access::Read)
}

fn check_members_with(
    root: &SystemRoot,
    paths: &[PathBuf],
    opts: &CheckOptions,
    access: Access,
) -> Result<Vec<CheckedDevice>, SafetyError> {
    // Image files alone need no inventory (`tosskey mkfs` on an image in a bare chroot):
    // only block devices are looked up in it, and one that appears later is refused.
    let any_block_device = paths
        .iter()
        .any(|p| fs::metadata(p).is_ok_and(|m| m.file_type().is_block_device()));
    let state = if any_block_device {
        SystemState::read(root).map_err(|source| SafetyError::Inventory {
            sys: root.sys.clone(),
            proc: root.proc.clone(),
            source,
        })?
    } else {
        SystemState::empty(root)
    };
    let identities = paths
        .iter()
        .map(|path| identify(&state, path, opts))
        .collect::<Result<Vec<_>, _>>()?;
    reject_duplicates(&state, paths, &identities)?;
    paths
        .iter()
        .zip(identities)
        .map(|(path, identity)| check_identified(&state, path, identity, opts, access))
        .collect()
}

/// What a member path turned out to be, before any check on its use.
#[derive(Debug, Clone)]
enum Identity {
    Block(DevId),
    File {
        canonical: PathBuf,
        size: u64,
        /// `(st_dev, st_ino)`: which file it was.
        inode: (u64, u64),
    },
}

fn identify(
    state: &SystemState,
    path: &Path,
    opts: &CheckOptions,
) -> Result<Identity, SafetyError> {
    let meta = fs::metadata(path).map_err(|source| match source.kind() {
        io::ErrorKind::NotFound => SafetyError::NotFound {
            path: path.to_path_buf(),
        },
        _ => SafetyError::Inspect {
            path: path.to_path_buf(),
            source,
        },
    })?;
    let file_type = meta.file_type();
    if file_type.is_block_device() {
        let dev = DevId::from_dev_t(meta.rdev());
        if state.by_dev(dev).is_none() {
            return Err(SafetyError::NotInSysfs {
                path: path.to_path_buf(),
                dev,
                sys: state.root.sys.clone(),
            });
        }
        return Ok(Identity::Block(dev));
    }
    let kind = if file_type.is_file() {
        if opts.allow_regular_file {
            let canonical = fs::canonicalize(path).map_err(|source| SafetyError::Inspect {
                path: path.to_path_buf(),
                source,
            })?;
            return Ok(Identity::File {
                canonical,
                size: meta.len(),
                inode: (meta.dev(), meta.ino()),
            });
        }
        "regular file"
    } else if file_type.is_dir() {
        "directory"
    } else if file_type.is_char_device() {
        "character device"
    } else if file_type.is_fifo() {
        "FIFO"
    } else if file_type.is_socket() {
        "socket"
    } else {
        "special file"
    };
    Err(SafetyError::NotBlockDevice {
        path: path.to_path_buf(),
        kind,
    })
}

fn reject_duplicates(
    state: &SystemState,
    paths: &[PathBuf],
    identities: &[Identity],
) -> Result<(), SafetyError> {
    for (i, identity) in identities.iter().enumerate() {
        for (j, earlier) in identities[..i].iter().enumerate() {
            let same = match (identity, earlier) {
                (Identity::Block(a), Identity::Block(b)) => a == b,
                (Identity::File { canonical: a, .. }, Identity::File { canonical: b, .. }) => {
                    a == b
                }
                _ => false,
            };
            if same {
                let device = match identity {
                    Identity::Block(dev) => state
                        .by_dev(*dev)
                        .map_or_else(|| dev.to_string(), |d| d.name.clone()),
                    Identity::File { canonical, .. } => canonical.display().to_string(),
                };
                return Err(SafetyError::Duplicate {
                    path: paths[i].clone(),
                    other: paths[j].clone(),
                    device,
                });
            }
        }
    }
    // A partition next to its own disk: whichever comes first, name the partition.
    for (i, identity) in identities.iter().enumerate() {
        let Identity::Block(dev) = identity else {
            continue;
        };
        let Some(parent) = state.by_dev(*dev).and_then(|d| d.parent.clone()) else {
            continue;
        };
        for (j, other) in identities.iter().enumerate() {
            if let Identity::Block(other_dev) = other {
                if state.by_dev(*other_dev).is_some_and(|d| d.name == parent) {
                    return Err(SafetyError::Overlap {
                        path: paths[i].clone(),
                        other: paths[j].clone(),
                    });
                }
            }
        }
    }
    Ok(())
}

fn check_identified(
    state: &SystemState,
    path: &Path,
    identity: Identity,
    opts: &CheckOptions,
    access: Access,
) -> Result<CheckedDevice, SafetyError> {
    match identity {
        Identity::Block(dev) => {
            let device = state.by_dev(dev).expect("identify() found it").clone();
            if let Some(refusal) = usage_refusal(state, &device, path) {
                return Err(refusal);
            }
            check_size(path, device.size_bytes)?;
            let file = open_claim(path, path, libc::O_EXCL, access)?;
            same_block_device(path, &file, dev)?;
            let found = signature::scan_file(&file, device.size_bytes).map_err(|source| {
                SafetyError::Read {
                    path: path.to_path_buf(),
                    source,
                }
            })?;
            if !device.partitions.is_empty() && !opts.force {
                return Err(SafetyError::HasPartitions {
                    path: path.to_path_buf(),
                    partitions: device.partitions.join(", "),
                });
            }
            let overridden = refuse_signatures(path, found, opts)?;
            Ok(CheckedDevice {
                path: path.to_path_buf(),
                size_bytes: device.size_bytes,
                logical_block_size: device.logical_block_size,
                physical_block_size: device.physical_block_size,
                kind: MemberKind::Block(Box::new(device)),
                overridden,
                claim: Some(file),
            })
        }
        Identity::File {
            canonical,
            size,
            inode,
        } => {
            check_size(path, size)?;
            // The resolved path, not followed again: a link planted there is refused.
            let file = open_claim(path, &canonical, libc::O_NOFOLLOW, access)?;
            same_file(path, &file, inode)?;
            let found = signature::scan_file(&file, size).map_err(|source| SafetyError::Read {
                path: path.to_path_buf(),
                source,
            })?;
            let overridden = refuse_signatures(path, found, opts)?;
            Ok(CheckedDevice {
                path: path.to_path_buf(),
                kind: MemberKind::RegularFile,
                size_bytes: size,
                logical_block_size: 512,
                physical_block_size: 4096,
                overridden,
                claim: Some(file),
            })
        }
    }
}

fn check_size(path: &Path, size: u64) -> Result<(), SafetyError> {
    if size < MIN_MEMBER_BYTES {
        return Err(SafetyError::TooSmall {
            path: path.to_path_buf(),
            size,
            min: MIN_MEMBER_BYTES,
        });
    }
    Ok(())
}

/// Open `open_path` (member `path`) with `flags` for `access`. A block device is opened
/// with `O_EXCL`: the kernel refuses (EBUSY) while a filesystem, md, dm or another
/// exclusive opener holds it.
fn open_claim(
    path: &Path,
    open_path: &Path,
    flags: i32,
    access: Access,
) -> Result<File, SafetyError> {
    OpenOptions::new()
        .read(true)
        .write(access == Access::ReadWrite)
        .custom_flags(flags)
        .open(open_path)
        .map_err(|source| {
            if source.raw_os_error() == Some(libc::EBUSY) {
                SafetyError::Busy {
                    path: path.to_path_buf(),
                    source,
                }
            } else if source.raw_os_error() == Some(libc::ELOOP) {
                SafetyError::Changed {
                    path: path.to_path_buf(),
                    expected: format!("the file {}", open_path.display()),
                    found: "a symbolic link".to_owned(),
                }
            } else {
                SafetyError::Open {
                    path: path.to_path_buf(),
                    source,
                }
            }
        })
}

/// The claimed descriptor is the block device `expected` that [`identify`] saw: the path
/// was looked up twice (stat, then open), and a node or symlink swapped in between must
/// not get the other device written to.
fn same_block_device(path: &Path, file: &File, expected: DevId) -> Result<(), SafetyError> {
    let meta = claimed_metadata(path, file)?;
    let found = meta
        .file_type()
        .is_block_device()
        .then(|| DevId::from_dev_t(meta.rdev()));
    if found == Some(expected) {
        return Ok(());
    }
    Err(SafetyError::Changed {
        path: path.to_path_buf(),
        expected: format!("block device {expected}"),
        found: found.map_or_else(
            || "something that is not a block device".to_owned(),
            |dev| format!("block device {dev}"),
        ),
    })
}

/// An image file's counterpart of [`same_block_device`]: the same inode.
fn same_file(path: &Path, file: &File, expected: (u64, u64)) -> Result<(), SafetyError> {
    let meta = claimed_metadata(path, file)?;
    let found = (meta.dev(), meta.ino());
    if found == expected {
        return Ok(());
    }
    let describe = |(dev, ino): (u64, u64)| format!("inode {ino} on device {dev:#x}");
    Err(SafetyError::Changed {
        path: path.to_path_buf(),
        expected: describe(expected),
        found: describe(found),
    })
}

fn claimed_metadata(path: &Path, file: &File) -> Result<fs::Metadata, SafetyError> {
    file.metadata().map_err(|source| SafetyError::Inspect {
        path: path.to_path_buf(),
        source,
    })
}

fn refuse_signatures(
    path: &Path,
    found: Vec<Signature>,
    opts: &CheckOptions,
) -> Result<Vec<Signature>, SafetyError> {
    match found.first() {
        Some(signature) if !opts.force => Err(SafetyError::Signature {
            path: path.to_path_buf(),
            signature: signature.to_string(),
        }),
        _ => Ok(found),
    }
}

/// The first reason `device` is in use and must not be touched, if any. `shown` is the
/// name the user gave it. Used by the member checks and by discovery (which skips instead).
pub fn usage_refusal(
    state: &SystemState,
    device: &BlockDevice,
    shown: &Path,
) -> Option<SafetyError> {
    let path = shown.to_path_buf();
    let physical = state.physical_disks(&device.name);
    if let Some((disk, mount_point)) = state
        .system_disks()
        .into_iter()
        .find(|(disk, _)| physical.contains(disk))
    {
        return Some(SafetyError::SystemDisk {
            path,
            disk,
            mount_point,
        });
    }
    if let Some(mount_point) = state.mount_points(&device.name).first() {
        return Some(SafetyError::Mounted {
            path,
            mount_point: (*mount_point).to_owned(),
        });
    }
    if state.is_swap(&device.name) {
        return Some(SafetyError::Swap { path });
    }
    if let Some(holder) = device.holders.first() {
        return Some(SafetyError::Held {
            path,
            holder: holder.to_string(),
            fix: holder_fix(holder.kind(), holder),
        });
    }
    for partition in &device.partitions {
        if let Some(usage) = describe_use(state, partition) {
            return Some(SafetyError::PartitionInUse {
                path,
                partition: partition.clone(),
                usage,
            });
        }
    }
    if let Some(disk) = &device.parent {
        let siblings_in_use = state.by_name(disk).and_then(|parent| {
            describe_use(state, disk).or_else(|| {
                parent
                    .partitions
                    .iter()
                    .filter(|p| **p != device.name)
                    .find_map(|p| describe_use(state, p).map(|usage| format!("{p} {usage}")))
            })
        });
        if let Some(usage) = siblings_in_use {
            return Some(SafetyError::DiskInUse {
                path,
                disk: disk.clone(),
                usage,
            });
        }
    }
    if device.read_only {
        return Some(SafetyError::ReadOnly { path });
    }
    None
}

/// `mounted at /x`, `active swap`, `held by dm-3 (x)` — or None when `name` is unused.
fn describe_use(state: &SystemState, name: &str) -> Option<String> {
    if let Some(mount_point) = state.mount_points(name).first() {
        return Some(format!("mounted at {mount_point}"));
    }
    if state.is_swap(name) {
        return Some("active swap".to_owned());
    }
    let device = state.by_name(name)?;
    device
        .holders
        .first()
        .map(|holder| format!("held by {holder}"))
}

fn holder_fix(kind: HolderKind, holder: &crate::host::sysfs::Holder) -> String {
    let dm_name = holder.dm_name.as_deref().unwrap_or(&holder.name);
    match kind {
        HolderKind::Tosskey => {
            format!("it belongs to the tosskey volume {dm_name}: see tosskey status, remove it with tosskey close {dm_name}")
        }
        HolderKind::Md => format!(
            "it is a member of the md array {}: stop the array first",
            holder.name
        ),
        HolderKind::Lvm => {
            format!("it is an LVM physical volume in use by {dm_name}: remove it from LVM first")
        }
        HolderKind::Cryptsetup => {
            format!("close the cryptsetup mapping first (cryptsetup close {dm_name})")
        }
        HolderKind::OtherDm => {
            format!("remove the device-mapper device first (dmsetup remove {dm_name})")
        }
        HolderKind::Other => format!("detach it from {} first", holder.name),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const FILES: CheckOptions = CheckOptions {
        force: false,
        allow_regular_file: true,
    };

    fn image(path: &Path) {
        File::create(path)
            .unwrap()
            .set_len(MIN_MEMBER_BYTES)
            .unwrap();
    }

    /// The path is looked up twice, by `identify` (stat) and by the claim (open): a file
    /// renamed over it in between is another file, and must not be the one claimed.
    #[test]
    fn a_file_replaced_between_identify_and_claim_is_refused() {
        let tree = tosskey_sysutil::fake::FakeTree::new();
        let state = SystemState::read(&tree.root).unwrap();
        let path = tree.path().join("member.img");
        image(&path);
        let identity = identify(&state, &path, &FILES).unwrap();
        let other = tree.path().join("other.img");
        image(&other);
        fs::rename(&other, &path).unwrap();
        let err = check_identified(&state, &path, identity, &FILES, Access::Read).unwrap_err();
        assert!(matches!(err, SafetyError::Changed { .. }), "{err}");
        let message = err.to_string();
        assert!(
            message.starts_with(&format!(
                "{} changed while it was checked: it was inode ",
                path.display()
            )),
            "{message}"
        );

        // Unchanged, the same two steps pass.
        let identity = identify(&state, &path, &FILES).unwrap();
        assert!(
            check_identified(&state, &path, identity, &FILES, Access::Read)
                .unwrap()
                .is_claimed()
        );
    }

    /// The same for block devices: a symlink re-pointed to another disk between the
    /// check's stat and its exclusive open.
    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn a_device_swapped_between_identify_and_claim_is_refused() {
        let first = tosskey_testkit::LoopDevice::new(MIN_MEMBER_BYTES).unwrap();
        let second = tosskey_testkit::LoopDevice::new(MIN_MEMBER_BYTES).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("member");
        std::os::unix::fs::symlink(first.path(), &link).unwrap();
        let root = SystemRoot::host();
        let state = SystemState::read(&root).unwrap();
        let identity = identify(&state, &link, &CheckOptions::default()).unwrap();
        fs::remove_file(&link).unwrap();
        std::os::unix::fs::symlink(second.path(), &link).unwrap();
        let err = check_identified(
            &state,
            &link,
            identity,
            &CheckOptions::default(),
            Access::Read,
        )
        .unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "{} changed while it was checked: it was block device {}, the exclusive open reached block device {}: make sure nothing renames or replaces device nodes while tosskey runs, then retry",
                link.display(),
                first.dev(),
                second.dev()
            )
        );
    }
}
