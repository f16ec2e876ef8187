//! `tosskey bench`: what the ciphers and dm-crypt do on this machine, in the spirit of
//! `cryptsetup benchmark`.
//!
//! Cipher mode: for each supported cipher and key size, encryption and decryption MiB/s of
//! the kernel's skcipher through AF_ALG (one request per 4096-byte crypt sector with its own
//! plain64 IV, as dm-crypt issues them) and of tosskey's userspace [`SectorCipher`], on one
//! core and on all cores. A kernel without AF_ALG or without the cipher gets an `n/a` row
//! saying why, never a failure.
//!
//! Device mode (`--device`): dm-crypt over a brd RAM disk (block major 1 by the opened
//! descriptor's device number, whatever the path is called, opened `O_EXCL` so a mounted
//! or held one is refused; never anything else: the bench overwrites it) for each cipher × sector size 512/4096 × workqueues
//! on/bypassed, sequential `O_DIRECT` writes and reads, so the table defaults are chosen by
//! measurement.
//!
//! Keys are random throwaway [`VolumeKey`]s, never printed.

use std::fmt::Write as _;
use std::fs::{File, OpenOptions};
use std::io::{Read as _, Seek as _, SeekFrom, Write as _};
use std::os::fd::AsRawFd as _;
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _, OpenOptionsExt as _};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::Context as _;
use serde::Serialize;
use tosskey_crypto::{
    BlockCipher, CipherSpec, KeySize, SectorCipher, SectorLayout, SectorSize, VolumeKey,
};
use tosskey_dm::{
    CryptOptions, CryptTable, CryptTarget, DevId, DmControl, DmName, DmUuid, KeyLoading, Sectors,
};
use tosskey_sysutil::{read_attr_u64, AlignedBuf, SystemRoot};

use crate::error::Refusal;
use crate::exec::af_alg::{kernel_driver, AfAlgError, Direction, Skcipher};
use crate::exec::kernel::{HostKernel, StackKernel};

const MIB: f64 = 1024.0 * 1024.0;
/// dm-crypt's request size with `sector_size:4096`: one skcipher request per crypt sector.
const CRYPT_SECTOR: usize = 4096;
/// Bytes per round on one core (one userspace call, or 64 kernel requests), and per round
/// on all cores (large enough that thread start-up in the `*_parallel` API is noise, small
/// enough that a round stays short in an emulated guest).
const SINGLE_CORE_RUN: usize = 256 << 10;
const ALL_CORES_RUN_MIN: usize = 4 << 20;
const ALL_CORES_RUN_MAX: usize = 64 << 20;

/// Bytes per all-cores round: about 20 ms of single-core work, so that starting the
/// threads of the `*_parallel` API stays noise on fast ciphers (AES at GiB/s) while a round
/// stays short on slow ones (an emulated guest), in whole 4 KiB sectors.
fn all_cores_run(single_core_mib_s: f64) -> usize {
    let wanted = single_core_mib_s * MIB * 0.020;
    let sectors = (wanted / to_f64(CRYPT_SECTOR)).clamp(
        to_f64(ALL_CORES_RUN_MIN / CRYPT_SECTOR),
        to_f64(ALL_CORES_RUN_MAX / CRYPT_SECTOR),
    );
    // Clamped to [1024, 16384]: the conversion cannot truncate.
    #[allow(clippy::cast_possible_truncation, clippy::cast_sign_loss)]
    let sectors = sectors as usize;
    sectors * CRYPT_SECTOR
}
/// Size of each O_DIRECT request in device mode.
const DEVICE_REQUEST: usize = 1 << 20;

/// The ciphers and key sizes tosskey supports, in table order.
const CIPHERS: [(&str, u32); 4] = [
    ("twofish-xts-plain64", 256),
    ("twofish-xts-plain64", 512),
    ("aes-xts-plain64", 256),
    ("aes-xts-plain64", 512),
];

/// What to measure and for how long.
#[derive(Debug, Clone)]
pub struct BenchOptions {
    /// Time spent on each measured cell.
    pub duration: Duration,
    /// The RAM disk for device mode.
    pub ramdisk: PathBuf,
}

/// Where the numbers came from.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Machine {
    pub cpu: String,
    pub cores: usize,
    pub kernel: String,
}

impl Machine {
    pub fn detect() -> Machine {
        let root = SystemRoot::host();
        let cpu = std::fs::read_to_string(root.proc.join("cpuinfo"))
            .ok()
            .and_then(|info| {
                info.lines().find_map(|line| {
                    let (key, value) = line.split_once(':')?;
                    (key.trim() == "model name").then(|| value.trim().to_owned())
                })
            })
            .unwrap_or_else(|| "unknown".to_owned());
        let kernel = crate::commands::provision::kernel_release(&root);
        Machine {
            cpu,
            cores: cores(),
            kernel,
        }
    }
}

fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, usize::from)
}

/// Throughput in MiB/s of one direction, on one core and on all cores.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Speeds {
    pub single_core: f64,
    pub all_cores: f64,
}

