//! Host tests (no root): format sparse image files and let xfsprogs judge them.
//!
//! - `xfs_repair -n` must find nothing, at several sizes, both sector sizes and striped;
//! - `xfs_db` must print the same superblocks, AG headers, btree roots and root inode as
//!   it does for `mkfs.xfs -K` (xfsprogs 6.1) on an image of the same size, sector size,
//!   stripe and UUID, and `xfs_info` and `xfs_logprint` the same report: every difference
//!   is listed, and the test fails on any not in [`ALLOWED`].
//!
//! Images up to 2 TiB live in a tempdir; the opt-in large ones (60, 336, 512 TiB: over
//! the 16 TiB an ext4 host file can be) on `/dev/shm` (`TOSSKEY_LARGE_IMAGE_DIR`
//! overrides), where mkfs.xfs's 2 GiB log is what fills it.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tosskey_testkit::assert_xfs_repair_clean;
use tosskey_xfs::{format, Alignment, Error, FormatOptions, FormatReport, Stripe, MIN_SIZE};

const MIB: u64 = 1 << 20;
const GIB: u64 = 1 << 30;
const TIB: u64 = 1 << 40;
const UUID: &str = "0b9f5d43-6a8e-4c1a-9e51-3f0f5d7e2a11";

/// Fields allowed to differ from mkfs.xfs's, with the reason: the creation time (and so
/// the CRC of the inodes holding it).
const ALLOWED: &[&str] = &[
    "core.mtime.sec",
    "core.mtime.nsec",
    "core.ctime.sec",
    "core.ctime.nsec",
    "v3.crtime.sec",
    "v3.crtime.nsec",
    "v3.crc",
];

fn uuid_bytes() -> [u8; 16] {
    let hex = UUID.replace('-', "");
    std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
}

/// A sparse image deleted on drop.
struct Image {
    path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Image {
    fn new(size: u64) -> Image {
        let dir = if size > 2 * TIB {
            let base = std::env::var_os("TOSSKEY_LARGE_IMAGE_DIR")
                .map_or_else(|| PathBuf::from("/dev/shm"), PathBuf::from);
            tempfile::tempdir_in(&base).unwrap_or_else(|e| {
                panic!(
                    "no tmpfs for images over 16 TiB at {}: {e}; set TOSSKEY_LARGE_IMAGE_DIR",
                    base.display()
                )
            })
        } else {
            tempfile::tempdir().unwrap()
        };
        let path = dir.path().join("xfs.img");
        std::fs::File::create(&path).unwrap().set_len(size).unwrap();
        Image { path, _dir: dir }
    }

    fn allocated(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().blocks() * 512
    }
}

fn sbin(tool: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{tool} not found: install xfsprogs on the host"))
}

fn run(tool: &str, args: &[&str], image: &Path) -> String {
    let output = Command::new(sbin(tool))
        .args(args)
        .arg(image)
        .output()
        .unwrap();
    assert!(
        output.status.success(),
        "{tool} {args:?} {} exited {:?}\n{}\n{}",
        image.display(),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).into_owned()
}

/// A test case: size, sector size and stripe, with the mkfs.xfs options that ask for them.
#[derive(Debug, Clone, Copy)]
struct Case {
    size: u64,
    sector: u32,
    stripe: Option<(u64, u64)>,
}

impl Case {
    const fn plain(size: u64) -> Case {
        Case {
            size,
            sector: 512,
            stripe: None,
        }
    }

    fn options(&self) -> FormatOptions {
        FormatOptions {
            uuid: Some(uuid_bytes()),
            sector_size: Some(self.sector),
            alignment: match self.stripe {
                Some((su, sw)) => Alignment::Stripe(Stripe::from_bytes(su, su * sw).unwrap()),
                None => Alignment::None,
            },
            ..FormatOptions::default()
        }
    }

