//! Where everything goes: allocation groups, log, stripe alignment and the free space of
//! each AG, computed by the rules `mkfs.xfs` 6.1 applies with its defaults (4 KiB blocks,
//! 512-byte inodes, internal log). Pure arithmetic: no I/O, so it can be checked over the
//! whole size range.
//!
//! The rules, from xfsprogs' `mkfs/xfs_mkfs.c` and `libfrog/topology.c` (and the kernel's
//! `xfs_ialloc_calc_rootino()`), restated:
//! - AG size: one device of 128 MiB..4 TiB gets 4 AGs; 4 TiB and up (or 32 TiB and up on
//!   a striped device) the largest AG, 1 TiB less one block; a striped ("multidisk")
//!   device under 32 TiB gets 8/16/32 AGs by size. The AG size is rounded up to the
//!   stripe unit, and moved off a multiple of the stripe width by one unit so that AGs
//!   do not all start on the same disk. A last AG under 16 MiB is dropped.
//! - Log: the internal log sits in the middle AG (`agcount / 2`) after its headers and
//!   btree roots; size fs/2048 from 16 GiB, at least 64 MiB, at most 2 GiB - 10 MiB and
//!   the AG's usable space. Its start and length are rounded to the log stripe unit
//!   (the data stripe unit up to 256 KiB, else 32 KiB; one block with 4 KiB sectors).
//! - Every AG puts 4 blocks on its free list (AGFL) taken from the start of its smallest
//!   free extent of at least 4 blocks; AG 0 then holds the first inode chunk (64 inodes,
//!   8 blocks) aligned to the stripe unit when that is a multiple of the chunk, else to
//!   the chunk: root directory, realtime bitmap and summary inodes.

use std::fmt;

/// Filesystem block size: what mkfs.xfs picks on every Linux page-size-4K machine.
pub const BLOCK_SIZE: u32 = 4096;
/// log2 of [`BLOCK_SIZE`].
pub const BLOCK_LOG: u8 = 12;
/// Inode size: the v5 default.
pub const INODE_SIZE: u32 = 512;
/// Inodes per inode chunk (`XFS_INODES_PER_CHUNK`).
pub const INODES_PER_CHUNK: u32 = 64;
/// Blocks per inode chunk.
pub const CHUNK_BLOCKS: u32 = INODES_PER_CHUNK * INODE_SIZE / BLOCK_SIZE;
/// Blocks every AG puts on its free list at mkfs time: one more than the level of each
/// free-space btree (both have one level), as `xfs_alloc_min_freelist()` asks.
pub const AGFL_BLOCKS: u32 = 4;
/// Smallest volume formatted: xfsprogs 6.5 and later refuse smaller ones too, and below
/// it mkfs.xfs 6.1 sizes the log from transaction reservations this crate does not model.
pub const MIN_SIZE: u64 = 300 << 20;
/// Largest volume formatted: 8 EiB, XFS's limit with 4 KiB blocks.
pub const MAX_SIZE: u64 = 1 << 63;

const MIB_BLOCKS: u64 = (1 << 20) / BLOCK_SIZE as u64;
const GIB_BLOCKS: u64 = 1024 * MIB_BLOCKS;
const TIB_BLOCKS: u64 = 1024 * GIB_BLOCKS;
/// `XFS_AG_MIN_BLOCKS`: 16 MiB.
pub const AG_MIN_BLOCKS: u64 = 16 * MIB_BLOCKS;
/// `XFS_AG_MAX_BLOCKS`: 1 TiB less one block.
pub const AG_MAX_BLOCKS: u64 = TIB_BLOCKS - 1;
/// `XFS_MAX_LOG_BLOCKS`.
const MAX_LOG_BLOCKS: u64 = 1024 * 1024;
/// `XFS_MAX_LOG_BYTES` (2 GiB less `XFS_MIN_LOG_BYTES`) in blocks.
const MAX_LOG_BYTES_BLOCKS: u64 = (2 * GIB_BLOCKS) - 10 * MIB_BLOCKS;
/// mkfs.xfs 6.1's smallest default log on volumes of 300 MiB and up.
const MIN_REALISTIC_LOG_BLOCKS: u64 = 64 * MIB_BLOCKS;
/// Largest log stripe unit (`XLOG_MAX_RECORD_BSIZE`, 256 KiB) in blocks, and the one
/// used instead when the data stripe unit is larger (32 KiB).
const MAX_LOG_SUNIT_BLOCKS: u32 = (256 << 10) / BLOCK_SIZE;
const FALLBACK_LOG_SUNIT_BLOCKS: u32 = (32 << 10) / BLOCK_SIZE;

