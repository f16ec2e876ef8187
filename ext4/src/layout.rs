//! Where everything goes: geometry (groups, inodes per group) and block placement.
//!
//! Pure arithmetic, no I/O. The rules follow `ext2fs_initialize()` and
//! `ext2fs_allocate_group_table()` of e2fsprogs 1.47 so the result looks like what
//! `mke2fs -t ext4` makes (minus the resize inode, see the crate docs):
//! - 4 KiB blocks, 32768 blocks per group, 256-byte inodes, 64-byte group descriptors;
//! - `sparse_super2`: superblock + descriptor copies in group 0 and at most two backup
//!   groups (`s_backup_bgs`: group 1 and the last group, as `mke2fs -E num_backup_sb=N`);
//! - `meta_bg` once the descriptor table would take more than 3/4 of group 0 (over
//!   192 TiB; mke2fs switches at the same point) or when asked: descriptor block `i`
//!   then lives in groups `64i`, `64i + 1` and `64i + 63` (the kernel reads the first);
//! - `flex_bg`: the first group of each flex group holds the block bitmaps, then the
//!   inode bitmaps, then the inode tables of all its groups, back to back. 256 groups per
//!   flex group (16 on volumes of at most 16 groups or with dense inode tables), so that
//!   only one block bitmap in 256 must be written (see [`flex_groups_for`]);
//! - a last group too small for its own metadata plus 50 blocks is dropped;
//! - root directory and `lost+found` right after the first flex group's tables, the
//!   journal at the start of the emptier of the two groups in the middle of the volume.

use std::ops::Range;

/// Filesystem block size in bytes (the only one this formatter writes).
pub const BLOCK_SIZE: u64 = 4096;
/// [`BLOCK_SIZE`] as a buffer length.
pub const BLOCK_LEN: usize = 4096;
/// [`INODE_SIZE`] as a buffer length.
pub const INODE_LEN: usize = 256;
/// [`DESC_SIZE`] as a buffer length.
pub const DESC_LEN: usize = 64;
const _: () = assert!(BLOCK_LEN as u64 == BLOCK_SIZE && INODE_LEN as u64 == INODE_SIZE);
const _: () = assert!(DESC_LEN as u64 == DESC_SIZE);
/// Blocks (and block-bitmap bits) per group: one bitmap block of 4096 * 8 bits.
pub const BLOCKS_PER_GROUP: u64 = 32768;
/// On-disk inode size (mke2fs.conf `inode_size = 256`).
pub const INODE_SIZE: u64 = 256;
/// Group descriptor size with the `64bit` feature.
pub const DESC_SIZE: u64 = 64;
/// Smallest flex group size (mke2fs's default `-G 16`).
pub const MIN_FLEX_GROUPS: u32 = 16;
/// Largest flex group size this formatter picks (`-G 256`, what Lustre formats its
/// multi-terabyte OSTs with).
pub const MAX_FLEX_GROUPS: u32 = 256;
/// Descriptors per block, which is also the number of groups per `meta_bg` meta group.
pub const DESCS_PER_BLOCK: u64 = BLOCK_SIZE / DESC_SIZE;
/// First non-reserved inode; inodes 1..=10 are reserved, 11 is `lost+found`.
pub const FIRST_INODE: u32 = 11;
/// Blocks of `lost+found` (mke2fs grows it to 16 KiB so fsck can reconnect files
/// without allocating).
pub const LOST_FOUND_BLOCKS: u64 = 4;
/// Longest initialised extent (`EXT_INIT_MAX_LEN`).
pub const MAX_EXTENT_LEN: u64 = 32768;
/// Extents that fit in the inode's `i_block` next to the extent header.
pub const EXTENTS_IN_INODE: usize = 4;
/// Extents that fit in one leaf block: (4096 - 12-byte header - 4-byte tail) / 12.
pub const EXTENTS_PER_LEAF: usize = 340;
/// mke2fs drops a last group that has less than its own metadata plus this many blocks.
const LAST_GROUP_SLACK: u64 = 50;
/// Inodes per inode-table block.
const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
/// Beyond this many descriptor blocks (3/4 of group 0) the table no longer stays next to
/// the superblock: `meta_bg` spreads it, as mke2fs does.
const MAX_CONTIGUOUS_DESC_BLOCKS: u64 = BLOCKS_PER_GROUP * 3 / 4;
/// Most groups: every group needs at least one inode-table block of 16 inodes, and the
/// inode count must stay below 2^32 (about 32 PiB).
const MAX_GROUPS: u64 = (u32::MAX / 16) as u64;
/// mke2fs's search window for a flex group's tables (`flexbg_offset()`): keeping each
/// kind of table of a flex group within it keeps our placement identical to mke2fs's.
const FLEX_TABLES_WINDOW: u64 = BLOCKS_PER_GROUP / 4;

