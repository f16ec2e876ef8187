//! Write a read-only (0400) file atomically: the final name shows either nothing or the
//! whole content, even across a crash or power loss.
//!
//! Temp file in the same directory (same filesystem) created with O_EXCL and mode 0400 →
//! write → fsync → link(2) to the final name when overwriting is not allowed (link never
//! replaces an existing name, so there is no check-then-write race) or rename(2) when it is
//! → unlink the temp name → fsync the directory so the new name is durable.

use std::ffi::OsString;
use std::fs::{self, File, OpenOptions, Permissions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, Result};

const MODE: u32 = 0o400;

/// Create `path` holding exactly `contents`, mode 0400. With `overwrite == false` an
/// existing `path` (file, symlink, anything) is an error and is left untouched.
pub(crate) fn write_new_file(path: &Path, contents: &[u8], overwrite: bool) -> Result<()> {
    let write_error = |source: io::Error| Error::WriteFile {
        path: path.to_path_buf(),
        source,
    };
    let file_name = path.file_name().ok_or_else(|| {
        write_error(io::Error::new(
            io::ErrorKind::InvalidInput,
            "the path does not name a file",
        ))
    })?;
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_path_buf(),
        _ => PathBuf::from("."),
    };
    if !overwrite && fs::symlink_metadata(path).is_ok() {
        return Err(Error::FileExists {
            path: path.to_path_buf(),
        });
    }

    let temp = TempFile::create(&dir, file_name).map_err(write_error)?;
    temp.write_and_sync(contents).map_err(write_error)?;
    if overwrite {
        fs::rename(&temp.path, path).map_err(write_error)?;
    } else {
        match fs::hard_link(&temp.path, path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
                return Err(Error::FileExists {
                    path: path.to_path_buf(),
                })
            }
            Err(e) => return Err(write_error(e)),
        }
    }
    // After rename the temp name is gone already (NotFound is expected); after link it is a
    // second name for the new file and must go.
    drop(temp);
    File::open(&dir)
        .and_then(|d| d.sync_all())
        .map_err(write_error)?;
    Ok(())
}

/// A uniquely named, exclusively created file; its name is removed on drop.
struct TempFile {
    path: PathBuf,
    file: File,
}

impl TempFile {
    fn create(dir: &Path, final_name: &std::ffi::OsStr) -> io::Result<TempFile> {
        let mut attempt = 0u32;
        loop {
            let mut suffix = [0u8; 8];
            getrandom::fill(&mut suffix).map_err(io::Error::other)?;
            let mut name = OsString::from(".");
            name.push(final_name);
            name.push(format!(".tmp-{}", u64::from_le_bytes(suffix)));
            let path = dir.join(name);
            match OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(MODE)
                .open(&path)
            {
                Ok(file) => return Ok(TempFile { path, file }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists && attempt < 8 => attempt += 1,
                Err(e) => return Err(e),
            }
        }
    }

    fn write_and_sync(&self, contents: &[u8]) -> io::Result<()> {
        // The umask could have cleared bits of 0400; set the exact mode on the open file.
        self.file.set_permissions(Permissions::from_mode(MODE))?;
        (&self.file).write_all(contents)?;
        self.file.sync_all()
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.path);
    }
}
