//! Discovery against fake sysfs/procfs trees shaped like real cloud machines.

use crate::common::fake_tree::{aws_i4i, FakeTree, GIB};
use tosskey::host::discover::{discover, discover_matching, Cloud, DiskMatcher};
use tosskey::host::safety::SafetyError;

fn names(tree: &FakeTree, cloud: Cloud) -> Vec<String> {
    discover(&tree.root, cloud)
        .unwrap()
        .disks
        .into_iter()
        .map(|d| d.name)
        .collect()
}

#[test]
fn aws_picks_instance_store_and_never_ebs() {
    let tree = aws_i4i();
    let found = discover(&tree.root, Cloud::Aws).unwrap();
    let picked: Vec<_> = found.disks.iter().map(|d| d.name.as_str()).collect();
    assert_eq!(picked, ["nvme1n1", "nvme2n1"]);
    assert!(found.skipped.is_empty(), "{:?}", found.skipped);
    let first = &found.disks[0];
    assert_eq!(first.identity, "AWS instance store");
    assert_eq!(first.size_bytes, 468 * GIB);
    assert_eq!(first.dev.to_string(), "259:3");
    assert_eq!(first.path, tree.root.dev.join("nvme1n1"));
    assert_eq!(first.serial.as_deref(), Some("AWS24BBF51AF55097008"));
    assert_eq!(
        first.model.as_deref(),
        Some("Amazon EC2 NVMe Instance Storage")
    );
}

#[test]
fn order_is_natural_not_lexical() {
    let mut tree = aws_i4i();
    tree.nvme(
        "nvme10n1",
        10,
        468 * GIB,
        "Amazon EC2 NVMe Instance Storage",
        "AWS10",
    );
    assert_eq!(names(&tree, Cloud::Aws), ["nvme1n1", "nvme2n1", "nvme10n1"]);
}

#[test]
fn mounted_instance_disk_is_skipped_with_reason() {
    let mut tree = aws_i4i();
    tree.mount((259, 3), "/data", "ext4", "/dev/nvme1n1");
    let found = discover(&tree.root, Cloud::Aws).unwrap();
    assert_eq!(found.disks.len(), 1);
    assert_eq!(found.disks[0].name, "nvme2n1");
    assert_eq!(found.skipped.len(), 1);
    assert_eq!(found.skipped[0].name, "nvme1n1");
    assert!(
        found.skipped[0]
            .reason
            .starts_with("/dev/nvme1n1 is mounted at /data"),
        "{}",
        found.skipped[0].reason
    );
}

#[test]
fn disk_with_mounted_partition_is_skipped() {
    let mut tree = aws_i4i();
    tree.partition("nvme2n1", "nvme2n1p1", (259, 9), 100 * GIB)
        .mount((259, 9), "/scratch", "xfs", "/dev/nvme2n1p1");
    let found = discover(&tree.root, Cloud::Aws).unwrap();
    assert_eq!(
        found.disks.iter().map(|d| &d.name).collect::<Vec<_>>(),
        ["nvme1n1"]
    );
    assert!(
        found.skipped[0]
            .reason
            .contains("has partition nvme2n1p1 in use (mounted at /scratch)"),
        "{}",
        found.skipped[0].reason
    );
}

#[test]
fn held_disks_are_skipped_naming_the_holder() {
    let mut tree = aws_i4i();
    tree.md("md127", 127, &["nvme1n1"], 400 * GIB).dm(
        "dm-3",
        3,
        "tosskey-x",
        "TOSSKEY-1234-x",
        &["nvme2n1"],
        400 * GIB,
    );
    let err = discover(&tree.root, Cloud::Aws).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, SafetyError::NoDisksFound { .. }));
    assert!(
        msg.starts_with("no instance-store disks found for aws: "),
        "{msg}"
    );
    assert!(msg.contains("/dev/nvme1n1 is held by md127"), "{msg}");
    assert!(
        msg.contains("/dev/nvme2n1 is held by dm-3 (tosskey-x)"),
        "{msg}"
    );
    assert!(msg.ends_with("(use explicit device paths)"), "{msg}");
}

#[test]
fn disk_carrying_partitions_is_skipped() {
    let mut tree = aws_i4i();
    tree.partition("nvme1n1", "nvme1n1p1", (259, 9), 100 * GIB);
    let found = discover(&tree.root, Cloud::Aws).unwrap();
    assert_eq!(names(&tree, Cloud::Aws), ["nvme2n1"]);
    assert!(
        found.skipped[0]
            .reason
            .contains("carries a partition table (nvme1n1p1)"),
        "{}",
        found.skipped[0].reason
    );
}

