//! The kernel ABI of `/dev/mapper/control` (`linux/dm-ioctl.h`) and the few raw system calls
//! tosskey-dm needs (`ioctl`, `mknod`, `add_key`, `keyctl`).
//!
//! This is the only module of the crate that may use `unsafe`: every call into the kernel goes
//! through one of the small functions below, each with the invariant it relies on written next
//! to it. Everything else in the crate is safe code built on these functions.
//!
//! Layouts were checked with gcc against the host's `/usr/include/linux/dm-ioctl.h` (interface
//! 4.47): `offsetof`/`sizeof` of every field are hard-coded in the tests below, and the test
//! `layout_matches_gcc_and_the_uapi_header` recompiles a C program against the header and
//! compares its output with Rust's `offset_of!`.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::io;
use std::mem::{offset_of, size_of};
use std::os::fd::{AsRawFd, BorrowedFd};

use tosskey_sysutil::cvt;
use zeroize::Zeroizing;

use crate::error::Error;

/// `DM_NAME_LEN`: a device name including its NUL.
pub(crate) const DM_NAME_LEN: usize = 128;
/// `DM_UUID_LEN`: a device UUID including its NUL.
pub(crate) const DM_UUID_LEN: usize = 129;
/// `DM_MAX_TYPE_NAME`: a target type name including its NUL.
pub(crate) const DM_MAX_TYPE_NAME: usize = 16;

/// `struct dm_ioctl`: the header in front of every device-mapper ioctl buffer.
#[repr(C)]
#[derive(Debug, Clone, Copy)]
pub(crate) struct DmIoctl {
    pub(crate) version: [u32; 3],
    pub(crate) data_size: u32,
    pub(crate) data_start: u32,
    pub(crate) target_count: u32,
    pub(crate) open_count: i32,
    pub(crate) flags: u32,
    pub(crate) event_nr: u32,
    pub(crate) padding: u32,
    pub(crate) dev: u64,
    pub(crate) name: [u8; DM_NAME_LEN],
    pub(crate) uuid: [u8; DM_UUID_LEN],
    pub(crate) data: [u8; 7],
}

/// `sizeof(struct dm_ioctl)`; also the `size` field of every request number.
pub(crate) const DM_IOCTL_SIZE: usize = 312;
/// The same, as the `data_start` the kernel expects for requests.
const DM_IOCTL_SIZE_U32: u32 = 312;
const _: () = assert!(size_of::<DmIoctl>() == DM_IOCTL_SIZE);
const _: () = assert!(std::mem::align_of::<DmIoctl>() == 8);

/// `struct dm_target_spec`: one target in a TABLE_LOAD payload or a TABLE_STATUS answer,
/// followed by its NUL-terminated parameter string.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(C)]
pub(crate) struct DmTargetSpec {
    pub(crate) sector_start: u64,
    pub(crate) length: u64,
    pub(crate) status: i32,
    /// TABLE_LOAD: offset of the next spec from this one. TABLE_STATUS: offset of the next spec
    /// from the start of the data area (dm-ioctl.c `retrieve_status`).
    pub(crate) next: u32,
    pub(crate) target_type: [u8; DM_MAX_TYPE_NAME],
}

pub(crate) const DM_TARGET_SPEC_SIZE: usize = 40;
const _: () = assert!(size_of::<DmTargetSpec>() == DM_TARGET_SPEC_SIZE);

impl DmTargetSpec {
    /// Serialises the spec field by field (native endian, `#[repr(C)]` offsets).
    pub(crate) fn write_to(&self, out: &mut [u8]) {
        out[offset_of!(Self, sector_start)..][..8]
            .copy_from_slice(&self.sector_start.to_ne_bytes());
        out[offset_of!(Self, length)..][..8].copy_from_slice(&self.length.to_ne_bytes());
        out[offset_of!(Self, status)..][..4].copy_from_slice(&self.status.to_ne_bytes());
        out[offset_of!(Self, next)..][..4].copy_from_slice(&self.next.to_ne_bytes());
        out[offset_of!(Self, target_type)..][..DM_MAX_TYPE_NAME].copy_from_slice(&self.target_type);
    }

