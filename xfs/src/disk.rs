//! On-disk encodings of a v5 XFS: superblock, AGF, AGI, AGFL, short-form btree blocks,
//! inodes and the log's unmount record, with their CRCs.
//!
//! Offsets are those of `struct xfs_dsb`, `xfs_agf`, `xfs_agi`, `xfs_agfl`,
//! `xfs_btree_block` (short form), `xfs_dinode` (fs/xfs/libxfs/xfs_format.h) and
//! `xlog_rec_header`/`xlog_op_header` (xfs_log_format.h). Everything is big-endian except
//! the CRCs, which XFS stores little-endian.

use crate::geometry::{
    inopblog, Extent, Geometry, BLOCK_LOG, BLOCK_SIZE, CHUNK_BLOCKS, INODES_PER_CHUNK, INODE_SIZE,
};

/// `NULLAGBLOCK` / `NULLAGINO`.
const NULL32: u32 = u32::MAX;
/// `NULLFSINO`.
const NULL64: u64 = u64::MAX;

fn put_u16(buf: &mut [u8], offset: usize, value: u16) {
    buf[offset..offset + 2].copy_from_slice(&value.to_be_bytes());
}

fn put_u32(buf: &mut [u8], offset: usize, value: u32) {
    buf[offset..offset + 4].copy_from_slice(&value.to_be_bytes());
}

fn put_u64(buf: &mut [u8], offset: usize, value: u64) {
    buf[offset..offset + 8].copy_from_slice(&value.to_be_bytes());
}

/// XFS's metadata CRC: CRC-32C of `buf` with its 4-byte CRC field at `offset` zeroed,
/// stored little-endian (`xfs_update_cksum()`).
pub fn set_crc(buf: &mut [u8], offset: usize) {
    buf[offset..offset + 4].fill(0);
    let crc = crc32c::crc32c(buf);
    buf[offset..offset + 4].copy_from_slice(&crc.to_le_bytes());
}

/// Superblock version bits (`XFS_SB_VERSION_*`).
mod version {
    pub const V5: u16 = 5;
    pub const NLINK: u16 = 0x0020;
    pub const ALIGN: u16 = 0x0080;
    pub const DALIGN: u16 = 0x0100;
    pub const LOGV2: u16 = 0x0400;
    pub const SECTOR: u16 = 0x0800;
    pub const EXTFLG: u16 = 0x1000;
    pub const DIRV2: u16 = 0x2000;
    pub const MOREBITS: u16 = 0x8000;
}

/// `sb_features2`: lazy superblock counters, attr2, 32-bit project ids, CRCs.
const FEATURES2: u32 = 0x0002 | 0x0008 | 0x0080 | 0x0100;
/// `sb_features_ro_compat`: finobt, reflink, inobtcount.
const RO_COMPAT: u32 = 0x0001 | 0x0004 | 0x0008;
/// `sb_features_incompat`: ftype, sparse inodes, bigtime.
const INCOMPAT: u32 = 0x0001 | 0x0002 | 0x0008;
/// Offset of `sb_crc`.
const SB_CRC: usize = 224;

/// Which copy of the superblock.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SuperCopy {
    /// AG 0's, complete.
    Primary,
    /// Another AG's: like mkfs.xfs, written before the root inodes existed, so without
    /// the realtime inodes and inode counts, and marked in progress; only the copies in
    /// the last AG and the middle one (`(agcount - 1) / 2`) name the root inode, which
    /// mkfs.xfs adds "for luck" (xfs_repair looks for the root there).
    Secondary {
        /// The AG it is in.
        agno: u32,
    },
}

/// The identity fields of a new filesystem.
#[derive(Debug, Clone)]
pub struct Identity {
    /// `sb_uuid` (also stamped into every metadata block).
    pub uuid: [u8; 16],
    /// `sb_fname`, at most 12 bytes.
    pub label: Vec<u8>,
    /// Creation time as (seconds since the epoch, nanoseconds).
    pub now: (u64, u32),
}

