//! Strong on-disk signatures: what counts as "this device holds data" before tosskey
//! overwrites it.
//!
//! Only signatures that a random-looking device cannot match by chance count. A fresh boot
//! on an instance-store disk that held the previous boot's dm-crypt ciphertext presents
//! uniformly random bytes; a probe that trusts a 2-byte magic refuses such a disk about once
//! in tens of thousands of boots. systemd hit exactly that with random-key swap
//! (systemd/systemd#37328: blkid saw "jbd", "hfsplus" and "jmicron_raid_member" in fresh
//! ciphertext). So every detector here needs either a checksum over the structure or at
//! least 8 fixed magic bytes plus structural fields that must agree with each other:
//!
//! | kind | where | what is checked |
//! |---|---|---|
//! | ext2/3/4 | 1024 | magic 0xEF53 + geometry sanity (bigalloc's cluster groups too); crc32c when `metadata_csum` is set |
//! | XFS | 0 | `XFSB` + geometry that agrees with itself; crc32c on v5 superblocks |
//! | LUKS1 | 0 | `LUKS\xba\xbe` + version 1 + sane key size and payload offset |
//! | LUKS2 | 0 and the secondary-header offsets | magic (`SKUL\xba\xbe` for secondaries) + version 2 + header size + recorded offset equals the offset found |
//! | md 0.90 | end, 64 KiB aligned | magic a92b4efc + major version 0 + checksum |
//! | md 1.x | 0 (1.1), 4096 (1.2), end − 8 KiB (1.0) | magic + major version 1 + recorded offset + checksum |
//! | GPT | LBA 1 (512 and 4096), backup at the last LBA | `EFI PART` + header CRC32 + self LBA |
//! | btrfs | 64 KiB | `_BHRfS_M` + recorded bytenr; crc32c when the checksum type is crc32c |
//! | swap | page size − 10 (4/8/16/64 KiB pages) | `SWAPSPACE2` + version 1 + last page within the device |
//! | LVM2 | sectors 0..3 | `LABELONE` + recorded sector + `LVM2 001` |
//! | MBR | 510 | `0x55AA` **plus** every partition entry sane and at least one in use |
//!
//! Behind the named formats stands a backstop ([`structured_data`]): the formats blkid
//! knows keep a header in the first or the last MiB of a device (`scripts/signature-corpus`
//! checks each one Debian's tools make), and a fresh disk is zeros there while a previous
//! boot's ciphertext is random. So a 512-byte sector there
//! that is neither all zeros nor random-looking (some byte value repeated 28 times) is
//! refused as "structured data at offset X" — f2fs, FAT, NTFS, ZFS labels, bcache, a
//! hibernation image and the rest, without a detector each.
//!
//! [`scan_file`] reads the first and the last MiB and the three blocks of LUKS2 secondary
//! headers beyond the first MiB ([`probe_ranges`]): four reads, 2 MiB + 12 KiB per
//! device, whatever its size.
//!
//! The MBR is the weak one: two magic bytes. It only counts when all four entries are sane
//! (boot flag 0x00/0x80, a used entry has a non-zero type, start ≥ 1 and lies inside the
//! device, and at least one entry is used); random data passes that with a probability of
//! roughly 2^-16 · 2^-28, far below the other failure modes of a boot.

use std::fmt;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

/// Probe reads are whole, aligned blocks of this size: every logical block size tosskey
/// accepts divides it.
const PROBE_BLOCK: u64 = 4096;
/// The backstop classifies this much at each end of a device ([`structured_data`]); the
/// first MiB also holds every header the detectors read near the start (LUKS at 0, md 1.1
/// and 1.2, GPT at LBA 1, MBR, ext at 1024, XFS sectors up to 32 KiB, swap areas, LVM
/// labels, btrfs at 64 KiB), the last one md 1.0 and 0.90 and the backup GPT header.
pub const BACKSTOP_BYTES: u64 = 1024 * 1024;
/// Largest md 1.x superblock with its dev_roles (256 + 2 × 1920 bytes): fits one block.
const MD_SB_1_MAX_BYTES: u64 = 4096;

/// A structure found on a device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SignatureKind {
    /// ext2/ext3/ext4 superblock; the variant names the flavour its features imply.
    Ext(ExtFlavour),
    Xfs,
    Luks1,
    Luks2,
    /// md RAID superblock, with its metadata version (0.90, 1.0, 1.1, 1.2).
    Md(MdVersion),
    Gpt,
    Mbr,
    Btrfs,
    Swap,
    Lvm2,
    /// No known format, but bytes that are neither blank nor random-looking
    /// ([`structured_data`]): the backstop for every format without a detector here.
    StructuredData,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ExtFlavour {
    Ext2,
    Ext3,
    Ext4,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MdVersion {
    V0_90,
    V1_0,
    V1_1,
    V1_2,
}

impl SignatureKind {
    /// "a" or "an" as the name is spoken ("an ext4", "an XFS", "an md", "a GPT").
    pub fn article(self) -> &'static str {
        match self {
            SignatureKind::Ext(_) | SignatureKind::Xfs | SignatureKind::Md(_) => "an",
            SignatureKind::Mbr | SignatureKind::Lvm2 => "an",
            SignatureKind::Luks1
            | SignatureKind::Luks2
            | SignatureKind::Gpt
            | SignatureKind::Btrfs
            | SignatureKind::Swap
            | SignatureKind::StructuredData => "a",
        }
    }
}