    /// Parses a spec from the first 40 bytes of `bytes`; `None` when too short.
    pub(crate) fn read_from(bytes: &[u8]) -> Option<Self> {
        let bytes = bytes.get(..DM_TARGET_SPEC_SIZE)?;
        let mut target_type = [0u8; DM_MAX_TYPE_NAME];
        target_type.copy_from_slice(&bytes[offset_of!(Self, target_type)..][..DM_MAX_TYPE_NAME]);
        Some(Self {
            sector_start: read_u64(bytes, offset_of!(Self, sector_start))?,
            length: read_u64(bytes, offset_of!(Self, length))?,
            status: i32::from_ne_bytes(bytes[offset_of!(Self, status)..][..4].try_into().ok()?),
            next: read_u32(bytes, offset_of!(Self, next))?,
            target_type,
        })
    }
}

/// `struct dm_name_list` (LIST_DEVICES answer): `dev` u64 at 0, `next` u32 at 8 (offset of the
/// next entry from this one, 0 = last), NUL-terminated `name` at 12.
pub(crate) const NAME_LIST_DEV: usize = 0;
pub(crate) const NAME_LIST_NEXT: usize = 8;
pub(crate) const NAME_LIST_NAME: usize = 12;
/// `struct dm_target_versions` (LIST_VERSIONS answer): `next` u32 at 0 (relative), `version[3]`
/// at 4, NUL-terminated `name` at 16.
pub(crate) const TARGET_VERSIONS_NEXT: usize = 0;
pub(crate) const TARGET_VERSIONS_VERSION: usize = 4;
pub(crate) const TARGET_VERSIONS_NAME: usize = 16;
/// `struct dm_target_msg` (TARGET_MSG payload): `sector` u64 at 0, message text at 8.
pub(crate) const TARGET_MSG_MESSAGE: usize = 8;

pub(crate) fn read_u32(bytes: &[u8], at: usize) -> Option<u32> {
    Some(u32::from_ne_bytes(
        bytes.get(at..at.checked_add(4)?)?.try_into().ok()?,
    ))
}

pub(crate) fn read_u64(bytes: &[u8], at: usize) -> Option<u64> {
    Some(u64::from_ne_bytes(
        bytes.get(at..at.checked_add(8)?)?.try_into().ok()?,
    ))
}

/// Interface version this crate speaks: major 4 (the only major there is); minor 20 is the
/// first with `DM_SECURE_DATA_FLAG`, which every key-carrying call relies on. The kernel answers
/// EINVAL when its own minor is lower.
pub(crate) const DM_VERSION_REQUIRED: [u32; 3] = [4, 20, 0];

/// `DM_IOCTL`, the ioctl type byte of device-mapper.
const DM_IOCTL_TYPE: u32 = 0xfd;

/// `_IOWR(DM_IOCTL, nr, struct dm_ioctl)` (asm-generic/ioctl.h: dir 3 << 30, size << 16,
/// type << 8, nr). The size field is 312 for every command.
const fn iowr(nr: u32) -> u32 {
    const IOC_READ_WRITE: u32 = 3;
    // DM_IOCTL_SIZE is 312: it fits the 14-bit size field.
    (IOC_READ_WRITE << 30) | (312 << 16) | (DM_IOCTL_TYPE << 8) | nr
}
const _: () = assert!(DM_IOCTL_SIZE == 312);

