//! tosskey-ext4: a pure-Rust ext4 formatter.
//!
//! [`format()`] writes a fresh ext4 filesystem onto a block device or an image file, the way
//! `mke2fs -t ext4 -T largefile4` does, so that a minimal initramfs or a `FROM scratch`
//! image needs no e2fsprogs:
//!
//! - 4 KiB blocks, 256-byte inodes, one inode per 4 MiB by default
//!   ([`FormatOptions::inode_ratio`]);
//! - the features mke2fs 1.47 enables for ext4 (`/etc/mke2fs.conf`): `ext_attr`,
//!   `dir_index`, `filetype`, `extent`, `64bit`, `flex_bg`, `sparse_super`,
//!   `large_file`, `huge_file`, `dir_nlink`, `extra_isize`, `metadata_csum` (crc32c on the
//!   superblock, group descriptors, bitmaps, inodes, extent blocks and directory blocks),
//!   plus `has_journal` with [`FormatOptions::journal`]; default mount options
//!   `user_xattr,acl`, no periodic fsck;
//! - **not** `resize_inode`: its reserved GDT blocks only serve offline/online *growing*,
//!   which an ephemeral volume never does (the kernel can still grow it online through
//!   `meta_bg`), and e2fsck is clean without it;
//! - label, UUID (random unless given), directory hash seed, root directory and a 16 KiB
//!   `lost+found`;
//! - lazy initialisation like mke2fs with `lazy_itable_init`: every group but the first
//!   is `INODE_UNINIT`, groups holding no table of another group and no file block are
//!   `BLOCK_UNINIT`, `bg_itable_unused` tells the kernel and e2fsck which inodes were
//!   never used, and inode tables are not zeroed (the kernel's `ext4lazyinit` thread does
//!   that after mount).
//! - On an image file, like mke2fs's default discard, the whole file is first made a hole
//!   (`FALLOC_FL_PUNCH_HOLE`): it then reads as zeros, so every group is also marked
//!   `ITABLE_ZEROED` and the journal needs no zeroing; the image stays sparse because
//!   every write is a positioned write of a needed block.
//!
//! ## Writing the minimum: descriptors and flex groups
//! What a lazy format must write is the group descriptor table (64 bytes per 128 MiB
//! group: 30 MiB at 60 TiB) and the block bitmap of every group holding other groups'
//! tables. mke2fs's defaults multiply both: `sparse_super` keeps a copy of the table in
//! ~30 groups (952 MB written at 60 TiB), and 16-group flex groups need a bitmap per
//! 2 GiB (120 MiB at 60 TiB). Measured with e2fsprogs 1.47 on a sparse 60 TiB image, in
//! KiB written (`-T largefile4 -O ^has_journal,^resize_inode`, plus):
//!
//! | descriptors                                       | `-G 16`  | `-G 256` |
//! |---------------------------------------------------|---------:|---------:|
//! | `sparse_super` (mke2fs default, with resize_inode) |  952,460 |        — |
//! | `meta_bg` (3 copies of each descriptor block)     |  215,180 |   99,980 |
//! | `sparse_super2`, `num_backup_sb=0`                |  153,636 |   38,436 |
//!
//! So by default this formatter writes `sparse_super2` with **no backup superblock**
//! ([`FormatOptions::backup_superblocks`]: 1 or 2 add a full copy each) and **256 groups
//! per flex group** (`flex_groups_for`): 38 MiB at 60 TiB, 1/25 of mke2fs. Backups buy
//! little here: the key dies with the boot, so the volume is never checked after a
//! reboot, and a backup only helps `e2fsck -b` after the primary was destroyed within
//! the same boot. Once the table would take more than 3/4 of group 0 (over 192 TiB) it
//! cannot stay contiguous and `meta_bg` takes over, as in mke2fs; `meta_bg` always keeps
//! three copies of each descriptor block, which is why it is not the default below
//! that ([`FormatOptions::meta_bg`] forces it). Up to 32 PiB formats.
//!
//! ## Journal
//! [`FormatOptions::journal`] is off by default: the volumes tosskey formats are encrypted
//! with a key that dies with the machine, so after a crash there is nothing to recover
//! and a journal only costs writes. With it, inode 8 holds a jbd2 journal sized by
//! `ext2fs_default_journal_size()` (1 GiB from 128 GiB up), placed mid-volume like mke2fs
//! does, with an empty v2 journal superblock; the rest of the journal is zeroed (by the
//! hole punch on images, by writing zeros on block devices) unless
//! [`FormatOptions::lazy_journal_init`] says the device already reads as something that
//! cannot be mistaken for journal blocks.
//!
//! ## Why not an existing crate
//! Evaluated on crates.io (November 2026):
//! - `ext4-mkfs` 0.1.0: a thin wrapper over the C library lwext4 (`ext4-mkfs-sys`), so it
//!   needs a C toolchain, is `unsafe` FFI, and its layout is lwext4's: no lazy
//!   `INODE_UNINIT`/`BLOCK_UNINIT` initialisation, so a multi-terabyte format writes the
//!   full inode tables; no control over features, inode ratio or journal sizing.
//! - `rust-fs-ext4` 0.8.0 (`mkfs.rs`): a whole ext4 driver with a C ABI (129 `unsafe`
//!   blocks and functions); its formatter writes a classic layout without `flex_bg`, writes every inode
//!   table in full, makes its ext3 journal a fixed 1 MiB mapped by indirect blocks, and
//!   offers no `metadata_csum`/`64bit` ext4 flavour with lazy init.
//! - `ext4_rs`, `ext4fs`, `ext4-view`: read/write drivers or readers, no formatter.
//!
//! None meets "e2fsck-clean ext4 with mke2fs's default features, lazy init so 60 TiB
//! writes megabytes, jbd2 journal sized like mke2fs, no unsafe", so this crate writes
//! its own (about 1300 lines with unit tests, all safe Rust; the only dependencies are
//! `crc32c`, `getrandom`, `nix` for `fallocate`, and `thiserror`).
//!
//! ## Fidelity
//! Host tests format the same sizes with this crate and with
//! `mke2fs -t ext4 -T largefile4 -O ^resize_inode,sparse_super2 -E num_backup_sb=N -G F`
//! (plus `meta_bg` when used; same UUID) and require identical `dumpe2fs` output apart
//! from the random hash seed, times and checksums: the same block, inode and free counts,
//! the same location of every bitmap, inode table and descriptor copy, the same group
//! flags and unused-inode counts, the same journal placement and journal superblock
//! fields.

