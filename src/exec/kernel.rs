//! The kernel operations that build, look at and take down a volume's stack — creating,
//! loading, resuming, listing and removing device-mapper devices, loading keys, key wiping,
//! assembling and stopping md arrays, mounting, bind-mounting and unmounting, opening a device for the
//! verification reads — behind one trait, [`StackKernel`] (cloud-hypervisor's `Hypervisor`
//! trait is the model). The executor, its undo steps, `status`, `close`, `shred` and
//! teardown use nothing else of the kernel (what they read of sysfs and procfs goes through
//! a [`SystemRoot`]), so host tests run them against a fake kernel over a fake tree and see
//! what would be built and removed, in which order.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;
use nix::mount::{umount2, MntFlags};
use tosskey_dm::{
    CryptTable, DevId, DeviceInfo, DmControl, DmName, DmUuid, KeyLoaded, KeyLoading, TableEntry,
    TargetLine,
};
use tosskey_raid::{ArraySpec, MdArray};

use crate::error::Result;
use crate::host::sysfs::SystemRoot;

/// An md array the kernel assembled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AssembledArray {
    pub dev: DevId,
    /// The size md gave it (the executor checks it against the plan's).
    pub size_bytes: u64,
}

/// What the executor (building, and undoing on failure), `status`, `close`, `shred` and
/// teardown ask of the kernel. Key bytes cross it only in [`StackKernel::load_crypt`], as
/// slices of the caller's locked key arena; nothing it logs or prints shows them.
pub trait StackKernel {
    /// DM_DEV_CREATE: an empty dm device `name` tagged `uuid`.
    fn create_dm(&self, name: &DmName, uuid: &DmUuid) -> Result<()>;
    /// DM_TABLE_LOAD of key-less `lines` (striped, linear) into `name`'s inactive slot.
    fn load_dm(&self, name: &DmName, lines: &[TargetLine]) -> Result<()>;
    /// DM_TABLE_LOAD of `table` into `name`'s inactive slot, segment `i` keyed with
    /// `keys[i]`, the keys reaching dm-crypt as `loading` says (keyring `logon` keys, or hex
    /// in a `DM_SECURE_DATA_FLAG` ioctl buffer that is wiped).
    fn load_crypt(
        &self,
        name: &DmName,
        table: &CryptTable,
        keys: &[&[u8]],
        loading: KeyLoading,
    ) -> Result<KeyLoaded>;
    /// DM_DEV_SUSPEND without the suspend flag: the inactive table goes live. Returns the
    /// device's number.
    fn resume_dm(&self, name: &DmName) -> Result<DevId>;
    /// Assemble the non-persistent md array `spec` (stopped again if it cannot start).
    fn assemble_md(&self, spec: &ArraySpec) -> Result<AssembledArray>;
    /// Open the block device `path` for the verification reads (O_DIRECT, read-only).
    fn open_direct(&self, path: &Path) -> Result<File>;
    /// DM_DEV_STATUS of every device-mapper device, in list order.
    fn dm_devices(&self) -> Result<Vec<DeviceInfo>>;
    /// The live table of `name`, hex keys elided.
    fn dm_table(&self, name: &DmName) -> Result<Vec<TableEntry>>;
    fn remove_dm(&self, name: &DmName) -> Result<()>;
    /// Suspend `name`, tell each of its crypt targets to `key wipe`, replace its `table` by
    /// `error` targets of the same extents and resume: from then on the data is
    /// unrecoverable and every I/O fails instead of hanging on a suspended device. Returns
    /// how many keys were wiped.
    fn shred_dm(&self, name: &DmName, table: &[TableEntry]) -> Result<usize>;
    /// Stop md array `name` (kernel name).
    fn stop_md(&self, name: &str) -> Result<()>;
    /// Unmount the topmost mount at `dir`.
    fn unmount(&self, dir: &Path) -> Result<()>;
    /// Mount the volume `node` (ext4) at `dir` (`read_only`: `recover --read-only`).
    fn mount(&self, node: &Path, dir: &Path, read_only: bool) -> Result<()>;
    /// Bind-mount the directory `source` (on the mounted volume) over `dir`.
    fn bind(&self, source: &Path, dir: &Path) -> Result<()>;
    /// Detach the topmost mount at `dir` lazily (it completes when the last user lets go); best
    /// effort, for a volume whose keys are already gone.
    fn detach(&self, dir: &Path);
}

