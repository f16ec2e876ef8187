//! Host tests (no root): format sparse image files and let xfsprogs judge them.
//!
//! - `xfs_repair -n` must find nothing, at several sizes, both sector sizes and striped;
//! - `xfs_db` must print the same superblocks, AG headers, btree roots and root inode as
//!   it does for `mkfs.xfs -K` (xfsprogs 6.1) on an image of the same size, sector size,
//!   stripe and UUID, and `xfs_info` and `xfs_logprint` the same report: every difference
//!   is listed, and the test fails on any not in [`ALLOWED`].
//!
//! Images up to 2 TiB live in a tempdir; `host_large.rs` has the instance-store sizes.

use std::path::Path;

use crate::common::*;
use tosskey_testkit::assert_xfs_repair_clean;
use tosskey_xfs::{format, Error, FormatOptions, MIN_SIZE};

#[test]
fn same_as_mkfs_xfs_at_1_gib() {
    assert_same_as_mkfs(Case::plain(GIB));
}

#[test]
fn same_as_mkfs_xfs_at_16_gib_with_4k_sectors() {
    assert_same_as_mkfs(Case {
        size: 16 * GIB,
        sector: 4096,
        stripe: None,
    });
}

#[test]
fn same_as_mkfs_xfs_on_a_64k_stripe_of_4() {
    assert_same_as_mkfs(Case {
        size: 16 * GIB,
        sector: 512,
        stripe: Some((64 << 10, 4)),
    });
}

#[test]
fn same_as_mkfs_xfs_on_a_512k_stripe_of_2_with_4k_sectors() {
    assert_same_as_mkfs(Case {
        size: 100 * GIB,
        sector: 4096,
        stripe: Some((512 << 10, 2)),
    });
}

#[test]
fn same_as_mkfs_xfs_on_an_odd_12k_stripe() {
    assert_same_as_mkfs(Case {
        size: 16 * GIB + 12345 * 4096,
        sector: 512,
        stripe: Some((12 << 10, 3)),
    });
}

#[test]
fn same_as_mkfs_xfs_at_2_tib() {
    assert_same_as_mkfs(Case::plain(2 * TIB));
}

#[test]
fn same_as_mkfs_xfs_at_the_minimum_size() {
    assert_same_as_mkfs(Case::plain(MIN_SIZE));
}

#[test]
fn repair_clean_at_16_gib_and_writes_only_metadata() {
    let (image, report) = format_case(Case::plain(16 * GIB));
    assert_xfs_repair_clean(&image.path);
    assert!(report.punched);
    // Headers and btree roots (6 blocks per AG), the inode chunk, the log record.
    let expected = 4 * 6 * 4096 + 8 * 4096 + 1024 + 4096;
    assert_eq!(report.bytes_written, expected as u64);
    assert!(image.allocated() <= 256 * 1024, "{}", image.allocated());
}

#[test]
fn a_random_uuid_and_a_label_are_recorded() {
    let image = Image::new(GIB);
    let opts = FormatOptions {
        label: Some("scratch".into()),
        ..FormatOptions::default()
    };
    let report = format(&image.path, &opts).unwrap();
    assert_xfs_repair_clean(&image.path);
    let printed = run(
        "xfs_db",
        &["-r", "-c", "sb 0", "-c", "print fname uuid"],
        &image.path,
    );
    assert!(
        printed.contains("fname = \"scratch\\000\\000\\000\\000\\000\""),
        "{printed}"
    );
    let hex: String = report.uuid.iter().map(|b| format!("{b:02x}")).collect();
    assert!(printed.replace('-', "").contains(&hex), "{printed} {hex}");
    assert_eq!(report.uuid[6] >> 4, 4);
}

#[test]
fn refusals_leave_the_target_untouched() {
    let small = Image::new(MIN_SIZE - MIB);
    let error = format(&small.path, &FormatOptions::default()).unwrap_err();
    assert!(matches!(error, Error::TooSmall { .. }), "{error}");
    assert!(error
        .to_string()
        .contains(&small.path.display().to_string()));
    assert_eq!(small.allocated(), 0);

    let image = Image::new(GIB);
    let long_label = FormatOptions {
        label: Some("thirteen-byte".into()),
        ..FormatOptions::default()
    };
    let error = format(&image.path, &long_label).unwrap_err();
    assert!(
        matches!(error, Error::LabelTooLong { len: 13, .. }),
        "{error}"
    );
    let odd_sector = FormatOptions {
        sector_size: Some(1024),
        ..FormatOptions::default()
    };
    let error = format(&image.path, &odd_sector).unwrap_err();
    assert!(
        matches!(error, Error::SectorSize { size: 1024, .. }),
        "{error}"
    );
    assert_eq!(image.allocated(), 0);
}

#[test]
fn a_second_format_replaces_the_first() {
    // What was on the image (here a whole first filesystem with another UUID and a busy
    // log area) must not survive: the image is punched, so the log reads as zeros again.
    let image = Image::new(GIB);
    image_fill(&image.path, GIB);
    format(&image.path, &Case::plain(GIB).options()).unwrap();
    assert_xfs_repair_clean(&image.path);
    let log = run("xfs_logprint", &["-d"], &image.path);
    assert!(!log.contains("Oper (1)"), "{log}");
}

/// Fill every 1 MiB of `path` with a non-zero pattern (a volume's previous life).
fn image_fill(path: &Path, size: u64) {
    use std::os::unix::fs::FileExt;
    let file = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    let junk = vec![0x5au8; 1 << 20];
    let mut offset = 0;
    while offset < size {
        file.write_all_at(&junk, offset).unwrap();
        offset += 64 * MIB;
    }
}