// No ioctl table here (the workspace lints allow unsafe only in those): forbid, so no
// module can opt back in.
#![forbid(unsafe_code)]

mod disk;
mod layout;
mod target;

use std::fs::File;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use disk::{group_flag, ino, GroupDesc, InodeSpec, SuperParams};
pub use layout::{default_journal_blocks, BLOCK_SIZE};
use layout::{
    DescriptorPlacement, Layout, LayoutError, BLOCKS_PER_GROUP, BLOCK_LEN, DESCS_PER_BLOCK,
    DESC_LEN, FIRST_INODE, INODE_LEN, LOST_FOUND_BLOCKS,
};
/// The target checks, shared with the other formatter (tosskey-xfs): open read-write,
/// refusing mounted, held, read-only and loop-attached targets before anything is written.
pub use target::{adopt as adopt_target, open as open_target, Target, TargetKind};

/// One inode per 4 MiB: mke2fs's `largefile4` usage type.
pub const LARGEFILE4_INODE_RATIO: u64 = 4 << 20;
/// Smallest accepted [`FormatOptions::inode_ratio`] (mke2fs's default ratio; denser
/// tables would overflow the first group of a flex group, which this layout assumes).
pub const MIN_INODE_RATIO: u64 = 16 << 10;
/// Largest accepted [`FormatOptions::inode_ratio`] (mke2fs's limit).
pub const MAX_INODE_RATIO: u64 = 64 << 20;

