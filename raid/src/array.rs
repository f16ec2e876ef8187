//! [`MdArray`]: build, open, inspect and stop a non-persistent md array.

use std::fs::OpenOptions;
use std::io;
use std::os::fd::{AsFd, OwnedFd};
use std::os::unix::fs::{FileTypeExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::error::{RaidError, Result};
use crate::ioctl::{self, MduArrayInfo, MduDiskInfo, MD_DISK_ACTIVE, MD_DISK_SYNC, MD_SB_CLEAN};
use crate::spec::{ArraySpec, DevId, Level};
use crate::sysfs::{MdSysfs as _, SystemRoot};
use tosskey_sysutil::SECTOR_SIZE;

/// How long [`MdArray::stop`] waits for the kernel to delete the stopped md device
/// (it does so from a workqueue once the last descriptor is closed).
const DELETE_WAIT: Duration = Duration::from_secs(5);

/// How often STOP_ARRAY is retried while something (a udev/blkid probe) briefly holds
/// the array open, and how long to wait between tries.
const STOP_ATTEMPTS: u32 = 10;
const STOP_RETRY_DELAY: Duration = Duration::from_millis(100);

/// A running (or half-built) md array, owning an open descriptor of its node.
///
/// Dropping it closes the descriptor and leaves the array running: the array is meant
/// to outlive the process. [`MdArray::stop`] tears it down.
#[derive(Debug)]
pub struct MdArray {
    fd: OwnedFd,
    name: String,
    node: PathBuf,
    dev: DevId,
    created_node: bool,
    system: SystemRoot,
}

/// What GET_ARRAY_INFO and sysfs say about an array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayInfo {
    /// Kernel name: `md127`, `md_tosskey`.
    pub name: String,
    /// Device number.
    pub dev: DevId,
    /// The personality, if it is one tosskey builds.
    pub level: Option<Level>,
    /// `mdu_array_info_t.level` as the kernel reports it.
    pub kernel_level: i32,
    /// Number of slots.
    pub raid_disks: u32,
    /// Members in sync.
    pub active_disks: u32,
    /// Members that failed.
    pub failed_disks: u32,
    /// True for arrays without superblocks (all of tosskey's).
    pub not_persistent: bool,
    /// `MD_SB_CLEAN` is set in the state.
    pub clean: bool,
    /// Chunk in bytes (0 for raid1 and linear built by tosskey).
    pub chunk_bytes: u64,
    /// Per-member size in KiB, when it fits GET_ARRAY_INFO's int.
    pub component_kib: Option<u64>,
    /// sysfs `md/level`.
    pub sysfs_level: String,
    /// sysfs `md/array_state` (`clean`, `active`, `inactive`, …).
    pub array_state: String,
    /// Array size in bytes (sysfs `size`).
    pub size_bytes: u64,
}

impl MdArray {
    /// Builds and starts a non-persistent array (what `mdadm --build` does): nothing is
    /// written to the members. On any failure the partial array is stopped and its node
    /// removed before the error is returned.
    pub fn build(spec: &ArraySpec) -> Result<MdArray> {
        MdArray::build_in(&SystemRoot::host(), spec)
    }

    /// [`MdArray::build`] with sysfs, procfs and device nodes under `system`.
    pub fn build_in(system: &SystemRoot, spec: &ArraySpec) -> Result<MdArray> {
        spec.validate()?;
        // A rerun with the same name finds its array before anything else.
        if let Some(name) = spec.kernel_name_from_hint() {
            if system.sys.join("block").join(&name).exists() {
                return Err(RaidError::NameInUse { name });
            }
        }
        spec.check_members(system)?;
        let name = create_array(system, spec)?;
        let array = match MdArray::attach(system, &name) {
            Ok(array) => array,
            Err(primary) => {
                // No descriptor: stop it through sysfs instead of STOP_ARRAY.
                let state = system.sys.join("block").join(&name).join("md/array_state");
                return Err(match crate::sysfs::write_attribute(&state, "clear") {
                    Ok(()) => primary,
                    Err(cleanup) => RaidError::Rollback {
                        array: name,
                        primary: Box::new(primary),
                        cleanup: Box::new(cleanup),
                    },
                });
            }
        };
        match array.assemble(spec) {
            Ok(()) => Ok(array),
            Err(primary) => {
                let name = array.name.clone();
                match array.stop() {
                    Ok(()) => Err(primary),
                    Err(cleanup) => Err(RaidError::Rollback {
                        array: name,
                        primary: Box::new(primary),
                        cleanup: Box::new(cleanup),
                    }),
                }
            }
        }
    }