#[test]
fn root_on_md_over_instance_disks_is_the_system_disk() {
    // Root on dm-0 over md0 over both instance disks: both are system disks, found by
    // following slaves down from the device mounted at /.
    let mut tree = FakeTree::new();
    tree.nvme("nvme0n1", 0, 8 * GIB, "Amazon Elastic Block Store", "vol1")
        .nvme(
            "nvme1n1",
            3,
            468 * GIB,
            "Amazon EC2 NVMe Instance Storage",
            "AWS1",
        )
        .nvme(
            "nvme2n1",
            4,
            468 * GIB,
            "Amazon EC2 NVMe Instance Storage",
            "AWS2",
        )
        .md("md0", 0, &["nvme1n1", "nvme2n1"], 936 * GIB)
        .dm("dm-0", 0, "root", "LVM-abc", &["md0"], 936 * GIB)
        .mount((253, 0), "/", "ext4", "/dev/mapper/root");
    let msg = discover(&tree.root, Cloud::Aws).unwrap_err().to_string();
    assert!(
        msg.contains("/dev/nvme1n1 is on the system disk nvme1n1 (it holds /)"),
        "{msg}"
    );
    assert!(
        msg.contains("/dev/nvme2n1 is on the system disk nvme2n1"),
        "{msg}"
    );
}

#[test]
fn btrfs_boot_mount_with_anonymous_dev_is_resolved_by_source() {
    let mut tree = aws_i4i();
    // btrfs reports an anonymous 0:N device in mountinfo; the source names the disk.
    tree.mount((0, 45), "/boot", "btrfs", "/dev/nvme2n1");
    assert_eq!(names(&tree, Cloud::Aws), ["nvme1n1"]);
}

#[test]
fn swap_instance_disk_is_skipped() {
    let mut tree = aws_i4i();
    tree.swap("/dev/nvme1n1");
    let found = discover(&tree.root, Cloud::Aws).unwrap();
    assert_eq!(
        found.skipped[0].reason,
        "/dev/nvme1n1 is active swap: swapoff /dev/nvme1n1 first, or pick another device"
    );
}

fn gcp() -> FakeTree {
    let mut tree = FakeTree::new();
    // NVMe boot persistent disk, two local SSD namespaces on one controller, a SCSI
    // local SSD and a SCSI persistent disk.
    tree.nvme("nvme0n1", 0, 10 * GIB, "nvme_card-pd", "nvme_card-pd")
        .partition("nvme0n1", "nvme0n1p1", (259, 1), 10 * GIB - (1 << 20))
        .mount((259, 1), "/", "ext4", "/dev/nvme0n1p1")
        .nvme("nvme1n1", 2, 375 * GIB, "nvme_card", "nvme_card")
        .nvme("nvme1n2", 3, 375 * GIB, "nvme_card", "nvme_card")
        .nvme("nvme2n1", 4, 375 * GIB, "nvme_card1", "nvme_card1")
        .scsi("sda", 0, 100 * GIB, "Google", "PersistentDisk")
        .scsi("sdb", 16, 375 * GIB, "Google", "EphemeralDisk")
        .by_id("google-local-nvme-ssd-0", "nvme1n1")
        .by_id("google-local-ssd-0", "sdb")
        .by_id("google-persistent-disk-1", "sda");
    tree
}

#[test]
fn gcp_local_ssds_nvme_and_scsi_but_not_persistent_disks() {
    let tree = gcp();
    let found = discover(&tree.root, Cloud::Gcp).unwrap();
    let picked: Vec<_> = found
        .disks
        .iter()
        .map(|d| (d.name.as_str(), d.identity))
        .collect();
    assert_eq!(
        picked,
        [
            ("nvme1n1", "GCP local NVMe SSD"),
            ("nvme1n2", "GCP local NVMe SSD"),
            ("nvme2n1", "GCP local NVMe SSD"),
            ("sdb", "GCP local SCSI SSD"),
        ]
    );
}

#[test]
fn hidden_nvme_multipath_path_devices_are_not_disks() {
    let mut tree = aws_i4i();
    tree.nvme(
        "nvme1c1n1",
        20,
        468 * GIB,
        "Amazon EC2 NVMe Instance Storage",
        "AWS24BBF51AF55097008",
    )
    .attr("nvme1c1n1", "hidden", "1");
    assert_eq!(names(&tree, Cloud::Aws), ["nvme1n1", "nvme2n1"]);
}

#[test]
fn gcp_by_id_link_alone_identifies_a_local_ssd() {
    let mut tree = FakeTree::new();
    tree.disk("nvme3n1", (259, 7), 375 * GIB)
        .by_id("google-local-nvme-ssd-3", "nvme3n1");
    assert_eq!(names(&tree, Cloud::Gcp), ["nvme3n1"]);
}