/// The superblock sector.
pub fn superblock(g: &Geometry, id: &Identity, copy: SuperCopy) -> Vec<u8> {
    let mut sb = vec![0u8; g.sector_size as usize];
    put_u32(&mut sb, 0, 0x5846_5342); // "XFSB"
    put_u32(&mut sb, 4, BLOCK_SIZE);
    put_u64(&mut sb, 8, g.dblocks);
    // sb_rblocks, sb_rextents: no realtime device.
    sb[32..48].copy_from_slice(&id.uuid);
    put_u64(&mut sb, 48, g.log_start_fsb());
    let (rootino, rbmino, rsumino) = match copy {
        SuperCopy::Primary => (g.root_ino(), g.root_ino() + 1, g.root_ino() + 2),
        SuperCopy::Secondary { agno }
            if agno + 1 == g.agcount || (g.agcount > 2 && agno == (g.agcount - 1) / 2) =>
        {
            (g.root_ino(), NULL64, NULL64)
        }
        SuperCopy::Secondary { .. } => (NULL64, NULL64, NULL64),
    };
    put_u64(&mut sb, 56, rootino);
    put_u64(&mut sb, 64, rbmino);
    put_u64(&mut sb, 72, rsumino);
    put_u32(&mut sb, 80, 1); // sb_rextsize: one block
    put_u32(&mut sb, 84, g.agblocks);
    put_u32(&mut sb, 88, g.agcount);
    put_u32(&mut sb, 96, g.log_blocks);
    let mut versionnum = version::V5
        | version::NLINK
        | version::ALIGN
        | version::LOGV2
        | version::EXTFLG
        | version::DIRV2
        | version::MOREBITS;
    if g.stripe.is_some() {
        versionnum |= version::DALIGN;
    }
    if g.sector_size > 512 {
        versionnum |= version::SECTOR;
    }
    put_u16(&mut sb, 100, versionnum);
    put_u16(&mut sb, 102, u16::try_from(g.sector_size).expect("<= 4096"));
    put_u16(&mut sb, 104, u16::try_from(INODE_SIZE).expect("512"));
    put_u16(
        &mut sb,
        106,
        u16::try_from(BLOCK_SIZE / INODE_SIZE).expect("8"),
    );
    sb[108..108 + id.label.len()].copy_from_slice(&id.label);
    sb[120] = BLOCK_LOG;
    sb[121] = u8::try_from(g.sector_size.ilog2()).expect("< 256");
    sb[122] = u8::try_from(INODE_SIZE.ilog2()).expect("< 256");
    sb[123] = inopblog();
    sb[124] = g.agblklog;
    // sb_rextslog 0.
    sb[126] = u8::from(copy != SuperCopy::Primary); // sb_inprogress
    sb[127] = g.imax_pct;
    if copy == SuperCopy::Primary {
        put_u64(&mut sb, 128, u64::from(INODES_PER_CHUNK)); // sb_icount
        put_u64(&mut sb, 136, u64::from(INODES_PER_CHUNK - 3)); // sb_ifree
        put_u64(&mut sb, 144, g.fdblocks());
    } else {
        put_u64(&mut sb, 144, g.fdblocks_before_inodes());
    }
    // sb_frextents 0; quota inodes 0, as mkfs.xfs leaves them.
    put_u32(&mut sb, 180, CHUNK_BLOCKS); // sb_inoalignmt: a full chunk (sparse inodes)
    if let Some(stripe) = g.stripe {
        put_u32(&mut sb, 184, stripe.unit);
        put_u32(&mut sb, 188, stripe.width);
    }
    // sb_dirblklog 0: directory blocks are filesystem blocks.
    if g.sector_size > 512 {
        sb[193] = u8::try_from(g.sector_size.ilog2()).expect("< 256"); // sb_logsectlog
        put_u16(&mut sb, 194, u16::try_from(g.sector_size).expect("<= 4096"));
    }
    let log_sunit_bytes = if g.log_sunit > 0 {
        g.log_sunit * BLOCK_SIZE
    } else {
        1
    };
    put_u32(&mut sb, 196, log_sunit_bytes);
    put_u32(&mut sb, 200, FEATURES2);
    put_u32(&mut sb, 204, FEATURES2); // sb_bad_features2 mirrors it
    put_u32(&mut sb, 212, RO_COMPAT);
    put_u32(&mut sb, 216, INCOMPAT);
    // sb_spino_align: sparse chunks align to the inode cluster (8 KiB of 256-byte
    // inodes scaled to 512-byte ones: 16 KiB, 4 blocks).
    put_u32(&mut sb, 228, (8192 * (INODE_SIZE / 256)) / BLOCK_SIZE);
    // sb_pquotino 0, sb_lsn 0, sb_meta_uuid zero (it is sb_uuid).
    set_crc(&mut sb, SB_CRC);
    sb
}

