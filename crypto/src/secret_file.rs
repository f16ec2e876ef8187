//! Secret files (the escrow private key's PEM) read straight into locked pages.
//!
//! `read_to_string` would grow a heap `String` by reallocation, leaving each outgrown copy
//! of the key in freed, unlocked heap memory that nothing wipes. Here the buffer is sized
//! from the file's length before the first read; a pipe (`--private-key <(openssl …)`),
//! whose length is unknown, grows into new locked pages, the outgrown ones zeroized as they
//! are unmapped.

use std::fs::File;
use std::io::{ErrorKind, Read as _};
use std::path::Path;

use crate::error::{Error, Result};
use crate::locked::LockedPages;

/// The bytes of a secret file, in locked pages that are zeroized when dropped.
#[derive(Debug)]
pub struct SecretFile {
    pages: LockedPages,
    len: usize,
}

impl SecretFile {
    /// Reads `path` whole (at most `max` bytes: a larger file is an error).
    pub fn read(path: &Path, max: usize) -> Result<SecretFile> {
        let read_error = |source: std::io::Error| Error::ReadFile {
            path: path.to_owned(),
            source,
        };
        let mut file = File::open(path).map_err(read_error)?;
        // A regular file says how long it is; a pipe says 0. One more byte shows the end.
        let hint = file.metadata().map_err(read_error)?.len();
        let first = usize::try_from(hint).unwrap_or(max).min(max) + 1;
        let mut pages = locked(first)?;
        let mut len = 0;
        loop {
            if len == pages.as_slice().len() {
                if len > max {
                    return Err(read_error(std::io::Error::new(
                        ErrorKind::InvalidData,
                        format!("more than {max} bytes: not a key file"),
                    )));
                }
                let mut bigger = locked(2 * len)?;
                bigger.as_mut_slice()[..len].copy_from_slice(&pages.as_slice()[..len]);
                // The outgrown pages are zeroized and unmapped here.
                pages = bigger;
            }
            match file.read(&mut pages.as_mut_slice()[len..]) {
                Ok(0) => break,
                Ok(read) => len += read,
                Err(error) if error.kind() == ErrorKind::Interrupted => {}
                Err(error) => return Err(read_error(error)),
            }
        }
        if len > max {
            return Err(read_error(std::io::Error::new(
                ErrorKind::InvalidData,
                format!("more than {max} bytes: not a key file"),
            )));
        }
        Ok(SecretFile { pages, len })
    }

    pub fn as_bytes(&self) -> &[u8] {
        &self.pages.as_slice()[..self.len]
    }

    /// The bytes as text (PEM is ASCII).
    pub fn as_str(&self) -> std::result::Result<&str, std::str::Utf8Error> {
        std::str::from_utf8(self.as_bytes())
    }

    /// How many bytes of locked pages hold the file (page-rounded).
    pub fn locked_bytes(&self) -> usize {
        self.pages.as_slice().len()
    }
}

fn locked(bytes: usize) -> Result<LockedPages> {
    LockedPages::new(bytes).map_err(|source| Error::LockKeys { bytes, source })
}

#[cfg(test)]
mod tests {
    use std::os::fd::AsRawFd as _;
    use std::process::{Command, Stdio};

    use super::*;

    #[test]
    fn a_file_is_read_whole_into_one_locked_buffer_of_its_size() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("key.pem");
        let text: Vec<u8> = (0..10_000u32).map(|i| b'A' + (i % 26) as u8).collect();
        std::fs::write(&path, &text).unwrap();
        let secret = SecretFile::read(&path, 1 << 20).unwrap();
        assert_eq!(secret.as_bytes(), text);
        // Sized from the file: 10001 bytes fit three 4 KiB pages, no growth.
        assert_eq!(
            secret.locked_bytes(),
            10_001usize.next_multiple_of(tosskey_sysutil::mlock::page_size())
        );
        assert!(SecretFile::read(&path, 9_999).is_err());
    }

    #[test]
    fn a_pipe_of_unknown_length_grows_in_locked_pages() {
        // What `--private-key <(openssl pkey -in KEY)` hands tosskey: /dev/fd/N of a pipe.
        let mut child = Command::new("sh")
            .args([
                "-c",
                "i=0; while [ $i -lt 3000 ]; do printf 'key-line\\n'; i=$((i+1)); done",
            ])
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let pipe = child.stdout.take().unwrap();
        let path = format!("/proc/self/fd/{}", pipe.as_raw_fd());
        let secret = SecretFile::read(Path::new(&path), 1 << 20).unwrap();
        child.wait().unwrap();
        assert_eq!(secret.as_bytes(), "key-line\n".repeat(3000).as_bytes());
        assert_eq!(secret.as_str().unwrap().lines().count(), 3000);
    }
}
