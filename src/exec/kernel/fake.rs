//! A kernel that holds dm devices, md arrays and mounts in memory, keeps its block
//! devices as sparse files under the fake tree's `dev/`, and logs every change asked of
//! it. Key loads are logged as a description (segments, key sizes, how they were
//! loaded), never as bytes.

use std::cell::{Cell, RefCell};
use std::fs::File;
use std::path::{Path, PathBuf};

use tosskey_crypto::sector::{SectorCipher, SectorLayout, SectorSize};
use tosskey_crypto::spec::CipherSpec;
use tosskey_dm::{
    CryptTable, DevId, DeviceInfo, DmName, DmUuid, KeyLoaded, KeyLoading, NoKeyringSupport,
    TableEntry, TargetLine,
};
use tosskey_raid::{ArraySpec, Level};
use tosskey_sysutil::SECTOR_SIZE;

use super::{AssembledArray, StackKernel};
use crate::error::Result;
use crate::host::sysfs::{parse_mountinfo, SystemRoot};

/// Mounting and unmounting edit the fake tree's mountinfo, stopping an array removes
/// its `md/` and shredding replaces a table by `error` targets, as the kernel would. A
/// crypt mapping's device file holds the userspace decryption of what lies under it,
/// so the executor's verification reads find what they would on the kernel's.
#[derive(Debug)]
pub struct FakeKernel {
    root: SystemRoot,
    devices: RefCell<Vec<(DeviceInfo, Vec<TableEntry>)>>,
    /// Tables loaded and not resumed yet, by dm name.
    inactive: RefCell<Vec<(String, Vec<TableEntry>)>>,
    /// Block devices by path (members, md arrays, live dm mappings).
    nodes: RefCell<Vec<(PathBuf, DevId)>>,
    /// Minors handed out so far, by major (253: dm, 9: md).
    minors: RefCell<Vec<(u32, u32)>>,
    /// Devices a user holds open: removing them fails (EBUSY).
    held: RefCell<Vec<String>>,
    /// Whether dm-crypt takes keyring keys (`--key-loading auto` falls back otherwise).
    keyring: Cell<bool>,
    /// Build operations (create, load, resume, assemble, mount) asked so far, and the
    /// one that fails (counting from 0).
    builds: Cell<usize>,
    fail_build: Cell<Option<usize>>,
    log: RefCell<Vec<String>>,
}

impl FakeKernel {
    pub fn new(root: &SystemRoot) -> Self {
        FakeKernel {
            root: root.clone(),
            devices: RefCell::default(),
            inactive: RefCell::default(),
            nodes: RefCell::default(),
            minors: RefCell::default(),
            held: RefCell::default(),
            keyring: Cell::new(true),
            builds: Cell::new(0),
            fail_build: Cell::new(None),
            log: RefCell::default(),
        }
    }

    /// A disk at `path` (`/dev/...`) numbered `dev`, of `size_bytes` zeros.
    pub fn disk(&self, path: &Path, dev: DevId, size_bytes: u64) -> &Self {
        self.add_node(path, dev, size_bytes);
        self
    }

    /// dm-crypt here takes no keyring keys: `auto` loading falls back to hex.
    pub fn without_keyring(&self) -> &Self {
        self.keyring.set(false);
        self
    }

    /// The build operation number `index` (0: the first create, load, resume, assemble
    /// or mount) fails, as if the kernel refused it.
    pub fn fail_build(&self, index: usize) -> &Self {
        self.fail_build.set(Some(index));
        self
    }

    /// The file holding block device `path`'s contents.
    fn file(&self, path: &Path) -> PathBuf {
        self.root
            .dev
            .join(path.strip_prefix("/dev").unwrap_or(path))
    }

    fn add_node(&self, path: &Path, dev: DevId, size_bytes: u64) {
        let file = self.file(path);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        File::create(&file).unwrap().set_len(size_bytes).unwrap();
        self.nodes.borrow_mut().push((path.to_path_buf(), dev));
    }

    fn path_of(&self, dev: DevId) -> PathBuf {
        self.nodes
            .borrow()
            .iter()
            .find(|(_, d)| *d == dev)
            .map(|(path, _)| path.clone())
            .unwrap_or_else(|| panic!("the fake has no device {dev}"))
    }

    fn new_dev(&self, major: u32) -> DevId {
        let mut minors = self.minors.borrow_mut();
        let minor = minors.iter().filter(|(m, _)| *m == major).count();
        let minor = u32::try_from(minor).unwrap();
        minors.push((major, minor));
        DevId::new(major, minor)
    }