/// How to format.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatOptions {
    /// Volume label, at most 16 bytes of UTF-8.
    pub label: Option<String>,
    /// Filesystem UUID; random when `None`.
    pub uuid: Option<[u8; 16]>,
    /// Bytes per inode, [`MIN_INODE_RATIO`]..=[`MAX_INODE_RATIO`]; default
    /// [`LARGEFILE4_INODE_RATIO`].
    pub inode_ratio: u64,
    /// Add a jbd2 journal (inode 8) sized like mke2fs. Default off: see the crate docs.
    pub journal: bool,
    /// Skip zeroing the journal on a block device (mke2fs's `lazy_journal_init`). Only
    /// sound when stale journal blocks cannot be there, e.g. a fresh dm-crypt mapping
    /// whose old contents decrypt to noise. Default off.
    pub lazy_journal_init: bool,
    /// Percentage of blocks reserved for root (mke2fs `-m`), at most 50; default 5.
    pub reserved_percent: u8,
    /// Backup superblock and descriptor copies (`sparse_super2`, mke2fs `-E
    /// num_backup_sb`): 0, 1 (group 1) or 2 (group 1 and the last group). Default 0: see
    /// the crate docs.
    pub backup_superblocks: u8,
    /// Spread the descriptors with `meta_bg` even below 192 TiB (above, it is always
    /// used). Default off: see the crate docs.
    pub meta_bg: bool,
}

impl Default for FormatOptions {
    fn default() -> Self {
        FormatOptions {
            label: None,
            uuid: None,
            inode_ratio: LARGEFILE4_INODE_RATIO,
            journal: false,
            lazy_journal_init: false,
            reserved_percent: 5,
            backup_superblocks: 0,
            meta_bg: false,
        }
    }
}

/// What was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FormatReport {
    /// Filesystem size in [`BLOCK_SIZE`] blocks (a last group too small for its own
    /// metadata is left out, as mke2fs does).
    pub blocks: u64,
    /// Block groups.
    pub groups: u32,
    /// Inodes.
    pub inodes: u64,
    /// Inodes per group.
    pub inodes_per_group: u32,
    /// Free blocks (including the root-reserved ones).
    pub free_blocks: u64,
    /// Journal length in blocks, 0 without a journal.
    pub journal_blocks: u32,
    /// Groups per flex group.
    pub flex_groups: u32,
    /// The descriptors are spread by `meta_bg`.
    pub meta_bg: bool,
    /// The groups holding backup superblocks (`s_backup_bgs`, 0 = none).
    pub backup_groups: [u32; 2],
    /// The filesystem UUID.
    pub uuid: [u8; 16],
    /// Bytes written to the target (the hole punch of an image file not counted).
    pub bytes_written: u64,
    /// The target was an image file turned into one hole first, so inode tables are
    /// marked zeroed and the kernel does not zero them after mount.
    pub punched: bool,
}

