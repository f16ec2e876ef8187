//! [`DmControl`]: the safe API over `/dev/mapper/control`, plus `/dev/mapper/<name>` nodes.

use std::fmt;
use std::fs;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::thread;
use std::time::{Duration, Instant};

use zeroize::Zeroizing;

use crate::error::Error;
use crate::ioctl::{
    self, c_string, flags, read_u32, read_u64, set_c_string, Command, DmBuffer, DmTargetSpec,
    DM_MAX_TYPE_NAME, DM_TARGET_SPEC_SIZE, DM_UDEV_FLAGS_SHIFT, DM_UDEV_PRIMARY_SOURCE_FLAG,
};
use crate::target::{elide_params, CryptParams, TargetLine, TargetParams};
use crate::types::{DevId, DmName, DmUuid, Sectors};

/// The device-mapper control node.
pub const CONTROL_PATH: &str = "/dev/mapper/control";
/// Where device nodes of mappings live.
pub const MAPPER_DIR: &str = "/dev/mapper";
/// udev's control socket: present while udevd runs.
const UDEV_CONTROL: &str = "/run/udev/control";
/// Misc character device numbers of the control node (`MAPPER_CTRL_MINOR` in miscdevice.h).
const CONTROL_DEV: DevId = DevId::new(10, 236);
/// How long `remove` retries while the device is busy (udev/blkid probes hold new devices
/// open for a moment).
const REMOVE_RETRY_FOR: Duration = Duration::from_secs(2);
const REMOVE_RETRY_EVERY: Duration = Duration::from_millis(100);

/// State of a device, from DM_DEV_STATUS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DeviceInfo {
    pub name: DmName,
    /// The UUID, if one was set at creation.
    pub uuid: Option<String>,
    pub dev: DevId,
    /// How many openers the block device has (mounts and mappings stacked on it count).
    pub open_count: i32,
    /// Targets in the live table.
    pub target_count: u32,
    pub event_nr: u32,
    pub suspended: bool,
    pub read_only: bool,
    /// A table is live (resumed at least once).
    pub live_table: bool,
    /// A table is loaded but not yet live.
    pub inactive_table: bool,
}

/// One line of a live table, safe to show: a crypt hex key is replaced by
/// [`crate::ELIDED_KEY`] (keyring references are kept: they are not secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableEntry {
    pub start: Sectors,
    pub length: Sectors,
    pub target_type: String,
    /// Parameters with the key elided.
    pub params: String,
    /// For crypt targets: the parsed parameters (the key only as its kind and length).
    pub crypt: Option<CryptParams>,
}

impl TableEntry {
    /// The entry for a target of `target_type` with `params` as the kernel returned them
    /// (key included): the key is elided, and crypt parameters are parsed.
    pub fn new(
        start: Sectors,
        length: Sectors,
        target_type: String,
        params: &str,
    ) -> Result<Self, Error> {
        let crypt = if target_type == "crypt" {
            Some(params.parse::<CryptParams>()?)
        } else {
            None
        };
        Ok(Self {
            start,
            length,
            params: elide_params(&target_type, params),
            target_type,
            crypt,
        })
    }

    /// The parameters parsed by target type (for crypt, the same as [`TableEntry::crypt`]).
    pub fn target_params(&self) -> Result<TargetParams, Error> {
        match &self.crypt {
            Some(crypt) => Ok(TargetParams::Crypt(crypt.clone())),
            None => TargetParams::parse(&self.target_type, &self.params),
        }
    }
}

/// `line` with a crypt key elided, for an error message.
fn elide_line(line: &str) -> String {
    let mut words = line.splitn(4, ' ');
    let head: Vec<&str> = words.by_ref().take(3).collect();
    match (head.as_slice(), words.next()) {
        ([_, _, target_type], Some(params)) => {
            format!("{} {}", head.join(" "), elide_params(target_type, params))
        }
        _ => head.join(" "),
    }
}

impl fmt::Display for TableEntry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{} {} {} {}",
            self.start, self.length, self.target_type, self.params
        )
    }
}

