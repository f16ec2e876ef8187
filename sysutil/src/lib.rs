//! tosskey-sysutil: the low-level types every tosskey crate shares, defined once (in the
//! spirit of `vmm-sys-util`):
//!
//! - [`DevId`]: a block device number, `MAJ:MIN` as sysfs and dm tables write it;
//! - [`SystemRoot`]: where sysfs, procfs and `/dev` are (a fake tree in host tests), and the
//!   attribute readers ([`read_attr`], [`read_attr_u64`]) and the one mountinfo parser
//!   ([`parse_mountinfo`]);
//! - [`AlignedBuf`]: a zeroed buffer aligned for `O_DIRECT`, without `unsafe`;
//! - [`cvt`]: a syscall's `-1` return turned into the `errno` as [`io::Error`];
//! - [`auxv::secure_exec`]: the kernel's `AT_SECURE` from the saved auxiliary vector;
//! - [`Sectors`], [`Bytes`] and [`SECTOR_SIZE`]: the kernel's 512-byte sector and bytes;
//! - [`check_dm_name`]: the rules of a device-mapper name;
//! - [`hex_encode_secret`] and [`lock_in_memory`]: key material outside tosskey-crypto's
//!   locked arenas (hex key fields, ioctl buffers), locked and zeroized;
//! - [`mlock::MlockGuard`]: a value's pages locked into RAM while it holds a secret.
//!
//! - `fake::FakeTree` (feature `fake`): a fake tree for host tests.
//!
//! No `unsafe` here but the `getauxval` call in [`auxv`] and the mlock calls in [`mlock`];
//! the crates that issue ioctls keep theirs in their own table modules.

pub mod auxv;
mod dm_name;
#[cfg(feature = "fake")]
pub mod fake;
pub mod mlock;
mod secret;
mod units;

pub use dm_name::{check_dm_name, InvalidDmName, DM_NAME_MAX_BYTES};
pub use secret::{hex_encode_secret, lock_in_memory, unlocked_bytes};
pub use units::{Bytes, Sectors, SECTOR_SIZE};

use std::fmt;
use std::io::{self, Read as _};
use std::os::unix::fs::{FileTypeExt as _, MetadataExt as _};
use std::path::{Path, PathBuf};
use std::str::FromStr;

/// A block device number. Displays and parses as `MAJ:MIN`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct DevId {
    pub major: u32,
    pub minor: u32,
}

impl DevId {
    pub const fn new(major: u32, minor: u32) -> Self {
        Self { major, minor }
    }

    /// Decodes the kernel's `huge_encode_dev()` form (dm_ioctl.dev): major = bits 8..20,
    /// minor = bits 0..8 and 20..32.
    #[allow(clippy::cast_possible_truncation)] // both values are masked to at most 20 bits
    pub const fn from_kernel(dev: u64) -> Self {
        Self {
            major: ((dev >> 8) & 0xfff) as u32,
            minor: ((dev & 0xff) | ((dev >> 12) & 0xfff00)) as u32,
        }
    }

    /// Encodes like the kernel's `huge_encode_dev()` (inverse of [`DevId::from_kernel`]).
    pub const fn to_kernel(self) -> u64 {
        let major = self.major as u64;
        let minor = self.minor as u64;
        (minor & 0xff) | ((major & 0xfff) << 8) | ((minor & !0xff) << 12)
    }

    /// From a userspace `dev_t` (`st_rdev`), glibc encoding.
    pub fn from_dev_t(dev: libc::dev_t) -> Self {
        Self {
            major: libc::major(dev),
            minor: libc::minor(dev),
        }
    }

    /// As a userspace `dev_t` for `mknod` and comparisons with `st_rdev`.
    pub fn to_dev_t(self) -> libc::dev_t {
        libc::makedev(self.major, self.minor)
    }

    /// The device number of the block special file at `path`.
    pub fn of_block_device(path: &Path) -> io::Result<Self> {
        let metadata = std::fs::metadata(path)?;
        if !metadata.file_type().is_block_device() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("{} is not a block device", path.display()),
            ));
        }
        Ok(Self::from_dev_t(metadata.rdev()))
    }
}

impl fmt::Display for DevId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}:{}", self.major, self.minor)
    }
}

/// Text that is not `MAJ:MIN`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParseDevIdError(String);

impl fmt::Display for ParseDevIdError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?} is not a device number MAJOR:MINOR", self.0)
    }
}

impl std::error::Error for ParseDevIdError {}

impl FromStr for DevId {
    type Err = ParseDevIdError;
    /// Parses `MAJ:MIN`, surrounding whitespace allowed (sysfs `dev` files end in a newline).
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let invalid = || ParseDevIdError(s.to_owned());
        let (major, minor) = s.trim().split_once(':').ok_or_else(invalid)?;
        Ok(Self {
            major: major.parse().map_err(|_| invalid())?,
            minor: minor.parse().map_err(|_| invalid())?,
        })
    }
}

