//! Member safety checks: image files end to end, every use-refusal against fake sysfs
//! trees, and (as root) block device nodes pointing into those trees.

use std::fs;
use std::path::{Path, PathBuf};

use crate::common::fake_tree::{aws_i4i, FakeTree, GIB};
use tosskey::host::safety::{
    check_member, check_members, usage_refusal, CheckOptions, MemberKind, SafetyError,
    MIN_MEMBER_BYTES,
};
use tosskey::host::signature::{ExtFlavour, SignatureKind};
use tosskey::host::sysfs::SystemState;
// Links the root-test gate: outside the VM guest this executable refuses --ignored runs.

const FILES: CheckOptions = CheckOptions {
    force: false,
    allow_regular_file: true,
};

fn image(dir: &Path, name: &str, size: u64) -> PathBuf {
    let path = dir.join(name);
    fs::File::create(&path).unwrap().set_len(size).unwrap();
    path
}

fn ext4_image(dir: &Path) -> PathBuf {
    let path = image(dir, "ext4.img", 32 << 20);
    let status = std::process::Command::new("mke2fs")
        .args(["-q", "-F", "-t", "ext4"])
        .arg(&path)
        .status()
        .expect("mke2fs (e2fsprogs) is installed on the host");
    assert!(status.success());
    path
}

#[test]
fn blank_image_passes_and_keeps_its_claim_until_released() {
    let tree = FakeTree::new();
    let path = image(tree.path(), "blank.img", 64 << 20);
    let mut checked = check_member(&tree.root, &path, &FILES).unwrap();
    assert_eq!(checked.kind, MemberKind::RegularFile);
    assert_eq!(checked.size_bytes, 64 << 20);
    assert_eq!(checked.dev(), None);
    assert!(checked.overridden.is_empty());
    assert!(checked.is_claimed());
    checked.release_claim();
    assert!(!checked.is_claimed());
}

#[test]
fn previous_boots_ciphertext_passes_without_force() {
    let tree = FakeTree::new();
    let path = tree.path().join("random.img");
    let mut bytes = vec![0u8; 32 << 20];
    getrandom::fill(&mut bytes).unwrap();
    fs::write(&path, &bytes).unwrap();
    let checked = check_member(&tree.root, &path, &FILES).unwrap();
    assert!(checked.overridden.is_empty());
}

#[test]
fn regular_file_is_refused_unless_allowed() {
    let tree = FakeTree::new();
    let path = image(tree.path(), "disk.img", 64 << 20);
    let err = check_member(&tree.root, &path, &CheckOptions::default()).unwrap_err();
    assert!(matches!(err, SafetyError::NotBlockDevice { .. }));
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a regular file, not a block device: name a disk such as /dev/nvme1n1",
            path.display()
        )
    );
    let err = check_member(&tree.root, tree.path(), &FILES).unwrap_err();
    assert!(
        err.to_string()
            .contains("is a directory, not a block device"),
        "{err}"
    );
    let err = check_member(&tree.root, Path::new("/dev/null"), &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/dev/null is a character device, not a block device: name a disk such as /dev/nvme1n1"
    );
}

#[test]
fn nonexistent_path_is_refused() {
    let tree = FakeTree::new();
    let path = tree.path().join("nvme9n1");
    let err = check_member(&tree.root, &path, &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!("{}: no such file or device; check the path", path.display())
    );
    // A /dev path gets the stable names; a bare kernel name its /dev path.
    let err = check_member(&tree.root, Path::new("/dev/nvme9n1"), &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        "/dev/nvme9n1: no such device; check the name (ls /dev/disk/by-id lists stable names)"
    );
    let err = check_member(&tree.root, Path::new("null"), &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        "null: no such file in the current directory; give the device's path: /dev/null"
    );
}

#[test]
fn tiny_member_is_refused() {
    let tree = FakeTree::new();
    let path = image(tree.path(), "tiny.img", 1 << 20);
    let err = check_member(&tree.root, &path, &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is too small (1048576 bytes, at least {MIN_MEMBER_BYTES} needed): pick a larger device",
            path.display()
        )
    );
}