/// The AGF sector of AG `agno`.
pub fn agf(g: &Geometry, agno: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut agf = vec![0u8; g.sector_size as usize];
    let free = g.free_extents(agno);
    let roots = BtreeRoots::of(g);
    put_u32(&mut agf, 0, 0x5841_4746); // "XAGF"
    put_u32(&mut agf, 4, 1);
    put_u32(&mut agf, 8, agno);
    put_u32(&mut agf, 12, g.ag_len(agno));
    put_u32(&mut agf, 16, roots.bno);
    put_u32(&mut agf, 20, roots.cnt);
    put_u32(&mut agf, 28, 1); // bnobt level
    put_u32(&mut agf, 32, 1); // cntbt level
                              // The free list holds entries 1..=4: mkfs.xfs 6.1 starts it at index 1.
    put_u32(&mut agf, 40, 1); // agf_flfirst
    put_u32(&mut agf, 44, crate::geometry::AGFL_BLOCKS); // agf_fllast
    put_u32(&mut agf, 48, crate::geometry::AGFL_BLOCKS); // agf_flcount
    let free_blocks: u64 = free.iter().map(|e| u64::from(e.len)).sum();
    put_u32(
        &mut agf,
        52,
        u32::try_from(free_blocks).expect("within one AG"),
    );
    put_u32(&mut agf, 56, free.iter().map(|e| e.len).max().unwrap_or(0));
    agf[64..80].copy_from_slice(uuid);
    put_u32(&mut agf, 84, 1); // agf_refcount_blocks
    put_u32(&mut agf, 88, roots.refcount);
    put_u32(&mut agf, 92, 1); // agf_refcount_level
    set_crc(&mut agf, 216);
    agf
}

/// The AGI sector of AG `agno` (AG 0 holds the one inode chunk).
pub fn agi(g: &Geometry, agno: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut agi = vec![0u8; g.sector_size as usize];
    let roots = BtreeRoots::of(g);
    put_u32(&mut agi, 0, 0x5841_4749); // "XAGI"
    put_u32(&mut agi, 4, 1);
    put_u32(&mut agi, 8, agno);
    put_u32(&mut agi, 12, g.ag_len(agno));
    let (count, free, newino) = if agno == 0 {
        (
            INODES_PER_CHUNK,
            INODES_PER_CHUNK - 3,
            u32::try_from(g.root_ino()).expect("AG 0 inode numbers are AG inode numbers"),
        )
    } else {
        (0, 0, NULL32)
    };
    put_u32(&mut agi, 16, count);
    put_u32(&mut agi, 20, roots.ino);
    put_u32(&mut agi, 24, 1); // inobt level
    put_u32(&mut agi, 28, free);
    put_u32(&mut agi, 32, newino);
    put_u32(&mut agi, 36, NULL32); // agi_dirino
    for bucket in 0..64 {
        put_u32(&mut agi, 40 + 4 * bucket, NULL32); // agi_unlinked
    }
    agi[296..312].copy_from_slice(uuid);
    put_u32(&mut agi, 328, roots.fino);
    put_u32(&mut agi, 332, 1); // finobt level
    put_u32(&mut agi, 336, 1); // agi_iblocks (inobtcount)
    put_u32(&mut agi, 340, 1); // agi_fblocks
    set_crc(&mut agi, 312);
    agi
}

/// The AGFL sector of AG `agno`: entries 1..=4 name the free-list blocks, the rest are
/// `NULLAGBLOCK`.
pub fn agfl(g: &Geometry, agno: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut agfl = vec![0xffu8; g.sector_size as usize];
    put_u32(&mut agfl, 0, 0x5841_464c); // "XAFL"
    put_u32(&mut agfl, 4, agno);
    agfl[8..24].copy_from_slice(uuid);
    put_u64(&mut agfl, 24, 0); // lsn
    put_u32(&mut agfl, 32, 0);
    for (i, block) in g.agfl_blocks(agno).into_iter().enumerate() {
        put_u32(&mut agfl, 36 + 4 * (i + 1), block);
    }
    set_crc(&mut agfl, 32);
    agfl
}