impl fmt::Display for SignatureKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            SignatureKind::Ext(ExtFlavour::Ext2) => f.write_str("ext2 filesystem"),
            SignatureKind::Ext(ExtFlavour::Ext3) => f.write_str("ext3 filesystem"),
            SignatureKind::Ext(ExtFlavour::Ext4) => f.write_str("ext4 filesystem"),
            SignatureKind::Xfs => f.write_str("XFS filesystem"),
            SignatureKind::Luks1 => f.write_str("LUKS1 header"),
            SignatureKind::Luks2 => f.write_str("LUKS2 header"),
            SignatureKind::Md(version) => write!(f, "md RAID {version} superblock"),
            SignatureKind::Gpt => f.write_str("GPT partition table"),
            SignatureKind::Mbr => f.write_str("MBR partition table"),
            SignatureKind::Btrfs => f.write_str("btrfs filesystem"),
            SignatureKind::Swap => f.write_str("swap area"),
            SignatureKind::Lvm2 => f.write_str("LVM2 physical volume"),
            SignatureKind::StructuredData => f.write_str("structured data"),
        }
    }
}

impl fmt::Display for MdVersion {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            MdVersion::V0_90 => "0.90",
            MdVersion::V1_0 => "1.0",
            MdVersion::V1_1 => "1.1",
            MdVersion::V1_2 => "1.2",
        })
    }
}

/// One detection: what and at which byte offset of the device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature {
    pub kind: SignatureKind,
    pub offset: u64,
}

impl fmt::Display for Signature {
    /// `an ext4 filesystem signature at offset 1024`, or for the backstop
    /// `structured data at offset 4096 (neither blank nor random: a format tosskey does not name)`
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.kind == SignatureKind::StructuredData {
            return write!(
                f,
                "structured data at offset {} (neither blank nor random: a format tosskey does not name)",
                self.offset
            );
        }
        write!(
            f,
            "{} {} signature at offset {}",
            self.kind.article(),
            self.kind,
            self.offset
        )
    }
}

/// The bytes of a device a probe has read: some regions of it, each at its offset.
#[derive(Debug, Clone)]
pub struct DeviceWindow<'a> {
    regions: Vec<(u64, &'a [u8])>,
    /// Size of the whole device in bytes.
    size: u64,
}

impl<'a> DeviceWindow<'a> {
    /// A device of `size` bytes of which nothing has been read yet.
    pub fn new(size: u64) -> Self {
        DeviceWindow {
            regions: Vec::new(),
            size,
        }
    }

    /// Add the bytes read at device offset `offset`.
    #[must_use]
    pub fn with(mut self, offset: u64, bytes: &'a [u8]) -> Self {
        self.regions.push((offset, bytes));
        self
    }

    /// A device small enough to be held whole in memory.
    pub fn whole(bytes: &'a [u8]) -> Self {
        Self::new(bytes.len() as u64).with(0, bytes)
    }

    /// `len` bytes at device offset `offset`, if one region covers them.
    fn at(&self, offset: u64, len: usize) -> Option<&'a [u8]> {
        let end = offset.checked_add(len as u64)?;
        if end > self.size {
            return None;
        }
        self.regions.iter().find_map(|&(start, bytes)| {
            let from = usize::try_from(offset.checked_sub(start)?).ok()?;
            bytes.get(from..from.checked_add(len)?)
        })
    }
}