#[test]
fn ext4_signature_refused_without_force_and_recorded_with_it() {
    let tree = FakeTree::new();
    let path = ext4_image(tree.path());
    let before = fs::read(&path).unwrap();
    let err = check_member(&tree.root, &path, &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} has an ext4 filesystem signature at offset 1024: pass --force to overwrite it, or pick another device",
            path.display()
        )
    );
    let forced = CheckOptions {
        force: true,
        ..FILES
    };
    let checked = check_member(&tree.root, &path, &forced).unwrap();
    assert_eq!(checked.overridden.len(), 1);
    assert_eq!(
        checked.overridden[0].kind,
        SignatureKind::Ext(ExtFlavour::Ext4)
    );
    assert_eq!(checked.overridden[0].offset, 1024);
    // Checking never writes.
    assert!(fs::read(&path).unwrap() == before);
}

/// The backstop on a real file: a header of a format tosskey does not name, in the last
/// MiB of an image (as ZFS keeps labels L2/L3), is refused naming its offset; `--force`
/// records it.
#[test]
fn structured_data_refused_without_force_and_recorded_with_it() {
    let tree = FakeTree::new();
    let size: u64 = 32 << 20;
    let path = image(tree.path(), "unnamed.img", size);
    let offset = size - (256 << 10);
    let mut header = vec![0u8; 512];
    header[0..8].copy_from_slice(&0x00ba_b10cu64.to_le_bytes());
    header[16..42].copy_from_slice(b"a label tosskey can't name");
    std::os::unix::fs::FileExt::write_all_at(
        &fs::File::options().write(true).open(&path).unwrap(),
        &header,
        offset,
    )
    .unwrap();
    let err = check_member(&tree.root, &path, &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} has structured data at offset {offset} (neither blank nor random: a format tosskey does not name): pass --force to overwrite it, or pick another device",
            path.display()
        )
    );
    let forced = CheckOptions {
        force: true,
        ..FILES
    };
    let checked = check_member(&tree.root, &path, &forced).unwrap();
    assert_eq!(
        checked
            .overridden
            .iter()
            .map(|s| (s.kind, s.offset))
            .collect::<Vec<_>>(),
        [(SignatureKind::StructuredData, offset)]
    );
}

#[test]
fn same_member_twice_under_two_names_is_refused() {
    let tree = FakeTree::new();
    let path = image(tree.path(), "a.img", 64 << 20);
    let link = tree.path().join("link-to-a");
    std::os::unix::fs::symlink(&path, &link).unwrap();
    let other = image(tree.path(), "b.img", 64 << 20);
    let err = check_members(&tree.root, &[path.clone(), other, link.clone()], &FILES).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} and {} are the same device ({}): name each member once",
            link.display(),
            path.display(),
            fs::canonicalize(&path).unwrap().display()
        )
    );
}

#[test]
fn every_member_is_checked_in_order() {
    let tree = FakeTree::new();
    let good = image(tree.path(), "good.img", 64 << 20);
    let tiny = image(tree.path(), "tiny.img", 4096);
    let err = check_members(&tree.root, &[good.clone(), tiny], &FILES).unwrap_err();
    assert!(matches!(err, SafetyError::TooSmall { .. }), "{err}");
    let both = check_members(
        &tree.root,
        &[good, image(tree.path(), "g2.img", 64 << 20)],
        &FILES,
    )
    .unwrap();
    assert_eq!(both.len(), 2);
}

// --- use refusals on fake trees -----------------------------------------------------------

fn refusal(tree: &FakeTree, name: &str) -> Option<String> {
    let state = SystemState::read(&tree.root).unwrap();
    let device = state
        .by_name(name)
        .unwrap_or_else(|| panic!("{name} in the fake tree"));
    usage_refusal(&state, device, &Path::new("/dev").join(name)).map(|e| e.to_string())
}

#[test]
fn unused_instance_disk_has_no_refusal() {
    let tree = aws_i4i();
    assert_eq!(refusal(&tree, "nvme1n1"), None);
}

