//! Root tests, run inside the VM guest (Debian's 6.1 kernel) by
//! `scripts/vm-test -p tosskey-xfs -- guest_`: format real block devices, mount them with
//! mount(2) as the kernel's XFS, write, fsync and read back files, fill the filesystem to
//! ENOSPC and back, unmount, and let the guest's `/usr/sbin/xfs_repair -n` judge the
//! result.

use std::io::Write;
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};
use tosskey_testkit::{assert_xfs_repair_clean, sha256_of_range, LoopDevice};
use tosskey_xfs::{format, Error, FormatOptions, MIN_SIZE};

const MIB: u64 = 1 << 20;
/// Just over the smallest XFS this crate formats: the guest's loop devices live in RAM.
const DEVICE_SIZE: u64 = MIN_SIZE + 20 * MIB;

/// A mount that is undone on drop.
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    fn new(device: &Path, name: &str, flags: MsFlags) -> Mounted {
        let point = std::env::temp_dir().join(format!("tosskey-xfs-{name}"));
        std::fs::create_dir_all(&point).unwrap();
        mount(Some(device), &point, Some("xfs"), flags, None::<&str>).unwrap_or_else(|e| {
            panic!("mount -t xfs {} {}: {e}", device.display(), point.display())
        });
        Mounted { point }
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(error) = umount(&self.point) {
            eprintln!("umount {}: {error}", self.point.display());
        }
        std::fs::remove_dir(&self.point).ok();
    }
}

/// Deterministic pseudo-random bytes (xorshift), distinct per `seed`.
fn pattern(seed: u64, len: usize) -> Vec<u8> {
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut out = Vec::with_capacity(len + 8);
    while out.len() < len {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        out.extend_from_slice(&state.to_le_bytes());
    }
    out.truncate(len);
    out
}

/// File sizes around the block and inode-fork boundaries, up to extents of megabytes.
const SIZES: [usize; 9] = [0, 1, 100, 4095, 4096, 4097, 65_537, 1 << 20, (8 << 20) + 3];
const SMALL_FILES: usize = 300;

fn write_files(root: &Path) {
    for (i, len) in SIZES.iter().enumerate() {
        let mut file = std::fs::File::create(root.join(format!("size-{len}"))).unwrap();
        file.write_all(&pattern(i as u64, *len)).unwrap();
        file.sync_all().unwrap();
    }
    // Enough entries to take the directory from short form to block and leaf form.
    let many = root.join("many");
    std::fs::create_dir(&many).unwrap();
    for i in 0..SMALL_FILES {
        std::fs::write(
            many.join(format!("file-{i:05}")),
            pattern(1000 + i as u64, i),
        )
        .unwrap();
    }
    std::fs::File::open(&many).unwrap().sync_all().unwrap();
}

fn verify_files(root: &Path) {
    for (i, len) in SIZES.iter().enumerate() {
        assert!(
            std::fs::read(root.join(format!("size-{len}"))).unwrap() == pattern(i as u64, *len),
            "size-{len} differs after remount"
        );
    }
    let many = root.join("many");
    assert_eq!(std::fs::read_dir(&many).unwrap().count(), SMALL_FILES);
    for i in 0..SMALL_FILES {
        assert_eq!(
            std::fs::read(many.join(format!("file-{i:05}"))).unwrap(),
            pattern(1000 + i as u64, i),
            "many/file-{i:05} differs"
        );
    }
}

/// Every entry of `dir` carries its type in `d_type` (`ftype=1`: overlayfs, and so
/// containerd's overlay snapshotter, refuse an upper directory without it).
fn assert_d_type(dir: &Path) {
    use nix::dir::{Dir, Type};
    use nix::fcntl::OFlag;
    use nix::sys::stat::Mode;
    let mut handle = Dir::open(dir, OFlag::O_RDONLY | OFlag::O_DIRECTORY, Mode::empty()).unwrap();
    let mut seen = 0;
    for entry in handle.iter() {
        let entry = entry.unwrap();
        let name = entry.file_name().to_string_lossy().into_owned();
        let kind = entry.file_type();
        let expected = if name == "." || name == ".." || name == "many" {
            Type::Directory
        } else {
            Type::File
        };
        assert_eq!(kind, Some(expected), "d_type of {name}");
        seen += 1;
    }
    assert!(seen >= SIZES.len() + 3);
}