/// The byte ranges of a device of `size` bytes the detectors look at, as `(offset, len)`
/// in whole `PROBE_BLOCK`-sized pieces, sorted and merged: the first and the last MiB
/// ([`BACKSTOP_BYTES`]) and the three LUKS2 secondary-header blocks beyond the first MiB,
/// whatever the size. Each detector's offsets come from the same functions and constants
/// it uses itself; `tests/safety_signatures.rs` plants every structure in an image and
/// scans it.
pub fn probe_ranges(size: u64) -> Vec<(u64, u64)> {
    let mut wanted: Vec<(u64, u64)> = backstop_ranges(size).to_vec();
    wanted.extend(
        LUKS2_SECONDARY_OFFSETS
            .iter()
            .map(|&offset| (offset, LUKS2_HEADER_PROBE_BYTES)),
    );
    wanted.push((BTRFS_SB_OFFSET, BTRFS_SB_BYTES as u64));
    wanted.extend(SWAP_PAGE_SIZES.iter().map(|&page| (page - 10, 10)));
    if let Some(offset) = md_1_0_offset(size) {
        wanted.push((offset, MD_SB_1_MAX_BYTES));
    }
    if let Some(offset) = md_0_90_offset(size) {
        wanted.push((offset, MD_SB_0_90_BYTES as u64));
    }
    for lba_size in GPT_LBA_SIZES {
        if let Some(offset) = gpt_backup_offset(size, lba_size) {
            wanted.push((offset, GPT_HEADER_BYTES as u64));
        }
    }
    let mut blocks: Vec<(u64, u64)> = wanted
        .into_iter()
        .filter(|&(offset, len)| offset < size && len > 0)
        .map(|(offset, len)| {
            let start = offset - offset % PROBE_BLOCK;
            let end = (offset + len).div_ceil(PROBE_BLOCK) * PROBE_BLOCK;
            (start, end.min(size))
        })
        .collect();
    blocks.sort_unstable();
    let mut merged: Vec<(u64, u64)> = Vec::new();
    for (start, end) in blocks {
        match merged.last_mut() {
            Some((_, last_end)) if start <= *last_end => *last_end = (*last_end).max(end),
            _ => merged.push((start, end)),
        }
    }
    merged
        .into_iter()
        .map(|(start, end)| (start, end - start))
        .collect()
}

/// Read the blocks of `file` (a block device or an image of `size` bytes) the detectors
/// need ([`probe_ranges`]) and report every signature found, in offset order.
pub fn scan_file(file: &File, size: u64) -> io::Result<Vec<Signature>> {
    let blocks = probe_ranges(size)
        .into_iter()
        .map(|(offset, len)| Ok((offset, read_at(file, offset, len)?)))
        .collect::<io::Result<Vec<_>>>()?;
    let window = blocks
        .iter()
        .fold(DeviceWindow::new(size), |window, (offset, bytes)| {
            window.with(*offset, bytes)
        });
    Ok(detect(&window))
}

fn read_at(file: &File, offset: u64, len: u64) -> io::Result<Vec<u8>> {
    let len = usize::try_from(len).map_err(|_| io::Error::from(io::ErrorKind::InvalidInput))?;
    let mut buf = vec![0u8; len];
    file.read_exact_at(&mut buf, offset)?;
    Ok(buf)
}

/// Every signature in `window`, sorted by offset: the named formats
/// ([`detect_formats`]), or when there is none, the backstop's first structured sector
/// ([`structured_data`]).
pub fn detect(window: &DeviceWindow<'_>) -> Vec<Signature> {
    let found = detect_formats(window);
    if !found.is_empty() {
        return found;
    }
    structured_data(window).into_iter().collect()
}

/// Every strong signature of a named format in `window`, sorted by offset.
pub fn detect_formats(window: &DeviceWindow<'_>) -> Vec<Signature> {
    let mut found = Vec::new();
    found.extend(ext(window));
    found.extend(xfs(window));
    found.extend(luks(window));
    found.extend(md(window));
    found.extend(gpt(window));
    found.extend(mbr(window));
    found.extend(btrfs(window));
    found.extend(swap(window));
    found.extend(lvm2(window));
    found.sort_by_key(|s| s.offset);
    found
}

fn le16(b: &[u8], off: usize) -> u16 {
    u16::from_le_bytes([b[off], b[off + 1]])
}
fn le32(b: &[u8], off: usize) -> u32 {
    u32::from_le_bytes(b[off..off + 4].try_into().expect("4-byte slice"))
}
fn le64(b: &[u8], off: usize) -> u64 {
    u64::from_le_bytes(b[off..off + 8].try_into().expect("8-byte slice"))
}
fn be16(b: &[u8], off: usize) -> u16 {
    u16::from_be_bytes([b[off], b[off + 1]])
}
fn be32(b: &[u8], off: usize) -> u32 {
    u32::from_be_bytes(b[off..off + 4].try_into().expect("4-byte slice"))
}
fn be64(b: &[u8], off: usize) -> u64 {
    u64::from_be_bytes(b[off..off + 8].try_into().expect("8-byte slice"))
}

// ---------------------------------------------------------------------------------------
// ext2/3/4: `struct ext4_super_block` (fs/ext4/ext4.h), 1024 bytes at offset 1024.

const EXT_SB_OFFSET: u64 = 1024;
const EXT_MAGIC: u16 = 0xEF53;
const EXT_COMPAT_HAS_JOURNAL: u32 = 0x4;
const EXT_INCOMPAT_EXT4_ONLY: u32 = 0x40 /* extents */ | 0x80 /* 64bit */ | 0x200 /* flex_bg */;
const EXT_RO_COMPAT_BIGALLOC: u32 = 0x200;
const EXT_RO_COMPAT_METADATA_CSUM: u32 = 0x400;
const EXT_RO_COMPAT_EXT4_ONLY: u32 =
    0x8 /* huge_file */ | 0x10 /* gdt_csum */ | 0x20 /* dir_nlink */ | 0x40 /* extra_isize */;