/// The device-mapper commands tosskey issues, with their request numbers
/// (`enum { DM_VERSION_CMD = 0, ... }` and `#define DM_* _IOWR(DM_IOCTL, DM_*_CMD, struct
/// dm_ioctl)` in linux/dm-ioctl.h).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Command {
    /// DM_VERSION_CMD = 0
    Version,
    /// DM_LIST_DEVICES_CMD = 2
    ListDevices,
    /// DM_DEV_CREATE_CMD = 3
    DevCreate,
    /// DM_DEV_REMOVE_CMD = 4
    DevRemove,
    /// DM_DEV_SUSPEND_CMD = 6 (also resume: without DM_SUSPEND_FLAG)
    DevSuspend,
    /// DM_DEV_STATUS_CMD = 7
    DevStatus,
    /// DM_TABLE_LOAD_CMD = 9
    TableLoad,
    /// DM_TABLE_STATUS_CMD = 0xc
    TableStatus,
    /// DM_LIST_VERSIONS_CMD = 0xd
    ListVersions,
    /// DM_TARGET_MSG_CMD = 0xe
    TargetMsg,
    /// DM_GET_TARGET_VERSION_CMD = 0x11 (Linux 5.4): one target's version,
    /// requesting its module `dm-<name>` first, as a table load would.
    GetTargetVersion,
}

impl Command {
    pub(crate) const fn nr(self) -> u32 {
        match self {
            Command::Version => 0x00,
            Command::ListDevices => 0x02,
            Command::DevCreate => 0x03,
            Command::DevRemove => 0x04,
            Command::DevSuspend => 0x06,
            Command::DevStatus => 0x07,
            Command::TableLoad => 0x09,
            Command::TableStatus => 0x0c,
            Command::ListVersions => 0x0d,
            Command::TargetMsg => 0x0e,
            Command::GetTargetVersion => 0x11,
        }
    }

    pub(crate) const fn request(self) -> u32 {
        iowr(self.nr())
    }

    /// The command's name as in the header, for error messages.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Command::Version => "DM_VERSION",
            Command::ListDevices => "DM_LIST_DEVICES",
            Command::DevCreate => "DM_DEV_CREATE",
            Command::DevRemove => "DM_DEV_REMOVE",
            Command::DevSuspend => "DM_DEV_SUSPEND",
            Command::DevStatus => "DM_DEV_STATUS",
            Command::TableLoad => "DM_TABLE_LOAD",
            Command::TableStatus => "DM_TABLE_STATUS",
            Command::ListVersions => "DM_LIST_VERSIONS",
            Command::TargetMsg => "DM_TARGET_MSG",
            Command::GetTargetVersion => "DM_GET_TARGET_VERSION",
        }
    }
}

/// `dm_ioctl.flags` bits (linux/dm-ioctl.h).
pub(crate) mod flags {
    pub(crate) const READONLY: u32 = 1 << 0;
    pub(crate) const SUSPEND: u32 = 1 << 1;
    pub(crate) const STATUS_TABLE: u32 = 1 << 4;
    pub(crate) const ACTIVE_PRESENT: u32 = 1 << 5;
    pub(crate) const INACTIVE_PRESENT: u32 = 1 << 6;
    pub(crate) const BUFFER_FULL: u32 = 1 << 8;
    pub(crate) const SECURE_DATA: u32 = 1 << 15;
    pub(crate) const DATA_OUT: u32 = 1 << 16;
}

/// udev cookie flags carried in the upper 16 bits of `event_nr` (libdevmapper's
/// `DM_UDEV_FLAGS_SHIFT`); the low 16 bits (the semaphore cookie) stay 0: nobody waits.
pub(crate) const DM_UDEV_FLAGS_SHIFT: u32 = 16;
/// `DM_UDEV_PRIMARY_SOURCE_FLAG`: this uevent comes from the device's owner, udev may run its
/// disk rules (nodes, symlinks) for it.
pub(crate) const DM_UDEV_PRIMARY_SOURCE_FLAG: u32 = 0x0040;

/// Largest buffer the choke point grows to before giving up (the kernel itself refuses more
/// than its `DM_MAX_IOCTL` bound; our tables and lists are tiny).
const MAX_BUFFER: usize = 16 << 20;