    /// Count a build operation: log it, or fail it if it is the one to fail.
    fn build(&self, what: String) -> Result<()> {
        let index = self.builds.get();
        self.builds.set(index + 1);
        if self.fail_build.get() == Some(index) {
            self.note(format!("refuse {what}"));
            return Err(anyhow::anyhow!("the fake kernel refuses: {what}").into());
        }
        self.note(what);
        Ok(())
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
        let entries = table.iter().map(|line| table_entry(line)).collect();
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

    /// Every change asked of the kernel so far, in order (`create v`, `load v: <table>`,
    /// `resume v`, `assemble md_tk_v ...`, `remove v`, `stop md_tk_v`, `mount /dev/mapper/v
    /// /mnt/v`, `unmount /mnt/v`, `shred v`, `detach /mnt/v`; `refuse <op>` for the
    /// operation [`FakeKernel::fail_build`] names).
    pub fn log(&self) -> Vec<String> {
        self.log.borrow().clone()
    }

    fn note(&self, what: String) {
        self.log.borrow_mut().push(what);
    }

    fn stage(&self, name: &DmName, lines: Vec<String>) {
        let entries = lines.iter().map(|line| table_entry(line)).collect();
        let mut inactive = self.inactive.borrow_mut();
        inactive.retain(|(n, _)| n != name.as_str());
        inactive.push((name.to_string(), entries));
    }

    /// The file a loaded, not yet resumed table of `name` fills.
    fn inactive_file(&self, name: &DmName) -> PathBuf {
        self.root.dev.join(format!("mapper/.inactive-{name}"))
    }

    /// Fill the inactive file of `name` with `table` decrypted from the devices under
    /// it, segment `i` with `keys[i]`, as dm-crypt would read it.
    fn decrypt_below(&self, name: &DmName, table: &CryptTable, keys: &[&[u8]]) {
        use std::os::unix::fs::FileExt as _;
        let length = table.length().0 * SECTOR_SIZE;
        let file = self.inactive_file(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        let out = File::create(&file).unwrap();
        out.set_len(length).unwrap();
        for (segment, key) in table.segments().iter().zip(keys) {
            let target = &segment.target;
            let options = target.options();
            let layout = SectorLayout {
                sector_size: SectorSize::try_from(u64::from(options.sector_size)).unwrap(),
                iv_large_sectors: options.iv_large_sectors,
                iv_offset: target.iv_offset().0,
            };
            let cipher: CipherSpec = target.cipher().parse().unwrap();
            let cipher = SectorCipher::new(cipher.block_cipher(), key, layout).unwrap();
            let below = File::open(self.file(&self.path_of(target.device()))).unwrap();
            let mut data = vec![0u8; usize::try_from(target.length().0 * SECTOR_SIZE).unwrap()];
            below
                .read_exact_at(&mut data, target.offset().0 * SECTOR_SIZE)
                .unwrap();
            cipher.decrypt(0, &mut data).unwrap();
            out.write_all_at(&data, segment.start.0 * SECTOR_SIZE)
                .unwrap();
        }
    }
}

/// A table entry from `<start> <length> <type> <params>`, parsed as tosskey-dm parses the
/// kernel's tables.
fn table_entry(line: &str) -> TableEntry {
    line.parse()
        .unwrap_or_else(|e| panic!("fixture table line {line:?}: {e}"))
}

/// What md makes of `spec`'s members (non-persistent: no superblock).
fn array_bytes(spec: &ArraySpec) -> u64 {
    let sizes: Vec<u64> = spec.members.iter().map(|m| m.size_bytes).collect();
    let smallest = sizes.iter().copied().min().unwrap_or(0);
    let chunk = spec.chunk.0;
    match spec.level {
        Level::Raid0 => sizes.len() as u64 * (smallest / chunk * chunk),
        Level::Raid1 => smallest,
        Level::Raid10 => tosskey_raid::raid10_array_bytes(chunk, &sizes),
        Level::Linear => sizes.iter().sum(),
    }
}

impl StackKernel for FakeKernel {
    fn create_dm(&self, name: &DmName, uuid: &DmUuid) -> Result<()> {
        self.build(format!("create {name}"))?;
        let info = DeviceInfo {
            name: name.clone(),
            uuid: Some(uuid.to_string()),
            dev: self.new_dev(253),
            open_count: 0,
            target_count: 0,
            event_nr: 0,
            suspended: false,
            read_only: false,
            live_table: false,
            inactive_table: false,
        };
        self.devices.borrow_mut().push((info, Vec::new()));
        Ok(())
    }

    fn load_dm(&self, name: &DmName, lines: &[TargetLine]) -> Result<()> {
        let lines: Vec<String> = lines.iter().map(TargetLine::display_elided).collect();
        self.build(format!("load {name}: {}", lines.join("; ")))?;
        let length: u64 = lines
            .iter()
            .map(|l| table_entry(l).length.0 * SECTOR_SIZE)
            .sum();
        let file = self.inactive_file(name);
        std::fs::create_dir_all(file.parent().unwrap()).unwrap();
        File::create(&file).unwrap().set_len(length).unwrap();
        self.stage(name, lines);
        Ok(())
    }

    fn load_crypt(
        &self,
        name: &DmName,
        table: &CryptTable,
        keys: &[&[u8]],
        loading: KeyLoading,
    ) -> Result<KeyLoaded> {
        let loaded = match loading {
            KeyLoading::Hex => KeyLoaded::Hex,
            KeyLoading::Auto if !self.keyring.get() => KeyLoaded::HexFallback {
                reason: NoKeyringSupport::CryptTargetTooOld {
                    version: (1, 14, 0),
                },
            },
            KeyLoading::Auto | KeyLoading::Keyring => KeyLoaded::Keyring {
                descriptions: (0..table.len())
                    .map(|i| tosskey_dm::segment_keyring_description(name, i, table.len()))
                    .collect(),
            },
        };
        let lines: Vec<String> = table
            .segments()
            .iter()
            .map(|s| s.target.line_elided_at(s.start).unwrap())
            .collect();
        let key_bytes: Vec<String> = keys.iter().map(|k| k.len().to_string()).collect();
        let how = match &loaded {
            KeyLoaded::Keyring { descriptions } => {
                format!("keyring {}", descriptions.join(" "))
            }
            other => other.to_string(),
        };
        self.build(format!(
            "load {name}: {}; keys of {} bytes, {loading:?} loading: {how}",
            lines.join("; "),
            key_bytes.join("+")
        ))?;
        self.decrypt_below(name, table, keys);
        self.stage(name, lines);
        Ok(loaded)
    }

    fn resume_dm(&self, name: &DmName) -> Result<DevId> {
        self.build(format!("resume {name}"))?;
        let (_, entries) = {
            let mut inactive = self.inactive.borrow_mut();
            let at = inactive
                .iter()
                .position(|(n, _)| n == name.as_str())
                .expect("a table was loaded before the resume");
            inactive.remove(at)
        };
        let mut devices = self.devices.borrow_mut();
        let (info, live) = devices
            .iter_mut()
            .find(|(i, _)| &i.name == name)
            .expect("the device was created before the resume");
        info.live_table = true;
        info.target_count = u32::try_from(entries.len()).unwrap();
        *live = entries;
        let node = tosskey_dm::DmControl::node_path(name);
        std::fs::rename(self.inactive_file(name), self.file(&node)).unwrap();
        self.nodes.borrow_mut().push((node, info.dev));
        Ok(info.dev)
    }

    fn assemble_md(&self, spec: &ArraySpec) -> Result<AssembledArray> {
        let name = spec
            .kernel_name_from_hint()
            .expect("tosskey names its arrays");
        let members: Vec<String> = spec
            .members
            .iter()
            .map(|m| m.path.display().to_string())
            .collect();
        self.build(format!(
            "assemble {name} {} over {}",
            spec.level,
            members.join(" ")
        ))?;
        let array = AssembledArray {
            dev: self.new_dev(9),
            size_bytes: array_bytes(spec),
        };
        self.add_node(&Path::new("/dev").join(&name), array.dev, array.size_bytes);
        let md = self.root.block(&name).join("md");
        std::fs::create_dir_all(&md).unwrap();
        std::fs::write(md.join("metadata_version"), "none\n").unwrap();
        Ok(array)
    }

    fn open_direct(&self, path: &Path) -> Result<File> {
        Ok(File::open(self.file(path))?)
    }

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
        self.inactive
            .borrow_mut()
            .retain(|(n, _)| n != name.as_str());
        let node = tosskey_dm::DmControl::node_path(name);
        self.nodes.borrow_mut().retain(|(path, _)| *path != node);
        let _ = std::fs::remove_file(self.file(&node));
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
                *entry = TableEntry::new(entry.start, entry.length, "error".into(), "")
                    .expect("an error target has no parameters");
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

    fn mount(&self, node: &Path, dir: &Path, read_only: bool) -> Result<()> {
        let read_only = if read_only { " read-only" } else { "" };
        self.build(format!(
            "mount {} {}{read_only}",
            node.display(),
            dir.display()
        ))?;
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
        Ok(())
    }

    fn bind(&self, source: &Path, dir: &Path) -> Result<()> {
        self.build(format!("bind {} {}", source.display(), dir.display()))?;
        let path = self.root.proc.join("self/mountinfo");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        // The mount `source` lies in: the deepest mount point above it, the topmost mount there.
        let under = parse_mountinfo(&text)
            .into_iter()
            .filter(|m| source.starts_with(&m.mount_point))
            .max_by_key(|m| m.mount_point.len())
            .expect("the fake binds from a mounted filesystem");
        let root = Path::new("/").join(source.strip_prefix(&under.mount_point).unwrap());
        text.push_str(&format!(
            "98 1 {} {} {} {} - {} {} rw\n",
            under.dev,
            root.display(),
            dir.display(),
            under.options,
            under.fs_type,
            under.source
        ));
        std::fs::write(path, text).unwrap();
        Ok(())
    }

    fn detach(&self, dir: &Path) {
        self.drop_mount(dir);
        self.note(format!("detach {}", dir.display()));
    }
}
