//! tosskey-testkit: fixtures for root tests that run inside the VM guest.
//!
//! Root tests are ordinary `#[test]`s marked
//! `#[ignore = "root: runs in the VM guest (scripts/vm-test)"]`; `scripts/vm-test` boots a
//! QEMU guest (Debian 6.1 kernel, busybox, devtmpfs on `/dev`, no udev) and runs them there
//! one at a time. This crate gives them:
//!
//! - [`LoopDevice`]: a sparse file in `/tmp` attached to a free `/dev/loopN`, optionally
//!   with 4096-byte logical blocks (a "4Kn" disk); detached on `Drop`.
//! - [`virtio_disks`] / [`virtio_disk_by_serial`]: the guest's blank virtio disks
//!   (`/dev/vda`…, serials `tosskey-disk-0`…), with their sizes.
//! - [`sha256_of_device`], [`sha256_of_range`], [`zero_device`], [`zero_range`],
//!   [`block_device_size`], [`sysfs_dir`]: small block-device helpers.
//! - [`assert_e2fsck_clean`]: e2fsprogs as the witness of a filesystem;
//!   [`dumpe2fs_without_checksums`] to compare two formats' `dumpe2fs` output.
//! - [`request_skcipher`]: make the kernel crypto API instantiate e.g. `xts(twofish)`.
//! - [`in_vm`] / [`require_guest`]: whether this process runs inside the harness guest.
//!
//! Every fixture cleans up after itself, because dm/md/loop names are global to the guest
//! and the next test expects a clean kernel. Outside the guest nothing here creates or
//! writes a block device, and a test executable asked to run root tests exits before any
//! test starts (see [`guest`]).

mod af_alg;
pub mod guest;
mod loop_ioctl;
#[cfg(test)]
mod uapi_header;

pub use guest::{in_vm, require_guest};

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::fd::{AsFd, AsRawFd};
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU32, Ordering};

use sha2::{Digest, Sha256};

/// Everything that can go wrong in a fixture. Each message names the device or file.
#[derive(Debug, thiserror::Error)]
pub enum TestkitError {
    /// A system call on `path` failed.
    #[error("{action} {path}: {source}{hint}")]
    Io {
        /// What was being done, e.g. "open" or "LOOP_CONFIGURE".
        action: &'static str,
        /// The file or device it was done to.
        path: PathBuf,
        /// The errno.
        #[source]
        source: io::Error,
        /// Outside the guest, a pointer to where root tests are meant to run.
        hint: &'static str,
    },
    /// `path` exists but is not what the fixture needs.
    #[error("{path}: {problem}")]
    Unexpected {
        /// The file or device.
        path: PathBuf,
        /// What is wrong with it.
        problem: String,
    },
}

/// Result type of this crate.
pub type Result<T> = std::result::Result<T, TestkitError>;

fn io_err<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> TestkitError + 'a {
    move |source| TestkitError::Io {
        action,
        path: path.to_path_buf(),
        source,
        hint: outside_vm_hint(),
    }
}

fn outside_vm_hint() -> &'static str {
    if in_vm() {
        ""
    } else {
        " (root tests run inside the VM guest: scripts/vm-test)"
    }
}

/// Asks the kernel crypto API for the symmetric cipher `name` (e.g. `xts(twofish)`), so
/// that it is instantiated, self-tested and listed in `/proc/crypto`. Fails with ENOENT
/// if the kernel cannot provide it.
pub fn request_skcipher(name: &str) -> Result<()> {
    require_guest();
    af_alg::request_algorithm("skcipher", name).map_err(|source| TestkitError::Io {
        action: "AF_ALG bind skcipher",
        path: PathBuf::from(name),
        source,
        hint: outside_vm_hint(),
    })
}

/// A block device number, `MAJOR:MINOR`: the one type all tosskey crates share.
pub use tosskey_sysutil::DevId;

/// The device number of the block special file at `path`.
fn dev_of(path: &Path) -> Result<DevId> {
    DevId::of_block_device(path).map_err(io_err("stat", path))
}