/// One device-mapper ioctl buffer: the `dm_ioctl` header followed by the payload. Backed by
/// 8-byte words so that the header is correctly aligned in place, and zeroized on drop: table
/// loads and table reads may carry key material.
pub(crate) struct DmBuffer {
    words: Zeroizing<Vec<u64>>,
    /// Bytes of the payload the caller filled for the request (kept when the buffer grows).
    input_len: usize,
}

impl std::fmt::Debug for DmBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never print the payload: it may hold a key.
        f.debug_struct("DmBuffer")
            .field("header", self.header())
            .field("bytes", &self.len())
            .finish()
    }
}

impl DmBuffer {
    /// A zeroed buffer with room for `payload_capacity` bytes after the header, locked in
    /// memory (it may carry key material; see [`lock_in_memory`]).
    pub(crate) fn new(payload_capacity: usize) -> Self {
        let bytes = DM_IOCTL_SIZE + payload_capacity.next_multiple_of(8);
        let words = Zeroizing::new(vec![0u64; bytes / 8]);
        lock_in_memory(words.as_ptr().cast::<u8>(), bytes);
        let mut buffer = Self {
            words,
            input_len: 0,
        };
        buffer.header_mut().data_start = DM_IOCTL_SIZE_U32;
        buffer
    }

    pub(crate) fn len(&self) -> usize {
        self.words.len() * 8
    }

    pub(crate) fn bytes(&self) -> &[u8] {
        // SAFETY: the Vec<u64> owns `len()` initialised bytes; u8 has no alignment or validity
        // requirements, and the shared borrow of self keeps the storage alive and unaliased by
        // writers for the slice's lifetime.
        unsafe { std::slice::from_raw_parts(self.words.as_ptr().cast::<u8>(), self.len()) }
    }

    fn bytes_mut(&mut self) -> &mut [u8] {
        let len = self.len();
        // SAFETY: as in `bytes`, and the exclusive borrow of self makes this the only access.
        unsafe { std::slice::from_raw_parts_mut(self.words.as_mut_ptr().cast::<u8>(), len) }
    }

    pub(crate) fn header(&self) -> &DmIoctl {
        // SAFETY: the buffer is at least DM_IOCTL_SIZE bytes (new() adds it), the storage is
        // u64-aligned which is DmIoctl's alignment (asserted above), and every bit pattern is a
        // valid DmIoctl (integers and byte arrays only).
        unsafe { &*self.words.as_ptr().cast::<DmIoctl>() }
    }

    pub(crate) fn header_mut(&mut self) -> &mut DmIoctl {
        // SAFETY: as in `header`, and the exclusive borrow of self makes this the only access.
        unsafe { &mut *self.words.as_mut_ptr().cast::<DmIoctl>() }
    }

    /// The whole area after the header, for filling a request. `used` bytes of it are the
    /// request's input (kept if the buffer has to grow).
    pub(crate) fn fill_payload(&mut self, used: usize, fill: impl FnOnce(&mut [u8])) {
        fill(&mut self.bytes_mut()[DM_IOCTL_SIZE..]);
        self.input_len = used;
    }

    /// The kernel's answer: bytes from `data_start` to `data_size`, clamped to the buffer.
    pub(crate) fn answer(&self) -> &[u8] {
        let header = self.header();
        let start = usize::try_from(header.data_start).unwrap_or(usize::MAX);
        let end = usize::try_from(header.data_size)
            .unwrap_or(usize::MAX)
            .min(self.len());
        self.bytes().get(start..end).unwrap_or(&[])
    }

    /// A buffer twice as large for re-sending the request whose header was `request` (the
    /// header as sent: the kernel's answer fills in both name and UUID, and a request naming
    /// both is refused with EINVAL).
    fn regrown(&self, request: &DmIoctl) -> Self {
        let mut bigger = Self::new(self.len().saturating_mul(2) - DM_IOCTL_SIZE);
        *bigger.header_mut() = *request;
        bigger
    }
}

/// Copies `value` plus a NUL into a fixed C char array; the caller validated the length.
pub(crate) fn set_c_string(field: &mut [u8], value: &str) {
    field.fill(0);
    field[..value.len()].copy_from_slice(value.as_bytes());
}

