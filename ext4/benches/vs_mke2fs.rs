//! Benchmark: tosskey-ext4 against `mke2fs` 1.47 on sparse images of 2, 60 and 336 TiB
//! (the last one is d3en.12xlarge's 24 x 14 TB), wall time (criterion) and bytes written.
//!
//! Run: `cargo bench -p tosskey-ext4 --bench vs_mke2fs` (needs e2fsprogs). Images over
//! 16 TiB do not fit an ext4 host filesystem, so they live in `TOSSKEY_BENCH_DIR`
//! (default `/dev/shm`, a tmpfs; the 336 TiB mke2fs run holds about 1.2 GB there).
//! Every contender runs as a child process (this executable re-runs itself to format),
//! so process start-up is paid by all, on a fresh sparse image each time. Contenders:
//! - `tosskey-ext4`: the defaults (`sparse_super2` without backups, 256-group flex
//!   groups, `meta_bg` above 192 TiB, no journal);
//! - `mke2fs -T largefile4 -O ^has_journal`: what `mke2fs -t ext4` writes without a
//!   journal (the reference);
//! - `mke2fs (same layout)`: mke2fs told to make our layout, which shows that the savings
//!   come from the layout and what mke2fs takes to write it.
//!
//! Bytes written are the image's allocated bytes (`st_blocks * 512`) after the format:
//! every formatter starts from a hole and writes only what it needs.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use tosskey_ext4::{format, FormatOptions};

const TIB: u64 = 1 << 40;
const SIZES_TIB: [u64; 3] = [2, 60, 336];
const CHILD_FLAG: &str = "--format-child";

/// A formatter run as a child process on `image`.
struct Contender {
    label: &'static str,
    argv: Vec<String>,
}

fn mke2fs() -> PathBuf {
    ["/usr/sbin/mke2fs", "/sbin/mke2fs"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mke2fs not found: install e2fsprogs")
}

fn contenders(image: &Path, flex_groups: u32) -> Vec<Contender> {
    let image = image.display().to_string();
    let mke2fs = mke2fs().display().to_string();
    let base = |extra: &[&str]| {
        let mut argv: Vec<String> = [mke2fs.as_str(), "-q", "-t", "ext4", "-T", "largefile4"]
            .into_iter()
            .chain(extra.iter().copied())
            .map(String::from)
            .collect();
        argv.extend(["-F".to_string(), image.clone()]);
        argv
    };
    let flex = flex_groups.to_string();
    vec![
        Contender {
            label: "tosskey-ext4",
            argv: vec![
                std::env::current_exe().unwrap().display().to_string(),
                CHILD_FLAG.to_string(),
                image.clone(),
            ],
        },
        Contender {
            label: "mke2fs -T largefile4 -O ^has_journal",
            argv: base(&["-O", "^has_journal"]),
        },
        Contender {
            label: "mke2fs (same layout)",
            argv: base(&[
                "-O",
                "^has_journal,^resize_inode,sparse_super2",
                "-E",
                "num_backup_sb=0",
                "-G",
                &flex,
            ]),
        },
    ]
}

/// Replace `image` with an empty sparse file of `size` bytes.
fn fresh_image(image: &Path, size: u64) {
    std::fs::remove_file(image).ok();
    let file = std::fs::File::create(image).unwrap();
    file.set_len(size).unwrap();
}

/// Format a fresh image with `contender`; the wall time of the child process.
fn run(contender: &Contender, image: &Path, size: u64) -> Duration {
    fresh_image(image, size);
    let start = Instant::now();
    let status = Command::new(&contender.argv[0])
        .args(&contender.argv[1..])
        .status()
        .unwrap();
    let elapsed = start.elapsed();
    assert!(status.success(), "{} failed", contender.label);
    elapsed
}

fn bench_dir() -> PathBuf {
    std::env::var_os("TOSSKEY_BENCH_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/dev/shm"))
}

fn vs_mke2fs(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let image = dir.path().join("bench.img");
    let mut written = Vec::new();
    for size_tib in SIZES_TIB {
        let size = size_tib * TIB;
        // The flex group size tosskey-ext4 picks, for mke2fs's "same layout" run.
        fresh_image(&image, size);
        let flex_groups = format(&image, &FormatOptions::default())
            .unwrap()
            .flex_groups;
        let contenders = contenders(&image, flex_groups);
        let mut group = c.benchmark_group(format!("format {size_tib} TiB"));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(size_tib.clamp(5, 30)));
        for contender in &contenders {
            group.bench_function(BenchmarkId::from_parameter(contender.label), |b| {
                b.iter_custom(|iterations| {
                    (0..iterations).map(|_| run(contender, &image, size)).sum()
                })
            });
            run(contender, &image, size);
            let bytes = std::fs::metadata(&image).unwrap().blocks() * 512;
            written.push((size_tib, contender.label, bytes));
        }
        group.finish();
        std::fs::remove_file(&image).ok();
    }
    println!("\nbytes written (allocated in the image after the format):");
    for (size_tib, label, bytes) in &written {
        let reference = written
            .iter()
            .find(|(s, l, _)| s == size_tib && l.contains("^has_journal"))
            .map_or(1, |(_, _, b)| *b);
        println!(
            "  {size_tib:>4} TiB  {label:<40} {:>12} KiB  {:>6.3} of mke2fs -T largefile4",
            bytes / 1024,
            *bytes as f64 / reference as f64
        );
    }
}

criterion_group!(benches, vs_mke2fs);

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(position) = args.iter().position(|a| a == CHILD_FLAG) {
        let target = PathBuf::from(&args[position + 1]);
        if let Err(error) = format(&target, &FormatOptions::default()) {
            eprintln!("{error}");
            std::process::exit(1);
        }
        return;
    }
    benches();
    Criterion::default().configure_from_args().final_summary();
}
