//! Host tests (no root): format sparse image files and let e2fsprogs judge them.
//!
//! Each image is checked with `e2fsck -fn` (exit 0 = clean) and `dumpe2fs -h` (features,
//! counts); images live in a tempdir and are deleted on drop.

use std::path::{Path, PathBuf};
use std::process::Command;

use tosskey_ext4::{format, Error, FormatOptions, FormatReport};
use tosskey_testkit::{assert_e2fsck_clean as assert_fsck_clean, dumpe2fs_without_checksums};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;

/// The features mke2fs 1.47 enables for ext4 here, minus resize_inode, plus sparse_super2
/// (see crate docs).
const FEATURES: &[&str] = &[
    "sparse_super2",
    "ext_attr",
    "dir_index",
    "filetype",
    "extent",
    "64bit",
    "flex_bg",
    "sparse_super",
    "large_file",
    "huge_file",
    "dir_nlink",
    "extra_isize",
    "metadata_csum",
];

fn sbin(tool: &str) -> PathBuf {
    for dir in ["/usr/sbin", "/sbin", "/usr/bin"] {
        let path = Path::new(dir).join(tool);
        if path.exists() {
            return path;
        }
    }
    panic!("{tool} not found: install e2fsprogs on the host");
}

fn sparse_image(dir: &tempfile::TempDir, name: &str, size: u64) -> PathBuf {
    let path = dir.path().join(name);
    let file = std::fs::File::create(&path).unwrap();
    file.set_len(size).unwrap();
    path
}

fn allocated_bytes(path: &Path) -> u64 {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(path).unwrap().blocks() * 512
}

/// `dumpe2fs -h` as (key, value) pairs.
fn dumpe2fs_header(image: &Path) -> Vec<(String, String)> {
    let output = Command::new(sbin("dumpe2fs"))
        .arg("-h")
        .arg(image)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "dumpe2fs -h failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .filter_map(|line| line.split_once(':'))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

fn header_value<'a>(header: &'a [(String, String)], key: &str) -> &'a str {
    header
        .iter()
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.as_str())
        .unwrap_or_else(|| panic!("dumpe2fs -h has no {key:?}: {header:?}"))
}

/// Format a sparse image of `size`, check it, and return the report and header.
fn format_and_check(size: u64, opts: &FormatOptions) -> (FormatReport, Vec<(String, String)>, u64) {
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(&dir, "fs.img", size);
    let report = format(&image, opts).unwrap();
    assert_fsck_clean(&image);
    let header = dumpe2fs_header(&image);
    let features: Vec<&str> = header_value(&header, "Filesystem features")
        .split_whitespace()
        .collect();
    let mut expected: Vec<&str> = FEATURES.to_vec();
    if opts.journal {
        expected.push("has_journal");
    }
    let mut sorted = features.clone();
    sorted.sort_unstable();
    expected.sort_unstable();
    assert_eq!(sorted, expected, "features of a {size}-byte image");
    assert_eq!(header_value(&header, "Block size"), "4096");
    assert_eq!(
        header_value(&header, "Block count"),
        report.blocks.to_string()
    );
    assert_eq!(
        header_value(&header, "Inode count"),
        report.inodes.to_string()
    );
    assert_eq!(
        header_value(&header, "Free blocks"),
        report.free_blocks.to_string()
    );
    assert_eq!(header_value(&header, "Checksum type"), "crc32c");
    assert_eq!(header_value(&header, "Filesystem state"), "clean");
    let allocated = allocated_bytes(&image);
    (report, header, allocated)
}

fn check_size(size: u64) {
    for journal in [false, true] {
        let opts = FormatOptions {
            journal,
            ..FormatOptions::default()
        };
        let (report, header, allocated) = format_and_check(size, &opts);
        // One inode per 4 MiB, rounded up to whole inode-table blocks (16 inodes) per group.
        let groups = u64::from(report.groups);
        assert_eq!(report.inodes, groups * u64::from(report.inodes_per_group));
        assert_eq!(report.inodes_per_group % 16, 0);
        assert!(report.inodes >= size / (4 * MIB));
        assert!(report.inodes < (size / (4 * MIB)).max(12) + 16 * groups);
        if journal {
            assert_eq!(header_value(&header, "Journal inode"), "8");
            let expected = tosskey_ext4::default_journal_blocks(report.blocks).unwrap();
            assert_eq!(report.journal_blocks, expected);
            assert_eq!(
                header_value(&header, "Total journal blocks"),
                expected.to_string()
            );
        } else {
            assert_eq!(report.journal_blocks, 0);
        }
        // Lazy init: only metadata is written, whatever the size (2 TiB: about 25 MiB).
        assert!(
            allocated <= 32 * MIB + size / 4096,
            "{size}-byte image (journal {journal}) allocated {allocated} bytes"
        );
        assert!(report.bytes_written <= allocated + 4096 * 16);
    }
}