    /// Opens an array built earlier (by this or another run): `name` is its kernel name
    /// (`md127`, `md_tosskey`) or its node (`/dev/md127`).
    pub fn open_existing(name: &str) -> Result<MdArray> {
        MdArray::open_existing_in(&SystemRoot::host(), name)
    }

    /// [`MdArray::open_existing`] with sysfs, procfs and device nodes under `system`.
    pub fn open_existing_in(system: &SystemRoot, name: &str) -> Result<MdArray> {
        let kernel_name = Path::new(name)
            .file_name()
            .and_then(|file| file.to_str())
            .unwrap_or(name);
        if !system
            .sys
            .join("block")
            .join(kernel_name)
            .join("md")
            .is_dir()
        {
            return Err(RaidError::NoSuchArray {
                name: kernel_name.to_owned(),
            });
        }
        MdArray::attach(system, kernel_name)
    }

    /// Kernel name: `md127`, `md_tosskey`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The device node, e.g. `/dev/md127`.
    pub fn path(&self) -> &Path {
        &self.node
    }

    /// Device number (what a dm table names as `MAJOR:MINOR`).
    pub fn dev(&self) -> DevId {
        self.dev
    }

    /// True when this process created the node (no devtmpfs/udev did).
    pub fn created_node(&self) -> bool {
        self.created_node
    }

    /// Geometry and state from GET_ARRAY_INFO plus sysfs.
    pub fn info(&self) -> Result<ArrayInfo> {
        let raw = ioctl::get_array_info(self.fd.as_fd(), &self.describe())?;
        let status = self.system.array_status(&self.name)?;
        let count = |value: i32| u32::try_from(value).unwrap_or(0);
        Ok(ArrayInfo {
            name: self.name.clone(),
            dev: self.dev,
            level: Level::from_kernel_level(raw.level),
            kernel_level: raw.level,
            raid_disks: count(raw.raid_disks),
            active_disks: count(raw.active_disks),
            failed_disks: count(raw.failed_disks),
            not_persistent: raw.not_persistent != 0,
            clean: raw.state & (1 << MD_SB_CLEAN) != 0,
            chunk_bytes: u64::try_from(raw.chunk_size).unwrap_or(0),
            component_kib: u64::try_from(raw.size).ok(),
            sysfs_level: status.level,
            array_state: status.array_state,
            size_bytes: status.size_bytes,
        })
    }

    /// The array's members and holders as sysfs shows them.
    pub fn status(&self) -> Result<crate::sysfs::ArrayStatus> {
        self.system.array_status(&self.name)
    }

