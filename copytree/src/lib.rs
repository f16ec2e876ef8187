//! Copying a directory's contents onto the encrypted volume before it is bind-mounted over
//! the directory (`provision --bind DIR`), in pure Rust: no `cp` in a minimal initramfs.
//!
//! [`copy_tree`] copies what is below `from` into `to` (which must exist and be empty) the
//! way `cp -a` does, so that kubelet, containerd and the pod logs find their files as
//! before, byte for byte. For every entry, never following a symlink, it keeps:
//! - the file type: directories, regular files, symlinks (their target bytes as they are),
//!   FIFOs, character and block devices (overlayfs whiteouts are character devices 0:0) and
//!   sockets, which are recreated as socket inodes like `cp -a` does (nothing listens on a
//!   copied socket; kubelet and containerd recreate theirs when they start);
//! - owner and group, set first: `chown` clears set-user-ID, set-group-ID and file
//!   capabilities, so the mode and `security.capability` are written after it;
//! - every extended attribute the process can list (`user.*`; `trusted.*` such as
//!   `trusted.overlay.opaque` and `security.*` such as `security.capability` when run as
//!   root, since the kernel lists `trusted.*` only to `CAP_SYS_ADMIN`; the POSIX ACLs
//!   `system.posix_acl_access` and `system.posix_acl_default`);
//! - the mode with set-user-ID, set-group-ID and sticky bits;
//! - access and modification times to the nanosecond; a directory's are set after its
//!   contents are written (the change time cannot be set, by anyone);
//! - hard links: a file with several links is copied once and linked again;
//! - holes: only the data extents (`SEEK_DATA`/`SEEK_HOLE`) are copied, with
//!   `copy_file_range` where the kernel offers it between the two files and 1 MiB reads and
//!   writes otherwise, and the length is set last, so holes, trailing ones too, stay holes.
//!
//! It does not cross into another filesystem: a directory below `from` on another device
//! (a mount point) is refused with [`Error::MountPointBelow`], because the bind mount over
//! `from` would hide that mount while its copy showed its contents. It fails on the first
//! entry it cannot copy, naming it and the step; the caller removes the partial copy.
//! Data is streamed through one buffer; memory grows only with the number of files that
//! have several hard links (their destination paths are kept until the copy ends).

pub mod xattr;

use std::collections::HashMap;
use std::ffi::{CStr, CString, OsStr};
use std::fs::{self, File, Metadata, OpenOptions};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{
    lchown, DirBuilderExt, FileExt, FileTypeExt, MetadataExt, OpenOptionsExt, PermissionsExt,
};
use std::path::{Path, PathBuf};

