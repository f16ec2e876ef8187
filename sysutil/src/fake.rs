//! A fake `/sys`, `/proc` and `/dev` in a temporary directory, laid out like the kernel's,
//! for host tests of everything that reads them through a [`SystemRoot`] (feature `fake`):
//! `sys/class/block/<dev>/` with `dev`, `size`, `ro`, `queue/…`, `holders/`, `slaves/`,
//! plus the `sys/block/<disk>` and `sys/dev/block/MAJ:MIN` links; partitions as
//! `sys/class/block/<disk>/<part>/` (with a `partition` file) and a `sys/class/block/<part>`
//! link; dm devices with `dm/name` and `dm/uuid`; md arrays with `md/level`,
//! `md/array_state`, `md/metadata_version` and a `md/dev-<member>/` per member;
//! `proc/self/mountinfo`, `proc/swaps` and `dev/disk/by-id` links.

use std::fs;
use std::os::unix::fs::symlink;
use std::path::{Path, PathBuf};

use crate::SystemRoot;

#[derive(Debug)]
pub struct FakeTree {
    dir: tempfile::TempDir,
    pub root: SystemRoot,
    mountinfo: Vec<String>,
    swaps: Vec<String>,
}

impl Default for FakeTree {
    fn default() -> Self {
        Self::new()
    }
}

impl FakeTree {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().expect("tempdir");
        let root = SystemRoot::under(dir.path());
        fs::create_dir_all(root.sys.join("class/block")).unwrap();
        fs::create_dir_all(root.proc.join("self")).unwrap();
        fs::create_dir_all(root.dev.join("disk/by-id")).unwrap();
        let mut tree = FakeTree {
            dir,
            root,
            mountinfo: Vec::new(),
            swaps: Vec::new(),
        };
        tree.mount_raw("0:21", "/proc", "proc", "proc");
        tree.mount_raw("0:22", "/sys", "sysfs", "sysfs");
        tree.flush();
        tree
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    fn class(&self) -> PathBuf {
        self.root.sys.join("class/block")
    }

    fn write(path: &Path, value: &str) {
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(path, format!("{value}\n")).unwrap();
    }

    fn device_dir(&self, dir: &Path, dev: (u32, u32), size_bytes: u64) {
        fs::create_dir_all(dir.join("holders")).unwrap();
        fs::create_dir_all(dir.join("slaves")).unwrap();
        Self::write(&dir.join("dev"), &format!("{}:{}", dev.0, dev.1));
        Self::write(
            &dir.join("size"),
            &(size_bytes / crate::SECTOR_SIZE).to_string(),
        );
        Self::write(&dir.join("ro"), "0");
        let by_number = self.root.sys.join(format!("dev/block/{}:{}", dev.0, dev.1));
        fs::create_dir_all(by_number.parent().unwrap()).unwrap();
        symlink(dir, by_number).unwrap();
    }

    /// A whole disk with 512-byte logical and 4096-byte physical blocks.
    pub fn disk(&mut self, name: &str, dev: (u32, u32), size_bytes: u64) -> &mut Self {
        let dir = self.class().join(name);
        self.disk_at(&dir, dev, size_bytes)
    }

    /// A device with no hardware behind it (loop, ram, dm, md): its directory lives under
    /// `sys/devices/virtual/block`, `sys/class/block/<name>` links there.
    pub fn virtual_disk(&mut self, name: &str, dev: (u32, u32), size_bytes: u64) -> &mut Self {
        let dir = self.root.sys.join("devices/virtual/block").join(name);
        symlink(&dir, self.class().join(name)).unwrap();
        self.disk_at(&dir, dev, size_bytes)
    }

    fn disk_at(&mut self, dir: &Path, dev: (u32, u32), size_bytes: u64) -> &mut Self {
        self.device_dir(dir, dev, size_bytes);
        let name = dir.file_name().unwrap();
        fs::create_dir_all(self.root.sys.join("block")).unwrap();
        if !self.root.sys.join("block").join(name).exists() {
            symlink(dir, self.root.sys.join("block").join(name)).unwrap();
        }
        Self::write(&dir.join("removable"), "0");
        Self::write(&dir.join("queue/logical_block_size"), "512");
        Self::write(&dir.join("queue/physical_block_size"), "4096");
        Self::write(&dir.join("queue/rotational"), "0");
        self
    }

    /// An NVMe namespace whose controller reports `model` and `serial` (padded with
    /// spaces as the NVMe identify data is).
    pub fn nvme(
        &mut self,
        name: &str,
        minor: u32,
        size_bytes: u64,
        model: &str,
        serial: &str,
    ) -> &mut Self {
        self.disk(name, (259, minor), size_bytes);
        self.attr(name, "device/model", &format!("{model:<40}"));
        self.attr(name, "device/serial", &format!("{serial:<20}"));
        self.attr(name, "wwid", &format!("nvme.1d0f-{serial}"));
        self
    }

    /// A SCSI disk (major 8) with `device/vendor` and `device/model`, space-padded.
    pub fn scsi(
        &mut self,
        name: &str,
        minor: u32,
        size_bytes: u64,
        vendor: &str,
        model: &str,
    ) -> &mut Self {
        self.disk(name, (8, minor), size_bytes);
        self.attr(name, "device/vendor", &format!("{vendor:<8}"));
        self.attr(name, "device/model", &format!("{model:<16}"));
        self
    }