fn ext(window: &DeviceWindow<'_>) -> Option<Signature> {
    let sb = window.at(EXT_SB_OFFSET, 1024)?;
    if le16(sb, 0x38) != EXT_MAGIC || !ext_geometry_sane(sb) || !ext_checksum_valid(sb) {
        return None;
    }
    Some(Signature {
        kind: SignatureKind::Ext(ext_flavour(sb)),
        offset: EXT_SB_OFFSET,
    })
}

/// Whether the superblock's counts, group geometry, revision, state and inode size are
/// values mke2fs can write.
fn ext_geometry_sane(sb: &[u8]) -> bool {
    let log_block_size = le32(sb, 0x18);
    if log_block_size > 6 {
        return false;
    }
    let block_size = 1024u32 << log_block_size;
    let Some((first_data_blocks, max_blocks_per_group)) = ext_group_limits(sb, log_block_size)
    else {
        return false;
    };
    let inodes_count = le32(sb, 0x0);
    let blocks_count = u64::from(le32(sb, 0x4)) | (u64::from(le32(sb, 0x150)) << 32);
    let first_data_block = le32(sb, 0x14);
    let blocks_per_group = u64::from(le32(sb, 0x20));
    let inodes_per_group = le32(sb, 0x28);
    let rev_level = le32(sb, 0x4C);
    let state = le16(sb, 0x3A);
    let errors = le16(sb, 0x3C);
    // s_errors 0 is what a superblock carries when nobody chose a behaviour; the kernel
    // treats it as "continue" (ext4_setup_super), and e2fsprogs accepts it.
    let sane = inodes_count > 0
        && blocks_count > 0
        && first_data_blocks.contains(&first_data_block)
        && blocks_per_group > 0
        && blocks_per_group <= max_blocks_per_group
        && inodes_per_group > 0
        && inodes_per_group <= 8 * block_size
        && rev_level <= 1
        && state <= 7
        && errors <= 3;
    if !sane {
        return false;
    }
    if rev_level == 1 {
        let inode_size = u32::from(le16(sb, 0x58));
        if !inode_size.is_power_of_two() || inode_size < 128 || inode_size > block_size {
            return false;
        }
    }
    true
}

/// The first data blocks a superblock may name and the most blocks a group may span, or
/// `None` when a bigalloc superblock's cluster geometry is impossible.
///
/// With bigalloc the group bitmap counts clusters, so a group spans up to 8 × block size
/// clusters of blocks, and block 0 is the first data block even with 1 KiB blocks (the
/// cluster holds the boot block and the superblock; mke2fs, ext2fs_initialize).
fn ext_group_limits(
    sb: &[u8],
    log_block_size: u32,
) -> Option<(std::ops::RangeInclusive<u32>, u64)> {
    let block_size = 1024u32 << log_block_size;
    let ro_compat = le32(sb, 0x64);
    if ro_compat & EXT_RO_COMPAT_BIGALLOC != 0 {
        let log_cluster_size = le32(sb, 0x1C);
        let blocks_per_group = u64::from(le32(sb, 0x20));
        let clusters_per_group = u64::from(le32(sb, 0x24));
        if log_cluster_size < log_block_size || log_cluster_size > 29 {
            return None;
        }
        let blocks_per_cluster = 1u64 << (log_cluster_size - log_block_size);
        if clusters_per_group == 0
            || clusters_per_group > 8 * u64::from(block_size)
            || blocks_per_group != clusters_per_group * blocks_per_cluster
        {
            return None;
        }
        Some((0..=0, blocks_per_group))
    } else if block_size == 1024 {
        Some((1..=1, 8 * u64::from(block_size)))
    } else {
        Some((0..=0, 8 * u64::from(block_size)))
    }
}

/// Whether a metadata_csum superblock's checksum holds (true without metadata_csum).
fn ext_checksum_valid(sb: &[u8]) -> bool {
    if le32(sb, 0x64) & EXT_RO_COMPAT_METADATA_CSUM == 0 {
        return true;
    }
    // s_checksum_type 1 = crc32c; s_checksum = crc32c(~0, sb[..0x3FC]) without the
    // final inversion (fs/ext4/super.c, ext4_superblock_csum).
    sb[0x175] == 1 && le32(sb, 0x3FC) == !crc32c(&sb[..0x3FC])
}

/// ext4 when a feature only ext4 has is on, ext3 with a journal, else ext2.
fn ext_flavour(sb: &[u8]) -> ExtFlavour {
    let compat = le32(sb, 0x5C);
    let incompat = le32(sb, 0x60);
    let ro_compat = le32(sb, 0x64);
    if incompat & EXT_INCOMPAT_EXT4_ONLY != 0
        || ro_compat & (EXT_RO_COMPAT_EXT4_ONLY | EXT_RO_COMPAT_METADATA_CSUM) != 0
    {
        ExtFlavour::Ext4
    } else if compat & EXT_COMPAT_HAS_JOURNAL != 0 {
        ExtFlavour::Ext3
    } else {
        ExtFlavour::Ext2
    }
}