impl FromStr for TableEntry {
    type Err = Error;
    /// A line as `dmsetup table` prints it, `<start> <length> <type> <params>` (a crypt hex
    /// key is elided): the inverse of [`TableEntry`]'s [`fmt::Display`].
    fn from_str(line: &str) -> Result<Self, Error> {
        let bad = |reason: &str| Error::TableSyntax {
            target: "device-mapper",
            reason: format!("table line {}: {reason}", elide_line(line)),
        };
        let mut words = line.splitn(4, ' ');
        let mut sectors = |what: &str| {
            words
                .next()
                .and_then(|w| w.parse().ok())
                .map(Sectors)
                .ok_or_else(|| bad(&format!("the {what} is not a number")))
        };
        let (start, length) = (sectors("start")?, sectors("length")?);
        let target_type = words
            .next()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| bad("the target type is missing"))?
            .to_owned();
        let entry = Self::new(start, length, target_type, words.next().unwrap_or(""))?;
        // Unlike a table the kernel returns, text from elsewhere is checked whole.
        entry.target_params()?;
        Ok(entry)
    }
}

/// One line of a live table including key material, from
/// [`DmControl::table_with_keys`]. Zeroized on drop; `Debug` elides the key.
pub struct SecretTableEntry {
    pub start: Sectors,
    pub length: Sectors,
    pub target_type: String,
    pub params: Zeroizing<String>,
}

impl std::fmt::Debug for SecretTableEntry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretTableEntry")
            .field("start", &self.start)
            .field("length", &self.length)
            .field("target_type", &self.target_type)
            .field("params", &elide_params(&self.target_type, &self.params))
            .finish()
    }
}

/// One target's status line (TABLE_STATUS without the table flag).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetStatus {
    pub start: Sectors,
    pub length: Sectors,
    pub target_type: String,
    pub status: String,
}

/// A loaded target type and its version, from DM_LIST_VERSIONS.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TargetVersion {
    pub name: String,
    pub version: (u32, u32, u32),
}

/// An open `/dev/mapper/control`. All device-mapper operations go through it.
#[derive(Debug)]
pub struct DmControl {
    fd: OwnedFd,
    udev: bool,
    /// Every table is loaded with `DM_READONLY_FLAG` (see [`DmControl::set_read_only_tables`]).
    read_only_tables: bool,
}

