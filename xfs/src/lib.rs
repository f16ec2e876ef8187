//! tosskey-xfs: a pure-Rust XFS formatter.
//!
//! [`format()`] writes onto a block device or an image file the filesystem `mkfs.xfs -K`
//! (xfsprogs 6.1) writes with its defaults, so that users of nodeadm's
//! `setup-local-disks` or Bottlerocket, whose ephemeral storage is XFS, need no
//! `mkfs.xfs` next to tosskey:
//!
//! - a v5 filesystem (CRCs on all metadata) with the features mkfs.xfs 6.1 enables:
//!   `ftype`, `finobt`, sparse inodes, `reflink` (refcount btree), `bigtime`,
//!   `inobtcount`, lazy superblock counters; not `rmapbt` (off in 6.1);
//! - 4 KiB blocks, 512-byte inodes, 512- or 4096-byte sectors (the device's physical
//!   sector size, as mkfs.xfs picks it), the same AG count and size, log size and
//!   place, inode alignment and stripe alignment (`sunit`/`swidth` from the device's
//!   `minimum_io_size`/`optimal_io_size`, as on md raid0 and dm-stripe), see
//!   [`Geometry`];
//! - in every AG the superblock (secondary copies as mkfs.xfs leaves them), AGF, AGI,
//!   AGFL with its 4 blocks, and the roots of the free-space (by block and by size),
//!   inode, free-inode and refcount btrees; in AG 0 the first inode chunk with the root
//!   directory and the realtime bitmap and summary inodes;
//! - an internal log holding one unmount record and otherwise zeros, so the kernel finds
//!   it clean and replays nothing. On a fresh dm-crypt mapping unwritten blocks decrypt
//!   to noise, which the kernel would take for log records, so on a block device the
//!   whole log is zeroed (as mkfs.xfs does); an image file is first made one hole, which
//!   reads as zeros, and then only the record is written.
//!
//! A host test compares `xfs_db`'s view of the superblock and `xfs_info` with mkfs.xfs's
//! on the same image and allows only the differences listed there (UUID, times, CRCs).
//!
//! Differences from mkfs.xfs, on purpose: volumes under 300 MiB are refused (xfsprogs 6.5
//! and later refuse them too; below that mkfs.xfs 6.1 sizes the log from transaction
//! reservations); the first and last 128 KiB are not wiped of old signatures (mkfs.xfs
//! does, to hide old RAID superblocks from blkid: tosskey formats volumes it has just
//! created, and the superblock it writes is what blkid finds); a stripe that cannot be
//! honoured is dropped instead of refused ([`Geometry::new`]).
//!
//! ## Why not an existing crate
//! No crate on crates.io formats XFS (November 2026): `xfs-fuse` and `xfs_rs`-style
//! crates read XFS, and the only way to make one was running `mkfs.xfs`.

// No ioctl table here (the workspace lints allow unsafe only in those): forbid, so no
// module can opt back in.
#![forbid(unsafe_code)]

mod disk;
pub mod geometry;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub use geometry::{Geometry, Stripe, BLOCK_SIZE, MAX_SIZE, MIN_SIZE};
use geometry::{GeometryError, CHUNK_BLOCKS};
use tosskey_ext4::{adopt_target, open_target, Target, TargetKind};
use tosskey_sysutil::{DevId, SystemRoot};

/// Longest label (`sb_fname`).
pub const MAX_LABEL_LEN: usize = 12;

/// Where the stripe alignment comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Alignment {
    /// The device's `minimum_io_size`/`optimal_io_size`, as mkfs.xfs reads them (none
    /// for an image file).
    #[default]
    Detect,
    /// No stripe alignment (mkfs.xfs `-d noalign`).
    None,
    /// This stripe (mkfs.xfs `-d su=,sw=`).
    Stripe(Stripe),
}