#[test]
fn mounted_disk() {
    let mut tree = aws_i4i();
    tree.mount((259, 3), "/data", "ext4", "/dev/nvme1n1");
    assert_eq!(
        refusal(&tree, "nvme1n1").unwrap(),
        "/dev/nvme1n1 is mounted at /data: unmount it first, or pick another device"
    );
}

#[test]
fn mounted_partition() {
    let mut tree = aws_i4i();
    tree.partition("nvme1n1", "nvme1n1p1", (259, 9), 10 * GIB)
        .mount((259, 9), "/srv", "xfs", "/dev/nvme1n1p1");
    assert_eq!(
        refusal(&tree, "nvme1n1").unwrap(),
        "/dev/nvme1n1 has partition nvme1n1p1 in use (mounted at /srv): free it first, or pick another device"
    );
}

#[test]
fn swap_disk() {
    let mut tree = aws_i4i();
    tree.swap("/dev/nvme2n1");
    assert_eq!(
        refusal(&tree, "nvme2n1").unwrap(),
        "/dev/nvme2n1 is active swap: swapoff /dev/nvme2n1 first, or pick another device"
    );
}

#[test]
fn held_by_a_tosskey_mapping_names_it_and_the_fix() {
    let mut tree = aws_i4i();
    tree.dm(
        "dm-3",
        3,
        "tosskey-x",
        "TOSSKEY-b00t-x",
        &["nvme1n1"],
        400 * GIB,
    );
    assert_eq!(
        refusal(&tree, "nvme1n1").unwrap(),
        "/dev/nvme1n1 is held by dm-3 (tosskey-x): it belongs to the tosskey volume tosskey-x: \
         see tosskey status, remove it with tosskey close tosskey-x"
    );
}

#[test]
fn held_by_md_lvm_cryptsetup_or_other_dm() {
    let mut tree = aws_i4i();
    tree.md("md127", 127, &["nvme1n1"], 400 * GIB);
    assert_eq!(
        refusal(&tree, "nvme1n1").unwrap(),
        "/dev/nvme1n1 is held by md127: it is a member of the md array md127: stop the array first"
    );
    tree.dm("dm-1", 1, "vg-data", "LVM-abcdef", &["nvme2n1"], 400 * GIB);
    assert!(refusal(&tree, "nvme2n1")
        .unwrap()
        .contains("held by dm-1 (vg-data): it is an LVM physical volume"));
    let mut tree = aws_i4i();
    tree.dm(
        "dm-2",
        2,
        "secret",
        "CRYPT-PLAIN-secret",
        &["nvme1n1"],
        400 * GIB,
    )
    .dm("dm-4", 4, "thing", "", &["nvme2n1"], 400 * GIB);
    assert!(refusal(&tree, "nvme1n1")
        .unwrap()
        .ends_with("close the cryptsetup mapping first (cryptsetup close secret)"));
    assert!(refusal(&tree, "nvme2n1")
        .unwrap()
        .ends_with("remove the device-mapper device first (dmsetup remove thing)"));
}

#[test]
fn root_disk_and_its_partitions() {
    let tree = aws_i4i();
    assert_eq!(
        refusal(&tree, "nvme0n1").unwrap(),
        "/dev/nvme0n1 is on the system disk nvme0n1 (it holds /): never encrypt the disk the \
         system runs from; pick another device"
    );
    // The unused BIOS-boot partition of the root disk is still on the root disk.
    assert!(refusal(&tree, "nvme0n1p128")
        .unwrap()
        .contains("is on the system disk nvme0n1"));
}

#[test]
fn root_through_dm_crypt_on_a_partition() {
    let mut tree = FakeTree::new();
    tree.nvme("nvme0n1", 0, 100 * GIB, "Samsung SSD", "S1")
        .partition("nvme0n1", "nvme0n1p1", (259, 1), GIB)
        .partition("nvme0n1", "nvme0n1p2", (259, 2), 99 * GIB)
        .dm(
            "dm-0",
            0,
            "luks-root",
            "CRYPT-LUKS2-abc-luks-root",
            &["nvme0n1p2"],
            99 * GIB,
        )
        .mount((253, 0), "/", "ext4", "/dev/mapper/luks-root")
        .mount((259, 1), "/boot", "ext4", "/dev/nvme0n1p1");
    assert!(refusal(&tree, "nvme0n1")
        .unwrap()
        .contains("is on the system disk nvme0n1 (it holds /)"));
}

