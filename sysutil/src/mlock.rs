//! Keeping secrets out of swap: mlock(2) of a value's pages for as long as a guard lives,
//! and the page size such values are aligned to.
//!
//! mlock does not nest: one munlock unlocks a page however many values on it were locked.
//! A locked value must therefore own its pages (be page-aligned and page-sized, or sit in a
//! mapping of its own), or dropping one guard unlocks a neighbour's secret.
#![allow(unsafe_code)]

use std::io;

/// The size of a memory page, the unit mlock(2) works in.
pub fn page_size() -> usize {
    // SAFETY: sysconf takes an integer and returns one; it touches no memory of ours.
    let size = unsafe { libc::sysconf(libc::_SC_PAGESIZE) };
    // Linux always knows its page size (the kernel passes it in the auxiliary vector);
    // 4 KiB, the smallest page of every architecture tosskey builds for, is never larger.
    usize::try_from(size).unwrap_or(4096)
}

/// Lock the pages under `len` bytes from `start` and never unlock them (a page may be
/// shared with other locked data, which an unlock would release): for short-lived buffers
/// that will carry key material until the process exits.
pub fn lock_for_life(start: *const u8, len: usize) -> io::Result<()> {
    // SAFETY: mlock only changes the paging attributes of the mapping containing the range;
    // it neither reads nor writes the memory, and an invalid range yields ENOMEM, not UB. The
    // caller passes the range of a live allocation.
    if unsafe { libc::mlock(start.cast::<libc::c_void>(), len) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// The pages of one value, locked into RAM (mlock(2)) until the guard is dropped, which
/// unlocks them (munlock(2)). Drop it before the memory is freed, after wiping it.
#[derive(Debug)]
pub struct MlockGuard {
    address: usize,
    len: usize,
}

impl MlockGuard {
    /// Locks every page that holds a byte of `value`. Fails with mlock's errno, typically
    /// `ENOMEM` or `EPERM` when `RLIMIT_MEMLOCK` is too low.
    pub fn lock<T: ?Sized>(value: &T) -> io::Result<Self> {
        let address = std::ptr::from_ref(value).cast::<libc::c_void>();
        let len = std::mem::size_of_val(value);
        // SAFETY: mlock only changes the paging attributes of the pages spanning the range
        // (the kernel rounds the start down to a page); it neither reads nor writes them, and
        // the range is the live value borrowed here.
        if unsafe { libc::mlock(address, len) } != 0 {
            return Err(io::Error::last_os_error());
        }
        Ok(Self {
            address: address.addr(),
            len,
        })
    }
}

impl Drop for MlockGuard {
    fn drop(&mut self) {
        let address = std::ptr::without_provenance::<libc::c_void>(self.address);
        // SAFETY: munlock, like mlock, changes paging attributes only and dereferences
        // nothing; the range is the one `lock` locked. It cannot fail for a range mlock
        // accepted, and a failure would leave pages locked, which is harmless.
        unsafe { libc::munlock(address, self.len) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The locked KiB of the mapping that holds `address`: the `Locked:` field of its
    /// block in /proc/self/smaps. mlock splits a mapping at the locked range, so this counts
    /// the value's own pages only, whatever other tests running at the same time lock.
    fn locked_kib_of_mapping_at(address: usize) -> u64 {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut in_mapping = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or("");
            if let Some((start, end)) = first.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    in_mapping = (start..end).contains(&address);
                    continue;
                }
            }
            if let Some(locked) = line.strip_prefix("Locked:").filter(|_| in_mapping) {
                return locked.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
        }
        panic!("no mapping holds {address:#x}");
    }

    #[repr(C, align(65536))]
    struct OwnPages([u8; 65536]);

    #[test]
    fn a_value_is_locked_while_the_guard_lives_and_unlocked_after() {
        // Page-aligned and a whole number of pages: exactly 64 KiB to lock, shared with nothing.
        let value = Box::new(OwnPages([7; 65536]));
        let address = std::ptr::from_ref(&*value).addr();
        assert_eq!(locked_kib_of_mapping_at(address), 0);
        let guard = MlockGuard::lock(&*value).unwrap();
        assert_eq!(
            locked_kib_of_mapping_at(address),
            64,
            "the value's 64 KiB are not locked"
        );
        drop(guard);
        assert_eq!(locked_kib_of_mapping_at(address), 0);
    }

    #[test]
    fn the_page_size_is_what_the_kernel_maps() {
        let page = page_size();
        assert!(page.is_power_of_two() && page >= 4096, "{page}");
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let kernel_page = smaps
            .lines()
            .find_map(|line| line.strip_prefix("KernelPageSize:"))
            .unwrap();
        assert_eq!(format!("{} kB", page / 1024), kernel_page.trim());
    }
}
