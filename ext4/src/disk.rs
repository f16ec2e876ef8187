//! On-disk encodings: superblock, group descriptors, bitmaps, inodes, directory blocks,
//! extent blocks and the jbd2 journal superblock, with their `metadata_csum` checksums.
//!
//! Field offsets are those of `struct ext4_super_block`, `struct ext4_group_desc`,
//! `struct ext4_inode` (fs/ext4/ext4.h) and `journal_superblock_t` (include/linux/jbd2.h).
//! ext4 fields are little-endian, jbd2 fields big-endian.

use crate::layout::{
    Extent, Layout, BLOCK_LEN, BLOCK_SIZE, DESC_LEN, DESC_SIZE, EXTENTS_IN_INODE, EXTENTS_PER_LEAF,
    FIRST_INODE, INODE_LEN, INODE_SIZE,
};

/// `s_inode_size`, `s_desc_size`, `s_blocksize` (jbd2) as stored.
const INODE_SIZE_FIELD: u16 = 256;
const DESC_SIZE_FIELD: u16 = 64;
const JBD2_BLOCK_SIZE_FIELD: u32 = 4096;
const _: () = assert!(INODE_SIZE_FIELD as u64 == INODE_SIZE && DESC_SIZE_FIELD as u64 == DESC_SIZE);
const _: () = assert!(JBD2_BLOCK_SIZE_FIELD as u64 == BLOCK_SIZE);

/// ext4's crc32c: the raw CRC register (no final inversion) continued from `seed`,
/// as `ext4_chksum()` and e2fsprogs' `ext2fs_crc32c_le()` compute it.
pub fn crc32c(seed: u32, data: &[u8]) -> u32 {
    !crc32c::crc32c_append(!seed, data)
}

fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    buf[offset..offset + 2].copy_from_slice(&value.to_le_bytes());
}

fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_le_bytes());
}

fn put_be32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

/// Low 32 bits of a 64-bit on-disk quantity (the `_lo` field).
fn lo32(value: u64) -> u32 {
    (value & 0xffff_ffff) as u32
}

/// High 32 bits of a 64-bit on-disk quantity (the `_hi` field).
fn hi32(value: u64) -> u32 {
    u32::try_from(value >> 32).expect("u64 >> 32 fits in u32")
}

fn lo16(value: u32) -> u16 {
    (value & 0xffff) as u16
}

fn hi16(value: u32) -> u16 {
    u16::try_from(value >> 16).expect("u32 >> 16 fits in u16")
}

/// Feature bits (fs/ext4/ext4.h `EXT4_FEATURE_*`).
pub mod feature {
    /// `has_journal`.
    pub const COMPAT_HAS_JOURNAL: u32 = 0x0004;
    /// `ext_attr`.
    pub const COMPAT_EXT_ATTR: u32 = 0x0008;
    /// `dir_index`.
    pub const COMPAT_DIR_INDEX: u32 = 0x0020;
    /// `sparse_super2`: superblock backups only in the groups `s_backup_bgs` names.
    pub const COMPAT_SPARSE_SUPER2: u32 = 0x0200;
    /// `filetype`.
    pub const INCOMPAT_FILETYPE: u32 = 0x0002;
    /// `meta_bg`: each descriptor block lives in its own meta group.
    pub const INCOMPAT_META_BG: u32 = 0x0010;
    /// `extent`.
    pub const INCOMPAT_EXTENTS: u32 = 0x0040;
    /// `64bit`.
    pub const INCOMPAT_64BIT: u32 = 0x0080;
    /// `flex_bg`.
    pub const INCOMPAT_FLEX_BG: u32 = 0x0200;
    /// `sparse_super`.
    pub const RO_COMPAT_SPARSE_SUPER: u32 = 0x0001;
    /// `large_file`.
    pub const RO_COMPAT_LARGE_FILE: u32 = 0x0002;
    /// `huge_file`.
    pub const RO_COMPAT_HUGE_FILE: u32 = 0x0008;
    /// `dir_nlink`.
    pub const RO_COMPAT_DIR_NLINK: u32 = 0x0020;
    /// `extra_isize`.
    pub const RO_COMPAT_EXTRA_ISIZE: u32 = 0x0040;
    /// `metadata_csum`.
    pub const RO_COMPAT_METADATA_CSUM: u32 = 0x0400;
}

