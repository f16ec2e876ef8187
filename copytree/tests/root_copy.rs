//! Root tests, run in the guest by `scripts/vm-test -p tosskey-copytree -- root_copy::`:
//! what only root can make (other owners, set-ID files with capabilities, `trusted.*`
//! attributes, overlayfs whiteouts and opaque directories, device nodes), copied from a
//! tmpfs onto an ext4 that tosskey-ext4 formats on a loop device, the way `provision --bind`
//! copies the root filesystem's directory onto the volume, and compared entry by entry.

use std::fs;
use std::os::unix::fs::{lchown, symlink, MetadataExt};
use std::path::{Path, PathBuf};

use nix::mount::{mount, umount, MsFlags};
use nix::sys::stat::{makedev, mknod, Mode, SFlag};
use tosskey_copytree::{copy_tree, Error};
use tosskey_testkit::guest::require_guest;
use tosskey_testkit::LoopDevice;

use crate::host_copy::{chmod, pattern, write_sparse};
use crate::tree::{
    assert_same_contents, assert_same_tree, freeze_access_times, set_xattr, snapshot, xattrs,
};

const MIB: u64 = 1 << 20;

/// A `security.capability` value (VFS_CAP_REVISION_2, effective): `cap_net_bind_service+ep`.
const NET_BIND_SERVICE_CAPABILITY: [u8; 20] = [
    0x01, 0x00, 0x00, 0x02, // revision 2 | effective
    0x00, 0x04, 0x00, 0x00, // permitted, low word: bit 10 (CAP_NET_BIND_SERVICE)
    0x00, 0x00, 0x00, 0x00, // inheritable, low word
    0x00, 0x00, 0x00, 0x00, // permitted, high word
    0x00, 0x00, 0x00, 0x00, // inheritable, high word
];

/// `system.posix_acl_access` for `u::rw-,u:1000:r--,g::r--,m::r--,o::---` (the kernel's
/// little-endian xattr form: a version, then tag, permissions and id per entry).
fn access_acl() -> Vec<u8> {
    let mut acl = 2u32.to_le_bytes().to_vec();
    for (tag, permissions, id) in [
        (0x01u16, 6u16, u32::MAX),
        (0x02, 4, 1000),
        (0x04, 4, u32::MAX),
        (0x10, 4, u32::MAX),
        (0x20, 0, u32::MAX),
    ] {
        acl.extend_from_slice(&tag.to_le_bytes());
        acl.extend_from_slice(&permissions.to_le_bytes());
        acl.extend_from_slice(&id.to_le_bytes());
    }
    acl
}

/// A mount that is undone on drop.
struct Mounted {
    point: PathBuf,
}

impl Mounted {
    fn new(source: &Path, name: &str, fstype: &str) -> Mounted {
        require_guest();
        let point = std::env::temp_dir().join(format!("tosskey-copytree-{name}"));
        fs::create_dir_all(&point).unwrap();
        mount(
            Some(source),
            &point,
            Some(fstype),
            MsFlags::empty(),
            None::<&str>,
        )
        .unwrap_or_else(|error| panic!("mount -t {fstype} {}: {error}", point.display()));
        Mounted { point }
    }

    fn tmpfs(name: &str) -> Mounted {
        Mounted::new(Path::new("tmpfs"), name, "tmpfs")
    }
}

impl Drop for Mounted {
    fn drop(&mut self) {
        if let Err(error) = umount(&self.point) {
            eprintln!("umount {}: {error}", self.point.display());
        }
        fs::remove_dir(&self.point).ok();
    }
}

/// A fresh ext4 made by tosskey-ext4 on a loop device, mounted, with an empty directory
/// `copy` to copy into (the root holds lost+found).
struct Volume {
    mounted: Mounted,
    _device: LoopDevice,
}

impl Volume {
    fn new(name: &str) -> Volume {
        require_guest();
        let device = LoopDevice::new(128 * MIB).unwrap();
        tosskey_ext4::format(device.path(), &tosskey_ext4::FormatOptions::default()).unwrap();
        let mounted = Mounted::new(device.path(), name, "ext4");
        fs::create_dir(mounted.point.join("copy")).unwrap();
        Volume {
            mounted,
            _device: device,
        }
    }

    fn copy(&self) -> PathBuf {
        self.mounted.point.join("copy")
    }
}

fn mknode(path: &Path, kind: SFlag, mode: u32, major: u64, minor: u64) {
    mknod(
        path,
        kind,
        Mode::from_bits_truncate(mode),
        makedev(major, minor),
    )
    .unwrap();
}

