//! The kernel operations that look at and take down what tosskey built — device-mapper
//! devices and tables, removal and key wiping, stopping md arrays, unmounting — behind one
//! trait, [`StackKernel`]. `status`, `close`, `shred` and teardown use nothing else of the
//! kernel (what they read of sysfs and procfs goes through a [`SystemRoot`]), so host tests
//! run them against a fake kernel over a fake tree and see what would be removed, in which
//! order.

use std::path::Path;

use anyhow::Context as _;
use nix::mount::{umount2, MntFlags};
use tosskey_dm::{DeviceInfo, DmControl, DmName, TableEntry, TargetLine};
use tosskey_raid::MdArray;
use zeroize::Zeroizing;

use crate::error::Result;
use crate::host::sysfs::SystemRoot;

/// What `status`, `close`, `shred` and teardown ask of the kernel.
pub trait StackKernel {
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
    /// Mount the volume `node` (ext4) at `dir`, as provision does.
    fn mount(&self, node: &Path, dir: &Path) -> Result<()>;
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
}

impl StackKernel for HostKernel {
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
            .map(|t| {
                TargetLine::new(
                    t.start,
                    t.length,
                    "error",
                    Zeroizing::new(String::new()),
                    false,
                )
            })
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

    fn mount(&self, node: &Path, dir: &Path) -> Result<()> {
        Ok(crate::exec::mount::mount_volume(node, dir, false)?)
    }

    fn detach(&self, dir: &Path) {
        let _ = umount2(dir, MntFlags::MNT_DETACH);
    }
}

#[cfg(test)]
pub mod fake {
    //! A kernel that holds dm devices in memory and logs every change asked of it.

    use std::cell::RefCell;
    use std::path::Path;

    use tosskey_dm::{elide_params, CryptParams, DevId, DeviceInfo, DmName, Sectors, TableEntry};

    use super::StackKernel;
    use crate::error::Result;
    use crate::host::sysfs::{parse_mountinfo, SystemRoot};

    /// Mounting and unmounting edit the fake tree's mountinfo, stopping an array removes
    /// its `md/` and shredding replaces a table by `error` targets, as the kernel would.
    #[derive(Debug)]
    pub struct FakeKernel {
        root: SystemRoot,
        devices: RefCell<Vec<(DeviceInfo, Vec<TableEntry>)>>,
        /// Devices a user holds open: removing them fails (EBUSY).
        held: RefCell<Vec<String>>,
        log: RefCell<Vec<String>>,
    }

    impl FakeKernel {
        pub fn new(root: &SystemRoot) -> Self {
            FakeKernel {
                root: root.clone(),
                devices: RefCell::default(),
                held: RefCell::default(),
                log: RefCell::default(),
            }
        }

        /// Drop the topmost (last) mount at `dir`.
        fn drop_mount(&self, dir: &Path) {
            let path = self.root.proc.join("self/mountinfo");
            let text = std::fs::read_to_string(&path).unwrap_or_default();
            let mut lines: Vec<&str> = text.lines().collect();
            if let Some(top) = parse_mountinfo(&text)
                .iter()
                .zip(0..)
                .filter(|(m, _)| Path::new(&m.mount_point) == dir)
                .map(|(_, i)| i)
                .last()
            {
                lines.remove(top);
            }
            let kept: String = lines.iter().map(|line| format!("{line}\n")).collect();
            std::fs::write(path, kept).unwrap();
        }

        /// A process holds dm device `name` open: removing it fails.
        pub fn hold(&self, name: &str) -> &Self {
            self.held.borrow_mut().push(name.to_owned());
            self
        }