/// Where sysfs, procfs and `/dev` are mounted: [`SystemRoot::host`] on the real machine, a
/// fake tree under a temporary directory in host tests. Every `/sys` and `/proc` read goes
/// through one of these.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SystemRoot {
    pub sys: PathBuf,
    pub proc: PathBuf,
    pub dev: PathBuf,
}

impl SystemRoot {
    /// `/sys`, `/proc`, `/dev`.
    pub fn host() -> Self {
        Self::under(Path::new("/"))
    }

    /// `<prefix>/sys`, `<prefix>/proc`, `<prefix>/dev`.
    pub fn under(prefix: &Path) -> Self {
        Self {
            sys: prefix.join("sys"),
            proc: prefix.join("proc"),
            dev: prefix.join("dev"),
        }
    }

    /// `<sys>/dev/block/MAJ:MIN`: the device's sysfs directory (a link).
    pub fn block_dir(&self, dev: DevId) -> PathBuf {
        self.sys.join("dev/block").join(dev.to_string())
    }

    /// `<sys>/block/<name>`.
    pub fn block(&self, kernel_name: &str) -> PathBuf {
        self.sys.join("block").join(kernel_name)
    }
}

impl Default for SystemRoot {
    fn default() -> Self {
        Self::host()
    }
}

/// An entry of `/proc/self/mountinfo`.
#[derive(Debug, Clone, PartialEq, Eq)]
#[cfg_attr(feature = "serde", derive(serde::Serialize))]
pub struct MountEntry {
    /// The st_dev of the filesystem (`0:N` for btrfs and other anonymous devices).
    pub dev: DevId,
    /// The directory of the filesystem mounted here (`/` for a whole filesystem, the
    /// directory's path within it for a bind mount).
    pub root: String,
    pub mount_point: String,
    pub fs_type: String,
    /// The mount source (`/dev/nvme0n1p1`, `/dev/mapper/x`, `tmpfs`).
    pub source: String,
    /// The per-mount options (`rw,nosuid,nodev,noatime`).
    pub options: String,
}

/// Parse `/proc/self/mountinfo` (proc(5)): `id parent major:minor root mount-point options
/// [optional fields…] - fstype source super-options`. Malformed lines are skipped.
pub fn parse_mountinfo(text: &str) -> Vec<MountEntry> {
    text.lines()
        .filter_map(|line| {
            let (before, after) = line.split_once(" - ")?;
            let fields: Vec<&str> = before.split(' ').collect();
            let dev = fields.get(2)?.parse().ok()?;
            let root = unescape_octal(fields.get(3)?);
            let mount_point = unescape_octal(fields.get(4)?);
            let options = (*fields.get(5)?).to_owned();
            let mut rest = after.split(' ');
            let fs_type = rest.next()?.to_owned();
            let source = unescape_octal(rest.next()?);
            Some(MountEntry {
                dev,
                root,
                mount_point,
                fs_type,
                source,
                options,
            })
        })
        .collect()
}