/// Everything that can go wrong. Messages are one line naming the target and the fix.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The target cannot be opened or inspected.
    #[error("cannot open {target}: {source}; give an existing block device or image file")]
    Open {
        /// The target.
        target: PathBuf,
        /// The errno.
        #[source]
        source: std::io::Error,
    },
    /// The target is a directory, character device, FIFO...
    #[error("{target} is neither a block device nor a regular file; give a disk, a mapping or an image file")]
    NotBlockDeviceOrFile {
        /// The target.
        target: PathBuf,
    },
    /// The target is mounted.
    #[error("{target} is mounted on {mount_point}; unmount it first")]
    Mounted {
        /// The target.
        target: PathBuf,
        /// Where it is mounted.
        mount_point: PathBuf,
    },
    /// The image file backs a loop device.
    #[error("{target} is attached to {loop_device}; detach it (losetup -d) or format {loop_device} instead")]
    AttachedToLoop {
        /// The target.
        target: PathBuf,
        /// The loop device using it.
        loop_device: String,
    },
    /// The block device is claimed (a partition mounted, dm or md on top of it).
    #[error("{target} is in use (a partition is mounted or device-mapper/md holds it); release it first")]
    InUse {
        /// The target.
        target: PathBuf,
    },
    /// The descriptor handed to [`format_file`] was opened read-only.
    #[error("{target} was opened read-only; open it read-write to format it")]
    OpenedReadOnly {
        /// The target.
        target: PathBuf,
    },
    /// The target cannot be written.
    #[error(
        "{target} is read-only; make it writable (blockdev --setrw, chmod) or pick another target"
    )]
    ReadOnly {
        /// The target.
        target: PathBuf,
    },
    /// The target is too small.
    #[error(
        "{target} is too small for ext4 ({size} bytes, need at least {min}); use a bigger device"
    )]
    TooSmall {
        /// The target.
        target: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The minimum in bytes.
        min: u64,
    },
    /// The target has more groups than 2^32 inodes can serve.
    #[error("{target} is too large for this formatter ({size} bytes, at most {max}); split it into smaller volumes")]
    TooLarge {
        /// The target.
        target: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The maximum in bytes.
        max: u64,
    },
    /// A journal was asked for on a volume too small to hold one.
    #[error("{target} is too small for a journal ({size} bytes, need at least {min}); drop --journal or use a bigger device")]
    NoRoomForJournal {
        /// The target.
        target: PathBuf,
        /// Its size in bytes.
        size: u64,
        /// The minimum in bytes.
        min: u64,
    },
    /// The label does not fit.
    #[error("label for {target} is {len} bytes; ext4 labels hold at most 16 bytes, shorten it")]
    LabelTooLong {
        /// The target.
        target: PathBuf,
        /// The label's length in bytes.
        len: usize,
    },
    /// The inode ratio is out of range.
    #[error("inode ratio {ratio} for {target} is out of range; give {MIN_INODE_RATIO}..={MAX_INODE_RATIO} bytes per inode")]
    InodeRatio {
        /// The target.
        target: PathBuf,
        /// The requested ratio.
        ratio: u64,
    },
    /// The reserved percentage is out of range.
    #[error("reserved percentage {percent} for {target} is over 50; give 0..=50")]
    ReservedPercent {
        /// The target.
        target: PathBuf,
        /// The requested percentage.
        percent: u8,
    },
    /// More backup superblocks than `sparse_super2` can hold.
    #[error("{count} backup superblocks asked for {target}; sparse_super2 holds 0, 1 or 2")]
    BackupSuperblocks {
        /// The target.
        target: PathBuf,
        /// The requested count.
        count: u8,
    },
    /// The kernel's random source failed (UUID, hash seed).
    #[error("cannot get random bytes for the UUID of {target}: {source}; check getrandom(2) in this environment")]
    Random {
        /// The target.
        target: PathBuf,
        /// The failure.
        #[source]
        source: getrandom::Error,
    },
    /// A read, write, seek or sync failed half-way.
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

/// Format `target` (a block device or an image file) as ext4 per `opts`.
///
/// Refuses, before writing anything, a target that is mounted, in use, read-only, too
/// small or too large, and options out of range.
pub fn format(target: &Path, opts: &FormatOptions) -> Result<FormatReport, Error> {
    check_options(target, opts)?;
    format_opened(target::open(target)?, target, opts)
}

/// Format `file`, a block device or image file the caller opened read-write (a block
/// device with `O_EXCL`) and checked, as ext4 per `opts`; `target` names it in messages.
/// The checks of [`format()`] run on the descriptor itself (`fstat`), never on a path: what
/// is formatted is the file the caller checked, even if its path was swapped since.
pub fn format_file(file: File, target: &Path, opts: &FormatOptions) -> Result<FormatReport, Error> {
    check_options(target, opts)?;
    format_opened(target::adopt(file, target)?, target, opts)
}