/// Block group flags (`EXT4_BG_*`).
pub mod group_flag {
    /// Inode table and bitmap not initialised.
    pub const INODE_UNINIT: u16 = 0x0001;
    /// Block bitmap not initialised (derivable from the layout).
    pub const BLOCK_UNINIT: u16 = 0x0002;
    /// Inode table known to be zeroed.
    pub const ITABLE_ZEROED: u16 = 0x0004;
}

/// Inode numbers with a fixed role.
pub mod ino {
    /// Root directory.
    pub const ROOT: u32 = 2;
    /// Journal.
    pub const JOURNAL: u32 = 8;
    /// `lost+found` (the first non-reserved inode).
    pub const LOST_FOUND: u32 = super::FIRST_INODE;
}

/// Everything the superblock needs besides the layout.
#[derive(Debug, Clone)]
pub struct SuperParams {
    /// Filesystem UUID.
    pub uuid: [u8; 16],
    /// Directory hash seed.
    pub hash_seed: [u8; 16],
    /// Volume label, at most 16 bytes.
    pub label: Vec<u8>,
    /// Creation time (seconds since the epoch).
    pub now: u32,
    /// Free blocks, summed over all groups.
    pub free_blocks: u64,
    /// The journal inode's `i_block` and size, copied into `s_jnl_blocks`.
    pub journal_backup: Option<[u32; 17]>,
    /// KiB written by the format (`s_kbytes_written`, "Lifetime writes").
    pub kbytes_written: u64,
}

/// `s_checksum` offset: the superblock checksum covers everything before it.
const SB_CHECKSUM_OFFSET: usize = 0x3fc;
/// Superblock size.
pub const SUPERBLOCK_SIZE: usize = 1024;

/// The seed of every `metadata_csum` checksum except the superblock's:
/// crc32c of the filesystem UUID.
pub fn csum_seed(uuid: &[u8; 16]) -> u32 {
    crc32c(!0, uuid)
}

