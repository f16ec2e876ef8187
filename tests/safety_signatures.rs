//! Signature detection on real headers (made by mke2fs, mkfs.xfs, mkfs.btrfs, mkswap,
//! cryptsetup luksFormat and pvcreate; see tests/fixtures/sysfs/signatures/README.md),
//! synthetic GPT/MBR/md structures with correct checksums, and random data that must
//! never match.

use std::process::Command;

use tosskey::host::signature::{
    crc32, crc32c, detect, detect_formats, probe_ranges, scan_file, DeviceWindow, ExtFlavour,
    MdVersion, Signature, SignatureKind, BACKSTOP_BYTES,
};

const MIB: u64 = 1 << 20;

fn fixture(name: &str) -> Vec<u8> {
    let path = format!(
        "{}/tests/fixtures/sysfs/signatures/{name}",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).unwrap_or_else(|e| panic!("{path}: {e}"))
}

/// The first bytes of a device of `size` bytes; its end is unread.
fn head_of(bytes: &[u8], size: u64) -> DeviceWindow<'_> {
    DeviceWindow::new(size).with(0, bytes)
}

fn kinds(found: &[Signature]) -> Vec<(SignatureKind, u64)> {
    found.iter().map(|s| (s.kind, s.offset)).collect()
}

/// What is found in a whole in-memory device.
fn probe(disk: &[u8]) -> Vec<(SignatureKind, u64)> {
    kinds(&detect(&DeviceWindow::whole(disk)))
}

/// What is found in the first bytes of a device of `size` bytes.
fn probe_head(bytes: &[u8], size: u64) -> Vec<(SignatureKind, u64)> {
    kinds(&detect(&head_of(bytes, size)))
}

fn random(len: usize) -> Vec<u8> {
    let mut buf = vec![0u8; len];
    getrandom::fill(&mut buf).unwrap();
    buf
}

fn mke2fs_image(fs_type: &str, extra: &[&str]) -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let status = Command::new("mke2fs")
        .args(["-q", "-F", "-t", fs_type])
        .args(extra)
        .arg(&image)
        .status()
        .expect("mke2fs (e2fsprogs) is installed on the host");
    assert!(status.success());
    (dir, image)
}

#[test]
fn real_ext4_from_mke2fs_with_metadata_csum() {
    let (_dir, image) = mke2fs_image("ext4", &["-O", "metadata_csum"]);
    let file = std::fs::File::open(&image).unwrap();
    let found = scan_file(&file, 32 * MIB).unwrap();
    assert_eq!(
        kinds(&found),
        [(SignatureKind::Ext(ExtFlavour::Ext4), 1024)]
    );

    // One flipped byte in the volume name breaks the superblock checksum: not ext4 any more.
    let mut bytes = std::fs::read(&image).unwrap();
    bytes[1024 + 0x78] ^= 0x55;
    assert!(detect_formats(&DeviceWindow::whole(&bytes)).is_empty());
}

#[test]
fn real_ext2_and_ext3_without_checksums_are_found_by_geometry() {
    let (_dir, image) = mke2fs_image("ext2", &[]);
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(
        probe(&bytes),
        [(SignatureKind::Ext(ExtFlavour::Ext2), 1024)]
    );
    let (_dir, image) = mke2fs_image("ext3", &[]);
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(
        probe(&bytes),
        [(SignatureKind::Ext(ExtFlavour::Ext3), 1024)]
    );
}

#[test]
fn real_xfs_v5_superblock() {
    let bytes = fixture("xfs-head.bin");
    assert_eq!(probe_head(&bytes, 512 * MIB), [(SignatureKind::Xfs, 0)]);
    let mut broken = bytes.clone();
    broken[200] ^= 1; // sb_features2, covered by sb_crc
    assert!(detect_formats(&head_of(&broken, 512 * MIB)).is_empty());
}

#[test]
fn real_btrfs_superblock() {
    let bytes = fixture("btrfs-head.bin");
    assert_eq!(
        probe_head(&bytes, 256 * MIB),
        [(SignatureKind::Btrfs, 65536)]
    );
    let mut broken = bytes.clone();
    broken[0x10000 + 0x100] ^= 1;
    assert!(detect_formats(&head_of(&broken, 256 * MIB)).is_empty());
}

