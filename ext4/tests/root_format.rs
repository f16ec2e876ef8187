//! Root tests, run inside the VM guest by `scripts/vm-test -p tosskey-ext4`: format real
//! block devices, mount them with mount(2), write and read back files, unmount, and let
//! the guest's `/usr/sbin/e2fsck -fn` judge the result.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::process::Command;

use nix::mount::{mount, umount, MsFlags};
use tosskey_ext4::{format, Error, FormatOptions};
use tosskey_testkit::{
    assert_e2fsck_clean, sha256_of_range, virtio_disks, zero_device, LoopDevice,
};

const MIB: u64 = 1 << 20;
/// A refused format must not have written here: block 0 is its first write, and the
/// superblock, descriptors, bitmaps and first inode table of a small volume all lie here.
const CHECKED_BYTES: u64 = 2 << 20;
/// One inode per 64 KiB: the tree below needs more inodes than largefile4 gives a small disk.
const DENSE_INODES: u64 = 64 << 10;

/// A mount that is undone on drop.
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    fn new(device: &Path, name: &str, flags: MsFlags) -> Mounted {
        let point = std::env::temp_dir().join(format!("tosskey-ext4-{name}"));
        std::fs::create_dir_all(&point).unwrap();
        mount(Some(device), &point, Some("ext4"), flags, None::<&str>).unwrap_or_else(|e| {
            panic!(
                "mount -t ext4 {} {}: {e}",
                device.display(),
                point.display()
            )
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

const SMALL_FILES: u64 = 400;
const DEPTH: usize = 64;

fn deep_dir(root: &Path) -> PathBuf {
    let mut dir = root.to_path_buf();
    for level in 0..DEPTH {
        dir.push(format!("level-{level}"));
    }
    dir
}

/// Write a large file, many small ones and a deep directory tree under `root`.
fn write_tree(root: &Path, large_bytes: usize) {
    let mut large = std::fs::File::create(root.join("large.bin")).unwrap();
    large.write_all(&pattern(1, large_bytes)).unwrap();
    large.sync_all().unwrap();
    let small = root.join("small");
    std::fs::create_dir(&small).unwrap();
    for i in 0..SMALL_FILES {
        let len = usize::try_from(1 + i * 37 % 3000).unwrap();
        std::fs::write(small.join(format!("f{i:04}")), pattern(100 + i, len)).unwrap();
    }
    let deep = deep_dir(root);
    std::fs::create_dir_all(&deep).unwrap();
    std::fs::write(deep.join("bottom.txt"), b"deep enough").unwrap();
    nix::unistd::sync();
}

/// Read everything [`write_tree`] wrote back and compare.
fn verify_tree(root: &Path, large_bytes: usize) {
    assert!(
        std::fs::read(root.join("large.bin")).unwrap() == pattern(1, large_bytes),
        "large.bin differs after remount"
    );
    let small = root.join("small");
    assert_eq!(
        std::fs::read_dir(&small).unwrap().count(),
        usize::try_from(SMALL_FILES).unwrap()
    );
    for i in 0..SMALL_FILES {
        let len = usize::try_from(1 + i * 37 % 3000).unwrap();
        assert_eq!(
            std::fs::read(small.join(format!("f{i:04}"))).unwrap(),
            pattern(100 + i, len),
            "small/f{i:04} differs"
        );
    }
    assert_eq!(
        std::fs::read(deep_dir(root).join("bottom.txt")).unwrap(),
        b"deep enough"
    );
    assert!(root.join("lost+found").is_dir());
}

/// Format, mount, write, unmount, remount, verify, unmount, fsck.
fn round_trip(device: &Path, opts: &FormatOptions, name: &str, large_bytes: usize) {
    let report = format(device, opts).unwrap();
    assert!(report.blocks > 0);
    assert_e2fsck_clean(device);
    {
        let mounted = Mounted::new(device, name, MsFlags::empty());
        write_tree(&mounted.point, large_bytes);
    }
    {
        let mounted = Mounted::new(device, name, MsFlags::empty());
        verify_tree(&mounted.point, large_bytes);
    }
    assert_e2fsck_clean(device);
}

/// Zeroes a shared test disk when the test ends, passed or not: the next test expects the
/// blank disk `scripts/vm-test` gave, and an ext4 signature would make tosskey refuse it.
struct BlankOnDrop(PathBuf);

impl Drop for BlankOnDrop {
    fn drop(&mut self) {
        if let Err(err) = zero_device(&self.0) {
            eprintln!("could not blank {} again: {err}", self.0.display());
        }
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn virtio_disk_without_journal_mounts_holds_files_and_stays_fsck_clean() {
    let disks = virtio_disks().unwrap();
    let disk = disks
        .first()
        .expect("scripts/vm-test gives the guest virtio disks");
    let _blank_again = BlankOnDrop(disk.path.clone());
    round_trip(
        &disk.path,
        &FormatOptions {
            label: Some("tosskey-test".to_string()),
            inode_ratio: DENSE_INODES,
            ..FormatOptions::default()
        },
        "virtio",
        16 << 20,
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn loop_device_with_journal_mounts_holds_files_and_stays_fsck_clean() {
    let device = LoopDevice::new(64 * MIB).unwrap();
    round_trip(
        device.path(),
        &FormatOptions {
            journal: true,
            inode_ratio: DENSE_INODES,
            ..FormatOptions::default()
        },
        "journal",
        8 << 20,
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn meta_bg_with_two_backups_mounts_holds_files_and_stays_fsck_clean() {
    // The layouts of volumes over 192 TiB (meta_bg) and with backup superblocks
    // (sparse_super2 in groups 1 and 7), on 8 groups the kernel can mount in the guest.
    let device = LoopDevice::new(1024 * MIB).unwrap();
    round_trip(
        device.path(),
        &FormatOptions {
            meta_bg: true,
            backup_superblocks: 2,
            journal: true,
            inode_ratio: DENSE_INODES,
            ..FormatOptions::default()
        },
        "meta-bg",
        8 << 20,
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn garbage_filled_device_with_journal_is_fsck_clean() {
    // A reused disk: old bytes everywhere. Nothing may depend on zeros that are not
    // there (inode tables are lazily initialised, the journal is zeroed explicitly).
    let device = LoopDevice::new(32 * MIB).unwrap();
    {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .open(device.path())
            .unwrap();
        file.write_all(&pattern(7, usize::try_from(32 * MIB).unwrap()))
            .unwrap();
        file.sync_all().unwrap();
    }
    let journal = FormatOptions {
        journal: true,
        inode_ratio: DENSE_INODES,
        ..FormatOptions::default()
    };
    round_trip(device.path(), &journal, "garbage", 4 << 20);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn loop_device_with_4k_sectors_and_odd_size_is_fsck_clean() {
    // 4Kn logical blocks and a size that leaves a short last group.
    let device = LoopDevice::with_block_size(128 * MIB + 300 * 4096, 4096).unwrap();
    let opts = FormatOptions {
        inode_ratio: DENSE_INODES,
        ..FormatOptions::default()
    };
    round_trip(device.path(), &opts, "4kn", 4 << 20);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mounted_device_is_refused_and_untouched() {
    let device = LoopDevice::new(16 * MIB).unwrap();
    format(device.path(), &FormatOptions::default()).unwrap();
    {
        let mounted = Mounted::new(device.path(), "busy", MsFlags::empty());
        std::fs::write(mounted.point.join("keep"), b"still here").unwrap();
    }
    // Read-only, so the kernel itself (lazy inode-table init, journal) writes nothing
    // and any change to the device would be the formatter's.
    let mounted = Mounted::new(device.path(), "busy", MsFlags::MS_RDONLY);
    let before = sha256_of_range(device.path(), 0, CHECKED_BYTES).unwrap();
    let error = format(device.path(), &FormatOptions::default()).unwrap_err();
    assert!(
        matches!(error, Error::Mounted { .. } | Error::InUse { .. }),
        "{error}"
    );
    let message = error.to_string();
    assert!(
        message.contains(&device.path().display().to_string()),
        "{message}"
    );
    assert!(
        message.contains("unmount") || message.contains("release"),
        "{message}"
    );
    assert_eq!(
        sha256_of_range(device.path(), 0, CHECKED_BYTES).unwrap(),
        before
    );
    assert_eq!(
        std::fs::read(mounted.point.join("keep")).unwrap(),
        b"still here"
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn read_only_device_is_refused_and_untouched() {
    let device = LoopDevice::new(16 * MIB).unwrap();
    let before = sha256_of_range(device.path(), 0, CHECKED_BYTES).unwrap();
    let status = Command::new("blockdev")
        .arg("--setro")
        .arg(device.path())
        .status()
        .expect("busybox blockdev in the guest");
    assert!(status.success());
    let result = format(device.path(), &FormatOptions::default());
    // Make it writable again before asserting, so the loop device detaches cleanly.
    Command::new("blockdev")
        .arg("--setrw")
        .arg(device.path())
        .status()
        .unwrap();
    let error = result.unwrap_err();
    assert!(matches!(error, Error::ReadOnly { .. }), "{error}");
    assert!(error.to_string().contains("read-only"));
    assert_eq!(
        sha256_of_range(device.path(), 0, CHECKED_BYTES).unwrap(),
        before
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn image_file_is_punched_and_refused_while_attached_to_a_loop_device() {
    let dir = std::env::temp_dir().join("tosskey-ext4-file");
    std::fs::create_dir_all(&dir).unwrap();
    let image = dir.join("fs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(32 * MIB)
        .unwrap();
    let report = format(&image, &FormatOptions::default()).unwrap();
    assert!(report.punched, "tmpfs supports hole punching");
    assert_e2fsck_clean(&image);

    let status = Command::new("losetup")
        .arg("-f")
        .arg(&image)
        .status()
        .expect("busybox losetup in the guest");
    assert!(status.success());
    let result = format(&image, &FormatOptions::default());
    let loop_device = match &result {
        Err(Error::AttachedToLoop { loop_device, .. }) => Some(loop_device.clone()),
        _ => None,
    };
    if let Some(loop_device) = &loop_device {
        Command::new("losetup")
            .arg("-d")
            .arg(loop_device)
            .status()
            .unwrap();
    }
    assert!(loop_device.is_some(), "{result:?}");
    std::fs::remove_dir_all(&dir).unwrap();
}