/// Why a size or option cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// Not even one group with its metadata, root and `lost+found` fits.
    TooSmall {
        /// The smallest size that works, in bytes.
        min_bytes: u64,
    },
    /// More groups than 2^32 inodes can serve (about 32 PiB).
    TooLarge {
        /// The largest size that works, in bytes.
        max_bytes: u64,
    },
    /// The requested journal does not fit (volume below 8 MiB).
    NoRoomForJournal {
        /// The smallest size that takes a journal, in bytes.
        min_bytes: u64,
    },
}

/// One block group's metadata locations.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupTables {
    /// Block bitmap block.
    pub block_bitmap: u64,
    /// Inode bitmap block.
    pub inode_bitmap: u64,
    /// First inode-table block.
    pub inode_table: u64,
}

/// A run of physical blocks mapped at a logical block of a file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Extent {
    /// First logical block of the file covered by this run.
    pub logical: u32,
    /// First physical block.
    pub start: u64,
    /// Number of blocks, at most [`MAX_EXTENT_LEN`].
    pub len: u16,
}

/// The journal inode's blocks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JournalLayout {
    /// Journal length in blocks (`ext2fs_default_journal_size`).
    pub blocks: u32,
    /// Physical runs, in logical order.
    pub extents: Vec<Extent>,
    /// Extent leaf block when the runs do not fit in the inode.
    pub leaf_block: Option<u64>,
}

/// Where the superblock and group descriptor copies go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DescriptorPlacement {
    /// Backup superblock copies wanted (`mke2fs -E num_backup_sb`, 0..=2).
    pub backups: u8,
    /// Spread the descriptors with `meta_bg` even where the table fits next to the
    /// superblock (it is used regardless once it does not).
    pub meta_bg: bool,
}

/// The complete placement of a fresh filesystem.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Filesystem size in blocks (may be less than the device: a tiny last group is dropped).
    pub blocks: u64,
    /// Number of block groups.
    pub groups: u32,
    /// Blocks of the group descriptor table.
    pub desc_blocks: u64,
    /// Descriptors spread by `meta_bg` rather than one table after each superblock.
    pub meta_bg: bool,
    /// `s_backup_bgs`: the groups holding backup superblocks (0 = none), ascending.
    pub backup_groups: [u32; 2],
    /// Groups per flex group (a power of two).
    pub flex_groups: u32,
    /// Inodes per group (a multiple of 16: whole inode-table blocks).
    pub inodes_per_group: u32,
    /// Inode-table blocks per group.
    pub inode_table_blocks: u64,
    /// Blocks reserved for root (`s_r_blocks_count`).
    pub reserved_blocks: u64,
    /// Root directory's single block.
    pub root_block: u64,
    /// First of the [`LOST_FOUND_BLOCKS`] blocks of `lost+found`.
    pub lost_found_block: u64,
    /// The journal, when requested.
    pub journal: Option<JournalLayout>,
    /// Blocks used by files (root, `lost+found`, journal) as sorted ranges.
    file_ranges: Vec<Range<u64>>,
}

/// Journal size in blocks for a filesystem of `blocks` 4 KiB blocks, as
/// `ext2fs_default_journal_size()` of e2fsprogs 1.47 chooses it; `None` below 2048 blocks.
pub fn default_journal_blocks(blocks: u64) -> Option<u32> {
    match blocks {
        0..2048 => None,
        2048..32768 => Some(1024),
        32768..262_144 => Some(4096),
        262_144..524_288 => Some(8192),
        524_288..4_194_304 => Some(16384),
        4_194_304..8_388_608 => Some(32768),
        8_388_608..16_777_216 => Some(65536),
        16_777_216..33_554_432 => Some(131_072),
        _ => Some(262_144),
    }
}

/// Groups per flex group for a volume of `groups` groups with `inode_table_blocks` per
/// group: 256 where the volume has that many groups and 256 groups' tables stay within
/// mke2fs's search window, else the smallest power of two covering the volume, at least
/// mke2fs's 16.
///
/// Why 256: the first group of a flex group holds the tables of all its groups, so its
/// block bitmap must be written (the kernel only derives a `BLOCK_UNINIT` bitmap from the
/// group's *own* metadata). With mke2fs's 16 that is one 4 KiB bitmap per 2 GiB, 120 MiB
/// at 60 TiB; with 256 it is 7.5 MiB. The allocator treats a flex group as one unit for
/// spreading directories, which costs nothing on volumes of large files.
pub fn flex_groups_for(groups: u64, inode_table_blocks: u64) -> u32 {
    let mut flex = MAX_FLEX_GROUPS;
    while flex > MIN_FLEX_GROUPS
        && (u64::from(flex / 2) >= groups
            || u64::from(flex) * (2 + inode_table_blocks) > FLEX_TABLES_WINDOW)
    {
        flex /= 2;
    }
    flex
}

/// `s_backup_bgs` for `backups` wanted copies on `groups` groups, as mke2fs sets it:
/// group 1 and the last group, clamped, deduplicated, ordered.
fn backup_groups_for(backups: u8, groups: u32) -> [u32; 2] {
    let last = groups - 1;
    let mut bgs = [
        if backups >= 1 { 1.min(last) } else { 0 },
        if backups >= 2 { last } else { 0 },
    ];
    if bgs[1] == bgs[0] {
        bgs[1] = 0;
    }
    if bgs[0] > bgs[1] {
        bgs.swap(0, 1);
    }
    bgs
}

