//! What the kernel says about block devices and their use, read from sysfs and procfs.
//!
//! Everything takes a [`SystemRoot`] so tests run against fake trees: `sys/class/block/*`
//! (dev, size, ro, removable, queue/*, holders/, slaves/, partition, device/model …),
//! `proc/self/mountinfo`, `proc/swaps` and `dev/disk/by-id`. No ioctl is needed: sizes come
//! from `size` (always in 512-byte units) and `queue/*_block_size`.

use std::collections::BTreeSet;
use std::fmt;
use std::fs;
use std::io;
use std::os::unix::fs::FileTypeExt;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use tosskey_sysutil::unescape_octal;
pub use tosskey_sysutil::{parse_mountinfo, DevId, MountEntry, SystemRoot};

fn class_block(root: &SystemRoot) -> PathBuf {
    root.sys.join("class/block")
}

/// Another block device stacked on this one (from `holders/`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Holder {
    /// Kernel name: `dm-3`, `md127`.
    pub name: String,
    /// Device-mapper name (`dm/name`), when the holder is a dm device.
    pub dm_name: Option<String>,
    /// Device-mapper UUID (`dm/uuid`): its prefix tells the manager (`CRYPT-`, `LVM-`, `TOSSKEY-`).
    pub dm_uuid: Option<String>,
}

/// Who manages a holder, as far as its name and dm UUID tell.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub enum HolderKind {
    /// A tosskey mapping (dm UUID prefix `TOSSKEY-`).
    Tosskey,
    /// An md array (`md*`).
    Md,
    /// LVM (`LVM-`).
    Lvm,
    /// cryptsetup (`CRYPT-`).
    Cryptsetup,
    /// Any other device-mapper device.
    OtherDm,
    /// bcache, drbd, …
    Other,
}

impl Holder {
    pub fn kind(&self) -> HolderKind {
        let uuid = self.dm_uuid.as_deref().unwrap_or("");
        if self.name.starts_with("md") {
            HolderKind::Md
        } else if crate::names::is_tosskey_uuid(uuid) {
            HolderKind::Tosskey
        } else if uuid.starts_with("LVM-") {
            HolderKind::Lvm
        } else if uuid.starts_with("CRYPT-") {
            HolderKind::Cryptsetup
        } else if self.name.starts_with("dm-") {
            HolderKind::OtherDm
        } else {
            HolderKind::Other
        }
    }
}

impl fmt::Display for Holder {
    /// `dm-3 (tosskey-x)` or `md127`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.dm_name {
            Some(dm_name) => write!(f, "{} ({dm_name})", self.name),
            None => f.write_str(&self.name),
        }
    }
}

/// One entry of `/sys/class/block`: a whole disk, a partition, a dm or md device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BlockDevice {
    /// Kernel name (`nvme1n1`, `vdb`, `nvme0n1p2`, `dm-0`).
    pub name: String,
    pub dev: DevId,
    pub size_bytes: u64,
    pub logical_block_size: u32,
    pub physical_block_size: u32,
    pub removable: bool,
    pub rotational: bool,
    pub read_only: bool,
    /// `hidden`: a per-path NVMe multipath device (`nvme0c0n1`) with no /dev node.
    pub hidden: bool,
    /// Lives under `/sys/devices/virtual/block`: loop, ram (brd), zram, dm, md, nbd — no
    /// hardware behind it.
    pub is_virtual: bool,
    /// `device/model` (SCSI, NVMe controller); trimmed.
    pub model: Option<String>,
    /// `device/vendor` (SCSI).
    pub vendor: Option<String>,
    /// `serial` (virtio), `device/serial` (NVMe controller) or `device/vpd_pg80` (SCSI).
    pub serial: Option<String>,
    /// `wwid` (NVMe namespace) or `device/wwid` (SCSI).
    pub wwid: Option<String>,
    /// For a partition: the disk it belongs to.
    pub parent: Option<String>,
    /// For a disk: its partitions' kernel names.
    pub partitions: Vec<String>,
    pub holders: Vec<Holder>,
    /// Devices this one is built on (`slaves/`): members of a dm or md device.
    pub slaves: Vec<String>,
    /// Names of `/dev/disk/by-id` links that point here (none without udev).
    pub by_id: Vec<String>,
}

impl BlockDevice {
    pub fn is_partition(&self) -> bool {
        self.parent.is_some()
    }
}

