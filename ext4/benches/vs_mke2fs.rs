//! Benchmark (not a timed test): tosskey-ext4 against `mke2fs` 1.47 on the same sparse
//! 2 TiB image, without and with a journal, several repetitions, wall time and bytes
//! actually allocated in the image (`st_blocks * 512`).
//!
//! Run: `cargo bench -p tosskey-ext4 --bench vs_mke2fs` (needs e2fsprogs). Both formatters
//! run as child processes (this executable re-runs itself to format), so process start-up
//! is paid by both. mke2fs runs with the same features: its ext4 defaults minus
//! `resize_inode` (which this formatter leaves out), and once more with its full defaults.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use tosskey_ext4::{format, FormatOptions};

const SIZE: u64 = 2 << 40;
const REPETITIONS: usize = 15;
const CHILD_FLAG: &str = "--format-child";

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == CHILD_FLAG) {
        let target = PathBuf::from(&args[position + 1]);
        let journal = args.iter().any(|a| a == "--journal");
        let opts = FormatOptions {
            journal,
            ..FormatOptions::default()
        };
        if let Err(error) = format(&target, &opts) {
            eprintln!("{error}");
            std::process::exit(1);
        }
        return;
    }
    let mke2fs = ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .into_iter()
        .map(Path::new)
        .find(|p| p.exists())
        .expect("mke2fs not found: install e2fsprogs");
    let version = Command::new(mke2fs).arg("-V").output().unwrap();
    let dir = tempfile::tempdir_in(std::env::temp_dir()).unwrap();
    let image = dir.path().join("bench.img");
    println!(
        "2 TiB sparse image in {}, {REPETITIONS} runs each; {}",
        dir.path().display(),
        String::from_utf8_lossy(&version.stderr)
            .lines()
            .next()
            .unwrap_or("")
    );
    println!(
        "{:<52} {:>9} {:>9} {:>14}",
        "formatter", "median s", "min s", "allocated"
    );
    for journal in [false, true] {
        let mut contenders: Vec<(String, Vec<String>)> = Vec::new();
        let self_exe = std::env::current_exe().unwrap();
        let mut ours = vec![
            self_exe.display().to_string(),
            CHILD_FLAG.to_string(),
            image.display().to_string(),
        ];
        if journal {
            ours.push("--journal".to_string());
        }
        contenders.push((
            format!("tosskey-ext4{}", if journal { " --journal" } else { "" }),
            ours,
        ));
        for resize_inode in [false, true] {
            let mut features = Vec::new();
            if !journal {
                features.push("^has_journal");
            }
            if !resize_inode {
                features.push("^resize_inode");
            }
            let mut argv = vec![
                mke2fs.display().to_string(),
                "-q".to_string(),
                "-t".to_string(),
                "ext4".to_string(),
                "-T".to_string(),
                "largefile4".to_string(),
            ];
            if !features.is_empty() {
                argv.push("-O".to_string());
                argv.push(features.join(","));
            }
            argv.push("-F".to_string());
            argv.push(image.display().to_string());
            let label = if features.is_empty() {
                "mke2fs -t ext4 -T largefile4".to_string()
            } else {
                format!("mke2fs -t ext4 -T largefile4 -O {}", features.join(","))
            };
            contenders.push((label, argv));
        }
        // Interleave the contenders so load changes on a shared machine hit all alike.
        let mut times = vec![Vec::new(); contenders.len()];
        let mut allocated = vec![0u64; contenders.len()];
        for _ in 0..REPETITIONS {
            for (i, (label, argv)) in contenders.iter().enumerate() {
                fresh_image(&image);
                let start = Instant::now();
                let status = Command::new(&argv[0]).args(&argv[1..]).status().unwrap();
                times[i].push(start.elapsed());
                assert!(status.success(), "{label} failed");
                allocated[i] = std::fs::metadata(&image).unwrap().blocks() * 512;
            }
        }
        let mut feature_lines = Vec::new();
        for (i, (label, argv)) in contenders.iter().enumerate() {
            fresh_image(&image);
            assert!(Command::new(&argv[0])
                .args(&argv[1..])
                .status()
                .unwrap()
                .success());
            feature_lines.push(features_of(&image));
            times[i].sort();
            println!(
                "{:<52} {:>9.3} {:>9.3} {:>10.1} MiB",
                label,
                secs(times[i][times[i].len() / 2]),
                secs(times[i][0]),
                allocated[i] as f64 / f64::from(1 << 20)
            );
        }
        std::fs::remove_file(&image).ok();
        println!(
            "  same features as mke2fs -O ...,^resize_inode: {}",
            if feature_lines[0] == feature_lines[1] {
                "yes"
            } else {
                "NO"
            }
        );
        println!("  tosskey-ext4: {}", feature_lines[0]);
        println!("  mke2fs full defaults: {}", feature_lines[2]);
    }
}

/// Replace `image` with an empty sparse file of [`SIZE`] bytes.
fn fresh_image(image: &Path) {
    std::fs::remove_file(image).ok();
    let file = std::fs::File::create(image).unwrap();
    file.set_len(SIZE).unwrap();
}

fn secs(duration: Duration) -> f64 {
    duration.as_secs_f64()
}

/// The sorted feature list from `dumpe2fs -h`.
fn features_of(image: &Path) -> String {
    let output = Command::new("dumpe2fs")
        .arg("-h")
        .arg(image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&output.stdout);
    let line = text
        .lines()
        .find_map(|l| l.strip_prefix("Filesystem features:"))
        .unwrap_or("")
        .to_string();
    let mut features: Vec<&str> = line.split_whitespace().collect();
    features.sort_unstable();
    features.join(" ")
}