#[test]
fn real_swap_area() {
    let bytes = fixture("swap-head.bin");
    assert_eq!(probe_head(&bytes, 64 * MIB), [(SignatureKind::Swap, 4086)]);
}

#[test]
fn real_luks1_and_luks2_headers() {
    let luks1 = fixture("luks1-head.bin");
    assert_eq!(probe_head(&luks1, 64 * MIB), [(SignatureKind::Luks1, 0)]);
    let luks2 = fixture("luks2-head.bin");
    assert_eq!(
        probe_head(&luks2, 64 * MIB),
        [(SignatureKind::Luks2, 0), (SignatureKind::Luks2, 0x4000)]
    );
}

#[test]
fn luks2_secondary_header_alone_still_counts() {
    let mut luks2 = fixture("luks2-head.bin");
    luks2[..4096].fill(0);
    assert_eq!(
        probe_head(&luks2, 64 * MIB),
        [(SignatureKind::Luks2, 0x4000)]
    );
}

#[test]
fn real_lvm2_label() {
    let bytes = fixture("lvm2-head.bin");
    assert_eq!(probe_head(&bytes, 64 * MIB), [(SignatureKind::Lvm2, 512)]);
}

/// A GPT header for a disk of `lbas` blocks, at `my_lba`, with a correct CRC32.
fn gpt_header(my_lba: u64, lbas: u64) -> [u8; 92] {
    let mut hdr = [0u8; 92];
    hdr[0..8].copy_from_slice(b"EFI PART");
    hdr[8..12].copy_from_slice(&0x0001_0000u32.to_le_bytes());
    hdr[12..16].copy_from_slice(&92u32.to_le_bytes());
    hdr[24..32].copy_from_slice(&my_lba.to_le_bytes());
    let alternate = if my_lba == 1 { lbas - 1 } else { 1 };
    hdr[32..40].copy_from_slice(&alternate.to_le_bytes());
    hdr[40..48].copy_from_slice(&34u64.to_le_bytes());
    hdr[48..56].copy_from_slice(&(lbas - 34).to_le_bytes());
    hdr[56..72].copy_from_slice(&[0x42; 16]);
    hdr[72..80].copy_from_slice(&2u64.to_le_bytes());
    hdr[80..84].copy_from_slice(&128u32.to_le_bytes());
    hdr[84..88].copy_from_slice(&128u32.to_le_bytes());
    let crc = crc32(&hdr);
    hdr[16..20].copy_from_slice(&crc.to_le_bytes());
    hdr
}

#[test]
fn gpt_primary_for_512_and_4096_byte_blocks_and_backup() {
    let size = 4 * MIB;
    for lba_size in [512u64, 4096] {
        let lbas = size / lba_size;
        let mut disk = vec![0u8; usize::try_from(size).unwrap()];
        let at = usize::try_from(lba_size).unwrap();
        disk[at..at + 92].copy_from_slice(&gpt_header(1, lbas));
        assert_eq!(probe(&disk), [(SignatureKind::Gpt, lba_size)]);
        // The primary wiped, the backup at the last LBA still says "partitioned".
        disk[at..at + 92].fill(0);
        let backup = usize::try_from((lbas - 1) * lba_size).unwrap();
        disk[backup..backup + 92].copy_from_slice(&gpt_header(lbas - 1, lbas));
        assert_eq!(probe(&disk), [(SignatureKind::Gpt, (lbas - 1) * lba_size)]);
    }
}

#[test]
fn gpt_with_a_wrong_crc_is_not_a_gpt() {
    let mut disk = vec![0u8; usize::try_from(MIB).unwrap()];
    let mut hdr = gpt_header(1, 2048);
    hdr[16] ^= 1;
    disk[512..604].copy_from_slice(&hdr);
    assert!(detect_formats(&DeviceWindow::whole(&disk)).is_empty());
}

#[test]
fn mbr_counts_only_with_sane_entries() {
    let mut disk = vec![0u8; usize::try_from(MIB).unwrap()];
    disk[510] = 0x55;
    disk[511] = 0xAA;
    // 0x55AA alone, no partition: not a partition table.
    assert!(detect_formats(&DeviceWindow::whole(&disk)).is_empty());
    // One Linux partition: sectors 64..1064.
    disk[446 + 4] = 0x83;
    disk[446 + 8..446 + 12].copy_from_slice(&64u32.to_le_bytes());
    disk[446 + 12..446 + 16].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(probe(&disk), [(SignatureKind::Mbr, 510)]);
    // A boot flag that is neither 0x00 nor 0x80 makes the whole table insane.
    disk[446 + 16] = 0x13;
    assert!(detect_formats(&DeviceWindow::whole(&disk)).is_empty());
}