/// The string up to the first NUL of a C char array (lossy for non-UTF-8 bytes).
pub(crate) fn c_string(field: &[u8]) -> String {
    let end = field.iter().position(|&b| b == 0).unwrap_or(field.len());
    String::from_utf8_lossy(&field[..end]).into_owned()
}

/// The choke point: every device-mapper ioctl goes through here. Fills in the interface
/// version and sizes, issues `cmd`, grows the buffer and retries while the kernel reports
/// `DM_BUFFER_FULL_FLAG`, and turns a failure into [`Error::Ioctl`] naming the command, the
/// device (the `name` in the header) and the errno. Returns the (possibly regrown) buffer.
pub(crate) fn dm_ioctl(
    control: BorrowedFd<'_>,
    cmd: Command,
    mut buffer: DmBuffer,
) -> Result<DmBuffer, Error> {
    // Taken before the call: with DM_SECURE_DATA_FLAG the kernel clears the whole user
    // buffer, header included, and a failing command does not write the header back.
    let device = c_string(&buffer.header().name);
    loop {
        let data_size = u32::try_from(buffer.len()).map_err(|_| Error::BufferTooLarge {
            command: cmd.name(),
            device: device.clone(),
        })?;
        {
            let header = buffer.header_mut();
            header.version = DM_VERSION_REQUIRED;
            header.data_size = data_size;
            header.data_start = DM_IOCTL_SIZE_U32;
        }
        // The header carries no key material: keep it to re-send the request.
        let request = *buffer.header();
        let result = loop {
            // SAFETY: `control` is an open fd of /dev/mapper/control; the request is one of the
            // _IOWR(0xfd, nr, struct dm_ioctl) numbers above, whose argument is a pointer to a
            // struct dm_ioctl followed by data_size - 312 bytes: the buffer is data_size bytes,
            // 8-aligned, and exclusively borrowed for the duration of the call. The kernel
            // reads and writes only within data_size (copy_params/copy_from_user bounds).
            let rc = unsafe {
                libc::ioctl(
                    control.as_raw_fd(),
                    libc::Ioctl::from(cmd.request()),
                    buffer.words.as_mut_ptr(),
                )
            };
            if rc == 0 {
                break Ok(());
            }
            let err = io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EINTR) {
                break Err(err);
            }
        };
        if let Err(source) = result {
            return Err(Error::Ioctl {
                command: cmd.name(),
                device,
                fix: crate::error::ioctl_fix(cmd, source.raw_os_error()),
                source,
            });
        }
        if buffer.header().flags & flags::BUFFER_FULL == 0 {
            return Ok(buffer);
        }
        // Only requests without input payload are re-sent: the answer overwrote the input
        // (and with DM_SECURE_DATA_FLAG the kernel cleared it). TARGET_MSG is the only command
        // with both input and an answer, and its answers fit the first buffer.
        if buffer.len() >= MAX_BUFFER || buffer.input_len > 0 {
            return Err(Error::BufferTooLarge {
                command: cmd.name(),
                device,
            });
        }
        buffer = buffer.regrown(&request);
    }
}

/// The one `mlock` choke point for key-carrying buffers (ioctl buffers, hex table strings),
/// shared with every tosskey crate: see [`tosskey_sysutil::lock_in_memory`].
pub(crate) use tosskey_sysutil::lock_in_memory;

/// `mknod(path, mode, dev)`.
pub(crate) fn mknod(path: &CStr, mode: libc::mode_t, dev: libc::dev_t) -> io::Result<()> {
    // SAFETY: `path` is a valid NUL-terminated string borrowed for the call; mknod reads it and
    // touches no other user memory.
    let rc = unsafe { libc::mknod(path.as_ptr(), mode, dev) };
    cvt(rc).map(drop)
}