/// The running kernel, through `/dev/mapper/control` and md's ioctls.
#[derive(Debug)]
pub struct HostKernel {
    root: SystemRoot,
    dm: DmControl,
}

impl HostKernel {
    pub fn open(root: &SystemRoot) -> Result<Self> {
        Ok(HostKernel {
            root: root.clone(),
            dm: DmControl::open()?,
        })
    }

    /// Load every dm table read-only (`DM_READONLY_FLAG`): `recover --read-only` writes
    /// nothing through the mappings it builds.
    pub fn with_read_only_tables(mut self) -> Self {
        self.dm.set_read_only_tables(true);
        self
    }
}

impl StackKernel for HostKernel {
    fn create_dm(&self, name: &DmName, uuid: &DmUuid) -> Result<()> {
        self.dm.create(name, uuid)?;
        Ok(())
    }

    fn load_dm(&self, name: &DmName, lines: &[TargetLine]) -> Result<()> {
        Ok(self.dm.load_table(name, lines)?)
    }

    fn load_crypt(
        &self,
        name: &DmName,
        table: &CryptTable,
        keys: &[&[u8]],
        loading: KeyLoading,
    ) -> Result<KeyLoaded> {
        Ok(tosskey_dm::load_crypt_segments(
            &self.dm, name, table, keys, loading,
        )?)
    }

    fn resume_dm(&self, name: &DmName) -> Result<DevId> {
        Ok(self.dm.resume(name)?)
    }

    fn assemble_md(&self, spec: &ArraySpec) -> Result<AssembledArray> {
        let array = MdArray::build_in(&self.root, spec)?;
        Ok(AssembledArray {
            dev: array.dev(),
            size_bytes: array.info()?.size_bytes,
        })
    }

    fn open_direct(&self, path: &Path) -> Result<File> {
        Ok(OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_DIRECT)
            .open(path)
            .with_context(|| format!("opening {} with O_DIRECT", path.display()))?)
    }

    fn dm_devices(&self) -> Result<Vec<DeviceInfo>> {
        let mut devices = Vec::new();
        for (name, _) in self.dm.list()? {
            match self.dm.info(&name) {
                Ok(info) => devices.push(info),
                // Removed between the list and the query.
                Err(err) if err.errno() == Some(libc::ENXIO) => {}
                Err(err) => return Err(err.into()),
            }
        }
        Ok(devices)
    }

    fn dm_table(&self, name: &DmName) -> Result<Vec<TableEntry>> {
        Ok(self.dm.table(name)?)
    }

    fn remove_dm(&self, name: &DmName) -> Result<()> {
        Ok(self
            .dm
            .remove(name)
            .with_context(|| format!("removing dm mapping {name}"))?)
    }

    fn shred_dm(&self, name: &DmName, table: &[TableEntry]) -> Result<usize> {
        self.dm.suspend(name)?;
        // Every segment's target holds its own key: one `key wipe` each.
        let keys = tosskey_dm::wipe_crypt_keys(&self.dm, name)?;
        let errors = table
            .iter()
            .map(|t| tosskey_dm::ErrorParams::line(t.start, t.length))
            .collect::<Result<Vec<_>, _>>()?;
        self.dm.load_table(name, &errors)?;
        self.dm.resume(name)?;
        Ok(keys)
    }

    fn stop_md(&self, name: &str) -> Result<()> {
        Ok(MdArray::open_existing_in(&self.root, name)?
            .stop()
            .with_context(|| format!("stopping md array {name}"))?)
    }

    fn unmount(&self, dir: &Path) -> Result<()> {
        Ok(crate::exec::mount::unmount(dir)?)
    }

    fn mount(&self, node: &Path, dir: &Path, read_only: bool) -> Result<()> {
        Ok(crate::exec::mount::mount_volume(node, dir, read_only)?)
    }

    fn bind(&self, source: &Path, dir: &Path) -> Result<()> {
        Ok(crate::exec::mount::bind_mount(source, dir)?)
    }

    fn detach(&self, dir: &Path) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
pub mod fake;
