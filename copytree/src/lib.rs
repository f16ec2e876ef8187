//! Copying a directory's contents onto the encrypted volume before it is bind-mounted over
//! the directory (`provision --bind DIR`), in pure Rust: no `cp` in a minimal initramfs.
//!
//! [`copy_tree`] copies what is below `from` into `to` (which must exist and be empty) and
//! fails on the first file it cannot copy, naming it; the caller removes the partial copy.

use std::fs;
use std::os::unix::fs::{lchown, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

/// Why a tree could not be copied: the file and the step.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A file or directory of the source could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file or directory could not be created or written at the destination.
    #[error("cannot write {path}")]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What a copy carried over.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Copied {
    /// Directories, files, symlinks and other nodes created.
    pub entries: u64,
    /// Bytes of file data written.
    pub bytes: u64,
}

/// Copies the contents of directory `from` into the existing directory `to`, keeping owners
/// and modes, and gives `to` the owner and mode of `from`.
pub fn copy_tree(from: &Path, to: &Path) -> Result<Copied, Error> {
    let mut copied = Copied::default();
    copy_directory_contents(from, to, &mut copied)?;
    copy_owner_and_mode(from, to)?;
    Ok(copied)
}

fn copy_directory_contents(from: &Path, to: &Path, copied: &mut Copied) -> Result<(), Error> {
    let read_error = |source| Error::Read {
        path: from.to_path_buf(),
        source,
    };
    for entry in fs::read_dir(from).map_err(read_error)? {
        let entry = entry.map_err(read_error)?;
        let source = entry.path();
        let target = to.join(entry.file_name());
        let kind = entry.file_type().map_err(|error| Error::Read {
            path: source.clone(),
            source: error,
        })?;
        let write_error = |error| Error::Write {
            path: target.clone(),
            source: error,
        };
        if kind.is_dir() {
            fs::create_dir(&target).map_err(write_error)?;
            copy_directory_contents(&source, &target, copied)?;
        } else if kind.is_symlink() {
            let link = fs::read_link(&source).map_err(|error| Error::Read {
                path: source.clone(),
                source: error,
            })?;
            std::os::unix::fs::symlink(link, &target).map_err(write_error)?;
        } else {
            copied.bytes += fs::copy(&source, &target).map_err(write_error)?;
        }
        copy_owner_and_mode(&source, &target)?;
        copied.entries += 1;
    }
    Ok(())
}

fn copy_owner_and_mode(from: &Path, to: &Path) -> Result<(), Error> {
    let metadata = fs::symlink_metadata(from).map_err(|source| Error::Read {
        path: from.to_path_buf(),
        source,
    })?;
    let write_error = |source| Error::Write {
        path: to.to_path_buf(),
        source,
    };
    lchown(to, Some(metadata.uid()), Some(metadata.gid())).map_err(write_error)?;
    if !metadata.file_type().is_symlink() {
        fs::set_permissions(to, fs::Permissions::from_mode(metadata.mode() & 0o7777))
            .map_err(write_error)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn files_directories_and_symlinks_are_copied_with_their_modes() {
        let from = tempfile::tempdir().unwrap();
        let to = tempfile::tempdir().unwrap();
        fs::create_dir(from.path().join("sub")).unwrap();
        fs::write(from.path().join("sub/data"), b"pattern").unwrap();
        fs::set_permissions(
            from.path().join("sub/data"),
            fs::Permissions::from_mode(0o640),
        )
        .unwrap();
        std::os::unix::fs::symlink("sub/data", from.path().join("link")).unwrap();

        let copied = copy_tree(from.path(), to.path()).unwrap();

        assert_eq!(
            copied,
            Copied {
                entries: 3,
                bytes: 7
            }
        );
        assert_eq!(fs::read(to.path().join("sub/data")).unwrap(), b"pattern");
        let mode = fs::metadata(to.path().join("sub/data")).unwrap().mode();
        assert_eq!(mode & 0o7777, 0o640);
        assert_eq!(
            fs::read_link(to.path().join("link")).unwrap(),
            Path::new("sub/data")
        );
    }
}
