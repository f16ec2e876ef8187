//! Mounting the finished volume: `mount(2)` directly, no mount binary.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

/// Mount options for a data volume: no atime writes, and no device nodes or setuid
/// binaries honoured from a disk whose contents other tenants' tooling may have touched.
pub const DATA_MOUNT_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOSUID);

/// Mount the ext4 volume `node` at `dir` (created if missing).
pub fn mount_volume(node: &Path, dir: &Path, read_only: bool) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating mount point {}", dir.display()))?;
    let mut flags = DATA_MOUNT_FLAGS;
    if read_only {
        flags |= MsFlags::MS_RDONLY;
    }
    mount(Some(node), dir, Some("ext4"), flags, None::<&str>).with_context(|| {
        format!(
            "mounting {} at {} (is the ext4 module loaded, is {} already a mount point?)",
            node.display(),
            dir.display(),
            dir.display()
        )
    })
}

/// Unmount `dir`.
pub fn unmount(dir: &Path) -> Result<()> {
    umount2(dir, MntFlags::empty()).with_context(|| {
        format!(
            "unmounting {} (is a process using it? `fuser -m {}` tells)",
            dir.display(),
            dir.display()
        )
    })
}

/// Whether something is mounted at `dir`.
pub fn is_mount_point(root: &crate::sysfs::SystemRoot, dir: &Path) -> Result<bool> {
    Ok(read_mountinfo(&root.proc)?
        .iter()
        .any(|m| Path::new(&m.mount_point) == dir))
}

fn read_mountinfo(proc_root: &Path) -> Result<Vec<crate::sysfs::MountEntry>> {
    let path = proc_root.join("self/mountinfo");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(crate::sysfs::parse_mountinfo(&text))
}

/// Where the block device `major:minor` is mounted, from `/proc/self/mountinfo`.
pub fn mount_points_of(proc_root: &Path, major: u32, minor: u32) -> Result<Vec<String>> {
    Ok(mounts_of(proc_root, major, minor)?
        .into_iter()
        .map(|m| m.mount_point)
        .collect())
}

/// The mounts of the block device `major:minor` (with their filesystem and options).
pub fn mounts_of(
    proc_root: &Path,
    major: u32,
    minor: u32,
) -> Result<Vec<crate::sysfs::MountEntry>> {
    Ok(read_mountinfo(proc_root)?
        .into_iter()
        .filter(|m| m.dev.major == major && m.dev.minor == minor)
        .collect())
}
