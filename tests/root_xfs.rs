//! Root tests of `provision --mkfs xfs`, run inside the VM guest by `scripts/vm-test`: the
//! XFS tosskey-xfs writes on the crypt mapping mounts, keeps files across an unmount and is
//! `xfs_repair -n` clean; on raid0 it is aligned to the array's chunk and width; the
//! escrowed volume comes back through `recover` as XFS, and a key that does not fit is told
//! apart; an overlayfs upper directory on it works (containerd's overlay snapshotter).

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{Read, Write};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};
use tosskey_testkit::{assert_xfs_repair_clean, sysfs_dir, DevId, LoopDevice};

use crate::common::{disks, escrow_test_keys, tosskey, Cleanup};

/// `struct xfs_dsb` offsets (fs/xfs/libxfs/xfs_format.h), big-endian.
const SB_BLOCKSIZE: usize = 4;
const SB_UNIT: usize = 184;
const SB_WIDTH: usize = 188;
const SB_FEATURES_INCOMPAT: usize = 216;
const XFS_SB_FEAT_INCOMPAT_FTYPE: u32 = 1;

fn be32(bytes: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(bytes[at..at + 4].try_into().unwrap())
}

/// The first 512 bytes of `device`: the primary superblock.
fn superblock(device: &Path) -> Vec<u8> {
    let mut sb = vec![0; 512];
    File::open(device).unwrap().read_exact(&mut sb).unwrap();
    sb
}

/// The `/proc/mounts` line of the mount at `dir`.
fn mount_line(dir: &str) -> String {
    std::fs::read_to_string("/proc/mounts")
        .unwrap()
        .lines()
        .find(|line| line.split(' ').nth(1) == Some(dir))
        .unwrap_or_else(|| panic!("nothing mounted at {dir}"))
        .to_owned()
}

/// Files of sizes around the block, page and extent boundaries, random contents, each
/// written and fsynced; returns what each should hold.
fn write_files(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let sizes = [0, 1, 511, 4095, 4096, 4097, 65539, 1 << 20, (5 << 20) + 7];
    sizes
        .iter()
        .enumerate()
        .map(|(index, &size)| {
            let mut data = vec![0u8; size];
            getrandom::fill(&mut data).unwrap();
            let path = dir.join(format!("file-{index}-{size}"));
            let mut file = File::create(&path).unwrap();
            file.write_all(&data).unwrap();
            file.sync_all().unwrap();
            (path, data)
        })
        .collect()
}

fn check_files(files: &BTreeMap<PathBuf, Vec<u8>>, when: &str) {
    for (path, data) in files {
        let read =
            std::fs::read(path).unwrap_or_else(|e| panic!("{when}: {}: {e}", path.display()));
        assert!(read == *data, "{when}: {} differs", path.display());
    }
}

/// Unmount volume `name` from `dir`, check it with `xfs_repair -n`, mount it again and
/// read `files` back.
fn unmount_check_and_remount(name: &str, dir: &str, files: &BTreeMap<PathBuf, Vec<u8>>) {
    let node = format!("/dev/mapper/{name}");
    umount(dir).unwrap();
    assert_xfs_repair_clean(Path::new(&node));
    mount(
        Some(node.as_str()),
        dir,
        Some("xfs"),
        MsFlags::empty(),
        None::<&str>,
    )
    .unwrap();
    check_files(files, "after an unmount");
}

