//! The loop-device ioctls, in one table, and the only `unsafe` in this crate.
//!
//! Numbers and layouts come from `/usr/include/linux/loop.h` (uapi, kernel ≥ 5.8 for
//! `LOOP_CONFIGURE`). Every call goes through [`ioctl_with_arg`] / [`ioctl_with_ref`], which
//! turn the C return convention into `io::Result`.
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use tosskey_sysutil::cvt;

/// `LOOP_CTL_GET_FREE` on `/dev/loop-control`: returns the number of a free loop device,
/// creating one if needed (`loop.h`: `#define LOOP_CTL_GET_FREE 0x4C82`).
pub(crate) const LOOP_CTL_GET_FREE: libc::c_ulong = 0x4C82;
/// `LOOP_CONFIGURE` on `/dev/loopN`: attach a backing fd and set block size and flags in
/// one step (`loop.h`: `#define LOOP_CONFIGURE 0x4C0A`).
pub(crate) const LOOP_CONFIGURE: libc::c_ulong = 0x4C0A;
/// `LOOP_CLR_FD` on `/dev/loopN`: detach; deferred by the kernel until the last opener
/// closes (`loop.h`: `#define LOOP_CLR_FD 0x4C01`).
pub(crate) const LOOP_CLR_FD: libc::c_ulong = 0x4C01;

/// `LO_NAME_SIZE` in `loop.h`.
const LO_NAME_SIZE: usize = 64;
/// `LO_KEY_SIZE` in `loop.h`.
const LO_KEY_SIZE: usize = 32;

/// `struct loop_info64` from `loop.h` (232 bytes). Only `lo_flags` is set by tosskey's
/// fixtures; everything else stays zero.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopInfo64 {
    pub lo_device: u64,
    pub lo_inode: u64,
    pub lo_rdevice: u64,
    pub lo_offset: u64,
    pub lo_sizelimit: u64,
    pub lo_number: u32,
    pub lo_encrypt_type: u32,
    pub lo_encrypt_key_size: u32,
    pub lo_flags: u32,
    pub lo_file_name: [u8; LO_NAME_SIZE],
    pub lo_crypt_name: [u8; LO_NAME_SIZE],
    pub lo_encrypt_key: [u8; LO_KEY_SIZE],
    pub lo_init: [u64; 2],
}

/// `struct loop_config` from `loop.h` (304 bytes), the argument of `LOOP_CONFIGURE`.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct LoopConfig {
    /// The backing file's descriptor (`__u32` in the header).
    pub fd: u32,
    /// Logical block size in bytes; 0 keeps the default of 512.
    pub block_size: u32,
    pub info: LoopInfo64,
    pub reserved: [u64; 8],
}

impl LoopConfig {
    /// A configuration attaching `backing_fd` with the given logical block size.
    pub(crate) fn new(backing_fd: u32, block_size: u32) -> Self {
        LoopConfig {
            fd: backing_fd,
            block_size,
            info: LoopInfo64 {
                lo_device: 0,
                lo_inode: 0,
                lo_rdevice: 0,
                lo_offset: 0,
                lo_sizelimit: 0,
                lo_number: 0,
                lo_encrypt_type: 0,
                lo_encrypt_key_size: 0,
                lo_flags: 0,
                lo_file_name: [0; LO_NAME_SIZE],
                lo_crypt_name: [0; LO_NAME_SIZE],
                lo_encrypt_key: [0; LO_KEY_SIZE],
                lo_init: [0; 2],
            },
            reserved: [0; 8],
        }
    }
}

/// Issues an ioctl whose argument is an integer (or unused) and returns its non-negative
/// result.
pub(crate) fn ioctl_with_arg(
    fd: BorrowedFd<'_>,
    request: libc::c_ulong,
    arg: libc::c_ulong,
) -> io::Result<libc::c_int> {
    // SAFETY: `fd` is a valid open descriptor for the borrow's lifetime, and every request
    // passed here (LOOP_CTL_GET_FREE, LOOP_CLR_FD) takes an integer argument that the kernel
    // does not dereference.
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), request, arg) };
    cvt(ret)
}

/// Issues `LOOP_CONFIGURE` with a pointer to `config`.
pub(crate) fn loop_configure(fd: BorrowedFd<'_>, config: &LoopConfig) -> io::Result<()> {
    // SAFETY: `fd` is a valid open descriptor; `config` points to a live, initialised
    // `#[repr(C)]` struct with the exact layout of `struct loop_config` (checked by the
    // size/offset tests below); the kernel only reads it (copy_from_user).
    let ret = unsafe { libc::ioctl(fd.as_raw_fd(), LOOP_CONFIGURE, std::ptr::from_ref(config)) };
    cvt(ret).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::{offset_of, size_of};

    /// Sizes and offsets from `/usr/include/linux/loop.h` on x86_64.
    #[test]
    fn layouts_match_uapi_header() {
        assert_eq!(size_of::<LoopInfo64>(), 232);
        assert_eq!(offset_of!(LoopInfo64, lo_number), 40);
        assert_eq!(offset_of!(LoopInfo64, lo_flags), 52);
        assert_eq!(offset_of!(LoopInfo64, lo_file_name), 56);
        assert_eq!(offset_of!(LoopInfo64, lo_init), 216);
        assert_eq!(size_of::<LoopConfig>(), 304);
        assert_eq!(offset_of!(LoopConfig, block_size), 4);
        assert_eq!(offset_of!(LoopConfig, info), 8);
        assert_eq!(offset_of!(LoopConfig, reserved), 240);
    }
}