fn format_opened(
    opened: target::Target,
    target: &Path,
    opts: &FormatOptions,
) -> Result<FormatReport, Error> {
    let path = target.to_path_buf();
    let layout = Layout::compute(
        opened.size,
        opts.inode_ratio,
        opts.reserved_percent,
        DescriptorPlacement {
            backups: opts.backup_superblocks,
            meta_bg: opts.meta_bg,
        },
        opts.journal,
    )
    .map_err(|error| match error {
        LayoutError::TooSmall { min_bytes } => Error::TooSmall {
            target: path.clone(),
            size: opened.size,
            min: min_bytes,
        },
        LayoutError::TooLarge { max_bytes } => Error::TooLarge {
            target: path.clone(),
            size: opened.size,
            max: max_bytes,
        },
        LayoutError::NoRoomForJournal { min_bytes } => Error::NoRoomForJournal {
            target: path.clone(),
            size: opened.size,
            min: min_bytes,
        },
    })?;
    let mut random = [0u8; 32];
    getrandom::fill(&mut random).map_err(|source| Error::Random {
        target: path.clone(),
        source,
    })?;
    let uuid = opts
        .uuid
        .unwrap_or_else(|| version4_uuid(random[..16].try_into().expect("16 bytes")));
    let hash_seed = version4_uuid(random[16..].try_into().expect("16 bytes"));
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX));
    let mut writer = Writer {
        file: &opened.file,
        target: &path,
        bytes_written: 0,
    };
    let punched = opened.kind == TargetKind::RegularFile && writer.punch_whole(opened.size)?;
    let zero_journal = !punched && !opts.lazy_journal_init;
    let label = opts.label.clone().unwrap_or_default().into_bytes();
    let free_blocks = write_filesystem(
        &mut writer,
        &layout,
        &Identity {
            uuid,
            hash_seed,
            label,
            now,
        },
        punched,
        zero_journal,
    )?;
    Ok(FormatReport {
        blocks: layout.blocks,
        groups: layout.groups,
        inodes: layout.inodes(),
        inodes_per_group: layout.inodes_per_group,
        free_blocks,
        journal_blocks: layout.journal.as_ref().map_or(0, |j| j.blocks),
        flex_groups: layout.flex_groups,
        meta_bg: layout.meta_bg,
        backup_groups: layout.backup_groups,
        uuid,
        bytes_written: writer.bytes_written,
        punched,
    })
}

fn check_options(path: &Path, opts: &FormatOptions) -> Result<(), Error> {
    if let Some(label) = &opts.label {
        if label.len() > 16 {
            return Err(Error::LabelTooLong {
                target: path.to_path_buf(),
                len: label.len(),
            });
        }
    }
    if !(MIN_INODE_RATIO..=MAX_INODE_RATIO).contains(&opts.inode_ratio) {
        return Err(Error::InodeRatio {
            target: path.to_path_buf(),
            ratio: opts.inode_ratio,
        });
    }
    if opts.backup_superblocks > 2 {
        return Err(Error::BackupSuperblocks {
            target: path.to_path_buf(),
            count: opts.backup_superblocks,
        });
    }
    if opts.reserved_percent > 50 {
        return Err(Error::ReservedPercent {
            target: path.to_path_buf(),
            percent: opts.reserved_percent,
        });
    }
    Ok(())
}

/// Mark 16 random bytes as an RFC 4122 version 4 UUID, as libuuid does.
fn version4_uuid(mut bytes: [u8; 16]) -> [u8; 16] {
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    bytes
}

/// The identity fields of a new filesystem.
struct Identity {
    uuid: [u8; 16],
    hash_seed: [u8; 16],
    label: Vec<u8>,
    now: u32,
}

/// Positioned writes to the target, counting bytes.
struct Writer<'a> {
    file: &'a File,
    target: &'a Path,
    bytes_written: u64,
}