/// The kernel side of a row: measured, or why not.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "snake_case", tag = "status")]
pub enum KernelResult {
    Measured {
        /// The crypto API driver (from /proc/crypto), e.g. `xts-aes-aesni`.
        driver: String,
        encrypt: Speeds,
        decrypt: Speeds,
    },
    Unavailable {
        /// Short reason for the table (`AF_ALG unavailable`).
        reason: String,
        /// The full error with its fix.
        detail: String,
    },
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CipherRow {
    pub cipher: String,
    pub key_bits: u32,
    /// The kernel skcipher name (`xts(twofish)`).
    pub skcipher: String,
    pub kernel: KernelResult,
    /// Which userspace implementation ran (CPU-dependent).
    pub userspace_implementation: String,
    /// Why it was chosen: Twofish by the rates the calibration measured on this CPU,
    /// AES by CPU features.
    pub userspace_choice: String,
    pub userspace_encrypt: Speeds,
    pub userspace_decrypt: Speeds,
}

/// Kernel MiB/s over userspace MiB/s for one cell (None when the kernel was not measured).
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct Ratios {
    pub encrypt_single_core: f64,
    pub encrypt_all_cores: f64,
    pub decrypt_single_core: f64,
    pub decrypt_all_cores: f64,
}

impl CipherRow {
    pub fn ratios(&self) -> Option<Ratios> {
        let KernelResult::Measured {
            encrypt, decrypt, ..
        } = &self.kernel
        else {
            return None;
        };
        let e = self.userspace_encrypt;
        let d = self.userspace_decrypt;
        Some(Ratios {
            encrypt_single_core: ratio(encrypt.single_core, e.single_core),
            encrypt_all_cores: ratio(encrypt.all_cores, e.all_cores),
            decrypt_single_core: ratio(decrypt.single_core, d.single_core),
            decrypt_all_cores: ratio(decrypt.all_cores, d.all_cores),
        })
    }
}

fn ratio(kernel: f64, userspace: f64) -> f64 {
    if userspace > 0.0 {
        kernel / userspace
    } else {
        f64::INFINITY
    }
}

/// `tosskey bench` output.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CipherReport {
    pub machine: Machine,
    pub sector_bytes: usize,
    pub seconds_per_cell: f64,
    pub rows: Vec<CipherRowJson>,
}

/// A row with its ratios, as serialized.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct CipherRowJson {
    #[serde(flatten)]
    pub row: CipherRow,
    /// Kernel / userspace; absent when the kernel side was not measured.
    pub kernel_over_userspace: Option<Ratios>,
}

impl From<CipherRow> for CipherRowJson {
    fn from(row: CipherRow) -> Self {
        let kernel_over_userspace = row.ratios();
        CipherRowJson {
            row,
            kernel_over_userspace,
        }
    }
}

/// Runs the cipher benchmark for every supported cipher and key size.
pub fn run_ciphers(options: &BenchOptions) -> anyhow::Result<CipherReport> {
    let mut rows = Vec::new();
    for (spec, bits) in CIPHERS {
        let spec: CipherSpec = spec.parse()?;
        rows.push(bench_cipher(&spec, bits, options.duration)?.into());
    }
    Ok(CipherReport {
        machine: Machine::detect(),
        sector_bytes: CRYPT_SECTOR,
        seconds_per_cell: options.duration.as_secs_f64(),
        rows,
    })
}

fn bench_cipher(spec: &CipherSpec, bits: u32, duration: Duration) -> anyhow::Result<CipherRow> {
    let key = VolumeKey::generate(KeySize::from_bits(bits)?)?;
    let layout = SectorLayout {
        sector_size: SectorSize::S4096,
        iv_large_sectors: false,
        iv_offset: 0,
    };
    let cipher = SectorCipher::new(spec.block_cipher(), key.expose_secret(), layout)?;
    let userspace = |encrypt: bool| -> anyhow::Result<Speeds> {
        let single_core = userspace_speed(&cipher, encrypt, SINGLE_CORE_RUN, false, duration)?;
        let run = all_cores_run(single_core);
        Ok(Speeds {
            single_core,
            all_cores: userspace_speed(&cipher, encrypt, run, true, duration)?,
        })
    };
    let userspace_encrypt = userspace(true)?;
    let userspace_decrypt = userspace(false)?;
    let skcipher = spec.kernel_skcipher_name();
    let kernel = match kernel_speeds(skcipher, key.expose_secret(), duration) {
        Ok(measured) => measured,
        Err(error) => KernelResult::Unavailable {
            reason: error.short(),
            detail: error.to_string(),
        },
    };
    Ok(CipherRow {
        cipher: spec.to_string(),
        key_bits: bits,
        skcipher: skcipher.to_owned(),
        kernel,
        userspace_implementation: cipher.implementation().to_owned(),
        userspace_choice: match spec.block_cipher() {
            BlockCipher::Twofish => {
                tosskey_crypto::twofish_calibration(key.expose_secret().len() / 2).reason()
            }
            BlockCipher::Aes => "chosen by CPU features".to_owned(),
        },
        userspace_encrypt,
        userspace_decrypt,
    })
}

/// Calls `round` (which returns the bytes it processed) until `duration` has passed,
/// after one untimed warm-up round; returns MiB/s.
fn measure<E>(duration: Duration, mut round: impl FnMut() -> Result<usize, E>) -> Result<f64, E> {
    round()?;
    let started = Instant::now();
    let mut bytes = 0usize;
    loop {
        bytes += round()?;
        let elapsed = started.elapsed();
        if elapsed >= duration {
            return Ok(to_f64(bytes) / MIB / elapsed.as_secs_f64());
        }
    }
}

/// Byte counts far below 2^53: exact in an f64.
#[allow(clippy::cast_precision_loss)]
fn to_f64(bytes: usize) -> f64 {
    bytes as f64
}

