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