#[test]
fn eight_mib_image_is_fsck_clean() {
    check_size(8 * MIB);
}

#[test]
fn one_gib_image_is_fsck_clean() {
    check_size(GIB);
}

#[test]
fn hundred_gib_image_is_fsck_clean() {
    check_size(100 * GIB);
}

#[test]
fn two_tib_image_is_fsck_clean_and_stays_sparse() {
    check_size(2 * TIB);
}

#[test]
fn odd_size_with_a_short_last_group_is_fsck_clean() {
    // 3 GiB + 12345 blocks + 512 bytes: a short last group and a partial last block.
    check_size(3 * GIB + 12345 * 4096 + 512);
}

#[test]
fn label_uuid_and_inode_ratio_are_recorded() {
    let uuid = *b"\x12\x34\x56\x78\x9a\xbc\x4d\xef\x80\x11\x22\x33\x44\x55\x66\x77";
    let opts = FormatOptions {
        label: Some("scratch".to_string()),
        uuid: Some(uuid),
        inode_ratio: 1 << 20,
        ..FormatOptions::default()
    };
    let (report, header, _) = format_and_check(GIB, &opts);
    assert_eq!(header_value(&header, "Filesystem volume name"), "scratch");
    assert_eq!(
        header_value(&header, "Filesystem UUID"),
        "12345678-9abc-4def-8011-223344556677"
    );
    assert_eq!(report.inodes, 1024);
    assert_eq!(header_value(&header, "Inodes per group"), "128");
    assert_eq!(
        header_value(&header, "Reserved block count"),
        (report.blocks * 5 / 100).to_string()
    );
}

#[test]
fn debugfs_can_write_files_and_fsck_stays_clean() {
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(&dir, "fs.img", 2 * GIB);
    format(
        &image,
        &FormatOptions {
            journal: true,
            ..FormatOptions::default()
        },
    )
    .unwrap();
    let payload = dir.path().join("payload");
    let data: Vec<u8> = (0..3 << 20)
        .map(|i: u32| (i * 7 % 251).to_le_bytes()[0])
        .collect();
    std::fs::write(&payload, &data).unwrap();
    let script = format!(
        "mkdir /a\nmkdir /a/b\nwrite {} /a/b/big\nwrite {} /small\nmkdir /lost+found/x\n",
        payload.display(),
        payload.display()
    );
    let script_path = dir.path().join("script");
    std::fs::write(&script_path, script).unwrap();
    let status = Command::new(sbin("debugfs"))
        .arg("-w")
        .arg("-f")
        .arg(&script_path)
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    assert_fsck_clean(&image);
    let out = dir.path().join("readback");
    let dump = Command::new(sbin("debugfs"))
        .arg("-R")
        .arg(format!("dump /a/b/big {}", out.display()))
        .arg(&image)
        .output()
        .unwrap();
    assert!(dump.status.success());
    assert_eq!(std::fs::read(&out).unwrap(), data);
}

#[test]
fn too_small_target_is_refused_and_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(&dir, "tiny.img", 64 * 1024);
    std::fs::write(&image, vec![0xa5u8; 64 * 1024]).unwrap();
    let error = format(&image, &FormatOptions::default()).unwrap_err();
    assert!(matches!(error, Error::TooSmall { .. }), "{error}");
    let message = error.to_string();
    assert!(
        message.contains("tiny.img") && message.contains("too small"),
        "{message}"
    );
    assert!(std::fs::read(&image).unwrap().iter().all(|&b| b == 0xa5));
    // A journal needs 8 MiB.
    let small = sparse_image(&dir, "small.img", 4 * MIB);
    let error = format(
        &small,
        &FormatOptions {
            journal: true,
            ..FormatOptions::default()
        },
    )
    .unwrap_err();
    assert!(matches!(error, Error::NoRoomForJournal { .. }), "{error}");
    assert_eq!(allocated_bytes(&small), 0);
}