/// Copies `source` onto a fresh ext4, proves the copy equal entry by entry and byte for
/// byte, and returns the volume for further checks.
fn copy_onto_ext4(source: &Path, name: &str) -> Volume {
    freeze_access_times(source);
    let before = snapshot(source);
    let volume = Volume::new(name);

    let copied = copy_tree(source, &volume.copy()).unwrap();

    assert_eq!(copied.entries, before.len() as u64 - 1, "{copied:?}");
    assert_same_tree(&before, &volume.copy());
    assert_same_contents(source, &volume.copy());
    volume
}

#[test]
#[ignore = "root: mounts tmpfs and an ext4 on a loop device, chowns, mknods, sets trusted.* and security.*"]
fn root_owners_set_id_capabilities_acls_and_devices_survive_the_copy_onto_ext4() {
    let source = Mounted::tmpfs("owners-source");
    let root = &source.point;
    fs::create_dir(root.join("owned-dir")).unwrap();
    lchown(root.join("owned-dir"), Some(33), Some(33)).unwrap();
    fs::write(root.join("owned-dir/file"), b"data").unwrap();
    lchown(root.join("owned-dir/file"), Some(1000), Some(2000)).unwrap();
    symlink("file", root.join("owned-dir/link")).unwrap();
    lchown(root.join("owned-dir/link"), Some(7), Some(8)).unwrap();
    // Set-user-ID root with a file capability, and set-group-ID owned by another group:
    // chown after the mode or the capability would clear them.
    fs::write(root.join("setuid-capable"), pattern(5, 5000)).unwrap();
    chmod(&root.join("setuid-capable"), 0o4755);
    set_xattr(
        &root.join("setuid-capable"),
        "security.capability",
        &NET_BIND_SERVICE_CAPABILITY,
    )
    .unwrap();
    fs::write(root.join("setgid"), b"g").unwrap();
    lchown(root.join("setgid"), Some(1000), Some(1000)).unwrap();
    chmod(&root.join("setgid"), 0o2755);
    fs::write(root.join("with-acl"), b"acl").unwrap();
    set_xattr(
        &root.join("with-acl"),
        "system.posix_acl_access",
        &access_acl(),
    )
    .unwrap();
    set_xattr(
        &root.join("owned-dir"),
        "trusted.tosskey-test",
        b"trusted value",
    )
    .unwrap();
    mknode(&root.join("null-like"), SFlag::S_IFCHR, 0o666, 1, 3);
    mknode(&root.join("loop-like"), SFlag::S_IFBLK, 0o660, 7, 200);
    lchown(root.join("loop-like"), Some(0), Some(6)).unwrap();
    mknode(&root.join("whiteout"), SFlag::S_IFCHR, 0o000, 0, 0);
    mknode(&root.join("fifo"), SFlag::S_IFIFO, 0o640, 0, 0);
    lchown(root.join("fifo"), Some(101), Some(102)).unwrap();
    let expected_capability = xattrs(&root.join("setuid-capable"));
    assert!(
        expected_capability.contains_key(&b"security.capability"[..]),
        "the source carries the capability: {expected_capability:?}"
    );

    let volume = copy_onto_ext4(root, "owners");

    let copy = volume.copy();
    let capable = fs::metadata(copy.join("setuid-capable")).unwrap();
    assert_eq!((capable.mode() & 0o7777, capable.uid()), (0o4755, 0));
    assert_eq!(
        xattrs(&copy.join("setuid-capable"))[&b"security.capability"[..]],
        NET_BIND_SERVICE_CAPABILITY
    );
    let setgid = fs::metadata(copy.join("setgid")).unwrap();
    assert_eq!((setgid.mode() & 0o7777, setgid.gid()), (0o2755, 1000));
    let whiteout = fs::symlink_metadata(copy.join("whiteout")).unwrap();
    assert_eq!((whiteout.mode() & 0o170000, whiteout.rdev()), (0o020000, 0));
    assert_eq!(
        fs::symlink_metadata(copy.join("loop-like")).unwrap().rdev(),
        makedev(7, 200)
    );
    let link = fs::symlink_metadata(copy.join("owned-dir/link")).unwrap();
    assert_eq!((link.uid(), link.gid()), (7, 8));
}