/// Data stripe geometry in filesystem blocks (`sunit`/`swidth`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stripe {
    /// Stripe unit in blocks (> 0).
    pub unit: u32,
    /// Stripe width in blocks, a multiple of `unit`.
    pub width: u32,
}

impl Stripe {
    /// The stripe of a device reporting `minimum_io_size`/`optimal_io_size` in bytes, as
    /// mkfs.xfs reads it through blkid: nothing when either equals the physical sector
    /// size (a plain disk), when the width is 0, or when they are not whole blocks or the
    /// width is not a multiple of the unit.
    pub fn from_io_sizes(minimum_io: u64, optimal_io: u64, physical_sector: u64) -> Option<Stripe> {
        if minimum_io == 0 || optimal_io == 0 {
            return None;
        }
        if minimum_io == physical_sector || optimal_io == physical_sector {
            return None;
        }
        Stripe::from_bytes(minimum_io, optimal_io)
    }

    /// A stripe of `unit`/`width` bytes, if both are whole blocks, the width is a multiple
    /// of the unit, and both fit the superblock's 32-bit fields.
    pub fn from_bytes(unit: u64, width: u64) -> Option<Stripe> {
        let block = u64::from(BLOCK_SIZE);
        if unit == 0
            || !unit.is_multiple_of(block)
            || !width.is_multiple_of(block)
            || !width.is_multiple_of(unit)
        {
            return None;
        }
        Some(Stripe {
            unit: u32::try_from(unit / block).ok()?,
            width: u32::try_from(width / block).ok()?,
        })
    }
}

/// Why a size cannot be formatted.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum GeometryError {
    /// Under [`MIN_SIZE`].
    TooSmall,
    /// Over [`MAX_SIZE`].
    TooLarge,
}

impl fmt::Display for GeometryError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            GeometryError::TooSmall => write!(f, "too small"),
            GeometryError::TooLarge => write!(f, "too large"),
        }
    }
}

/// A free extent inside an AG: first block and length.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct Extent {
    /// First AG block.
    pub start: u32,
    /// Length in blocks.
    pub len: u32,
}

impl Extent {
    /// One past the last block.
    pub fn end(&self) -> u32 {
        self.start + self.len
    }
}

/// The complete layout of a filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Geometry {
    /// Sector size: 512 or 4096 (also the log sector size: the log is internal).
    pub sector_size: u32,
    /// Filesystem size in blocks (the device less a dropped runt AG and partial block).
    pub dblocks: u64,
    /// Blocks per AG (the last AG may be shorter).
    pub agblocks: u32,
    /// Number of AGs.
    pub agcount: u32,
    /// `sb_agblklog`: bits of an AG block number.
    pub agblklog: u8,
    /// Data stripe, if aligned to one.
    pub stripe: Option<Stripe>,
    /// Log stripe unit in blocks (0: none).
    pub log_sunit: u32,
    /// AG holding the log.
    pub log_ag: u32,
    /// First block of the log inside its AG.
    pub log_agbno: u32,
    /// Log length in blocks.
    pub log_blocks: u32,
    /// Maximum percentage of space for inodes (`sb_imax_pct`).
    pub imax_pct: u8,
    /// First AG block after the headers and btree roots (`libxfs_prealloc_blocks()`).
    pub prealloc_blocks: u32,
    /// First block of the inode chunk in AG 0.
    pub chunk_agbno: u32,
}

/// `xfs_highbit32(v - 1) + 1`: bits to hold block numbers below `v`.
fn log2_roundup(v: u64) -> u8 {
    if v <= 1 {
        0
    } else {
        u8::try_from(64 - (v - 1).leading_zeros()).expect("at most 64")
    }
}

fn round_up(v: u64, to: u64) -> u64 {
    v.div_ceil(to) * to
}