/// A target that cannot be opened for writing is refused, named, and left untouched. A
/// mode of 0444 stops an ordinary user; root (how CI runs) ignores modes, so there the file
/// is also made immutable (`chattr +i`), which stops root too (EPERM). The read-only block
/// device case runs in the guest (root_format.rs).
#[test]
fn read_only_target_is_refused_and_untouched() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let image = sparse_image(&dir, "ro.img", 64 * MIB);
    std::fs::set_permissions(&image, std::fs::Permissions::from_mode(0o444)).unwrap();
    let immutable = nix::unistd::geteuid().is_root();
    if immutable {
        chattr("+i", &image);
    }
    let result = format(&image, &FormatOptions::default());
    let allocated = allocated_bytes(&image);
    if immutable {
        // Before asserting, so that the tempdir can be removed whatever happens.
        chattr("-i", &image);
    }
    let error = result.unwrap_err();
    assert!(matches!(error, Error::ReadOnly { .. }), "{error}");
    assert!(error.to_string().contains("ro.img"), "{error}");
    assert_eq!(allocated, 0);
}

fn chattr(flags: &str, path: &Path) {
    let output = Command::new("chattr")
        .arg(flags)
        .arg(path)
        .output()
        .expect("chattr (e2fsprogs) is needed to make the image immutable");
    assert!(
        output.status.success(),
        "chattr {flags} {}: {}",
        path.display(),
        String::from_utf8_lossy(&output.stderr)
    );
}

#[test]
fn directories_and_bad_options_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let error = format(dir.path(), &FormatOptions::default()).unwrap_err();
    assert!(
        matches!(error, Error::NotBlockDeviceOrFile { .. }),
        "{error}"
    );
    let image = sparse_image(&dir, "fs.img", 64 * MIB);
    let long_label = FormatOptions {
        label: Some("x".repeat(17)),
        ..FormatOptions::default()
    };
    assert!(matches!(
        format(&image, &long_label),
        Err(Error::LabelTooLong { len: 17, .. })
    ));
    let dense = FormatOptions {
        inode_ratio: 4096,
        ..FormatOptions::default()
    };
    assert!(matches!(
        format(&image, &dense),
        Err(Error::InodeRatio { .. })
    ));
    assert_eq!(allocated_bytes(&image), 0);
}

/// `dumpe2fs -h` lines that legitimately differ between two formats of the same size
/// with the same UUID: random hash seed, times, checksum, mke2fs's own write count.
fn comparable_header(image: &Path) -> Vec<(String, String)> {
    dumpe2fs_header(image)
        .into_iter()
        .filter(|(key, _)| {
            ![
                "Directory Hash Seed",
                "Checksum",
                "Lifetime writes",
                "Filesystem created",
                "Last write time",
                "Last checked",
            ]
            .contains(&key.as_str())
        })
        .collect()
}

/// The per-group part of `dumpe2fs` (locations, flags, free counts), checksums removed.
fn group_listing(image: &Path) -> Vec<String> {
    let output = Command::new(sbin("dumpe2fs")).arg(image).output().unwrap();
    assert!(output.status.success());
    String::from_utf8_lossy(&output.stdout)
        .lines()
        .skip_while(|line| !line.starts_with("Group 0:"))
        .map(dumpe2fs_without_checksums)
        .collect()
}

#[test]
fn superblock_and_groups_match_mke2fs_with_the_same_features() {
    let uuid_text = "73da1192-a955-40a1-a8d8-7ef899b1c0f4";
    let uuid: [u8; 16] = (0..16)
        .map(|i| {
            let hex = uuid_text.replace('-', "");
            u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap()
        })
        .collect::<Vec<u8>>()
        .try_into()
        .unwrap();
    for size in [8 * MIB, 3 * GIB + 12345 * 4096 + 512, 100 * GIB] {
        for journal in [false, true] {
            let dir = tempfile::tempdir().unwrap();
            let ours = sparse_image(&dir, "ours.img", size);
            let theirs = sparse_image(&dir, "theirs.img", size);
            let opts = FormatOptions {
                uuid: Some(uuid),
                journal,
                ..FormatOptions::default()
            };
            let report = format(&ours, &opts).unwrap();
            let features = if journal {
                "^resize_inode,sparse_super2"
            } else {
                "^has_journal,^resize_inode,sparse_super2"
            };
            let flex = report.flex_groups.to_string();
            let status = Command::new(sbin("mke2fs"))
                .args([
                    "-q",
                    "-t",
                    "ext4",
                    "-T",
                    "largefile4",
                    "-O",
                    features,
                    "-E",
                    "num_backup_sb=0",
                    "-G",
                    &flex,
                    "-U",
                    uuid_text,
                    "-F",
                ])
                .arg(&theirs)
                .status()
                .unwrap();
            assert!(status.success());
            assert_eq!(
                comparable_header(&ours),
                comparable_header(&theirs),
                "dumpe2fs -h differs from mke2fs for {size} bytes, journal {journal}"
            );
            assert_eq!(
                group_listing(&ours),
                group_listing(&theirs),
                "dumpe2fs group listing differs from mke2fs for {size} bytes, journal {journal}"
            );
        }
    }
}
