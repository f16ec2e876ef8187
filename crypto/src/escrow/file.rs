//! Reading an escrow file from disk (size-capped, then [`EscrowFile::parse`]) and writing
//! it atomically with mode 0400.

use std::path::Path;

use super::format::{EscrowFile, MAX_FILE_BYTES};
use crate::error::{Error, Result};

impl EscrowFile {
    /// Read and parse an escrow file from disk.
    pub fn read(path: &Path) -> Result<EscrowFile> {
        use std::io::Read;
        let read_error = |source: std::io::Error| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        // One byte over the limit is enough to know it is too large.
        file.take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        EscrowFile::parse(&bytes)
    }

    /// Write the file atomically with mode 0400. Refuses to replace an existing file unless
    /// `overwrite`.
    pub fn write_atomic(&self, path: &Path, overwrite: bool) -> Result<()> {
        super::write_new_file(path, self.to_json().as_bytes(), overwrite)
    }
}
