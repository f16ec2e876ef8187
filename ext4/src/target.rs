//! Opening the target and refusing the dangerous ones before anything is written:
//! read-only, mounted, in use (held by dm/md/a partition mount), attached to a loop device.

use std::fs::{File, OpenOptions};
use std::io::{self, Seek, SeekFrom};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use tosskey_sysutil::{parse_mountinfo, DevId, SystemRoot};

use crate::Error;

/// What kind of thing is being formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetKind {
    /// A block device (`/dev/...`): size from seeking to its end.
    BlockDevice {
        /// Device number.
        major: u32,
        /// Device number.
        minor: u32,
    },
    /// A regular file (an image): size from its length; holes can be punched.
    RegularFile,
}

/// An opened, checked target.
#[derive(Debug)]
pub struct Target {
    /// The open file or device, read-write.
    pub file: File,
    /// Block device or image file.
    pub kind: TargetKind,
    /// Size in bytes.
    pub size: u64,
}

/// Split a `st_rdev` into major and minor (glibc's `gnu_dev_major`/`gnu_dev_minor` encoding).
pub fn split_dev(dev: u64) -> (u32, u32) {
    let major = ((dev >> 8) & 0xfff) | ((dev >> 32) & !0xfff);
    let minor = (dev & 0xff) | ((dev >> 12) & !0xff);
    (
        u32::try_from(major).expect("major numbers are 32-bit"),
        u32::try_from(minor).expect("minor numbers are 32-bit"),
    )
}

/// Which file or device a target is: its kind and `(st_dev, st_ino)`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Identity {
    kind: TargetKind,
    inode: (u64, u64),
}

impl Identity {
    fn of(target: &Path, metadata: &std::fs::Metadata) -> Result<Self, Error> {
        let kind = if metadata.file_type().is_block_device() {
            let (major, minor) = split_dev(metadata.rdev());
            TargetKind::BlockDevice { major, minor }
        } else if metadata.file_type().is_file() {
            TargetKind::RegularFile
        } else {
            return Err(Error::NotBlockDeviceOrFile {
                target: target.to_path_buf(),
            });
        };
        Ok(Identity {
            kind,
            inode: (metadata.dev(), metadata.ino()),
        })
    }
}

/// Open `path` read-write and refuse it if it is mounted, in use, read-only or neither
/// a block device nor a regular file. Nothing is written. The checks run on the path
/// first (so a mounted device is named as such rather than as busy) and again on what
/// the open reached ([`adopt`]).
pub fn open(path: &Path) -> Result<Target, Error> {
    let target = path.to_path_buf();
    let metadata = std::fs::metadata(path).map_err(|source| Error::Open {
        target: target.clone(),
        source,
    })?;
    let identity = Identity::of(path, &metadata)?;
    refuse_in_use(path, identity)?;
    let mut options = OpenOptions::new();
    options.read(true).write(true);
    if matches!(identity.kind, TargetKind::BlockDevice { .. }) {
        // O_EXCL on a block device: the kernel refuses it while the device, or a partition
        // of it, is mounted or claimed by device-mapper or md.
        options.custom_flags(nix::fcntl::OFlag::O_EXCL.bits());
    }
    let file = options
        .open(path)
        .map_err(|source| match source.raw_os_error() {
            Some(code)
                if code == nix::errno::Errno::EROFS as i32
                    || code == nix::errno::Errno::EACCES as i32
                    || code == nix::errno::Errno::EPERM as i32 =>
            {
                Error::ReadOnly {
                    target: target.clone(),
                }
            }
            Some(code) if code == nix::errno::Errno::EBUSY as i32 => Error::InUse {
                target: target.clone(),
            },
            _ => Error::Open {
                target: target.clone(),
                source,
            },
        })?;
    adopt(file, path)
}

/// Take `file`, already open read-write (a block device with `O_EXCL`), as the target
/// `path` names for messages: the checks of [`open`] run on the descriptor itself
/// (`fstat`), so what is formatted is what was checked, whatever `path` names by now.
pub fn adopt(mut file: File, path: &Path) -> Result<Target, Error> {
    let target = path.to_path_buf();
    let metadata = file.metadata().map_err(|source| Error::Open {
        target: target.clone(),
        source,
    })?;
    let identity = Identity::of(path, &metadata)?;
    let access =
        nix::fcntl::fcntl(&file, nix::fcntl::FcntlArg::F_GETFL).map_err(|errno| Error::Open {
            target: target.clone(),
            source: errno.into(),
        })?;
    if nix::fcntl::OFlag::from_bits_truncate(access) & nix::fcntl::OFlag::O_ACCMODE
        == nix::fcntl::OFlag::O_RDONLY
    {
        return Err(Error::OpenedReadOnly { target });
    }
    refuse_in_use(path, identity)?;
    let size = match identity.kind {
        TargetKind::RegularFile => metadata.len(),
        TargetKind::BlockDevice { .. } => {
            file.seek(SeekFrom::End(0)).map_err(|source| Error::Io {
                target: target.clone(),
                action: "seek to the end of",
                source,
            })?
        }
    };
    Ok(Target {
        file,
        kind: identity.kind,
        size,
    })
}