    /// Stops the array (STOP_ARRAY, retried while a probe briefly holds it open), closes
    /// the descriptor, removes the node if this process created it and waits (up to 5 s)
    /// until the kernel has deleted the md device, so its name can be reused at once.
    /// Fails with EBUSY while the array is mounted or held.
    pub fn stop(self) -> Result<()> {
        let description = self.describe();
        let mut attempt = 1;
        loop {
            match ioctl::stop_array(self.fd.as_fd(), &description) {
                Ok(()) => break,
                Err(RaidError::Ioctl { source, .. })
                    if source.raw_os_error() == Some(libc::EBUSY) && attempt < STOP_ATTEMPTS =>
                {
                    attempt += 1;
                    std::thread::sleep(STOP_RETRY_DELAY);
                }
                Err(error) => return Err(error),
            }
        }
        let MdArray {
            fd,
            name,
            node,
            created_node,
            system,
            ..
        } = self;
        drop(fd);
        if created_node {
            std::fs::remove_file(&node).map_err(|source| RaidError::Io {
                action: "remove",
                path: node.clone(),
                source,
            })?;
        }
        // The array is stopped either way; an empty md device that lingers longer is
        // harmless (it holds no members) and is skipped when choosing a minor.
        let sysfs_dir = system.sys.join("block").join(&name);
        let deadline = std::time::Instant::now() + DELETE_WAIT;
        while sysfs_dir.exists() && std::time::Instant::now() < deadline {
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }

    /// Opens (creating the node if needed) the md device `name`, which must exist.
    fn attach(system: &SystemRoot, name: &str) -> Result<MdArray> {
        let dev_file = system.sys.join("block").join(name).join("dev");
        let dev_text = std::fs::read_to_string(&dev_file).map_err(|source| RaidError::Io {
            action: "read",
            path: dev_file.clone(),
            source,
        })?;
        let dev = dev_text.parse::<DevId>().map_err(|_| RaidError::Parse {
            path: dev_file,
            found: dev_text.trim_end().to_owned(),
            expected: "MAJOR:MINOR",
        })?;
        let node = system.dev.join(name);
        let created_node = ensure_node(&node, dev)?;
        let opened = OpenOptions::new()
            .read(true)
            .write(true)
            .custom_flags(libc::O_CLOEXEC)
            .open(&node);
        let file = match opened {
            Ok(file) => file,
            Err(source) => {
                if created_node {
                    let _ = std::fs::remove_file(&node);
                }
                return Err(RaidError::Io {
                    action: "open",
                    path: node,
                    source,
                });
            }
        };
        Ok(MdArray {
            fd: OwnedFd::from(file),
            name: name.to_owned(),
            node,
            dev,
            created_node,
            system: system.clone(),
        })
    }

    /// SET_ARRAY_INFO → ADD_NEW_DISK per member → (raid0 over unequal members: cut every
    /// member to the common size) → RUN_ARRAY → check the size the kernel built.
    fn assemble(&self, spec: &ArraySpec) -> Result<()> {
        let description = self.describe();
        let members = i32::try_from(spec.members.len()).map_err(|_| RaidError::InvalidSpec {
            problem: format!("{} members are too many", spec.members.len()),
        })?;
        let chunk_size =
            i32::try_from(spec.kernel_chunk_bytes()).map_err(|_| RaidError::InvalidSpec {
                problem: format!("chunk {} does not fit the kernel's int", spec.chunk.human()),
            })?;
        let info = MduArrayInfo {
            level: spec.level.kernel_level(),
            // 0: take the size from the members (cut below for unequal raid0).
            size: 0,
            nr_disks: members,
            raid_disks: members,
            md_minor: i32::try_from(self.dev.minor).unwrap_or(0),
            not_persistent: 1,
            // Clean: no initial resync, so a raid1 or raid10 never copies one member over
            // another.
            state: 1 << MD_SB_CLEAN,
            active_disks: members,
            working_disks: members,
            layout: spec.kernel_layout(),
            chunk_size,
            ..MduArrayInfo::default()
        };
        ioctl::set_array_info(self.fd.as_fd(), &description, &info)?;
        for (slot, member) in (0..).zip(&spec.members) {
            let disk = MduDiskInfo {
                number: slot,
                major: to_c_int(member.dev.major),
                minor: to_c_int(member.dev.minor),
                raid_disk: slot,
                state: (1 << MD_DISK_SYNC) | (1 << MD_DISK_ACTIVE),
            };
            ioctl::add_new_disk(
                self.fd.as_fd(),
                &format!("{description} (member {})", member.path.display()),
                &disk,
            )?;
        }
        if spec.needs_truncation() {
            self.truncate_members(spec)?;
        }
        if let Err(error) = ioctl::run_array(self.fd.as_fd(), &description) {
            // md answers EINVAL when it cannot find (or auto-load) the personality.
            let personality = spec.level.name();
            if self
                .system
                .personalities()
                .is_ok_and(|loaded| !loaded.iter().any(|name| name == personality))
            {
                return Err(RaidError::MissingPersonality {
                    device: description,
                    level: personality,
                    module: personality,
                });
            }
            return Err(error);
        }
        let built = self.system.array_status(&self.name)?.size_bytes;
        let expected = spec.expected_size_bytes();
        if built != expected {
            return Err(RaidError::UnexpectedSize {
                device: description,
                built,
                expected,
            });
        }
        Ok(())
    }

    /// Cuts every member of a not-yet-running raid0 to the smallest member's size rounded
    /// down to the chunk, so the kernel builds one zone (see the crate docs): first the
    /// array's component size (it may only shrink), then each larger member's size. raid10
    /// sizes itself from the component size alone.
    fn truncate_members(&self, spec: &ArraySpec) -> Result<()> {
        let Some(used) = spec.used_bytes_per_member() else {
            return Ok(());
        };
        let used_kib = (used / 1024).to_string();
        let smallest = spec
            .members
            .iter()
            .map(|m| m.size_bytes / SECTOR_SIZE * SECTOR_SIZE)
            .min();
        let md_dir = self.system.sys.join("block").join(&self.name).join("md");
        if smallest.is_some_and(|smallest| smallest > used) {
            crate::sysfs::write_attribute(&md_dir.join("component_size"), &used_kib)?;
        }
        for member in spec.members.iter().filter(|_| spec.level == Level::Raid0) {
            if member.size_bytes / SECTOR_SIZE * SECTOR_SIZE > used {
                let member_name = self.system.device_name(member.dev)?;
                crate::sysfs::write_attribute(
                    &md_dir.join(format!("dev-{member_name}")).join("size"),
                    &used_kib,
                )?;
            }
        }
        Ok(())
    }

    fn describe(&self) -> String {
        self.node.display().to_string()
    }
}

/// Converts a device number part for `mdu_disk_info_t` (majors and minors are at most
/// 20 bits, so this never saturates for a real device).
fn to_c_int(value: u32) -> i32 {
    i32::try_from(value).unwrap_or(i32::MAX)
}

impl ArraySpec {
    /// Checks the members against the running system, as [`MdArray::build`] does before
    /// creating anything: each path is the block device and size given, is not a member
    /// of any md array, and has no holders (dm, md, bcache, …). Usable for a dry run.
    pub fn check_members(&self, system: &SystemRoot) -> Result<()> {
        check_members(system, self)
    }
}

/// Refuses members that are not what the spec says or that something else holds.
fn check_members(system: &SystemRoot, spec: &ArraySpec) -> Result<()> {
    for member in &spec.members {
        let metadata = std::fs::metadata(&member.path).map_err(|source| RaidError::Io {
            action: "stat",
            path: member.path.clone(),
            source,
        })?;
        if !metadata.file_type().is_block_device()
            || DevId::from_dev_t(metadata.rdev()) != member.dev
        {
            return Err(RaidError::InvalidSpec {
                problem: format!(
                    "{} is not block device {}; probe the member again",
                    member.path.display(),
                    member.dev
                ),
            });
        }
        let actual = system.device_size_bytes(member.dev)?;
        if actual != member.size_bytes {
            return Err(RaidError::InvalidSpec {
                problem: format!(
                    "{} has {actual} bytes, not the {} given; probe the member again",
                    member.path.display(),
                    member.size_bytes
                ),
            });
        }
        if let Some(array) = system.array_holding(member.dev)? {
            return Err(RaidError::MemberInArray {
                member: member.path.clone(),
                array,
            });
        }
        let holders = system.holders(member.dev)?;
        if let Some(array) = holders.iter().find(|holder| holder.starts_with("md")) {
            return Err(RaidError::MemberInArray {
                member: member.path.clone(),
                array: array.clone(),
            });
        }
        if !holders.is_empty() {
            return Err(RaidError::MemberHeld {
                member: member.path.clone(),
                holders: holders.join(", "),
            });
        }
    }
    Ok(())
}

/// Creates an empty md device through `md_mod`'s `new_array` parameter and returns its
/// kernel name: `md_<hint>` when the spec is named, else the first free `mdN` from 127
/// down (trying the next one if another process takes it first).
fn create_array(system: &SystemRoot, spec: &ArraySpec) -> Result<String> {
    let new_array = system.sys.join("module/md_mod/parameters/new_array");
    let write = |name: &str| std::fs::write(&new_array, name);
    let io_error = |source| RaidError::Io {
        action: "write",
        path: new_array.clone(),
        source,
    };
    if let Some(name) = spec.kernel_name_from_hint() {
        if system.sys.join("block").join(&name).exists() {
            return Err(RaidError::NameInUse { name });
        }
        return match write(&name) {
            Ok(()) => Ok(name),
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {
                Err(RaidError::NameInUse { name })
            }
            Err(source) => Err(io_error(source)),
        };
    }
    for minor in system.free_md_minors()? {
        let name = format!("md{minor}");
        match write(&name) {
            Ok(()) => return Ok(name),
            // Taken since we looked: try the next one.
            Err(error) if error.raw_os_error() == Some(libc::EEXIST) => {}
            Err(source) => return Err(io_error(source)),
        }
    }
    Err(RaidError::NoFreeMinor)
}

/// Makes sure `node` is block device `dev`; creates it (mode 0600) when absent. Returns
/// true if it was created here.
fn ensure_node(node: &Path, dev: DevId) -> Result<bool> {
    let conflict = || RaidError::NodeConflict {
        path: node.to_path_buf(),
        expected: dev.to_string(),
    };
    let is_expected = |metadata: &std::fs::Metadata| {
        metadata.file_type().is_block_device() && DevId::from_dev_t(metadata.rdev()) == dev
    };
    match std::fs::symlink_metadata(node) {
        Ok(metadata) if is_expected(&metadata) => return Ok(false),
        Ok(_) => return Err(conflict()),
        Err(error) if error.kind() == io::ErrorKind::NotFound => {}
        Err(source) => {
            return Err(RaidError::Io {
                action: "stat",
                path: node.to_path_buf(),
                source,
            })
        }
    }
    match ioctl::mknod_block(node, dev.major, dev.minor) {
        Ok(()) => Ok(true),
        // devtmpfs created it between the check and mknod.
        Err(RaidError::Io { source, .. }) if source.raw_os_error() == Some(libc::EEXIST) => {
            match std::fs::symlink_metadata(node) {
                Ok(metadata) if is_expected(&metadata) => Ok(false),
                _ => Err(conflict()),
            }
        }
        Err(error) => Err(error),
    }
}