/// AG block numbers of the btree roots: right after the AG headers, in mkfs.xfs order.
#[derive(Debug, Clone, Copy)]
struct BtreeRoots {
    bno: u32,
    cnt: u32,
    ino: u32,
    fino: u32,
    refcount: u32,
}

impl BtreeRoots {
    fn of(g: &Geometry) -> BtreeRoots {
        let first = g.header_blocks();
        BtreeRoots {
            bno: first,
            cnt: first + 1,
            ino: first + 2,
            fino: first + 3,
            refcount: first + 4,
        }
    }
}

/// An empty short-form v5 btree leaf with `magic` at AG block `agbno` of AG `agno`.
fn btree_leaf(g: &Geometry, magic: u32, agno: u32, agbno: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let mut block = vec![0u8; BLOCK_SIZE as usize];
    put_u32(&mut block, 0, magic);
    // bb_level 0, bb_numrecs set by the caller.
    put_u32(&mut block, 8, NULL32); // leftsib
    put_u32(&mut block, 12, NULL32); // rightsib
    put_u64(&mut block, 16, g.daddr(agno, agbno));
    block[32..48].copy_from_slice(uuid);
    put_u32(&mut block, 48, agno); // owner
    block
}

/// Offset of the first record in a short-form v5 btree block.
const BTREE_HEADER: usize = 56;

fn finish_leaf(block: &mut [u8], records: usize) {
    put_u16(block, 6, u16::try_from(records).expect("one leaf"));
    set_crc(block, 52);
}

/// The five btree root blocks of AG `agno`, contiguous: bnobt, cntbt, inobt, finobt,
/// refcountbt.
pub fn btree_roots(g: &Geometry, agno: u32, uuid: &[u8; 16]) -> Vec<u8> {
    let roots = BtreeRoots::of(g);
    let free = g.free_extents(agno);
    let mut by_size = free.clone();
    by_size.sort_by_key(|e| (e.len, e.start));
    let mut out = Vec::with_capacity(5 * BLOCK_SIZE as usize);
    for (magic, agbno, records) in [
        (0x4142_3342, roots.bno, &free),    // "AB3B"
        (0x4142_3343, roots.cnt, &by_size), // "AB3C"
    ] {
        let mut block = btree_leaf(g, magic, agno, agbno, uuid);
        for (i, Extent { start, len }) in records.iter().enumerate() {
            put_u32(&mut block, BTREE_HEADER + 8 * i, *start);
            put_u32(&mut block, BTREE_HEADER + 8 * i + 4, *len);
        }
        finish_leaf(&mut block, records.len());
        out.extend_from_slice(&block);
    }
    for (magic, agbno) in [(0x4941_4233, roots.ino), (0x4649_4233, roots.fino)] {
        // "IAB3", "FIB3": AG 0's chunk has inodes 0..3 in use, the rest free.
        let mut block = btree_leaf(g, magic, agno, agbno, uuid);
        let records = if agno == 0 {
            let startino =
                u32::try_from(g.root_ino()).expect("AG 0 inode numbers are AG inode numbers");
            put_u32(&mut block, BTREE_HEADER, startino);
            put_u16(&mut block, BTREE_HEADER + 4, 0); // ir_holemask: no holes
            block[BTREE_HEADER + 6] = u8::try_from(INODES_PER_CHUNK).expect("64");
            block[BTREE_HEADER + 7] = u8::try_from(INODES_PER_CHUNK - 3).expect("61");
            put_u64(&mut block, BTREE_HEADER + 8, !0b111);
            1
        } else {
            0
        };
        finish_leaf(&mut block, records);
        out.extend_from_slice(&block);
    }
    let mut block = btree_leaf(g, 0x5233_4643, agno, roots.refcount, uuid); // "R3FC"
    finish_leaf(&mut block, 0);
    out.extend_from_slice(&block);
    out
}