impl Layout {
    /// Lay out a filesystem on `device_bytes` bytes with one inode per `inode_ratio` bytes,
    /// `reserved_percent` % of blocks reserved for root, descriptors per `placement`, and
    /// a journal if `journal`.
    pub fn compute(
        device_bytes: u64,
        inode_ratio: u64,
        reserved_percent: u8,
        placement: DescriptorPlacement,
        journal: bool,
    ) -> Result<Layout, LayoutError> {
        let device_blocks = device_bytes / BLOCK_SIZE;
        // mke2fs asks for size / ratio inodes, computed once from the full device size.
        let requested_inodes = device_blocks * BLOCK_SIZE / inode_ratio;
        let mut blocks = device_blocks;
        let geometry = loop {
            if blocks == 0 {
                return Err(LayoutError::TooSmall {
                    min_bytes: min_bytes(),
                });
            }
            let groups = blocks.div_ceil(BLOCKS_PER_GROUP);
            if groups > MAX_GROUPS {
                return Err(LayoutError::TooLarge {
                    max_bytes: max_bytes(),
                });
            }
            let groups32 = u32::try_from(groups).expect("groups <= MAX_GROUPS");
            let desc_blocks = groups.div_ceil(DESCS_PER_BLOCK);
            let meta_bg = placement.meta_bg || desc_blocks > MAX_CONTIGUOUS_DESC_BLOCKS;
            let inodes_per_group = inodes_per_group(requested_inodes, groups);
            let inode_table_blocks = (inodes_per_group * INODE_SIZE).div_ceil(BLOCK_SIZE);
            // mke2fs's test for the last group (ext2fs_initialize()): whether it takes a
            // backup is judged from the requested backups before clamping, and a backup
            // there is counted with the whole descriptor table even under meta_bg.
            let mut last_overhead = 2 + inode_table_blocks;
            let last_has_backup = if groups == 2 {
                placement.backups >= 1
            } else {
                placement.backups >= 2
            };
            if last_has_backup {
                last_overhead += 1 + desc_blocks;
            }
            let rem = blocks % BLOCKS_PER_GROUP;
            if groups == 1 && rem != 0 && rem < last_overhead + LAST_GROUP_SLACK {
                return Err(LayoutError::TooSmall {
                    min_bytes: min_bytes(),
                });
            }
            if rem != 0 && rem < last_overhead + LAST_GROUP_SLACK {
                blocks -= rem;
                continue;
            }
            break Geometry {
                blocks,
                groups: groups32,
                desc_blocks,
                meta_bg,
                backup_groups: backup_groups_for(placement.backups, groups32),
                flex_groups: flex_groups_for(groups, inode_table_blocks),
                inodes_per_group: u32::try_from(inodes_per_group)
                    .expect("inodes_per_group is capped at 32768"),
                inode_table_blocks,
            };
        };
        geometry.place(reserved_percent, journal)
    }

    /// First block of `group`.
    pub fn group_first_block(&self, group: u32) -> u64 {
        u64::from(group) * BLOCKS_PER_GROUP
    }

    /// Blocks in `group` (the last one may be short).
    pub fn group_len(&self, group: u32) -> u64 {
        (self.blocks - self.group_first_block(group)).min(BLOCKS_PER_GROUP)
    }

    /// Whether `group` holds a superblock: group 0 and the `sparse_super2` backups.
    pub fn has_super(&self, group: u32) -> bool {
        group == 0 || self.backup_groups.contains(&group)
    }

    /// Whether `group` holds a copy of its meta group's descriptor block (`meta_bg`:
    /// the first, second and last group of every 64).
    fn has_meta_desc(&self, group: u32) -> bool {
        let index = u64::from(group) % DESCS_PER_BLOCK;
        self.meta_bg && (index == 0 || index == 1 || index == DESCS_PER_BLOCK - 1)
    }

    /// Blocks at the start of `group` taken by its superblock and descriptor copies.
    pub fn super_blocks_in(&self, group: u32) -> u64 {
        let superblock = u64::from(self.has_super(group));
        if self.meta_bg {
            superblock + u64::from(self.has_meta_desc(group))
        } else if self.has_super(group) {
            superblock + self.desc_blocks
        } else {
            0
        }
    }

    /// Every block holding a copy of descriptor block `index`, the primary first.
    pub fn desc_block_copies(&self, index: u64) -> Vec<u64> {
        if self.meta_bg {
            let first = index * DESCS_PER_BLOCK;
            [first, first + 1, first + DESCS_PER_BLOCK - 1]
                .into_iter()
                .filter(|&group| group < u64::from(self.groups))
                .map(|group| {
                    let group = u32::try_from(group).expect("group < groups");
                    self.group_first_block(group) + u64::from(self.has_super(group))
                })
                .collect()
        } else {
            std::iter::once(0)
                .chain(self.backup_groups.into_iter().filter(|&g| g != 0))
                .map(|group| self.group_first_block(group) + 1 + index)
                .collect()
        }
    }