    /// A virtio disk (major 252) with the `serial` attribute virtio_blk exposes.
    pub fn virtio(&mut self, name: &str, minor: u32, size_bytes: u64, serial: &str) -> &mut Self {
        self.disk(name, (252, minor), size_bytes);
        self.attr(name, "serial", serial);
        self
    }

    /// Write `sys/class/block/<name>/<rel>`.
    pub fn attr(&mut self, name: &str, rel: &str, value: &str) -> &mut Self {
        Self::write(&self.class().join(name).join(rel), value);
        self
    }

    pub fn partition(
        &mut self,
        disk: &str,
        part: &str,
        dev: (u32, u32),
        size_bytes: u64,
    ) -> &mut Self {
        let dir = self.class().join(disk).join(part);
        self.device_dir(&dir, dev, size_bytes);
        Self::write(&dir.join("partition"), "1");
        symlink(format!("{disk}/{part}"), self.class().join(part)).unwrap();
        self
    }

    /// A device-mapper device built on `slaves` (each gets it as a holder).
    pub fn dm(
        &mut self,
        name: &str,
        minor: u32,
        dm_name: &str,
        uuid: &str,
        slaves: &[&str],
        size_bytes: u64,
    ) -> &mut Self {
        self.virtual_disk(name, (253, minor), size_bytes);
        self.attr(name, "dm/name", dm_name);
        self.attr(name, "dm/uuid", uuid);
        self.stack(name, slaves)
    }

    /// An md array built on `slaves`.
    pub fn md(&mut self, name: &str, minor: u32, slaves: &[&str], size_bytes: u64) -> &mut Self {
        self.virtual_disk(name, (9, minor), size_bytes);
        self.stack(name, slaves)
    }

    /// A running, non-persistent md array of `level` over `members` (name, slot), as md
    /// shows it in `md/`.
    pub fn md_array(
        &mut self,
        name: &str,
        minor: u32,
        level: &str,
        members: &[(&str, u32)],
        size_bytes: u64,
    ) -> &mut Self {
        let slaves: Vec<&str> = members.iter().map(|(member, _)| *member).collect();
        self.md(name, minor, &slaves, size_bytes);
        self.attr(name, "md/level", level);
        self.attr(name, "md/array_state", "clean");
        self.attr(name, "md/metadata_version", "none");
        let class = self.class();
        for (member, slot) in members {
            let dir = format!("md/dev-{member}");
            self.attr(name, &format!("{dir}/slot"), &slot.to_string());
            self.attr(name, &format!("{dir}/state"), "in_sync");
            symlink(
                fs::canonicalize(class.join(member)).unwrap(),
                class.join(name).join(dir).join("block"),
            )
            .unwrap();
        }
        self
    }

    /// Write `<root>/<relative>` (any file: `proc/mdstat`, `sys/block/dm-0/dm/uuid`).
    pub fn file(&mut self, relative: &str, value: &str) -> &mut Self {
        Self::write(&self.dir.path().join(relative), value);
        self
    }

    fn stack(&mut self, holder: &str, slaves: &[&str]) -> &mut Self {
        let class = self.class();
        for slave in slaves {
            let slave_dir = fs::canonicalize(class.join(slave)).unwrap();
            symlink(
                format!("../../{holder}"),
                slave_dir.join("holders").join(holder),
            )
            .unwrap();
            symlink(
                format!("../../{slave}"),
                class.join(holder).join("slaves").join(slave),
            )
            .unwrap();
        }
        self
    }

    fn mount_raw(&mut self, dev: &str, mount_point: &str, fs_type: &str, source: &str) {
        let id = 20 + self.mountinfo.len();
        self.mountinfo.push(format!(
            "{id} 1 {dev} / {mount_point} rw,relatime shared:{id} - {fs_type} {source} rw"
        ));
    }

    /// Mount device `dev` (major, minor) at `mount_point`.
    pub fn mount(
        &mut self,
        dev: (u32, u32),
        mount_point: &str,
        fs_type: &str,
        source: &str,
    ) -> &mut Self {
        self.mount_raw(
            &format!("{}:{}", dev.0, dev.1),
            mount_point,
            fs_type,
            source,
        );
        self.flush();
        self
    }

    pub fn swap(&mut self, path: &str) -> &mut Self {
        self.swaps
            .push(format!("{path}\tpartition\t1048572\t0\t-2"));
        self.flush();
        self
    }

    /// `/dev/disk/by-id/<link>` -> `../../<target>`.
    pub fn by_id(&mut self, link: &str, target: &str) -> &mut Self {
        symlink(
            format!("../../{target}"),
            self.root.dev.join("disk/by-id").join(link),
        )
        .unwrap();
        self
    }

    fn flush(&mut self) {
        fs::write(
            self.root.proc.join("self/mountinfo"),
            self.mountinfo.join("\n") + "\n",
        )
        .unwrap();
        let mut swaps = vec!["Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority".to_owned()];
        swaps.extend(self.swaps.iter().cloned());
        fs::write(self.root.proc.join("swaps"), swaps.join("\n") + "\n").unwrap();
    }
}