/// An entry of `/proc/swaps`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SwapEntry {
    pub path: String,
    /// `partition` or `file`.
    pub kind: String,
}

/// A consistent snapshot of block devices and their use.
#[derive(Debug, Clone)]
pub struct SystemState {
    pub root: SystemRoot,
    pub devices: Vec<BlockDevice>,
    pub mounts: Vec<MountEntry>,
    pub swaps: Vec<SwapEntry>,
}

/// Mount points whose backing disks are the system's: never a member, never discovered.
const SYSTEM_MOUNT_POINTS: [&str; 5] = ["/", "/boot", "/boot/efi", "/efi", "/usr"];

impl SystemState {
    /// Read sysfs, mountinfo and swaps under `root`. A missing `proc/swaps` (no swap
    /// support) counts as no swap; a missing `sys/class/block` or mountinfo is an error.
    pub fn read(root: &SystemRoot) -> io::Result<Self> {
        let devices = read_block_devices(root)?;
        let mounts = parse_mountinfo(&fs::read_to_string(root.proc.join("self/mountinfo"))?);
        let swaps = match fs::read_to_string(root.proc.join("swaps")) {
            Ok(text) => parse_swaps(&text),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Vec::new(),
            Err(e) => return Err(e),
        };
        Ok(SystemState {
            root: root.clone(),
            devices,
            mounts,
            swaps,
        })
    }

    /// No devices, mounts or swaps: for checks that involve no block device.
    pub fn empty(root: &SystemRoot) -> Self {
        SystemState {
            root: root.clone(),
            devices: Vec::new(),
            mounts: Vec::new(),
            swaps: Vec::new(),
        }
    }

    pub fn by_name(&self, name: &str) -> Option<&BlockDevice> {
        self.devices.iter().find(|d| d.name == name)
    }

    pub fn by_dev(&self, dev: DevId) -> Option<&BlockDevice> {
        self.devices.iter().find(|d| d.dev == dev)
    }

    /// The device a `/dev/...` path names: by the node's device number when it is a real
    /// node, else by following a symlink (`/dev/disk/by-id/x`, `/dev/mapper/x` with udev)
    /// or by its name (`/dev/mapper/<dm name>`, `/dev/<kernel name>`).
    pub fn resolve_dev_path(&self, path: &str) -> Option<&BlockDevice> {
        let rel = path.strip_prefix("/dev/")?;
        let node = self.root.dev.join(rel);
        if let Ok(meta) = fs::metadata(&node) {
            if meta.file_type().is_block_device() {
                if let Some(found) = self.by_dev(DevId::from_dev_t(meta.rdev())) {
                    return Some(found);
                }
            }
        }
        if let Ok(target) = fs::read_link(&node) {
            if let Some(found) = target
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| self.by_name(n))
            {
                return Some(found);
            }
        }
        if let Some(dm_name) = rel.strip_prefix("mapper/") {
            return self.devices.iter().find(|d| {
                d.name.starts_with("dm-") && self.dm_name_of(&d.name).as_deref() == Some(dm_name)
            });
        }
        self.by_name(rel.rsplit('/').next()?)
    }

    fn dm_name_of(&self, name: &str) -> Option<String> {
        read_trimmed(&class_block(&self.root).join(name).join("dm/name"))
    }

    /// The device a mount entry lives on: by its device number, or for anonymous device
    /// numbers (btrfs reports `0:N`) by its source path.
    pub fn mount_device(&self, mount: &MountEntry) -> Option<&BlockDevice> {
        if mount.dev.major != 0 {
            if let Some(found) = self.by_dev(mount.dev) {
                return Some(found);
            }
        }
        self.resolve_dev_path(&mount.source)
    }

    /// Mount points of `name` itself.
    pub fn mount_points(&self, name: &str) -> Vec<&str> {
        self.mounts
            .iter()
            .filter(|m| self.mount_device(m).is_some_and(|d| d.name == name))
            .map(|m| m.mount_point.as_str())
            .collect()
    }

    /// Whether `name` is an active swap partition.
    pub fn is_swap(&self, name: &str) -> bool {
        self.swaps.iter().any(|s| {
            s.kind == "partition"
                && self
                    .resolve_dev_path(&s.path)
                    .is_some_and(|d| d.name == name)
        })
    }

    /// The whole disks below `name`: itself if it is a disk, its parent if a partition, and
    /// for dm/md devices every disk reached through `slaves/`.
    pub fn physical_disks(&self, name: &str) -> BTreeSet<String> {
        let mut disks = BTreeSet::new();
        let mut seen = BTreeSet::new();
        self.collect_physical(name, &mut disks, &mut seen);
        disks
    }

    fn collect_physical(
        &self,
        name: &str,
        disks: &mut BTreeSet<String>,
        seen: &mut BTreeSet<String>,
    ) {
        if !seen.insert(name.to_owned()) {
            return;
        }
        let Some(device) = self.by_name(name) else {
            return;
        };
        if let Some(parent) = &device.parent {
            self.collect_physical(parent, disks, seen);
        } else if device.slaves.is_empty() {
            disks.insert(device.name.clone());
        } else {
            for slave in &device.slaves {
                self.collect_physical(slave, disks, seen);
            }
        }
    }

    /// Disks holding `/`, `/boot` (and `/boot/efi`, `/efi`, `/usr`), through any dm/md stack,
    /// with the mount point that made each one a system disk.
    pub fn system_disks(&self) -> Vec<(String, String)> {
        let mut found: Vec<(String, String)> = Vec::new();
        for mount in &self.mounts {
            if !SYSTEM_MOUNT_POINTS.contains(&mount.mount_point.as_str()) {
                continue;
            }
            if let Some(device) = self.mount_device(mount) {
                for disk in self.physical_disks(&device.name) {
                    if !found.iter().any(|(d, _)| *d == disk) {
                        found.push((disk, mount.mount_point.clone()));
                    }
                }
            }
        }
        found
    }
}

