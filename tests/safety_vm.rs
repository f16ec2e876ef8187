//! Safety checks and discovery on the VM guest's real devices: blank virtio disks with
//! serials `tosskey-disk-N`, loop devices. Root tests: `scripts/vm-test -p tosskey`.

use std::fs::OpenOptions;
use std::os::unix::fs::FileExt;
use std::path::Path;

use tosskey::host::discover::{discover, discover_matching, Cloud, DiskMatcher};
use tosskey::host::safety::{check_member, CheckOptions, MemberKind, SafetyError};
use tosskey::host::signature::SignatureKind;
use tosskey::host::sysfs::{SystemRoot, SystemState};
use tosskey_testkit::{sha256_of_range, virtio_disks, zero_range, LoopDevice, VirtioDisk};

const HEAD: u64 = 4 << 20;
/// The last MiB: where the scan's backstop and the end-of-disk detectors look.
const TAIL: u64 = tosskey::host::signature::BACKSTOP_BYTES;

/// The last virtio disk, its start and end zeroed (other tests may have left data there).
fn scratch_disk() -> VirtioDisk {
    let disk = virtio_disks()
        .unwrap()
        .pop()
        .expect("the harness gives the guest virtio disks");
    zero_range(&disk.path, 0, HEAD).unwrap();
    zero_range(&disk.path, disk.size_bytes - TAIL, TAIL).unwrap();
    disk
}