/// AG size and count as `calc_default_ag_geometry()` picks them.
fn default_ag_geometry(dblocks: u64, multidisk: bool) -> (u64, u64) {
    let agsize = if dblocks >= 32 * TIB_BLOCKS || (!multidisk && dblocks >= 4 * TIB_BLOCKS) {
        AG_MAX_BLOCKS
    } else {
        let shift = if !multidisk && dblocks >= 128 * MIB_BLOCKS {
            2
        } else {
            let mut shift = 5u32;
            for (limit, inclusive) in [
                (512 * GIB_BLOCKS, true),
                (8 * GIB_BLOCKS, true),
                (128 * MIB_BLOCKS, false),
                (64 * MIB_BLOCKS, false),
                (32 * MIB_BLOCKS, false),
            ] {
                if dblocks < limit || (inclusive && dblocks == limit) {
                    shift -= 1;
                }
            }
            shift
        };
        let mut blocks = dblocks >> shift;
        if dblocks & ((1 << shift) - 1) != 0 && blocks < AG_MAX_BLOCKS {
            blocks += 1;
        }
        blocks
    };
    (agsize, dblocks.div_ceil(agsize))
}

/// `align_ag_geometry()`: round the AG size to the stripe unit and off the stripe width,
/// then drop a last AG under 16 MiB. Returns (agsize, agcount, dblocks).
fn align_ag_geometry(
    mut dblocks: u64,
    mut agsize: u64,
    mut agcount: u64,
    stripe: &mut Option<Stripe>,
) -> (u64, u64, u64) {
    if let Some(s) = *stripe {
        let unit = u64::from(s.unit);
        let mut usable = true;
        if !agsize.is_multiple_of(unit) {
            let mut aligned = round_up(agsize, unit);
            if aligned > AG_MAX_BLOCKS {
                aligned = agsize / unit * unit;
            }
            if aligned < AG_MIN_BLOCKS {
                // A probed stripe that cannot align the AGs is dropped, as mkfs.xfs does.
                *stripe = None;
                usable = false;
            } else {
                agsize = aligned;
                agcount = dblocks.div_ceil(agsize);
            }
        }
        if usable && agsize.is_multiple_of(u64::from(s.width)) && s.width != s.unit && agcount > 1 {
            let mut moved = agsize - unit;
            if moved < AG_MIN_BLOCKS {
                moved = agsize + unit;
                if dblocks < agsize {
                    moved = agsize;
                }
            }
            agsize = moved;
            agcount = dblocks.div_ceil(agsize);
        }
    }
    let runt = dblocks % agsize;
    if runt != 0 && runt < AG_MIN_BLOCKS {
        agcount -= 1;
        dblocks = agcount * agsize;
    }
    (agsize, agcount, dblocks)
}

/// Default log size in blocks (`calculate_log_size()` without a size option).
fn default_log_blocks(dblocks: u64, ag_max_usable: u64) -> u64 {
    // The reservation-based minimum (a few thousand blocks) never binds from 300 MiB up:
    // the 64 MiB floor is larger.
    let min_blocks = MIN_REALISTIC_LOG_BLOCKS;
    let mut blocks = if dblocks < 16 * GIB_BLOCKS {
        min_blocks
    } else {
        dblocks / 2048
    };
    blocks = blocks.max(min_blocks);
    blocks = blocks.min(ag_max_usable - 1);
    blocks = blocks.min(MAX_LOG_BLOCKS);
    blocks.min(MAX_LOG_BYTES_BLOCKS)
}

impl Geometry {
    /// The layout mkfs.xfs 6.1 picks for `size_bytes` with `sector_size`-byte sectors
    /// and the data stripe `stripe`.
    ///
    /// A stripe that cannot be honoured (its unit is so large that the volume would be a
    /// single AG, or the aligned log would leave its AG: mkfs.xfs refuses both) is dropped
    /// and [`Geometry::stripe`] says so: the stripe comes from the device, and an
    /// unaligned filesystem serves better than none.
    pub fn new(
        size_bytes: u64,
        sector_size: u32,
        stripe: Option<Stripe>,
    ) -> Result<Geometry, GeometryError> {
        assert!(
            sector_size == 512 || sector_size == 4096,
            "sector size {sector_size} is checked by the caller"
        );
        if size_bytes < MIN_SIZE {
            return Err(GeometryError::TooSmall);
        }
        if size_bytes > MAX_SIZE {
            return Err(GeometryError::TooLarge);
        }
        match Geometry::aligned_to(size_bytes, sector_size, stripe) {
            Some(geometry) => Ok(geometry),
            None => Ok(Geometry::aligned_to(size_bytes, sector_size, None)
                .expect("an unstriped geometry always fits from MIN_SIZE up")),
        }
    }