use nix::errno::Errno;
use nix::fcntl::{copy_file_range, AT_FDCWD};
use nix::sys::stat::{mknod, utimensat, Mode, SFlag, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{lseek, Whence};

/// The read/write buffer when `copy_file_range` cannot be used: large enough that the
/// per-call cost vanishes next to the copy itself.
const BUFFER_BYTES: usize = 1 << 20;
/// The most `copy_file_range` is asked to move in one call, so that a huge extent is copied
/// in steps the kernel can interrupt.
const COPY_RANGE_STEP: u64 = 1 << 30;

/// Why a tree could not be copied: the file and the step. Reading steps name the source
/// path; writing steps name the copy and the source it came from.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// `from` is not a directory (or is a symlink, which is never followed).
    #[error("cannot copy {path}: it is not a directory")]
    NotADirectory { path: PathBuf },
    /// `to` already has entries: a copy never merges into or replaces existing files.
    #[error("cannot copy into {path}: it is not empty")]
    DestinationNotEmpty { path: PathBuf },
    /// A directory below `from` is on another filesystem.
    #[error(
        "cannot copy {path}: it is a mount point of another filesystem below the copied \
         directory (unmount it, or bind the directory below it instead)"
    )]
    MountPointBelow { path: PathBuf },
    /// A directory of the source could not be listed.
    #[error("cannot list directory {path}")]
    ReadDirectory {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The attributes (`lstat`) of a source entry could not be read.
    #[error("cannot read the attributes of {path}")]
    Stat {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A symlink's target could not be read.
    #[error("cannot read symbolic link {path}")]
    ReadLink {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A source file could not be opened or read.
    #[error("cannot read the data of {path}")]
    ReadData {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The entry could not be created at the destination.
    #[error("cannot create {to} (the copy of {from})")]
    Create {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// File data could not be written (or moved by `copy_file_range`, which does not say
    /// which side failed).
    #[error("cannot write the data of {from} to {to}")]
    WriteData {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// A second hard link of a file could not be made.
    #[error("cannot link {to} to {first} (hard links of {from})")]
    HardLink {
        from: PathBuf,
        first: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Owner and group could not be set.
    #[error("cannot set owner {uid}:{gid} of {to} (the copy of {from})")]
    SetOwner {
        from: PathBuf,
        to: PathBuf,
        uid: u32,
        gid: u32,
        #[source]
        source: io::Error,
    },
    /// The mode could not be set.
    #[error("cannot set mode {mode:04o} of {to} (the copy of {from})")]
    SetMode {
        from: PathBuf,
        to: PathBuf,
        mode: u32,
        #[source]
        source: io::Error,
    },
    /// Access and modification times could not be set.
    #[error("cannot set the times of {to} (the copy of {from})")]
    SetTimes {
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The extended attributes of a source entry could not be listed.
    #[error("cannot list the extended attributes of {path}")]
    ListXattrs {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    /// One extended attribute could not be read from the source or written to the copy.
    #[error("cannot copy extended attribute {name} of {from} to {to}")]
    CopyXattr {
        name: String,
        from: PathBuf,
        to: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// What a copy carried over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Entries created below `to`: directories, files, symlinks, other nodes and hard links.
    pub entries: u64,
    /// Bytes of file data written (the data extents; holes are not written).
    pub bytes: u64,
    /// Of `entries`, those made as another hard link of a file already copied.
    pub hard_links: u64,
}

/// Copies the contents of directory `from` into the existing empty directory `to`, keeping
/// everything the crate documentation lists, and gives `to` the owner, extended
/// attributes, mode and times of `from`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<Copied, Error> {
    let metadata = lstat(from)?;
    if !metadata.is_dir() {
        return Err(Error::NotADirectory {
            path: from.to_path_buf(),
        });
    }
    let read_error = |source| Error::ReadDirectory {
        path: to.to_path_buf(),
        source,
    };
    if fs::read_dir(to).map_err(read_error)?.next().is_some() {
        return Err(Error::DestinationNotEmpty {
            path: to.to_path_buf(),
        });
    }
    let mut copier = Copier {
        device: metadata.dev(),
        copy_file_range_works: true,
        buffer: Vec::new(),
        xattr_names: Vec::new(),
        xattr_value: Vec::new(),
        first_links: HashMap::new(),
        copied: Copied::default(),
    };
    copier.copy_directory_contents(from, to)?;
    copier.copy_attributes(from, to, &metadata)?;
    Ok(copier.copied)
}

/// The state of one [`copy_tree`] call.
struct Copier {
    /// The filesystem of `from`: directories on another one are refused.
    device: u64,
    /// Cleared on the first `copy_file_range` the kernel refuses between the two
    /// filesystems; reads and writes through `buffer` are used from then on.
    copy_file_range_works: bool,
    buffer: Vec<u8>,
    xattr_names: Vec<u8>,
    xattr_value: Vec<u8>,
    /// The first copy of each source file with several links, by (device, inode).
    first_links: HashMap<(u64, u64), PathBuf>,
    copied: Copied,
}

impl Copier {
    fn copy_directory_contents(&mut self, from: &Path, to: &Path) -> Result<(), Error> {
        let read_error = |source| Error::ReadDirectory {
            path: from.to_path_buf(),
            source,
        };
        for entry in fs::read_dir(from).map_err(read_error)? {
            let entry = entry.map_err(read_error)?;
            let source = entry.path();
            let target = to.join(entry.file_name());
            // DirEntry::metadata is an lstat: symlinks are not followed.
            let metadata = entry.metadata().map_err(|error| Error::Stat {
                path: source.clone(),
                source: error,
            })?;
            self.copy_entry(&source, &target, &metadata)?;
            self.copied.entries += 1;
        }
        Ok(())
    }

    fn copy_entry(&mut self, from: &Path, to: &Path, metadata: &Metadata) -> Result<(), Error> {
        let kind = metadata.file_type();
        let linked = !kind.is_dir() && metadata.nlink() > 1;
        let inode = (metadata.dev(), metadata.ino());
        if linked {
            if let Some(first) = self.first_links.get(&inode) {
                fs::hard_link(first, to).map_err(|source| Error::HardLink {
                    from: from.to_path_buf(),
                    first: first.clone(),
                    to: to.to_path_buf(),
                    source,
                })?;
                self.copied.hard_links += 1;
                return Ok(());
            }
        }
        let create_error = |source| Error::Create {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        };
        if kind.is_dir() {
            if metadata.dev() != self.device {
                return Err(Error::MountPointBelow {
                    path: from.to_path_buf(),
                });
            }
            // Owner-only until its contents are in: the source's mode may forbid writing.
            fs::DirBuilder::new()
                .mode(0o700)
                .create(to)
                .map_err(create_error)?;
            self.copy_directory_contents(from, to)?;
        } else if kind.is_file() {
            self.copy_file(from, to, metadata)?;
        } else if kind.is_symlink() {
            let target = fs::read_link(from).map_err(|source| Error::ReadLink {
                path: from.to_path_buf(),
                source,
            })?;
            std::os::unix::fs::symlink(target, to).map_err(create_error)?;
        } else {
            let node = if kind.is_fifo() {
                SFlag::S_IFIFO
            } else if kind.is_char_device() {
                SFlag::S_IFCHR
            } else if kind.is_block_device() {
                SFlag::S_IFBLK
            } else {
                SFlag::S_IFSOCK
            };
            mknod(to, node, Mode::S_IRUSR | Mode::S_IWUSR, metadata.rdev())
                .map_err(|errno| create_error(errno.into()))?;
        }
        self.copy_attributes(from, to, metadata)?;
        if linked {
            self.first_links.insert(inode, to.to_path_buf());
        }
        Ok(())
    }

    /// Copies a regular file's data extents, leaving its holes unwritten.
    fn copy_file(&mut self, from: &Path, to: &Path, metadata: &Metadata) -> Result<(), Error> {
        let read_error = |source| Error::ReadData {
            path: from.to_path_buf(),
            source,
        };
        let write_error = |source| Error::WriteData {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source,
        };
        let source = OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_NOFOLLOW)
            .open(from)
            .map_err(read_error)?;
        let target = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(to)
            .map_err(|source| Error::Create {
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                source,
            })?;
        let length = metadata.len();
        let mut offset = 0;
        while offset < length {
            let data = match seek(&source, offset, Whence::SeekData) {
                Ok(data) => data,
                // No data after `offset`: the rest is a hole.
                Err(Errno::ENXIO) => break,
                Err(errno) => return Err(read_error(errno.into())),
            };
            let hole = seek(&source, data, Whence::SeekHole)
                .map_err(|errno| read_error(errno.into()))?
                .min(length);
            if data >= hole {
                break;
            }
            self.copy_range(&source, &target, data, hole - data, from, to)?;
            offset = hole;
        }
        target.set_len(length).map_err(write_error)?;
        Ok(())
    }

    /// Copies `length` bytes at `offset` of `source` to the same offset of `target`.
    fn copy_range(
        &mut self,
        source: &File,
        target: &File,
        offset: u64,
        length: u64,
        from: &Path,
        to: &Path,
    ) -> Result<(), Error> {
        let end = offset + length;
        let mut position = offset;
        while position < end && self.copy_file_range_works {
            let (mut read_at, mut write_at) = (as_offset(position), as_offset(position));
            let step = usize::try_from((end - position).min(COPY_RANGE_STEP)).unwrap_or(usize::MAX);
            match copy_file_range(
                source,
                Some(&mut read_at),
                target,
                Some(&mut write_at),
                step,
            ) {
                // The file shrank since it was measured: its new end is where the copy ends.
                Ok(0) => return Ok(()),
                Ok(moved) => {
                    position += moved as u64;
                    self.copied.bytes += moved as u64;
                }
                // Not between these two files (another filesystem type, an old kernel, a
                // filesystem that does not implement it): reads and writes do the rest.
                Err(Errno::EXDEV | Errno::EINVAL | Errno::ENOSYS | Errno::EOPNOTSUPP) => {
                    self.copy_file_range_works = false;
                }
                Err(errno) => {
                    return Err(Error::WriteData {
                        from: from.to_path_buf(),
                        to: to.to_path_buf(),
                        source: errno.into(),
                    })
                }
            }
        }
        if self.buffer.is_empty() && position < end {
            self.buffer = vec![0; BUFFER_BYTES];
        }
        while position < end {
            let want =
                usize::try_from(end - position).map_or(BUFFER_BYTES, |left| left.min(BUFFER_BYTES));
            let read = source
                .read_at(&mut self.buffer[..want], position)
                .map_err(|source| Error::ReadData {
                    path: from.to_path_buf(),
                    source,
                })?;
            if read == 0 {
                return Ok(());
            }
            target
                .write_all_at(&self.buffer[..read], position)
                .map_err(|source| Error::WriteData {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    source,
                })?;
            position += read as u64;
            self.copied.bytes += read as u64;
        }
        Ok(())
    }

    /// Gives `to` the owner, extended attributes, mode and times of `from`, in the order
    /// that keeps each: chown clears set-ID bits and capabilities, so it goes first; writing
    /// a user extended attribute needs write permission, so the mode comes after them.
    fn copy_attributes(
        &mut self,
        from: &Path,
        to: &Path,
        metadata: &Metadata,
    ) -> Result<(), Error> {
        let (uid, gid) = (metadata.uid(), metadata.gid());
        lchown(to, Some(uid), Some(gid)).map_err(|source| Error::SetOwner {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            uid,
            gid,
            source,
        })?;
        self.copy_xattrs(from, to)?;
        let is_symlink = metadata.file_type().is_symlink();
        if !is_symlink {
            let mode = metadata.mode() & 0o7777;
            fs::set_permissions(to, fs::Permissions::from_mode(mode)).map_err(|source| {
                Error::SetMode {
                    from: from.to_path_buf(),
                    to: to.to_path_buf(),
                    mode,
                    source,
                }
            })?;
        }
        let atime = TimeSpec::new(metadata.atime(), metadata.atime_nsec());
        let mtime = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
        utimensat(
            AT_FDCWD,
            to,
            &atime,
            &mtime,
            UtimensatFlags::NoFollowSymlink,
        )
        .map_err(|errno| Error::SetTimes {
            from: from.to_path_buf(),
            to: to.to_path_buf(),
            source: errno.into(),
        })?;
        Ok(())
    }

    fn copy_xattrs(&mut self, from: &Path, to: &Path) -> Result<(), Error> {
        let source_path = c_path(from);
        xattr::list(&source_path, &mut self.xattr_names).map_err(|source| Error::ListXattrs {
            path: from.to_path_buf(),
            source,
        })?;
        if self.xattr_names.is_empty() {
            return Ok(());
        }
        let target_path = c_path(to);
        for name in self.xattr_names.split_inclusive(|&byte| byte == 0) {
            let Ok(name) = CStr::from_bytes_with_nul(name) else {
                continue;
            };
            let copy_error = |source| Error::CopyXattr {
                name: name.to_string_lossy().into_owned(),
                from: from.to_path_buf(),
                to: to.to_path_buf(),
                source,
            };
            xattr::get(&source_path, name, &mut self.xattr_value).map_err(copy_error)?;
            xattr::set(&target_path, name, &self.xattr_value).map_err(copy_error)?;
        }
        Ok(())
    }
}

fn lstat(path: &Path) -> Result<Metadata, Error> {
    fs::symlink_metadata(path).map_err(|source| Error::Stat {
        path: path.to_path_buf(),
        source,
    })
}

fn seek(file: &File, offset: u64, whence: Whence) -> nix::Result<u64> {
    lseek(file, as_offset(offset), whence).map(|position| position as u64)
}

/// A file offset as the kernel's signed `off_t`: file sizes never reach 2^63.
fn as_offset(offset: u64) -> i64 {
    i64::try_from(offset).unwrap_or(i64::MAX)
}

/// A path as the C string the extended-attribute calls take. Paths made of directory
/// entries carry no NUL byte.
fn c_path(path: &Path) -> CString {
    CString::new(OsStr::as_bytes(path.as_os_str())).unwrap_or_default()
}