impl Writer<'_> {
    fn write_at(&mut self, offset: u64, data: &[u8]) -> Result<(), Error> {
        self.file
            .write_all_at(data, offset)
            .map_err(|source| Error::Io {
                target: self.target.to_path_buf(),
                action: "write to",
                source,
            })?;
        self.bytes_written += data.len() as u64;
        Ok(())
    }

    fn write_block(&mut self, block: u64, data: &[u8]) -> Result<(), Error> {
        self.write_at(block * BLOCK_SIZE, data)
    }

    fn sync(&mut self) -> Result<(), Error> {
        self.file.sync_all().map_err(|source| Error::Io {
            target: self.target.to_path_buf(),
            action: "sync",
            source,
        })
    }

    /// Turn the whole image file into a hole; false when the filesystem cannot.
    fn punch_whole(&mut self, size: u64) -> Result<bool, Error> {
        use nix::fcntl::{fallocate, FallocateFlags};
        let Ok(len) = i64::try_from(size) else {
            return Ok(false);
        };
        if len == 0 {
            return Ok(false);
        }
        match fallocate(
            self.file,
            FallocateFlags::FALLOC_FL_PUNCH_HOLE | FallocateFlags::FALLOC_FL_KEEP_SIZE,
            0,
            len,
        ) {
            Ok(()) => Ok(true),
            Err(nix::errno::Errno::EOPNOTSUPP) => Ok(false),
            Err(errno) => Err(Error::Io {
                target: self.target.to_path_buf(),
                action: "punch a hole in",
                source: errno.into(),
            }),
        }
    }
}