/// Filler for benchmark buffers: varied bytes, never key material.
fn pattern(len: usize) -> Vec<u8> {
    (0..len)
        .map(|i| (i.wrapping_mul(131) >> 3).to_le_bytes()[0])
        .collect()
}

fn userspace_speed(
    cipher: &SectorCipher,
    encrypt: bool,
    run_bytes: usize,
    all_cores: bool,
    duration: Duration,
) -> anyhow::Result<f64> {
    let mut data = pattern(run_bytes);
    let mut start = 0u64;
    let step = u64::try_from(run_bytes / 512)?;
    Ok(measure(duration, || {
        match (encrypt, all_cores) {
            (true, false) => cipher.encrypt(start, &mut data),
            (false, false) => cipher.decrypt(start, &mut data),
            (true, true) => cipher.encrypt_parallel(start, &mut data),
            (false, true) => cipher.decrypt_parallel(start, &mut data),
        }?;
        start += step;
        Ok::<_, tosskey_crypto::Error>(run_bytes)
    })?)
}

fn kernel_speeds(
    skcipher: &str,
    key: &[u8],
    duration: Duration,
) -> Result<KernelResult, AfAlgError> {
    let transform = Skcipher::new(skcipher, key)?;
    // Templates such as xts(twofish) are instantiated by the bind above.
    let driver = std::fs::read_to_string(SystemRoot::host().proc.join("crypto"))
        .ok()
        .and_then(|text| kernel_driver(&text, skcipher))
        .map_or_else(|| "unknown".to_owned(), |(driver, _)| driver);
    let speeds = |direction| -> Result<Speeds, AfAlgError> {
        Ok(Speeds {
            single_core: kernel_speed(&transform, direction, duration)?,
            all_cores: std::thread::scope(|scope| {
                // Workers that cannot start (RLIMIT_NPROC, no memory for a stack) make the
                // all-cores figure fall short rather than the whole benchmark fail: the
                // figure is a sum over the workers that ran, and always at least this one.
                let workers: Vec<_> = (1..cores())
                    .map_while(|_| {
                        std::thread::Builder::new()
                            .spawn_scoped(scope, || kernel_speed(&transform, direction, duration))
                            .ok()
                    })
                    .collect();
                let own = kernel_speed(&transform, direction, duration);
                workers
                    .into_iter()
                    .map(|worker| {
                        worker
                            .join()
                            .unwrap_or_else(|panic| std::panic::resume_unwind(panic))
                    })
                    .chain([own])
                    .sum::<Result<f64, AfAlgError>>()
            })?,
        })
    };
    Ok(KernelResult::Measured {
        driver,
        encrypt: speeds(Direction::Encrypt)?,
        decrypt: speeds(Direction::Decrypt)?,
    })
}

/// One operation socket, one request per 4096-byte crypt sector with its plain64 IV (the
/// sector number in 512-byte units, little-endian), as dm-crypt sends them.
fn kernel_speed(
    transform: &Skcipher,
    direction: Direction,
    duration: Duration,
) -> Result<f64, AfAlgError> {
    let mut operation = transform.operation()?;
    let input = pattern(SINGLE_CORE_RUN);
    let mut output = vec![0u8; SINGLE_CORE_RUN];
    let mut position = 0u64;
    measure(duration, || {
        for (from, to) in input
            .chunks_exact(CRYPT_SECTOR)
            .zip(output.chunks_exact_mut(CRYPT_SECTOR))
        {
            let mut iv = [0u8; 16];
            iv[..8].copy_from_slice(&position.to_le_bytes());
            operation.crypt(direction, &iv, from, to)?;
            position += SectorSize::S4096.units_of_512();
        }
        Ok(SINGLE_CORE_RUN)
    })
}

fn cell(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.1}"))
}

fn ratio_cell(value: Option<f64>) -> String {
    value.map_or_else(|| "n/a".to_owned(), |v| format!("{v:.2}"))
}

/// The cipher table, one line per cipher × key size × direction.
pub fn render_ciphers(report: &CipherReport) -> String {
    let cores = report.machine.cores;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({} cores), kernel {}; {}-byte sectors, one request per sector, {:.1}s per cell",
        report.machine.cpu,
        cores,
        report.machine.kernel,
        report.sector_bytes,
        report.seconds_per_cell
    );
    let _ = writeln!(
        out,
        "{:<20} {:>4} {:<7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "cipher", "bits", "op", "kernel/1", "kernel/all", "user/1", "user/all", "k/u 1", "k/u all"
    );
    let _ = writeln!(
        out,
        "{:<20} {:>4} {:<7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
        "", "", "", "MiB/s", "MiB/s", "MiB/s", "MiB/s", "ratio", "ratio"
    );
    for json in &report.rows {
        let row = &json.row;
        let ratios = json.kernel_over_userspace;
        for (op, user, kernel, ratio_single, ratio_all) in [
            (
                "encrypt",
                row.userspace_encrypt,
                kernel_side(&row.kernel, Direction::Encrypt),
                ratios.map(|r| r.encrypt_single_core),
                ratios.map(|r| r.encrypt_all_cores),
            ),
            (
                "decrypt",
                row.userspace_decrypt,
                kernel_side(&row.kernel, Direction::Decrypt),
                ratios.map(|r| r.decrypt_single_core),
                ratios.map(|r| r.decrypt_all_cores),
            ),
        ] {
            let _ = writeln!(
                out,
                "{:<20} {:>4} {:<7} {:>10} {:>10} {:>10} {:>10} {:>8} {:>8}",
                row.cipher,
                row.key_bits,
                op,
                cell(kernel.map(|s| s.single_core)),
                cell(kernel.map(|s| s.all_cores)),
                cell(Some(user.single_core)),
                cell(Some(user.all_cores)),
                ratio_cell(ratio_single),
                ratio_cell(ratio_all),
            );
        }
        let kernel_note = match &row.kernel {
            KernelResult::Measured { driver, .. } => format!("kernel {} = {driver}", row.skcipher),
            KernelResult::Unavailable { reason, .. } => {
                format!("kernel {}: n/a: {reason}", row.skcipher)
            }
        };
        let _ = writeln!(
            out,
            "{:<20} {:>4} {kernel_note}; userspace {} ({})",
            "", "", row.userspace_implementation, row.userspace_choice
        );
    }
    if let Some(detail) = report.rows.iter().find_map(|json| match &json.row.kernel {
        KernelResult::Unavailable { detail, .. } => Some(detail),
        KernelResult::Measured { .. } => None,
    }) {
        let _ = writeln!(out, "note: {detail}");
    }
    out
}