    /// The groups holding a superblock, group 0 first.
    pub fn super_groups(&self) -> Vec<u32> {
        std::iter::once(0)
            .chain(self.backup_groups.into_iter().filter(|&g| g != 0))
            .collect()
    }

    /// The first group of the flex group of `group`, and how many groups it has.
    fn flex_group_of(&self, group: u32) -> (u32, u32) {
        let first = group & !(self.flex_groups - 1);
        (first, (self.groups - first).min(self.flex_groups))
    }

    /// Bitmap and inode-table locations of `group`: the first group of its flex group
    /// holds, after its own superblock and descriptors, the block bitmaps, then the inode
    /// bitmaps, then the inode tables of all its groups. The distance between the three is
    /// the flex group's group count, except that a last flex group of one group keeps the
    /// full spacing (`table_offset` in ext2fs_allocate_group_table()).
    pub fn tables(&self, group: u32) -> GroupTables {
        let (first, members) = self.flex_group_of(group);
        let spacing = u64::from(if members == 1 {
            self.flex_groups
        } else {
            members
        });
        let start = self.group_first_block(first) + self.super_blocks_in(first);
        let index = u64::from(group - first);
        GroupTables {
            block_bitmap: start + index,
            inode_bitmap: start + spacing + index,
            inode_table: start + 2 * spacing + index * self.inode_table_blocks,
        }
    }

    /// The block bitmaps, inode bitmaps and inode tables of the flex group starting at
    /// `group`; they all sit in `group`.
    fn flex_tables_ranges(&self, group: u32) -> [Range<u64>; 3] {
        let (_, members) = self.flex_group_of(group);
        let members = u64::from(members);
        let first = self.tables(group);
        [
            first.block_bitmap..first.block_bitmap + members,
            first.inode_bitmap..first.inode_bitmap + members,
            first.inode_table..first.inode_table + members * self.inode_table_blocks,
        ]
    }

    /// Every used block range inside `group`, sorted and clipped to the group.
    pub fn used_in_group(&self, group: u32) -> Vec<Range<u64>> {
        let first = self.group_first_block(group);
        let end = first + self.group_len(group);
        let mut used = Vec::new();
        let sb = self.super_blocks_in(group);
        if sb > 0 {
            used.push(first..first + sb);
        }
        if group.is_multiple_of(self.flex_groups) {
            used.extend(self.flex_tables_ranges(group));
        }
        for range in &self.file_ranges {
            let clipped = range.start.max(first)..range.end.min(end);
            if clipped.start < clipped.end {
                used.push(clipped);
            }
        }
        used.sort_by_key(|r| r.start);
        used
    }

    /// Free blocks of `group`.
    pub fn free_in_group(&self, group: u32) -> u64 {
        let used: u64 = self
            .used_in_group(group)
            .iter()
            .map(|r| r.end - r.start)
            .sum();
        self.group_len(group) - used
    }

    /// Whether `group` holds nothing but its own superblock and descriptor copies, so the
    /// kernel and e2fsck can rebuild its block bitmap (`BLOCK_UNINIT`). The last group never
    /// qualifies: its bitmap needs padding bits.
    pub fn block_bitmap_derivable(&self, group: u32) -> bool {
        group + 1 != self.groups && !group.is_multiple_of(self.flex_groups) && {
            let first = self.group_first_block(group);
            let end = first + self.group_len(group);
            !self
                .file_ranges
                .iter()
                .any(|r| r.start < end && r.end > first)
        }
    }

    /// Blocks not available to files: superblocks, descriptors, bitmaps, inode tables and
    /// the journal (not its extent leaf) -- what mke2fs stores in `s_overhead_clusters`.
    pub fn overhead_blocks(&self) -> u64 {
        let supers: u64 = if self.meta_bg {
            let copies: u64 = (0..self.desc_blocks)
                .map(|i| self.desc_block_copies(i).len() as u64)
                .sum();
            copies + self.super_groups().len() as u64
        } else {
            self.super_groups().len() as u64 * (1 + self.desc_blocks)
        };
        let journal = self.journal.as_ref().map_or(0, |j| u64::from(j.blocks));
        supers + u64::from(self.groups) * (2 + self.inode_table_blocks) + journal
    }

    /// Total inodes.
    pub fn inodes(&self) -> u64 {
        u64::from(self.groups) * u64::from(self.inodes_per_group)
    }

    /// The sorted block ranges of root, `lost+found` and the journal.
    fn compute_file_ranges(&self) -> Vec<Range<u64>> {
        let mut ranges = vec![
            self.root_block..self.root_block + 1,
            self.lost_found_block..self.lost_found_block + LOST_FOUND_BLOCKS,
        ];
        if let Some(journal) = &self.journal {
            ranges.extend(
                journal
                    .extents
                    .iter()
                    .map(|e| e.start..e.start + u64::from(e.len)),
            );
            ranges.extend(journal.leaf_block.map(|b| b..b + 1));
        }
        ranges.sort_by_key(|r| r.start);
        ranges
    }
}