/// Inode formats (`XFS_DINODE_FMT_*`).
const FMT_LOCAL: u8 = 1;
const FMT_EXTENTS: u8 = 2;
/// `XFS_DIFLAG_NEWRTBM`: the realtime bitmap inode's marker.
const DIFLAG_NEWRTBM: u16 = 0x0004;
/// `XFS_DIFLAG2_BIGTIME`.
const DIFLAG2_BIGTIME: u64 = 0x0008;

/// A bigtime timestamp: nanoseconds since 1901-12-13 (the epoch less 2^31 s).
fn bigtime(seconds: u64, nanos: u32) -> u64 {
    (seconds + (1 << 31)) * 1_000_000_000 + u64::from(nanos)
}

/// The first inode chunk (8 blocks): root directory, realtime bitmap and summary
/// inodes, and 61 free inodes, as mkfs.xfs 6.1 writes them.
pub fn inode_chunk(g: &Geometry, id: &Identity) -> Vec<u8> {
    let mut chunk = vec![0u8; (CHUNK_BLOCKS * BLOCK_SIZE) as usize];
    let root = g.root_ino();
    for (i, inode) in chunk.chunks_exact_mut(INODE_SIZE as usize).enumerate() {
        let ino = root + u64::try_from(i).expect("< 64");
        put_u16(inode, 0, 0x494e); // "IN"
        inode[4] = 3; // di_version
        put_u32(inode, 96, NULL32); // di_next_unlinked
        put_u64(inode, 152, ino);
        inode[160..176].copy_from_slice(&id.uuid);
        let in_use = match i {
            0 => Some((0o040_755, FMT_LOCAL, 2, 0)),
            1 => Some((0o100_000, FMT_EXTENTS, 1, DIFLAG_NEWRTBM)),
            2 => Some((0o100_000, FMT_EXTENTS, 1, 0)),
            _ => None,
        };
        if let Some((mode, format, nlink, flags)) = in_use {
            put_u16(inode, 2, mode);
            inode[5] = format;
            put_u32(inode, 16, nlink);
            // atime is the epoch, as mkfs.xfs leaves it; mtime, ctime, crtime now.
            let now = bigtime(id.now.0, id.now.1);
            put_u64(inode, 32, bigtime(0, 0));
            put_u64(inode, 40, now);
            put_u64(inode, 48, now);
            put_u64(inode, 144, now);
            inode[83] = FMT_EXTENTS; // di_aformat
            put_u16(inode, 90, flags);
            put_u64(inode, 104, 2); // di_changecount
            put_u64(inode, 120, DIFLAG2_BIGTIME);
            if i == 0 {
                // Short-form directory: no entries, parent is itself (4-byte inode number).
                put_u64(inode, 56, 6); // di_size
                inode[176] = 0; // count
                inode[177] = 0; // i8count
                put_u32(
                    inode,
                    178,
                    u32::try_from(root).expect("the root inode number fits 32 bits"),
                );
            }
        }
        set_crc(inode, 100);
    }
    chunk
}

/// `XLOG_HEADER_CYCLE_SIZE`: data bytes whose cycle words one record header carries.
const CYCLE_SIZE: u32 = 32 << 10;
/// A basic block.
const BB: usize = 512;
/// The smallest record: a header and the unmount block.
const MIN_RECORD: u32 = 1024;