impl DmControl {
    /// Opens `/dev/mapper/control`, creating the node (char 10:236, 0600) when no udev or
    /// devtmpfs made it, and notes whether udev runs (`/run/udev/control`).
    pub fn open() -> Result<Self, Error> {
        let path = Path::new(CONTROL_PATH);
        let control_error = |source: io::Error| Error::ControlOpen {
            path: path.to_owned(),
            source,
        };
        let created = fs::symlink_metadata(path).is_err();
        if created {
            create_mapper_dir().map_err(control_error)?;
            make_node(path, libc::S_IFCHR, CONTROL_DEV).map_err(control_error)?;
        }
        // Opening the node makes the kernel request `char-major-10-236` (dm_mod) when
        // device-mapper is not loaded; if that fails (ENODEV), the node made here goes.
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|error| {
                if created {
                    let _ = fs::remove_file(path);
                }
                control_error(error)
            })?;
        let metadata = file.metadata().map_err(control_error)?;
        if !metadata.file_type().is_char_device() || metadata.rdev() != CONTROL_DEV.to_dev_t() {
            return Err(Error::NodeConflict {
                path: path.to_owned(),
                expected: format!("character device {CONTROL_DEV}"),
                found: describe_file(&metadata),
            });
        }
        Ok(Self {
            fd: file.into(),
            udev: Path::new(UDEV_CONTROL).exists(),
            read_only_tables: false,
        })
    }

    /// From now on, load every table with `DM_READONLY_FLAG`: the kernel opens the devices
    /// under the table read-only and the mapping comes up as a read-only disk (what
    /// `dmsetup create --readonly` does). For looking at a volume without writing to it.
    pub fn set_read_only_tables(&mut self, read_only: bool) {
        self.read_only_tables = read_only;
    }

    /// Whether udev was running when the control node was opened. Without udev nobody waits
    /// for uevents and this crate makes the `/dev/mapper` nodes itself.
    pub fn udev_running(&self) -> bool {
        self.udev
    }

    /// `/dev/mapper/<name>`.
    pub fn node_path(name: &DmName) -> PathBuf {
        Path::new(MAPPER_DIR).join(name.as_str())
    }

    fn run(&self, command: Command, buffer: DmBuffer) -> Result<DmBuffer, Error> {
        ioctl::dm_ioctl(self.fd.as_fd(), command, buffer)
    }

    fn named(name: &DmName, payload_capacity: usize) -> DmBuffer {
        let mut buffer = DmBuffer::new(payload_capacity);
        set_c_string(&mut buffer.header_mut().name, name.as_str());
        buffer
    }

    /// The kernel's device-mapper interface version (DM_VERSION), e.g. `(4, 47, 0)`.
    pub fn version(&self) -> Result<(u32, u32, u32), Error> {
        let answer = self.run(Command::Version, DmBuffer::new(0))?;
        let [major, minor, patch] = answer.header().version;
        Ok((major, minor, patch))
    }

    /// Loaded target types and their versions (DM_LIST_VERSIONS), e.g. crypt 1.24.0.
    pub fn target_versions(&self) -> Result<Vec<TargetVersion>, Error> {
        let answer = self.run(Command::ListVersions, DmBuffer::new(4096))?;
        parse_target_versions(Command::ListVersions, answer.answer())
    }

    /// DM_GET_TARGET_VERSION: the version of target type `target` (`crypt`). When the
    /// target is not registered, device-mapper asks the kernel's module helper for
    /// `dm-<target>` first, as a table load would — without building anything. Linux 5.4+;
    /// older kernels answer `ENOTTY`.
    pub fn target_version(&self, target: &str) -> Result<TargetVersion, Error> {
        let mut buffer = DmBuffer::new(256);
        set_c_string(&mut buffer.header_mut().name, target);
        let answer = self.run(Command::GetTargetVersion, buffer)?;
        parse_target_versions(Command::GetTargetVersion, answer.answer())?
            .into_iter()
            .next()
            .ok_or_else(|| Error::Parse {
                device: String::new(),
                what: format!("empty {} answer", Command::GetTargetVersion.name()),
            })
    }

    /// DM_DEV_CREATE: a new device without a table. Returns its device number.
    pub fn create(&self, name: &DmName, uuid: &DmUuid) -> Result<DevId, Error> {
        let mut buffer = Self::named(name, 0);
        set_c_string(&mut buffer.header_mut().uuid, uuid.as_str());
        let answer = self.run(Command::DevCreate, buffer)?;
        Ok(DevId::from_kernel(answer.header().dev))
    }

    /// DM_TABLE_LOAD into the inactive slot. Uses `DM_SECURE_DATA_FLAG` when a target carries
    /// a key or is a crypt target (the kernel then wipes its copy and clears ours), and the
    /// buffer is zeroized when dropped.
    pub fn load_table(&self, name: &DmName, targets: &[TargetLine]) -> Result<(), Error> {
        let invalid = |reason: String| Error::InvalidTarget {
            target: "device-mapper",
            reason,
        };
        let mut expected_start = 0u64;
        for target in targets {
            if target.start().0 != expected_start {
                return Err(invalid(format!(
                    "table for {name} has a gap or overlap at sector {}",
                    target.start()
                )));
            }
            expected_start = target
                .start()
                .0
                .checked_add(target.length().0)
                .ok_or_else(|| invalid(format!("table for {name} is longer than 2^64 sectors")))?;
        }
        if targets.is_empty() {
            return Err(invalid(format!("table for {name} has no targets")));
        }
        let entry_len = |t: &TargetLine| {
            (DM_TARGET_SPEC_SIZE + t.params_secret().len() + 1).next_multiple_of(8)
        };
        let payload: usize = targets.iter().map(entry_len).sum();
        let mut buffer = Self::named(name, payload);
        let secure = targets
            .iter()
            .any(|t| t.carries_key() || t.target_type() == "crypt");
        {
            let header = buffer.header_mut();
            header.target_count = u32::try_from(targets.len())
                .map_err(|_| invalid(format!("table for {name} has too many targets")))?;
            if secure {
                header.flags |= flags::SECURE_DATA;
            }
            if self.read_only_tables {
                header.flags |= flags::READONLY;
            }
        }
        let mut next_values = Vec::with_capacity(targets.len());
        for target in targets {
            next_values.push(
                u32::try_from(entry_len(target)).map_err(|_| {
                    invalid(format!("a target of {name} has parameters over 4 GiB"))
                })?,
            );
        }
        buffer.fill_payload(payload, |out| {
            let mut at = 0usize;
            for (target, next) in targets.iter().zip(next_values) {
                let mut target_type = [0u8; DM_MAX_TYPE_NAME];
                set_c_string(&mut target_type, target.target_type());
                DmTargetSpec {
                    sector_start: target.start().0,
                    length: target.length().0,
                    status: 0,
                    // Relative to this spec (dm-ioctl.c populate_table).
                    next,
                    target_type,
                }
                .write_to(&mut out[at..]);
                let params = target.params_secret().as_bytes();
                let params_at = at + DM_TARGET_SPEC_SIZE;
                out[params_at..params_at + params.len()].copy_from_slice(params);
                // The NUL and padding are already zero.
                at += entry_len(target);
            }
        });
        self.run(Command::TableLoad, buffer)?;
        Ok(())
    }

    /// DM_DEV_SUSPEND without the suspend flag: makes the loaded table live (or resumes a
    /// suspended device). Then makes sure `/dev/mapper/<name>` exists: created with mknod
    /// (block, 0600) from the kernel's device number unless it is already there. With udev
    /// running, the uevent carries the primary-source flag and nobody waits for udev.
    pub fn resume(&self, name: &DmName) -> Result<DevId, Error> {
        let mut buffer = Self::named(name, 0);
        if self.udev {
            buffer.header_mut().event_nr = DM_UDEV_PRIMARY_SOURCE_FLAG << DM_UDEV_FLAGS_SHIFT;
        }
        let answer = self.run(Command::DevSuspend, buffer)?;
        let dev = DevId::from_kernel(answer.header().dev);
        ensure_block_node(&Self::node_path(name), dev)?;
        Ok(dev)
    }

    /// DM_DEV_SUSPEND with the suspend flag (I/O is flushed and then held).
    pub fn suspend(&self, name: &DmName) -> Result<(), Error> {
        let mut buffer = Self::named(name, 0);
        buffer.header_mut().flags |= flags::SUSPEND;
        self.run(Command::DevSuspend, buffer)?;
        Ok(())
    }

    /// DM_DEV_REMOVE, retried for 2 s while the device is busy; then [`Error::Busy`] naming
    /// the holders (stacked devices from sysfs, mount points, processes with it open). Removes
    /// `/dev/mapper/<name>` afterwards if it is the block node of this device.
    pub fn remove(&self, name: &DmName) -> Result<(), Error> {
        let dev = self.info(name)?.dev;
        let deadline = Instant::now() + REMOVE_RETRY_FOR;
        loop {
            match self.run(Command::DevRemove, Self::named(name, 0)) {
                Ok(_) => break,
                Err(err) if err.errno() == Some(libc::EBUSY) && Instant::now() < deadline => {
                    thread::sleep(REMOVE_RETRY_EVERY);
                }
                Err(Error::Ioctl { source, .. }) if source.raw_os_error() == Some(libc::EBUSY) => {
                    let open_count = self.info(name).map(|i| i.open_count).unwrap_or(-1);
                    return Err(Error::Busy {
                        device: name.to_string(),
                        open_count,
                        holders: describe_holders(dev),
                        source,
                    });
                }
                Err(err) => return Err(err),
            }
        }
        remove_block_node(&Self::node_path(name), dev)
    }

    /// DM_LIST_DEVICES: every device-mapper device with its device number.
    pub fn list(&self) -> Result<Vec<(DmName, DevId)>, Error> {
        let answer = self.run(Command::ListDevices, DmBuffer::new(4096))?;
        let data = answer.answer();
        let bad = || Error::Parse {
            device: String::new(),
            what: "malformed DM_LIST_DEVICES answer".into(),
        };
        let mut devices = Vec::new();
        // An empty list is a single entry with dev 0 (dm-ioctl.c list_devices).
        if read_u64(data, ioctl::NAME_LIST_DEV).unwrap_or(0) == 0 {
            return Ok(devices);
        }
        let mut at = 0usize;
        loop {
            let dev = read_u64(data, at + ioctl::NAME_LIST_DEV).ok_or_else(bad)?;
            let next = read_u32(data, at + ioctl::NAME_LIST_NEXT).ok_or_else(bad)?;
            let name = c_string(data.get(at + ioctl::NAME_LIST_NAME..).ok_or_else(bad)?);
            devices.push((DmName::from_kernel(name), DevId::from_kernel(dev)));
            if next == 0 {
                break;
            }
            at += usize::try_from(next).map_err(|_| bad())?;
        }
        Ok(devices)
    }

    /// [`DeviceInfo`] of every device whose UUID starts with `prefix` (e.g. `TOSSKEY-`), in
    /// list order. A device removed between the list and its status query is skipped.
    pub fn devices_with_uuid_prefix(&self, prefix: &str) -> Result<Vec<DeviceInfo>, Error> {
        let mut found = Vec::new();
        for (name, _) in self.list()? {
            match self.info(&name) {
                Ok(info) if info.uuid.as_deref().is_some_and(|u| u.starts_with(prefix)) => {
                    found.push(info);
                }
                Ok(_) => {}
                Err(err) if err.errno() == Some(libc::ENXIO) => {}
                Err(err) => return Err(err),
            }
        }
        Ok(found)
    }

    /// DM_DEV_STATUS.
    pub fn info(&self, name: &DmName) -> Result<DeviceInfo, Error> {
        let answer = self.run(Command::DevStatus, Self::named(name, 0))?;
        let header = answer.header();
        let uuid = c_string(&header.uuid);
        Ok(DeviceInfo {
            name: DmName::from_kernel(c_string(&header.name)),
            uuid: (!uuid.is_empty()).then_some(uuid),
            dev: DevId::from_kernel(header.dev),
            open_count: header.open_count,
            target_count: header.target_count,
            event_nr: header.event_nr,
            suspended: header.flags & flags::SUSPEND != 0,
            read_only: header.flags & flags::READONLY != 0,
            live_table: header.flags & flags::ACTIVE_PRESENT != 0,
            inactive_table: header.flags & flags::INACTIVE_PRESENT != 0,
        })
    }

    /// The live table, with crypt hex keys elided. Use [`DmControl::table_with_keys`] to get
    /// the key back.
    pub fn table(&self, name: &DmName) -> Result<Vec<TableEntry>, Error> {
        let mut entries = Vec::new();
        self.read_targets(name, true, |spec, target_type, params| {
            let entry = TableEntry::new(
                Sectors(spec.sector_start),
                Sectors(spec.length),
                target_type,
                params,
            )
            .map_err(|err| Error::Parse {
                device: name.to_string(),
                what: err.to_string(),
            })?;
            entries.push(entry);
            Ok(())
        })?;
        Ok(entries)
    }

    /// The live table including any hex key, in zeroizing strings. Only for callers that
    /// need the key (e.g. re-creating a mapping); everything else uses [`DmControl::table`].
    pub fn table_with_keys(&self, name: &DmName) -> Result<Vec<SecretTableEntry>, Error> {
        let mut entries = Vec::new();
        self.read_targets(name, true, |spec, target_type, params| {
            entries.push(SecretTableEntry {
                start: Sectors(spec.sector_start),
                length: Sectors(spec.length),
                target_type,
                params: {
                    let mut copy = Zeroizing::new(String::with_capacity(params.len()));
                    ioctl::lock_in_memory(copy.as_ptr(), copy.capacity());
                    copy.push_str(params);
                    copy
                },
            });
            Ok(())
        })?;
        Ok(entries)
    }

    /// Each target's status line (e.g. a striped target's member health; empty for crypt).
    pub fn status(&self, name: &DmName) -> Result<Vec<TargetStatus>, Error> {
        let mut entries = Vec::new();
        self.read_targets(name, false, |spec, target_type, status| {
            entries.push(TargetStatus {
                start: Sectors(spec.sector_start),
                length: Sectors(spec.length),
                // Status lines never carry keys (crypt reports nothing here).
                status: status.to_owned(),
                target_type,
            });
            Ok(())
        })?;
        Ok(entries)
    }

    /// DM_TABLE_STATUS; `visit` sees each target's spec, type and text while the (zeroizing)
    /// answer buffer is alive. `DM_SECURE_DATA_FLAG` is set because a table line may carry a
    /// hex key: the kernel wipes its copy of the answer.
    fn read_targets(
        &self,
        name: &DmName,
        table: bool,
        mut visit: impl FnMut(DmTargetSpec, String, &str) -> Result<(), Error>,
    ) -> Result<(), Error> {
        let mut buffer = Self::named(name, 16 * 1024);
        buffer.header_mut().flags |=
            flags::SECURE_DATA | if table { flags::STATUS_TABLE } else { 0 };
        let answer = self.run(Command::TableStatus, buffer)?;
        let count = answer.header().target_count;
        let data = answer.answer();
        let bad = |what: &str| Error::Parse {
            device: name.to_string(),
            what: format!("malformed DM_TABLE_STATUS answer: {what}"),
        };
        let mut at = 0usize;
        for index in 0..count {
            let spec = DmTargetSpec::read_from(data.get(at..).unwrap_or(&[]))
                .ok_or_else(|| bad("target spec past the end"))?;
            let text_bytes = &data[at + DM_TARGET_SPEC_SIZE..];
            let end = text_bytes
                .iter()
                .position(|&b| b == 0)
                .ok_or_else(|| bad("parameters without NUL"))?;
            let text = std::str::from_utf8(&text_bytes[..end])
                .map_err(|_| bad("parameters are not UTF-8"))?;
            visit(spec, c_string(&spec.target_type), text)?;
            // `next` counts from the start of the data area here (dm-ioctl.c retrieve_status).
            let next = usize::try_from(spec.next).map_err(|_| bad("next offset"))?;
            if index + 1 < count && next <= at {
                return Err(bad("next offset does not advance"));
            }
            at = next;
        }
        Ok(())
    }

    /// DM_TARGET_MSG to the target at `sector`. Messages starting with `key` (`key wipe`,
    /// `key set ...`) are sent with `DM_SECURE_DATA_FLAG`; the buffer is zeroized either way.
    /// Returns the target's answer, if it gave one.
    pub fn message(
        &self,
        name: &DmName,
        sector: Sectors,
        message: &[u8],
    ) -> Result<Option<String>, Error> {
        if message.contains(&0) {
            return Err(Error::InvalidTarget {
                target: "message",
                reason: format!("message for {name} contains a NUL byte"),
            });
        }
        let used = ioctl::TARGET_MSG_MESSAGE + message.len() + 1;
        let mut buffer = Self::named(name, used + 4096);
        if message.starts_with(b"key") {
            buffer.header_mut().flags |= flags::SECURE_DATA;
        }
        buffer.fill_payload(used, |out| {
            out[..8].copy_from_slice(&sector.0.to_ne_bytes());
            out[ioctl::TARGET_MSG_MESSAGE..][..message.len()].copy_from_slice(message);
        });
        let answer = self.run(Command::TargetMsg, buffer)?;
        if answer.header().flags & flags::DATA_OUT != 0 {
            Ok(Some(c_string(answer.answer())))
        } else {
            Ok(None)
        }
    }

    /// Sends `key wipe` to a (suspended) crypt device: the kernel forgets the key, and the
    /// device can no longer be resumed, only removed.
    pub fn wipe_crypt_key(&self, name: &DmName) -> Result<(), Error> {
        self.message(name, Sectors(0), b"key wipe").map(|_| ())
    }
}

