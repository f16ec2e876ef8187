//! The md ioctl ABI and the two raw system calls this crate needs (md ioctls, mknod).
//!
//! Everything here mirrors `/usr/include/linux/raid/md_u.h` (and `md_p.h` for the state
//! bits). Layouts and request numbers are checked by the tests at the bottom of this
//! file, once against constants verified with gcc and once by compiling a C program
//! against the installed header (gcc and linux-libc-dev are required for that test).
//!
//! This is the only module of the crate allowed to use `unsafe`: every ioctl goes
//! through one private choke point (`issue`), which records the command, the device and the errno in the error.
#![allow(unsafe_code)]

use std::ffi::CString;
use std::io;
use std::os::fd::{AsRawFd, BorrowedFd};

use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use tosskey_sysutil::cvt;

use crate::error::{RaidError, Result};

/// `MD_MAJOR` (`linux/major.h`): the block major of `/dev/mdN`.
pub const MD_MAJOR: u32 = 9;

/// `mdu_array_info_t` (`md_u.h`), 72 bytes: the argument of `SET_ARRAY_INFO` and
/// `GET_ARRAY_INFO`. Field names follow the header.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MduArrayInfo {
    pub major_version: i32,
    pub minor_version: i32,
    pub patch_version: i32,
    pub ctime: u32,
    /// `LEVEL_LINEAR` (-1), 0 (raid0), 1 (raid1), …
    pub level: i32,
    /// Component size in KiB; 0 = use the members' sizes. -1 from GET when it overflows.
    pub size: i32,
    pub nr_disks: i32,
    pub raid_disks: i32,
    pub md_minor: i32,
    /// 1 = no superblock is written to the members (what `mdadm --build` sets).
    pub not_persistent: i32,
    pub utime: u32,
    /// Bit `MD_SB_CLEAN` (0) set = skip the initial resync.
    pub state: i32,
    pub active_disks: i32,
    pub working_disks: i32,
    pub failed_disks: i32,
    pub spare_disks: i32,
    /// Ignored by `SET_ARRAY_INFO` for raid0 since Linux 5.4 (md.c sets it to -1).
    pub layout: i32,
    /// Chunk size in bytes.
    pub chunk_size: i32,
}

/// `mdu_disk_info_t` (`md_u.h`), 20 bytes: the argument of `ADD_NEW_DISK` and
/// `GET_DISK_INFO`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MduDiskInfo {
    /// Descriptor number (we use the slot).
    pub number: i32,
    pub major: i32,
    pub minor: i32,
    /// Slot in the array (0-based).
    pub raid_disk: i32,
    /// `MD_DISK_*` bits (`md_p.h`).
    pub state: i32,
}

/// `mdu_version_t` (`md_u.h`), 12 bytes: the argument of `RAID_VERSION`.
#[repr(C)]
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MduVersion {
    pub major: i32,
    pub minor: i32,
    pub patchlevel: i32,
}

/// `LEVEL_LINEAR` (`md_u.h`).
pub const LEVEL_LINEAR: i32 = -1;
/// `MD_SB_CLEAN` (`md_p.h`): bit number in `mdu_array_info_t.state`.
pub const MD_SB_CLEAN: u32 = 0;
/// `MD_DISK_ACTIVE` (`md_p.h`): bit number in `mdu_disk_info_t.state`.
pub const MD_DISK_ACTIVE: u32 = 1;
/// `MD_DISK_SYNC` (`md_p.h`): bit number in `mdu_disk_info_t.state`.
pub const MD_DISK_SYNC: u32 = 2;
/// `MD_SB_MAGIC` (`md_p.h`): the magic of every md superblock (0.90 and 1.x).
pub const MD_SB_MAGIC: u32 = 0xa92b_4efc;

// asm-generic/ioctl.h encoding: dir << 30 | size << 16 | type << 8 | nr.
const IOC_WRITE: u64 = 1;
const IOC_READ: u64 = 2;
const fn ioc(dir: u64, nr: u64, size: usize) -> u64 {
    (dir << 30) | ((size as u64) << 16) | ((MD_MAJOR as u64) << 8) | nr
}