/// How to format.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FormatOptions {
    /// Volume label, at most [`MAX_LABEL_LEN`] bytes.
    pub label: Option<String>,
    /// Filesystem UUID; random when `None`.
    pub uuid: Option<[u8; 16]>,
    /// Sector size, 512 or 4096; `None`: the device's physical sector size (512 for an
    /// image file), as mkfs.xfs picks it.
    pub sector_size: Option<u32>,
    /// Stripe alignment.
    pub alignment: Alignment,
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatReport {
    /// The layout.
    pub geometry: Geometry,
    /// The filesystem UUID.
    pub uuid: [u8; 16],
    /// Bytes written to the target, the log's zeros included (the hole punch of an image
    /// file not counted).
    pub bytes_written: u64,
    /// The target was an image file turned into one hole first, so the log needed no
    /// zeroing.
    pub punched: bool,
}

/// Everything that can go wrong. Messages are one line naming the target and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target cannot be opened, or is mounted, in use, read-only, attached to a loop
    /// device, or neither a block device nor a file (the checks tosskey-ext4 makes).
    #[error(transparent)]
    Target(#[from] tosskey_ext4::Error),
    /// The target is too small.
    #[error("{target} is too small for XFS ({size} bytes, need at least {MIN_SIZE}); use a bigger device")]
    TooSmall {
        /// The target.
        target: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The target is too large.
    #[error("{target} is too large for XFS ({size} bytes, at most {MAX_SIZE}); split it into smaller volumes")]
    TooLarge {
        /// The target.
        target: PathBuf,
        /// Its size in bytes.
        size: u64,
    },
    /// The label does not fit.
    #[error("label for {target} is {len} bytes; XFS labels hold at most {MAX_LABEL_LEN} bytes, shorten it")]
    LabelTooLong {
        /// The target.
        target: PathBuf,
        /// The label's length in bytes.
        len: usize,
    },
    /// The sector size is not one this formatter writes, or is under the device's.
    #[error("sector size {size} for {target} is not usable (logical block size {logical}); give 512 or 4096, at least the logical block size")]
    SectorSize {
        /// The target.
        target: PathBuf,
        /// The requested or detected size.
        size: u32,
        /// The device's logical block size (512 for files).
        logical: u32,
    },
    /// The kernel's random source failed.
    #[error("cannot get random bytes for the UUID of {target}: {source}; check getrandom(2) in this environment")]
    Random {
        /// The target.
        target: PathBuf,
        /// The failure.
        #[source]
        source: getrandom::Error,
    },
    /// A write or sync failed half-way.
    #[error(
        "cannot {action} {target}: {source}; the filesystem on it is incomplete, format again"
    )]
    Io {
        /// The target.
        target: PathBuf,
        /// What was being done, e.g. "write to".
        action: &'static str,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
}

/// Format `target` (a block device or an image file) as XFS per `opts`.
///
/// Refuses, before writing anything, a target that is mounted, in use, read-only, too
/// small or too large, and options out of range.
pub fn format(target: &Path, opts: &FormatOptions) -> Result<FormatReport, Error> {
    check_label(target, opts)?;
    format_opened(open_target(target)?, target, opts)
}

/// Format `file`, a block device or image file the caller opened read-write (a block
/// device with `O_EXCL`) and checked, as XFS per `opts`; `target` names it in messages.
/// The target checks of [`format()`] run on the descriptor itself (`fstat`), never on a
/// path: what is formatted is the file the caller checked, even if its path was swapped.
pub fn format_file(file: File, target: &Path, opts: &FormatOptions) -> Result<FormatReport, Error> {
    check_label(target, opts)?;
    format_opened(adopt_target(file, target)?, target, opts)
}

fn check_label(target: &Path, opts: &FormatOptions) -> Result<(), Error> {
    match &opts.label {
        Some(label) if label.len() > MAX_LABEL_LEN => Err(Error::LabelTooLong {
            target: target.to_path_buf(),
            len: label.len(),
        }),
        _ => Ok(()),
    }
}