/// md 1.x checksum as md.c computes it: folded sum of le32 words, csum counted as zero.
fn md1_superblock(super_offset_sectors: u64) -> Vec<u8> {
    let max_dev = 4u32;
    let mut sb = vec![0u8; 256 + 2 * 4];
    sb[0..4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
    sb[4..8].copy_from_slice(&1u32.to_le_bytes());
    sb[72..76].copy_from_slice(&0u32.to_le_bytes()); // raid0
    sb[144..152].copy_from_slice(&super_offset_sectors.to_le_bytes());
    sb[220..224].copy_from_slice(&max_dev.to_le_bytes());
    let sum: u64 = sb
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
        .sum();
    let csum = ((sum & 0xffff_ffff) + (sum >> 32)) & 0xffff_ffff;
    sb[216..220].copy_from_slice(&u32::try_from(csum).unwrap().to_le_bytes());
    sb
}

#[test]
fn md_1_2_and_1_0_superblocks() {
    let size = 4 * MIB;
    let mut disk = vec![0u8; usize::try_from(size).unwrap()];
    disk[4096..4096 + 264].copy_from_slice(&md1_superblock(8));
    assert_eq!(probe(&disk), [(SignatureKind::Md(MdVersion::V1_2), 4096)]);
    // The same superblock claiming another offset is not valid where it lies.
    disk[4096..4096 + 264].copy_from_slice(&md1_superblock(16));
    assert!(detect_formats(&DeviceWindow::whole(&disk)).is_empty());

    let mut disk = vec![0u8; usize::try_from(size).unwrap()];
    let sectors = size / 512;
    let end_offset = ((sectors - 16) & !7) * 512;
    let at = usize::try_from(end_offset).unwrap();
    disk[at..at + 264].copy_from_slice(&md1_superblock(end_offset / 512));
    // Only the tail of the device was read: still found.
    let tail_start = usize::try_from(size - 192 * 1024).unwrap();
    let window = DeviceWindow::new(size)
        .with(0, &disk[..4096])
        .with(size - 192 * 1024, &disk[tail_start..]);
    assert_eq!(
        kinds(&detect(&window)),
        [(SignatureKind::Md(MdVersion::V1_0), end_offset)]
    );
}

/// An md 0.90 superblock with a correct checksum.
fn md090_superblock() -> Vec<u8> {
    let mut sb = vec![0u8; 4096];
    sb[0..4].copy_from_slice(&0xa92b_4efcu32.to_le_bytes());
    sb[4..8].copy_from_slice(&0u32.to_le_bytes());
    sb[8..12].copy_from_slice(&90u32.to_le_bytes());
    let sum: u64 = sb
        .chunks_exact(4)
        .map(|w| u64::from(u32::from_le_bytes(w.try_into().unwrap())))
        .sum();
    let csum = u32::try_from(((sum & 0xffff_ffff) + (sum >> 32)) & 0xffff_ffff).unwrap();
    sb[152..156].copy_from_slice(&csum.to_le_bytes());
    sb
}

fn md090_offset(size: u64) -> u64 {
    (((size / 512) & !127) - 128) * 512
}

#[test]
fn md_0_90_superblock_at_the_end() {
    let size = 4 * MIB + 12345 * 512;
    let mut disk = vec![0u8; usize::try_from(size).unwrap()];
    let offset = md090_offset(size);
    let at = usize::try_from(offset).unwrap();
    disk[at..at + 4096].copy_from_slice(&md090_superblock());
    assert_eq!(
        probe(&disk),
        [(SignatureKind::Md(MdVersion::V0_90), offset)]
    );
    disk[at + 200] ^= 1;
    assert!(detect_formats(&DeviceWindow::whole(&disk)).is_empty());
}

/// The previous boot's ciphertext is uniformly random: it must never look like data,
/// or every reboot risks refusing its own disks (systemd/systemd#37328).
#[test]
fn random_megabytes_never_match() {
    for _ in 0..256 {
        let disk = random(usize::try_from(MIB).unwrap());
        let found = detect(&DeviceWindow::whole(&disk));
        assert!(found.is_empty(), "random data matched {found:?}");
    }
}

/// Stronger: random data with each magic planted where it belongs still does not match,
/// because every detector also needs a checksum or self-consistent fields.
#[test]
fn random_data_with_planted_magics_never_matches() {
    let size = 128 * 1024;
    let md090 = (((size / 512) & !127) - 128) * 512;
    let plants: [(usize, &[u8]); 12] = [
        (1080, &[0x53, 0xEF]),
        (0, b"XFSB"),
        (0, b"LUKS\xba\xbe\x00\x01"),
        (0, b"LUKS\xba\xbe\x00\x02"),
        (0x4000, b"SKUL\xba\xbe\x00\x02"),
        (4096, &[0xfc, 0x4e, 0x2b, 0xa9, 1, 0, 0, 0]),
        (md090, &[0xfc, 0x4e, 0x2b, 0xa9, 0, 0, 0, 0]),
        (512, b"EFI PART"),
        (510, &[0x55, 0xAA]),
        (0x10040, b"_BHRfS_M"),
        (4086, b"SWAPSPACE2"),
        (512, b"LABELONE"),
    ];
    for (offset, magic) in plants {
        for round in 0..200 {
            let mut disk = random(size);
            disk[offset..offset + magic.len()].copy_from_slice(magic);
            if magic == b"LABELONE" {
                disk[536..544].copy_from_slice(b"LVM2 001");
            }
            let found = detect(&DeviceWindow::whole(&disk));
            assert!(
                found.is_empty(),
                "round {round}: planted {magic:?} at {offset} matched {found:?}"
            );
        }
    }
}

/// Where LUKS2 puts a secondary header (after a primary of 16 KiB .. 4 MiB).
const LUKS2_SECONDARIES: [u64; 9] = [
    0x4000, 0x8000, 0x10000, 0x20000, 0x40000, 0x80000, 0x100000, 0x200000, 0x400000,
];

/// A sparse image of `size` bytes with `bytes` written at `offset`, scanned as a device.
fn scan_planted(size: u64, plants: &[(u64, &[u8])]) -> Vec<(SignatureKind, u64)> {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("disk.img");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&image)
        .unwrap();
    file.set_len(size).unwrap();
    for (offset, bytes) in plants {
        std::os::unix::fs::FileExt::write_all_at(&file, bytes, *offset).unwrap();
    }
    kinds(&scan_file(&file, size).unwrap())
}

