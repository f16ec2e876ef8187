//! `provision --bind DIR`: what is refused before anything is built, and moving a
//! directory's contents onto the mounted volume before its copy is bind-mounted over it
//! ([`super::Executor::bind`]). Copying is tosskey-copytree's, in pure Rust.

use std::fs::{self, DirBuilder};
use std::os::unix::fs::DirBuilderExt as _;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;

use crate::error::{Error, Refusal, Result};
use crate::exec::mount::read_mountinfo;
use crate::host::sysfs::MountEntry;
use crate::plan::PlannedBind;

/// The mode of a `--bind` directory tosskey creates, and of the directories on the volume
/// that lead to its copy (what `mkdir -p` gives under the usual umask 022).
const CREATED_DIR_MODE: u32 = 0o755;

/// A directory bound from the volume by this run, and what its copy carried.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BoundDir {
    pub dir: PathBuf,
    pub source: PathBuf,
    /// Files, directories, links and other nodes copied.
    pub entries: u64,
    /// Bytes of file data copied.
    pub bytes: u64,
}

/// Refuse, before anything is built (the dry run too), a `--bind` directory that cannot be
/// bound as asked: one that is a mount point already (what is mounted there is not its
/// data on disk, and the bind would stack over it), one with a mount point below it (the
/// bind would hide it from everything that uses it), a path through a symbolic link (the
/// bind would land elsewhere than asked), and one that is, or sits below, something other
/// than a directory.
pub fn check_bind_targets(proc_root: &Path, binds: &[PlannedBind]) -> Result<()> {
    if binds.is_empty() {
        return Ok(());
    }
    let mounts = read_mountinfo(proc_root)?;
    for bind in binds {
        check_path(&bind.dir)?;
        let dir = &bind.dir;
        if let Some(mount) = mounts.iter().rfind(|m| Path::new(&m.mount_point) == dir) {
            return Err(Error::Refused(Refusal::BindIsMountPoint {
                dir: dir.clone(),
                what: describe(mount),
            }));
        }
        if let Some(mount) = mounts
            .iter()
            .find(|m| Path::new(&m.mount_point).starts_with(dir))
        {
            return Err(Error::Refused(Refusal::BindHidesMount {
                dir: dir.clone(),
                below: PathBuf::from(&mount.mount_point),
            }));
        }
    }
    Ok(())
}

/// A mount as the refusals name it: `source (type, MAJ:MIN)`.
pub fn describe(mount: &MountEntry) -> String {
    format!("{} ({}, {})", mount.source, mount.fs_type, mount.dev)
}

/// `dir`, or the nearest of its ancestors that exists, is a directory reached without a
/// symbolic link.
fn check_path(dir: &Path) -> Result<()> {
    let Some(existing) = dir.ancestors().find(|p| p.symlink_metadata().is_ok()) else {
        return Ok(());
    };
    let resolved =
        fs::canonicalize(existing).with_context(|| format!("resolving {}", existing.display()))?;
    if resolved != existing {
        let rest = dir.strip_prefix(existing).expect("an ancestor of dir");
        return Err(Error::Refused(Refusal::BindThroughSymlink {
            dir: dir.to_owned(),
            resolved: resolved.join(rest),
        }));
    }
    if !fs::metadata(existing).is_ok_and(|m| m.is_dir()) {
        return Err(Error::Refused(Refusal::BindNotDirectory {
            dir: dir.to_owned(),
            existing: existing.to_owned(),
        }));
    }
    Ok(())
}

/// Create `dir` and its missing ancestors (mode 0755), returning those it created, the
/// outermost first (so that a rollback can remove them again, innermost first).
pub fn create_missing_dirs(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|p| p.symlink_metadata().is_err())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    for path in &missing {
        DirBuilder::new()
            .mode(CREATED_DIR_MODE)
            .create(path)
            .with_context(|| format!("creating {}", path.display()))?;
    }
    Ok(missing)
}