/// Write every structure of `layout`; returns the free block count.
fn write_filesystem(
    writer: &mut Writer<'_>,
    layout: &Layout,
    identity: &Identity,
    punched: bool,
    zero_journal: bool,
) -> Result<u64, Error> {
    let seed = disk::csum_seed(&identity.uuid);
    // Wipe block 0 (boot sector, any old superblock) first: until the new superblock goes
    // in last, a killed format leaves no valid-looking filesystem behind.
    writer.write_block(0, &[0u8; BLOCK_LEN])?;

    // Bitmaps and descriptors, one descriptor block (64 groups) at a time; descriptor
    // blocks go out in batches to each of their copies, so that even a 512 TiB table
    // (256 MiB) never sits in memory whole.
    let mut batch = DescBatch::new();
    let mut free_blocks = 0;
    let ipg = layout.inodes_per_group;
    for group in 0..layout.groups {
        let tables = layout.tables(group);
        let free = layout.free_in_group(group);
        free_blocks += free;
        let mut flags = 0;
        if punched {
            flags |= group_flag::ITABLE_ZEROED;
        }
        let mut block_bitmap_csum = 0;
        if layout.block_bitmap_derivable(group) {
            flags |= group_flag::BLOCK_UNINIT;
        } else {
            let first = layout.group_first_block(group);
            let mut bitmap = vec![0u8; BLOCK_LEN];
            for used in layout.used_in_group(group) {
                disk::set_bits(
                    &mut bitmap,
                    block_index(used.start - first)..block_index(used.end - first),
                );
            }
            disk::set_bits(
                &mut bitmap,
                block_index(layout.group_len(group))..block_index(BLOCKS_PER_GROUP),
            );
            block_bitmap_csum = disk::block_bitmap_csum(&bitmap, seed);
            writer.write_block(tables.block_bitmap, &bitmap)?;
        }
        let (free_inodes, used_dirs, inode_bitmap_csum) = if group == 0 {
            let mut bitmap = vec![0u8; BLOCK_LEN];
            disk::set_bits(&mut bitmap, 0..FIRST_INODE as usize);
            disk::set_bits(&mut bitmap, ipg as usize..BLOCK_LEN * 8);
            writer.write_block(tables.inode_bitmap, &bitmap)?;
            (
                ipg - FIRST_INODE,
                2,
                disk::inode_bitmap_csum(&bitmap, ipg, seed),
            )
        } else {
            flags |= group_flag::INODE_UNINIT;
            (ipg, 0, 0)
        };
        let desc = GroupDesc {
            block_bitmap: tables.block_bitmap,
            inode_bitmap: tables.inode_bitmap,
            inode_table: tables.inode_table,
            free_blocks: u32::try_from(free).expect("at most 32768 blocks per group"),
            free_inodes,
            used_dirs,
            flags,
            block_bitmap_csum,
            inode_bitmap_csum,
            itable_unused: free_inodes,
        };
        disk::group_desc(batch.slot(group), &desc, group, seed);
        if u64::from(group) % DESCS_PER_BLOCK == DESCS_PER_BLOCK - 1 || group + 1 == layout.groups {
            batch.block_done(writer, layout)?;
        }
    }
    batch.flush(writer, layout)?;

    // Root directory, lost+found, journal.
    let mut inodes = Vec::new();
    inodes.push((
        ino::ROOT,
        InodeSpec {
            mode: 0o040_755,
            links: 3,
            size: BLOCK_SIZE,
            blocks: 1,
            i_block: disk::i_block_with_extents(&[layout::Extent {
                logical: 0,
                start: layout.root_block,
                len: 1,
            }]),
            time: identity.now,
        },
    ));
    inodes.push((
        ino::LOST_FOUND,
        InodeSpec {
            mode: 0o040_700,
            links: 2,
            size: LOST_FOUND_BLOCKS * BLOCK_SIZE,
            blocks: LOST_FOUND_BLOCKS,
            i_block: disk::i_block_with_extents(&[layout::Extent {
                logical: 0,
                start: layout.lost_found_block,
                len: u16::try_from(LOST_FOUND_BLOCKS).expect("4 blocks"),
            }]),
            time: identity.now,
        },
    ));
    writer.write_block(
        layout.root_block,
        &disk::dir_block(
            ino::ROOT,
            &[
                (ino::ROOT, b"."),
                (ino::ROOT, b".."),
                (ino::LOST_FOUND, b"lost+found"),
            ],
            seed,
        ),
    )?;
    writer.write_block(
        layout.lost_found_block,
        &disk::dir_block(
            ino::LOST_FOUND,
            &[(ino::LOST_FOUND, b"."), (ino::ROOT, b"..")],
            seed,
        ),
    )?;
    for i in 1..LOST_FOUND_BLOCKS {
        writer.write_block(
            layout.lost_found_block + i,
            &disk::dir_block(ino::LOST_FOUND, &[], seed),
        )?;
    }
    let mut journal_backup = None;
    if let Some(journal) = &layout.journal {
        let i_block = match journal.leaf_block {
            Some(leaf) => {
                writer.write_block(
                    leaf,
                    &disk::extent_leaf(ino::JOURNAL, &journal.extents, seed),
                )?;
                disk::i_block_with_leaf(leaf)
            }
            None => disk::i_block_with_extents(&journal.extents),
        };
        let size = u64::from(journal.blocks) * BLOCK_SIZE;
        let mut backup = [0u32; 17];
        for (i, word) in i_block.chunks_exact(4).enumerate() {
            backup[i] = u32::from_le_bytes(word.try_into().expect("4 bytes"));
        }
        backup[15] = u32::try_from(size >> 32).expect("journal < 2^64 bytes");
        backup[16] = (size & 0xffff_ffff) as u32;
        journal_backup = Some(backup);
        inodes.push((
            ino::JOURNAL,
            InodeSpec {
                mode: 0o100_600,
                links: 1,
                size,
                blocks: u64::from(journal.blocks) + u64::from(journal.leaf_block.is_some()),
                i_block,
                time: identity.now,
            },
        ));
        let first = journal.extents[0].start;
        writer.write_block(
            first,
            &disk::journal_superblock(journal.blocks, &identity.uuid),
        )?;
        if zero_journal {
            let zeros = vec![0u8; 256 * BLOCK_LEN];
            for extent in &journal.extents {
                let mut block = extent.start;
                let end = extent.start + u64::from(extent.len);
                if block == first {
                    block += 1;
                }
                while block < end {
                    let count = (end - block).min(256);
                    writer.write_block(block, &zeros[..block_index(count) * BLOCK_LEN])?;
                    block += count;
                }
            }
        }
    }

    // Group 0's first inode-table block: the reserved inodes, root, lost+found.
    let mut itable = vec![0u8; BLOCK_LEN];
    for number in 1..=FIRST_INODE {
        let spec = inodes.iter().find(|(n, _)| *n == number).map(|(_, s)| s);
        let offset = (number as usize - 1) * INODE_LEN;
        itable[offset..offset + INODE_LEN].copy_from_slice(&disk::inode(number, spec, seed));
    }
    writer.write_block(layout.tables(0).inode_table, &itable)?;

    // Backup superblocks, then the primary one.
    let super_groups = layout.super_groups();
    let still_to_write = super_groups.len() as u64 * disk::SUPERBLOCK_SIZE as u64;
    let params = SuperParams {
        uuid: identity.uuid,
        hash_seed: identity.hash_seed,
        label: identity.label.clone(),
        now: identity.now,
        free_blocks,
        journal_backup,
        kbytes_written: (writer.bytes_written + still_to_write) / 1024,
    };
    for &group in &super_groups[1..] {
        let first = layout.group_first_block(group);
        writer.write_block(first, &disk::superblock(layout, &params, group))?;
    }
    // The primary superblock goes last in program order, so a format killed half-way
    // leaves block 0 zeroed and no mountable filesystem (one fsync at the end, like
    // mke2fs: a power cut mid-format needs a re-format either way).
    writer.write_at(1024, &disk::superblock(layout, &params, 0))?;
    writer.sync()?;
    Ok(free_blocks)
}