// ---------------------------------------------------------------------------------------
// XFS: `struct xfs_dsb` (fs/xfs/libxfs/xfs_format.h), big-endian, at offset 0.

fn xfs(window: &DeviceWindow<'_>) -> Option<Signature> {
    let sb = window.at(0, 512)?;
    if &sb[0..4] != b"XFSB" {
        return None;
    }
    let block_size = be32(sb, 4);
    let dblocks = be64(sb, 8);
    let agblocks = be32(sb, 84);
    let agcount = be32(sb, 88);
    let version = be16(sb, 100);
    let sect_size = u32::from(be16(sb, 102));
    let inode_size = u32::from(be16(sb, 104));
    let inodes_per_block = u32::from(be16(sb, 106));
    let (block_log, sect_log, inode_log) = (sb[120], sb[121], sb[122]);
    let pow2_in = |v: u32, lo: u32, hi: u32| v.is_power_of_two() && (lo..=hi).contains(&v);
    let sane = pow2_in(block_size, 512, 65536)
        && pow2_in(sect_size, 512, 32768)
        && pow2_in(inode_size, 256, 2048)
        && u32::from(block_log) == block_size.trailing_zeros()
        && u32::from(sect_log) == sect_size.trailing_zeros()
        && u32::from(inode_log) == inode_size.trailing_zeros()
        && inodes_per_block == block_size / inode_size
        && dblocks > 0
        && agblocks > 0
        && agcount > 0
        && u64::from(agblocks) * u64::from(agcount) >= dblocks
        && (1..=5).contains(&(version & 0xF));
    if !sane {
        return None;
    }
    if version & 0xF == 5 {
        // v5 superblocks carry sb_crc at 224: crc32c over the sector with the field zeroed.
        let sector = window.at(0, usize::try_from(sect_size).ok()?)?;
        let mut copy = sector.to_vec();
        copy[224..228].fill(0);
        if le32(sector, 224) != crc32c(&copy) {
            return None;
        }
    }
    Some(Signature {
        kind: SignatureKind::Xfs,
        offset: 0,
    })
}

// ---------------------------------------------------------------------------------------
// LUKS: cryptsetup's docs/on-disk-format.pdf (LUKS1) and on-disk-format-luks2.pdf.

const LUKS_MAGIC: &[u8; 6] = b"LUKS\xba\xbe";
const LUKS2_SECONDARY_MAGIC: &[u8; 6] = b"SKUL\xba\xbe";
/// Where a LUKS2 secondary header may start: right after a primary of 16 KiB .. 4 MiB.
const LUKS2_SECONDARY_OFFSETS: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];
/// The part of a LUKS binary header the checks read.
const LUKS2_HEADER_PROBE_BYTES: u64 = 512;

fn luks(window: &DeviceWindow<'_>) -> Vec<Signature> {
    let mut found = Vec::new();
    if let Some(hdr) = window.at(0, 512) {
        if &hdr[0..6] == LUKS_MAGIC {
            // LUKS1: payload_offset (sectors) at 104, key_bytes at 108.
            let luks1 =
                be16(hdr, 6) == 1 && (16..=256).contains(&be32(hdr, 108)) && be32(hdr, 104) > 0;
            if luks1 {
                found.push(Signature {
                    kind: SignatureKind::Luks1,
                    offset: 0,
                });
            } else if be16(hdr, 6) == 2 && luks2_header_sane(hdr, 0) {
                found.push(Signature {
                    kind: SignatureKind::Luks2,
                    offset: 0,
                });
            }
        }
    }
    // A damaged primary still leaves the secondary: the data is there all the same.
    found.extend(LUKS2_SECONDARY_OFFSETS.iter().filter_map(|&offset| {
        let hdr = window.at(offset, 512)?;
        (&hdr[0..6] == LUKS2_SECONDARY_MAGIC && be16(hdr, 6) == 2 && luks2_header_sane(hdr, offset))
            .then_some(Signature {
                kind: SignatureKind::Luks2,
                offset,
            })
    }));
    found
}

/// LUKS2 binary header: hdr_size (u64 BE at 8) is a power of two in 16 KiB..4 MiB and
/// hdr_offset (u64 BE at 256) records where this copy lives.
fn luks2_header_sane(hdr: &[u8], offset: u64) -> bool {
    let hdr_size = be64(hdr, 8);
    hdr_size.is_power_of_two()
        && (0x4000..=0x400000).contains(&hdr_size)
        && be64(hdr, 256) == offset
}

// ---------------------------------------------------------------------------------------
// md: `mdp_super_t` (0.90) and `struct mdp_superblock_1` (include/uapi/linux/raid/md_p.h).