/// An optional attribute: absent, unreadable or empty are all "not known".
fn read_trimmed(path: &Path) -> Option<String> {
    tosskey_sysutil::read_attr(path)
        .ok()
        .filter(|text| !text.is_empty())
}

fn read_u64(path: &Path) -> Option<u64> {
    tosskey_sysutil::read_attr_u64(path).ok()
}

fn read_flag(path: &Path) -> bool {
    read_trimmed(path).as_deref() == Some("1")
}

fn dir_names(path: &Path) -> Vec<String> {
    let Ok(entries) = fs::read_dir(path) else {
        return Vec::new();
    };
    let mut names: Vec<String> = entries
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .collect();
    names.sort_by(|a, b| natural_cmp(a, b));
    names
}

/// SCSI unit serial number page 0x80: 4-byte header, then the ASCII serial.
fn vpd_pg80_serial(path: &Path) -> Option<String> {
    let raw = fs::read(path).ok()?;
    let len = usize::from(*raw.get(3)?);
    let serial = String::from_utf8_lossy(raw.get(4..4 + len)?)
        .trim()
        .to_owned();
    (!serial.is_empty()).then_some(serial)
}

/// Where a `class/block` entry lives under `/sys/devices`, from one `readlink`: a
/// partition's directory sits inside its disk's (`.../block/vda/vda1`), and devices with no
/// hardware behind them live under `/sys/devices/virtual/`. An entry that is a directory
/// rather than a link (`CONFIG_SYSFS_DEPRECATED` kernels, fake trees) is its own place.
#[derive(Debug)]
struct ClassEntry {
    name: String,
    place: PathBuf,
}

impl ClassEntry {
    /// The name of the directory this entry's directory sits in.
    fn container(&self) -> Option<&str> {
        self.place.parent()?.file_name()?.to_str()
    }

    fn is_under_virtual(&self) -> bool {
        self.place.to_string_lossy().contains("/devices/virtual/")
    }
}

fn read_block_devices(root: &SystemRoot) -> io::Result<Vec<BlockDevice>> {
    let class = class_block(root);
    let by_id = read_by_id(root);
    let entries = read_class_entries(&class)?;
    let parents = parents_of(&entries);
    let mut devices: Vec<BlockDevice> = (0..entries.len())
        .filter_map(|index| read_block_device(&class, &entries, &parents, index, &by_id))
        .collect();
    devices.sort_by(|a, b| natural_cmp(&a.name, &b.name));
    Ok(devices)
}