/// Encode the superblock as it is stored in `group` (0 for the primary copy).
pub fn superblock(layout: &Layout, params: &SuperParams, group: u32) -> [u8; SUPERBLOCK_SIZE] {
    let mut sb = [0u8; SUPERBLOCK_SIZE];
    let inodes = u32::try_from(layout.inodes()).expect("inode count capped at 2^32 - 1");
    put_u32(&mut sb, 0x00, inodes);
    put_u32(&mut sb, 0x04, lo32(layout.blocks));
    put_u32(&mut sb, 0x08, lo32(layout.reserved_blocks));
    put_u32(&mut sb, 0x0c, lo32(params.free_blocks));
    put_u32(&mut sb, 0x10, inodes - FIRST_INODE);
    put_u32(&mut sb, 0x14, 0); // s_first_data_block: 0 with 4 KiB blocks
    put_u32(&mut sb, 0x18, 2); // s_log_block_size: 1024 << 2
    put_u32(&mut sb, 0x1c, 2); // s_log_cluster_size
    put_u32(&mut sb, 0x20, 32768); // s_blocks_per_group
    put_u32(&mut sb, 0x24, 32768); // s_clusters_per_group
    put_u32(&mut sb, 0x28, layout.inodes_per_group);
    put_u32(&mut sb, 0x30, params.now); // s_wtime
    put_u16(&mut sb, 0x36, 0xffff); // s_max_mnt_count = -1: no mount-count fsck
    put_u16(&mut sb, 0x38, 0xef53); // s_magic
                                    // s_state: the primary says "cleanly unmounted"; like e2fsprogs, the backups do not,
                                    // so a filesystem restored from a backup superblock gets checked.
    put_u16(&mut sb, 0x3a, u16::from(group == 0));
    put_u16(&mut sb, 0x3c, 1); // s_errors: continue
    put_u32(&mut sb, 0x40, params.now); // s_lastcheck
    put_u32(&mut sb, 0x4c, 1); // s_rev_level: dynamic
    put_u32(&mut sb, 0x54, FIRST_INODE);
    put_u16(&mut sb, 0x58, INODE_SIZE_FIELD);
    put_u16(
        &mut sb,
        0x5a,
        u16::try_from(group).unwrap_or(u16::MAX), // s_block_group_nr saturates, as in e2fsprogs
    );
    let mut compat =
        feature::COMPAT_EXT_ATTR | feature::COMPAT_DIR_INDEX | feature::COMPAT_SPARSE_SUPER2;
    if params.journal_backup.is_some() {
        compat |= feature::COMPAT_HAS_JOURNAL;
    }
    put_u32(&mut sb, 0x5c, compat);
    let mut incompat = feature::INCOMPAT_FILETYPE
        | feature::INCOMPAT_EXTENTS
        | feature::INCOMPAT_64BIT
        | feature::INCOMPAT_FLEX_BG;
    if layout.meta_bg {
        incompat |= feature::INCOMPAT_META_BG; // s_first_meta_bg stays 0: all of it
    }
    put_u32(&mut sb, 0x60, incompat);
    put_u32(
        &mut sb,
        0x64,
        feature::RO_COMPAT_SPARSE_SUPER
            | feature::RO_COMPAT_LARGE_FILE
            | feature::RO_COMPAT_HUGE_FILE
            | feature::RO_COMPAT_DIR_NLINK
            | feature::RO_COMPAT_EXTRA_ISIZE
            | feature::RO_COMPAT_METADATA_CSUM,
    );
    sb[0x68..0x78].copy_from_slice(&params.uuid);
    sb[0x78..0x78 + params.label.len()].copy_from_slice(&params.label);
    if params.journal_backup.is_some() {
        put_u32(&mut sb, 0xe0, ino::JOURNAL); // s_journal_inum
    }
    sb[0xec..0xfc].copy_from_slice(&params.hash_seed);
    sb[0xfc] = 1; // s_def_hash_version: half_md4
    if params.journal_backup.is_some() {
        sb[0xfd] = 1; // s_jnl_backup_type: EXT3_JNL_BACKUP_BLOCKS
    }
    put_u16(&mut sb, 0xfe, DESC_SIZE_FIELD);
    put_u32(&mut sb, 0x100, 0x0004 | 0x0008); // s_default_mount_opts: user_xattr, acl
    put_u32(&mut sb, 0x108, params.now); // s_mkfs_time
    if let Some(backup) = &params.journal_backup {
        for (i, word) in backup.iter().enumerate() {
            put_u32(&mut sb, 0x10c + 4 * i, *word);
        }
    }
    put_u32(&mut sb, 0x150, hi32(layout.blocks));
    put_u32(&mut sb, 0x154, hi32(layout.reserved_blocks));
    put_u32(&mut sb, 0x158, hi32(params.free_blocks));
    put_u16(&mut sb, 0x15c, 32); // s_min_extra_isize
    put_u16(&mut sb, 0x15e, 32); // s_want_extra_isize
                                 // s_flags: EXT2_FLAGS_SIGNED_HASH, what mke2fs records on x86 (signed char); the
                                 // kernel and e2fsck follow the flag, so the choice only has to be recorded.
    put_u32(&mut sb, 0x160, 0x0001);
    sb[0x174] = u8::try_from(layout.flex_groups.trailing_zeros()).expect("log2 of a u32 < 32");
    sb[0x175] = 1; // s_checksum_type: crc32c
    sb[0x178..0x180].copy_from_slice(&params.kbytes_written.to_le_bytes());
    put_u32(
        &mut sb,
        0x248,
        u32::try_from(layout.overhead_blocks()).unwrap_or(0), // s_overhead_clusters; 0 = "compute it"
    );
    put_u32(&mut sb, 0x24c, layout.backup_groups[0]); // s_backup_bgs
    put_u32(&mut sb, 0x250, layout.backup_groups[1]);
    let checksum = crc32c(!0, &sb[..SB_CHECKSUM_OFFSET]);
    put_u32(&mut sb, SB_CHECKSUM_OFFSET, checksum);
    sb
}

/// One group descriptor before checksumming.
#[derive(Debug, Clone, Copy)]
pub struct GroupDesc {
    /// Block bitmap location.
    pub block_bitmap: u64,
    /// Inode bitmap location.
    pub inode_bitmap: u64,
    /// Inode table location.
    pub inode_table: u64,
    /// Free blocks in the group.
    pub free_blocks: u32,
    /// Free inodes in the group.
    pub free_inodes: u32,
    /// Directories in the group.
    pub used_dirs: u32,
    /// `EXT4_BG_*` flags.
    pub flags: u16,
    /// crc32c of the block bitmap (0 when `BLOCK_UNINIT`).
    pub block_bitmap_csum: u32,
    /// crc32c of the inode bitmap (0 when `INODE_UNINIT`).
    pub inode_bitmap_csum: u32,
    /// Inodes at the end of the table never used (`bg_itable_unused`).
    pub itable_unused: u32,
}