fn create_mapper_dir() -> io::Result<()> {
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o755)
        .create(MAPPER_DIR)
}

fn make_node(path: &Path, kind: libc::mode_t, dev: DevId) -> io::Result<()> {
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::from_raw_os_error(libc::EINVAL))?;
    ioctl::mknod(&c_path, kind | 0o600, dev.to_dev_t())
}

fn describe_file(metadata: &fs::Metadata) -> String {
    let kind = metadata.file_type();
    let dev = DevId::from_dev_t(metadata.rdev());
    if kind.is_block_device() {
        format!("block device {dev}")
    } else if kind.is_char_device() {
        format!("character device {dev}")
    } else if kind.is_symlink() {
        "a symbolic link".into()
    } else if kind.is_dir() {
        "a directory".into()
    } else {
        "a regular or special file".into()
    }
}

/// Makes `path` the block node of `dev`: keeps a node (or udev's symlink) that already points
/// to it, replaces a stale block node of another device, refuses anything else.
pub(crate) fn ensure_block_node(path: &Path, dev: DevId) -> Result<(), Error> {
    let node_error = |action, source| Error::Node {
        action,
        path: path.to_owned(),
        source,
    };
    for _attempt in 0..2 {
        match fs::metadata(path) {
            Ok(found) if found.file_type().is_block_device() && found.rdev() == dev.to_dev_t() => {
                return Ok(());
            }
            Ok(_) | Err(_) => {}
        }
        match fs::symlink_metadata(path) {
            Ok(stale) if stale.file_type().is_block_device() => {
                fs::remove_file(path).map_err(|e| node_error("remove stale", e))?;
            }
            Ok(other) => {
                return Err(Error::NodeConflict {
                    path: path.to_owned(),
                    expected: format!("block device {dev}"),
                    found: describe_file(&other),
                });
            }
            Err(err) if err.kind() == io::ErrorKind::NotFound => {}
            Err(err) => return Err(node_error("inspect", err)),
        }
        create_mapper_dir().map_err(|e| node_error("create the directory of", e))?;
        match make_node(path, libc::S_IFBLK, dev) {
            Ok(()) => return Ok(()),
            // udev made it between our look and mknod: look again.
            Err(err) if err.raw_os_error() == Some(libc::EEXIST) => continue,
            Err(err) => return Err(node_error("create", err)),
        }
    }
    Err(node_error(
        "create",
        io::Error::from_raw_os_error(libc::EEXIST),
    ))
}