/// Write 4 MiB chunks until the filesystem is full; the bytes written.
fn fill_to_enospc(root: &Path) -> u64 {
    let chunk = pattern(77, 4 << 20);
    let mut file = std::fs::File::create(root.join("filler")).unwrap();
    let mut written = 0u64;
    loop {
        match file.write(&chunk) {
            Ok(0) => break,
            Ok(n) => written += n as u64,
            Err(error) if error.raw_os_error() == Some(nix::libc::ENOSPC) => break,
            Err(error) => panic!("filling the filesystem: {error}"),
        }
    }
    match file.sync_all() {
        Ok(()) => {}
        Err(error) if error.raw_os_error() == Some(nix::libc::ENOSPC) => {}
        Err(error) => panic!("fsync of the filler: {error}"),
    }
    written
}

/// Format `device`, check, mount, write, unmount, check, remount, verify, fill to ENOSPC
/// and back, unmount, check.
fn round_trip(device: &Path, name: &str) {
    let report = format(device, &FormatOptions::default()).unwrap();
    assert!(!report.punched, "a block device is zeroed, not punched");
    assert_xfs_repair_clean(device);
    {
        let mounted = Mounted::new(device, name, MsFlags::empty());
        write_files(&mounted.point);
    }
    assert_xfs_repair_clean(device);
    {
        let mounted = Mounted::new(device, name, MsFlags::empty());
        verify_files(&mounted.point);
        assert_d_type(&mounted.point);
        let filled = fill_to_enospc(&mounted.point);
        assert!(filled > 200 * MIB, "only {filled} bytes fitted");
        std::fs::remove_file(mounted.point.join("filler")).unwrap();
        // Space comes back: the same amount fits again after the delete.
        let again = fill_to_enospc(&mounted.point);
        assert!(
            again + 16 * MIB >= filled,
            "{again} bytes after freeing {filled}"
        );
        std::fs::remove_file(mounted.point.join("filler")).unwrap();
        verify_files(&mounted.point);
    }
    assert_xfs_repair_clean(device);
}

/// Overwrite `device` with noise, as a fresh dm-crypt mapping reads: the log must not be
/// taken for records, nor any header for something it is not.
fn fill_with_noise(device: &Path) {
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .open(device)
        .unwrap();
    let noise = pattern(7, 1 << 20);
    for _ in 0..DEVICE_SIZE / MIB {
        file.write_all(&noise).unwrap();
    }
    file.sync_all().unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn guest_noise_filled_device_mounts_holds_files_and_stays_repair_clean() {
    let device = LoopDevice::new(DEVICE_SIZE).unwrap();
    fill_with_noise(device.path());
    round_trip(device.path(), "noise");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn guest_4k_sector_device_gets_4k_sectors_and_mounts() {
    let device = LoopDevice::with_block_size(DEVICE_SIZE, 4096).unwrap();
    fill_with_noise(device.path());
    let report = format(device.path(), &FormatOptions::default()).unwrap();
    assert_eq!(report.geometry.sector_size, 4096);
    round_trip(device.path(), "4kn");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn guest_mounted_device_is_refused_and_untouched() {
    let device = LoopDevice::new(DEVICE_SIZE).unwrap();
    format(device.path(), &FormatOptions::default()).unwrap();
    let mounted = Mounted::new(device.path(), "busy", MsFlags::MS_RDONLY);
    let before = sha256_of_range(device.path(), 0, 2 * MIB).unwrap();
    let error = format(device.path(), &FormatOptions::default()).unwrap_err();
    assert!(
        matches!(
            error,
            Error::Target(tosskey_ext4::Error::Mounted { .. } | tosskey_ext4::Error::InUse { .. })
        ),
        "{error}"
    );
    assert!(error
        .to_string()
        .contains(&device.path().display().to_string()));
    assert_eq!(sha256_of_range(device.path(), 0, 2 * MIB).unwrap(), before);
    drop(mounted);
}