fn format_opened(
    opened: Target,
    target: &Path,
    opts: &FormatOptions,
) -> Result<FormatReport, Error> {
    let path = target.to_path_buf();
    let topology = match opened.kind {
        TargetKind::BlockDevice { major, minor } => Topology::of_device(DevId::new(major, minor)),
        TargetKind::RegularFile => Topology::IMAGE_FILE,
    };
    let sector_size = opts.sector_size.unwrap_or(topology.sector_size());
    if !(sector_size == 512 || sector_size == 4096) || sector_size < topology.logical {
        return Err(Error::SectorSize {
            target: path,
            size: sector_size,
            logical: topology.logical,
        });
    }
    let stripe = match opts.alignment {
        Alignment::Detect => topology.stripe,
        Alignment::None => None,
        Alignment::Stripe(stripe) => Some(stripe),
    };
    let geometry = Geometry::new(opened.size, sector_size, stripe).map_err(|e| match e {
        GeometryError::TooSmall => Error::TooSmall {
            target: path.clone(),
            size: opened.size,
        },
        GeometryError::TooLarge => Error::TooLarge {
            target: path.clone(),
            size: opened.size,
        },
    })?;
    let mut random = [0u8; 16];
    getrandom::fill(&mut random).map_err(|source| Error::Random {
        target: path.clone(),
        source,
    })?;
    let uuid = opts.uuid.unwrap_or_else(|| version4_uuid(random));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or((0, 0), |d| (d.as_secs(), d.subsec_nanos()));
    let identity = disk::Identity {
        uuid,
        label: opts.label.clone().unwrap_or_default().into_bytes(),
        now,
    };
    let mut writer = Writer {
        file: &opened.file,
        target: &path,
        bytes_written: 0,
    };
    let punched = opened.kind == TargetKind::RegularFile && writer.punch_whole(opened.size)?;
    write_filesystem(&mut writer, &geometry, &identity, !punched)?;
    Ok(FormatReport {
        geometry,
        uuid,
        bytes_written: writer.bytes_written,
        punched,
    })
}

/// Mark 16 random bytes as an RFC 4122 version 4 UUID, as libuuid does.
fn version4_uuid(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

/// What the device tells about its sectors and striping.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Topology {
    logical: u32,
    physical: u32,
    stripe: Option<Stripe>,
}

impl Topology {
    /// An image file: 512-byte sectors, no stripe (what mkfs.xfs assumes for files).
    const IMAGE_FILE: Topology = Topology {
        logical: 512,
        physical: 512,
        stripe: None,
    };

    /// From `/sys/dev/block/MAJ:MIN/queue/`; 512-byte sectors where it cannot be read.
    fn of_device(dev: DevId) -> Topology {
        let queue = SystemRoot::host().block_dir(dev).join("queue");
        let read = |name: &str| tosskey_sysutil::read_attr_u64(&queue.join(name)).ok();
        let logical = read("logical_block_size").unwrap_or(512);
        let physical = read("physical_block_size").unwrap_or(logical);
        let stripe = Stripe::from_io_sizes(
            read("minimum_io_size").unwrap_or(0),
            read("optimal_io_size").unwrap_or(0),
            physical,
        );
        Topology {
            logical: u32::try_from(logical).unwrap_or(u32::MAX),
            physical: u32::try_from(physical).unwrap_or(u32::MAX),
            stripe,
        }
    }

    /// mkfs.xfs's choice: the physical sector size when a block can hold it, else the
    /// logical one.
    fn sector_size(&self) -> u32 {
        if self.physical <= BLOCK_SIZE && self.physical >= self.logical {
            self.physical
        } else {
            self.logical
        }
    }
}

/// Positioned writes to the target, counting bytes.
struct Writer<'a> {
    file: &'a File,
    target: &'a Path,
    bytes_written: u64,
}

impl Writer<'_> {
    fn io_error(&self, action: &'static str, source: std::io::Error) -> Error {
        Error::Io {
            target: self.target.to_path_buf(),
            action,
            source,
        }
    }

    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.file
            .write_all_at(data, offset)
            .map_err(|source| self.io_error("write to", source))?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    /// Zero `len` bytes at `offset`: by `FALLOC_FL_ZERO_RANGE` where the target supports
    /// it (a block device turns it into write-zeroes, or writes zero pages itself), else
    /// by writing zeros.
    fn zero(&mut self, offset: u64, len: u64) -> Result<(), Error> {
        use nix::fcntl::{fallocate, FallocateFlags};
        if let (Ok(start), Ok(length)) = (i64::try_from(offset), i64::try_from(len)) {
            let flags = FallocateFlags::FALLOC_FL_ZERO_RANGE | FallocateFlags::FALLOC_FL_KEEP_SIZE;
            if fallocate(self.file, flags, start, length).is_ok() {
                self.bytes_written += len;
                return Ok(());
            }
        }
        const CHUNK: usize = 1 << 20;
        let zeros = vec![0u8; CHUNK];
        let mut done = 0;
        while done < len {
            let n = usize::try_from(len - done).map_or(CHUNK, |left| left.min(CHUNK));
            self.write_at(offset + done, &zeros[..n])?;
            done += n as u64;
        }
        Ok(())
    }

    fn sync(&mut self) -> Result<(), Error> {
        self.file
            .sync_all()
            .map_err(|source| self.io_error("sync", source))
    }

    /// Turn the whole image file into a hole; false when the filesystem cannot.
    fn punch_whole(&mut self, size: u64) -> Result<bool, Error> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let Ok(len) = i64::try_from(size) else {
            return Ok(false);
        };
        match fallocate(
            self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
            Err(errno) => Err(self.io_error("punch a hole in", errno.into())),
        }
    }
}