/// `scan_file` reads only some blocks: every structure, wherever on the device its
/// detector looks, must still be inside them. Planted one at a time in a sparse 8 GiB image
/// whose size is not a multiple of 4 KiB.
#[test]
fn scan_file_reads_every_place_a_detector_looks() {
    let size = 8 * 1024 * MIB + 12345 * 512;
    let luks2 = fixture("luks2-head.bin");
    for offset in LUKS2_SECONDARIES {
        // The fixture's secondary header, moved: it records the offset it lives at.
        let mut secondary = luks2[0x4000..0x4000 + 512].to_vec();
        secondary[256..264].copy_from_slice(&offset.to_be_bytes());
        assert_eq!(
            scan_planted(size, &[(offset, &secondary)]),
            [(SignatureKind::Luks2, offset)],
            "LUKS2 secondary at {offset:#x}"
        );
    }
    assert_eq!(
        scan_planted(size, &[(0, &luks2)]),
        [(SignatureKind::Luks2, 0), (SignatureKind::Luks2, 0x4000)]
    );
    for (name, kind, offset) in [
        ("xfs-head.bin", SignatureKind::Xfs, 0),
        ("btrfs-head.bin", SignatureKind::Btrfs, 65536),
        ("swap-head.bin", SignatureKind::Swap, 4086),
        ("lvm2-head.bin", SignatureKind::Lvm2, 512),
        ("luks1-head.bin", SignatureKind::Luks1, 0),
    ] {
        assert_eq!(
            scan_planted(size, &[(0, &fixture(name))]),
            [(kind, offset)],
            "{name}"
        );
    }
    // XFS with 32 KiB sectors: its checksum covers the whole sector, beyond the head.
    let mut xfs = fixture("xfs-head.bin");
    xfs.resize(32 * 1024, 0);
    xfs[102..104].copy_from_slice(&32768u16.to_be_bytes());
    xfs[121] = 15;
    xfs[224..228].fill(0);
    let crc = crc32c(&xfs);
    xfs[224..228].copy_from_slice(&crc.to_le_bytes());
    assert_eq!(scan_planted(size, &[(0, &xfs)]), [(SignatureKind::Xfs, 0)]);
    // A swap area made for 64 KiB pages: its magic ends the first 64 KiB.
    let mut info = [0u8; 8];
    info[0..4].copy_from_slice(&1u32.to_le_bytes());
    info[4..8].copy_from_slice(&1000u32.to_le_bytes());
    assert_eq!(
        scan_planted(size, &[(1024, &info), (65536 - 10, b"SWAPSPACE2")]),
        [(SignatureKind::Swap, 65526)]
    );
    for lba_size in [512u64, 4096] {
        let lbas = size / lba_size;
        let backup = (lbas - 1) * lba_size;
        assert_eq!(
            scan_planted(size, &[(backup, &gpt_header(lbas - 1, lbas))]),
            [(SignatureKind::Gpt, backup)]
        );
        assert_eq!(
            scan_planted(size, &[(lba_size, &gpt_header(1, lbas))]),
            [(SignatureKind::Gpt, lba_size)]
        );
    }
    let end_1_0 = (((size / 512) - 16) & !7) * 512;
    assert_eq!(
        scan_planted(size, &[(end_1_0, &md1_superblock(end_1_0 / 512))]),
        [(SignatureKind::Md(MdVersion::V1_0), end_1_0)]
    );
    assert_eq!(
        scan_planted(size, &[(4096, &md1_superblock(8))]),
        [(SignatureKind::Md(MdVersion::V1_2), 4096)]
    );
    assert_eq!(
        scan_planted(size, &[(0, &md1_superblock(0))]),
        [(SignatureKind::Md(MdVersion::V1_1), 0)]
    );
    assert_eq!(
        scan_planted(size, &[(md090_offset(size), &md090_superblock())]),
        [(SignatureKind::Md(MdVersion::V0_90), md090_offset(size))]
    );
}