    /// The layout for a size in range; `None` when `stripe` cannot be honoured.
    fn aligned_to(size_bytes: u64, sector_size: u32, stripe: Option<Stripe>) -> Option<Geometry> {
        let mut stripe = stripe;
        let device_blocks = size_bytes / u64::from(BLOCK_SIZE);
        let (agsize, agcount) = default_ag_geometry(device_blocks, stripe.is_some());
        let (agsize, agcount, dblocks) =
            align_ag_geometry(device_blocks, agsize, agcount, &mut stripe);
        let agblocks = u32::try_from(agsize).expect("AG size <= AG_MAX_BLOCKS");
        let agcount = u32::try_from(agcount).expect("at most 2^51 / 2^12 AGs");
        if agcount < 2 {
            return None;
        }
        let agblklog = log2_roundup(agsize);

        let header_blocks = (4 * sector_size).div_ceil(BLOCK_SIZE);
        // bnobt, cntbt, inobt, finobt and refcountbt roots.
        let prealloc_blocks = header_blocks + 5;
        // `libxfs_alloc_ag_max_usable()`: the AG less its headers, the AGFL reserve and
        // the btree roots.
        let ag_max_usable = agsize - u64::from(header_blocks + AGFL_BLOCKS + 5);

        let log_sunit = if sector_size > 512 {
            1
        } else {
            match stripe {
                Some(s) if s.unit > MAX_LOG_SUNIT_BLOCKS => FALLBACK_LOG_SUNIT_BLOCKS,
                Some(s) => s.unit,
                None => 0,
            }
        };
        let mut log_blocks = default_log_blocks(dblocks, ag_max_usable);
        let log_ag = agcount / 2;
        let mut log_start_fsb = (u64::from(log_ag) << agblklog) + u64::from(prealloc_blocks);
        if log_sunit > 0 {
            let sunit = u64::from(log_sunit);
            log_start_fsb = round_up(log_start_fsb, sunit);
            if !log_blocks.is_multiple_of(sunit) {
                let up = round_up(log_blocks, sunit);
                log_blocks = if up > MAX_LOG_BLOCKS || up > MAX_LOG_BYTES_BLOCKS {
                    log_blocks / sunit * sunit
                } else {
                    up
                };
            }
        }
        let log_agbno = log_start_fsb & ((1 << agblklog) - 1);
        let log_ag_len = if log_ag + 1 == agcount {
            dblocks - u64::from(log_ag) * agsize
        } else {
            agsize
        };
        if log_start_fsb >> agblklog != u64::from(log_ag) || log_agbno + log_blocks > log_ag_len {
            return None;
        }

        let imax_pct = if dblocks < TIB_BLOCKS {
            25
        } else if dblocks < 50 * TIB_BLOCKS {
            5
        } else {
            1
        };
        // Inode chunks align to the stripe unit when it is a multiple of the chunk
        // alignment (`igeo->ialloc_align`), else to the chunk (`sb_inoalignmt`).
        let chunk_align = match stripe {
            Some(s) if s.unit % CHUNK_BLOCKS == 0 => s.unit,
            _ => CHUNK_BLOCKS,
        };
        let mut geometry = Geometry {
            sector_size,
            dblocks,
            agblocks,
            agcount,
            agblklog,
            stripe,
            log_sunit,
            log_ag,
            log_agbno: u32::try_from(log_agbno).expect("inside an AG"),
            log_blocks: u32::try_from(log_blocks).expect("at most 2^20 blocks"),
            imax_pct,
            prealloc_blocks,
            chunk_agbno: 0,
        };
        // The log AG (the only one with two extents) needs room for its free list; the
        // others have at least AG_MIN_BLOCKS less the headers.
        agfl_extent_index(&geometry.initial_free(log_ag))?;
        let after_agfl = geometry.ag_free_before_inodes(0);
        let chunk = after_agfl
            .iter()
            .filter(|e| u64::from(e.len) >= u64::from(CHUNK_BLOCKS) + u64::from(chunk_align) - 1)
            .min_by_key(|e| (e.len, e.start))?;
        geometry.chunk_agbno =
            u32::try_from(round_up(u64::from(chunk.start), u64::from(chunk_align))).ok()?;
        Some(geometry)
    }

    /// Blocks in AG `agno` (the last one may be short).
    pub fn ag_len(&self, agno: u32) -> u32 {
        if agno + 1 == self.agcount {
            u32::try_from(self.dblocks - u64::from(agno) * u64::from(self.agblocks))
                .expect("the last AG is at most agblocks long")
        } else {
            self.agblocks
        }
    }

    /// Blocks of the AG headers (superblock, AGF, AGI, AGFL: one sector each).
    pub fn header_blocks(&self) -> u32 {
        (4 * self.sector_size).div_ceil(BLOCK_SIZE)
    }

