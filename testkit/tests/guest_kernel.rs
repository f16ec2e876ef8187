//! Root tests that prove the VM guest is the kernel environment tosskey needs:
//! device-mapper, md, brd, loop, the virtio disks and the crypto API algorithms.
//! They run only inside the guest (`scripts/vm-test -p tosskey-testkit`).

use std::fs::{self, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::FileTypeExt;
use std::path::Path;

use sha2::{Digest, Sha256};
use tosskey_testkit::{
    block_device_size, in_vm, request_skcipher, sha256_of_range, sysfs_dir, virtio_disk_by_serial,
    virtio_disks, zero_range, DevId, LoopDevice,
};

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn harness_marks_the_guest() {
    assert!(in_vm(), "the guest init writes the kernel command line's tosskey.guest= token to /run/tosskey-guest");
    assert_eq!(std::env::current_dir().unwrap(), Path::new("/tmp"));
    // Root tests need real root: the effective uid in /proc/self/status.
    let status = fs::read_to_string("/proc/self/status").unwrap();
    let uid_line = status.lines().find(|l| l.starts_with("Uid:")).unwrap();
    assert_eq!(uid_line.split_whitespace().nth(1), Some("0"), "{uid_line}");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn device_mapper_control_node_exists() {
    let misc = fs::read_to_string("/proc/misc").unwrap();
    let minor = misc
        .lines()
        .find_map(|line| line.strip_suffix(" device-mapper"))
        .unwrap_or_else(|| panic!("device-mapper missing from /proc/misc:\n{misc}"));
    assert_eq!(minor.trim(), "236");
    let control = fs::metadata("/dev/mapper/control").expect("/dev/mapper/control");
    assert!(control.file_type().is_char_device());
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_array_node_can_be_created_and_removed() {
    // md127 is mdadm's first choice; use a high, unusual number so this test cannot
    // collide with arrays other tests create.
    let name = "md250";
    let sys_dir = Path::new("/sys/block").join(name);
    assert!(!sys_dir.exists(), "{name} already exists");
    fs::write("/sys/module/md_mod/parameters/new_array", name).unwrap();
    assert!(
        sys_dir.join("md").is_dir(),
        "{} has no md/ directory",
        sys_dir.display()
    );
    let state = fs::read_to_string(sys_dir.join("md/array_state")).unwrap();
    assert_eq!(state.trim(), "clear");
    let node = Path::new("/dev").join(name);
    let dev = DevId::of_block_device(&node).unwrap();
    assert_eq!(dev.major, 9);
    assert_eq!(dev.minor, 250);
    // "clear" stops an array that has no members; md then deletes its gendisk.
    fs::write(sys_dir.join("md/array_state"), "clear").unwrap();
    for _ in 0..50 {
        if !sys_dir.exists() {
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert!(!sys_dir.exists(), "{name} was not removed");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn brd_ramdisks_have_the_configured_size() {
    for index in 0..4 {
        let path = format!("/dev/ram{index}");
        assert_eq!(
            block_device_size(Path::new(&path)).unwrap(),
            64 << 20,
            "{path} size"
        );
    }
    // Write a pattern into the last MiB and read it back: a real, writable RAM disk.
    // (Only 1 MiB: hashing runs unoptimised and emulated, so whole-device hashes are slow.)
    let ram = Path::new("/dev/ram3");
    let offset = (64 << 20) - (1 << 20);
    zero_range(ram, offset, 1 << 20).unwrap();
    let zeros: [u8; 32] = Sha256::digest(vec![0u8; 1 << 20]).into();
    assert_eq!(sha256_of_range(ram, offset, 1 << 20).unwrap(), zeros);
    let pattern: Vec<u8> = (0u8..=250).cycle().take(1 << 20).collect();
    let mut file = OpenOptions::new().write(true).open(ram).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(&pattern).unwrap();
    file.sync_all().unwrap();
    let expected: [u8; 32] = Sha256::digest(&pattern).into();
    assert_eq!(sha256_of_range(ram, offset, 1 << 20).unwrap(), expected);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn loop_device_round_trips_data_and_detaches() {
    let size = 8 << 20;
    let pattern: Vec<u8> = (0u8..=255).cycle().take(1 << 20).collect();
    let (path, sys_dir) = {
        let device = LoopDevice::new(size).unwrap();
        assert_eq!(device.size_bytes(), size);
        assert_eq!(block_device_size(device.path()).unwrap(), size);
        assert_eq!(device.dev().major, 7);
        let backing = sysfs_dir(device.dev()).join("loop/backing_file");
        assert!(
            backing.exists(),
            "{} is not attached",
            device.path().display()
        );

        let mut file = OpenOptions::new().write(true).open(device.path()).unwrap();
        file.seek(SeekFrom::Start(3 << 20)).unwrap();
        file.write_all(&pattern).unwrap();
        file.sync_all().unwrap();
        drop(file);
        // Read back through the loop driver, not the page cache of /dev/loopN.
        fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
        let expected: [u8; 32] = Sha256::digest(&pattern).into();
        assert_eq!(
            sha256_of_range(device.path(), 3 << 20, 1 << 20).unwrap(),
            expected
        );
        let mut head = [0xffu8; 4096];
        fs::File::open(device.path())
            .unwrap()
            .read_exact(&mut head)
            .unwrap();
        assert!(
            head.iter().all(|&b| b == 0),
            "a fresh sparse loop device reads zeros"
        );
        (device.path().to_path_buf(), sysfs_dir(device.dev()))
    };
    // After Drop the loop device has no backing file any more.
    let backing = sys_dir.join("loop/backing_file");
    assert!(!backing.exists(), "{} is still attached", path.display());
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn loop_device_with_4096_byte_blocks() {
    let device = LoopDevice::with_block_size(4 << 20, 4096).unwrap();
    let queue = sysfs_dir(device.dev()).join("queue/logical_block_size");
    assert_eq!(fs::read_to_string(queue).unwrap().trim(), "4096");
    assert_eq!(device.block_size(), 4096);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn virtio_disks_are_present_with_serials_and_sizes() {
    let disks = virtio_disks().unwrap();
    assert!(!disks.is_empty(), "the harness attaches at least one disk");
    for (index, disk) in disks.iter().enumerate() {
        assert_eq!(disk.serial, format!("tosskey-disk-{index}"), "{disk:?}");
        assert_eq!(block_device_size(&disk.path).unwrap(), disk.size_bytes);
        assert!(disk.size_bytes >= 16 << 20, "{disk:?}");
    }
    let last = disks.last().unwrap();
    assert_eq!(
        virtio_disk_by_serial(&last.serial).unwrap().as_ref(),
        Some(last)
    );
    assert_eq!(virtio_disk_by_serial("no-such-serial").unwrap(), None);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn crypto_api_has_xts_twofish_and_xts_aes() {
    // dm-crypt instantiates "xts(twofish)" / "xts(aes)" on demand; /proc/crypto lists a
    // template instance only once something has requested it, so request both through
    // AF_ALG the way the kernel's crypto users do: by name.
    for algorithm in ["xts(twofish)", "xts(aes)"] {
        request_skcipher(algorithm).unwrap();
    }
    let crypto = fs::read_to_string("/proc/crypto").unwrap();
    for algorithm in ["xts(twofish)", "xts(aes)"] {
        let needle = format!("name         : {algorithm}");
        assert!(
            crypto.contains(&needle),
            "{algorithm} missing from /proc/crypto"
        );
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn host_e2fsprogs_run_in_the_guest() {
    // scripts/vm-test copies e2fsck, dumpe2fs and mke2fs (TOSSKEY_VM_TOOLS) with their
    // shared libraries; running them proves the libraries and ELF interpreter came along.
    let ram = "/dev/ram2";
    let run = |program: &str, args: &[&str]| {
        let output = std::process::Command::new(program)
            .args(args)
            .output()
            .unwrap_or_else(|error| panic!("{program}: {error}"));
        assert!(
            output.status.success(),
            "{program} {args:?}: {}\n{}",
            output.status,
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    };
    run("/usr/sbin/mke2fs", &["-q", "-F", "-t", "ext4", ram]);
    run("/usr/sbin/e2fsck", &["-f", "-n", ram]);
    let header = run("/usr/sbin/dumpe2fs", &["-h", ram]);
    assert!(
        header.contains("Filesystem magic number:  0xEF53"),
        "{header}"
    );
    zero_range(Path::new(ram), 0, 1 << 20).unwrap();
}