fn azure() -> FakeTree {
    let mut tree = FakeTree::new();
    // OS disk and temporary resource disk on SCSI (the agent mounts the resource disk at
    // /mnt), a remote data disk on NVMe, and two local NVMe disks.
    tree.scsi("sda", 0, 30 * GIB, "Msft", "Virtual Disk")
        .partition("sda", "sda1", (8, 1), 30 * GIB - (1 << 20))
        .mount((8, 1), "/", "ext4", "/dev/sda1")
        .scsi("sdb", 16, 75 * GIB, "Msft", "Virtual Disk")
        .partition("sdb", "sdb1", (8, 17), 75 * GIB - (1 << 20))
        .mount((8, 17), "/mnt", "ext4", "/dev/sdb1")
        .nvme("nvme0n1", 0, 256 * GIB, "MSFT NVMe Accelerator v1.0", "a1")
        .nvme(
            "nvme1n1",
            2,
            440 * GIB,
            "Microsoft NVMe Direct Disk v2",
            "d1",
        )
        .nvme("nvme2n1", 3, 440 * GIB, "Microsoft NVMe Direct Disk", "d2");
    tree
}

#[test]
fn azure_local_nvme_only_not_resource_or_remote_disks() {
    let tree = azure();
    let found = discover(&tree.root, Cloud::Azure).unwrap();
    assert_eq!(
        found
            .disks
            .iter()
            .map(|d| d.name.as_str())
            .collect::<Vec<_>>(),
        ["nvme1n1", "nvme2n1"]
    );
    assert!(found
        .disks
        .iter()
        .all(|d| d.identity == "Azure local NVMe disk"));
    assert!(found.skipped.is_empty());
}

#[test]
fn any_cloud_unites_the_identities() {
    let tree = aws_i4i();
    assert_eq!(names(&tree, Cloud::Any), ["nvme1n1", "nvme2n1"]);
    let tree = azure();
    assert_eq!(names(&tree, Cloud::Any), ["nvme1n1", "nvme2n1"]);
    // Another cloud's identity does not match a specific cloud.
    let tree = azure();
    assert!(discover(&tree.root, Cloud::Aws).is_err());
}

#[test]
fn no_instance_disk_is_a_one_line_error_listing_what_was_seen() {
    let mut tree = FakeTree::new();
    tree.nvme("nvme0n1", 0, 8 * GIB, "Amazon Elastic Block Store", "vol1")
        .mount((259, 0), "/", "xfs", "/dev/nvme0n1")
        // Devices with no hardware behind them are not worth listing.
        .virtual_disk("loop0", (7, 0), GIB)
        .virtual_disk("ram0", (1, 0), GIB);
    let err = discover(&tree.root, Cloud::Aws).unwrap_err();
    assert_eq!(
        err.to_string(),
        "no instance-store disks found for aws: none of nvme0n1 (Amazon Elastic Block Store) \
         has an instance-store identity; aws matches NVMe model \"Amazon EC2 NVMe Instance Storage\" \
         (EBS volumes never) (use explicit device paths)"
    );
}

#[test]
fn serial_prefix_matcher_finds_the_vm_test_disks() {
    let mut tree = FakeTree::new();
    tree.virtio("vda", 0, 2 * GIB, "boot")
        .mount((252, 0), "/", "ext4", "/dev/vda")
        .virtio("vdb", 16, 256 << 20, "tosskey-disk-0")
        .virtio("vdc", 32, 256 << 20, "tosskey-disk-1");
    let matcher = DiskMatcher::SerialPrefix("tosskey-disk-".to_owned());
    let found = discover_matching(&tree.root, &matcher).unwrap();
    assert_eq!(
        found
            .disks
            .iter()
            .map(|d| (d.name.as_str(), d.serial.as_deref().unwrap()))
            .collect::<Vec<_>>(),
        [("vdb", "tosskey-disk-0"), ("vdc", "tosskey-disk-1")]
    );
    let none = DiskMatcher::SerialPrefix("nope-".to_owned());
    let msg = discover_matching(&tree.root, &none)
        .unwrap_err()
        .to_string();
    assert_eq!(
        msg,
        "no instance-store disks found for serial prefix \"nope-\": none of vda (serial boot), \
         vdb (serial tosskey-disk-0), vdc (serial tosskey-disk-1) has a matching serial \
         (use explicit device paths)"
    );
}

#[test]
fn missing_sysfs_is_an_inventory_error() {
    let dir = tempfile::tempdir().unwrap();
    let root = tosskey::host::sysfs::SystemRoot::under(dir.path());
    let msg = discover(&root, Cloud::Aws).unwrap_err().to_string();
    assert!(
        msg.starts_with("cannot read the block device inventory under"),
        "{msg}"
    );
}