    /// Filesystem block number (`agno << agblklog | agbno`) of the log's first block.
    pub fn log_start_fsb(&self) -> u64 {
        (u64::from(self.log_ag) << self.agblklog) + u64::from(self.log_agbno)
    }

    /// Byte offset of AG block `agbno` of AG `agno` on the device.
    pub fn byte_offset(&self, agno: u32, agbno: u32) -> u64 {
        (u64::from(agno) * u64::from(self.agblocks) + u64::from(agbno)) * u64::from(BLOCK_SIZE)
    }

    /// 512-byte "daddr" of AG block `agbno` of AG `agno` (what btree blocks record).
    pub fn daddr(&self, agno: u32, agbno: u32) -> u64 {
        self.byte_offset(agno, agbno) / tosskey_sysutil::SECTOR_SIZE
    }

    /// `sb_inopblog` + `sb_agblklog`: bits of an AG inode number.
    pub fn agino_log(&self) -> u8 {
        self.agblklog + inopblog()
    }

    /// Inode number of the root directory (the chunk's first inode).
    pub fn root_ino(&self) -> u64 {
        u64::from(self.chunk_agbno) << inopblog()
    }

    /// Free extents of AG `agno` once the headers, log and AGFL are placed.
    fn ag_free_before_inodes(&self, agno: u32) -> Vec<Extent> {
        let mut free = self.initial_free(agno);
        let from = agfl_extent_index(&free).expect("checked by Geometry::aligned_to");
        free[from].start += AGFL_BLOCKS;
        free[from].len -= AGFL_BLOCKS;
        free.retain(|e| e.len > 0);
        free
    }

    /// Free extents of AG `agno` around its headers and the log, before the AGFL.
    fn initial_free(&self, agno: u32) -> Vec<Extent> {
        let len = self.ag_len(agno);
        let mut free = Vec::with_capacity(2);
        let mut push = |start: u32, end: u32| {
            if end > start {
                free.push(Extent {
                    start,
                    len: end - start,
                });
            }
        };
        if agno == self.log_ag {
            push(self.prealloc_blocks, self.log_agbno);
            push(self.log_agbno + self.log_blocks, len);
        } else {
            push(self.prealloc_blocks, len);
        }
        free
    }

    /// The blocks on AG `agno`'s free list.
    pub fn agfl_blocks(&self, agno: u32) -> [u32; AGFL_BLOCKS as usize] {
        let initial = self.initial_free(agno);
        let from = agfl_extent_index(&initial).expect("checked by Geometry::aligned_to");
        let first = initial[from].start;
        std::array::from_fn(|i| first + u32::try_from(i).expect("< 4"))
    }

    /// Free extents of AG `agno` after the format, sorted by start block.
    pub fn free_extents(&self, agno: u32) -> Vec<Extent> {
        let mut free = self.ag_free_before_inodes(agno);
        if agno == 0 {
            let chunk_end = self.chunk_agbno + CHUNK_BLOCKS;
            let i = free
                .iter()
                .position(|e| e.start <= self.chunk_agbno && chunk_end <= e.end())
                .expect("the chunk lies in a free extent");
            let holder = free.remove(i);
            for piece in [
                Extent {
                    start: holder.start,
                    len: self.chunk_agbno - holder.start,
                },
                Extent {
                    start: chunk_end,
                    len: holder.end() - chunk_end,
                },
            ] {
                if piece.len > 0 {
                    free.push(piece);
                }
            }
        }
        free.sort();
        free
    }

    /// Free blocks in the btrees of AG `agno` (`agf_freeblks`).
    pub fn free_blocks(&self, agno: u32) -> u64 {
        self.free_extents(agno)
            .iter()
            .map(|e| u64::from(e.len))
            .sum()
    }

    /// `sb_fdblocks` once the root inodes exist: free space plus the AGFL blocks.
    pub fn fdblocks(&self) -> u64 {
        self.fdblocks_before_inodes() - u64::from(CHUNK_BLOCKS)
    }

    /// `sb_fdblocks` as the secondary superblocks record it, written before the first
    /// inode chunk was allocated.
    pub fn fdblocks_before_inodes(&self) -> u64 {
        self.dblocks
            - u64::from(self.log_blocks)
            - u64::from(self.agcount) * u64::from(self.prealloc_blocks)
    }
}