fn kernel_side(kernel: &KernelResult, direction: Direction) -> Option<Speeds> {
    match kernel {
        KernelResult::Measured {
            encrypt, decrypt, ..
        } => Some(match direction {
            Direction::Encrypt => *encrypt,
            Direction::Decrypt => *decrypt,
        }),
        KernelResult::Unavailable { .. } => None,
    }
}

// ---------------------------------------------------------------------------------------
// Device mode.

/// One dm-crypt configuration measured over the RAM disk.
#[derive(Debug, Clone, Copy, Serialize, PartialEq)]
pub struct DeviceConfig {
    /// `None` is the bare RAM disk (no dm-crypt): the ceiling.
    pub cipher: Option<&'static str>,
    pub key_bits: u32,
    pub sector_size: u32,
    /// `no_read_workqueue` and `no_write_workqueue` both set.
    pub bypass_workqueues: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceRow {
    #[serde(flatten)]
    pub config: DeviceConfig,
    pub write_mib_s: f64,
    pub read_mib_s: f64,
}

/// The fastest table options for one cipher, by measurement.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct Chosen {
    pub cipher: &'static str,
    pub sector_size: u32,
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
}

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct DeviceReport {
    pub machine: Machine,
    pub device: PathBuf,
    pub device_bytes: u64,
    pub request_bytes: usize,
    pub seconds_per_cell: f64,
    pub rows: Vec<DeviceRow>,
    pub chosen: Vec<Chosen>,
}

const DEVICE_CIPHERS: [&str; 2] = ["twofish-xts-plain64", "aes-xts-plain64"];
const DEVICE_KEY_BITS: u32 = 512;

/// The configurations device mode measures: the bare disk, then each cipher × sector size
/// × workqueues.
pub fn device_configs() -> Vec<DeviceConfig> {
    let mut configs = vec![DeviceConfig {
        cipher: None,
        key_bits: 0,
        sector_size: 512,
        bypass_workqueues: false,
    }];
    for cipher in DEVICE_CIPHERS {
        for sector_size in [512, 4096] {
            for bypass_workqueues in [false, true] {
                configs.push(DeviceConfig {
                    cipher: Some(cipher),
                    key_bits: DEVICE_KEY_BITS,
                    sector_size,
                    bypass_workqueues,
                });
            }
        }
    }
    configs
}

/// Picks, per cipher, the sector size with the best read+write sum, and each workqueue flag
/// by its own direction (reads decide `no_read_workqueue`, writes `no_write_workqueue`) at
/// that sector size.
pub fn choose_defaults(rows: &[DeviceRow]) -> Vec<Chosen> {
    let mut chosen = Vec::new();
    for cipher in DEVICE_CIPHERS {
        let of_cipher: Vec<&DeviceRow> = rows
            .iter()
            .filter(|row| row.config.cipher == Some(cipher))
            .collect();
        let best_sector = [512, 4096]
            .into_iter()
            .filter(|size| of_cipher.iter().any(|r| r.config.sector_size == *size))
            .max_by(|a, b| {
                let total = |size: u32| -> f64 {
                    of_cipher
                        .iter()
                        .filter(|r| r.config.sector_size == size)
                        .map(|r| r.read_mib_s + r.write_mib_s)
                        .fold(0.0, f64::max)
                };
                total(*a).total_cmp(&total(*b))
            });
        let Some(sector_size) = best_sector else {
            continue;
        };
        let at = |bypass: bool| {
            of_cipher.iter().find(|r| {
                r.config.sector_size == sector_size && r.config.bypass_workqueues == bypass
            })
        };
        let (Some(queued), Some(bypassed)) = (at(false), at(true)) else {
            continue;
        };
        chosen.push(Chosen {
            cipher,
            sector_size,
            no_read_workqueue: bypassed.read_mib_s > queued.read_mib_s,
            no_write_workqueue: bypassed.write_mib_s > queued.write_mib_s,
        });
    }
    chosen
}