/// `KEY_SPEC_THREAD_KEYRING` (linux/keyctl.h): the calling thread's keyring, created on demand.
pub(crate) const KEY_SPEC_THREAD_KEYRING: i32 = -1;
/// `KEYCTL_INVALIDATE` (linux/keyctl.h).
const KEYCTL_INVALIDATE: libc::c_long = 21;

/// `add_key(key_type, description, payload, keyring)`: returns the new key's serial. The
/// payload is passed in place from the caller's (zeroizing, locked) memory: no copy is made in
/// userspace.
pub(crate) fn add_key(
    key_type: &CStr,
    description: &CStr,
    payload: &[u8],
    keyring: i32,
) -> io::Result<i32> {
    // SAFETY: both strings are NUL-terminated and borrowed for the call; `payload` points to
    // payload.len() readable bytes borrowed for the call; add_key only reads these (it copies
    // the payload into the kernel) and returns a serial or -1.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_add_key,
            key_type.as_ptr(),
            description.as_ptr(),
            payload.as_ptr(),
            payload.len(),
            libc::c_long::from(keyring),
        )
    };
    i32::try_from(cvt(rc)?).map_err(|_| io::Error::from_raw_os_error(libc::ERANGE))
}

/// `keyctl(KEYCTL_INVALIDATE, serial)`: the key is unlinked from every keyring and destroyed.
pub(crate) fn keyctl_invalidate(serial: i32) -> io::Result<()> {
    // SAFETY: KEYCTL_INVALIDATE takes a key serial as an integer and no pointers.
    let rc = unsafe {
        libc::syscall(
            libc::SYS_keyctl,
            KEYCTL_INVALIDATE,
            libc::c_long::from(serial),
        )
    };
    cvt(rc).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dm_ioctl_layout_matches_offsets_verified_with_gcc() {
        // Values printed by a C program compiled with gcc against the host's
        // /usr/include/linux/dm-ioctl.h (offsetof/sizeof), see the next test.
        assert_eq!(size_of::<DmIoctl>(), 312);
        assert_eq!(std::mem::align_of::<DmIoctl>(), 8);
        assert_eq!(offset_of!(DmIoctl, version), 0);
        assert_eq!(offset_of!(DmIoctl, data_size), 12);
        assert_eq!(offset_of!(DmIoctl, data_start), 16);
        assert_eq!(offset_of!(DmIoctl, target_count), 20);
        assert_eq!(offset_of!(DmIoctl, open_count), 24);
        assert_eq!(offset_of!(DmIoctl, flags), 28);
        assert_eq!(offset_of!(DmIoctl, event_nr), 32);
        assert_eq!(offset_of!(DmIoctl, padding), 36);
        assert_eq!(offset_of!(DmIoctl, dev), 40);
        assert_eq!(offset_of!(DmIoctl, name), 48);
        assert_eq!(offset_of!(DmIoctl, uuid), 176);
        assert_eq!(offset_of!(DmIoctl, data), 305);
        assert_eq!(size_of::<DmTargetSpec>(), 40);
        assert_eq!(offset_of!(DmTargetSpec, sector_start), 0);
        assert_eq!(offset_of!(DmTargetSpec, length), 8);
        assert_eq!(offset_of!(DmTargetSpec, status), 16);
        assert_eq!(offset_of!(DmTargetSpec, next), 20);
        assert_eq!(offset_of!(DmTargetSpec, target_type), 24);
    }

    /// Compiles a C program against linux/dm-ioctl.h with the host's gcc and compares every
    /// size, offset and request number with the Rust side. gcc and the header are part of the
    /// development machine (README, Requirements); the test fails loudly without
    /// them rather than passing vacuously.
    #[test]
    fn layout_matches_gcc_and_the_uapi_header() {
        let dir = std::env::temp_dir().join(format!("tosskey-dm-layout-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let source = dir.join("layout.c");
        let program = dir.join("layout");
        std::fs::write(&source, LAYOUT_PROGRAM).unwrap();
        let status = std::process::Command::new("gcc")
            .arg(&source)
            .arg("-o")
            .arg(&program)
            .status()
            .expect("gcc is needed to check the struct layouts against linux/dm-ioctl.h");
        assert!(status.success(), "gcc failed to compile the layout check");
        let output = std::process::Command::new(&program).output().unwrap();
        std::fs::remove_dir_all(&dir).unwrap();
        let text = String::from_utf8(output.stdout).unwrap();
        let expected = format!(
            "dm_ioctl {} {} {} {} {} {} {} {} {} {} {} {} {} {}\n\
             dm_target_spec {} {} {} {} {} {}\n\
             dm_name_list {} {} {}\n\
             dm_target_versions {} {} {}\n\
             dm_target_msg {}\n\
             requests {} {} {} {} {} {} {} {} {} {} {}\n\
             flags {} {} {} {} {} {} {} {}\n",
            size_of::<DmIoctl>(),
            offset_of!(DmIoctl, version),
            offset_of!(DmIoctl, data_size),
            offset_of!(DmIoctl, data_start),
            offset_of!(DmIoctl, target_count),
            offset_of!(DmIoctl, open_count),
            offset_of!(DmIoctl, flags),
            offset_of!(DmIoctl, event_nr),
            offset_of!(DmIoctl, padding),
            offset_of!(DmIoctl, dev),
            offset_of!(DmIoctl, name),
            offset_of!(DmIoctl, uuid),
            offset_of!(DmIoctl, data),
            std::mem::align_of::<DmIoctl>(),
            size_of::<DmTargetSpec>(),
            offset_of!(DmTargetSpec, sector_start),
            offset_of!(DmTargetSpec, length),
            offset_of!(DmTargetSpec, status),
            offset_of!(DmTargetSpec, next),
            offset_of!(DmTargetSpec, target_type),
            NAME_LIST_DEV,
            NAME_LIST_NEXT,
            NAME_LIST_NAME,
            TARGET_VERSIONS_NEXT,
            TARGET_VERSIONS_VERSION,
            TARGET_VERSIONS_NAME,
            TARGET_MSG_MESSAGE,
            Command::Version.request(),
            Command::ListDevices.request(),
            Command::DevCreate.request(),
            Command::DevRemove.request(),
            Command::DevSuspend.request(),
            Command::DevStatus.request(),
            Command::TableLoad.request(),
            Command::TableStatus.request(),
            Command::ListVersions.request(),
            Command::TargetMsg.request(),
            Command::GetTargetVersion.request(),
            flags::READONLY,
            flags::SUSPEND,
            flags::STATUS_TABLE,
            flags::ACTIVE_PRESENT,
            flags::INACTIVE_PRESENT,
            flags::BUFFER_FULL,
            flags::SECURE_DATA,
            flags::DATA_OUT,
        );
        assert_eq!(text, expected);
    }

    const LAYOUT_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <sys/ioctl.h>
#include <linux/dm-ioctl.h>
#define O(s, f) offsetof(struct s, f)
int main(void) {
    printf("dm_ioctl %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu %zu\n",
        sizeof(struct dm_ioctl), O(dm_ioctl, version), O(dm_ioctl, data_size),
        O(dm_ioctl, data_start), O(dm_ioctl, target_count), O(dm_ioctl, open_count),
        O(dm_ioctl, flags), O(dm_ioctl, event_nr), O(dm_ioctl, padding), O(dm_ioctl, dev),
        O(dm_ioctl, name), O(dm_ioctl, uuid), O(dm_ioctl, data), _Alignof(struct dm_ioctl));
    printf("dm_target_spec %zu %zu %zu %zu %zu %zu\n", sizeof(struct dm_target_spec),
        O(dm_target_spec, sector_start), O(dm_target_spec, length), O(dm_target_spec, status),
        O(dm_target_spec, next), O(dm_target_spec, target_type));
    printf("dm_name_list %zu %zu %zu\n", O(dm_name_list, dev), O(dm_name_list, next),
        O(dm_name_list, name));
    printf("dm_target_versions %zu %zu %zu\n", O(dm_target_versions, next),
        O(dm_target_versions, version), O(dm_target_versions, name));
    printf("dm_target_msg %zu\n", O(dm_target_msg, message));
    printf("requests %u %u %u %u %u %u %u %u %u %u %u\n", (unsigned)DM_VERSION,
        (unsigned)DM_LIST_DEVICES, (unsigned)DM_DEV_CREATE, (unsigned)DM_DEV_REMOVE,
        (unsigned)DM_DEV_SUSPEND, (unsigned)DM_DEV_STATUS, (unsigned)DM_TABLE_LOAD,
        (unsigned)DM_TABLE_STATUS, (unsigned)DM_LIST_VERSIONS, (unsigned)DM_TARGET_MSG,
        (unsigned)DM_GET_TARGET_VERSION);
    printf("flags %u %u %u %u %u %u %u %u\n", DM_READONLY_FLAG, DM_SUSPEND_FLAG,
        DM_STATUS_TABLE_FLAG, DM_ACTIVE_PRESENT_FLAG, DM_INACTIVE_PRESENT_FLAG,
        DM_BUFFER_FULL_FLAG, DM_SECURE_DATA_FLAG, DM_DATA_OUT_FLAG);
    return 0;
}
"#;

    #[test]
    fn request_numbers_match_the_header() {
        // From gcc: DM_VERSION 0xc138fd00, DM_LIST_DEVICES 0xc138fd02, DM_TABLE_LOAD 0xc138fd09,
        // DM_TABLE_STATUS 0xc138fd0c, DM_TARGET_MSG 0xc138fd0e.
        assert_eq!(Command::Version.request(), 0xc138_fd00);
        assert_eq!(Command::ListDevices.request(), 0xc138_fd02);
        assert_eq!(Command::TableLoad.request(), 0xc138_fd09);
        assert_eq!(Command::TableStatus.request(), 0xc138_fd0c);
        assert_eq!(Command::TargetMsg.request(), 0xc138_fd0e);
    }

    #[test]
    fn target_spec_round_trips_through_bytes() {
        let mut target_type = [0u8; DM_MAX_TYPE_NAME];
        target_type[..5].copy_from_slice(b"crypt");
        let spec = DmTargetSpec {
            sector_start: 7,
            length: 1 << 40,
            status: -3,
            next: 144,
            target_type,
        };
        let mut bytes = [0u8; DM_TARGET_SPEC_SIZE];
        spec.write_to(&mut bytes);
        assert_eq!(&bytes[24..29], b"crypt");
        assert_eq!(DmTargetSpec::read_from(&bytes), Some(spec));
        assert_eq!(DmTargetSpec::read_from(&bytes[..39]), None);
    }

    #[test]
    fn regrown_buffer_carries_the_request_header_not_the_answer() {
        let mut buffer = DmBuffer::new(16);
        set_c_string(&mut buffer.header_mut().name, "grow-me");
        buffer.header_mut().flags = flags::STATUS_TABLE | flags::SECURE_DATA;
        let request = *buffer.header();
        // What the kernel writes back with BUFFER_FULL: its status, UUID included.
        set_c_string(&mut buffer.header_mut().uuid, "TOSSKEY-x");
        buffer.header_mut().flags |= flags::BUFFER_FULL;
        let bigger = buffer.regrown(&request);
        assert_eq!(bigger.len(), 2 * buffer.len());
        assert_eq!(c_string(&bigger.header().name), "grow-me");
        assert_eq!(c_string(&bigger.header().uuid), "");
        assert_eq!(
            bigger.header().flags,
            flags::STATUS_TABLE | flags::SECURE_DATA
        );
    }

    #[test]
    fn answer_is_clamped_to_the_buffer() {
        let mut buffer = DmBuffer::new(8);
        buffer.header_mut().data_size = 10_000;
        assert_eq!(buffer.answer().len(), 8);
        buffer.header_mut().data_start = 9_000;
        assert!(buffer.answer().is_empty());
    }
}