/// Encode `desc` for group `group` into 64 bytes at `out`, with its checksum.
pub fn group_desc(out: &mut [u8], desc: &GroupDesc, group: u32, seed: u32) {
    put_u32(out, 0x00, lo32(desc.block_bitmap));
    put_u32(out, 0x04, lo32(desc.inode_bitmap));
    put_u32(out, 0x08, lo32(desc.inode_table));
    put_u16(out, 0x0c, lo16(desc.free_blocks));
    put_u16(out, 0x0e, lo16(desc.free_inodes));
    put_u16(out, 0x10, lo16(desc.used_dirs));
    put_u16(out, 0x12, desc.flags);
    put_u16(out, 0x18, lo16(desc.block_bitmap_csum));
    put_u16(out, 0x1a, lo16(desc.inode_bitmap_csum));
    put_u16(out, 0x1c, lo16(desc.itable_unused));
    put_u16(out, 0x1e, 0); // bg_checksum, computed below over the zeroed field
    put_u32(out, 0x20, hi32(desc.block_bitmap));
    put_u32(out, 0x24, hi32(desc.inode_bitmap));
    put_u32(out, 0x28, hi32(desc.inode_table));
    put_u16(out, 0x2c, hi16(desc.free_blocks));
    put_u16(out, 0x2e, hi16(desc.free_inodes));
    put_u16(out, 0x30, hi16(desc.used_dirs));
    put_u16(out, 0x32, hi16(desc.itable_unused));
    put_u16(out, 0x38, hi16(desc.block_bitmap_csum));
    put_u16(out, 0x3a, hi16(desc.inode_bitmap_csum));
    let crc = crc32c(crc32c(seed, &group.to_le_bytes()), &out[..DESC_LEN]);
    put_u16(out, 0x1e, lo16(crc));
}

/// crc32c of a block bitmap (the whole 4 KiB: 32768 blocks per group).
pub fn block_bitmap_csum(bitmap: &[u8], seed: u32) -> u32 {
    crc32c(seed, bitmap)
}

/// crc32c of an inode bitmap: only the bits of `inodes_per_group` inodes count.
pub fn inode_bitmap_csum(bitmap: &[u8], inodes_per_group: u32, seed: u32) -> u32 {
    crc32c(seed, &bitmap[..inodes_per_group as usize / 8])
}

/// Set bits `range` in `bitmap`.
pub fn set_bits(bitmap: &mut [u8], range: std::ops::Range<usize>) {
    for bit in range {
        bitmap[bit / 8] |= 1 << (bit % 8);
    }
}

/// The per-inode checksum seed: crc32c of inode number and generation.
fn inode_seed(seed: u32, inode: u32, generation: u32) -> u32 {
    crc32c(
        crc32c(seed, &inode.to_le_bytes()),
        &generation.to_le_bytes(),
    )
}

/// `i_flags`: the inode maps its blocks with extents.
const EXTENTS_FL: u32 = 0x0008_0000;
/// Extent header magic.
const EXTENT_MAGIC: u16 = 0xf30a;
/// `i_extra_isize` = `s_want_extra_isize`.
const EXTRA_ISIZE: u16 = 32;
/// Offsets of the split inode checksum.
const INODE_CSUM_LO: usize = 0x7c;
const INODE_CSUM_HI: usize = 0x82;

/// What an in-use inode looks like.
#[derive(Debug, Clone)]
pub struct InodeSpec {
    /// `i_mode` (type and permissions).
    pub mode: u16,
    /// `i_links_count`.
    pub links: u16,
    /// File size in bytes.
    pub size: u64,
    /// Blocks used, data plus extent tree, in filesystem blocks.
    pub blocks: u64,
    /// The 60 bytes of `i_block`: extent header plus up to 4 extents or 1 index.
    pub i_block: [u8; 60],
    /// atime/ctime/mtime/crtime.
    pub time: u32,
}