const MD_MAGIC: u32 = 0xa92b_4efc;
const MD_SB_0_90_BYTES: usize = 4096;
const MD_SB_1_BYTES: usize = 256;

/// md 0.90: MD_NEW_SIZE_SECTORS — the last 64 KiB-aligned 64 KiB block.
fn md_0_90_offset(size: u64) -> Option<u64> {
    let sectors = size / 512;
    (sectors >= 128).then(|| ((sectors & !127) - 128) * 512)
}

/// md 1.0: (sectors − 16) & ~7 sectors, 8 to 12 KiB before the end.
fn md_1_0_offset(size: u64) -> Option<u64> {
    let sectors = size / 512;
    (sectors >= 16).then(|| ((sectors - 16) & !7) * 512)
}

fn md(window: &DeviceWindow<'_>) -> Vec<Signature> {
    let mut found = Vec::new();
    if let Some(offset) = md_0_90_offset(window.size) {
        if let Some(sb) = window.at(offset, MD_SB_0_90_BYTES) {
            if md_0_90_valid(sb) {
                found.push(Signature {
                    kind: SignatureKind::Md(MdVersion::V0_90),
                    offset,
                });
            }
        }
    }
    // 1.x: 1.1 at 0, 1.2 at 4 KiB, 1.0 near the end.
    let mut candidates = vec![(0u64, MdVersion::V1_1), (4096, MdVersion::V1_2)];
    if let Some(offset) = md_1_0_offset(window.size) {
        candidates.push((offset, MdVersion::V1_0));
    }
    for (offset, version) in candidates {
        if let Some(sb) = window.at(offset, MD_SB_1_BYTES) {
            if le32(sb, 0) == MD_MAGIC && le32(sb, 4) == 1 && le64(sb, 144) == offset / 512 {
                let max_dev = usize::try_from(le32(sb, 220)).ok();
                let full = max_dev
                    .filter(|&n| n <= 1920)
                    .and_then(|n| window.at(offset, MD_SB_1_BYTES + 2 * n));
                if full.is_some_and(md_1_csum_valid) {
                    found.push(Signature {
                        kind: SignatureKind::Md(version),
                        offset,
                    });
                }
            }
        }
    }
    found
}

/// md 0.90: magic, major_version 0, and sb_csum (word 38) equal to the folded 64-bit sum
/// of all 1024 little-endian words with the checksum word zeroed (md.c, calc_sb_csum).
fn md_0_90_valid(sb: &[u8]) -> bool {
    if le32(sb, 0) != MD_MAGIC || le32(sb, 4) != 0 {
        return false;
    }
    let stored = le32(sb, 38 * 4);
    let sum: u64 = (0..MD_SB_0_90_BYTES / 4)
        .filter(|&word| word != 38)
        .map(|word| u64::from(le32(sb, word * 4)))
        .sum();
    fold_md_sum(sum) == stored
}

/// md 1.x: sb_csum (at 216) is the folded sum of the 256-byte header plus 2 × max_dev bytes
/// of dev_roles as little-endian u32 words, the checksum field counted as zero
/// (md.c, calc_sb_1_csum).
fn md_1_csum_valid(sb: &[u8]) -> bool {
    let stored = le32(sb, 216);
    let mut sum: u64 = 0;
    let words = sb.len() / 4;
    for word in 0..words {
        if word * 4 != 216 {
            sum += u64::from(le32(sb, word * 4));
        }
    }
    if sb.len() % 4 == 2 {
        sum += u64::from(le16(sb, sb.len() - 2));
    }
    fold_md_sum(sum) == stored
}

fn fold_md_sum(sum: u64) -> u32 {
    // The kernel adds the halves into an `unsigned int`: the carry out of bit 31 is lost.
    let folded = ((sum & 0xffff_ffff) + (sum >> 32)) & 0xffff_ffff;
    u32::try_from(folded).expect("masked to 32 bits")
}

// ---------------------------------------------------------------------------------------
// GPT (UEFI spec 5.3.2): header at LBA 1, backup at the last LBA.

const GPT_LBA_SIZES: [u64; 2] = [512, 4096];
/// The header fields the checks read (UEFI's header size; larger ones are refused).
const GPT_HEADER_BYTES: usize = 92;

/// The backup header's offset: the last LBA, on a device of at least 3 LBAs.
fn gpt_backup_offset(size: u64, lba_size: u64) -> Option<u64> {
    let lbas = size / lba_size;
    (lbas >= 3).then(|| (lbas - 1) * lba_size)
}

fn gpt(window: &DeviceWindow<'_>) -> Vec<Signature> {
    let mut found = Vec::new();
    for lba_size in GPT_LBA_SIZES {
        let Some(backup) = gpt_backup_offset(window.size, lba_size) else {
            continue;
        };
        for offset in [lba_size, backup] {
            let lba = offset / lba_size;
            if let Some(hdr) = window.at(offset, GPT_HEADER_BYTES) {
                if gpt_header_valid(hdr, lba)
                    && !found.iter().any(|s: &Signature| s.offset == offset)
                {
                    found.push(Signature {
                        kind: SignatureKind::Gpt,
                        offset,
                    });
                }
            }
        }
    }
    found
}