/// Undo the octal escapes (`\040` for a space) of mountinfo and /proc/swaps.
pub fn unescape_octal(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'\\' {
            if let Some(digits) = field.get(i + 1..i + 4) {
                if digits.bytes().all(|c| (b'0'..=b'7').contains(&c)) {
                    if let Ok(value) = u8::from_str_radix(digits, 8) {
                        out.push(value);
                        i += 4;
                        continue;
                    }
                }
            }
        }
        out.push(bytes[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A sysfs/procfs attribute, trimmed (callers name the file in their errors).
///
/// An inventory reads hundreds of attributes, so this costs three syscalls (open, read,
/// close) where `fs::read_to_string` takes five: no `statx` for a size hint (sysfs says
/// 4096 whatever the value) and no read to see the end. The kernel produces a sysfs or
/// `/proc/sys` attribute whole (at most a page) on the first read, so a read that returns
/// less than it was offered is the end.
pub fn read_attr(path: &Path) -> io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut bytes = Vec::new();
    let mut chunk = [0u8; 4096 + 1];
    loop {
        match file.read(&mut chunk) {
            Ok(n) => {
                bytes.extend_from_slice(&chunk[..n]);
                if n < chunk.len() {
                    break;
                }
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
    let text =
        String::from_utf8(bytes).map_err(|e| io::Error::new(io::ErrorKind::InvalidData, e))?;
    Ok(text.trim().to_owned())
}

/// A numeric sysfs/procfs attribute.
pub fn read_attr_u64(path: &Path) -> io::Result<u64> {
    let text = read_attr(path)?;
    text.parse().map_err(|_| {
        io::Error::new(
            io::ErrorKind::InvalidData,
            format!("{text:?} is not a number"),
        )
    })
}

/// A zeroed buffer of `len` bytes whose start is aligned to [`AlignedBuf::ALIGN`] (O_DIRECT
/// needs it for every logical block size tosskey accepts). Safe code: a plain `Vec` with room
/// to skip to its first aligned byte.
#[derive(Debug, Clone)]
pub struct AlignedBuf {
    storage: Vec<u8>,
    start: usize,
    len: usize,
}

impl AlignedBuf {
    pub const ALIGN: usize = 4096;

    pub fn new(len: usize) -> Self {
        let storage = vec![0u8; len + Self::ALIGN];
        let start = storage.as_ptr().align_offset(Self::ALIGN);
        Self {
            storage,
            start,
            len,
        }
    }

    pub fn as_slice(&self) -> &[u8] {
        &self.storage[self.start..self.start + self.len]
    }

    pub fn as_mut_slice(&mut self) -> &mut [u8] {
        &mut self.storage[self.start..self.start + self.len]
    }
}

/// A syscall's return value: negative means failure, and `errno` says why.
pub trait SyscallReturn: Copy + PartialOrd + Default {}
impl SyscallReturn for libc::c_int {}
impl SyscallReturn for libc::c_long {}
impl SyscallReturn for libc::ssize_t {}

/// `ret`, or the `errno` it signals (call right after the syscall, before anything else can
/// touch `errno`).
pub fn cvt<T: SyscallReturn>(ret: T) -> io::Result<T> {
    if ret < T::default() {
        Err(io::Error::last_os_error())
    } else {
        Ok(ret)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_dev_encoding_matches_huge_encode_dev() {
        // 253:0 is the first dm device; 259:65536 needs the high minor bits.
        assert_eq!(DevId::new(253, 0).to_kernel(), 0xfd00);
        assert_eq!(DevId::from_kernel(0xfd00), DevId::new(253, 0));
        assert_eq!(DevId::new(7, 3).to_kernel(), 0x0703);
        let big = DevId::new(259, 0x12345);
        assert_eq!(big.to_kernel(), 0x45 | (259 << 8) | (0x12300 << 12));
        assert_eq!(DevId::from_kernel(big.to_kernel()), big);
        for major in [1u32, 7, 8, 9, 252, 253, 259, 4095] {
            for minor in [0u32, 1, 255, 256, 65_535, 0xf_ffff] {
                let dev = DevId::new(major, minor);
                assert_eq!(DevId::from_kernel(dev.to_kernel()), dev);
                assert_eq!(DevId::from_dev_t(dev.to_dev_t()), dev);
            }
        }
    }

    #[test]
    fn dev_ids_parse_and_print_as_major_minor() {
        assert_eq!("253:12".parse::<DevId>().unwrap(), DevId::new(253, 12));
        assert_eq!(DevId::new(7, 0).to_string(), "7:0");
        assert!("253".parse::<DevId>().is_err());
        assert!("a:b".parse::<DevId>().is_err());
    }

    #[test]
    fn parse_errors_say_what_was_expected() {
        assert_eq!("8:0\n".parse::<DevId>().unwrap(), DevId::new(8, 0));
        for bad in ["253", "a:b", ":1", "1:"] {
            let err = bad.parse::<DevId>().unwrap_err();
            assert!(err.to_string().contains("MAJOR:MINOR"), "{err}");
        }
    }

    #[test]
    fn attributes_are_trimmed_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::under(dir.path());
        let size = root.block("vdb").join("size");
        std::fs::create_dir_all(size.parent().unwrap()).unwrap();
        std::fs::write(&size, "524288\n").unwrap();
        assert_eq!(read_attr_u64(&size).unwrap(), 524_288);
        std::fs::write(&size, "many\n").unwrap();
        let err = read_attr_u64(&size).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        assert!(
            err.to_string().contains("\"many\" is not a number"),
            "{err}"
        );
        // Longer than one read (a regular file, not sysfs): read to the end all the same.
        let long = "x".repeat(10_000);
        std::fs::write(&size, format!("{long}\n")).unwrap();
        assert_eq!(read_attr(&size).unwrap(), long);
        let missing = read_attr(&root.block("vdz").join("size")).unwrap_err();
        assert_eq!(missing.kind(), io::ErrorKind::NotFound);
        assert_eq!(
            root.block_dir(DevId::new(254, 16)),
            dir.path().join("sys/dev/block/254:16")
        );
    }

    #[test]
    fn aligned_buffers_are_aligned_and_zeroed() {
        for len in [512, 4096, 1 << 20] {
            let mut buf = AlignedBuf::new(len);
            assert_eq!(buf.as_slice().as_ptr() as usize % AlignedBuf::ALIGN, 0);
            assert_eq!(buf.as_slice().len(), len);
            assert!(buf.as_slice().iter().all(|&b| b == 0));
            buf.as_mut_slice()[len - 1] = 1;
        }
    }

    #[test]
    fn cvt_maps_negative_returns_to_errno() {
        assert_eq!(cvt(3 as libc::c_int).unwrap(), 3);
        // A failing syscall through std sets errno (ENOENT) for cvt to pick up.
        let _ = std::fs::metadata("/nonexistent/tosskey");
        let err = cvt(-1 as libc::c_long).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    }
}
