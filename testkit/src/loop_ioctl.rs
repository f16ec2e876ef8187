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

    const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/loop.h>
#define I(f) printf("offsetof(loop_info64." #f ")=%zu\n", offsetof(struct loop_info64, f))
#define C(f) printf("offsetof(loop_config." #f ")=%zu\n", offsetof(struct loop_config, f))
#define N(n) printf(#n "=%#lx\n", (unsigned long)(n))
int main(void) {
    printf("sizeof(loop_info64)=%zu\n", sizeof(struct loop_info64));
    I(lo_device); I(lo_inode); I(lo_rdevice); I(lo_offset); I(lo_sizelimit); I(lo_number);
    I(lo_encrypt_type); I(lo_encrypt_key_size); I(lo_flags); I(lo_file_name);
    I(lo_crypt_name); I(lo_encrypt_key); I(lo_init);
    printf("sizeof(loop_config)=%zu\n", sizeof(struct loop_config));
    C(fd); C(block_size); C(info); C(__reserved);
    N(LO_NAME_SIZE); N(LO_KEY_SIZE); N(LOOP_CTL_GET_FREE); N(LOOP_CONFIGURE); N(LOOP_CLR_FD);
    return 0;
}
"#;

    /// The same report computed from the Rust definitions.
    fn rust_report() -> String {
        let mut lines = vec![format!("sizeof(loop_info64)={}", size_of::<LoopInfo64>())];
        let info = [
            ("lo_device", offset_of!(LoopInfo64, lo_device)),
            ("lo_inode", offset_of!(LoopInfo64, lo_inode)),
            ("lo_rdevice", offset_of!(LoopInfo64, lo_rdevice)),
            ("lo_offset", offset_of!(LoopInfo64, lo_offset)),
            ("lo_sizelimit", offset_of!(LoopInfo64, lo_sizelimit)),
            ("lo_number", offset_of!(LoopInfo64, lo_number)),
            ("lo_encrypt_type", offset_of!(LoopInfo64, lo_encrypt_type)),
            (
                "lo_encrypt_key_size",
                offset_of!(LoopInfo64, lo_encrypt_key_size),
            ),
            ("lo_flags", offset_of!(LoopInfo64, lo_flags)),
            ("lo_file_name", offset_of!(LoopInfo64, lo_file_name)),
            ("lo_crypt_name", offset_of!(LoopInfo64, lo_crypt_name)),
            ("lo_encrypt_key", offset_of!(LoopInfo64, lo_encrypt_key)),
            ("lo_init", offset_of!(LoopInfo64, lo_init)),
        ];
        lines.extend(
            info.iter()
                .map(|(field, at)| format!("offsetof(loop_info64.{field})={at}")),
        );
        lines.push(format!("sizeof(loop_config)={}", size_of::<LoopConfig>()));
        let config = [
            ("fd", offset_of!(LoopConfig, fd)),
            ("block_size", offset_of!(LoopConfig, block_size)),
            ("info", offset_of!(LoopConfig, info)),
            ("__reserved", offset_of!(LoopConfig, reserved)),
        ];
        lines.extend(
            config
                .iter()
                .map(|(field, at)| format!("offsetof(loop_config.{field})={at}")),
        );
        lines.extend([
            format!("LO_NAME_SIZE={LO_NAME_SIZE:#x}"),
            format!("LO_KEY_SIZE={LO_KEY_SIZE:#x}"),
            format!("LOOP_CTL_GET_FREE={LOOP_CTL_GET_FREE:#x}"),
            format!("LOOP_CONFIGURE={LOOP_CONFIGURE:#x}"),
            format!("LOOP_CLR_FD={LOOP_CLR_FD:#x}"),
        ]);
        lines.join("\n") + "\n"
    }

    /// Every size, offset and request number against `linux/loop.h` as gcc compiles it.
    #[test]
    fn layouts_and_numbers_match_the_installed_uapi_header() {
        assert_eq!(
            crate::uapi_header::report_of("linux/loop.h", C_PROGRAM),
            rust_report()
        );
    }
}
