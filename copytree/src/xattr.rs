//! The extended-attribute calls `nix` 0.32 does not wrap: `llistxattr`, `lgetxattr` and
//! `lsetxattr` (the `l` forms act on a symlink itself, never on what it points to). Public so
//! that tests and callers read and write attributes with the calls the copy uses. The only
//! module of this crate with `unsafe`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;

/// A first buffer that holds the names and values of a usual file (a capability is 20 bytes,
/// an SELinux label or a small ACL a few dozen) in one call; a larger one is sized by asking
/// the kernel, and kept for the next call.
const FIRST_CAPACITY: usize = 256;

/// The names of the extended attributes of `path` the process may see, each ending in NUL,
/// into `names` (replacing its contents). A filesystem without extended attributes has none.
pub fn list(path: &CStr, names: &mut Vec<u8>) -> io::Result<()> {
    read_sized(names, |buffer| {
        // SAFETY: `path` is NUL-terminated; `buffer` is valid for `buffer.len()` writable
        // bytes, and the kernel writes at most that many.
        unsafe { libc::llistxattr(path.as_ptr(), buffer.as_mut_ptr().cast(), buffer.len()) }
    })
    .or_else(|error| match error.raw_os_error() {
        Some(libc::ENOTSUP) => {
            names.clear();
            Ok(())
        }
        _ => Err(error),
    })
}

/// The value of extended attribute `name` of `path` into `value` (replacing its contents).
pub fn get(path: &CStr, name: &CStr, value: &mut Vec<u8>) -> io::Result<()> {
    read_sized(value, |buffer| {
        // SAFETY: `path` and `name` are NUL-terminated; `buffer` is valid for
        // `buffer.len()` writable bytes, and the kernel writes at most that many.
        unsafe {
            libc::lgetxattr(
                path.as_ptr(),
                name.as_ptr(),
                buffer.as_mut_ptr().cast(),
                buffer.len(),
            )
        }
    })
}

/// Sets extended attribute `name` of `path` to `value`, creating or replacing it.
pub fn set(path: &CStr, name: &CStr, value: &[u8]) -> io::Result<()> {
    // SAFETY: `path` and `name` are NUL-terminated; `value` is valid for `value.len()`
    // readable bytes, which the kernel only reads.
    let result = unsafe {
        libc::lsetxattr(
            path.as_ptr(),
            name.as_ptr(),
            value.as_ptr().cast(),
            value.len(),
            0,
        )
    };
    if result == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Runs `call` (a `*xattr` call that returns a length or -1) with `buffer` at full length,
/// growing it to the size the kernel asks for when it is too small (`ERANGE`), and leaves
/// `buffer` holding exactly what the kernel wrote.
fn read_sized(buffer: &mut Vec<u8>, mut call: impl FnMut(&mut [u8]) -> isize) -> io::Result<()> {
    let mut capacity = buffer.capacity().max(FIRST_CAPACITY);
    loop {
        buffer.resize(capacity, 0);
        let length = call(buffer);
        if let Ok(length) = usize::try_from(length) {
            buffer.truncate(length);
            return Ok(());
        }
        let error = io::Error::last_os_error();
        if error.raw_os_error() != Some(libc::ERANGE) {
            buffer.clear();
            return Err(error);
        }
        // Asking with an empty buffer returns the size needed now; another process may
        // still grow the attribute before the next call, which then loops again.
        let needed = call(&mut []);
        capacity = usize::try_from(needed)
            .map_err(|_| io::Error::last_os_error())?
            .max(capacity.saturating_mul(2));
    }
}