/// Every entry of `class/block`, with where it lives under `/sys/devices`.
fn read_class_entries(class: &Path) -> io::Result<Vec<ClassEntry>> {
    let mut entries = Vec::new();
    for entry in fs::read_dir(class)? {
        let entry = entry?;
        let Ok(name) = entry.file_name().into_string() else {
            continue;
        };
        let place = fs::read_link(entry.path()).unwrap_or_else(|_| entry.path());
        entries.push(ClassEntry { name, place });
    }
    Ok(entries)
}

/// For each entry, the index of the disk it is a partition of. A disk is never inside
/// another block device, a partition always is inside its disk: the relation comes from
/// the directory structure, with no probe per child.
fn parents_of(entries: &[ClassEntry]) -> Vec<Option<usize>> {
    let parent_of = |entry: &ClassEntry| -> Option<usize> {
        let container = entry.container()?;
        entries
            .iter()
            .position(|other| other.name == container && other.name != entry.name)
    };
    entries.iter().map(parent_of).collect()
}

/// `entries[index]` as a [`BlockDevice`]; `None` when it has no readable `dev`.
fn read_block_device(
    class: &Path,
    entries: &[ClassEntry],
    parents: &[Option<usize>],
    index: usize,
    by_id: &[(String, String)],
) -> Option<BlockDevice> {
    let entry = &entries[index];
    let name = &entry.name;
    let dir = class.join(name);
    let dev = read_trimmed(&dir.join("dev")).and_then(|s| s.parse().ok())?;
    let parent = parents[index].map(|p| &entries[p]);
    let mut partitions: Vec<String> = entries
        .iter()
        .zip(parents)
        .filter(|(_, parent)| **parent == Some(index))
        .map(|(child, _)| child.name.clone())
        .collect();
    partitions.sort_by(|a, b| natural_cmp(a, b));
    // A partition's queue/, device/ and place in /sys/devices are its disk's.
    let disk_dir = match parent {
        Some(p) => class.join(&p.name),
        None => dir.clone(),
    };
    let is_virtual = parent.unwrap_or(entry).is_under_virtual();
    let logical = read_u64(&disk_dir.join("queue/logical_block_size")).unwrap_or(512);
    let physical = read_u64(&disk_dir.join("queue/physical_block_size")).unwrap_or(logical);
    // loop, ram, dm, md and nbd devices have no model, serial or WWID to read.
    let identity = if is_virtual {
        HardwareIdentity::default()
    } else {
        HardwareIdentity::read(&disk_dir)
    };
    Some(BlockDevice {
        by_id: by_id
            .iter()
            .filter(|(_, target)| target == name)
            .map(|(link, _)| link.clone())
            .collect(),
        dev,
        size_bytes: read_u64(&dir.join("size")).unwrap_or(0).saturating_mul(512),
        logical_block_size: u32::try_from(logical).unwrap_or(512),
        physical_block_size: u32::try_from(physical).unwrap_or(512),
        removable: read_flag(&disk_dir.join("removable")),
        rotational: read_flag(&disk_dir.join("queue/rotational")),
        read_only: read_flag(&dir.join("ro")),
        hidden: read_flag(&dir.join("hidden")),
        is_virtual,
        model: identity.model,
        vendor: identity.vendor,
        serial: identity.serial,
        wwid: identity.wwid,
        parent: parent.map(|p| p.name.clone()),
        partitions,
        holders: read_holders(class, &dir),
        slaves: dir_names(&dir.join("slaves")),
        name: name.clone(),
    })
}

/// The devices built on the one at `dir` (`holders/`), with their dm name and UUID.
fn read_holders(class: &Path, dir: &Path) -> Vec<Holder> {
    dir_names(&dir.join("holders"))
        .into_iter()
        .map(|holder| {
            let holder_dir = class.join(&holder);
            Holder {
                dm_name: read_trimmed(&holder_dir.join("dm/name")),
                dm_uuid: read_trimmed(&holder_dir.join("dm/uuid")),
                name: holder,
            }
        })
        .collect()
}

/// What the hardware says it is, from a disk's sysfs directory.
#[derive(Debug, Default)]
struct HardwareIdentity {
    model: Option<String>,
    vendor: Option<String>,
    serial: Option<String>,
    wwid: Option<String>,
}