/// Refuse `identity` if it is mounted, a read-only block device, or a file behind a loop
/// device.
fn refuse_in_use(path: &Path, identity: Identity) -> Result<(), Error> {
    let target = path.to_path_buf();
    if let Some(mount_point) = mounted_at(identity)? {
        return Err(Error::Mounted {
            target,
            mount_point,
        });
    }
    match identity.kind {
        TargetKind::BlockDevice { major, minor } => {
            if sysfs_flag(major, minor, "ro") {
                return Err(Error::ReadOnly { target });
            }
        }
        TargetKind::RegularFile => {
            if let Some(loop_device) = loop_device_backed_by(identity.inode) {
                return Err(Error::AttachedToLoop {
                    target,
                    loop_device,
                });
            }
        }
    }
    Ok(())
}

/// Whether `/sys/dev/block/MAJOR:MINOR/<name>` reads "1".
fn sysfs_flag(major: u32, minor: u32, name: &str) -> bool {
    let path = SystemRoot::host()
        .block_dir(DevId::new(major, minor))
        .join(name);
    tosskey_sysutil::read_attr(&path).is_ok_and(|value| value == "1")
}

/// Where `identity` is mounted, per `/proc/self/mountinfo`: a block device matches by
/// `MAJOR:MINOR` (field 3) or by mount source; a file by mount source.
fn mounted_at(identity: Identity) -> Result<Option<PathBuf>, Error> {
    let mountinfo = match std::fs::read_to_string("/proc/self/mountinfo") {
        Ok(text) => text,
        // No /proc (a bare initramfs before mounting it): O_EXCL still guards devices.
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(None),
        Err(source) => {
            return Err(Error::Io {
                target: PathBuf::from("/proc/self/mountinfo"),
                action: "read",
                source,
            })
        }
    };
    Ok(find_mount(&mountinfo, identity))
}

/// Whether the file at `path` is `inode` (`(st_dev, st_ino)`).
fn is_inode(path: &Path, inode: (u64, u64)) -> bool {
    std::fs::metadata(path).is_ok_and(|m| (m.dev(), m.ino()) == inode)
}

/// The mount point in `mountinfo` that uses `identity`, if any.
fn find_mount(mountinfo: &str, identity: Identity) -> Option<PathBuf> {
    parse_mountinfo(mountinfo)
        .into_iter()
        .find(|mount| {
            let dev_matches = match identity.kind {
                TargetKind::BlockDevice { major, minor } => mount.dev == DevId::new(major, minor),
                TargetKind::RegularFile => false,
            };
            // Only absolute sources name files: `devtmpfs`, `cgroup`, … are not paths, and
            // resolving them would look them up relative to the working directory.
            let source_matches =
                mount.source.starts_with('/') && is_inode(Path::new(&mount.source), identity.inode);
            dev_matches || source_matches
        })
        .map(|mount| PathBuf::from(mount.mount_point))
}

/// A loop device whose backing file is `inode` (it may be mounted through the loop).
fn loop_device_backed_by(inode: (u64, u64)) -> Option<String> {
    let sys_block = SystemRoot::host().sys.join("block");
    let entries = std::fs::read_dir(sys_block).ok()?;
    for entry in entries.flatten() {
        let name = entry.file_name().to_string_lossy().into_owned();
        if !name.starts_with("loop") {
            continue;
        }
        let Ok(backing) = std::fs::read_to_string(entry.path().join("loop/backing_file")) else {
            continue;
        };
        if is_inode(Path::new(backing.trim_end_matches('\n')), inode) {
            return Some(format!("/dev/{name}"));
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const MOUNTINFO: &str = "\
22 1 254:0 / / rw,relatime shared:1 - ext4 /dev/vda rw
30 22 7:3 / /mnt/my\\040disk rw,relatime shared:2 - ext4 /dev/loop3 rw
31 22 0:40 / /proc rw shared:3 - proc proc rw
";

    fn identity(kind: TargetKind) -> Identity {
        Identity {
            kind,
            inode: (u64::MAX, u64::MAX),
        }
    }

    #[test]
    fn finds_a_block_device_by_major_minor() {
        let kind = TargetKind::BlockDevice { major: 7, minor: 3 };
        assert_eq!(
            find_mount(MOUNTINFO, identity(kind)),
            Some(PathBuf::from("/mnt/my disk"))
        );
        let other = TargetKind::BlockDevice { major: 7, minor: 4 };
        assert_eq!(find_mount(MOUNTINFO, identity(other)), None);
    }

    #[test]
    fn regular_files_are_not_matched_by_device_number() {
        assert_eq!(
            find_mount(MOUNTINFO, identity(TargetKind::RegularFile)),
            None
        );
    }

    #[test]
    fn a_target_opened_read_only_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("image");
        File::create(&path).unwrap().set_len(1 << 20).unwrap();
        let error = adopt(File::open(&path).unwrap(), &path).unwrap_err();
        assert!(matches!(error, Error::OpenedReadOnly { .. }), "{error}");
    }

    #[test]
    fn splits_device_numbers_like_glibc() {
        assert_eq!(split_dev(0x0703), (7, 3));
        assert_eq!(split_dev((259 << 8) | 0x12 | (0x1 << 20)), (259, 0x112));
    }
}