/// Descriptor blocks not yet written: consecutive blocks starting at `first_index`.
struct DescBatch {
    first_index: u64,
    blocks: Vec<u8>,
}

impl DescBatch {
    /// Descriptor blocks written at once where their copies are contiguous (1 MiB).
    const MAX_BLOCKS: usize = 256;

    fn new() -> DescBatch {
        DescBatch {
            first_index: 0,
            blocks: Vec::with_capacity(Self::MAX_BLOCKS * BLOCK_LEN),
        }
    }

    /// The 64 bytes of `group`'s descriptor, in a zeroed block when it starts one.
    fn slot(&mut self, group: u32) -> &mut [u8] {
        let in_block = usize::try_from(u64::from(group) % DESCS_PER_BLOCK).expect("< 64");
        if in_block == 0 {
            self.blocks.resize(self.blocks.len() + BLOCK_LEN, 0);
        }
        let offset = self.blocks.len() - BLOCK_LEN + in_block * DESC_LEN;
        &mut self.blocks[offset..offset + DESC_LEN]
    }

    /// A descriptor block is complete: write the batch out once it is full.
    fn block_done(&mut self, writer: &mut Writer<'_>, layout: &Layout) -> Result<(), Error> {
        if self.blocks.len() == Self::MAX_BLOCKS * BLOCK_LEN {
            self.flush(writer, layout)?;
        }
        Ok(())
    }

    /// Write every block of the batch to each of its copies.
    fn flush(&mut self, writer: &mut Writer<'_>, layout: &Layout) -> Result<(), Error> {
        if layout.meta_bg {
            for (i, block) in (self.first_index..).zip(self.blocks.chunks_exact(BLOCK_LEN)) {
                for copy in layout.desc_block_copies(i) {
                    writer.write_block(copy, block)?;
                }
            }
        } else {
            for copy in layout.desc_block_copies(self.first_index) {
                writer.write_block(copy, &self.blocks)?;
            }
        }
        self.first_index += (self.blocks.len() / BLOCK_LEN) as u64;
        self.blocks.clear();
        Ok(())
    }
}

/// A block count or offset within a group as a bitmap index.
fn block_index(blocks: u64) -> usize {
    usize::try_from(blocks).expect("block offsets within a group fit in usize")
}