impl HardwareIdentity {
    fn read(disk_dir: &Path) -> Self {
        HardwareIdentity {
            model: read_trimmed(&disk_dir.join("device/model")),
            vendor: read_trimmed(&disk_dir.join("device/vendor")),
            serial: read_trimmed(&disk_dir.join("serial"))
                .or_else(|| read_trimmed(&disk_dir.join("device/serial")))
                .or_else(|| vpd_pg80_serial(&disk_dir.join("device/vpd_pg80"))),
            wwid: read_trimmed(&disk_dir.join("wwid"))
                .or_else(|| read_trimmed(&disk_dir.join("device/wwid"))),
        }
    }
}

/// `(link name, target kernel name)` for every `/dev/disk/by-id` symlink.
fn read_by_id(root: &SystemRoot) -> Vec<(String, String)> {
    let dir = root.dev.join("disk/by-id");
    dir_names(&dir)
        .into_iter()
        .filter_map(|link| {
            let target = fs::read_link(dir.join(&link)).ok()?;
            let name = target.file_name()?.to_str()?.to_owned();
            Some((link, name))
        })
        .collect()
}

/// Parse `/proc/swaps`: a header line, then `path type size used priority`.
pub fn parse_swaps(text: &str) -> Vec<SwapEntry> {
    text.lines()
        .skip(1)
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            Some(SwapEntry {
                path: unescape_octal(fields.next()?),
                kind: fields.next()?.to_owned(),
            })
        })
        .collect()
}

/// Natural order: digit runs compare as numbers, so `nvme2n1` < `nvme10n1`.
pub fn natural_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let (mut a, mut b) = (a.as_bytes(), b.as_bytes());
    loop {
        match (a.first(), b.first()) {
            (None, None) => return std::cmp::Ordering::Equal,
            (None, Some(_)) => return std::cmp::Ordering::Less,
            (Some(_), None) => return std::cmp::Ordering::Greater,
            (Some(x), Some(y)) if x.is_ascii_digit() && y.is_ascii_digit() => {
                let a_len = a.iter().take_while(|c| c.is_ascii_digit()).count();
                let b_len = b.iter().take_while(|c| c.is_ascii_digit()).count();
                let (a_num, b_num) = (&a[..a_len], &b[..b_len]);
                let a_trim = trim_leading_zeros(a_num);
                let b_trim = trim_leading_zeros(b_num);
                let order = a_trim
                    .len()
                    .cmp(&b_trim.len())
                    .then_with(|| a_trim.cmp(b_trim));
                if order.is_ne() {
                    return order;
                }
                a = &a[a_len..];
                b = &b[b_len..];
            }
            (Some(x), Some(y)) => {
                if x != y {
                    return x.cmp(y);
                }
                a = &a[1..];
                b = &b[1..];
            }
        }
    }
}