/// The log's first record: a header and an unmount record, cycle 1, as
/// `libxfs_log_clear()` writes it for a new filesystem; `log_sunit_bytes` (0: none) pads
/// it to the log stripe unit. Every other log block must read as zeros (cycle 0), so the
/// kernel finds the head right after this record and the log clean.
pub fn log_unmount_record(uuid: &[u8; 16], log_sunit_bytes: u32) -> Vec<u8> {
    let cycle = 1u32;
    let lsn = u64::from(cycle) << 32;
    let total = usize::try_from(log_sunit_bytes.max(MIN_RECORD)).expect("<= 256 KiB");
    let headers = if log_sunit_bytes > CYCLE_SIZE {
        usize::try_from(log_sunit_bytes.div_ceil(CYCLE_SIZE)).expect("<= 8")
    } else {
        1
    };
    let mut record = vec![0u8; total];
    put_u32(&mut record, 0, 0xfeed_babe); // h_magicno
    put_u32(&mut record, 4, cycle);
    put_u32(&mut record, 8, 2); // h_version
    put_u32(
        &mut record,
        12,
        u32::try_from(total - headers * BB).expect("<= 256 KiB"),
    ); // h_len
    put_u64(&mut record, 16, lsn);
    put_u64(&mut record, 24, lsn); // h_tail_lsn
                                   // h_crc stays 0: mkfs.xfs writes it so and the kernel accepts a zero record CRC.
    put_u32(&mut record, 36, NULL32); // h_prev_block
    put_u32(&mut record, 40, 1); // h_num_logops
    put_u32(&mut record, 300, 1); // h_fmt: XLOG_FMT_LINUX_LE
    record[304..320].copy_from_slice(uuid);
    put_u32(&mut record, 320, log_sunit_bytes.max(CYCLE_SIZE)); // h_size
    for header in 1..headers {
        put_u32(&mut record, header * BB, cycle); // xh_cycle
    }
    // The unmount operation: tid, length 8, client XFS_LOG, flags XLOG_UNMOUNT_TRANS,
    // then the (host-endian) XLOG_UNMOUNT_TYPE magic. The block's first word moves to
    // h_cycle_data[0] and the cycle takes its place.
    let op = headers * BB;
    put_u32(&mut record, 44, 0xb0c0_d0d0); // h_cycle_data[0] = oh_tid
    put_u32(&mut record, op, cycle);
    put_u32(&mut record, op + 4, 8); // oh_len
    record[op + 8] = 0xaa; // oh_clientid
    record[op + 9] = 0x20; // oh_flags
    record[op + 12..op + 14].copy_from_slice(&0x556eu16.to_le_bytes());
    for block in (op + BB..total).step_by(BB) {
        put_u32(&mut record, block, cycle);
    }
    record
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_matches_the_check_value() {
        // CRC-32C("123456789") = 0xe3069283, stored little-endian over a zeroed field.
        let mut buf = b"123456789\0\0\0\0".to_vec();
        set_crc(&mut buf, 9);
        let mut zeroed = b"123456789\0\0\0\0".to_vec();
        zeroed[9..].fill(0);
        assert_eq!(
            u32::from_le_bytes(buf[9..13].try_into().unwrap()),
            crc32c::crc32c(&zeroed)
        );
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn bigtime_counts_from_1901() {
        assert_eq!(bigtime(0, 0), 0x1dcd_6500_0000_0000);
        assert_eq!(bigtime(1, 5), 0x1dcd_6500_0000_0000 + 1_000_000_005);
    }

    #[test]
    fn unmount_record_matches_mkfs_xfs() {
        // Bytes of the first two basic blocks mkfs.xfs 6.1 wrote (xxd of its log).
        let uuid = [0x11; 16];
        let record = log_unmount_record(&uuid, 0);
        assert_eq!(record.len(), 1024);
        assert_eq!(
            &record[..48],
            &[
                0xfe, 0xed, 0xba, 0xbe, 0, 0, 0, 1, 0, 0, 0, 2, 0, 0, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0,
                0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 0xff, 0xff, 0, 0, 0, 1, 0xb0, 0xc0,
                0xd0, 0xd0
            ]
        );
        assert_eq!(
            &record[512..528],
            &[0, 0, 0, 1, 0, 0, 0, 8, 0xaa, 0x20, 0, 0, 0x6e, 0x55, 0, 0]
        );
        assert_eq!(&record[320..324], &[0, 0, 0x80, 0]);
        // 4 KiB log sectors: one 4 KiB record, h_len 3584, every block stamped.
        let record = log_unmount_record(&uuid, 4096);
        assert_eq!(record.len(), 4096);
        assert_eq!(&record[12..16], &3584u32.to_be_bytes());
        assert_eq!(&record[1024..1028], &1u32.to_be_bytes());
        // 64 KiB stripe: two headers (the second one an extended header), unmount third.
        let record = log_unmount_record(&uuid, 64 << 10);
        assert_eq!(&record[12..16], &(64u32 * 1024 - 1024).to_be_bytes());
        assert_eq!(&record[512..516], &1u32.to_be_bytes());
        assert_eq!(record[1024 + 8], 0xaa);
    }
}