/// The extent the AGFL blocks come from: the smallest one of at least [`AGFL_BLOCKS`]
/// (the by-size btree's first fit), lowest first on a tie; `None` if there is none.
fn agfl_extent_index(free: &[Extent]) -> Option<usize> {
    free.iter()
        .enumerate()
        .filter(|(_, e)| e.len >= AGFL_BLOCKS)
        .min_by_key(|(_, e)| (e.len, e.start))
        .map(|(i, _)| i)
}

/// `sb_inopblog`: 8 inodes per block.
pub fn inopblog() -> u8 {
    log2_roundup(u64::from(BLOCK_SIZE / INODE_SIZE))
}

#[cfg(test)]
mod tests {
    use super::*;

    const GIB: u64 = 1 << 30;
    const TIB: u64 = 1 << 40;

    /// (size, agcount, agblocks, dblocks, logblocks, logstart) printed by `xfs_db -c 'sb 0'`
    /// after `mkfs.xfs -K` (xfsprogs 6.1.0) on sparse images of that size.
    const MKFS_XFS_6_1: &[(u64, u32, u32, u64, u32, u64)] = &[
        (300 << 20, 4, 19200, 76800, 16384, 65542),
        (512 << 20, 4, 32768, 131072, 16384, 65542),
        (700 << 20, 4, 44800, 179200, 16384, 131078),
        (GIB, 4, 65536, 262144, 16384, 131078),
        (16 * GIB, 4, 1048576, 4194304, 16384, 2097158),
        (17 * GIB, 4, 1114112, 4456448, 16384, 4194310),
        (256 * GIB, 4, 16777216, 67108864, 32768, 33554438),
        (511 * GIB, 4, 33488896, 133955584, 65408, 67108870),
        (2 * TIB, 4, 134217728, 536870912, 262144, 268435462),
        (4 * TIB, 4, 268435455, 1073741820, 521728, 536870918),
        (4100 * GIB, 5, 268435455, 1074790400, 521728, 536870918),
        (60 * TIB, 60, 268435455, 16106127300, 521728, 8053063686),
        (336 * TIB, 336, 268435455, 90194312880, 521728, 45097156614),
        (512 * TIB, 512, 268435455, 137438952960, 521728, 68719476742),
    ];

    #[test]
    fn matches_mkfs_xfs_on_plain_devices() {
        for &(size, agcount, agblocks, dblocks, logblocks, logstart) in MKFS_XFS_6_1 {
            let g = Geometry::new(size, 512, None).unwrap();
            assert_eq!(
                (
                    g.agcount,
                    g.agblocks,
                    g.dblocks,
                    g.log_blocks,
                    g.log_start_fsb()
                ),
                (agcount, agblocks, dblocks, logblocks, logstart),
                "{size} bytes"
            );
            assert_eq!(g.root_ino(), 128, "{size} bytes");
        }
    }

    /// (size, su, sw, agcount, agblocks, logblocks, logstart, rootino) from mkfs.xfs 6.1
    /// `-d su=...,sw=...`.
    type StripedCase = (u64, u64, u64, u32, u32, u32, u64, u64);
    const MKFS_XFS_6_1_STRIPED: &[StripedCase] = &[
        (16 * GIB, 64 << 10, 4, 16, 262128, 16384, 2097168, 128),
        (TIB, 64 << 10, 4, 32, 8388592, 131072, 134217744, 128),
        (16 * GIB, 512 << 10, 2, 16, 262016, 16384, 2097160, 1024),
        (TIB, 512 << 10, 2, 33, 8388480, 131072, 134217736, 1024),
        (16 * GIB, 12 << 10, 3, 16, 262146, 16386, 4194312, 128),
        (TIB, 12 << 10, 3, 32, 8388609, 131073, 268435464, 128),
        (16 * GIB, 1 << 20, 1, 16, 262144, 16384, 2097160, 2048),
        (TIB, 1 << 20, 1, 32, 8388608, 131072, 134217736, 2048),
    ];

    #[test]
    fn matches_mkfs_xfs_on_striped_devices() {
        for &(size, su, sw, agcount, agblocks, logblocks, logstart, rootino) in MKFS_XFS_6_1_STRIPED
        {
            let stripe = Stripe::from_bytes(su, su * sw).unwrap();
            let g = Geometry::new(size, 512, Some(stripe)).unwrap();
            assert_eq!(
                (
                    g.agcount,
                    g.agblocks,
                    g.log_blocks,
                    g.log_start_fsb(),
                    g.root_ino()
                ),
                (agcount, agblocks, logblocks, logstart, rootino),
                "{size} bytes, su {su} sw {sw}"
            );
        }
    }