/// `/sys/dev/block/MAJOR:MINOR`, the device's sysfs directory.
pub fn sysfs_dir(dev: DevId) -> PathBuf {
    tosskey_sysutil::SystemRoot::host().block_dir(dev)
}

/// Size in bytes of the block device at `path`, from sysfs (`size` is in 512-byte units
/// whatever the logical block size).
pub fn block_device_size(path: &Path) -> Result<u64> {
    let size_file = sysfs_dir(dev_of(path)?).join("size");
    Ok(read_sysfs_u64(&size_file)? * 512)
}

fn read_sysfs_string(path: &Path) -> Result<String> {
    tosskey_sysutil::read_attr(path).map_err(io_err("read", path))
}

fn read_sysfs_u64(path: &Path) -> Result<u64> {
    let text = read_sysfs_string(path)?;
    text.parse().map_err(|_| TestkitError::Unexpected {
        path: path.to_path_buf(),
        problem: format!("expected a number, found {text:?}"),
    })
}

/// A loop device backed by a sparse file in `/tmp`, detached on `Drop`.
///
/// The backing file is unlinked as soon as it is attached, so nothing is left in `/tmp`
/// even if the test process dies; the kernel frees it when the loop device is detached.
#[derive(Debug)]
pub struct LoopDevice {
    device: File,
    path: PathBuf,
    dev: DevId,
    size_bytes: u64,
    block_size: u32,
}

/// Distinguishes backing files created by one process.
static BACKING_FILE_COUNTER: AtomicU32 = AtomicU32::new(0);

/// How often to retry when another process takes the free loop device between
/// `LOOP_CTL_GET_FREE` and `LOOP_CONFIGURE`.
const LOOP_ATTACH_ATTEMPTS: u32 = 8;

impl LoopDevice {
    /// A loop device of `size_bytes` (a multiple of 512) with 512-byte logical blocks.
    pub fn new(size_bytes: u64) -> Result<LoopDevice> {
        LoopDevice::with_block_size(size_bytes, 512)
    }

    /// A loop device of `size_bytes` with the given logical block size (512 or 4096;
    /// `size_bytes` must be a multiple of it). 4096 emulates a 4Kn disk.
    pub fn with_block_size(size_bytes: u64, block_size: u32) -> Result<LoopDevice> {
        let control_path = Path::new("/dev/loop-control");
        let backing_path = std::env::temp_dir().join(format!(
            "tosskey-loop-{}-{}",
            std::process::id(),
            BACKING_FILE_COUNTER.fetch_add(1, Ordering::Relaxed)
        ));
        if !matches!(block_size, 512 | 1024 | 2048 | 4096)
            || size_bytes == 0
            || !size_bytes.is_multiple_of(u64::from(block_size))
        {
            return Err(TestkitError::Unexpected {
                path: backing_path,
                problem: format!(
                    "loop size {size_bytes} is not a positive multiple of block size {block_size} (512, 1024, 2048 or 4096)"
                ),
            });
        }
        require_guest();
        let backing = OpenOptions::new()
            .read(true)
            .write(true)
            .create_new(true)
            .open(&backing_path)
            .map_err(io_err("create", &backing_path))?;
        // Unlink right away: the open descriptor (and later the loop device) keeps the
        // file alive, and nothing leaks into /tmp if the test dies.
        std::fs::remove_file(&backing_path).map_err(io_err("unlink", &backing_path))?;
        backing
            .set_len(size_bytes)
            .map_err(io_err("truncate", &backing_path))?;
        let backing_fd =
            u32::try_from(backing.as_raw_fd()).map_err(|_| TestkitError::Unexpected {
                path: backing_path.clone(),
                problem: "negative file descriptor".to_owned(),
            })?;

        let control = OpenOptions::new()
            .read(true)
            .write(true)
            .open(control_path)
            .map_err(io_err("open", control_path))?;
        let config = loop_ioctl::LoopConfig::new(backing_fd, block_size);
        let mut last_busy = None;
        for _ in 0..LOOP_ATTACH_ATTEMPTS {
            let number =
                loop_ioctl::ioctl_with_arg(control.as_fd(), loop_ioctl::LOOP_CTL_GET_FREE, 0)
                    .map_err(io_err("LOOP_CTL_GET_FREE", control_path))?;
            let path = PathBuf::from(format!("/dev/loop{number}"));
            let device = OpenOptions::new()
                .read(true)
                .write(true)
                .open(&path)
                .map_err(io_err("open", &path))?;
            match loop_ioctl::loop_configure(device.as_fd(), &config) {
                Ok(()) => {
                    let dev = dev_of(&path)?;
                    return Ok(LoopDevice {
                        device,
                        path,
                        dev,
                        size_bytes,
                        block_size,
                    });
                }
                // Somebody else attached it first: ask for another free one.
                Err(error) if error.raw_os_error() == Some(libc::EBUSY) => {
                    last_busy = Some((path, error));
                }
                Err(error) => return Err(io_err("LOOP_CONFIGURE", &path)(error)),
            }
        }
        let (path, error) = last_busy.unwrap_or_else(|| {
            (
                control_path.to_path_buf(),
                io::Error::from_raw_os_error(libc::EBUSY),
            )
        });
        Err(io_err(
            "LOOP_CONFIGURE (every free device was taken)",
            &path,
        )(error))
    }