/// The md requests this crate issues, with their numbers from `md_u.h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Request {
    /// `RAID_VERSION  _IOR(MD_MAJOR, 0x10, mdu_version_t)`
    RaidVersion,
    /// `GET_ARRAY_INFO _IOR(MD_MAJOR, 0x11, mdu_array_info_t)`
    GetArrayInfo,
    /// `GET_DISK_INFO _IOR(MD_MAJOR, 0x12, mdu_disk_info_t)`
    GetDiskInfo,
    /// `ADD_NEW_DISK  _IOW(MD_MAJOR, 0x21, mdu_disk_info_t)`
    AddNewDisk,
    /// `SET_ARRAY_INFO _IOW(MD_MAJOR, 0x23, mdu_array_info_t)`
    SetArrayInfo,
    /// `RUN_ARRAY     _IOW(MD_MAJOR, 0x30, mdu_param_t)` (the argument is unused)
    RunArray,
    /// `STOP_ARRAY    _IO(MD_MAJOR, 0x32)`
    StopArray,
}

/// `sizeof(mdu_param_t)`: three ints; only its size enters the RUN_ARRAY number.
const MDU_PARAM_SIZE: usize = 12;

impl Request {
    /// The request number as the kernel expects it.
    pub const fn number(self) -> u64 {
        match self {
            Request::RaidVersion => ioc(IOC_READ, 0x10, size_of::<MduVersion>()),
            Request::GetArrayInfo => ioc(IOC_READ, 0x11, size_of::<MduArrayInfo>()),
            Request::GetDiskInfo => ioc(IOC_READ, 0x12, size_of::<MduDiskInfo>()),
            Request::AddNewDisk => ioc(IOC_WRITE, 0x21, size_of::<MduDiskInfo>()),
            Request::SetArrayInfo => ioc(IOC_WRITE, 0x23, size_of::<MduArrayInfo>()),
            Request::RunArray => ioc(IOC_WRITE, 0x30, MDU_PARAM_SIZE),
            Request::StopArray => ioc(0, 0x32, 0),
        }
    }

    /// The header's name, used in error messages.
    pub const fn name(self) -> &'static str {
        match self {
            Request::RaidVersion => "RAID_VERSION",
            Request::GetArrayInfo => "GET_ARRAY_INFO",
            Request::GetDiskInfo => "GET_DISK_INFO",
            Request::AddNewDisk => "ADD_NEW_DISK",
            Request::SetArrayInfo => "SET_ARRAY_INFO",
            Request::RunArray => "RUN_ARRAY",
            Request::StopArray => "STOP_ARRAY",
        }
    }
}

/// The single place that calls ioctl(2) on an md device.
///
/// `argument` must be null (no argument) or point to a live value of the type the
/// request encodes; the typed wrappers below are the only callers and guarantee it.
fn issue(
    fd: BorrowedFd<'_>,
    device: &str,
    request: Request,
    argument: *mut libc::c_void,
) -> Result<()> {
    let number = libc::Ioctl::try_from(request.number()).map_err(|_| RaidError::Ioctl {
        command: request.name(),
        device: device.to_owned(),
        source: io::Error::from_raw_os_error(libc::EINVAL),
    })?;
    // SAFETY: `fd` is a valid open descriptor for the lifetime of the borrow; `argument`
    // is null or points to a live, properly sized `#[repr(C)]` value matching
    // `request` (enforced by the typed wrappers), and the kernel reads/writes at most
    // the size encoded in `number`.
    let status = unsafe { libc::ioctl(fd.as_raw_fd(), number, argument) };
    cvt(status).map(drop).map_err(|source| RaidError::Ioctl {
        command: request.name(),
        device: device.to_owned(),
        source,
    })
}

/// `SET_ARRAY_INFO`: declares the geometry of a new, empty array.
pub fn set_array_info(fd: BorrowedFd<'_>, device: &str, info: &MduArrayInfo) -> Result<()> {
    let mut copy = *info;
    issue(
        fd,
        device,
        Request::SetArrayInfo,
        std::ptr::from_mut(&mut copy).cast(),
    )
}

/// `ADD_NEW_DISK`: binds one member (claims it exclusively, like O_EXCL).
pub fn add_new_disk(fd: BorrowedFd<'_>, device: &str, disk: &MduDiskInfo) -> Result<()> {
    let mut copy = *disk;
    issue(
        fd,
        device,
        Request::AddNewDisk,
        std::ptr::from_mut(&mut copy).cast(),
    )
}

/// `RUN_ARRAY`: starts the personality; the array becomes readable and writable.
pub fn run_array(fd: BorrowedFd<'_>, device: &str) -> Result<()> {
    issue(fd, device, Request::RunArray, std::ptr::null_mut())
}

/// `STOP_ARRAY`: stops the array and releases its members.
pub fn stop_array(fd: BorrowedFd<'_>, device: &str) -> Result<()> {
    issue(fd, device, Request::StopArray, std::ptr::null_mut())
}

