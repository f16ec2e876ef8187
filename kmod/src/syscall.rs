//! The two system calls this crate makes: `finit_module(2)` (through nix's safe wrapper)
//! and `fsopen(2)` (`linux/mount.h`, Linux 5.2; nix has no wrapper, so one raw call).

#![allow(unsafe_code)]

use std::ffi::CString;
use std::fs::File;
use std::os::fd::{FromRawFd as _, OwnedFd};

use nix::errno::Errno;
use nix::kmod::{finit_module, ModuleInitFlags};

/// `MODULE_INIT_COMPRESSED_FILE` (`linux/module.h`, Linux 5.17): the kernel decompresses
/// the file itself. Kernels without `CONFIG_MODULE_DECOMPRESS` answer `EOPNOTSUPP`, older
/// ones `EINVAL`.
pub const MODULE_INIT_COMPRESSED_FILE: u32 = 4;

/// `FSOPEN_CLOEXEC` (`linux/mount.h`).
const FSOPEN_CLOEXEC: libc::c_uint = 1;

/// Loads the module in `file` with no parameters.
pub fn load_module_file(file: &File, compressed: bool) -> Result<(), Errno> {
    let flags = if compressed {
        ModuleInitFlags::from_bits_retain(MODULE_INIT_COMPRESSED_FILE)
    } else {
        ModuleInitFlags::empty()
    };
    finit_module(file, c"", flags)
}

/// `fsopen(fstype)`: the kernel looks the filesystem type up and, when it is not
/// registered, calls its module helper for `fs-<fstype>` first (`get_fs_type`). Nothing
/// is mounted; the returned filesystem context is closed on drop.
pub fn fsopen(fstype: &str) -> Result<OwnedFd, Errno> {
    let name = CString::new(fstype).map_err(|_| Errno::EINVAL)?;
    // SAFETY: `name` is a NUL-terminated string that outlives the call; fsopen reads it and
    // returns a new fd or -1, touching no other memory.
    let fd = unsafe { libc::syscall(libc::SYS_fsopen, name.as_ptr(), FSOPEN_CLOEXEC) };
    let fd = Errno::result(fd)?;
    let fd = libc::c_int::try_from(fd).map_err(|_| Errno::EBADF)?;
    // SAFETY: fsopen returned a new file descriptor that nothing else owns.
    Ok(unsafe { OwnedFd::from_raw_fd(fd) })
}