/// Removes `path` if it is the block node of `dev` (not a symlink, not another device).
pub(crate) fn remove_block_node(path: &Path, dev: DevId) -> Result<(), Error> {
    match fs::symlink_metadata(path) {
        Ok(found) if found.file_type().is_block_device() && found.rdev() == dev.to_dev_t() => {
            fs::remove_file(path).map_err(|source| Error::Node {
                action: "remove",
                path: path.to_owned(),
                source,
            })
        }
        _ => Ok(()),
    }
}

/// Who holds block device `dev` open, as far as the system tells: devices stacked on it
/// (sysfs holders), mount points (mountinfo) and processes with an open descriptor (/proc).
pub fn describe_holders(dev: DevId) -> String {
    let mut holders = Vec::new();
    if let Ok(entries) = fs::read_dir(format!("/sys/dev/block/{dev}/holders")) {
        for entry in entries.flatten() {
            let kernel_name = entry.file_name().to_string_lossy().into_owned();
            let dm_name = fs::read_to_string(format!("/sys/block/{kernel_name}/dm/name"))
                .map(|n| format!(" ({})", n.trim()))
                .unwrap_or_default();
            holders.push(format!("held by {kernel_name}{dm_name}"));
        }
    }
    if let Ok(mountinfo) = fs::read_to_string("/proc/self/mountinfo") {
        let wanted = dev.to_string();
        for line in mountinfo.lines() {
            let fields: Vec<&str> = line.split(' ').collect();
            if fields.get(2) == Some(&wanted.as_str()) {
                if let Some(mount_point) = fields.get(4) {
                    holders.push(format!("mounted on {mount_point}"));
                }
            }
        }
    }
    if let Ok(processes) = fs::read_dir("/proc") {
        for process in processes.flatten() {
            let pid = process.file_name().to_string_lossy().into_owned();
            if !pid.bytes().all(|b| b.is_ascii_digit()) {
                continue;
            }
            let Ok(fds) = fs::read_dir(process.path().join("fd")) else {
                continue;
            };
            let holds = fds.flatten().any(|fd| {
                fs::metadata(fd.path())
                    .map(|m| m.file_type().is_block_device() && m.rdev() == dev.to_dev_t())
                    .unwrap_or(false)
            });
            if holds {
                let comm = fs::read_to_string(process.path().join("comm")).unwrap_or_default();
                holders.push(format!("open by pid {pid} ({})", comm.trim()));
            }
        }
    }
    if holders.is_empty() {
        "no holder found in sysfs, mountinfo or /proc: possibly a short-lived probe".into()
    } else {
        holders.join(", ")
    }
}