/// A tree shaped like `/var/lib/containerd` with a pre-pulled image: the content store's
/// blobs, an ingest in progress, a sparse metadata database, and overlayfs snapshots with a
/// whiteout, an opaque directory, hard links and symlinks between layers.
fn build_containerd_tree(root: &Path) {
    let blobs = root.join("io.containerd.content.v1.content/blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    for (size, index) in [0u64, 1, 4095, 4096, 1 << 20, (3 << 20) + 17]
        .into_iter()
        .zip(0u64..)
    {
        let name = format!("{:064x}", 0x5eed_0000 + index);
        fs::write(blobs.join(name), pattern(10 + index, size)).unwrap();
    }
    fs::create_dir_all(root.join("io.containerd.content.v1.content/ingest/abc")).unwrap();
    fs::write(
        root.join("io.containerd.content.v1.content/ingest/abc/ref"),
        b"default/1/ref",
    )
    .unwrap();
    let metadata = root.join("io.containerd.metadata.v1.bolt");
    fs::create_dir_all(&metadata).unwrap();
    let page = pattern(20, 4096);
    write_sparse(
        &metadata.join("meta.db"),
        &[(0, &page), (64 << 10, &page)],
        1 << 20,
    );
    chmod(&metadata.join("meta.db"), 0o644);
    let snapshots = root.join("io.containerd.snapshotter.v1.overlayfs/snapshots");
    let lower = snapshots.join("1/fs");
    fs::create_dir_all(lower.join("usr/bin")).unwrap();
    fs::create_dir_all(lower.join("etc/conf.d")).unwrap();
    fs::write(lower.join("usr/bin/app"), pattern(30, 200_000)).unwrap();
    chmod(&lower.join("usr/bin/app"), 0o755);
    fs::hard_link(lower.join("usr/bin/app"), lower.join("usr/bin/app-alias")).unwrap();
    symlink("usr/bin", lower.join("bin")).unwrap();
    fs::write(lower.join("etc/conf.d/old"), b"removed in layer 2").unwrap();
    let upper = snapshots.join("2/fs");
    fs::create_dir_all(upper.join("etc/conf.d")).unwrap();
    set_xattr(&upper.join("etc/conf.d"), "trusted.overlay.opaque", b"y").unwrap();
    fs::write(upper.join("etc/conf.d/new"), b"layer 2").unwrap();
    mknode(&upper.join("etc/removed-file"), SFlag::S_IFCHR, 0o000, 0, 0);
    fs::create_dir_all(snapshots.join("2/work")).unwrap();
    chmod(&snapshots.join("2/work"), 0o000);
    fs::write(
        root.join("io.containerd.snapshotter.v1.overlayfs/metadata.db"),
        pattern(40, 32768),
    )
    .unwrap();
    chmod(&root.join("io.containerd.snapshotter.v1.overlayfs"), 0o700);
}

#[test]
#[ignore = "root: mounts tmpfs and an ext4 on a loop device, sets trusted.overlay.opaque"]
fn root_a_containerd_tree_with_a_pre_pulled_image_survives_byte_for_byte() {
    let source = Mounted::tmpfs("containerd-source");
    build_containerd_tree(&source.point);

    let volume = copy_onto_ext4(&source.point, "containerd");

    let upper = volume
        .copy()
        .join("io.containerd.snapshotter.v1.overlayfs/snapshots/2/fs");
    assert_eq!(
        xattrs(&upper.join("etc/conf.d"))[&b"trusted.overlay.opaque"[..]],
        b"y"
    );
    let whiteout = fs::symlink_metadata(upper.join("etc/removed-file")).unwrap();
    assert_eq!((whiteout.mode() & 0o170000, whiteout.rdev()), (0o020000, 0));
    let database =
        fs::metadata(volume.copy().join("io.containerd.metadata.v1.bolt/meta.db")).unwrap();
    assert_eq!(database.blocks(), 16, "two 4 KiB pages, the rest holes");
}

#[test]
#[ignore = "root: mounts a tmpfs below the copied directory"]
fn root_a_mount_point_below_the_source_is_refused_naming_it() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    fs::create_dir(from.path().join("mounted")).unwrap();
    let below = Mounted::new(Path::new("tmpfs"), "below", "tmpfs");
    mount(
        Some(&below.point),
        &from.path().join("mounted"),
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .unwrap();

    let result = copy_tree(from.path(), to.path());

    umount(&from.path().join("mounted")).unwrap();
    let error = result.unwrap_err();
    assert!(matches!(error, Error::MountPointBelow { .. }), "{error:?}");
    assert!(error
        .to_string()
        .contains(&from.path().join("mounted").display().to_string()));
}