/// One disk (a 512 MiB loop device: XFS needs 300 MiB, the default guest disks have 256):
/// the report, the dry run and `status` say xfs, the kernel mounts it as xfs, files of many
/// sizes survive an unmount, and `xfs_repair -n` finds nothing.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn xfs_on_one_disk_mounts_keeps_files_across_an_unmount_and_is_repair_clean() {
    let disk = LoopDevice::new(512 << 20).unwrap();
    let member = disk.path().to_str().unwrap();
    let _volume = Cleanup {
        name: "t-xfs1",
        disks: Vec::new(),
    };
    let dir = "/mnt/t-xfs1";
    let dry = tosskey(&[
        "provision",
        member,
        "--name",
        "t-xfs1",
        "--mkfs",
        "xfs",
        "--mount",
        dir,
        "--dry-run",
    ])
    .ok();
    assert!(
        dry.stdout.contains(
            "format /dev/mapper/t-xfs1 as xfs (as mkfs.xfs -K, aligned to the volume's stripe)"
        ),
        "{}",
        dry.stdout
    );
    let run = tosskey(&[
        "provision",
        member,
        "--name",
        "t-xfs1",
        "--mkfs",
        "xfs",
        "--label",
        "scratch",
        "--mount",
        dir,
        "--json",
    ])
    .ok();
    let report = run.json();
    assert_eq!(report["filesystem"]["kind"], "xfs", "{report}");
    assert_eq!(report["plan"]["mkfs"]["type"], "xfs", "{report}");
    let line = mount_line(dir);
    assert!(
        line.starts_with("/dev/mapper/t-xfs1 /mnt/t-xfs1 xfs rw,nosuid,nodev,noatime"),
        "{line}"
    );
    let sb = superblock(Path::new("/dev/mapper/t-xfs1"));
    assert_eq!(&sb[..4], b"XFSB");
    assert_eq!(&sb[108..115], b"scratch", "the label");
    let status = tosskey(&["status"]).ok().stdout;
    assert!(
        status.contains("  filesystem: xfs (made by the run, label \"scratch\")"),
        "{status}"
    );

    let files = write_files(Path::new(dir));
    check_files(&files, "written");
    unmount_check_and_remount("t-xfs1", dir, &files);
}

/// Two virtio disks in raid0 (512 KiB chunks): the superblock's stripe unit and width are
/// the chunk and the array's width, read from the mapping's `minimum_io_size` and
/// `optimal_io_size` as mkfs.xfs reads them, and the kernel mounts with that alignment.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn xfs_on_raid0_is_aligned_to_the_chunk_and_the_stripe() {
    let two = disks(2);
    let _volume = Cleanup {
        name: "t-xfs0",
        disks: two.clone(),
    };
    let dir = "/mnt/t-xfs0";
    let mut args = vec!["provision"];
    args.extend(two.iter().map(|d| d.to_str().unwrap()));
    args.extend(["--name", "t-xfs0", "--mkfs", "xfs", "--mount", dir]);
    tosskey(&args).ok();
    let mapping = DevId::of_block_device(Path::new("/dev/mapper/t-xfs0")).unwrap();
    let queue = |name: &str| -> u64 {
        std::fs::read_to_string(sysfs_dir(mapping).join("queue").join(name))
            .unwrap()
            .trim()
            .parse()
            .unwrap()
    };
    assert_eq!(
        queue("minimum_io_size"),
        512 << 10,
        "the chunk reaches the mapping"
    );
    assert_eq!(
        queue("optimal_io_size"),
        1 << 20,
        "the stripe reaches the mapping"
    );
    let sb = superblock(Path::new("/dev/mapper/t-xfs0"));
    assert_eq!(be32(&sb, SB_BLOCKSIZE), 4096);
    assert_eq!(
        be32(&sb, SB_UNIT),
        128,
        "stripe unit: 512 KiB in 4 KiB blocks"
    );
    assert_eq!(be32(&sb, SB_WIDTH), 256, "stripe width: 2 chunks");
    let line = mount_line(dir);
    assert!(
        line.contains(",sunit=1024,swidth=2048"),
        "the kernel's alignment, in 512-byte sectors: {line}"
    );
    let files = write_files(Path::new(dir));
    unmount_check_and_remount("t-xfs0", dir, &files);
}

/// An escrowed XFS volume comes back through `recover`, mounted as XFS with its files; the
/// escrow file of the volume before it on the same disks is refused as a key that does not
/// fit (its mapping decrypts to noise, not to an XFS superblock with a valid CRC).
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn an_escrowed_xfs_volume_is_recovered_as_xfs_and_a_key_that_does_not_fit_is_refused() {
    let two = disks(2);
    let volume = Cleanup {
        name: "t-xfsrec",
        disks: two.clone(),
    };
    let (public, private) = escrow_test_keys();
    let escrow = "/tmp/t-xfsrec.escrow";
    let previous = format!("{escrow}.previous");
    let _ = std::fs::remove_file(escrow);
    let _ = std::fs::remove_file(&previous);
    let dir = "/mnt/t-xfsrec";
    let provision = || {
        let mut args = vec!["provision"];
        args.extend(two.iter().map(|d| d.to_str().unwrap()));
        args.extend([
            "--name",
            volume.name,
            "--mkfs",
            "xfs",
            "--mount",
            dir,
            "--escrow-key",
            public.to_str().unwrap(),
            "--escrow-file",
            escrow,
        ]);
        tosskey(&args).ok()
    };
    provision();
    std::fs::write(format!("{dir}/first"), b"first volume").unwrap();
    tosskey(&["close", volume.name, "--unmount"]).ok();
    provision();
    let files = write_files(Path::new(dir));
    tosskey(&["close", volume.name, "--unmount"]).ok();

    let recover = |file: &str| {
        tosskey(&[
            "recover",
            "--escrow-file",
            file,
            "--private-key",
            private.to_str().unwrap(),
            "--mount",
            dir,
        ])
    };
    recover(&previous).fails_with(3, "does not decrypt to an ext4 or XFS filesystem");
    assert!(
        !Path::new("/dev/mapper/t-xfsrec").exists(),
        "the refused recovery left its mapping"
    );
    recover(escrow).ok();
    let line = mount_line(dir);
    assert!(line.contains(" xfs "), "recovered as XFS: {line}");
    check_files(&files, "recovered");
    assert!(!Path::new(&format!("{dir}/first")).exists());
    drop(volume);
    std::fs::remove_file(escrow).unwrap();
    std::fs::remove_file(&previous).unwrap();
}