    /// `/dev/loopN`.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The device number, e.g. `7:0`.
    pub fn dev(&self) -> DevId {
        self.dev
    }

    /// Size in bytes.
    pub fn size_bytes(&self) -> u64 {
        self.size_bytes
    }

    /// Size in 512-byte sectors (the unit of dm tables).
    pub fn size_sectors(&self) -> u64 {
        self.size_bytes / 512
    }

    /// Logical block size in bytes (512 or 4096).
    pub fn block_size(&self) -> u32 {
        self.block_size
    }
}

impl Drop for LoopDevice {
    fn drop(&mut self) {
        // If a dm/md device still holds the loop device, the kernel defers the detach
        // until it is released (it sets autoclear), so this does not fail in that case.
        if let Err(error) =
            loop_ioctl::ioctl_with_arg(self.device.as_fd(), loop_ioctl::LOOP_CLR_FD, 0)
        {
            eprintln!(
                "tosskey-testkit: LOOP_CLR_FD {}: {error}",
                self.path.display()
            );
        }
    }
}

/// The serial prefix `scripts/vm/run-qemu.py` gives every test disk.
pub const TEST_DISK_SERIAL_PREFIX: &str = "tosskey-disk-";

/// One of the guest's test disks.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VirtioDisk {
    /// Kernel name, e.g. `vda`.
    pub name: String,
    /// Device node, e.g. `/dev/vda`.
    pub path: PathBuf,
    /// Device number.
    pub dev: DevId,
    /// Size in bytes.
    pub size_bytes: u64,
    /// The serial given by `scripts/vm-test`: `tosskey-disk-0`, `tosskey-disk-1`, …
    pub serial: String,
}

/// The guest's test disks: the virtio block devices (`/sys/block/vd*`) whose serial starts
/// with `tosskey-disk-`, in serial order (`tosskey-disk-0` first). A disk without that
/// serial is never returned, whatever its name. Panics outside the guest.
pub fn virtio_disks() -> Result<Vec<VirtioDisk>> {
    require_guest();
    let sys_block = Path::new("/sys/block");
    let mut disks = Vec::new();
    for entry in std::fs::read_dir(sys_block).map_err(io_err("list", sys_block))? {
        let entry = entry.map_err(io_err("list", sys_block))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let sys_dir = entry.path();
        let serial_file = sys_dir.join("serial");
        if !name.starts_with("vd") || !serial_file.exists() {
            continue;
        }
        let serial = read_sysfs_string(&serial_file)?;
        let Some(index) = test_disk_index(&serial) else {
            continue;
        };
        let path = PathBuf::from("/dev").join(&name);
        disks.push((
            index,
            VirtioDisk {
                dev: dev_of(&path)?,
                size_bytes: read_sysfs_u64(&sys_dir.join("size"))? * 512,
                serial,
                path,
                name,
            },
        ));
    }
    disks.sort_by_key(|(index, _)| *index);
    Ok(disks.into_iter().map(|(_, disk)| disk).collect())
}

