//! Mounting the finished volume: `mount(2)` directly, no mount binary.

use std::path::Path;

use anyhow::{Context, Result};
use nix::mount::{mount, umount2, MntFlags, MsFlags};

use crate::error::{Error, Refusal};

/// Mount options for a data volume: no atime writes, and no device nodes or setuid
/// binaries honoured from a disk whose contents other tenants' tooling may have touched.
pub const DATA_MOUNT_FLAGS: MsFlags = MsFlags::MS_NOATIME
    .union(MsFlags::MS_NODEV)
    .union(MsFlags::MS_NOSUID);

/// Mount the ext4 volume `node` at `dir` (created if missing). Read-only also means
/// `noload`: ext4 replays a dirty journal even on a read-only mount, writing to the device,
/// unless told not to load the journal.
pub fn mount_volume(node: &Path, dir: &Path, read_only: bool) -> Result<()> {
    std::fs::create_dir_all(dir)
        .with_context(|| format!("creating mount point {}", dir.display()))?;
    let (flags, options) = mount_flags(read_only);
    mount(Some(node), dir, Some("ext4"), flags, options).with_context(|| {
        format!(
            "mounting {} at {} (is the ext4 module loaded, is {} already a mount point?)",
            node.display(),
            dir.display(),
            dir.display()
        )
    })
}

/// Bind-mount the directory `source` over `dir` (`mount --bind`, without the binary). The
/// bind keeps the volume's mount flags (noatime, nodev, nosuid).
pub fn bind_mount(source: &Path, dir: &Path) -> Result<()> {
    mount(
        Some(source),
        dir,
        None::<&str>,
        MsFlags::MS_BIND,
        None::<&str>,
    )
    .with_context(|| format!("bind-mounting {} over {}", source.display(), dir.display()))
}

/// Refuse a mount target that cannot become a directory: `dir` itself, or the nearest of
/// its ancestors that exists, must be a directory. Reads only, so the dry run checks it too
/// and a real run finds out before it builds anything.
pub fn check_mount_target(dir: &Path) -> Result<(), Error> {
    let Some(existing) = dir.ancestors().find(|p| p.symlink_metadata().is_ok()) else {
        return Ok(());
    };
    match std::fs::metadata(existing) {
        Ok(meta) if meta.is_dir() => Ok(()),
        Ok(_) => Err(Error::Refused(Refusal::MountNotDirectory {
            dir: dir.to_owned(),
            existing: existing.to_owned(),
        })),
        Err(source) => Err(Error::Refused(Refusal::MountUnusable {
            dir: dir.to_owned(),
            existing: existing.to_owned(),
            source,
        })),
    }
}

/// The flags and ext4 options of a data mount, read-only or not.
fn mount_flags(read_only: bool) -> (MsFlags, Option<&'static str>) {
    if read_only {
        (DATA_MOUNT_FLAGS | MsFlags::MS_RDONLY, Some("noload"))
    } else {
        (DATA_MOUNT_FLAGS, None)
    }
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

/// The mounts of `/proc/self/mountinfo` under `proc_root`, in mount order (a later entry
/// at the same mount point sits on top of an earlier one).
pub fn read_mountinfo(proc_root: &Path) -> Result<Vec<crate::host::sysfs::MountEntry>> {
    let path = proc_root.join("self/mountinfo");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(crate::host::sysfs::parse_mountinfo(&text))
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
) -> Result<Vec<crate::host::sysfs::MountEntry>> {
    Ok(read_mountinfo(proc_root)?
        .into_iter()
        .filter(|m| m.dev.major == major && m.dev.minor == minor)
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_read_only_mount_loads_no_journal() {
        let (flags, options) = mount_flags(true);
        assert!(flags.contains(MsFlags::MS_RDONLY | DATA_MOUNT_FLAGS));
        assert_eq!(options, Some("noload"));
        assert_eq!(mount_flags(false), (DATA_MOUNT_FLAGS, None));
    }
}