/// Group counts before placement.
struct Geometry {
    blocks: u64,
    groups: u32,
    desc_blocks: u64,
    meta_bg: bool,
    backup_groups: [u32; 2],
    flex_groups: u32,
    inodes_per_group: u32,
    inode_table_blocks: u64,
}

impl Geometry {
    fn place(self, reserved_percent: u8, journal: bool) -> Result<Layout, LayoutError> {
        let reserved_blocks = self.blocks * u64::from(reserved_percent) / 100;
        let mut layout = Layout {
            blocks: self.blocks,
            groups: self.groups,
            desc_blocks: self.desc_blocks,
            meta_bg: self.meta_bg,
            backup_groups: self.backup_groups,
            flex_groups: self.flex_groups,
            inodes_per_group: self.inodes_per_group,
            inode_table_blocks: self.inode_table_blocks,
            reserved_blocks,
            root_block: 0,
            lost_found_block: 0,
            journal: None,
            file_ranges: Vec::new(),
        };
        for flex_first in (0..self.groups).step_by(self.flex_groups as usize) {
            let [_, _, inode_tables] = layout.flex_tables_ranges(flex_first);
            let (_, members) = layout.flex_group_of(flex_first);
            let group_end = layout.group_first_block(flex_first) + layout.group_len(flex_first);
            // Group 0 also takes the root directory and lost+found, in the first free
            // blocks: the gap after the block bitmaps if it holds them (1 + 4 blocks), else
            // right after the tables.
            let mut needed_end = inode_tables.end;
            if flex_first == 0 {
                let tables = layout.tables(0);
                let gap = tables.inode_bitmap - tables.block_bitmap - u64::from(members);
                if gap > LOST_FOUND_BLOCKS {
                    layout.root_block = tables.block_bitmap + u64::from(members);
                } else {
                    layout.root_block = inode_tables.end;
                    needed_end = inode_tables.end + 1 + LOST_FOUND_BLOCKS;
                }
                layout.lost_found_block = layout.root_block + 1;
            }
            if needed_end > group_end {
                return Err(if self.groups == 1 {
                    LayoutError::TooSmall {
                        min_bytes: min_bytes(),
                    }
                } else {
                    LayoutError::TooLarge {
                        max_bytes: max_bytes(),
                    }
                });
            }
        }
        layout.file_ranges = layout.compute_file_ranges();
        if journal {
            layout.journal = Some(place_journal(&layout)?);
            layout.file_ranges = layout.compute_file_ranges();
        }
        Ok(layout)
    }
}

/// Inodes per group for `requested` inodes over `groups` groups: at least 12 inodes in
/// all (the reserved ones plus `lost+found`), whole inode-table blocks, at most one
/// bitmap block's worth, and no more than 2^32 - 1 inodes in total.
fn inodes_per_group(requested: u64, groups: u64) -> u64 {
    let wanted = requested
        .max(u64::from(FIRST_INODE) + 1)
        .min(u64::from(u32::MAX));
    let per_group = wanted.div_ceil(groups).min(BLOCK_SIZE * 8);
    let whole_blocks = per_group.div_ceil(INODES_PER_BLOCK) * INODES_PER_BLOCK;
    let total_cap = u64::from(u32::MAX) / groups / INODES_PER_BLOCK * INODES_PER_BLOCK;
    whole_blocks.min(total_cap)
}

/// Smallest device this formatter accepts: one group with its metadata, root,
/// `lost+found` and mke2fs's 50 spare blocks.
pub fn min_bytes() -> u64 {
    // superblock + 1 descriptor block + 2 bitmaps + 1 inode-table block + slack.
    (1 + 1 + 2 + 1 + LAST_GROUP_SLACK) * BLOCK_SIZE
}

/// Largest device this formatter accepts: [`MAX_GROUPS`] full groups (about 32 PiB).
pub fn max_bytes() -> u64 {
    MAX_GROUPS * BLOCKS_PER_GROUP * BLOCK_SIZE
}

/// The group whose start the journal is placed at (`get_midpoint_journal_block()`):
/// the emptier of the two groups at the start of the middle flex group.
fn journal_goal_group(layout: &Layout) -> u32 {
    let mut group = u32::try_from(layout.blocks / 2 / BLOCKS_PER_GROUP)
        .expect("group numbers fit in u32 (checked in compute)");
    let start = if group > layout.flex_groups {
        group &= !(layout.flex_groups - 1);
        while group < layout.groups && layout.free_in_group(group) == 0 {
            group += 1;
        }
        if group == layout.groups {
            group = 0;
        }
        group
    } else {
        group.saturating_sub(1)
    };
    let end = if group + 1 < layout.groups {
        group + 1
    } else {
        group
    };
    let mut best = start;
    for candidate in start + 1..=end {
        if layout.free_in_group(candidate) > layout.free_in_group(best) {
            best = candidate;
        }
    }
    best
}