/// The scan reads the first and the last MiB and the three LUKS2 blocks beyond the first
/// MiB (the one at 1 MiB joins the first read), in four reads, from 16 MiB to 14 TB.
#[test]
fn probe_reads_two_mib_in_four_reads_whatever_the_size() {
    for size in [16 * MIB, 128 * MIB, 7680 * 1024 * MIB, 14_000_000_000_000] {
        let ranges = probe_ranges(size);
        let bytes: u64 = ranges.iter().map(|(_, len)| len).sum();
        assert_eq!(bytes, 2 * BACKSTOP_BYTES + 3 * 4096, "{size}: {ranges:?}");
        assert_eq!(ranges.len(), 4, "{size}: {ranges:?}");
        assert!(ranges
            .iter()
            .all(|&(offset, len)| offset % 4096 == 0 && offset + len <= size));
        assert_eq!(ranges[0], (0, BACKSTOP_BYTES + 4096));
        assert_eq!(ranges[3], (size - BACKSTOP_BYTES, BACKSTOP_BYTES));
    }
}

/// Stock `mkfs.ext4 -b 1024 -O bigalloc`: block 0 is the first data block (the first
/// cluster holds the superblock) and a group spans 8192 clusters of 16 blocks, which the
/// geometry checks took for garbage. `blkid -p` calls it ext4.
#[test]
fn real_ext4_with_1k_blocks_and_bigalloc() {
    let (_dir, image) = mke2fs_image("ext4", &["-b", "1024", "-O", "bigalloc"]);
    let bytes = std::fs::read(&image).unwrap();
    assert_eq!(
        kinds(&detect_formats(&DeviceWindow::whole(&bytes))),
        [(SignatureKind::Ext(ExtFlavour::Ext4), 1024)]
    );
}

/// `s_errors = 0` (no error behaviour recorded) mounts, and `blkid -p` identifies it.
#[test]
fn ext4_with_errors_behaviour_zero() {
    let (_dir, image) = mke2fs_image("ext4", &["-O", "metadata_csum"]);
    let mut bytes = std::fs::read(&image).unwrap();
    let sb = &mut bytes[1024..2048];
    sb[0x3C..0x3E].fill(0);
    let checksum = !crc32c(&sb[..0x3FC]);
    sb[0x3FC..0x400].copy_from_slice(&checksum.to_le_bytes());
    assert_eq!(
        kinds(&detect_formats(&DeviceWindow::whole(&bytes))),
        [(SignatureKind::Ext(ExtFlavour::Ext4), 1024)]
    );
}