/// `GET_ARRAY_INFO`: the array's geometry and state (ENODEV if it has none).
pub fn get_array_info(fd: BorrowedFd<'_>, device: &str) -> Result<MduArrayInfo> {
    let mut info = MduArrayInfo::default();
    issue(
        fd,
        device,
        Request::GetArrayInfo,
        std::ptr::from_mut(&mut info).cast(),
    )?;
    Ok(info)
}

/// `GET_DISK_INFO` for descriptor `number`.
pub fn get_disk_info(fd: BorrowedFd<'_>, device: &str, number: i32) -> Result<MduDiskInfo> {
    let mut disk = MduDiskInfo {
        number,
        ..MduDiskInfo::default()
    };
    issue(
        fd,
        device,
        Request::GetDiskInfo,
        std::ptr::from_mut(&mut disk).cast(),
    )?;
    Ok(disk)
}

/// `RAID_VERSION`: the md driver's interface version (0.90.3 on every current kernel).
pub fn raid_version(fd: BorrowedFd<'_>, device: &str) -> Result<MduVersion> {
    let mut version = MduVersion::default();
    issue(
        fd,
        device,
        Request::RaidVersion,
        std::ptr::from_mut(&mut version).cast(),
    )?;
    Ok(version)
}

/// Creates the block special file `path` for `major:minor`, mode 0600, owned by the
/// caller (root). Used only when no devtmpfs/udev made the node.
pub fn mknod_block(path: &Path, major: u32, minor: u32) -> Result<()> {
    let io_error = |source| RaidError::Io {
        action: "mknod",
        path: path.to_path_buf(),
        source,
    };
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io_error(io::Error::from_raw_os_error(libc::EINVAL)))?;
    let dev = libc::makedev(major, minor);
    // SAFETY: `c_path` is a valid NUL-terminated string that outlives the call; mknod
    // does not retain the pointer.
    let status = unsafe { libc::mknod(c_path.as_ptr(), libc::S_IFBLK | 0o600, dev) };
    cvt(status).map(drop).map_err(io_error)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::mem::offset_of;

    /// Sizes, offsets and request numbers printed by a gcc-compiled program against
    /// `/usr/include/linux/raid/md_u.h` (Debian, linux-libc-dev 6.x, x86_64); the
    /// `layout_matches_the_installed_header` test recompiles it against the installed header.
    const GCC_VERIFIED: &str = "\
sizeof(mdu_array_info_t)=72
offsetof(major_version)=0
offsetof(minor_version)=4
offsetof(patch_version)=8
offsetof(ctime)=12
offsetof(level)=16
offsetof(size)=20
offsetof(nr_disks)=24
offsetof(raid_disks)=28
offsetof(md_minor)=32
offsetof(not_persistent)=36
offsetof(utime)=40
offsetof(state)=44
offsetof(active_disks)=48
offsetof(working_disks)=52
offsetof(failed_disks)=56
offsetof(spare_disks)=60
offsetof(layout)=64
offsetof(chunk_size)=68
sizeof(mdu_disk_info_t)=20
offsetof(number)=0
offsetof(major)=4
offsetof(minor)=8
offsetof(raid_disk)=12
offsetof(state)=16
sizeof(mdu_version_t)=12
RAID_VERSION=0x800c0910
GET_ARRAY_INFO=0x80480911
GET_DISK_INFO=0x80140912
ADD_NEW_DISK=0x40140921
SET_ARRAY_INFO=0x40480923
RUN_ARRAY=0x400c0930
STOP_ARRAY=0x932
";

    /// The same report computed from the Rust definitions.
    fn rust_report() -> String {
        let mut lines = vec![format!(
            "sizeof(mdu_array_info_t)={}",
            size_of::<MduArrayInfo>()
        )];
        let array_offsets = [
            ("major_version", offset_of!(MduArrayInfo, major_version)),
            ("minor_version", offset_of!(MduArrayInfo, minor_version)),
            ("patch_version", offset_of!(MduArrayInfo, patch_version)),
            ("ctime", offset_of!(MduArrayInfo, ctime)),
            ("level", offset_of!(MduArrayInfo, level)),
            ("size", offset_of!(MduArrayInfo, size)),
            ("nr_disks", offset_of!(MduArrayInfo, nr_disks)),
            ("raid_disks", offset_of!(MduArrayInfo, raid_disks)),
            ("md_minor", offset_of!(MduArrayInfo, md_minor)),
            ("not_persistent", offset_of!(MduArrayInfo, not_persistent)),
            ("utime", offset_of!(MduArrayInfo, utime)),
            ("state", offset_of!(MduArrayInfo, state)),
            ("active_disks", offset_of!(MduArrayInfo, active_disks)),
            ("working_disks", offset_of!(MduArrayInfo, working_disks)),
            ("failed_disks", offset_of!(MduArrayInfo, failed_disks)),
            ("spare_disks", offset_of!(MduArrayInfo, spare_disks)),
            ("layout", offset_of!(MduArrayInfo, layout)),
            ("chunk_size", offset_of!(MduArrayInfo, chunk_size)),
        ];
        for (name, offset) in array_offsets {
            lines.push(format!("offsetof({name})={offset}"));
        }
        lines.push(format!(
            "sizeof(mdu_disk_info_t)={}",
            size_of::<MduDiskInfo>()
        ));
        let disk_offsets = [
            ("number", offset_of!(MduDiskInfo, number)),
            ("major", offset_of!(MduDiskInfo, major)),
            ("minor", offset_of!(MduDiskInfo, minor)),
            ("raid_disk", offset_of!(MduDiskInfo, raid_disk)),
            ("state", offset_of!(MduDiskInfo, state)),
        ];
        for (name, offset) in disk_offsets {
            lines.push(format!("offsetof({name})={offset}"));
        }
        lines.push(format!("sizeof(mdu_version_t)={}", size_of::<MduVersion>()));
        for request in [
            Request::RaidVersion,
            Request::GetArrayInfo,
            Request::GetDiskInfo,
            Request::AddNewDisk,
            Request::SetArrayInfo,
            Request::RunArray,
            Request::StopArray,
        ] {
            lines.push(format!("{}={:#x}", request.name(), request.number()));
        }
        lines.join("\n") + "\n"
    }

    #[test]
    fn layout_and_numbers_match_the_gcc_verified_values() {
        assert_eq!(rust_report(), GCC_VERIFIED);
        assert_eq!(size_of::<MduArrayInfo>(), 72);
        assert_eq!(size_of::<MduDiskInfo>(), 20);
    }

    const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/major.h>