/// Encode inode number `inode`; `spec` `None` writes the all-zero inode of an unused
/// reserved number (still checksummed, as e2fsck checks every reserved inode).
pub fn inode(inode: u32, spec: Option<&InodeSpec>, seed: u32) -> [u8; INODE_LEN] {
    let mut raw = [0u8; INODE_LEN];
    if let Some(spec) = spec {
        put_u16(&mut raw, 0x00, spec.mode);
        put_u32(&mut raw, 0x04, lo32(spec.size));
        put_u32(&mut raw, 0x08, spec.time); // atime
        put_u32(&mut raw, 0x0c, spec.time); // ctime
        put_u32(&mut raw, 0x10, spec.time); // mtime
        put_u16(&mut raw, 0x1a, spec.links);
        let sectors = spec.blocks * (BLOCK_SIZE / tosskey_sysutil::SECTOR_SIZE);
        put_u32(&mut raw, 0x1c, lo32(sectors));
        put_u32(&mut raw, 0x20, EXTENTS_FL);
        raw[0x28..0x64].copy_from_slice(&spec.i_block);
        put_u32(&mut raw, 0x6c, hi32(spec.size));
        put_u16(
            &mut raw,
            0x74,
            u16::try_from(sectors >> 32).expect("huge_file: i_blocks < 2^48"),
        );
        put_u16(&mut raw, 0x80, EXTRA_ISIZE);
        put_u32(&mut raw, 0x90, spec.time); // crtime
    }
    let crc = crc32c(inode_seed(seed, inode, 0), &raw);
    put_u16(&mut raw, INODE_CSUM_LO, lo16(crc));
    if spec.is_some() {
        put_u16(&mut raw, INODE_CSUM_HI, hi16(crc));
    }
    raw
}

fn extent_header(buf: &mut [u8], entries: usize, max: usize, depth: u16) {
    put_u16(buf, 0, EXTENT_MAGIC);
    put_u16(buf, 2, u16::try_from(entries).expect("extent count fits"));
    put_u16(buf, 4, u16::try_from(max).expect("extent capacity fits"));
    put_u16(buf, 6, depth);
}

fn extent_entry(buf: &mut [u8], extent: &Extent) {
    put_u32(buf, 0, extent.logical);
    put_u16(buf, 4, extent.len);
    put_u16(
        buf,
        6,
        u16::try_from(extent.start >> 32).expect("block numbers < 2^48"),
    );
    put_u32(buf, 8, lo32(extent.start));
}

/// `i_block` mapping `extents` directly (at most 4).
pub fn i_block_with_extents(extents: &[Extent]) -> [u8; 60] {
    assert!(extents.len() <= EXTENTS_IN_INODE);
    let mut i_block = [0u8; 60];
    extent_header(&mut i_block, extents.len(), EXTENTS_IN_INODE, 0);
    for (i, extent) in extents.iter().enumerate() {
        extent_entry(&mut i_block[12 + 12 * i..24 + 12 * i], extent);
    }
    i_block
}

/// `i_block` of a depth-1 tree whose single leaf is block `leaf`.
pub fn i_block_with_leaf(leaf: u64) -> [u8; 60] {
    let mut i_block = [0u8; 60];
    extent_header(&mut i_block, 1, EXTENTS_IN_INODE, 1);
    put_u32(&mut i_block, 12, 0); // ei_block: covers the file from logical block 0
    put_u32(&mut i_block, 16, lo32(leaf));
    put_u16(
        &mut i_block,
        20,
        u16::try_from(leaf >> 32).expect("block numbers < 2^48"),
    );
    i_block
}

/// An extent leaf block of inode `inode` holding `extents`, with its tail checksum.
pub fn extent_leaf(inode: u32, extents: &[Extent], seed: u32) -> Vec<u8> {
    assert!(extents.len() <= EXTENTS_PER_LEAF);
    let mut block = vec![0u8; BLOCK_LEN];
    extent_header(&mut block, extents.len(), EXTENTS_PER_LEAF, 0);
    for (i, extent) in extents.iter().enumerate() {
        extent_entry(&mut block[12 + 12 * i..24 + 12 * i], extent);
    }
    let tail = 12 + 12 * EXTENTS_PER_LEAF;
    let crc = crc32c(inode_seed(seed, inode, 0), &block[..tail]);
    put_u32(&mut block, tail, crc);
    block
}

/// Directory entry file type for directories (`EXT4_FT_DIR`).
const FT_DIR: u8 = 2;
/// Size of the checksum tail (`struct ext4_dir_entry_tail`) at the end of each block.
const DIR_TAIL: usize = 12;
/// [`DIR_TAIL`] as its `rec_len`.
const DIR_TAIL_REC_LEN: u16 = 12;