/// Write every structure of `g`; `zero_log`: the log area may hold anything and must be
/// zeroed first.
fn write_filesystem(
    writer: &mut Writer<'_>,
    g: &Geometry,
    identity: &disk::Identity,
    zero_log: bool,
) -> Result<(), Error> {
    let uuid = &identity.uuid;
    // Wipe AG 0's header sectors first: until the primary superblock goes in last, a
    // killed format leaves no valid-looking filesystem behind.
    let header_len = u64::from(g.header_blocks() * BLOCK_SIZE);
    writer.write_at(
        0,
        &vec![0u8; usize::try_from(header_len).expect("<= 16 KiB")],
    )?;

    // The log: zeros, then the unmount record at its start.
    let log_offset = g.byte_offset(g.log_ag, g.log_agbno);
    if zero_log {
        writer.zero(log_offset, u64::from(g.log_blocks) * u64::from(BLOCK_SIZE))?;
    }
    let log_sunit_bytes = g.log_sunit * BLOCK_SIZE;
    writer.write_at(log_offset, &disk::log_unmount_record(uuid, log_sunit_bytes))?;

    // AG 0's inode chunk.
    let chunk = disk::inode_chunk(g, identity);
    debug_assert_eq!(chunk.len(), (CHUNK_BLOCKS * BLOCK_SIZE) as usize);
    writer.write_at(g.byte_offset(0, g.chunk_agbno), &chunk)?;

    // Each AG's headers and btree roots are contiguous: one write per AG, AG 0 last.
    for agno in (1..g.agcount).chain([0]) {
        let copy = if agno == 0 {
            disk::SuperCopy::Primary
        } else {
            disk::SuperCopy::Secondary { agno }
        };
        let mut headers =
            Vec::with_capacity(usize::try_from(g.prealloc_blocks * BLOCK_SIZE).expect("<= 36 KiB"));
        headers.extend_from_slice(&disk::superblock(g, identity, copy));
        headers.extend_from_slice(&disk::agf(g, agno, uuid));
        headers.extend_from_slice(&disk::agi(g, agno, uuid));
        headers.extend_from_slice(&disk::agfl(g, agno, uuid));
        headers.resize(usize::try_from(header_len).expect("<= 16 KiB"), 0);
        headers.extend_from_slice(&disk::btree_roots(g, agno, uuid));
        writer.write_at(g.byte_offset(agno, 0), &headers)?;
    }
    // One fsync at the end, like mkfs.xfs: a power cut mid-format needs a re-format
    // either way.
    writer.sync()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sector_size_follows_the_physical_sector() {
        let disk = |logical, physical| Topology {
            logical,
            physical,
            stripe: None,
        };
        assert_eq!(disk(512, 512).sector_size(), 512);
        assert_eq!(disk(512, 4096).sector_size(), 4096); // 512e
        assert_eq!(disk(4096, 4096).sector_size(), 4096);
        assert_eq!(disk(512, 8192).sector_size(), 512);
        assert_eq!(Topology::IMAGE_FILE.sector_size(), 512);
    }

    #[test]
    fn uuids_are_version_4() {
        let uuid = version4_uuid([0xff; 16]);
        assert_eq!(uuid[6] >> 4, 4);
        assert_eq!(uuid[8] >> 6, 0b10);
    }
}