/// Runs device mode over `options.ramdisk`.
pub fn run_device(options: &BenchOptions) -> anyhow::Result<DeviceReport> {
    let ramdisk = &options.ramdisk;
    let (held, dev, device_bytes) = check_ramdisk(ramdisk)?;
    let kernel = HostKernel::open(&SystemRoot::host())
        .context("device mode needs device-mapper (dm-mod, dm-crypt)")?;
    // The bare disk is measured through the checked, exclusive descriptor (the first row);
    // dm-crypt then claims the disk itself, by the device number checked there.
    let mut held = Some(held);
    let mut rows = Vec::new();
    for config in device_configs() {
        let (write, read) = match config.cipher {
            None => {
                let device = held
                    .as_mut()
                    .context("the bare RAM disk is measured before any mapping")?;
                sequential_io(device, device_bytes, options.duration)?
            }
            Some(cipher) => {
                held = None;
                let mapping = BenchMapping::open(&kernel, &config, cipher, dev, device_bytes)?;
                let mut device = open_direct(&mapping.node, 0)?;
                sequential_io(&mut device, device_bytes, options.duration)
                    .with_context(|| format!("I/O on {}", mapping.node.display()))?
            }
        };
        rows.push(DeviceRow {
            config,
            write_mib_s: write,
            read_mib_s: read,
        });
    }
    let chosen = choose_defaults(&rows);
    Ok(DeviceReport {
        machine: Machine::detect(),
        device: ramdisk.clone(),
        device_bytes,
        request_bytes: DEVICE_REQUEST,
        seconds_per_cell: options.duration.as_secs_f64(),
        rows,
        chosen,
    })
}

/// The block major of brd RAM disks (`RAMDISK_MAJOR`, `<linux/major.h>`).
const RAMDISK_MAJOR: u32 = 1;

/// Refuses anything but a brd RAM disk nobody else holds: the bench overwrites the whole
/// device. The path is only opened, never trusted: the opened descriptor's device number
/// must be brd's (any name, node or symlink can point elsewhere), and the open is
/// exclusive (`O_EXCL`: a mounted or otherwise held RAM disk is busy). Returns the
/// exclusive descriptor (`O_DIRECT`), the device number and the size.
fn check_ramdisk(path: &Path) -> anyhow::Result<(File, DevId, u64)> {
    let not_brd = |what: String| {
        refused(Refusal::NotRamDisk {
            path: path.to_owned(),
            what,
        })
    };
    // O_PATH: a handle on the node that opens no device (no claim, no driver open) until
    // the handle says it is brd's.
    let node = match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_PATH)
        .open(path)
    {
        Ok(node) => node,
        Err(e) => return not_brd(format!("cannot open it: {e}")),
    };
    let metadata = node.metadata()?;
    let rdev = metadata.rdev();
    if !metadata.file_type().is_block_device() || libc::major(rdev) != RAMDISK_MAJOR {
        let found = if metadata.file_type().is_block_device() {
            format!("block device {}:{}", libc::major(rdev), libc::minor(rdev))
        } else {
            "not a block device".to_owned()
        };
        return not_brd(format!(
            "not a brd RAM disk ({found}; brd's major is {RAMDISK_MAJOR})"
        ));
    }
    // The very node checked above, through its handle (no second lookup of the path).
    let handle = PathBuf::from(format!("/proc/self/fd/{}", node.as_raw_fd()));
    let device = match open_direct(&handle, libc::O_EXCL) {
        Ok(device) => device,
        Err(e)
            if e.downcast_ref::<std::io::Error>()
                .and_then(std::io::Error::raw_os_error)
                == Some(libc::EBUSY) =>
        {
            return refused(Refusal::RamDiskBusy {
                path: path.to_owned(),
            })
        }
        Err(e) => return Err(e.context(format!("opening {} exclusively", path.display()))),
    };
    let dev = DevId::new(libc::major(rdev), libc::minor(rdev));
    let sectors = read_attr_u64(&SystemRoot::host().sys.join(format!("dev/block/{dev}/size")))
        .with_context(|| format!("size of {}", path.display()))?;
    if sectors * 512 < 2 * DEVICE_REQUEST as u64 {
        return refused(Refusal::RamDiskTooSmall {
            path: path.to_owned(),
            bytes: sectors * 512,
        });
    }
    Ok((device, dev, sectors * 512))
}

/// `path` opened read-write with `O_DIRECT` and `extra_flags`.
fn open_direct(path: &Path, extra_flags: libc::c_int) -> anyhow::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .custom_flags(libc::O_DIRECT | extra_flags)
        .open(path)
        .map_err(|e| {
            anyhow::Error::new(e).context(format!("open {} with O_DIRECT", path.display()))
        })
}

/// A refusal (exit code 3) travelling through this module's `anyhow` results.
fn refused<T>(refusal: Refusal) -> anyhow::Result<T> {
    Err(crate::error::Error::Refused(refusal).into())
}

/// A dm-crypt mapping over the RAM disk with a throwaway key, removed on drop.
struct BenchMapping<'a> {
    kernel: &'a dyn StackKernel,
    name: DmName,
    node: PathBuf,
}

