//! Memory for key material: an anonymous mapping of whole pages that no other allocation
//! shares, locked with mlock(2) and excluded from core dumps with `MADV_DONTDUMP`, zeroized
//! before it is unmapped.
//!
//! A mapping of its own (rather than pages inside a heap allocation) means the lock and the
//! dump exclusion end exactly with it: `munmap` drops both, and no later heap allocation can
//! land on a page whose attributes we changed. The only `unsafe` code of this module is the
//! three system calls and the slice over the mapping.
#![allow(unsafe_code)]

use std::io;
use std::ptr::NonNull;

use zeroize::Zeroize;

/// `len` bytes (rounded up to whole pages) of locked, never-dumped, zero-initialised memory.
pub(crate) struct LockedPages {
    start: NonNull<u8>,
    /// The mapping's length: a non-zero multiple of the page size.
    len: usize,
}

// SAFETY: `LockedPages` owns its mapping exclusively (nothing else holds the pointer), so
// moving it to another thread moves that ownership; shared references only ever read it.
unsafe impl Send for LockedPages {}
// SAFETY: `&LockedPages` only allows reads (`as_slice`); writes need `&mut`.
unsafe impl Sync for LockedPages {}

impl LockedPages {
    /// Maps, locks and excludes from dumps at least `bytes` bytes (at least one page).
    /// Fails with the errno of the step that failed; a half-made mapping is unmapped.
    pub(crate) fn new(bytes: usize) -> io::Result<Self> {
        let page = tosskey_sysutil::mlock::page_size();
        let len = bytes
            .max(1)
            .checked_next_multiple_of(page)
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // SAFETY: an anonymous private mapping at an address of the kernel's choice touches no
        // existing memory; the result is checked against MAP_FAILED before use.
        let address = unsafe {
            libc::mmap(
                std::ptr::null_mut(),
                len,
                libc::PROT_READ | libc::PROT_WRITE,
                libc::MAP_PRIVATE | libc::MAP_ANONYMOUS,
                -1,
                0,
            )
        };
        if address == libc::MAP_FAILED {
            return Err(io::Error::last_os_error());
        }
        let start = NonNull::new(address.cast::<u8>())
            .ok_or_else(|| io::Error::from_raw_os_error(libc::ENOMEM))?;
        // From here on, Drop unmaps it on every error path.
        let pages = Self { start, len };
        // SAFETY: the range is exactly the mapping made above; mlock and madvise change its
        // paging attributes only, they do not read or write it.
        if unsafe { libc::mlock(address, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: as above.
        if unsafe { libc::madvise(address, len, libc::MADV_DONTDUMP) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(pages)
    }

    /// The whole mapping (page-rounded), zeros until written.
    pub(crate) fn as_slice(&self) -> &[u8] {
        // SAFETY: `start..start + len` is a live read-write mapping owned by self (anonymous
        // memory is zero-initialised), and the shared borrow of self excludes writers.
        unsafe { std::slice::from_raw_parts(self.start.as_ptr(), self.len) }
    }

    pub(crate) fn as_mut_slice(&mut self) -> &mut [u8] {
        // SAFETY: as in `as_slice`; the exclusive borrow of self makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.start.as_ptr(), self.len) }
    }

    /// Zeroizes and unmaps the memory now, returning whether every byte read back as zero
    /// before the unmap and the unmap succeeded: what a report may call "wiped" (dropping
    /// does the same silently).
    pub(crate) fn wipe(self) -> bool {
        std::mem::ManuallyDrop::new(self).zeroize_and_unmap()
    }

    /// The one teardown, for [`Self::wipe`] and `Drop`; self must not be used afterwards.
    fn zeroize_and_unmap(&mut self) -> bool {
        let slice = self.as_mut_slice();
        slice.zeroize();
        // SAFETY: each pointer is to a byte of the live mapping borrowed above; volatile so
        // the check reads memory instead of the value the compiler knows was just written.
        let zeroed = slice
            .iter()
            .all(|byte| unsafe { std::ptr::read_volatile(byte) } == 0);
        // SAFETY: the mapping was made by `new` with this address and length and no slice of
        // it outlives this call (callers never touch self again). munmap also ends the lock
        // and the dump exclusion.
        let unmapped =
            unsafe { libc::munmap(self.start.as_ptr().cast::<libc::c_void>(), self.len) } == 0;
        zeroed && unmapped
    }
}

impl Drop for LockedPages {
    fn drop(&mut self) {
        // Best effort: `wipe` is the way that reports.
        let _ = self.zeroize_and_unmap();
    }
}

impl std::fmt::Debug for LockedPages {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "LockedPages(<{} bytes>)", self.len)
    }
}