    #[test]
    fn free_space_matches_mkfs_xfs() {
        // 1 GiB: AG 0 keeps 10..16 and 24.. free around the chunk at 16; the log AG (2)
        // gives its free list the 4 blocks after the log.
        let g = Geometry::new(GIB, 512, None).unwrap();
        assert_eq!(
            g.free_extents(0),
            [
                Extent { start: 10, len: 6 },
                Extent {
                    start: 24,
                    len: 65512
                }
            ]
        );
        assert_eq!(g.agfl_blocks(0), [6, 7, 8, 9]);
        assert_eq!(g.agfl_blocks(2), [16390, 16391, 16392, 16393]);
        assert_eq!(
            g.free_extents(2),
            [Extent {
                start: 16394,
                len: 49142
            }]
        );
        assert_eq!(g.fdblocks(), 245728);
        assert_eq!(g.fdblocks_before_inodes(), 245736);
        // 4 KiB sectors: 4 header blocks, 9 preallocated.
        let g = Geometry::new(GIB, 4096, None).unwrap();
        assert_eq!(g.free_blocks(0), 65515);
        assert_eq!(g.log_start_fsb(), 131081);
        // su=512k: the 2 blocks before the aligned log stay free, too small for the AGFL.
        let stripe = Stripe::from_bytes(512 << 10, 1 << 20).unwrap();
        let g = Geometry::new(16 * GIB, 512, Some(stripe)).unwrap();
        assert_eq!(g.free_extents(8)[0], Extent { start: 6, len: 2 });
        assert_eq!(g.agfl_blocks(8), [16392, 16393, 16394, 16395]);
        assert_eq!(
            g.free_extents(0),
            [
                Extent {
                    start: 10,
                    len: 118
                },
                Extent {
                    start: 136,
                    len: 261880
                }
            ]
        );
    }

    #[test]
    fn refuses_sizes_out_of_range() {
        assert_eq!(
            Geometry::new(MIN_SIZE - 1, 512, None),
            Err(GeometryError::TooSmall)
        );
        assert_eq!(
            Geometry::new(MAX_SIZE + 4096, 512, None),
            Err(GeometryError::TooLarge)
        );
        assert!(Geometry::new(MIN_SIZE, 512, None).is_ok());
        assert!(Geometry::new(MAX_SIZE, 4096, None).is_ok());
    }

    #[test]
    fn device_io_sizes_make_a_stripe_only_when_striped() {
        // md raid0 of 4 disks, 512 KiB chunks.
        assert_eq!(
            Stripe::from_io_sizes(512 << 10, 2 << 20, 512),
            Some(Stripe {
                unit: 128,
                width: 512
            })
        );
        // A plain 4Kn disk: minimum_io_size is its sector.
        assert_eq!(Stripe::from_io_sizes(4096, 0, 4096), None);
        assert_eq!(Stripe::from_io_sizes(4096, 4096, 4096), None);
        // No optimal size reported.
        assert_eq!(Stripe::from_io_sizes(64 << 10, 0, 512), None);
        // Not whole blocks.
        assert_eq!(Stripe::from_io_sizes(6 << 10, 12 << 10, 512), None);
    }