        /// A live dm device `name` (`dev`, `uuid`) with `table`'s lines
        /// (`<start> <length> <type> <params>`).
        pub fn dm(&self, name: &str, dev: (u32, u32), uuid: &str, table: &[&str]) -> &Self {
            let entries = table
                .iter()
                .map(|line| {
                    let mut words = line.splitn(4, ' ');
                    let mut number = || Sectors(words.next().unwrap().parse().unwrap());
                    let (start, length) = (number(), number());
                    let target_type = words.next().unwrap().to_owned();
                    let params = words.next().unwrap_or("");
                    TableEntry {
                        start,
                        length,
                        crypt: (target_type == "crypt")
                            .then(|| CryptParams::parse(params).unwrap()),
                        params: elide_params(&target_type, params),
                        target_type,
                    }
                })
                .collect();
            let info = DeviceInfo {
                name: DmName::new(name).unwrap(),
                uuid: (!uuid.is_empty()).then(|| uuid.to_owned()),
                dev: DevId::new(dev.0, dev.1),
                open_count: 0,
                target_count: u32::try_from(table.len()).unwrap(),
                event_nr: 0,
                suspended: false,
                read_only: false,
                live_table: true,
                inactive_table: false,
            };
            self.devices.borrow_mut().push((info, entries));
            self
        }

        /// Every change asked of the kernel so far, in order (`remove v`, `stop md_tk_v`,
        /// `unmount /mnt/v`, `shred v`, `detach /mnt/v`).
        pub fn log(&self) -> Vec<String> {
            self.log.borrow().clone()
        }

        fn note(&self, what: String) {
            self.log.borrow_mut().push(what);
        }
    }

    impl StackKernel for FakeKernel {
        fn dm_devices(&self) -> Result<Vec<DeviceInfo>> {
            Ok(self
                .devices
                .borrow()
                .iter()
                .map(|(i, _)| i.clone())
                .collect())
        }

        fn dm_table(&self, name: &DmName) -> Result<Vec<TableEntry>> {
            Ok(self
                .devices
                .borrow()
                .iter()
                .find(|(i, _)| &i.name == name)
                .map(|(_, t)| t.clone())
                .expect("the fake knows the device"))
        }

        fn remove_dm(&self, name: &DmName) -> Result<()> {
            if self.held.borrow().iter().any(|h| h == name.as_str()) {
                return Err(anyhow::anyhow!(
                    "removing dm mapping {name}: Device or resource busy (os error 16)"
                )
                .into());
            }
            self.devices.borrow_mut().retain(|(i, _)| &i.name != name);
            self.note(format!("remove {name}"));
            Ok(())
        }

        fn shred_dm(&self, name: &DmName, table: &[TableEntry]) -> Result<usize> {
            self.note(format!("shred {name}"));
            if let Some((_, live)) = self
                .devices
                .borrow_mut()
                .iter_mut()
                .find(|(i, _)| &i.name == name)
            {
                for entry in live.iter_mut() {
                    entry.target_type = "error".to_owned();
                    entry.params = String::new();
                    entry.crypt = None;
                }
            }
            Ok(table.iter().filter(|t| t.crypt.is_some()).count())
        }

        fn stop_md(&self, name: &str) -> Result<()> {
            let _ = std::fs::remove_dir_all(self.root.block(name).join("md"));
            self.note(format!("stop {name}"));
            Ok(())
        }

        fn unmount(&self, dir: &Path) -> Result<()> {
            self.drop_mount(dir);
            self.note(format!("unmount {}", dir.display()));
            Ok(())
        }

        fn mount(&self, node: &Path, dir: &Path) -> Result<()> {
            let dev = self
                .devices
                .borrow()
                .iter()
                .find(|(i, _)| tosskey_dm::DmControl::node_path(&i.name) == node)
                .map(|(i, _)| i.dev)
                .expect("the fake mounts its own devices");
            let path = self.root.proc.join("self/mountinfo");
            let mut text = std::fs::read_to_string(&path).unwrap_or_default();
            text.push_str(&format!(
                "99 1 {dev} / {} rw,nosuid,nodev,noatime - ext4 {} rw\n",
                dir.display(),
                node.display()
            ));
            std::fs::write(path, text).unwrap();
            self.note(format!("mount {} {}", node.display(), dir.display()));
            Ok(())
        }

        fn detach(&self, dir: &Path) {
            self.drop_mount(dir);
            self.note(format!("detach {}", dir.display()));
        }
    }
}