fn gpt_header_valid(hdr: &[u8], lba: u64) -> bool {
    if &hdr[0..8] != b"EFI PART" {
        return false;
    }
    let header_size = usize::try_from(le32(hdr, 12)).unwrap_or(usize::MAX);
    if !(92..=hdr.len()).contains(&header_size) {
        return false;
    }
    let mut copy = hdr[..header_size].to_vec();
    copy[16..20].fill(0);
    crc32(&copy) == le32(hdr, 16) && le64(hdr, 24) == lba
}

// ---------------------------------------------------------------------------------------
// MBR: four 16-byte entries at 446 and 0x55AA at 510. Weak; see the module doc.

fn mbr(window: &DeviceWindow<'_>) -> Option<Signature> {
    let sector = window.at(0, 512)?;
    if sector[510] != 0x55 || sector[511] != 0xAA {
        return None;
    }
    let sectors = window.size / 512;
    let mut used = 0;
    for entry in sector[446..510].chunks_exact(16) {
        let boot = entry[0];
        let kind = entry[4];
        let start = u64::from(le32(entry, 8));
        let count = u64::from(le32(entry, 12));
        if boot != 0 && boot != 0x80 {
            return None;
        }
        if kind == 0 {
            if entry.iter().any(|&b| b != 0) {
                return None;
            }
            continue;
        }
        // A protective MBR (type 0xEE) may claim more sectors than a 2 TiB+ disk has.
        if start == 0 || start >= sectors || (kind != 0xEE && count == 0) {
            return None;
        }
        used += 1;
    }
    (used > 0).then_some(Signature {
        kind: SignatureKind::Mbr,
        offset: 510,
    })
}

// ---------------------------------------------------------------------------------------
// btrfs: `struct btrfs_super_block` (fs/btrfs/accessors.h / uapi btrfs_tree.h) at 64 KiB.

const BTRFS_SB_OFFSET: u64 = 0x10000;
const BTRFS_SB_BYTES: usize = 4096;

fn btrfs(window: &DeviceWindow<'_>) -> Option<Signature> {
    let sb = window.at(BTRFS_SB_OFFSET, BTRFS_SB_BYTES)?;
    if &sb[0x40..0x48] != b"_BHRfS_M" || le64(sb, 0x30) != BTRFS_SB_OFFSET {
        return None;
    }
    // csum_type (u16 at 0xC4): 0 = crc32c over bytes 0x20.. stored in the first 4 bytes.
    // Other checksum types (xxhash64, sha256, blake2b) are not computed here; the 8-byte
    // magic plus the recorded bytenr already make a chance match negligible.
    if le16(sb, 0xC4) == 0 && le32(sb, 0) != crc32c(&sb[0x20..]) {
        return None;
    }
    Some(Signature {
        kind: SignatureKind::Btrfs,
        offset: BTRFS_SB_OFFSET,
    })
}

// ---------------------------------------------------------------------------------------
// swap: `union swap_header` (include/linux/swap.h): magic in the last 10 bytes of the
// first page, version and last_page at 1024.

/// Page sizes a swap area may have been made for (x86, arm64, ppc64).
const SWAP_PAGE_SIZES: [u64; 4] = [4096, 8192, 16384, 65536];

fn swap(window: &DeviceWindow<'_>) -> Option<Signature> {
    for page in SWAP_PAGE_SIZES {
        let Some(magic) = window.at(page - 10, 10) else {
            continue;
        };
        if magic != b"SWAPSPACE2" {
            continue;
        }
        let info = window.at(1024, 8)?;
        let version = le32(info, 0);
        let last_page = u64::from(le32(info, 4));
        if version == 1 && last_page > 0 && last_page < window.size / page + 1 {
            return Some(Signature {
                kind: SignatureKind::Swap,
                offset: page - 10,
            });
        }
    }
    None
}

// ---------------------------------------------------------------------------------------
// LVM2: `struct label_header` (lib/label/label.h): in one of the first four sectors.

fn lvm2(window: &DeviceWindow<'_>) -> Option<Signature> {
    (0..4u64).find_map(|sector| {
        let offset = sector * 512;
        let label = window.at(offset, 32)?;
        (&label[0..8] == b"LABELONE" && le64(label, 8) == sector && &label[24..32] == b"LVM2 001")
            .then_some(Signature {
                kind: SignatureKind::Lvm2,
                offset,
            })
    })
}

// ---------------------------------------------------------------------------------------
// The backstop: the first and the last MiB hold only blank or random-looking sectors.