/// Allocate the journal (and its extent leaf if needed) from free blocks starting at the
/// goal group, wrapping to the start of the volume.
fn place_journal(layout: &Layout) -> Result<JournalLayout, LayoutError> {
    let no_room = LayoutError::NoRoomForJournal {
        min_bytes: 2048 * BLOCK_SIZE,
    };
    let blocks = default_journal_blocks(layout.blocks).ok_or(no_room.clone())?;
    let goal_group = journal_goal_group(layout);
    let mut wanted = u64::from(blocks);
    let mut extents: Vec<Extent> = Vec::new();
    let mut logical: u64 = 0;
    let group_order = (goal_group..layout.groups).chain(0..goal_group);
    let mut leaf_block = None;
    let mut need_leaf = false;
    'groups: for group in group_order {
        for free in free_runs(layout, group) {
            let mut run = free;
            while run.start < run.end {
                if wanted == 0 {
                    if need_leaf {
                        leaf_block = Some(run.start);
                    }
                    break 'groups;
                }
                // Like ext2fs_fallocate(), an extent runs on across a group boundary
                // until it holds MAX_EXTENT_LEN blocks.
                let available = (run.end - run.start).min(wanted);
                let take = match extents.last_mut() {
                    Some(last)
                        if last.start + u64::from(last.len) == run.start
                            && u64::from(last.len) < MAX_EXTENT_LEN =>
                    {
                        let take = available.min(MAX_EXTENT_LEN - u64::from(last.len));
                        last.len += u16::try_from(take).expect("take <= 32768");
                        take
                    }
                    _ => {
                        let take = available.min(MAX_EXTENT_LEN);
                        extents.push(Extent {
                            logical: u32::try_from(logical).expect("journal < 2^32 blocks"),
                            start: run.start,
                            len: u16::try_from(take).expect("take <= 32768"),
                        });
                        take
                    }
                };
                logical += take;
                wanted -= take;
                run.start += take;
                need_leaf = extents.len() > EXTENTS_IN_INODE;
            }
        }
    }
    if wanted > 0 || (need_leaf && leaf_block.is_none()) || extents.len() > EXTENTS_PER_LEAF {
        return Err(no_room);
    }
    // ext2fs's extent_node_split() tries to put the leaf just before the first extent
    // (usually the free last block of the previous group); failing that it takes the
    // first free block after the journal, found above.
    if need_leaf {
        if let Some(before) = extents[0].start.checked_sub(1) {
            let group = u32::try_from(before / BLOCKS_PER_GROUP).expect("group < groups");
            let in_journal = extents
                .iter()
                .any(|e| (e.start..e.start + u64::from(e.len)).contains(&before));
            if !in_journal
                && !layout
                    .used_in_group(group)
                    .iter()
                    .any(|used| used.contains(&before))
            {
                leaf_block = Some(before);
            }
        }
    }
    Ok(JournalLayout {
        blocks,
        extents,
        leaf_block,
    })
}