/// The number in a test disk's serial (`tosskey-disk-2` → 2); `None` for any other serial.
fn test_disk_index(serial: &str) -> Option<u32> {
    let digits = serial.strip_prefix(TEST_DISK_SERIAL_PREFIX)?;
    if digits.is_empty() || !digits.bytes().all(|byte| byte.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The test disk whose serial is `serial` (e.g. `tosskey-disk-2`), if present.
pub fn virtio_disk_by_serial(serial: &str) -> Result<Option<VirtioDisk>> {
    Ok(virtio_disks()?
        .into_iter()
        .find(|disk| disk.serial == serial))
}

/// Chunk size for whole-device reads and writes.
const IO_CHUNK: usize = 1 << 20;

/// SHA-256 of the whole device (or file) at `path`.
pub fn sha256_of_device(path: &Path) -> Result<[u8; 32]> {
    let size = device_or_file_size(path)?;
    sha256_of_range(path, 0, size)
}

/// SHA-256 of `len` bytes of `path` starting at byte `offset`. Fails if the range runs
/// past the end.
pub fn sha256_of_range(path: &Path, offset: u64, len: u64) -> Result<[u8; 32]> {
    let mut file = File::open(path).map_err(io_err("open", path))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let mut hasher = Sha256::new();
    let mut buffer = vec![0u8; IO_CHUNK];
    let mut remaining = len;
    while remaining > 0 {
        let chunk = usize::try_from(remaining.min(IO_CHUNK as u64)).unwrap_or(IO_CHUNK);
        file.read_exact(&mut buffer[..chunk])
            .map_err(io_err("read", path))?;
        hasher.update(&buffer[..chunk]);
        remaining -= chunk as u64;
    }
    Ok(hasher.finalize().into())
}

/// Overwrites the whole device (or file) at `path` with zeros and flushes it.
pub fn zero_device(path: &Path) -> Result<()> {
    let size = device_or_file_size(path)?;
    zero_range(path, 0, size)
}

/// Overwrites `len` bytes of `path` at byte `offset` with zeros and flushes them. A block
/// device is only written inside the guest (panics elsewhere); a regular file anywhere.
pub fn zero_range(path: &Path, offset: u64, len: u64) -> Result<()> {
    if guest::is_block_device(path) {
        require_guest();
    }
    let mut file = OpenOptions::new()
        .write(true)
        .open(path)
        .map_err(io_err("open", path))?;
    file.seek(SeekFrom::Start(offset))
        .map_err(io_err("seek", path))?;
    let zeros = vec![0u8; IO_CHUNK];
    let mut remaining = len;
    while remaining > 0 {
        let chunk = usize::try_from(remaining.min(IO_CHUNK as u64)).unwrap_or(IO_CHUNK);
        file.write_all(&zeros[..chunk])
            .map_err(io_err("write", path))?;
        remaining -= chunk as u64;
    }
    file.sync_all().map_err(io_err("fsync", path))
}

/// Runs `e2fsck -fn` (e2fsprogs' own, from `/usr/sbin` or `/sbin`: `scripts/vm-test` copies
/// it into the guest) on a device or image and panics with its output unless it exits 0,
/// i.e. unless the filesystem is clean.
#[track_caller]
pub fn assert_e2fsck_clean(target: &Path) {
    let e2fsck = ["/usr/sbin/e2fsck", "/sbin/e2fsck"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect("e2fsck not found: install e2fsprogs (scripts/vm-test copies it into the guest)");
    let output = std::process::Command::new(e2fsck)
        .arg("-fn")
        .arg(target)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", e2fsck.display()));
    assert!(
        output.status.success(),
        "e2fsck -fn {} exited {:?}\n{}\n{}",
        target.display(),
        output.status.code(),
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
}

/// Runs `xfs_repair -n` (xfsprogs, from `/usr/sbin` or `/sbin`: `scripts/vm-test` copies it
/// into the guest) on a device or image and panics with its output unless it exits 0 and
/// prints nothing but its progress lines, i.e. unless the filesystem is clean.
#[track_caller]
pub fn assert_xfs_repair_clean(target: &Path) {
    let repair = ["/usr/sbin/xfs_repair", "/sbin/xfs_repair"]
        .into_iter()
        .map(Path::new)
        .find(|path| path.exists())
        .expect(
            "xfs_repair not found: install xfsprogs (scripts/vm-test copies it into the guest)",
        );
    let output = std::process::Command::new(repair)
        .arg("-n")
        .arg(target)
        .output()
        .unwrap_or_else(|e| panic!("run {}: {e}", repair.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    let report = format!("{stdout}\n{stderr}");
    let findings = xfs_repair_findings(&report);
    assert!(
        output.status.success() && findings.is_empty(),
        "xfs_repair -n {} exited {:?}, findings {findings:?}\n{report}",
        target.display(),
        output.status.code(),
    );
}

/// The lines of `xfs_repair -n`'s report that are not progress: what it found wrong.
pub fn xfs_repair_findings(report: &str) -> Vec<&str> {
    // An image on tmpfs or in a guest's initramfs gets the host-geometry warning; a
    // volume of hundreds of TiB the advice about this machine's memory.
    const NOISE: [&str; 7] = [
        "No modify flag set, skipping phase 5",
        "No modify flag set, skipping filesystem flush and exiting.",
        "Cannot get host filesystem geometry.",
        "Repair may fail if there is a sector size mismatch between",
        "the image and the host filesystem.",
        "If repair fails due to lack of memory, please",
        "turn prefetching off (-P) to reduce the memory footprint.",
    ];
    report
        .lines()
        .filter(|line| {
            !(line.is_empty()
                || line.starts_with("Phase ")
                || line.starts_with("        - ")
                || (line.starts_with("Memory available for repair (")
                    && line.ends_with(") may not be sufficient."))
                || (line.starts_with("At least ")
                    && line.ends_with(" is needed to repair this filesystem efficiently"))
                || NOISE.contains(line))
        })
        .collect()
}

/// A `dumpe2fs` line without its checksums (the `0x…` words), so two formats of the same
/// geometry compare equal line by line.
pub fn dumpe2fs_without_checksums(line: &str) -> String {
    line.split(' ')
        .filter(|word| !word.starts_with("0x"))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Size of a block device (from sysfs) or of a regular file.
fn device_or_file_size(path: &Path) -> Result<u64> {
    let metadata = std::fs::metadata(path).map_err(io_err("stat", path))?;
    if metadata.file_type().is_block_device() {
        block_device_size(path)
    } else {
        Ok(metadata.len())
    }
}

/// `tpm2_pcrread` (tpm2-tools) as a witness: its text output for `selection` (e.g.
/// `["sha256:15"]`) read through `device`, the kernel's resource manager. Panics, naming
/// the cause, when the tool is missing or fails: only `scripts/vm-test --tpm` copies it
/// into the guest.
pub fn tpm2_pcrread(device: &str, selection: &[String]) -> String {
    let output = std::process::Command::new("tpm2_pcrread")
        .args(["-T", &format!("device:{device}"), &selection.join("+")])
        .output()
        .expect("tpm2_pcrread runs (scripts/vm-test --tpm copies it into the guest)");
    assert!(
        output.status.success(),
        "tpm2_pcrread failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).expect("tpm2_pcrread prints UTF-8")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn xfs_repair_findings_are_the_lines_that_are_not_progress() {
        let report = "Phase 1 - find and verify superblock...
Cannot get host filesystem geometry.
Memory available for repair (18078MB) may not be sufficient.
At least 43056MB is needed to repair this filesystem efficiently
        - scan filesystem freespace and inode maps...
agf_freeblks 65518, counted 65517 in ag 0
sb_fdblocks 245728, counted 245727
No modify flag set, skipping filesystem flush and exiting.
";
        assert_eq!(
            xfs_repair_findings(report),
            [
                "agf_freeblks 65518, counted 65517 in ag 0",
                "sb_fdblocks 245728, counted 245727"
            ]
        );
    }

    #[test]
    fn dev_id_displays_as_major_colon_minor() {
        assert_eq!(
            DevId {
                major: 7,
                minor: 12
            }
            .to_string(),
            "7:12"
        );
        assert_eq!(
            sysfs_dir(DevId {
                major: 254,
                minor: 16
            }),
            Path::new("/sys/dev/block/254:16")
        );
    }

    #[test]
    fn hash_and_zero_work_on_regular_files() {
        let path = std::env::temp_dir().join(format!("tosskey-testkit-{}", std::process::id()));
        let data: Vec<u8> = (0u8..251).cycle().take(3 * IO_CHUNK + 100).collect();
        std::fs::write(&path, &data).unwrap();
        let expected: [u8; 32] = Sha256::digest(&data).into();
        assert_eq!(sha256_of_device(&path).unwrap(), expected);
        let middle: [u8; 32] = Sha256::digest(&data[1000..IO_CHUNK + 5000]).into();
        assert_eq!(
            sha256_of_range(&path, 1000, IO_CHUNK as u64 + 4000).unwrap(),
            middle
        );
        assert!(sha256_of_range(&path, 0, data.len() as u64 + 1).is_err());

        zero_range(&path, 10, 20).unwrap();
        let after = std::fs::read(&path).unwrap();
        assert!(after[10..30].iter().all(|&b| b == 0));
        assert_eq!(after[..10], data[..10]);
        assert_eq!(after[30..], data[30..]);
        zero_device(&path).unwrap();
        assert!(std::fs::read(&path).unwrap().iter().all(|&b| b == 0));
        std::fs::remove_file(&path).unwrap();
    }

    #[test]
    fn loop_size_must_be_a_multiple_of_the_block_size() {
        let error = LoopDevice::with_block_size(4096 + 512, 4096).unwrap_err();
        assert!(
            error.to_string().contains("not a positive multiple"),
            "{error}"
        );
    }

    #[test]
    fn io_errors_name_the_path_and_outside_the_guest_point_to_vm_test() {
        let error = sha256_of_device(Path::new("/nonexistent/tosskey-disk")).unwrap_err();
        let message = error.to_string();
        assert!(
            message.starts_with("stat /nonexistent/tosskey-disk: "),
            "{message}"
        );
        assert_eq!(message.contains("scripts/vm-test"), !in_vm(), "{message}");
    }

    #[test]
    fn only_tosskey_disk_serials_are_test_disks() {
        assert_eq!(test_disk_index("tosskey-disk-0"), Some(0));
        assert_eq!(test_disk_index("tosskey-disk-12"), Some(12));
        for other in [
            "",
            "tosskey-disk-",
            "tosskey-disk-x",
            "vol0123456789",
            "TOSSKEY-DISK-1",
        ] {
            assert_eq!(test_disk_index(other), None, "{other:?}");
        }
    }

    #[test]
    fn outside_the_guest_no_device_is_created_or_listed() {
        // (zero_range's gate is not tried here: a broken gate would write to a host disk.)
        assert!(!in_vm());
        for attempt in [
            std::panic::catch_unwind(|| LoopDevice::new(1 << 20).map(drop)),
            std::panic::catch_unwind(|| virtio_disks().map(drop)),
        ] {
            let panic = attempt.unwrap_err();
            let message = panic.downcast_ref::<String>().unwrap();
            assert!(message.contains("use scripts/vm-test"), "{message}");
        }
    }
}
