//! Where everything goes: geometry (groups, inodes per group) and block placement.
//!
//! Pure arithmetic, no I/O. The rules follow `ext2fs_initialize()` and
//! `ext2fs_allocate_group_table()` of e2fsprogs 1.47 so the result looks like what
//! `mke2fs -t ext4` makes (minus the resize inode, see the crate docs):
//! - 4 KiB blocks, 32768 blocks per group, 256-byte inodes, 64-byte group descriptors;
//! - `sparse_super`: superblock + descriptor copies in groups 0, 1 and powers of 3, 5, 7;
//! - `flex_bg` of 16 groups: the first group of each flex group holds the block bitmaps,
//!   then the inode bitmaps, then the inode tables of all its groups, back to back;
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
/// Groups per flex group (mke2fs default `-G 16`).
pub const FLEX_GROUPS: u32 = 16;
/// `s_log_groups_per_flex` for [`FLEX_GROUPS`].
pub const LOG_FLEX_GROUPS: u8 = 4;
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
/// Descriptors per block.
const DESCS_PER_BLOCK: u64 = BLOCK_SIZE / DESC_SIZE;
/// Inodes per inode-table block.
const INODES_PER_BLOCK: u64 = BLOCK_SIZE / INODE_SIZE;
/// Without `meta_bg`, mke2fs refuses descriptor tables longer than 3/4 of a group.
const MAX_DESC_BLOCKS: u64 = BLOCKS_PER_GROUP * 3 / 4;

/// Why a size or option cannot be laid out.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LayoutError {
    /// Not even one group with its metadata, root and `lost+found` fits.
    TooSmall {
        /// The smallest size that works, in bytes.
        min_bytes: u64,
    },
    /// The descriptor table would need `meta_bg`, which this formatter does not write.
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

