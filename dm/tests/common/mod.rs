//! Helpers shared by the root tests of tosskey-dm (they run in the VM guest).
#![allow(dead_code)] // each test crate uses a different subset

use std::fs::OpenOptions;
use std::os::unix::fs::{FileExt, OpenOptionsExt};
use std::path::Path;

use tosskey_dm::{DevId, DmControl, DmName};
use tosskey_testkit::LoopDevice;

/// A 4 KiB-aligned block, so O_DIRECT I/O works from safe code.
#[repr(C, align(4096))]
struct AlignedBlock([u8; 4096]);

/// Writes `data` at byte `offset` of `path` with O_DIRECT (bypassing every page cache), in
/// pieces of at most 4 KiB, then fsyncs.
pub fn write_direct(path: &Path, offset: u64, data: &[u8]) {
    let file = OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_DIRECT: {e}", path.display()));
    let mut block = Box::new(AlignedBlock([0; 4096]));
    for (index, piece) in data.chunks(4096).enumerate() {
        block.0[..piece.len()].copy_from_slice(piece);
        let at = offset + 4096 * index as u64;
        file.write_all_at(&block.0[..piece.len()], at)
            .unwrap_or_else(|e| panic!("write {} at {at}: {e}", path.display()));
    }
    file.sync_all().unwrap();
}

/// Reads `len` bytes at byte `offset` of `path` with O_DIRECT.
pub fn read_direct(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap_or_else(|e| panic!("open {} O_DIRECT: {e}", path.display()));
    let mut block = Box::new(AlignedBlock([0; 4096]));
    let mut out = Vec::with_capacity(len);
    let mut at = offset;
    while out.len() < len {
        let piece = (len - out.len()).min(4096);
        file.read_exact_at(&mut block.0[..piece], at)
            .unwrap_or_else(|e| panic!("read {} at {at}: {e}", path.display()));
        out.extend_from_slice(&block.0[..piece]);
        at += piece as u64;
    }
    out
}

/// The plaintext pattern of the kernel vectors: byte i = (i * 7 + 3) mod 256.
pub fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect()
}

/// A fixed, public 64-byte test key (two different XTS halves): byte i = (i * 37 + 11) mod 256.
pub fn test_key() -> Vec<u8> {
    (0..64usize)
        .map(|i| (i * 37 + 11).to_le_bytes()[0])
        .collect()
}

/// Writes a finding to the guest console (the vm-test log shows it even when the test passes,
/// unlike libtest's captured output).
pub fn report(line: &str) {
    use std::io::Write;
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(mut console) => {
            let _ = writeln!(console, "[tosskey-dm finding] {line}");
        }
        Err(_) => eprintln!("[tosskey-dm finding] {line}"),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub fn dev_of(device: &LoopDevice) -> DevId {
    DevId::new(device.dev().major, device.dev().minor)
}

pub fn name(text: &str) -> DmName {
    DmName::new(text).unwrap()
}

/// Removes the named mappings (if they still exist) when dropped, so a failing test does not
/// leave devices behind for the next one.
pub struct Cleanup(pub Vec<DmName>);

impl Drop for Cleanup {
    fn drop(&mut self) {
        let Ok(dm) = DmControl::open() else { return };
        for name in self.0.iter().rev() {
            if dm.info(name).is_ok() {
                if let Err(err) = dm.remove(name) {
                    eprintln!("cleanup: {err}");
                }
            }
        }
    }
}