/// The `struct dm_target_versions` records of a DM_LIST_VERSIONS or DM_GET_TARGET_VERSION
/// answer.
fn parse_target_versions(command: Command, data: &[u8]) -> Result<Vec<TargetVersion>, Error> {
    let mut versions = Vec::new();
    let mut at = 0usize;
    let bad = || Error::Parse {
        device: String::new(),
        what: format!("malformed {} answer", command.name()),
    };
    while at < data.len() {
        let next = read_u32(data, at + ioctl::TARGET_VERSIONS_NEXT).ok_or_else(bad)?;
        let version = |i: usize| read_u32(data, at + ioctl::TARGET_VERSIONS_VERSION + 4 * i);
        let (Some(major), Some(minor), Some(patch)) = (version(0), version(1), version(2)) else {
            return Err(bad());
        };
        let name = c_string(
            data.get(at + ioctl::TARGET_VERSIONS_NAME..)
                .ok_or_else(bad)?,
        );
        versions.push(TargetVersion {
            name,
            version: (major, minor, patch),
        });
        if next == 0 {
            break;
        }
        at += usize::try_from(next).map_err(|_| bad())?;
    }
    Ok(versions)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Lines DM_TABLE_STATUS returned in the guest (Debian 6.1) for the root test
    /// `every_target_table_text_round_trips_through_the_kernel`, as [`DmControl::table`]
    /// shows them: the kernel's option order and counts, devices as MAJ:MIN, a hex key
    /// elided, nothing after `error` and `zero`.
    const KERNEL_LINES: [&str; 7] = [
        "0 16384 crypt aes-xts-plain64 :64:logon:tosskey:tkdm-text-crypt-keyring 0 7:0 0 4 allow_discards no_read_workqueue sector_size:4096 iv_large_sectors",
        "0 8192 crypt aes-xts-plain64 <key-elided> 16 7:1 2048",
        "0 16384 striped 2 128 7:2 0 7:1 8192",
        "0 1000 linear 7:2 24",
        "0 64 error ",
        "0 8192 zero ",
        "0 24576 raid raid10 6 128 nosync raid10_copies 2 raid10_format near 3 253:5 7:3 253:6 7:4 253:7 7:5",
    ];

    #[test]
    fn kernel_table_lines_round_trip() {
        for line in KERNEL_LINES {
            let entry: TableEntry = line.parse().unwrap();
            assert_eq!(entry.to_string(), line);
            let params = entry.target_params().unwrap();
            assert_eq!(params.target_type(), entry.target_type);
            assert_eq!(params.to_string(), entry.params, "{line}");
            assert!(!matches!(params, TargetParams::Other { .. }), "{line}");
        }
        let keyring: TableEntry = KERNEL_LINES[0].parse().unwrap();
        let crypt = keyring.crypt.as_ref().unwrap();
        assert!(crypt.options.no_read_workqueue && crypt.options.iv_large_sectors);
        assert_eq!(crypt.options.sector_size, 4096);
    }

    #[test]
    fn a_table_line_with_a_hex_key_parses_elided_and_bad_lines_say_why() {
        let key = "00".repeat(64);
        let entry: TableEntry = format!("0 8 crypt aes-xts-plain64 {key} 0 7:1 0")
            .parse()
            .unwrap();
        assert_eq!(entry.params, "aes-xts-plain64 <key-elided> 0 7:1 0");
        assert_eq!(
            entry.to_string(),
            "0 8 crypt aes-xts-plain64 <key-elided> 0 7:1 0"
        );
        for bad in ["", "0", "0 8", "x 8 linear 7:0 0", "0 8 linear 7:0"] {
            assert!(bad.parse::<TableEntry>().is_err(), "{bad:?}");
        }
        let err = format!("0 x crypt aes-xts-plain64 {key} 0 7:1 0")
            .parse::<TableEntry>()
            .unwrap_err()
            .to_string();
        assert!(!err.contains(&key) && err.contains("<key-elided>"), "{err}");
    }

    #[test]
    fn node_path_is_under_dev_mapper() {
        let name = DmName::new("ephemeral-encrypted").unwrap();
        assert_eq!(
            DmControl::node_path(&name),
            Path::new("/dev/mapper/ephemeral-encrypted")
        );
    }

    #[test]
    fn remove_block_node_leaves_other_files_alone() {
        let dir = std::env::temp_dir().join(format!("tosskey-dm-node-{}", std::process::id()));
        fs::create_dir_all(&dir).unwrap();
        let file = dir.join("not-a-node");
        fs::write(&file, b"x").unwrap();
        remove_block_node(&file, DevId::new(253, 0)).unwrap();
        assert!(file.exists());
        let err = ensure_block_node(&file, DevId::new(253, 0))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("is not the block device 253:0 (found a regular"),
            "{err}"
        );
        fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn holders_of_an_unused_device_say_so() {
        // No device uses 4095:1048575 on any machine.
        let text = describe_holders(DevId::new(4095, 0xf_ffff));
        assert!(text.starts_with("no holder found"), "{text}");
    }
}