/// The complete placement of a fresh filesystem.
#[derive(Debug, Clone)]
pub struct Layout {
    /// Filesystem size in blocks (may be less than the device: a tiny last group is dropped).
    pub blocks: u64,
    /// Number of block groups.
    pub groups: u32,
    /// Blocks of the group descriptor table.
    pub desc_blocks: u64,
    /// Inodes per group (a multiple of 16: whole inode-table blocks).
    pub inodes_per_group: u32,
    /// Inode-table blocks per group.
    pub inode_table_blocks: u64,
    /// Blocks reserved for root (`s_r_blocks_count`).
    pub reserved_blocks: u64,
    /// Bitmap and inode-table locations, one entry per group.
    pub tables: Vec<GroupTables>,
    /// Root directory's single block.
    pub root_block: u64,
    /// First of the [`LOST_FOUND_BLOCKS`] blocks of `lost+found`.
    pub lost_found_block: u64,
    /// The journal, when requested.
    pub journal: Option<JournalLayout>,
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

/// Whether group `group` carries a superblock and descriptor backup (`sparse_super`).
pub fn group_has_super(group: u32) -> bool {
    fn is_power_of(mut n: u32, base: u32) -> bool {
        while n.is_multiple_of(base) {
            n /= base;
        }
        n == 1
    }
    group <= 1 || is_power_of(group, 3) || is_power_of(group, 5) || is_power_of(group, 7)
}

impl Layout {
    /// Lay out a filesystem on `device_bytes` bytes with one inode per `inode_ratio` bytes,
    /// `reserved_percent` % of blocks reserved for root, and a journal if `journal`.
    pub fn compute(
        device_bytes: u64,
        inode_ratio: u64,
        reserved_percent: u8,
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
            let desc_blocks = groups.div_ceil(DESCS_PER_BLOCK);
            if desc_blocks > MAX_DESC_BLOCKS {
                return Err(LayoutError::TooLarge {
                    max_bytes: max_bytes(),
                });
            }
            let groups32 = u32::try_from(groups).map_err(|_| LayoutError::TooLarge {
                max_bytes: max_bytes(),
            })?;
            let inodes_per_group = inodes_per_group(requested_inodes, groups);
            let inode_table_blocks = (inodes_per_group * INODE_SIZE).div_ceil(BLOCK_SIZE);
            let last = groups32 - 1;
            let mut last_overhead = 2 + inode_table_blocks;
            if group_has_super(last) {
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

    /// Blocks at the start of `group` taken by the superblock and descriptor backup.
    pub fn super_blocks_in(&self, group: u32) -> u64 {
        if group_has_super(group) {
            1 + self.desc_blocks
        } else {
            0
        }
    }

    /// The block bitmaps, inode bitmaps and inode tables of the flex group starting at
    /// `group` (a multiple of [`FLEX_GROUPS`]); they all sit in `group`.
    fn flex_tables_ranges(&self, group: u32) -> [Range<u64>; 3] {
        let members = u64::from((self.groups - group).min(FLEX_GROUPS));
        let first = self.tables[group as usize];
        [
            first.block_bitmap..first.block_bitmap + members,
            first.inode_bitmap..first.inode_bitmap + members,
            first.inode_table..first.inode_table + members * self.inode_table_blocks,
        ]
    }

    /// Blocks used by files (root, `lost+found`, journal) as sorted ranges.
    fn file_ranges(&self) -> Vec<Range<u64>> {
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

    /// Every used block range inside `group`, sorted and clipped to the group.
    pub fn used_in_group(&self, group: u32) -> Vec<Range<u64>> {
        let first = self.group_first_block(group);
        let end = first + self.group_len(group);
        let mut used = Vec::new();
        let sb = self.super_blocks_in(group);
        if sb > 0 {
            used.push(first..first + sb);
        }
        if group.is_multiple_of(FLEX_GROUPS) {
            used.extend(self.flex_tables_ranges(group));
        }
        for range in self.file_ranges() {
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

    /// Whether `group` holds nothing but its own backup superblock and descriptors, so the
    /// kernel and e2fsck can rebuild its block bitmap (`BLOCK_UNINIT`). The last group never
    /// qualifies: its bitmap needs padding bits.
    pub fn block_bitmap_derivable(&self, group: u32) -> bool {
        group + 1 != self.groups && !group.is_multiple_of(FLEX_GROUPS) && {
            let first = self.group_first_block(group);
            let end = first + self.group_len(group);
            !self
                .file_ranges()
                .iter()
                .any(|r| r.start < end && r.end > first)
        }
    }

    /// Blocks not available to files: superblocks, descriptors, bitmaps, inode tables and
    /// the journal (not its extent leaf) -- what mke2fs stores in `s_overhead_clusters`.
    pub fn overhead_blocks(&self) -> u64 {
        let supers: u64 = (0..self.groups).map(|g| self.super_blocks_in(g)).sum();
        let journal = self.journal.as_ref().map_or(0, |j| u64::from(j.blocks));
        supers + u64::from(self.groups) * (2 + self.inode_table_blocks) + journal
    }

    /// Total inodes.
    pub fn inodes(&self) -> u64 {
        u64::from(self.groups) * u64::from(self.inodes_per_group)
    }
}

/// Group counts before placement.
struct Geometry {
    blocks: u64,
    groups: u32,
    desc_blocks: u64,
    inodes_per_group: u32,
    inode_table_blocks: u64,
}

impl Geometry {
    fn place(self, reserved_percent: u8, journal: bool) -> Result<Layout, LayoutError> {
        let mut tables = Vec::with_capacity(self.groups as usize);
        let mut data_start = 0;
        for flex_first in (0..self.groups).step_by(FLEX_GROUPS as usize) {
            let members = u64::from((self.groups - flex_first).min(FLEX_GROUPS));
            // Distance between the block bitmaps, inode bitmaps and inode tables: the
            // group count, except that a last flex group of one group keeps the full
            // 16-block spacing (`table_offset` in ext2fs_allocate_group_table()).
            let spacing = if members == 1 {
                u64::from(FLEX_GROUPS)
            } else {
                members
            };
            let group_first = u64::from(flex_first) * BLOCKS_PER_GROUP;
            let group_end = (group_first + BLOCKS_PER_GROUP).min(self.blocks);
            let mut start = group_first;
            if group_has_super(flex_first) {
                start += 1 + self.desc_blocks;
            }
            let end = start + 2 * spacing + members * self.inode_table_blocks;
            // Group 0 also takes the root directory and lost+found, in the first free
            // blocks: the gap after the block bitmaps if it holds them (1 + 4 blocks), else
            // right after the tables.
            let mut needed_end = end;
            if flex_first == 0 {
                if spacing - members > LOST_FOUND_BLOCKS {
                    data_start = start + members;
                } else {
                    data_start = end;
                    needed_end = end + 1 + LOST_FOUND_BLOCKS;
                }
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
            for i in 0..members {
                tables.push(GroupTables {
                    block_bitmap: start + i,
                    inode_bitmap: start + spacing + i,
                    inode_table: start + 2 * spacing + i * self.inode_table_blocks,
                });
            }
        }
        let reserved_blocks = self.blocks * u64::from(reserved_percent) / 100;
        let mut layout = Layout {
            blocks: self.blocks,
            groups: self.groups,
            desc_blocks: self.desc_blocks,
            inodes_per_group: self.inodes_per_group,
            inode_table_blocks: self.inode_table_blocks,
            reserved_blocks,
            tables,
            root_block: data_start,
            lost_found_block: data_start + 1,
            journal: None,
        };
        if journal {
            layout.journal = Some(place_journal(&layout)?);
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

/// Largest device this formatter accepts: descriptor table within 3/4 of a group
/// (beyond that mke2fs switches to `meta_bg`).
pub fn max_bytes() -> u64 {
    MAX_DESC_BLOCKS * DESCS_PER_BLOCK * BLOCKS_PER_GROUP * BLOCK_SIZE
}

/// The group whose start the journal is placed at (`get_midpoint_journal_block()`):
/// the emptier of the two groups at the start of the middle flex group.
fn journal_goal_group(layout: &Layout) -> u32 {
    let middle = u32::try_from(layout.blocks / 2 / BLOCKS_PER_GROUP)
        .expect("group numbers fit in u32 (checked in compute)");
    let last = layout.groups - 1;
    let start = if middle > FLEX_GROUPS {
        middle & !(FLEX_GROUPS - 1)
    } else {
        middle.saturating_sub(1)
    };
    let end = (middle + 1).min(last).max(start);
    let mut best = start;
    for group in start + 1..=end {
        if layout.free_in_group(group) > layout.free_in_group(best) {
            best = group;
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
                let take = (run.end - run.start).min(wanted).min(MAX_EXTENT_LEN);
                match extents.last_mut() {
                    Some(last)
                        if last.start + u64::from(last.len) == run.start
                            && u64::from(last.len) + take <= MAX_EXTENT_LEN =>
                    {
                        last.len += u16::try_from(take).expect("take <= 32768");
                    }
                    _ => extents.push(Extent {
                        logical: u32::try_from(logical).expect("journal < 2^32 blocks"),
                        start: run.start,
                        len: u16::try_from(take).expect("take <= 32768"),
                    }),
                }
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

    #[test]
    fn sparse_super_groups_are_0_1_and_powers_of_3_5_7() {
        let backups: Vec<u32> = (0..100).filter(|&g| group_has_super(g)).collect();
        assert_eq!(backups, vec![0, 1, 3, 5, 7, 9, 25, 27, 49, 81]);
    }

    #[test]
    fn two_tib_largefile4_matches_mke2fs_geometry() {
        // dumpe2fs of `mke2fs -t ext4 -T largefile4` on 2 TiB: 524288 inodes, 32 per
        // group, 2 inode-table blocks, group 0's tables at 257 (1281 with resize_inode).
        let layout = Layout::compute(2 * TIB, LARGEFILE4, 5, false).unwrap();
        assert_eq!(layout.blocks, 536_870_912);
        assert_eq!(layout.groups, 16384);
        assert_eq!(layout.inodes(), 524_288);
        assert_eq!(layout.inodes_per_group, 32);
        assert_eq!(layout.inode_table_blocks, 2);
        assert_eq!(layout.desc_blocks, 256);
        assert_eq!(layout.reserved_blocks, 26_843_545);
        assert_eq!(layout.tables[0].block_bitmap, 257);
        assert_eq!(layout.tables[1].block_bitmap, 258);
        assert_eq!(layout.tables[0].inode_bitmap, 257 + 16);
        assert_eq!(layout.tables[0].inode_table, 257 + 32);
        assert_eq!(layout.tables[15].inode_table, 257 + 32 + 30);
        assert_eq!(layout.tables[16].block_bitmap, 16 * BLOCKS_PER_GROUP);
        assert_eq!(layout.root_block, 257 + 64);
        // 91156 in mke2fs minus 20 backups x 1024 reserved GDT blocks.
        assert_eq!(layout.overhead_blocks(), 91156 - 20 * 1024);
    }

    #[test]
    fn two_tib_journal_is_1_gib_in_the_middle_with_a_leaf_block() {
        let layout = Layout::compute(2 * TIB, LARGEFILE4, 5, true).unwrap();
        let journal = layout.journal.as_ref().unwrap();
        assert_eq!(journal.blocks, 262_144);
        // Group 8192 starts a flex group (tables inside), so 8193 is emptier.
        assert_eq!(journal.extents[0].start, 8193 * BLOCKS_PER_GROUP);
        let total: u64 = journal.extents.iter().map(|e| u64::from(e.len)).sum();
        assert_eq!(total, 262_144);
        assert_eq!(journal.extents.len(), 8);
        assert!(journal.leaf_block.is_some());
        for pair in journal.extents.windows(2) {
            assert_eq!(
                u64::from(pair[0].logical) + u64::from(pair[0].len),
                u64::from(pair[1].logical)
            );
        }
    }

    #[test]
    fn journal_skips_flex_tables_and_backups() {
        // 2 GiB: 16 groups, one flex group; of the middle groups 7, 8, 9 the journal takes
        // 8, the one without a backup superblock.
        let layout = Layout::compute(2 * GIB, LARGEFILE4, 5, true).unwrap();
        let journal = layout.journal.as_ref().unwrap();
        assert_eq!(journal.blocks, 16384);
        assert_eq!(journal.extents[0].start, 8 * BLOCKS_PER_GROUP);
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
        let layout = Layout::compute(GIB + 40 * BLOCK_SIZE, LARGEFILE4, 5, false).unwrap();
        assert_eq!(layout.blocks, GIB / BLOCK_SIZE);
        assert_eq!(layout.groups, 8);
        // ...but a 300-block tail becomes a short ninth group.
        let layout = Layout::compute(GIB + 300 * BLOCK_SIZE, LARGEFILE4, 5, false).unwrap();
        assert_eq!(layout.groups, 9);
        assert_eq!(layout.group_len(8), 300);
    }

    #[test]
    fn eight_mib_is_one_group_with_a_1024_block_journal() {
        let layout = Layout::compute(8 << 20, LARGEFILE4, 5, true).unwrap();
        assert_eq!(layout.groups, 1);
        // As mke2fs: a lone group keeps the 16-block spacing, root and lost+found fill
        // the gap after the block bitmap.
        assert_eq!(layout.tables[0].block_bitmap, 2);
        assert_eq!(layout.tables[0].inode_bitmap, 18);
        assert_eq!(layout.tables[0].inode_table, 34);
        assert_eq!(layout.root_block, 3);
        assert_eq!(layout.lost_found_block, 4);
        assert_eq!(layout.inodes_per_group, 16);
        assert_eq!(layout.journal.as_ref().unwrap().blocks, 1024);
    }

    #[test]
    fn too_small_and_too_large_are_refused() {
        assert!(matches!(
            Layout::compute(64 << 10, LARGEFILE4, 5, false),
            Err(LayoutError::TooSmall { .. })
        ));
        assert!(matches!(
            Layout::compute(4 << 20, LARGEFILE4, 5, true),
            Err(LayoutError::NoRoomForJournal { .. })
        ));
        assert!(Layout::compute(min_bytes(), LARGEFILE4, 5, false).is_ok());
        assert!(matches!(
            Layout::compute(max_bytes() + GIB, LARGEFILE4, 5, false),
            Err(LayoutError::TooLarge { .. })
        ));
    }

    #[test]
    fn inode_count_is_capped_below_2_pow_32() {
        let layout = Layout::compute(64 * TIB, 16384, 5, false).unwrap();
        assert!(layout.inodes() <= u64::from(u32::MAX));
        assert_eq!(layout.inodes_per_group % 16, 0);
    }

    #[test]
    fn flex_tables_never_overlap_and_stay_in_their_first_group() {
        for size in [GIB, 100 * GIB, 3 * GIB + 12345 * BLOCK_SIZE] {
            let layout = Layout::compute(size, 16384, 5, true).unwrap();
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
