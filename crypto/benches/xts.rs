//! Throughput of the dm-crypt sector cipher, 4096-byte sectors with 512-byte IV units
//! (the tool's default layout), against a naive `xts-mode` + `aes`/`twofish` loop.
//!
//! `cargo bench -p tosskey-crypto --bench xts`; criterion prints MiB/s or GiB/s per row.
//! For each of aes-xts-512 / twofish-xts-512 (64-byte keys) and the 256-bit variants:
//!
//! - group `<cipher>/cpu`: single-thread rows timed in *thread CPU time*
//!   (CLOCK_THREAD_CPUTIME_ID), so that a machine shared with other jobs still gives
//!   per-core numbers: `naive` (xts-mode, one sector at a time), `portable` (our
//!   non-SIMD path), `simd` / `simd-decrypt` (the path `SectorCipher::new` picks: for
//!   Twofish the one its calibration measured fastest, printed with the rates), and for
//!   Twofish one row per other SIMD path this CPU runs (`avx2-shuffle`, `avx2-loads`,
//!   `avx512-gather`), forced;
//! - group `<cipher>/wall`: wall-clock `single` vs `all-cores` (encrypt_parallel) on
//!   the same 16 MiB run; their ratio is the multi-core speed-up (only meaningful on an
//!   otherwise idle machine).

use std::hint::black_box;
use std::time::Duration;

use aes::cipher::KeyInit;
use criterion::measurement::{Measurement, ValueFormatter, WallTime};
use criterion::{criterion_group, criterion_main, BenchmarkGroup, Criterion, Throughput};
use nix::time::{clock_gettime, ClockId};
use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{twofish_calibration, SectorCipher, SectorLayout, SectorSize, TwofishPath};
use xts_mode::Xts128;

const SECTOR: usize = 4096;
/// Big enough to amortize thread start-up in the all-cores rows.
const RUN: usize = 16 << 20;

/// CPU time consumed by the benchmarking thread.
struct ThreadCpuTime;

static WALL: WallTime = WallTime;

impl Measurement for ThreadCpuTime {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu_now()
    }
    fn end(&self, start: Duration) -> Duration {
        thread_cpu_now().saturating_sub(start)
    }
    fn add(&self, v1: &Duration, v2: &Duration) -> Duration {
        *v1 + *v2
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        WALL.formatter()
    }
}

fn thread_cpu_now() -> Duration {
    let t = clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID).expect("thread CPU clock");
    Duration::from(t)
}

fn layout() -> SectorLayout {
    SectorLayout {
        sector_size: SectorSize::S4096,
        iv_large_sectors: false,
        iv_offset: 0,
    }
}

fn naive_encrypt<C>(xts: &Xts128<C>, data: &mut [u8])
where
    C: aes::cipher::BlockCipherEncrypt
        + aes::cipher::BlockSizeUser<BlockSize = aes::cipher::consts::U16>,
{
    for (i, sector) in data.chunks_mut(SECTOR).enumerate() {
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&(8 * i as u64).to_le_bytes());
        xts.encrypt_sector(sector, iv.into());
    }
}

const CASES: [(&str, BlockCipher, usize); 4] = [
    ("aes-xts-512", BlockCipher::Aes, 64),
    ("twofish-xts-512", BlockCipher::Twofish, 64),
    ("aes-xts-256", BlockCipher::Aes, 32),
    ("twofish-xts-256", BlockCipher::Twofish, 32),
];

fn key() -> Vec<u8> {
    (0..64u8)
        .map(|i| i.wrapping_mul(37).wrapping_add(11))
        .collect()
}