/// Free runs of `group`, given what is already placed (no journal yet).
fn free_runs(layout: &Layout, group: u32) -> Vec<Range<u64>> {
    let first = layout.group_first_block(group);
    let end = first + layout.group_len(group);
    let mut runs = Vec::new();
    let mut cursor = first;
    for used in layout.used_in_group(group) {
        if used.start > cursor {
            runs.push(cursor..used.start);
        }
        cursor = cursor.max(used.end);
    }
    if cursor < end {
        runs.push(cursor..end);
    }
    runs
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;
    const LARGEFILE4: u64 = 4 << 20;
    const NO_BACKUPS: DescriptorPlacement = DescriptorPlacement {
        backups: 0,
        meta_bg: false,
    };

    fn largefile4(size: u64, placement: DescriptorPlacement, journal: bool) -> Layout {
        Layout::compute(size, LARGEFILE4, 5, placement, journal).unwrap()
    }

    #[test]
    fn backup_groups_follow_mke2fs_num_backup_sb() {
        assert_eq!(backup_groups_for(0, 100), [0, 0]);
        // Ascending, so a lone backup sits in the second slot.
        assert_eq!(backup_groups_for(1, 100), [0, 1]);
        assert_eq!(backup_groups_for(2, 100), [1, 99]);
        // Two groups: the second backup would be group 1 again.
        assert_eq!(backup_groups_for(2, 2), [0, 1]);
        assert_eq!(backup_groups_for(2, 1), [0, 0]);
    }

    #[test]
    fn flex_groups_grow_to_256_unless_tables_get_dense() {
        assert_eq!(flex_groups_for(8, 2), 16);
        assert_eq!(flex_groups_for(24, 2), 32);
        assert_eq!(flex_groups_for(800, 2), 256);
        assert_eq!(flex_groups_for(1 << 22, 2), 256);
        // One inode per 16 KiB: 512 inode-table blocks per group.
        assert_eq!(flex_groups_for(1 << 22, 512), 16);
        // One inode per 64 KiB: 128 blocks per group, so 32 groups fit in 8192 blocks.
        assert_eq!(flex_groups_for(1 << 22, 128), 32);
    }

    #[test]
    fn two_tib_largefile4_matches_mke2fs_geometry() {
        // dumpe2fs of `mke2fs -t ext4 -T largefile4 -G 256 -O sparse_super2 -E
        // num_backup_sb=0` on 2 TiB: 524288 inodes, 32 per group, 2 inode-table blocks.
        let layout = largefile4(2 * TIB, NO_BACKUPS, false);
        assert_eq!(layout.blocks, 536_870_912);
        assert_eq!(layout.groups, 16384);
        assert_eq!(layout.inodes(), 524_288);
        assert_eq!(layout.inodes_per_group, 32);
        assert_eq!(layout.inode_table_blocks, 2);
        assert_eq!(layout.desc_blocks, 256);
        assert_eq!(layout.flex_groups, 256);
        assert!(!layout.meta_bg);
        assert_eq!(layout.backup_groups, [0, 0]);
        assert_eq!(layout.reserved_blocks, 26_843_545);
        assert_eq!(layout.tables(0).block_bitmap, 257);
        assert_eq!(layout.tables(1).block_bitmap, 258);
        assert_eq!(layout.tables(0).inode_bitmap, 257 + 256);
        assert_eq!(layout.tables(0).inode_table, 257 + 512);
        assert_eq!(layout.tables(255).inode_table, 257 + 512 + 510);
        assert_eq!(layout.tables(256).block_bitmap, 256 * BLOCKS_PER_GROUP);
        // A full flex group leaves no gap after the block bitmaps: root follows the tables.
        assert_eq!(layout.root_block, 257 + 512 + 512);
        // Only group 0 holds a superblock and descriptors.
        assert_eq!(layout.super_groups(), vec![0]);
        assert_eq!(layout.super_blocks_in(1), 0);
        assert_eq!(layout.overhead_blocks(), 257 + 16384 * 4);
    }

    #[test]
    fn meta_bg_puts_each_descriptor_block_in_groups_0_1_and_63_of_its_64() {
        let placement = DescriptorPlacement {
            backups: 0,
            meta_bg: true,
        };
        let layout = largefile4(100 * GIB, placement, false);
        assert!(layout.meta_bg);
        assert_eq!(layout.desc_blocks, 13);
        let first = |g: u64| g * BLOCKS_PER_GROUP;
        assert_eq!(layout.desc_block_copies(0), vec![1, first(1), first(63)]);
        assert_eq!(
            layout.desc_block_copies(2),
            vec![first(128), first(129), first(191)]
        );
        // 800 groups: the last meta group (768..799) has no group 831.
        assert_eq!(layout.desc_block_copies(12), vec![first(768), first(769)]);
        assert_eq!(layout.super_blocks_in(0), 2);
        assert_eq!(layout.super_blocks_in(64), 1);
        assert_eq!(layout.super_blocks_in(65), 1);
        assert_eq!(layout.super_blocks_in(66), 0);
        // Group 0's tables follow its superblock and single descriptor block.
        assert_eq!(layout.tables(0).block_bitmap, 2);
        // With two backups, group 1 holds a superblock before its descriptor copy.
        let placement = DescriptorPlacement {
            backups: 2,
            meta_bg: true,
        };
        let layout = largefile4(100 * GIB, placement, false);
        assert_eq!(
            layout.desc_block_copies(0),
            vec![1, first(1) + 1, first(63)]
        );
        assert_eq!(layout.super_groups(), vec![0, 1, 799]);
    }

    #[test]
    fn meta_bg_takes_over_above_192_tib_and_reaches_512_tib() {
        let below = largefile4(192 * TIB, NO_BACKUPS, false);
        assert!(!below.meta_bg);
        assert_eq!(below.desc_blocks, 24576);
        for size in [193 * TIB, 336 * TIB, 512 * TIB] {
            let layout = largefile4(size, NO_BACKUPS, false);
            assert!(layout.meta_bg, "{size}");
            assert_eq!(layout.super_blocks_in(0), 2);
        }
        let layout = largefile4(512 * TIB, NO_BACKUPS, true);
        assert_eq!(layout.groups, 1 << 22);
        assert_eq!(layout.inodes(), 1 << 27);
    }

    #[test]
    fn two_tib_journal_is_1_gib_in_the_middle_with_its_leaf_just_before() {
        let layout = largefile4(2 * TIB, NO_BACKUPS, true);
        let journal = layout.journal.as_ref().unwrap();
        assert_eq!(journal.blocks, 262_144);
        // Group 8192 starts a flex group (tables inside), so 8193 is emptier.
        assert_eq!(journal.extents[0].start, 8193 * BLOCKS_PER_GROUP);
        let total: u64 = journal.extents.iter().map(|e| u64::from(e.len)).sum();
        assert_eq!(total, 262_144);
        assert_eq!(journal.extents.len(), 8);
        // ext2fs puts the extent leaf in the free block before the first extent.
        assert_eq!(journal.leaf_block, Some(8193 * BLOCKS_PER_GROUP - 1));
        for pair in journal.extents.windows(2) {
            assert_eq!(
                u64::from(pair[0].logical) + u64::from(pair[0].len),
                u64::from(pair[1].logical)
            );
        }
    }

    #[test]
    fn journal_extents_run_across_group_boundaries() {
        // meta_bg puts a descriptor copy at the start of group 257, the journal's goal:
        // the first extent starts one block later and still holds 32768 blocks.
        let placement = DescriptorPlacement {
            backups: 0,
            meta_bg: true,
        };
        let layout = largefile4(100 * GIB, placement, true);
        let journal = layout.journal.as_ref().unwrap();
        assert_eq!(journal.extents[0].start, 257 * BLOCKS_PER_GROUP + 1);
        assert!(journal
            .extents
            .iter()
            .all(|e| u64::from(e.len) == MAX_EXTENT_LEN));
        assert_eq!(journal.leaf_block, None);
    }

    #[test]
    fn journal_skips_flex_tables_and_backups() {
        // 2 GiB: 16 groups, one flex group, backups in groups 1 and 15; of the equally
        // empty middle groups 7, 8, 9 the journal takes the first.
        let placement = DescriptorPlacement {
            backups: 2,
            meta_bg: false,
        };
        let layout = largefile4(2 * GIB, placement, true);
        let journal = layout.journal.as_ref().unwrap();
        assert_eq!(journal.blocks, 16384);
        assert_eq!(journal.extents[0].start, 7 * BLOCKS_PER_GROUP);
        for extent in &journal.extents {
            let run = extent.start..extent.start + u64::from(extent.len);
            for group in 0..layout.groups {
                let first = layout.group_first_block(group);
                let sb = first..first + layout.super_blocks_in(group);
                assert!(
                    run.end <= sb.start || run.start >= sb.end,
                    "{run:?} hits {sb:?}"
                );
            }
            for tables in layout.flex_tables_ranges(0) {
                assert!(run.end <= tables.start || run.start >= tables.end);
            }
        }
    }

    #[test]
    fn tiny_last_group_is_dropped_like_mke2fs() {
        // 1 GiB + 40 blocks: group 8 would have 40 blocks < 2 + 1 + 50.
        let layout = largefile4(GIB + 40 * BLOCK_SIZE, NO_BACKUPS, false);
        assert_eq!(layout.blocks, GIB / BLOCK_SIZE);
        assert_eq!(layout.groups, 8);
        // ...but a 300-block tail becomes a short ninth group.
        let layout = largefile4(GIB + 300 * BLOCK_SIZE, NO_BACKUPS, false);
        assert_eq!(layout.groups, 9);
        assert_eq!(layout.group_len(8), 300);
    }

    #[test]
    fn eight_mib_is_one_group_with_a_1024_block_journal() {
        let layout = largefile4(8 << 20, NO_BACKUPS, true);
        assert_eq!(layout.groups, 1);
        // As mke2fs: a lone group keeps the 16-block spacing, root and lost+found fill
        // the gap after the block bitmap.
        assert_eq!(layout.tables(0).block_bitmap, 2);
        assert_eq!(layout.tables(0).inode_bitmap, 18);
        assert_eq!(layout.tables(0).inode_table, 34);
        assert_eq!(layout.root_block, 3);
        assert_eq!(layout.lost_found_block, 4);
        assert_eq!(layout.inodes_per_group, 16);
        assert_eq!(layout.journal.as_ref().unwrap().blocks, 1024);
    }

    #[test]
    fn too_small_and_too_large_are_refused() {
        let compute = |size, journal| Layout::compute(size, LARGEFILE4, 5, NO_BACKUPS, journal);
        assert!(matches!(
            compute(64 << 10, false),
            Err(LayoutError::TooSmall { .. })
        ));
        assert!(matches!(
            compute(4 << 20, true),
            Err(LayoutError::NoRoomForJournal { .. })
        ));
        assert!(compute(min_bytes(), false).is_ok());
        assert!(matches!(
            compute(max_bytes() + 2 * BLOCKS_PER_GROUP * BLOCK_SIZE, false),
            Err(LayoutError::TooLarge { .. })
        ));
    }

    #[test]
    fn inode_count_is_capped_below_2_pow_32() {
        let layout = Layout::compute(64 * TIB, 16384, 5, NO_BACKUPS, false).unwrap();
        assert!(layout.inodes() <= u64::from(u32::MAX));
        assert_eq!(layout.inodes_per_group % 16, 0);
    }

    #[test]
    fn flex_tables_never_overlap_and_stay_in_their_first_group() {
        for meta_bg in [false, true] {
            for backups in 0..=2 {
                let placement = DescriptorPlacement { backups, meta_bg };
                for size in [GIB, 100 * GIB, 3 * GIB + 12345 * BLOCK_SIZE] {
                    let layout = Layout::compute(size, 16384, 5, placement, true).unwrap();
                    for group in 0..layout.groups {
                        let used = layout.used_in_group(group);
                        for pair in used.windows(2) {
                            assert!(pair[0].end <= pair[1].start, "{size}: {used:?}");
                        }
                        let used_total: u64 = used.iter().map(|r| r.end - r.start).sum();
                        assert!(used_total <= layout.group_len(group));
                    }
                }
            }
        }
    }
}
