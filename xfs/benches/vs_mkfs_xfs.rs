//! Benchmark: tosskey-xfs against `mkfs.xfs -K` (xfsprogs 6.1) on sparse images of 2, 60
//! and 336 TiB (the last one is d3en.12xlarge's 24 x 14 TB), wall time (criterion) and
//! bytes written.
//!
//! Run: `cargo bench -p tosskey-xfs --bench vs_mkfs_xfs` (needs xfsprogs). Images over
//! 16 TiB do not fit an ext4 host filesystem, so they live in `TOSSKEY_BENCH_DIR`
//! (default `/dev/shm`, a tmpfs; mkfs.xfs's 2 GiB log is what it holds at most).
//! Both contenders run as child processes (this executable re-runs itself to format),
//! so process start-up is paid by both, on a fresh sparse image each time.
//!
//! Bytes written are the image's allocated bytes (`st_blocks * 512`) after the format:
//! both formatters start from a hole. mkfs.xfs zeroes its whole log (up to 2 GiB);
//! tosskey-xfs punches the image, which then reads as zeros, and writes the log's first
//! record only. On a block device tosskey-xfs zeroes the log too: see docs/results.md.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use criterion::{criterion_group, BenchmarkId, Criterion, SamplingMode};
use tosskey_xfs::{format, FormatOptions};

const TIB: u64 = 1 << 40;
const SIZES_TIB: [u64; 3] = [2, 60, 336];
const CHILD_FLAG: &str = "--format-child";

/// A formatter run as a child process on `image`.
struct Contender {
    label: &'static str,
    argv: Vec<String>,
}

fn mkfs_xfs() -> PathBuf {
    ["/usr/sbin/mkfs.xfs", "/sbin/mkfs.xfs"]
        .into_iter()
        .map(PathBuf::from)
        .find(|p| p.exists())
        .expect("mkfs.xfs not found: install xfsprogs")
}

fn contenders(image: &Path) -> Vec<Contender> {
    let image = image.display().to_string();
    vec![
        Contender {
            label: "tosskey-xfs",
            argv: vec![
                std::env::current_exe().unwrap().display().to_string(),
                CHILD_FLAG.to_string(),
                image.clone(),
            ],
        },
        Contender {
            label: "mkfs.xfs -K",
            argv: vec![
                mkfs_xfs().display().to_string(),
                "-q".into(),
                "-f".into(),
                "-K".into(),
                image,
            ],
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

fn vs_mkfs_xfs(c: &mut Criterion) {
    let dir = tempfile::tempdir_in(bench_dir()).unwrap();
    let image = dir.path().join("bench.img");
    let mut written = Vec::new();
    for size_tib in SIZES_TIB {
        let size = size_tib * TIB;
        let contenders = contenders(&image);
        let mut group = c.benchmark_group(format!("format {size_tib} TiB"));
        group.sampling_mode(SamplingMode::Flat);
        group.sample_size(10);
        group.warm_up_time(Duration::from_millis(500));
        group.measurement_time(Duration::from_secs(10));
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
            .find(|(s, l, _)| s == size_tib && l.starts_with("mkfs.xfs"))
            .map_or(1, |(_, _, b)| *b);
        println!(
            "  {size_tib:>4} TiB  {label:<14} {:>12} KiB  {:>8.4} of mkfs.xfs -K",
            bytes / 1024,
            *bytes as f64 / reference as f64
        );
    }
}

criterion_group!(benches, vs_mkfs_xfs);

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