    fn mkfs_args(&self) -> Vec<String> {
        let mut args: Vec<String> = ["-q", "-f", "-K", "-m"]
            .iter()
            .map(|s| s.to_string())
            .collect();
        args.push(format!("uuid={UUID}"));
        args.push("-s".into());
        args.push(format!("size={}", self.sector));
        if let Some((su, sw)) = self.stripe {
            args.push("-d".into());
            args.push(format!("su={su},sw={sw}"));
        }
        args
    }
}

fn format_case(case: Case) -> (Image, FormatReport) {
    let image = Image::new(case.size);
    let report = format(&image.path, &case.options()).unwrap();
    (image, report)
}

/// `xfs_db -r` printing `objects` (each a list of commands ending in a print), as
/// (object, field, value) triples.
fn xfs_db_fields(image: &Path, objects: &[Vec<String>]) -> Vec<(String, String, String)> {
    let mut fields = Vec::new();
    for commands in objects {
        let mut args = vec!["-r".to_string()];
        for command in commands {
            args.push("-c".into());
            args.push(command.clone());
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let object = commands.join("; ");
        for line in run("xfs_db", &args, image).lines() {
            let (field, value) = line.split_once(" = ").unwrap_or((line, ""));
            fields.push((object.clone(), field.trim().to_string(), value.to_string()));
        }
    }
    fields
}

fn objects(report: &FormatReport) -> Vec<Vec<String>> {
    let g = &report.geometry;
    let last = g.agcount - 1;
    let mut objects = Vec::new();
    let mut ags = vec![0, 1, (g.agcount - 1) / 2, g.log_ag, last];
    ags.dedup();
    for ag in ags {
        objects.push(vec![format!("sb {ag}"), "print".into()]);
        objects.push(vec![format!("agf {ag}"), "print".into()]);
        objects.push(vec![format!("agi {ag}"), "print".into()]);
        objects.push(vec![format!("agfl {ag}"), "print".into()]);
        for (header, root) in [
            ("agf", "bnoroot"),
            ("agf", "cntroot"),
            ("agf", "refcntroot"),
            ("agi", "root"),
            ("agi", "free_root"),
        ] {
            objects.push(vec![
                format!("{header} {ag}"),
                format!("addr {root}"),
                "print".into(),
            ]);
        }
    }
    let root = report.geometry.root_ino();
    for ino in [root, root + 1, root + 2, root + 3, root + 63] {
        objects.push(vec![format!("inode {ino}"), "print".into()]);
    }
    objects
}

/// Differences between our image and mkfs.xfs's not in [`ALLOWED`], as readable lines.
fn differences_from_mkfs(case: Case) -> Vec<String> {
    let (ours, report) = format_case(case);
    let theirs = Image::new(case.size);
    let args = case.mkfs_args();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    run("mkfs.xfs", &args, &theirs.path);
    let objects = objects(&report);
    let our_fields = xfs_db_fields(&ours.path, &objects);
    let their_fields = xfs_db_fields(&theirs.path, &objects);
    let mut differences = Vec::new();
    if our_fields.len() != their_fields.len() {
        differences.push(format!(
            "{} fields printed for tosskey, {} for mkfs.xfs",
            our_fields.len(),
            their_fields.len()
        ));
    }
    for (a, b) in our_fields.iter().zip(&their_fields) {
        if a != b && !ALLOWED.contains(&a.1.as_str()) {
            differences.push(format!(
                "{} {}: tosskey {:?}, mkfs.xfs {} {:?}",
                a.0, a.1, a.2, b.1, b.2
            ));
        }
    }
    let name =
        |image: &Image, text: String| text.replace(&image.path.display().to_string(), "IMAGE");
    for (tool, args) in [("xfs_info", &[][..]), ("xfs_logprint", &["-d"][..])] {
        let a = name(&ours, run(tool, args, &ours.path));
        let b = name(&theirs, run(tool, args, &theirs.path));
        for (x, y) in a.lines().zip(b.lines()) {
            if x != y {
                differences.push(format!("{tool}: tosskey {x:?}, mkfs.xfs {y:?}"));
            }
        }
        if a.lines().count() != b.lines().count() {
            differences.push(format!("{tool}: line counts differ\n{a}\n{b}"));
        }
    }
    assert_xfs_repair_clean(&ours.path);
    differences
}

fn assert_same_as_mkfs(case: Case) {
    let differences = differences_from_mkfs(case);
    assert!(
        differences.is_empty(),
        "{case:?}: {} differences from mkfs.xfs -K:\n{}",
        differences.len(),
        differences.join("\n")
    );
}

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
#[ignore = "opt-in: 60 TiB image on /dev/shm (mkfs.xfs writes a 2 GiB log there)"]
fn same_as_mkfs_xfs_at_60_tib() {
    assert_same_as_mkfs(Case::plain(60 * TIB));
}

#[test]
#[ignore = "opt-in: 336 TiB image on /dev/shm"]
fn same_as_mkfs_xfs_at_336_tib() {
    assert_same_as_mkfs(Case::plain(336 * TIB));
}

#[test]
#[ignore = "opt-in: 512 TiB image on /dev/shm"]
fn same_as_mkfs_xfs_at_512_tib() {
    assert_same_as_mkfs(Case::plain(512 * TIB));
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