fn naive_row<M: Measurement>(group: &mut BenchmarkGroup<'_, M>, cipher: BlockCipher, key: &[u8]) {
    // The naive twofish loop runs at well under 10 MiB/s: give it a small buffer.
    let len = if cipher == BlockCipher::Twofish {
        64 << 10
    } else {
        1 << 20
    };
    let mut buf = vec![0x5au8; len];
    group.throughput(Throughput::Bytes(len as u64));
    let (k1, k2) = key.split_at(key.len() / 2);
    match (cipher, key.len()) {
        (BlockCipher::Aes, 64) => {
            let xts = Xts128::new(
                aes::Aes256::new_from_slice(k1).unwrap(),
                aes::Aes256::new_from_slice(k2).unwrap(),
            );
            group.bench_function("naive", |b| {
                b.iter(|| naive_encrypt(&xts, black_box(&mut buf)))
            });
        }
        (BlockCipher::Aes, _) => {
            let xts = Xts128::new(
                aes::Aes128::new_from_slice(k1).unwrap(),
                aes::Aes128::new_from_slice(k2).unwrap(),
            );
            group.bench_function("naive", |b| {
                b.iter(|| naive_encrypt(&xts, black_box(&mut buf)))
            });
        }
        (BlockCipher::Twofish, _) => {
            let xts = Xts128::new(
                twofish::Twofish::new_from_slice(k1).unwrap(),
                twofish::Twofish::new_from_slice(k2).unwrap(),
            );
            group.bench_function("naive", |b| {
                b.iter(|| naive_encrypt(&xts, black_box(&mut buf)))
            });
        }
    }
}

fn per_core(c: &mut Criterion<ThreadCpuTime>) {
    let key = key();
    for (name, cipher, key_len) in CASES {
        let key = &key[..key_len];
        let simd = SectorCipher::new(cipher, key, layout()).expect("cipher");
        let portable = SectorCipher::new_portable(cipher, key, layout()).expect("cipher");
        let mut group = c.benchmark_group(format!("{name}/cpu"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        naive_row(&mut group, cipher, key);
        let mut buf = vec![0x5au8; 1 << 20];
        group.throughput(Throughput::Bytes(buf.len() as u64));
        group.bench_function("portable", |b| {
            b.iter(|| portable.encrypt(0, black_box(&mut buf)).expect("encrypt"))
        });
        eprintln!("{name}: simd rows use {}", simd.implementation());
        if cipher == BlockCipher::Twofish {
            eprintln!("{name}: {}", twofish_calibration(key_len / 2).reason());
        }
        group.bench_function("simd", |b| {
            b.iter(|| simd.encrypt(0, black_box(&mut buf)).expect("encrypt"))
        });
        group.bench_function("simd-decrypt", |b| {
            b.iter(|| simd.decrypt(0, black_box(&mut buf)).expect("decrypt"))
        });
        if cipher == BlockCipher::Twofish {
            for path in TwofishPath::ALL {
                if path == TwofishPath::Portable || !path.runs_here() {
                    continue;
                }
                let forced = SectorCipher::with_twofish_path(path, key, layout()).expect("cipher");
                group.bench_function(path.name(), |b| {
                    b.iter(|| forced.encrypt(0, black_box(&mut buf)).expect("encrypt"))
                });
            }
        }
        group.finish();
    }
}

fn all_cores(c: &mut Criterion) {
    let key = key();
    for (name, cipher, key_len) in CASES {
        let ours = SectorCipher::new(cipher, &key[..key_len], layout()).expect("cipher");
        let mut group = c.benchmark_group(format!("{name}/wall"));
        group
            .sample_size(20)
            .measurement_time(Duration::from_secs(2))
            .warm_up_time(Duration::from_millis(500));
        let mut buf = vec![0x5au8; RUN];
        group.throughput(Throughput::Bytes(RUN as u64));
        group.bench_function("single", |b| {
            b.iter(|| ours.encrypt(0, black_box(&mut buf)).expect("encrypt"))
        });
        group.bench_function("all-cores", |b| {
            b.iter(|| {
                ours.encrypt_parallel(0, black_box(&mut buf))
                    .expect("encrypt")
            })
        });
        group.finish();
    }
}

criterion_group! {
    name = cpu;
    config = Criterion::default().with_measurement(ThreadCpuTime);
    targets = per_core
}
criterion_group!(wall, all_cores);
criterion_main!(cpu, wall);