impl<'a> BenchMapping<'a> {
    fn open(
        kernel: &'a dyn StackKernel,
        config: &DeviceConfig,
        cipher: &str,
        dev: DevId,
        device_bytes: u64,
    ) -> anyhow::Result<Self> {
        let name = DmName::new(&format!("tosskey-bench-{}", std::process::id()))?;
        // Not the TOSSKEY- prefix: `tosskey status/close` must never mistake it for a volume.
        let uuid = DmUuid::new(&format!("tosskey-bench-{}", std::process::id()))?;
        let key = VolumeKey::generate(KeySize::from_bits(config.key_bits)?)?;
        let target = CryptTarget::new(cipher, dev, Sectors(device_bytes / 512))?.with_options(
            CryptOptions {
                sector_size: config.sector_size,
                no_read_workqueue: config.bypass_workqueues,
                no_write_workqueue: config.bypass_workqueues,
                ..CryptOptions::default()
            },
        );
        let activate = || -> crate::error::Result<Self> {
            kernel.create_dm(&name, &uuid)?;
            // Removed on drop from here on, also if the load or the resume fails.
            let mapping = BenchMapping {
                kernel,
                node: DmControl::node_path(&name),
                name: name.clone(),
            };
            let table = CryptTable::single(target);
            kernel.load_crypt(&name, &table, &[key.expose_secret()], KeyLoading::Auto)?;
            kernel.resume_dm(&name)?;
            Ok(mapping)
        };
        activate().with_context(|| format!("dm-crypt {cipher} over the RAM disk"))
    }
}

impl Drop for BenchMapping<'_> {
    fn drop(&mut self) {
        if let Err(error) = self.kernel.remove_dm(&self.name) {
            eprintln!("tosskey bench: cannot remove {}: {error}", self.name);
        }
    }
}

/// A request buffer aligned for O_DIRECT, filled with a non-zero pattern.
fn pattern_buffer(len: usize) -> AlignedBuf {
    let mut buffer = AlignedBuf::new(len);
    buffer.as_mut_slice().copy_from_slice(&pattern(len));
    buffer
}

/// Sequential O_DIRECT writes, then reads, of whole requests, wrapping at the end of the
/// device, for `duration` each; returns (write, read) MiB/s.
fn sequential_io(
    device: &mut File,
    device_bytes: u64,
    duration: Duration,
) -> anyhow::Result<(f64, f64)> {
    let requests = device_bytes / u64::try_from(DEVICE_REQUEST)?;
    let mut buffer = pattern_buffer(DEVICE_REQUEST);
    let write = {
        let mut index = 0u64;
        measure(duration, || -> anyhow::Result<usize> {
            rewind_on_wrap(device, index % requests)?;
            device.write_all(buffer.as_slice())?;
            index += 1;
            Ok(DEVICE_REQUEST)
        })?
    };
    device.sync_all()?;
    let read = {
        let mut index = 0u64;
        measure(duration, || -> anyhow::Result<usize> {
            rewind_on_wrap(device, index % requests)?;
            device.read_exact(buffer.as_mut_slice())?;
            index += 1;
            Ok(DEVICE_REQUEST)
        })?
    };
    Ok((write, read))
}

/// Rewinds at the start of each pass over the device; otherwise the file position already
/// follows the previous request (one syscall per request).
fn rewind_on_wrap(device: &mut File, index: u64) -> std::io::Result<()> {
    if index == 0 {
        device.seek(SeekFrom::Start(0))?;
    }
    Ok(())
}