/// Copy the contents of `bind.dir` into `bind.source` on the mounted volume (created here,
/// with its parents, and given `dir`'s owner and mode by the copy). The error names the
/// file that could not be copied.
pub fn copy_onto_volume(bind: &PlannedBind) -> Result<tosskey_copytree::Copied> {
    DirBuilder::new()
        .recursive(true)
        .mode(CREATED_DIR_MODE)
        .create(&bind.source)
        .with_context(|| format!("creating {} on the volume", bind.source.display()))?;
    Ok(
        tosskey_copytree::copy_tree(&bind.dir, &bind.source).with_context(|| {
            format!(
                "copying {} onto the volume ({})",
                bind.dir.display(),
                bind.source.display()
            )
        })?,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bind(dir: &Path) -> PlannedBind {
        PlannedBind {
            dir: dir.to_owned(),
            source: PathBuf::from("/mnt/e/bind").join(dir.strip_prefix("/").unwrap()),
        }
    }

    fn proc_with(mountinfo: &str) -> tempfile::TempDir {
        let proc = tempfile::tempdir().unwrap();
        fs::create_dir_all(proc.path().join("self")).unwrap();
        fs::write(proc.path().join("self/mountinfo"), mountinfo).unwrap();
        proc
    }

    #[test]
    fn a_mount_point_a_mount_below_a_symlink_and_a_file_are_refused() {
        let tree = tempfile::tempdir().unwrap();
        let data = tree.path().join("data");
        fs::create_dir_all(data.join("pods/x")).unwrap();
        let proc = proc_with(&format!(
            "30 1 0:50 / {} rw - tmpfs tmpfs rw\n31 1 0:51 / {} rw - tmpfs tmpfs rw\n",
            tree.path().join("mounted").display(),
            data.join("pods/x").display()
        ));
        let refused = |dir: &Path| match check_bind_targets(proc.path(), &[bind(dir)]) {
            Err(Error::Refused(refusal)) => refusal.to_string(),
            other => panic!("{}: {other:?}", dir.display()),
        };
        fs::create_dir(tree.path().join("mounted")).unwrap();
        assert!(refused(&tree.path().join("mounted"))
            .contains("tmpfs (tmpfs, 0:50) is mounted there already"),);
        assert!(refused(&data).contains("pods/x is a mount point below it"));
        std::os::unix::fs::symlink(&data, tree.path().join("link")).unwrap();
        let through = refused(&tree.path().join("link/pods"));
        assert!(
            through.contains(&format!("symbolic link to {}", data.join("pods").display())),
            "{through}"
        );
        fs::write(tree.path().join("file"), b"").unwrap();
        assert!(refused(&tree.path().join("file/below")).contains("is not a directory"));
        // data/pods holds the mount at pods/x; a plain directory and one that does not
        // exist yet pass.
        check_bind_targets(
            proc.path(),
            &[bind(&data.join("pods")), bind(&tree.path().join("new/dir"))],
        )
        .unwrap_err();
        check_bind_targets(
            proc.path(),
            &[
                bind(&tree.path().join("other")),
                bind(&tree.path().join("new/dir")),
            ],
        )
        .unwrap();
    }

    #[test]
    fn missing_directories_are_created_0755_and_listed_outermost_first() {
        let tree = tempfile::tempdir().unwrap();
        let dir = tree.path().join("a/b/c");
        let created = create_missing_dirs(&dir).unwrap();
        assert_eq!(
            created,
            [tree.path().join("a"), tree.path().join("a/b"), dir.clone()]
        );
        use std::os::unix::fs::PermissionsExt as _;
        let mode = fs::metadata(&dir).unwrap().permissions().mode() & 0o7777;
        assert_eq!(mode & !0o022, 0o755 & !0o022, "{mode:o}");
        assert!(create_missing_dirs(&dir).unwrap().is_empty());
    }
}