/// What containerd's overlay snapshotter does on the volume: an overlayfs mount with its
/// upper and work directories on the XFS (`ftype=1`, so the directory entries carry
/// `d_type`); a file written through the overlay lands in the upper directory, a lower
/// file deleted through it leaves a whiteout (a 0:0 character device) there.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn an_overlayfs_upper_directory_on_the_xfs_volume_takes_writes_and_whiteouts() {
    let disk = LoopDevice::new(512 << 20).unwrap();
    let _volume = Cleanup {
        name: "t-xfsovl",
        disks: Vec::new(),
    };
    let dir = Path::new("/mnt/t-xfsovl");
    tosskey(&[
        "provision",
        disk.path().to_str().unwrap(),
        "--name",
        "t-xfsovl",
        "--mkfs",
        "xfs",
        "--mount",
        dir.to_str().unwrap(),
    ])
    .ok();
    let sb = superblock(Path::new("/dev/mapper/t-xfsovl"));
    assert_ne!(
        be32(&sb, SB_FEATURES_INCOMPAT) & XFS_SB_FEAT_INCOMPAT_FTYPE,
        0,
        "ftype=1"
    );
    let [lower, upper, work, merged] = ["lower", "upper", "work", "merged"].map(|d| dir.join(d));
    for d in [&lower, &upper, &work, &merged] {
        std::fs::create_dir(d).unwrap();
    }
    std::fs::write(lower.join("image-layer"), b"from the image").unwrap();
    std::fs::write(lower.join("deleted-by-the-container"), b"gone soon").unwrap();
    let options = format!(
        "lowerdir={},upperdir={},workdir={}",
        lower.display(),
        upper.display(),
        work.display()
    );
    mount(
        Some("overlay"),
        &merged,
        Some("overlay"),
        MsFlags::empty(),
        Some(options.as_str()),
    )
    .unwrap_or_else(|e| panic!("mount -t overlay -o {options}: {e}"));
    let unmount_overlay = unmount_when_dropped(&merged);

    assert_eq!(
        std::fs::read(merged.join("image-layer")).unwrap(),
        b"from the image"
    );
    let mut written = File::create(merged.join("written-by-the-container")).unwrap();
    written.write_all(b"container data").unwrap();
    written.sync_all().unwrap();
    std::fs::remove_file(merged.join("deleted-by-the-container")).unwrap();
    assert!(!merged.join("deleted-by-the-container").exists());

    assert_eq!(
        std::fs::read(upper.join("written-by-the-container")).unwrap(),
        b"container data"
    );
    let whiteout = std::fs::symlink_metadata(upper.join("deleted-by-the-container")).unwrap();
    assert!(
        whiteout.file_type().is_char_device() && whiteout.rdev() == 0,
        "a whiteout is a 0:0 character device: {whiteout:?}"
    );
    assert_eq!(
        std::fs::read(lower.join("deleted-by-the-container")).unwrap(),
        b"gone soon",
        "the lower layer is untouched"
    );
    drop(unmount_overlay);
}

/// Unmounts the overlay at `merged` when dropped, so the volume's cleanup can unmount it.
fn unmount_when_dropped(merged: &Path) -> impl Drop + '_ {
    struct Unmount<'a>(&'a Path);
    impl Drop for Unmount<'_> {
        fn drop(&mut self) {
            let _ = umount(self.0);
        }
    }
    Unmount(merged)
}