/// A 512-byte sector of a format tosskey has no detector for: little-endian fields and
/// text among zeros, as in any filesystem's superblock.
fn unnamed_header() -> Vec<u8> {
    let mut sector = vec![0u8; 512];
    sector[0..4].copy_from_slice(&0xF2F5_2010u32.to_le_bytes());
    sector[8..16].copy_from_slice(&123_456_789u64.to_le_bytes());
    sector[64..80].copy_from_slice(b"an unnamed label");
    sector
}

/// The backstop: a structured sector in the first or the last MiB, amid old ciphertext or
/// on a blank disk, is refused as structured data at that sector's offset.
#[test]
fn structured_sector_at_either_end_is_structured_data() {
    let size = 8 * MIB;
    let len = usize::try_from(size).unwrap();
    let places = [
        0,
        4096,
        BACKSTOP_BYTES - 512,
        size - BACKSTOP_BYTES,
        size - 512,
    ];
    for offset in places {
        let at = usize::try_from(offset).unwrap();
        for mut disk in [random(len), vec![0u8; len]] {
            disk[at..at + 512].copy_from_slice(&unnamed_header());
            assert_eq!(
                probe(&disk),
                [(SignatureKind::StructuredData, offset)],
                "at {offset}"
            );
        }
    }
    // Text without a single zero byte is structured too.
    let mut disk = random(len);
    disk[2048..2560].copy_from_slice(&b"#!/bin/sh\necho data worth keeping\n".repeat(16)[..512]);
    assert_eq!(probe(&disk), [(SignatureKind::StructuredData, 2048)]);
}

/// What the backstop passes: blank and random sectors side by side (a 4 KiB block of which
/// one 512-byte sector was written through dm-crypt), and anything between the two MiBs.
#[test]
fn blank_random_and_mixed_sectors_pass_the_backstop() {
    let size = 8 * MIB;
    let mut disk = vec![0u8; usize::try_from(size).unwrap()];
    disk[4096..4608].copy_from_slice(&random(512));
    let tail = usize::try_from(size - 4096).unwrap();
    disk[tail..].copy_from_slice(&random(4096));
    let middle = usize::try_from(4 * MIB).unwrap();
    disk[middle..middle + 512].copy_from_slice(&unnamed_header());
    assert!(detect(&DeviceWindow::whole(&disk)).is_empty());
}

/// A named format is reported by name, not as the backstop's structured data.
#[test]
fn named_format_takes_precedence_over_the_backstop() {
    let (_dir, image) = mke2fs_image("ext2", &[]);
    let file = std::fs::File::open(&image).unwrap();
    assert_eq!(
        kinds(&scan_file(&file, 32 * MIB).unwrap()),
        [(SignatureKind::Ext(ExtFlavour::Ext2), 1024)]
    );
}

#[test]
fn structured_data_names_its_offset() {
    let signature = Signature {
        kind: SignatureKind::StructuredData,
        offset: 4096,
    };
    assert_eq!(
        signature.to_string(),
        "structured data at offset 4096 (neither blank nor random: a format tosskey does not name)"
    );
}

/// The fakeraid formats keep their metadata in the last sectors (IMSM's MPB two sectors
/// before the end, DDF's anchor in the last one, NVIDIA's and JMicron's near the end):
/// each, written into zeroed sectors amid old ciphertext, is structured data there.
#[test]
fn fakeraid_anchors_at_the_end_are_structured_data() {
    let size = 64 * MIB;
    let anchors: [(u64, &[u8]); 4] = [
        (size - 1024, b"Intel Raid ISM Cfg Sig. 1.0.00"),
        (size - 512, &[0xDE, 0x11, 0xDE, 0x11]),
        (size - 1024, b"NVIDIA  "),
        (size - 512, b"JM"),
    ];
    for (offset, magic) in anchors {
        let mut disk = random(usize::try_from(size).unwrap());
        let at = usize::try_from(offset).unwrap();
        disk[at..at + 512].fill(0);
        disk[at..at + magic.len()].copy_from_slice(magic);
        assert_eq!(
            probe(&disk),
            [(SignatureKind::StructuredData, offset)],
            "{magic:?}"
        );
    }
}