/// The classified unit: a logical sector, so that a dm-crypt sector of old ciphertext
/// next to a never-written (zero) one is two clean units, not one mixed one.
const BACKSTOP_SECTOR: usize = 512;
/// A byte value seen this often in one 512-byte sector means the sector is not random.
/// In random bytes each value occurs Binomial(512, 1/256) times (mean 2): 28 or more
/// happen with probability 6.7e-23 per value, so about 7e-17 for the 256 values of the
/// 4096 sectors of a device's two MiB. Headers, tables, text and bitmaps repeat a value
/// (zero, space, 0xFF) far more often than that.
const RANDOM_SECTOR_MAX_REPEATS: u16 = 28;

/// The first and the last [`BACKSTOP_BYTES`] of a device of `size` bytes, as
/// `(offset, len)`; the tail starts on a sector boundary and does not overlap the head.
fn backstop_ranges(size: u64) -> [(u64, u64); 2] {
    let head_end = size.min(BACKSTOP_BYTES);
    let sector = BACKSTOP_SECTOR as u64;
    let tail_start = size.saturating_sub(BACKSTOP_BYTES) / sector * sector;
    let tail_start = tail_start.max(head_end);
    [(0, head_end), (tail_start, size - tail_start)]
}

/// The first sector of the first and last MiB (those parts of them that `window` holds)
/// that is neither all zeros (a fresh disk) nor random-looking (a previous boot's
/// ciphertext, which every reboot must accept): some format tosskey has no detector for.
pub fn structured_data(window: &DeviceWindow<'_>) -> Option<Signature> {
    backstop_ranges(window.size)
        .into_iter()
        .flat_map(|(start, len)| (start..start + len).step_by(BACKSTOP_SECTOR))
        .find_map(|offset| {
            let len = (BACKSTOP_SECTOR as u64).min(window.size - offset);
            let sector = window.at(offset, usize::try_from(len).ok()?)?;
            (!blank_or_random(sector)).then_some(Signature {
                kind: SignatureKind::StructuredData,
                offset,
            })
        })
}

/// All zeros, or no byte value repeated [`RANDOM_SECTOR_MAX_REPEATS`] times.
fn blank_or_random(sector: &[u8]) -> bool {
    if sector.iter().all(|&byte| byte == 0) {
        return true;
    }
    let mut counts = [0u16; 256];
    sector.iter().all(|&byte| {
        let count = &mut counts[usize::from(byte)];
        *count += 1;
        *count < RANDOM_SECTOR_MAX_REPEATS
    })
}

// ---------------------------------------------------------------------------------------
// CRCs: CRC-32 for GPT from a table built at compile time; CRC-32C from the `crc32c` crate,
// the one implementation the workspace uses (tosskey-ext4 computes its checksums with it).

const fn crc32_table() -> [u32; 256] {
    const POLY: u32 = 0xEDB8_8320;
    let mut table = [0u32; 256];
    let mut i: u32 = 0;
    while i < 256 {
        let mut crc = i;
        let mut bit = 0;
        while bit < 8 {
            crc = if crc & 1 != 0 {
                (crc >> 1) ^ POLY
            } else {
                crc >> 1
            };
            bit += 1;
        }
        table[i as usize] = crc;
        i += 1;
    }
    table
}

const CRC32_TABLE: [u32; 256] = crc32_table();

/// CRC-32 (IEEE 802.3, as GPT uses it).
pub fn crc32(data: &[u8]) -> u32 {
    !data.iter().fold(!0u32, |crc, &byte| {
        let index = (crc ^ u32::from(byte)) & 0xff;
        CRC32_TABLE[index as usize] ^ (crc >> 8)
    })
}

/// CRC-32C (Castagnoli, as ext4, XFS and btrfs use it), standard init and final inversion.
pub fn crc32c(data: &[u8]) -> u32 {
    crc32c::crc32c(data)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crc_check_values() {
        // The standard check input "123456789".
        assert_eq!(crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(crc32c(b"123456789"), 0xE306_9283);
    }

    #[test]
    fn display_reads_as_a_sentence() {
        let sig = Signature {
            kind: SignatureKind::Ext(ExtFlavour::Ext4),
            offset: 1024,
        };
        assert_eq!(
            sig.to_string(),
            "an ext4 filesystem signature at offset 1024"
        );
        let sig = Signature {
            kind: SignatureKind::Gpt,
            offset: 512,
        };
        assert_eq!(
            sig.to_string(),
            "a GPT partition table signature at offset 512"
        );
    }

    #[test]
    fn window_answers_only_from_what_was_read() {
        let head = [1u8; 16];
        let tail = [2u8; 16];
        let window = DeviceWindow::new(1000).with(0, &head).with(984, &tail);
        assert_eq!(window.at(0, 16), Some(&head[..]));
        assert_eq!(window.at(984, 16), Some(&tail[..]));
        assert_eq!(window.at(500, 4), None);
        assert_eq!(window.at(990, 16), None);
        // Straddling two regions is not covered by either.
        assert_eq!(window.at(8, 16), None);
    }
}
