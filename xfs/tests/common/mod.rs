//! Helpers shared by the host tests: sparse images, xfsprogs runs, and the field-by-field
//! comparison with `mkfs.xfs -K`.

#![allow(dead_code)] // each test file uses its own subset

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;

use tosskey_testkit::assert_xfs_repair_clean;
use tosskey_xfs::{format, Alignment, FormatOptions, FormatReport, Stripe};

pub const MIB: u64 = 1 << 20;
pub const GIB: u64 = 1 << 30;
pub const TIB: u64 = 1 << 40;
pub const UUID: &str = "0b9f5d43-6a8e-4c1a-9e51-3f0f5d7e2a11";

/// Fields allowed to differ from mkfs.xfs's, with the reason: the creation time (and so
/// the CRC of the inodes holding it).
pub const ALLOWED: &[&str] = &[
    "core.mtime.sec",
    "core.mtime.nsec",
    "core.ctime.sec",
    "core.ctime.nsec",
    "v3.crtime.sec",
    "v3.crtime.nsec",
    "v3.crc",
];

pub fn uuid_bytes() -> [u8; 16] {
    let hex = UUID.replace('-', "");
    std::array::from_fn(|i| u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).unwrap())
}

/// A sparse image deleted on drop.
pub struct Image {
    pub path: PathBuf,
    _dir: tempfile::TempDir,
}

impl Image {
    pub fn new(size: u64) -> Image {
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

    pub fn allocated(&self) -> u64 {
        std::fs::metadata(&self.path).unwrap().blocks() * 512
    }
}

pub fn sbin(tool: &str) -> PathBuf {
    ["/usr/sbin", "/sbin", "/usr/bin"]
        .iter()
        .map(|dir| Path::new(dir).join(tool))
        .find(|path| path.exists())
        .unwrap_or_else(|| panic!("{tool} not found: install xfsprogs on the host"))
}

pub fn run(tool: &str, args: &[&str], image: &Path) -> String {
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
pub struct Case {
    pub size: u64,
    pub sector: u32,
    pub stripe: Option<(u64, u64)>,
}

impl Case {
    pub const fn plain(size: u64) -> Case {
        Case {
            size,
            sector: 512,
            stripe: None,
        }
    }

    pub fn options(&self) -> FormatOptions {
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

    pub fn mkfs_args(&self) -> Vec<String> {
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

pub fn format_case(case: Case) -> (Image, FormatReport) {
    let image = Image::new(case.size);
    let report = format(&image.path, &case.options()).unwrap();
    (image, report)
}

/// `xfs_db -r` printing `objects` (each a list of commands ending in a print), as
/// (object, field, value) triples.
pub fn xfs_db_fields(image: &Path, objects: &[Vec<String>]) -> Vec<(String, String, String)> {
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

pub fn objects(report: &FormatReport) -> Vec<Vec<String>> {
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
pub fn differences_from_mkfs(case: Case) -> Vec<String> {
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

pub fn assert_same_as_mkfs(case: Case) {
    let differences = differences_from_mkfs(case);
    assert!(
        differences.is_empty(),
        "{case:?}: {} differences from mkfs.xfs -K:\n{}",
        differences.len(),
        differences.join("\n")
    );
}