/// The device table: one line per configuration, then the chosen defaults.
pub fn render_device(report: &DeviceReport) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# {} ({} cores), kernel {}; {} ({} MiB), sequential O_DIRECT {} KiB requests, {:.1}s per cell",
        report.machine.cpu,
        report.machine.cores,
        report.machine.kernel,
        report.device.display(),
        report.device_bytes >> 20,
        report.request_bytes >> 10,
        report.seconds_per_cell
    );
    let _ = writeln!(
        out,
        "{:<20} {:>4} {:>6} {:<10} {:>10} {:>10}",
        "cipher", "bits", "sector", "workqueues", "write MiB/s", "read MiB/s"
    );
    for row in &report.rows {
        let c = row.config;
        let (cipher, bits, sector, queues) = match c.cipher {
            None => (
                "none (bare brd)".to_owned(),
                "-".to_owned(),
                "-".to_owned(),
                "-",
            ),
            Some(cipher) => (
                cipher.to_owned(),
                c.key_bits.to_string(),
                c.sector_size.to_string(),
                if c.bypass_workqueues {
                    "bypassed"
                } else {
                    "used"
                },
            ),
        };
        let _ = writeln!(
            out,
            "{cipher:<20} {bits:>4} {sector:>6} {queues:<10} {:>11.1} {:>10.1}",
            row.write_mib_s, row.read_mib_s
        );
    }
    for chosen in &report.chosen {
        let mut flags = vec![format!("sector_size:{}", chosen.sector_size)];
        if chosen.no_read_workqueue {
            flags.push("no_read_workqueue".to_owned());
        }
        if chosen.no_write_workqueue {
            flags.push("no_write_workqueue".to_owned());
        }
        let _ = writeln!(out, "fastest for {}: {}", chosen.cipher, flags.join(" "));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use tosskey_crypto::BlockCipher;

    fn block_cipher_of(spec: &str) -> BlockCipher {
        spec.parse::<CipherSpec>().unwrap().block_cipher()
    }

    fn machine() -> Machine {
        Machine {
            cpu: "Test CPU".to_owned(),
            cores: 2,
            kernel: "6.1.0-test".to_owned(),
        }
    }

    fn speeds(single_core: f64, all_cores: f64) -> Speeds {
        Speeds {
            single_core,
            all_cores,
        }
    }

    fn report() -> CipherReport {
        let measured = CipherRow {
            cipher: "aes-xts-plain64".to_owned(),
            key_bits: 512,
            skcipher: "xts(aes)".to_owned(),
            kernel: KernelResult::Measured {
                driver: "xts-aes-aesni".to_owned(),
                encrypt: speeds(1000.0, 1900.0),
                decrypt: speeds(900.0, 1800.0),
            },
            userspace_implementation: "aes-xts aes-crate (aes-ni when present)".to_owned(),
            userspace_choice: "chosen by CPU features".to_owned(),
            userspace_encrypt: speeds(2000.0, 3800.0),
            userspace_decrypt: speeds(1800.0, 3600.0),
        };
        let missing = CipherRow {
            cipher: "twofish-xts-plain64".to_owned(),
            key_bits: 256,
            skcipher: "xts(twofish)".to_owned(),
            kernel: KernelResult::Unavailable {
                reason: "AF_ALG unavailable".to_owned(),
                detail: "AF_ALG sockets are unavailable (load algif_skcipher)".to_owned(),
            },
            userspace_implementation: "twofish-xts avx2-shuffle (no table reads)".to_owned(),
            userspace_choice: "fastest measured: avx2-shuffle 612 MiB/s, portable 401 MiB/s"
                .to_owned(),
            userspace_encrypt: speeds(300.0, 590.0),
            userspace_decrypt: speeds(310.0, 600.0),
        };
        CipherReport {
            machine: machine(),
            sector_bytes: 4096,
            seconds_per_cell: 0.5,
            rows: vec![measured.into(), missing.into()],
        }
    }

    #[test]
    fn ratios_are_kernel_over_userspace_and_absent_without_a_kernel_side() {
        let report = report();
        let ratios = report.rows[0].kernel_over_userspace.unwrap();
        assert_eq!(ratios.encrypt_single_core, 0.5);
        assert_eq!(ratios.decrypt_all_cores, 0.5);
        assert_eq!(report.rows[1].kernel_over_userspace, None);
    }

    #[test]
    fn table_shows_numbers_ratios_drivers_and_the_missing_kernel_side() {
        let table = render_ciphers(&report());
        let lines: Vec<&str> = table.lines().collect();
        assert!(lines[0].contains("Test CPU (2 cores)"), "{table}");
        let aes_encrypt = lines
            .iter()
            .find(|l| l.starts_with("aes-xts-plain64") && l.contains("encrypt"))
            .unwrap();
        let cells: Vec<&str> = aes_encrypt.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "aes-xts-plain64",
                "512",
                "encrypt",
                "1000.0",
                "1900.0",
                "2000.0",
                "3800.0",
                "0.50",
                "0.50"
            ]
        );
        assert!(table.contains("kernel xts(aes) = xts-aes-aesni"), "{table}");
        let twofish_decrypt = lines
            .iter()
            .find(|l| l.starts_with("twofish-xts-plain64") && l.contains("decrypt"))
            .unwrap();
        let cells: Vec<&str> = twofish_decrypt.split_whitespace().collect();
        assert_eq!(
            cells,
            [
                "twofish-xts-plain64",
                "256",
                "decrypt",
                "n/a",
                "n/a",
                "310.0",
                "600.0",
                "n/a",
                "n/a"
            ]
        );
        assert!(
            table.contains(
                "kernel xts(twofish): n/a: AF_ALG unavailable; userspace twofish-xts \
                 avx2-shuffle (no table reads) (fastest measured: avx2-shuffle 612 MiB/s, \
                 portable 401 MiB/s)"
            ),
            "{table}"
        );
        assert!(
            table.contains("note: AF_ALG sockets are unavailable"),
            "{table}"
        );
    }

    #[test]
    fn json_carries_status_driver_speeds_and_ratios() {
        let value = serde_json::to_value(report()).unwrap();
        let aes = &value["rows"][0];
        assert_eq!(aes["cipher"], "aes-xts-plain64");
        assert_eq!(aes["kernel"]["status"], "measured");
        assert_eq!(aes["kernel"]["driver"], "xts-aes-aesni");
        assert_eq!(aes["kernel"]["encrypt"]["all_cores"], 1900.0);
        assert_eq!(aes["userspace_decrypt"]["single_core"], 1800.0);
        assert_eq!(aes["kernel_over_userspace"]["encrypt_single_core"], 0.5);
        let twofish = &value["rows"][1];
        assert_eq!(twofish["kernel"]["status"], "unavailable");
        assert_eq!(twofish["kernel"]["reason"], "AF_ALG unavailable");
        assert!(twofish["kernel_over_userspace"].is_null());
        assert_eq!(value["machine"]["cores"], 2);
    }

    #[test]
    fn all_cores_rounds_grow_with_the_cipher_speed_within_bounds() {
        assert_eq!(all_cores_run(1.0), ALL_CORES_RUN_MIN);
        assert_eq!(all_cores_run(1e9), ALL_CORES_RUN_MAX);
        // 1000 MiB/s x 20 ms = 20 MiB, in whole sectors.
        let run = all_cores_run(1000.0);
        assert_eq!(run % CRYPT_SECTOR, 0);
        assert!(
            ((20 << 20) - CRYPT_SECTOR..=20 << 20).contains(&run),
            "{run}"
        );
    }

    #[test]
    fn every_supported_cipher_and_key_size_is_benchmarked() {
        for (spec, bits) in CIPHERS {
            let parsed: CipherSpec = spec.parse().unwrap();
            parsed.validate_key_bits(bits).unwrap();
        }
        let ciphers: Vec<BlockCipher> = CIPHERS.iter().map(|(s, _)| block_cipher_of(s)).collect();
        assert!(ciphers.contains(&BlockCipher::Twofish) && ciphers.contains(&BlockCipher::Aes));
    }

    #[test]
    fn userspace_measurement_processes_data_and_reports_a_speed() {
        let key = VolumeKey::generate(KeySize::from_bits(512).unwrap()).unwrap();
        let layout = SectorLayout {
            sector_size: SectorSize::S4096,
            iv_large_sectors: false,
            iv_offset: 0,
        };
        let cipher = SectorCipher::new(BlockCipher::Aes, key.expose_secret(), layout).unwrap();
        let speed =
            userspace_speed(&cipher, true, 64 << 10, false, Duration::from_millis(20)).unwrap();
        assert!(speed.is_finite() && speed > 0.0, "{speed}");
    }

    fn device_row(
        cipher: &'static str,
        sector_size: u32,
        bypass: bool,
        w: f64,
        r: f64,
    ) -> DeviceRow {
        DeviceRow {
            config: DeviceConfig {
                cipher: Some(cipher),
                key_bits: 512,
                sector_size,
                bypass_workqueues: bypass,
            },
            write_mib_s: w,
            read_mib_s: r,
        }
    }

    #[test]
    fn defaults_are_chosen_by_measurement_per_cipher_and_direction() {
        let rows = vec![
            device_row("twofish-xts-plain64", 512, false, 50.0, 60.0),
            device_row("twofish-xts-plain64", 512, true, 55.0, 58.0),
            device_row("twofish-xts-plain64", 4096, false, 80.0, 90.0),
            // Faster writes, slower reads with the workqueues bypassed.
            device_row("twofish-xts-plain64", 4096, true, 95.0, 85.0),
            device_row("aes-xts-plain64", 512, false, 300.0, 300.0),
            device_row("aes-xts-plain64", 512, true, 500.0, 600.0),
            device_row("aes-xts-plain64", 4096, false, 200.0, 200.0),
            device_row("aes-xts-plain64", 4096, true, 250.0, 250.0),
        ];
        let chosen = choose_defaults(&rows);
        assert_eq!(
            chosen,
            vec![
                Chosen {
                    cipher: "twofish-xts-plain64",
                    sector_size: 4096,
                    no_read_workqueue: false,
                    no_write_workqueue: true,
                },
                Chosen {
                    cipher: "aes-xts-plain64",
                    sector_size: 512,
                    no_read_workqueue: true,
                    no_write_workqueue: true,
                },
            ]
        );
    }

    #[test]
    fn device_configs_cover_the_bare_disk_and_every_option_combination() {
        let configs = device_configs();
        assert_eq!(configs[0].cipher, None);
        assert_eq!(configs.len(), 1 + DEVICE_CIPHERS.len() * 2 * 2);
        for cipher in DEVICE_CIPHERS {
            for size in [512, 4096] {
                for bypass in [false, true] {
                    assert!(configs.iter().any(|c| c.cipher == Some(cipher)
                        && c.sector_size == size
                        && c.bypass_workqueues == bypass));
                }
            }
        }
    }

    #[test]
    fn device_table_lists_rows_and_chosen_flags() {
        let rows = vec![
            device_row("twofish-xts-plain64", 4096, false, 80.0, 90.0),
            device_row("twofish-xts-plain64", 4096, true, 95.0, 85.0),
        ];
        let report = DeviceReport {
            machine: machine(),
            device: PathBuf::from("/dev/ram0"),
            device_bytes: 64 << 20,
            request_bytes: DEVICE_REQUEST,
            seconds_per_cell: 0.5,
            chosen: choose_defaults(&rows),
            rows,
        };
        let table = render_device(&report);
        assert!(table.contains("/dev/ram0 (64 MiB)"), "{table}");
        let bypassed: Vec<&str> = table
            .lines()
            .find(|l| l.contains("bypassed"))
            .unwrap()
            .split_whitespace()
            .collect();
        assert_eq!(
            bypassed,
            [
                "twofish-xts-plain64",
                "512",
                "4096",
                "bypassed",
                "95.0",
                "85.0"
            ]
        );
        assert!(
            table
                .contains("fastest for twofish-xts-plain64: sector_size:4096 no_write_workqueue\n"),
            "{table}"
        );
    }

    #[test]
    fn device_mode_refuses_anything_but_a_ram_disk() {
        for path in [
            "/dev/vda",
            "/dev/sda",
            "/dev/ram",
            "/dev/ramdisk",
            "/tmp/ram0x",
        ] {
            let error = check_ramdisk(Path::new(path)).unwrap_err().to_string();
            assert!(
                error.contains("only runs on a brd RAM disk"),
                "{path}: {error}"
            );
        }
    }

    #[test]
    fn device_mode_goes_by_the_device_number_not_the_name() {
        // Named like a RAM disk, and /dev/null even has brd's major (1) — as a character
        // device. The name decides nothing.
        let dir = tempfile::tempdir().unwrap();
        let alias = dir.path().join("ram0");
        std::os::unix::fs::symlink("/dev/null", &alias).unwrap();
        let error = check_ramdisk(&alias).unwrap_err();
        let text = format!("{error:#}");
        assert!(
            text.contains("not a brd RAM disk (not a block device"),
            "{text}"
        );
        assert_eq!(
            crate::error::Error::from(error).exit_code(),
            crate::error::REFUSED
        );
    }
}