fn trim_leading_zeros(digits: &[u8]) -> &[u8] {
    let zeros = digits.iter().take_while(|&&c| c == b'0').count();
    &digits[zeros..]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn natural_order_compares_numbers() {
        let mut names = vec![
            "nvme10n1", "nvme2n1", "nvme1n1", "sda", "nvme1n10", "nvme1n2",
        ];
        names.sort_by(|a, b| natural_cmp(a, b));
        assert_eq!(
            names,
            ["nvme1n1", "nvme1n2", "nvme1n10", "nvme2n1", "nvme10n1", "sda"]
        );
    }

    #[test]
    fn mountinfo_fields_and_escapes() {
        let text = "\
22 27 0:21 / /proc rw,relatime - proc proc rw
36 1 259:2 / / rw,relatime shared:1 - ext4 /dev/nvme0n1p1 rw
40 36 259:5 / /mnt/my\\040data rw master:2 - xfs /dev/nvme1n1 rw
41 36 0:45 / /home rw - btrfs /dev/vdb rw
42 36 253:0 /bind/var/lib/my\\040dir /var/lib/my\\040dir rw - ext4 /dev/mapper/v rw
";
        let mounts = parse_mountinfo(text);
        assert_eq!(mounts.len(), 5);
        assert_eq!(mounts[1].root, "/");
        // A bind mount: the directory of the filesystem mounted there, unescaped.
        assert_eq!(mounts[4].root, "/bind/var/lib/my dir");
        assert_eq!(mounts[4].mount_point, "/var/lib/my dir");
        assert_eq!(
            mounts[1].dev,
            DevId {
                major: 259,
                minor: 2
            }
        );
        assert_eq!(mounts[1].mount_point, "/");
        assert_eq!(mounts[1].source, "/dev/nvme0n1p1");
        assert_eq!(mounts[2].mount_point, "/mnt/my data");
        assert_eq!(mounts[2].fs_type, "xfs");
        assert_eq!(mounts[2].options, "rw");
        assert_eq!(mounts[1].options, "rw,relatime");
        assert_eq!(mounts[3].dev.major, 0);
    }

    #[test]
    fn swaps_skip_header() {
        let text = "Filename\t\t\t\tType\t\tSize\t\tUsed\t\tPriority\n/dev/nvme2n1 partition 1048572 0 -2\n/swap\\040file file 1024 0 -3\n";
        let swaps = parse_swaps(text);
        assert_eq!(swaps.len(), 2);
        assert_eq!(swaps[0].path, "/dev/nvme2n1");
        assert_eq!(swaps[0].kind, "partition");
        assert_eq!(swaps[1].path, "/swap file");
    }

    /// The kernel's layout: `class/block/<name>` links into `/sys/devices`, where an NVMe
    /// namespace sits in its controller's directory (no `block/` glue) and a partition in
    /// its disk's; virtual devices under `devices/virtual/block`.
    #[test]
    fn partitions_and_virtual_devices_follow_the_sysfs_structure() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::under(dir.path());
        let devices = dir.path().join("sys/devices");
        let class = dir.path().join("sys/class/block");
        fs::create_dir_all(&class).unwrap();
        fs::create_dir_all(root.proc.join("self")).unwrap();
        fs::write(root.proc.join("self/mountinfo"), "").unwrap();
        let places = [
            (
                "nvme0n1",
                "pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1",
                "259:0",
            ),
            (
                "nvme0n1p2",
                "pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p2",
                "259:2",
            ),
            (
                "nvme0n1p10",
                "pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/nvme0n1p10",
                "259:3",
            ),
            ("vda", "pci0000:00/0000:00:05.0/virtio2/block/vda", "252:0"),
            ("loop0", "virtual/block/loop0", "7:0"),
            ("loop0p1", "virtual/block/loop0/loop0p1", "259:4"),
        ];
        for (name, place, dev) in places {
            let device_dir = devices.join(place);
            fs::create_dir_all(device_dir.join("holders")).unwrap();
            fs::write(device_dir.join("dev"), format!("{dev}\n")).unwrap();
            fs::write(device_dir.join("size"), "2048\n").unwrap();
            std::os::unix::fs::symlink(format!("../../devices/{place}"), class.join(name)).unwrap();
        }
        fs::write(
            devices.join("pci0000:00/0000:00:04.0/nvme/nvme0/nvme0n1/serial"),
            "S1\n",
        )
        .unwrap();
        fs::write(devices.join("virtual/block/loop0/serial"), "none\n").unwrap();
        let state = SystemState::read(&root).unwrap();
        let device = |name| state.by_name(name).unwrap();
        assert_eq!(device("nvme0n1").parent, None);
        assert_eq!(device("nvme0n1").partitions, ["nvme0n1p2", "nvme0n1p10"]);
        assert_eq!(device("nvme0n1").serial.as_deref(), Some("S1"));
        assert_eq!(device("nvme0n1p10").parent.as_deref(), Some("nvme0n1"));
        assert_eq!(device("nvme0n1p10").serial.as_deref(), Some("S1"));
        assert!(!device("nvme0n1p10").is_virtual);
        assert_eq!(device("vda").parent, None);
        assert!(device("vda").partitions.is_empty());
        assert!(!device("vda").is_virtual);
        assert!(device("loop0").is_virtual);
        assert_eq!(device("loop0").partitions, ["loop0p1"]);
        assert!(device("loop0p1").is_virtual);
        assert_eq!(device("loop0p1").parent.as_deref(), Some("loop0"));
        // Virtual devices have no hardware identity to read.
        assert_eq!(device("loop0").serial, None);
    }

    #[test]
    fn devnum_parses_and_prints() {
        let dev: DevId = "259:12\n".parse().unwrap();
        assert_eq!(
            dev,
            DevId {
                major: 259,
                minor: 12
            }
        );
        assert_eq!(dev.to_string(), "259:12");
        assert!("259".parse::<DevId>().is_err());
        // makedev(259, 12) on Linux/glibc.
        assert_eq!(DevId::from_dev_t((259 << 8) | 12), dev);
    }
}