#include <linux/raid/md_u.h>
#define A(f) printf("offsetof(" #f ")=%zu\n", offsetof(mdu_array_info_t, f))
#define D(f) printf("offsetof(" #f ")=%zu\n", offsetof(mdu_disk_info_t, f))
#define R(r) printf(#r "=%#lx\n", (unsigned long)(r))
int main(void) {
    printf("sizeof(mdu_array_info_t)=%zu\n", sizeof(mdu_array_info_t));
    A(major_version); A(minor_version); A(patch_version); A(ctime); A(level); A(size);
    A(nr_disks); A(raid_disks); A(md_minor); A(not_persistent); A(utime); A(state);
    A(active_disks); A(working_disks); A(failed_disks); A(spare_disks); A(layout);
    A(chunk_size);
    printf("sizeof(mdu_disk_info_t)=%zu\n", sizeof(mdu_disk_info_t));
    D(number); D(major); D(minor); D(raid_disk); D(state);
    printf("sizeof(mdu_version_t)=%zu\n", sizeof(mdu_version_t));
    R(RAID_VERSION); R(GET_ARRAY_INFO); R(GET_DISK_INFO); R(ADD_NEW_DISK);
    R(SET_ARRAY_INFO); R(RUN_ARRAY); R(STOP_ARRAY);
    return 0;
}
"#;

    /// Compiles a C program against linux/raid/md_u.h with the host's gcc and compares every
    /// size, offset and request number with the Rust side. Like tosskey-dm's layout test it
    /// fails loudly without gcc or the header (packages gcc, linux-libc-dev) rather than
    /// passing without having compared anything.
    #[test]
    fn layout_matches_the_installed_header() {
        let header = Path::new("/usr/include/linux/raid/md_u.h");
        assert!(
            header.exists(),
            "{} is needed to check the struct layouts: apt-get install linux-libc-dev",
            header.display()
        );
        let dir = std::env::temp_dir().join(format!("tosskey-raid-md-u-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("md_u.c");
        let program = dir.join("md_u");
        std::fs::write(&source, C_PROGRAM).unwrap();
        let compiled = std::process::Command::new("gcc")
            .arg("-o")
            .arg(&program)
            .arg(&source)
            .status()
            .expect("gcc is needed to check the struct layouts against linux/raid/md_u.h");
        assert!(compiled.success(), "gcc failed on {}", source.display());
        let output = std::process::Command::new(&program).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        assert!(output.status.success());
        assert_eq!(String::from_utf8(output.stdout).unwrap(), rust_report());
    }
}