#[test]
fn partition_of_a_disk_in_use() {
    let mut tree = aws_i4i();
    tree.partition("nvme1n1", "nvme1n1p1", (259, 9), 10 * GIB)
        .partition("nvme1n1", "nvme1n1p2", (259, 10), 10 * GIB)
        .mount((259, 10), "/srv", "xfs", "/dev/nvme1n1p2");
    assert_eq!(
        refusal(&tree, "nvme1n1p1").unwrap(),
        "/dev/nvme1n1p1 is a partition of nvme1n1, which is in use (nvme1n1p2 mounted at /srv): \
         pick a whole unused disk"
    );
}

#[test]
fn read_only_disk() {
    let mut tree = aws_i4i();
    tree.attr("nvme2n1", "ro", "1");
    assert_eq!(
        refusal(&tree, "nvme2n1").unwrap(),
        "/dev/nvme2n1 is read-only: it cannot hold an encrypted volume; pick another device"
    );
}

#[test]
fn mount_via_dev_mapper_name_without_udev_links() {
    // Without udev, /dev/mapper/NAME is not a symlink: the dm name itself resolves it.
    let mut tree = aws_i4i();
    tree.dm("dm-5", 5, "data", "", &["nvme2n1"], 400 * GIB)
        .mount((0, 50), "/data", "btrfs", "/dev/mapper/data");
    let state = SystemState::read(&tree.root).unwrap();
    assert_eq!(state.mount_points("dm-5"), ["/data"]);
}

// --- block device nodes (need CAP_MKNOD) --------------------------------------------------

/// A block device node numbered `dev` in the fake tree's `dev/`.
fn node(tree: &FakeTree, name: &str, dev: (u32, u32)) -> PathBuf {
    let path = tree.root.dev.join(name);
    let status = std::process::Command::new("mknod")
        .arg(&path)
        .arg("b")
        .arg(dev.0.to_string())
        .arg(dev.1.to_string())
        .status()
        .expect("mknod");
    assert!(status.success(), "mknod {} needs root", path.display());
    path
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn block_disk_nodes_are_looked_up_by_device_number() {
    let mut tree = aws_i4i();
    tree.mount((259, 3), "/data", "ext4", "/dev/nvme1n1");
    // The node's name does not matter: its device number does.
    let data = node(&tree, "some-alias", (259, 3));
    let err = check_member(&tree.root, &data, &CheckOptions::default()).unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is mounted at /data: unmount it first, or pick another device",
            data.display()
        )
    );
    let unknown = node(&tree, "ghost", (259, 77));
    let err = check_member(&tree.root, &unknown, &CheckOptions::default()).unwrap_err();
    assert!(
        err.to_string()
            .contains("(block device 259:77) is not listed in"),
        "{err}"
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn duplicate_and_overlapping_block_disk_members() {
    let mut tree = aws_i4i();
    tree.partition("nvme2n1", "nvme2n1p1", (259, 9), 10 * GIB);
    let a = node(&tree, "nvme1n1", (259, 3));
    let b = node(&tree, "by-id-nvme1n1", (259, 3));
    let err = check_members(
        &tree.root,
        &[a.clone(), b.clone()],
        &CheckOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} and {} are the same device (nvme1n1): name each member once",
            b.display(),
            a.display()
        )
    );
    let disk = node(&tree, "nvme2n1", (259, 4));
    let part = node(&tree, "nvme2n1p1", (259, 9));
    let err = check_members(
        &tree.root,
        &[disk.clone(), part.clone()],
        &CheckOptions::default(),
    )
    .unwrap_err();
    assert_eq!(
        err.to_string(),
        format!(
            "{} is a partition of {}, which is also a member: name whole disks, each once",
            part.display(),
            disk.display()
        )
    );
}