    /// Every geometry must hold together: AGs cover the filesystem, which covers all but
    /// a runt of the device; the log lies inside its AG past the headers, aligned;
    /// free space, AGFL, chunk and log never overlap and account for every block.
    fn check_consistent(size: u64, sector: u32, stripe: Option<Stripe>) {
        let g = Geometry::new(size, sector, stripe)
            .unwrap_or_else(|e| panic!("{size} bytes, sector {sector}, {stripe:?}: {e}"));
        let ctx = format!("{size} bytes, sector {sector}, {stripe:?}: {g:?}");
        let device_blocks = size / u64::from(BLOCK_SIZE);
        assert!(g.dblocks <= device_blocks, "{ctx}");
        assert!(device_blocks - g.dblocks < AG_MIN_BLOCKS, "{ctx}");
        assert!(u64::from(g.agblocks) <= AG_MAX_BLOCKS, "{ctx}");
        assert!(u64::from(g.agblocks) >= AG_MIN_BLOCKS, "{ctx}");
        assert!(g.agcount >= 2, "{ctx}");
        let full = u64::from(g.agcount - 1) * u64::from(g.agblocks);
        assert!(
            full < g.dblocks && g.dblocks <= full + u64::from(g.agblocks),
            "{ctx}"
        );
        assert!(u64::from(g.ag_len(g.agcount - 1)) >= AG_MIN_BLOCKS, "{ctx}");
        assert!(1u64 << g.agblklog >= u64::from(g.agblocks), "{ctx}");
        assert!(
            g.agblklog == 0 || 1u64 << (g.agblklog - 1) < u64::from(g.agblocks),
            "{ctx}"
        );
        assert!(g.log_agbno >= g.prealloc_blocks, "{ctx}");
        assert!(g.log_agbno + g.log_blocks <= g.ag_len(g.log_ag), "{ctx}");
        assert!(g.log_blocks >= 4096, "{ctx}");
        assert!(u64::from(g.log_blocks) <= MAX_LOG_BYTES_BLOCKS, "{ctx}");
        if g.log_sunit > 0 {
            assert_eq!(g.log_start_fsb() % u64::from(g.log_sunit), 0, "{ctx}");
            assert_eq!(g.log_blocks % g.log_sunit, 0, "{ctx}");
        }
        if let Some(s) = g.stripe {
            assert_eq!(g.agblocks % s.unit, 0, "{ctx}");
            if s.unit % CHUNK_BLOCKS == 0 {
                assert_eq!(g.chunk_agbno % s.unit, 0, "{ctx}");
            }
        }
        assert_eq!(g.chunk_agbno % CHUNK_BLOCKS, 0, "{ctx}");
        // Every block of every AG is exactly one of: header/root, log, AGFL, chunk, free.
        let mut accounted = 0u64;
        for agno in [0, g.log_ag, g.agcount - 1] {
            let len = u64::from(g.ag_len(agno));
            let mut used: Vec<(u32, u32)> = vec![(0, g.prealloc_blocks)];
            if agno == g.log_ag {
                used.push((g.log_agbno, g.log_agbno + g.log_blocks));
            }
            if agno == 0 {
                used.push((g.chunk_agbno, g.chunk_agbno + CHUNK_BLOCKS));
            }
            for b in g.agfl_blocks(agno) {
                used.push((b, b + 1));
            }
            for e in g.free_extents(agno) {
                used.push((e.start, e.end()));
            }
            used.sort();
            for pair in used.windows(2) {
                assert!(pair[0].1 <= pair[1].0, "{ctx}: AG {agno} overlaps {pair:?}");
            }
            let total: u64 = used.iter().map(|(s, e)| u64::from(e - s)).sum();
            assert_eq!(total, len, "{ctx}: AG {agno} does not add up");
            accounted += 1;
        }
        assert!(accounted >= 1);
        // The superblock's free count is what the AGs hold.
        let mut fd = 0u64;
        if g.agcount <= 64 {
            for agno in 0..g.agcount {
                fd += g.free_blocks(agno) + u64::from(AGFL_BLOCKS);
            }
            assert_eq!(fd, g.fdblocks(), "{ctx}");
        }
    }

    /// A small xorshift generator: deterministic, so a failure names its input.
    struct Rng(u64);
    impl Rng {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }
    }

    #[test]
    fn geometry_is_consistent_from_the_minimum_to_8_eib() {
        let mut rng = Rng(0x9e37_79b9_7f4a_7c15);
        let (min_log, max_log) = (MIN_SIZE.ilog2(), MAX_SIZE.ilog2());
        let mut sizes = vec![MIN_SIZE, MIN_SIZE + 4095, MAX_SIZE, MAX_SIZE - 1];
        for tib in [4u64, 32] {
            for delta in [-4096i64, -1, 0, 1, 4096, 16 << 20] {
                sizes.push((tib * TIB).saturating_add_signed(delta));
            }
        }
        for _ in 0..3000 {
            // Log-uniform sizes, then a random offset within the power of two.
            let exp =
                min_log + u32::try_from(rng.next() % u64::from(max_log - min_log + 1)).unwrap();
            let size = (1u64 << exp) + rng.next() % (1u64 << exp);
            sizes.push(size.clamp(MIN_SIZE, MAX_SIZE));
        }
        for (i, &size) in sizes.iter().enumerate() {
            let sector = if i % 2 == 0 { 512 } else { 4096 };
            check_consistent(size, sector, None);
            let unit_blocks = 1u64 << (rng.next() % 9); // 4 KiB .. 1 MiB
            let unit = unit_blocks * u64::from(BLOCK_SIZE) * (1 + rng.next() % 3);
            let stripe = Stripe::from_bytes(unit, unit * (1 + rng.next() % 16));
            check_consistent(size, sector, stripe);
        }
    }
}