/// A directory block of inode `dir` with `entries` (inode, name) — all directories — the
/// last one stretched to the checksum tail. No entries: one empty record spanning the block.
pub fn dir_block(dir: u32, entries: &[(u32, &[u8])], seed: u32) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_LEN];
    let end = BLOCK_LEN - DIR_TAIL;
    let mut offset = 0;
    if entries.is_empty() {
        put_u16(&mut block, 4, u16::try_from(end).expect("4084 fits"));
    }
    for (i, (inode, name)) in entries.iter().enumerate() {
        let natural = (8 + name.len()).next_multiple_of(4);
        let rec_len = if i + 1 == entries.len() {
            end - offset
        } else {
            natural
        };
        put_u32(&mut block, offset, *inode);
        put_u16(
            &mut block,
            offset + 4,
            u16::try_from(rec_len).expect("rec_len < 4096"),
        );
        block[offset + 6] = u8::try_from(name.len()).expect("names are short");
        block[offset + 7] = FT_DIR;
        block[offset + 8..offset + 8 + name.len()].copy_from_slice(name);
        offset += rec_len;
    }
    // Tail: inode 0, rec_len 12, name_len 0, file type 0xde, checksum.
    put_u16(&mut block, end + 4, DIR_TAIL_REC_LEN);
    block[end + 7] = 0xde;
    let crc = crc32c(inode_seed(seed, dir, 0), &block[..end]);
    put_u32(&mut block, end + 8, crc);
    block
}

/// The jbd2 superblock (v2, empty journal, sequence 1) for a journal of `blocks` blocks,
/// filling the journal's first block. Matches `ext2fs_create_journal_superblock2()`.
pub fn journal_superblock(blocks: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_LEN];
    put_be32(&mut block, 0x00, 0xc03b_3998); // h_magic
    put_be32(&mut block, 0x04, 4); // h_blocktype: superblock v2
    put_be32(&mut block, 0x0c, JBD2_BLOCK_SIZE_FIELD); // s_blocksize
    put_be32(&mut block, 0x10, blocks); // s_maxlen
    put_be32(&mut block, 0x14, 1); // s_first
    put_be32(&mut block, 0x18, 1); // s_sequence
    block[0x30..0x40].copy_from_slice(uuid); // s_uuid
    put_be32(&mut block, 0x40, 1); // s_nr_users
    block
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc32c_matches_the_ext4_convention() {
        // ext4_chksum(~0, "123456789") is the CRC-32C check value before its final
        // inversion: !0xe3069283.
        assert_eq!(crc32c(!0, b"123456789"), !0xe306_9283);
        // Continuing is the same as one pass.
        assert_eq!(
            crc32c(crc32c(!0, b"1234"), b"56789"),
            crc32c(!0, b"123456789")
        );
    }

    #[test]
    fn dir_block_records_chain_to_the_tail() {
        let block = dir_block(2, &[(2, b"."), (2, b".."), (11, b"lost+found")], 7);
        let mut offset = 0;
        let mut names = Vec::new();
        while offset < 4096 - 12 {
            let rec_len = usize::from(u16::from_le_bytes([block[offset + 4], block[offset + 5]]));
            let name_len = usize::from(block[offset + 6]);
            names.push(block[offset + 8..offset + 8 + name_len].to_vec());
            offset += rec_len;
        }
        assert_eq!(offset, 4096 - 12);
        assert_eq!(
            names,
            vec![b".".to_vec(), b"..".to_vec(), b"lost+found".to_vec()]
        );
        assert_eq!(block[4096 - 12 + 7], 0xde);
    }

    #[test]
    fn group_desc_checksum_covers_the_group_number() {
        let desc = GroupDesc {
            block_bitmap: 1 << 33,
            inode_bitmap: 2,
            inode_table: 3,
            free_blocks: 100,
            free_inodes: 5,
            used_dirs: 0,
            flags: group_flag::INODE_UNINIT,
            block_bitmap_csum: 0,
            inode_bitmap_csum: 0,
            itable_unused: 5,
        };
        let mut a = [0u8; 64];
        let mut b = [0u8; 64];
        group_desc(&mut a, &desc, 1, 42);
        group_desc(&mut b, &desc, 2, 42);
        assert_eq!(a[..0x1e], b[..0x1e]);
        assert_ne!(a[0x1e..0x20], b[0x1e..0x20]);
        assert_eq!(u32::from_le_bytes(a[0x20..0x24].try_into().unwrap()), 2);
    }
}