fn write_at(path: &Path, offset: u64, bytes: &[u8]) {
    let file = OpenOptions::new().write(true).open(path).unwrap();
    file.write_all_at(bytes, offset).unwrap();
    file.sync_all().unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn blank_virtio_disk_passes_and_is_claimed_exclusively() {
    let disk = scratch_disk();
    let root = SystemRoot::host();
    // Hashing the whole disk takes minutes under TCG: hash the regions the check reads.
    let digest = || {
        (
            sha256_of_range(&disk.path, 0, HEAD).unwrap(),
            sha256_of_range(&disk.path, disk.size_bytes - TAIL, TAIL).unwrap(),
        )
    };
    let before = digest();
    let mut checked = check_member(&root, &disk.path, &CheckOptions::default()).unwrap();
    let MemberKind::Block(device) = &checked.kind else {
        panic!("{} is a block device", disk.path.display());
    };
    assert_eq!(device.name, disk.name);
    assert_eq!(device.serial.as_deref(), Some(disk.serial.as_str()));
    assert_eq!(checked.size_bytes, disk.size_bytes);
    assert_eq!(checked.logical_block_size, 512);
    assert!(checked.is_claimed());

    // While our exclusive open stands, a second exclusive open is refused by the kernel.
    let err = check_member(&root, &disk.path, &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, SafetyError::Busy { .. }), "{err}");
    assert!(
        err.to_string().starts_with(&format!(
            "{} is in use by another process or the kernel (exclusive open failed)",
            disk.path.display()
        )),
        "{err}"
    );

    checked.release_claim();
    check_member(&root, &disk.path, &CheckOptions::default()).unwrap();
    assert_eq!(digest(), before, "a check wrote to the disk");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn luks_header_on_a_disk_is_refused_without_force() {
    let disk = scratch_disk();
    let root = SystemRoot::host();
    let luks2 = include_bytes!("fixtures/sysfs/signatures/luks2-head.bin");
    write_at(&disk.path, 0, luks2);
    let err = check_member(&root, &disk.path, &CheckOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} has a LUKS2 header signature at offset 0: pass --force to overwrite it, or pick another device",
            disk.path.display()
        )
    );
    let forced = CheckOptions {
        force: true,
        ..CheckOptions::default()
    };
    let checked = check_member(&root, &disk.path, &forced).unwrap();
    assert_eq!(
        checked
            .overridden
            .iter()
            .map(|s| (s.kind, s.offset))
            .collect::<Vec<_>>(),
        [(SignatureKind::Luks2, 0), (SignatureKind::Luks2, 0x4000)]
    );
    drop(checked);
    zero_range(&disk.path, 0, HEAD).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn disk_full_of_ciphertext_passes_without_force() {
    let disk = scratch_disk();
    let mut noise = vec![0u8; usize::try_from(HEAD).unwrap()];
    getrandom::fill(&mut noise).unwrap();
    write_at(&disk.path, 0, &noise);
    write_at(
        &disk.path,
        disk.size_bytes - TAIL,
        &noise[..usize::try_from(TAIL).unwrap()],
    );
    let checked = check_member(&SystemRoot::host(), &disk.path, &CheckOptions::default()).unwrap();
    assert!(checked.overridden.is_empty());
    drop(checked);
    zero_range(&disk.path, 0, HEAD).unwrap();
    zero_range(&disk.path, disk.size_bytes - TAIL, TAIL).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn loop_disk_member_and_tiny_loop_disk() {
    let root = SystemRoot::host();
    let big = LoopDevice::new(64 << 20).unwrap();
    let checked = check_member(&root, big.path(), &CheckOptions::default()).unwrap();
    assert_eq!(checked.size_bytes, 64 << 20);
    assert_eq!(checked.dev().unwrap().to_string(), big.dev().to_string());
    drop(checked);
    let tiny = LoopDevice::new(4 << 20).unwrap();
    let err = check_member(&root, tiny.path(), &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, SafetyError::TooSmall { .. }), "{err}");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn discovery_by_serial_prefix_finds_every_test_disk_and_no_cloud_disk() {
    let root = SystemRoot::host();
    let expected: Vec<String> = virtio_disks()
        .unwrap()
        .into_iter()
        .map(|d| d.name)
        .collect();
    assert!(!expected.is_empty());

    let state = SystemState::read(&root).unwrap();
    assert!(
        state.system_disks().is_empty(),
        "the guest runs from its initramfs"
    );

    let matcher = DiskMatcher::SerialPrefix("tosskey-disk-".to_owned());
    let found = discover_matching(&root, &matcher).unwrap();
    let names: Vec<String> = found.disks.iter().map(|d| d.name.clone()).collect();
    assert_eq!(names, expected);
    assert!(found
        .disks
        .iter()
        .all(|d| d.path == Path::new("/dev").join(&d.name)));

    let err = discover(&root, Cloud::Aws).unwrap_err();
    let msg = err.to_string();
    assert!(
        msg.starts_with(
            "no instance-store disks found for aws: none of vda (serial tosskey-disk-0)"
        ),
        "{msg}"
    );
    assert!(msg.ends_with("(use explicit device paths)"), "{msg}");
}

/// The refusals the fake-tree tests in safety.rs check against sysfs and mountinfo files,
/// here against the kernel's own: a real partition table, a mounted partition, active swap,
/// a read-only disk, and `shred` of a mounted volume. Each goes through the CLI.
mod real_kernel {
    use std::path::{Path, PathBuf};
    use std::process::Command;

    use nix::mount::{umount2, MntFlags};
    use tosskey_testkit::zero_range;

    use super::{scratch_disk, write_at, VirtioDisk, HEAD};
    use crate::common::{assert_direct_read_fails_with_eio, assert_error_targets, tosskey, Run};

    /// Runs a busybox applet (the guest's, never a host tool) and fails the test unless it
    /// succeeds.
    fn busybox(args: &[&str]) {
        let run = Command::new("/bin/busybox").args(args).output().unwrap();
        assert!(
            run.status.success(),
            "busybox {args:?}: {}",
            String::from_utf8_lossy(&run.stderr)
        );
    }

    fn provision(disk: &Path, name: &str, extra: &[&str]) -> Run {
        let mut args = vec!["provision", disk.to_str().unwrap(), "--name", name];
        args.extend(extra);
        tosskey(&args)
    }

    /// An MBR with two Linux partitions of 32 MiB, from sector 2048 on.
    fn mbr_with_two_partitions() -> [u8; 512] {
        let mut mbr = [0u8; 512];
        for (slot, start) in [2048u32, 2048 + 65536].into_iter().enumerate() {
            let entry = &mut mbr[446 + 16 * slot..446 + 16 * (slot + 1)];
            entry[4] = 0x83;
            entry[8..12].copy_from_slice(&start.to_le_bytes());
            entry[12..16].copy_from_slice(&65536u32.to_le_bytes());
        }
        mbr[510] = 0x55;
        mbr[511] = 0xaa;
        mbr
    }

    /// Puts the disk back as the other tests expect it, pass or fail: the volume closed
    /// (should a refusal have failed to happen), the mount gone, the partition table wiped
    /// and re-read, swap off, writable.
    struct Restore {
        disk: PathBuf,
        volume: &'static str,
        mount: Option<&'static str>,
    }

    /// The scratch disk, put back when the returned guard drops (after closing `volume` and
    /// unmounting `mount`).
    fn scratch_disk_restored(
        volume: &'static str,
        mount: Option<&'static str>,
    ) -> (VirtioDisk, Restore) {
        let disk = scratch_disk();
        let restore = Restore {
            disk: disk.path.clone(),
            volume,
            mount,
        };
        (disk, restore)
    }

    impl Drop for Restore {
        fn drop(&mut self) {
            let _ = tosskey(&["close", "--unmount", self.volume]);
            if let Some(dir) = self.mount {
                let _ = umount2(dir, MntFlags::empty());
            }
            let disk = self.disk.to_str().unwrap();
            let _ = Command::new("/bin/busybox")
                .args(["swapoff", disk])
                .output();
            let _ = Command::new("/bin/busybox")
                .args(["blockdev", "--setrw", disk])
                .output();
            let _ = zero_range(&self.disk, 0, HEAD);
            let _ = Command::new("/bin/busybox")
                .args(["blockdev", "--rereadpt", disk])
                .output();
        }
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn a_partitioned_disk_is_refused_and_a_mounted_partition_even_with_force() {
        let (disk, _restore) = scratch_disk_restored("t-part", Some("/mnt/t-part"));
        write_at(&disk.path, 0, &mbr_with_two_partitions());
        busybox(&["blockdev", "--rereadpt", disk.path.to_str().unwrap()]);
        let (first, second) = (format!("{}1", disk.name), format!("{}2", disk.name));
        assert!(
            Path::new("/sys/class/block").join(&second).exists(),
            "the kernel did not read the partition table of {}",
            disk.name
        );
        let path = disk.path.display();
        provision(&disk.path, "t-part", &["--mkfs", "none"]).fails_with(
            3,
            &format!(
                "{path} carries a partition table ({first}, {second}): pass --force to overwrite it"
            ),
        );

        let second_node = format!("/dev/{second}");
        let mke2fs = Command::new("/usr/sbin/mke2fs")
            .args(["-q", "-F", "-t", "ext4", &second_node])
            .output()
            .unwrap();
        assert!(mke2fs.status.success(), "{mke2fs:?}");
        std::fs::create_dir_all("/mnt/t-part").unwrap();
        nix::mount::mount(
            Some(second_node.as_str()),
            "/mnt/t-part",
            Some("ext4"),
            nix::mount::MsFlags::empty(),
            None::<&str>,
        )
        .unwrap();
        provision(&disk.path, "t-part", &["--mkfs", "none", "--force"]).fails_with(
            3,
            &format!(
                "{path} has partition {second} in use (mounted at /mnt/t-part): free it first"
            ),
        );
        // Its unused sibling is no way around it.
        provision(Path::new(&format!("/dev/{first}")), "t-part", &["--mkfs", "none", "--force"])
            .fails_with(
                3,
                &format!(
                    "/dev/{first} is a partition of {}, which is in use ({second} mounted at /mnt/t-part)",
                    disk.name
                ),
            );
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn active_swap_is_refused_even_with_force() {
        let (disk, _restore) = scratch_disk_restored("t-swap", None);
        let node = disk.path.to_str().unwrap();
        busybox(&["mkswap", node]);
        busybox(&["swapon", node]);
        let swaps = std::fs::read_to_string("/proc/swaps").unwrap();
        assert!(swaps.contains(node), "{swaps}");
        provision(&disk.path, "t-swap", &["--mkfs", "none", "--force"]).fails_with(
            3,
            &format!("{node} is active swap: swapoff {node} first, or pick another device"),
        );
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn a_read_only_disk_is_refused() {
        let (disk, _restore) = scratch_disk_restored("t-ro", None);
        let node = disk.path.to_str().unwrap();
        busybox(&["blockdev", "--setro", node]);
        provision(&disk.path, "t-ro", &["--mkfs", "none", "--force"]).fails_with(
            3,
            &format!(
                "{node} is read-only: it cannot hold an encrypted volume; pick another device"
            ),
        );
    }

    /// `shred` of a mounted volume is not refused: it wipes the key, detaches the volume's
    /// mount from the namespace without waiting for its users, and a process that still has
    /// a file open on it gets I/O errors, as `shred`'s documentation says.
    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn shred_of_a_mounted_volume_detaches_it_and_its_users_get_io_errors() {
        use std::io::Write as _;

        let (disk, _restore) = scratch_disk_restored("t-mshred", None);
        provision(&disk.path, "t-mshred", &["--mount", "/mnt/t-mshred"]).ok();
        let mut user = std::fs::File::create("/mnt/t-mshred/open-file").unwrap();
        user.write_all(b"written before the shred\n").unwrap();
        user.sync_all().unwrap();

        let run = tosskey(&["shred", "t-mshred"]).ok();
        assert!(
            run.stdout.contains("key wiped from t-mshred")
                && run.stdout.contains("stay until their users let go"),
            "{}",
            run.stdout
        );
        let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        assert!(
            !mounts.contains(" /mnt/t-mshred "),
            "still mounted after the shred: {mounts}"
        );
        let mapping = Path::new("/dev/mapper/t-mshred");
        assert_error_targets("t-mshred", 1);
        assert_direct_read_fails_with_eio(mapping, 1 << 20);
        // ext4 answers a write it cannot store either with EIO, or with EROFS once it has
        // aborted its journal over the errors: either way, no write reaches a disk.
        let err = user
            .write_all(&[b'x'; 8192])
            .and_then(|()| user.sync_all())
            .expect_err("a write and fsync after the shred succeeded");
        assert!(
            [Some(libc::EIO), Some(libc::EROFS)].contains(&err.raw_os_error()),
            "{err}"
        );

        // The last user gone, the lazy unmount completes and close removes the mapping.
        drop(user);
        let mut closed = tosskey(&["close", "t-mshred"]);
        for _ in 0..50 {
            if closed.code == 0 {
                break;
            }
            std::thread::sleep(std::time::Duration::from_millis(100));
            closed = tosskey(&["close", "t-mshred"]);
        }
        closed.ok();
        assert!(!mapping.exists());
    }
}
