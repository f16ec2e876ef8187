//! `status`, `close` and `shred`: looking at and taking down the volumes tosskey made.
//!
//! `status` reads the kernel's state back into the plan's own types — each md array and dm
//! mapping a [`Node`] with its table rebuilt as the plan's targets, each crypt segment a
//! [`PlannedKey`], the crypt options [`CryptSettings`] — and [`render::status_text`] shows
//! them with the renderers a dry run uses, so a live volume reads like its plan. Every
//! kernel operation goes through a [`StackKernel`] and every sysfs/procfs read through the
//! [`SystemRoot`]: host tests run all three commands on fake trees.

use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::Serialize;
use tosskey_crypto::CipherSpec;
use tosskey_dm::{
    CryptKeyField, CryptTable, CryptTarget, DevId, DeviceInfo, DmControl, DmName, KeyRef,
    LinearTarget, Sectors, StripeMember, StripedTarget, TableEntry,
};
use tosskey_raid::MdSysfs as _;

use crate::config::UUID_PREFIX;
use crate::error::{Error, Refusal, Result, UnhealthyState, Usage};
use crate::exec::{teardown_in, teardown_steps, volume_mounts};
use crate::health::{self, Health};
use crate::kernel::{HostKernel, StackKernel};
use crate::measure::VolumeMeasurement;
use crate::mount::{mount_points_of, mounts_of};
use crate::plan::render::{self, join_lines, target_lines};
use crate::plan::{
    CryptSegment, CryptSettings, DeviceRef, DmTarget, EscrowCrypt, KeyLoading, KeyScope, MdLevel,
    Node, NodeKind, PlannedKey, PlannedMember, SectorRange, SECTOR,
};
use crate::provision::Environment;
use crate::state::{Component, Journal, Readiness, Stage};
use crate::sysfs::{SystemRoot, SystemState};

/// A volume as the kernel has it now, in the plan's terms. Never carries key material.
#[derive(Debug, Serialize)]
pub struct VolumeStatus {
    pub name: String,
    /// The journal's stage (`None`: a tosskey mapping without a journal).
    pub stage: Option<Stage>,
    /// Member devices as the journal recorded them.
    pub members: Vec<PathBuf>,
    /// The devices under the stack, read back from sysfs: what a node's `member` refers to.
    pub devices: Vec<PlannedMember>,
    /// The md arrays and dm mappings of the volume that exist, bottom first, as plan nodes
    /// (a node's `node` refers to an earlier one here).
    pub mappings: Vec<LiveNode>,
    /// Mappings whose table is none tosskey builds (after `shred`: `error` targets).
    pub other_mappings: Vec<OtherMapping>,
    /// One per crypt segment, as the tables show them.
    pub keys: Vec<PlannedKey>,
    pub key_scope: KeyScope,
    /// What `provision --measure-pcr` extended (empty when not asked).
    pub measurements: Vec<VolumeMeasurement>,
    /// Why `--key-loading auto` put hex keys in the tables (from the journal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_loading_fallback: Option<String>,
    /// Where the run mounted the volume (from the journal).
    pub mount: Option<PathBuf>,
    /// When and how the run made the volume ready, with the escrow file it wrote.
    pub ready: Option<Readiness>,
    /// Whether it serves its data, and which member failed.
    pub health: Health,
}

/// A node that exists: the plan's [`Node`], read back, and its state in the kernel.
#[derive(Debug, Serialize)]
pub struct LiveNode {
    #[serde(flatten)]
    pub node: Node,
    /// A crypt mapping's settings as its table shows them.
    #[serde(flatten)]
    pub crypt: Option<CryptSettings>,
    /// `MAJ:MIN`.
    pub dev: String,
    pub mount_points: Vec<String>,
    /// The same mounts with their filesystem and options.
    pub mounts: Vec<LiveMount>,
    pub suspended: bool,
}

/// A mount of a node, from mountinfo.
#[derive(Debug, Serialize)]
pub struct LiveMount {
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
}

/// Where block device `dev` is mounted: the points, and the mounts with their options.
fn live_mounts(root: &SystemRoot, dev: DevId) -> Result<(Vec<String>, Vec<LiveMount>)> {
    let mounts: Vec<LiveMount> = mounts_of(&root.proc, dev.major, dev.minor)?
        .into_iter()
        .map(|m| LiveMount {
            mount_point: m.mount_point,
            fs_type: m.fs_type,
            options: m.options,
        })
        .collect();
    Ok((
        mounts.iter().map(|m| m.mount_point.clone()).collect(),
        mounts,
    ))
}

/// A tosskey mapping whose table does not read back as a plan node.
#[derive(Debug, Serialize)]
pub struct OtherMapping {
    pub name: String,
    pub path: PathBuf,
    pub uuid: Option<String>,
    pub dev: String,
    pub size_bytes: u64,
    /// The live table, key elided.
    pub table: String,
    pub mount_points: Vec<String>,
}

/// A live table read back: the plan's node kind and target, the keyring references its
/// crypt segments name (`None`: hex keys, elided) and a crypt mapping's settings.
struct ReadBack {
    kind: NodeKind,
    target: DmTarget,
    key_refs: Option<Vec<KeyRef>>,
    crypt: Option<CryptSettings>,
}

impl VolumeStatus {
    fn new(name: &str, journal: Option<&Journal>) -> Self {
        VolumeStatus {
            name: name.to_owned(),
            stage: journal.map(|j| j.stage),
            members: journal.map(|j| j.members.clone()).unwrap_or_default(),
            devices: Vec::new(),
            mappings: Vec::new(),
            other_mappings: Vec::new(),
            keys: Vec::new(),
            key_scope: KeyScope {
                limit_bytes: None,
                keys: 0,
                largest_key_bytes: 0,
            },
            measurements: journal.map(|j| j.measurements.clone()).unwrap_or_default(),
            key_loading_fallback: journal.and_then(|j| j.key_loading_fallback.clone()),
            mount: journal.and_then(|j| j.mount.clone()),
            ready: journal.and_then(|j| j.ready.clone()),
            health: Health::healthy(),
        }
    }

    /// Whether `device` is (transitively) under mapping `node`.
    pub fn is_below(&self, device: DeviceRef, node: usize) -> bool {
        self.mappings[node]
            .node
            .kind
            .devices()
            .iter()
            .any(|&d| d == device || matches!(d, DeviceRef::Node(j) if self.is_below(device, j)))
    }

    /// The disk `device` stands for: itself if a member, else the one device a mapping
    /// over a single device sits on (a per-disk crypt mapping's disk), else the node.
    pub fn disk_under(&self, device: DeviceRef) -> &Path {
        match device {
            DeviceRef::Node(i) => match self.mappings[i].node.kind.devices() {
                [one] => self.disk_under(*one),
                _ => self.device_path(device),
            },
            DeviceRef::Member(_) => self.device_path(device),
        }
    }

    /// The path of what `device` refers to.
    pub fn device_path(&self, device: DeviceRef) -> &Path {
        match device {
            DeviceRef::Member(i) => &self.devices[i].path,
            DeviceRef::Node(i) => &self.mappings[i].node.path,
        }
    }

    /// `dev` as a reference: a node of this volume, or a device under it (read from sysfs
    /// the first time it is met).
    pub(crate) fn device_ref(&mut self, system: &SystemState, dev: DevId) -> DeviceRef {
        let number = dev.to_string();
        if let Some(i) = self.mappings.iter().position(|m| m.dev == number) {
            return DeviceRef::Node(i);
        }
        if let Some(i) = self.devices.iter().position(|d| d.dev == number) {
            return DeviceRef::Member(i);
        }
        let block = system.by_dev(dev);
        self.devices.push(PlannedMember {
            path: block.map_or_else(
                || PathBuf::from(format!("/dev/block/{number}")),
                |b| Path::new("/dev").join(&b.name),
            ),
            dev: number,
            major: dev.major,
            minor: dev.minor,
            size_bytes: block.map_or(0, |b| b.size_bytes),
            logical_block_size: block.map_or(0, |b| b.logical_block_size),
            identity: block.and_then(|b| b.serial.clone().or_else(|| b.wwid.clone())),
        });
        DeviceRef::Member(self.devices.len() - 1)
    }

    /// Read md array `name` back as a node.
    fn read_md(&mut self, root: &SystemRoot, system: &SystemState, name: &str) -> Result<()> {
        let array = root.array_status(name)?;
        let level = match array.level.as_str() {
            "raid0" => MdLevel::Raid0,
            "raid1" => MdLevel::Raid1,
            "raid10" => MdLevel::Raid10,
            "linear" => MdLevel::Linear,
            other => {
                return Err(Error::Failed(anyhow::anyhow!(
                    "md array {name} has level {other:?}, which tosskey does not build"
                )))
            }
        };
        let (mount_points, mounts) = live_mounts(root, array.dev)?;
        let chunk_path = root.block(name).join("md/chunk_size");
        let chunk_bytes = tosskey_sysutil::read_attr_u64(&chunk_path)
            .with_context(|| format!("reading {}", chunk_path.display()))?;
        let mut slots: Vec<(u32, DevId)> = array
            .members
            .iter()
            .filter_map(|m| m.slot.map(|slot| (slot, m.dev)))
            .collect();
        slots.sort_unstable();
        let members = slots
            .into_iter()
            .map(|(_, dev)| self.device_ref(system, dev))
            .collect();
        self.mappings.push(LiveNode {
            node: Node {
                name: name.to_owned(),
                path: Path::new("/dev").join(name),
                uuid: None,
                size_bytes: array.size_bytes,
                kind: NodeKind::Md {
                    level,
                    chunk_bytes,
                    members,
                },
                table: None,
            },
            crypt: None,
            dev: array.dev.to_string(),
            mount_points,
            mounts,
            suspended: false,
        });
        Ok(())
    }

    /// Read dm mapping `info` back as a node (or as another mapping if its table is none
    /// tosskey builds).
    fn read_dm(
        &mut self,
        kernel: &dyn StackKernel,
        root: &SystemRoot,
        system: &SystemState,
        info: &DeviceInfo,
    ) -> Result<()> {
        let entries = kernel.dm_table(&info.name)?;
        let size_bytes = entries.iter().map(|e| e.length.0 * SECTOR).sum();
        let path = DmControl::node_path(&info.name);
        let (mount_points, mounts) = live_mounts(root, info.dev)?;
        let keys_before = self.keys.len();
        match self.read_target(system, info.name.as_str(), &entries)? {
            Some(ReadBack {
                kind,
                target,
                key_refs,
                crypt,
            }) => {
                let table = join_lines(target_lines(&target, key_refs.as_deref())?);
                self.mappings.push(LiveNode {
                    node: Node {
                        name: info.name.to_string(),
                        path,
                        uuid: info.uuid.clone(),
                        size_bytes,
                        kind,
                        table: Some(table),
                    },
                    crypt,
                    dev: info.dev.to_string(),
                    mount_points,
                    mounts,
                    suspended: info.suspended,
                });
            }
            None => {
                self.keys.truncate(keys_before);
                self.other_mappings.push(OtherMapping {
                    name: info.name.to_string(),
                    path,
                    uuid: info.uuid.clone(),
                    dev: info.dev.to_string(),
                    size_bytes,
                    table: join_lines(
                        entries
                            .iter()
                            .map(|e| {
                                format!("{} {} {} {}", e.start, e.length, e.target_type, e.params)
                            })
                            .collect(),
                    ),
                    mount_points,
                });
            }
        }
        self.key_scope = KeyScope {
            limit_bytes: None,
            keys: self.keys.len(),
            largest_key_bytes: self
                .keys
                .iter()
                .map(|k| k.covers.length * SECTOR)
                .max()
                .unwrap_or(0),
        };
        Ok(())
    }

    /// A live table as the plan's node kind and target (with its keyring references, and
    /// for crypt its settings); `None` if it is not a table tosskey builds.
    fn read_target(
        &mut self,
        system: &SystemState,
        name: &str,
        entries: &[TableEntry],
    ) -> Result<Option<ReadBack>> {
        let [first, ..] = entries else {
            return Ok(None);
        };
        match first.target_type.as_str() {
            "crypt" => self.read_crypt(system, name, entries),
            "striped" if entries.len() == 1 => {
                // `<count> <chunk> <dev0> <offset0> ...`
                let words: Vec<&str> = first.params.split(' ').collect();
                let (Some(Ok(count)), Some(Ok(chunk))) = (
                    words.first().map(|w| w.parse::<u64>()),
                    words.get(1).map(|w| w.parse::<u64>()),
                ) else {
                    return Ok(None);
                };
                let Some(devices) = words[2..]
                    .chunks(2)
                    .map(|pair| match pair {
                        [device, offset] => {
                            Some((device.parse::<DevId>().ok()?, offset.parse::<u64>().ok()?))
                        }
                        _ => None,
                    })
                    .collect::<Option<Vec<_>>>()
                    .filter(|d| u64::try_from(d.len()).ok() == Some(count) && count > 0)
                else {
                    return Ok(None);
                };
                let width = first.length.0 / count;
                let Ok(target) = StripedTarget::new(
                    Sectors(chunk),
                    devices
                        .iter()
                        .map(|&(device, offset)| StripeMember {
                            device,
                            offset: Sectors(offset),
                            size: Sectors(offset + width),
                        })
                        .collect(),
                ) else {
                    return Ok(None);
                };
                let refs = devices
                    .iter()
                    .map(|&(dev, _)| self.device_ref(system, dev))
                    .collect();
                Ok(Some(ReadBack {
                    kind: NodeKind::Striped {
                        chunk_bytes: chunk * SECTOR,
                        devices: refs,
                    },
                    target: DmTarget::Striped(target),
                    key_refs: None,
                    crypt: None,
                }))
            }
            "linear" if entries.len() == 1 => {
                let mut words = first.params.split(' ');
                let (Some(Ok(device)), Some(Ok(offset)), None) = (
                    words.next().map(str::parse::<DevId>),
                    words.next().map(str::parse::<u64>),
                    words.next(),
                ) else {
                    return Ok(None);
                };
                let target = LinearTarget {
                    device,
                    offset: Sectors(offset),
                    length: first.length,
                };
                let device = self.device_ref(system, device);
                Ok(Some(ReadBack {
                    kind: NodeKind::Linear { device },
                    target: DmTarget::Linear(target),
                    key_refs: None,
                    crypt: None,
                }))
            }
            _ => Ok(None),
        }
    }

    /// A crypt table of one or more segments, read back as the plan makes them: the whole
    /// mapping's target cut at the segments' lengths, offsets and IVs continuing, one key
    /// each — which is checked by rebuilding it and comparing every segment.
    fn read_crypt(
        &mut self,
        system: &SystemState,
        name: &str,
        entries: &[TableEntry],
    ) -> Result<Option<ReadBack>> {
        let Some(params) = entries
            .iter()
            .map(|e| e.crypt.as_ref())
            .collect::<Option<Vec<_>>>()
        else {
            return Ok(None);
        };
        let first = params[0];
        let (Ok(cipher), true) = (
            first.cipher.parse::<CipherSpec>(),
            params.iter().all(|p| p.other_options.is_empty()),
        ) else {
            return Ok(None);
        };
        let total = Sectors(entries.iter().map(|e| e.length.0).sum());
        let whole = CryptTarget::new(&first.cipher, first.device, total)?
            .with_offset(first.offset)
            .with_iv_offset(first.iv_offset)
            .with_options(first.options);
        let lengths: Vec<Sectors> = entries.iter().map(|e| e.length).collect();
        let Ok(table) = CryptTable::from_lengths(&whole, &lengths) else {
            return Ok(None);
        };
        let rebuilt = table
            .segments()
            .iter()
            .zip(entries)
            .all(|(segment, entry)| {
                let p = entry.crypt.as_ref().expect("checked above");
                segment.start == entry.start
                    && segment.target.cipher() == p.cipher
                    && segment.target.device() == p.device
                    && segment.target.offset() == p.offset
                    && segment.target.iv_offset() == p.iv_offset
                    && segment.target.options() == p.options
            });
        let key_bytes: Option<Vec<usize>> = params
            .iter()
            .map(|p| match &p.key {
                CryptKeyField::Keyring { bytes, .. } | CryptKeyField::Hex { bytes } => Some(*bytes),
                CryptKeyField::None | CryptKeyField::Elided => None,
            })
            .collect();
        let Some(key_bytes) = key_bytes.filter(|b| rebuilt && b.iter().all(|&n| n == b[0])) else {
            return Ok(None);
        };
        let keyring: Option<Vec<KeyRef>> = params
            .iter()
            .map(|p| match &p.key {
                CryptKeyField::Keyring {
                    bytes,
                    key_type,
                    description,
                } if key_type == "logon" => Some(KeyRef::Keyring {
                    bytes: *bytes,
                    description: description.clone(),
                }),
                _ => None,
            })
            .collect();
        let bits = u32::try_from(key_bytes[0] * 8).expect("a crypt key has few bits");
        let mut segments = Vec::with_capacity(entries.len());
        for entry in entries {
            let range = SectorRange {
                start: entry.start.0,
                length: entry.length.0,
            };
            segments.push(CryptSegment {
                key: self.keys.len(),
                range,
            });
            self.keys.push(PlannedKey {
                mapping: name.to_owned(),
                bits,
                covers: range,
            });
        }
        let settings = CryptSettings {
            format: EscrowCrypt {
                cipher,
                key_bits: bits,
                sector_size: first.options.sector_size,
                iv_large_sectors: first.options.iv_large_sectors,
                iv_offset: first.iv_offset.0,
                data_offset: first.offset.0,
            },
            allow_discards: first.options.allow_discards,
            no_read_workqueue: first.options.no_read_workqueue,
            no_write_workqueue: first.options.no_write_workqueue,
            key_loading: if keyring.is_some() {
                KeyLoading::Keyring
            } else {
                KeyLoading::Hex
            },
        };
        let device = self.device_ref(system, first.device);
        Ok(Some(ReadBack {
            kind: NodeKind::Crypt { device, segments },
            target: DmTarget::Crypt(table),
            key_refs: keyring,
            crypt: Some(settings),
        }))
    }
}

/// A volume name from the command line: a dm name (so it cannot lead anywhere else).
fn volume_name(name: &str) -> Result<DmName> {
    DmName::new(name).map_err(|e| {
        Error::Usage(Usage::BadVolumeName {
            name: name.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// Every tosskey volume (or only volume `name`).
pub fn status(env: &Environment, name: Option<&str>) -> Result<Vec<VolumeStatus>> {
    let name = name.map(volume_name).transpose()?;
    // Without device-mapper in the kernel (and no journal) there is no tosskey volume: say
    // so instead of failing to open its control node.
    if name.is_none()
        && !env.root.sys.join("class/misc/device-mapper").exists()
        && env.journals.list()?.is_empty()
    {
        return Ok(Vec::new());
    }
    status_in(&HostKernel::open(&env.root)?, env, name.as_ref())
}

/// [`status`] through `kernel`.
pub fn status_in(
    kernel: &dyn StackKernel,
    env: &Environment,
    name: Option<&DmName>,
) -> Result<Vec<VolumeStatus>> {
    let system = SystemState::read(&env.root)
        .with_context(|| format!("reading {}", env.root.sys.display()))?;
    let journals = env.journals.list()?;
    let ours: Vec<DeviceInfo> = kernel
        .dm_devices()?
        .into_iter()
        .filter(|d| {
            d.uuid
                .as_deref()
                .is_some_and(|u| u.starts_with(UUID_PREFIX))
        })
        .collect();
    let mut shown: Vec<&DmName> = Vec::new();
    let mut volumes = Vec::new();
    let mut missing: Vec<Vec<String>> = Vec::new();
    for journal in &journals {
        let mut volume = VolumeStatus::new(&journal.name, Some(journal));
        let mut gone = Vec::new();
        for component in &journal.built {
            match component {
                Component::Md { name } if env.root.block(name).join("md").is_dir() => {
                    volume.read_md(&env.root, &system, name)?;
                }
                Component::Dm { name, .. } => {
                    if let Some(info) = ours.iter().find(|d| d.name.as_str() == name) {
                        volume.read_dm(kernel, &env.root, &system, info)?;
                        shown.push(&info.name);
                    } else {
                        gone.push(name.clone());
                    }
                }
                Component::Md { name } => gone.push(name.clone()),
            }
        }
        volumes.push(volume);
        missing.push(gone);
    }
    for info in &ours {
        if shown.contains(&&info.name) {
            continue;
        }
        let index = match volumes.iter().position(|v| v.name == info.name.as_str()) {
            Some(index) => index,
            None => {
                volumes.push(VolumeStatus::new(info.name.as_str(), None));
                volumes.len() - 1
            }
        };
        volumes[index].read_dm(kernel, &env.root, &system, info)?;
    }
    if let Some(name) = name {
        volumes.retain(|v| v.name == name.as_str());
        if volumes.is_empty() {
            return Err(Error::Refused(Refusal::NoSuchVolume {
                name: name.to_string(),
            }));
        }
    }
    for volume in &mut volumes {
        let gone = journals
            .iter()
            .position(|j| j.name == volume.name)
            .map_or(&[][..], |i| missing[i].as_slice());
        volume.health = health::assess(volume, kernel, &env.root, &system, gone)?;
    }
    Ok(volumes)
}

/// `status --check`: one line for the probe's log, and the volume's health as the exit
/// code (an [`Error::Unhealthy`] unless it is healthy).
pub fn check(volume: &VolumeStatus) -> Result<String> {
    let health = &volume.health;
    let mut line = format!("{}: {}", volume.name, health.state.word());
    if !health.findings.is_empty() {
        line = format!("{line}: {}", health.findings.join("; "));
    }
    match health.state {
        health::HealthState::Healthy => Ok(line + "\n"),
        health::HealthState::Degraded => Err(Error::Unhealthy {
            state: UnhealthyState::Degraded,
            message: line,
        }),
        health::HealthState::Failed => Err(Error::Unhealthy {
            state: UnhealthyState::Failed,
            message: line,
        }),
    }
}

/// Render `status` for humans.
pub fn render_status(volumes: &[VolumeStatus]) -> String {
    render::status_text(volumes)
}

fn journal_for(env: &Environment, name: &DmName) -> Result<Journal> {
    env.journals.load(name.as_str())?.ok_or_else(|| {
        Error::Refused(Refusal::NoSuchVolume {
            name: name.to_string(),
        })
    })
}

/// Close volume `name` (or every volume): unmount if asked, remove mappings and arrays.
pub fn close(env: &Environment, name: Option<&str>, unmount_first: bool) -> Result<Vec<Closed>> {
    let name = name.map(volume_name).transpose()?;
    // Nothing to close is said (or done) before the device-mapper is needed: `close x` of a
    // volume with no journal is refused as such even where dm is not loaded.
    match &name {
        Some(name) => {
            journal_for(env, name)?;
        }
        None if env.journals.list()?.is_empty() => return Ok(Vec::new()),
        None => {}
    }
    close_in(
        &HostKernel::open(&env.root)?,
        env,
        name.as_ref(),
        unmount_first,
    )
}

/// A volume `close` took down, and the mounts it left alone (not the volume's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub name: String,
    pub left_alone: Vec<String>,
}

/// [`close`] through `kernel`.
pub fn close_in(
    kernel: &dyn StackKernel,
    env: &Environment,
    name: Option<&DmName>,
    unmount_first: bool,
) -> Result<Vec<Closed>> {
    let journals = match name {
        Some(name) => vec![journal_for(env, name)?],
        None => env.journals.list()?,
    };
    let mut closed = Vec::new();
    for journal in journals {
        // Refuses, before anything is unmounted, if the journal names a device tosskey did
        // not make.
        teardown_steps(&env.root, &journal, &kernel.dm_devices()?)?;
        let mounted = volume_mount_points(kernel, env, &journal)?;
        if !mounted.is_empty() && !unmount_first {
            return Err(Error::Refused(Refusal::VolumeMounted {
                name: journal.name,
                mounts: mounted.join(", "),
            }));
        }
        // Unmounts the volume's own mounts only.
        let left_alone = teardown_in(kernel, &env.root, &journal, &env.journals)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("closing {}", journal.name))?;
        closed.push(Closed {
            name: journal.name,
            left_alone,
        });
    }
    Ok(closed)
}

/// Where the volume's mapping is mounted (empty when it is not, or does not exist).
fn volume_mount_points(
    kernel: &dyn StackKernel,
    env: &Environment,
    journal: &Journal,
) -> Result<Vec<String>> {
    let Some(volume) = kernel
        .dm_devices()?
        .into_iter()
        .find(|d| d.name.as_str() == journal.name)
    else {
        return Ok(Vec::new());
    };
    Ok(mount_points_of(
        &env.root.proc,
        volume.dev.major,
        volume.dev.minor,
    )?)
}

/// Emergency crypto-shred of volume `name`. Every crypt mapping is suspended and told to
/// `key wipe` (the kernel zeroes its key: from here on the data is unrecoverable), then its
/// table is replaced by an `error` target and resumed, so whatever still uses the device
/// (a filesystem with dirty pages, a process with open files) gets I/O errors instead of
/// hanging on a suspended device forever. Then the stack is taken down as far as its users
/// allow.
pub fn shred(env: &Environment, name: &str) -> Result<String> {
    let name = volume_name(name)?;
    // A volume with no journal is refused as such before the device-mapper is needed.
    journal_for(env, &name)?;
    shred_in(&HostKernel::open(&env.root)?, env, &name)
}

/// [`shred`] through `kernel`.
pub fn shred_in(kernel: &dyn StackKernel, env: &Environment, name: &DmName) -> Result<String> {
    let mut journal = journal_for(env, name)?;
    let live = kernel.dm_devices()?;
    // Refuses, before any key is wiped, if the journal names a device tosskey did not make.
    teardown_steps(&env.root, &journal, &live)?;
    // Recorded before the first key is wiped: from here on the volume is no volume, and a
    // rerun of provision must not call it provisioned, even if the teardown below fails.
    journal.stage = Stage::Shredded;
    env.journals.save(&journal)?;
    let mut wiped = Vec::new();
    let mut keys_wiped = 0;
    for component in &journal.built {
        let Component::Dm { name: dm_name, .. } = component else {
            continue;
        };
        let Some(info) = live.iter().find(|d| d.name.as_str() == dm_name) else {
            continue;
        };
        let table = kernel.dm_table(&info.name)?;
        if !table.iter().any(|t| t.target_type == "crypt") {
            continue;
        }
        let keys = kernel.shred_dm(&info.name, &table)?;
        keys_wiped += keys;
        wiped.push(if keys == 1 {
            dm_name.clone()
        } else {
            format!("{dm_name} ({keys} keys)")
        });
    }
    // The keys are gone and the devices answer with errors: unmount the volume's own
    // mounts without waiting for users (a lazy unmount completes when the last one lets
    // go); any other filesystem at the mount point is left alone.
    let mounts = volume_mounts(&env.root, &journal, &live)?;
    for dir in &mounts.on_top {
        kernel.detach(dir);
    }
    let what = if keys_wiped == 1 { "key" } else { "keys" };
    let mut message = match teardown_in(kernel, &env.root, &journal, &env.journals) {
        Ok(_) => format!("shredded {name}: {what} wiped from {} and the stack removed", wiped.join(", ")),
        Err(e) => format!(
            "shredded {name}: {what} wiped from {}; the mappings now fail every I/O and stay until their users let go ({}); run `tosskey close {name}` later",
            wiped.join(", "),
            crate::error::render(&e)
        ),
    };
    for line in mounts.left_alone {
        message.push('\n');
        message.push_str(&line);
    }
    Ok(message)
}

#[cfg(test)]
pub(crate) mod tests {
    use tosskey_sysutil::fake::FakeTree;

    use super::*;
    use crate::kernel::fake::FakeKernel;
    use crate::state::{JournalDir, MappingTarget};

    const MIB: u64 = 1 << 20;
    const CRYPT_V: &str = "0 1048576 crypt twofish-xts-plain64 :64:logon:tosskey:v 0 9:127 0 3 allow_discards no_read_workqueue no_write_workqueue";

    /// A raid0 volume `v` as the kernel and the journal would hold it: vdb and vdc in
    /// md_tk_v (9:127), the crypt mapping v (253:0) on it, mounted at /mnt/v.
    pub(crate) struct Fixture {
        pub(crate) tree: FakeTree,
        pub(crate) kernel: FakeKernel,
        pub(crate) env: Environment,
        _state: tempfile::TempDir,
    }

    pub(crate) fn raid0_volume() -> Fixture {
        let mut tree = FakeTree::new();
        tree.virtio("vdb", 16, 256 * MIB, "disk-0")
            .virtio("vdc", 32, 256 * MIB, "disk-1")
            .md_array(
                "md_tk_v",
                127,
                "raid0",
                &[("vdb", 0), ("vdc", 1)],
                512 * MIB,
            )
            .attr("md_tk_v", "md/chunk_size", "524288")
            .dm("dm-0", 0, "v", "TOSSKEY-b-v", &["md_tk_v"], 512 * MIB)
            .mount((253, 0), "/mnt/v", "ext4", "/dev/mapper/v");
        let kernel = FakeKernel::new(&tree.root);
        kernel.dm("v", (253, 0), "TOSSKEY-b-v", &[CRYPT_V]);
        let state = tempfile::tempdir().unwrap();
        let env = Environment {
            root: tree.root.clone(),
            journals: JournalDir::new(state.path()),
        };
        let mut journal = Journal::new(
            "v",
            "b",
            vec![PathBuf::from("/dev/vdb"), PathBuf::from("/dev/vdc")],
        );
        journal.built = vec![
            Component::Md {
                name: "md_tk_v".into(),
            },
            Component::Dm {
                name: "v".into(),
                target: Some(MappingTarget::Crypt),
            },
        ];
        journal.mount = Some(PathBuf::from("/mnt/v"));
        journal.stage = Stage::Complete;
        env.journals.save(&journal).unwrap();
        Fixture {
            tree,
            kernel,
            env,
            _state: state,
        }
    }

    #[test]
    fn status_reads_the_stack_back_as_plan_nodes() {
        let f = raid0_volume();
        let volumes = status_in(&f.kernel, &f.env, None).unwrap();
        assert_eq!(volumes.len(), 1);
        let v = &volumes[0];
        assert_eq!(v.stage, Some(Stage::Complete));
        let paths: Vec<&Path> = v.devices.iter().map(|d| d.path.as_path()).collect();
        assert_eq!(paths, [Path::new("/dev/vdb"), Path::new("/dev/vdc")]);
        let md = &v.mappings[0].node;
        assert_eq!(md.name, "md_tk_v");
        assert_eq!(
            md.kind,
            NodeKind::Md {
                level: MdLevel::Raid0,
                chunk_bytes: 512 << 10,
                members: vec![DeviceRef::Member(0), DeviceRef::Member(1)],
            }
        );
        let crypt = &v.mappings[1];
        assert_eq!(
            crypt.node.kind,
            NodeKind::Crypt {
                device: DeviceRef::Node(0),
                segments: vec![CryptSegment {
                    key: 0,
                    range: SectorRange {
                        start: 0,
                        length: 1_048_576
                    },
                }],
            }
        );
        // The table is rendered back from the plan's target: what the kernel holds.
        assert_eq!(crypt.node.table.as_deref(), Some(CRYPT_V));
        assert_eq!(crypt.mount_points, ["/mnt/v"]);
        assert_eq!(v.key_scope.keys, 1);
        assert_eq!(v.key_scope.largest_key_bytes, 512 * MIB);

        let json = serde_json::to_value(&volumes).unwrap();
        let mapping = &json[0]["mappings"][1];
        assert_eq!(mapping["cipher"], "twofish-xts-plain64");
        assert_eq!(mapping["key_bits"], 512);
        assert_eq!(mapping["key_loading"], "keyring");
        assert_eq!(mapping["kind"], "crypt");

        let text = render_status(&volumes);
        for expected in [
            "v: complete\n  health: healthy\n",
            "  members: /dev/vdb (256 MiB), /dev/vdc (256 MiB)\n",
            "  md_tk_v: md raid0 chunk 512 KiB over /dev/vdb /dev/vdc, 536870912 bytes (512 MiB), non-persistent (no superblock)\n",
            &format!("  v: {CRYPT_V}\n"),
            "    /dev/mapper/v (253:0, 536870912 bytes (512 MiB), 512-byte sectors, key via keyring), mounted at /mnt/v (ext4 rw,relatime)\n",
            "  keys: 1 512-bit key(s), at most 536870912 bytes (512 MiB) under one key\n",
            "    512-bit for v, sectors 0..1048576\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
    }

    #[test]
    fn status_shows_the_escrow_file_the_measurement_and_when_the_volume_became_ready() {
        let f = raid0_volume();
        let escrow = f.tree.path().join("escrowed");
        let mut journal = f.env.journals.load("v").unwrap().unwrap();
        journal.measurements = vec![VolumeMeasurement {
            mapping: "v".into(),
            device: PathBuf::from("/dev/tpmrm0"),
            pcr: 15,
            log: PathBuf::from("/run/tosskey/tpm2-measure.log"),
            events: Vec::new(),
            pcr_after: std::collections::BTreeMap::new(),
        }];
        journal.ready = Some(Readiness {
            started_unix_ms: 1_000,
            ready_unix_ms: 3_500,
            verified_sectors: 8,
            mismatched_sectors: 0,
            escrow_file: Some(escrow.clone()),
            filesystem: Some("ext4".into()),
            label: None,
        });
        f.env.journals.save(&journal).unwrap();
        let text = render_status(&status_in(&f.kernel, &f.env, None).unwrap());
        for expected in [
            "  measured: v into PCR 15 of /dev/tpmrm0 (log /run/tosskey/tpm2-measure.log)\n"
                .to_owned(),
            format!("  escrow file: {}, no longer there\n", escrow.display()),
            "  ready 2.5 s after the run started (8 sectors verified, 0 differed)\n".to_owned(),
        ] {
            assert!(text.contains(&expected), "{expected:?} in\n{text}");
        }
        std::fs::write(&escrow, "{}").unwrap();
        let text = render_status(&status_in(&f.kernel, &f.env, None).unwrap());
        assert!(
            text.contains(&format!("  escrow file: {}\n", escrow.display())),
            "{text}"
        );
        // The run mounted it at /mnt/v: once unmounted, status says so.
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        let text = render_status(&status_in(&f.kernel, &f.env, None).unwrap());
        assert!(
            text.contains("  NOT MOUNTED at /mnt/v (where the run mounted it)\n"),
            "{text}"
        );
    }

    #[test]
    fn status_elides_a_hex_key_and_shows_a_shredded_table_as_it_is() {
        let f = raid0_volume();
        let hex = "0123456789abcdef".repeat(8);
        let kernel = FakeKernel::new(&f.env.root);
        kernel
            .dm(
                "v",
                (253, 0),
                "TOSSKEY-b-v",
                &[&CRYPT_V.replace(":64:logon:tosskey:v", &hex)],
            )
            .dm("w", (253, 1), "TOSSKEY-b-w", &["0 2048 error "])
            .dm("other", (253, 2), "CRYPT-PLAIN-other", &["0 2048 error "]);
        let volumes = status_in(&kernel, &f.env, None).unwrap();
        let text = render_status(&volumes);
        assert!(!text.contains(&hex[..16]), "{text}");
        assert!(
            text.contains(&CRYPT_V.replace(":64:logon:tosskey:v", "<key-elided>")),
            "{text}"
        );
        assert!(text.contains("key via hex"), "{text}");
        // A tosskey mapping without a journal, its table no plan node: shown as it is.
        assert_eq!(volumes[1].name, "w");
        assert_eq!(volumes[1].stage, None);
        assert_eq!(volumes[1].other_mappings[0].table, "0 2048 error ");
        // Not tosskey's: not shown.
        assert!(!text.contains("other"), "{text}");
    }

    #[test]
    fn close_unmounts_then_removes_the_stack_top_first_and_forgets_it() {
        let f = raid0_volume();
        let v = DmName::new("v").unwrap();
        let err = close_in(&f.kernel, &f.env, Some(&v), false).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::REFUSED);
        assert!(f.kernel.log().is_empty());
        assert_eq!(
            close_in(&f.kernel, &f.env, Some(&v), true).unwrap(),
            [Closed {
                name: "v".into(),
                left_alone: Vec::new()
            }]
        );
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "remove v", "stop md_tk_v"]
        );
        assert_eq!(f.env.journals.load("v").unwrap(), None);
        drop(f.tree);
    }

    #[test]
    fn shred_wipes_every_crypt_mapping_before_taking_the_stack_down() {
        let f = raid0_volume();
        let message = shred_in(&f.kernel, &f.env, &DmName::new("v").unwrap()).unwrap();
        assert_eq!(
            message,
            "shredded v: key wiped from v and the stack removed"
        );
        assert_eq!(
            f.kernel.log(),
            ["shred v", "detach /mnt/v", "remove v", "stop md_tk_v"]
        );
    }

    fn add_mount(f: &Fixture, line: &str) {
        let path = f.env.root.proc.join("self/mountinfo");
        let text = std::fs::read_to_string(&path).unwrap() + line + "\n";
        std::fs::write(path, text).unwrap();
    }

    /// The volume was unmounted and something else mounted at its directory: close and
    /// shred take the stack down and leave that filesystem where it is, saying so.
    #[test]
    fn close_and_shred_leave_another_filesystem_at_the_mount_point_alone() {
        let foreign = "90 1 8:17 / /mnt/v rw - ext4 /dev/sdb1 rw";
        let note = "left /mnt/v alone: /dev/sdb1 (ext4, 8:17) is mounted there, not v";
        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        add_mount(&f, foreign);
        let v = DmName::new("v").unwrap();
        let closed = close_in(&f.kernel, &f.env, Some(&v), true).unwrap();
        assert_eq!(closed[0].left_alone, [note]);
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "remove v", "stop md_tk_v"]
        );
        let mounts = std::fs::read_to_string(f.env.root.proc.join("self/mountinfo")).unwrap();
        assert!(mounts.contains(foreign), "{mounts}");

        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        add_mount(&f, foreign);
        let message = shred_in(&f.kernel, &f.env, &v).unwrap();
        assert!(message.ends_with(&format!("\n{note}")), "{message}");
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "shred v", "remove v", "stop md_tk_v"]
        );
        let mounts = std::fs::read_to_string(f.env.root.proc.join("self/mountinfo")).unwrap();
        assert!(mounts.contains(foreign), "{mounts}");
    }

    /// Every mount of the volume's own device comes down (a second mount point too), and
    /// one hidden beneath another filesystem is reported, not reached through it.
    #[test]
    fn close_unmounts_every_mount_of_the_volume_and_only_those() {
        let f = raid0_volume();
        add_mount(&f, "92 1 253:0 / /srv/v rw - ext4 /dev/mapper/v rw");
        let v = DmName::new("v").unwrap();
        let closed = close_in(&f.kernel, &f.env, Some(&v), true).unwrap();
        assert!(closed[0].left_alone.is_empty(), "{closed:?}");
        assert_eq!(
            f.kernel.log(),
            [
                "unmount /srv/v",
                "unmount /mnt/v",
                "remove v",
                "stop md_tk_v"
            ]
        );

        let f = raid0_volume();
        add_mount(&f, "93 1 0:50 / /mnt/v rw - tmpfs tmpfs rw");
        let teardown = teardown_steps(
            &f.env.root,
            &f.env.journals.load("v").unwrap().unwrap(),
            &f.kernel.dm_devices().unwrap(),
        )
        .unwrap();
        assert_eq!(
            teardown.left_alone,
            ["v is also mounted at /mnt/v beneath tmpfs (tmpfs, 0:50): left alone; unmount that first"]
        );
        assert!(
            !teardown
                .steps
                .iter()
                .any(|s| matches!(s, crate::exec::TeardownStep::Unmount(_))),
            "{teardown:?}"
        );
    }

    #[test]
    fn names_that_are_not_volume_names_are_usage_errors_and_touch_nothing() {
        let f = raid0_volume();
        for name in ["../v", "v/../v", "a b", ""] {
            for err in [
                close(&f.env, Some(name), true).unwrap_err(),
                shred(&f.env, name).unwrap_err(),
                status(&f.env, Some(name)).unwrap_err(),
            ] {
                assert_eq!(err.exit_code(), crate::error::USAGE, "{name:?}: {err}");
                assert!(err.to_string().contains("is not a volume name"), "{err}");
            }
        }
        assert!(f.env.journals.load("v").unwrap().is_some());
    }

    #[test]
    fn a_journal_naming_devices_tosskey_did_not_make_removes_nothing() {
        // The journal of v lists a cryptsetup mapping and somebody's md array.
        let mut f = raid0_volume();
        f.tree
            .md_array("md0", 0, "raid1", &[("vdb", 0)], 256 * MIB)
            .attr("md0", "md/metadata_version", "1.2");
        f.kernel
            .dm("home", (253, 5), "CRYPT-LUKS2-0123-home", &[])
            .dm("bare", (253, 6), "", &[]);
        for (component, what) in [
            (
                Component::Dm {
                    name: "home".into(),
                    target: Some(MappingTarget::Crypt),
                },
                "dm device home with UUID \"CRYPT-LUKS2-0123-home\"",
            ),
            (
                Component::Dm {
                    name: "bare".into(),
                    target: Some(MappingTarget::Crypt),
                },
                "dm device bare with UUID \"\"",
            ),
            (
                Component::Md { name: "md0".into() },
                "md array md0 (metadata \"1.2\"",
            ),
        ] {
            let mut journal = f.env.journals.load("v").unwrap().unwrap();
            journal.built.insert(0, component);
            f.env.journals.save(&journal).unwrap();
            let v = DmName::new("v").unwrap();
            for err in [
                close_in(&f.kernel, &f.env, Some(&v), true).unwrap_err(),
                shred_in(&f.kernel, &f.env, &v).unwrap_err(),
            ] {
                assert_eq!(err.exit_code(), crate::error::REFUSED, "{err}");
                assert!(err.to_string().contains(what), "{what}: {err}");
            }
            assert!(f.kernel.log().is_empty(), "{:?}", f.kernel.log());
            journal.built.remove(0);
            f.env.journals.save(&journal).unwrap();
        }
    }

    /// What [`build_fake`] made: the tree and kernel (for a test to break a member in), the
    /// environment with the journal, and each node's table as the kernel names devices.
    pub(crate) struct Built {
        pub tree: FakeTree,
        pub kernel: FakeKernel,
        pub env: Environment,
        _state: tempfile::TempDir,
        pub tables: Vec<String>,
    }

    impl Built {
        pub fn status(&self) -> Vec<VolumeStatus> {
            status_in(&self.kernel, &self.env, None).unwrap()
        }
    }

    /// Build `plan` in a fake kernel and sysfs as the executor would (md arrays in sysfs,
    /// dm nodes with their tables, node paths in tables replaced by the numbers the
    /// kernel gave them), then read it back with `status`.
    fn status_of_built(plan: &crate::plan::Plan) -> (Vec<VolumeStatus>, Vec<String>) {
        let built = build_fake(plan);
        (built.status(), built.tables)
    }

    /// Build `plan` in a fake kernel and sysfs as the executor would, with a complete
    /// journal (members vdb, vdc, … as 254:16, 254:32, …; md arrays at 9:127; dm node `i`
    /// as `dm-i`, 253:i).
    pub(crate) fn build_fake(plan: &crate::plan::Plan) -> Built {
        let mut tree = FakeTree::new();
        for m in &plan.members {
            let name = m.path.file_name().unwrap().to_str().unwrap();
            tree.disk(name, (m.major, m.minor), m.size_bytes);
        }
        let kernel_name = |plan: &crate::plan::Plan, d: DeviceRef| match d {
            DeviceRef::Member(i) => plan.members[i]
                .path
                .file_name()
                .unwrap()
                .to_str()
                .unwrap()
                .to_owned(),
            DeviceRef::Node(i) => match plan.nodes[i].kind {
                NodeKind::Md { .. } => plan.nodes[i].name.clone(),
                _ => format!("dm-{i}"),
            },
        };
        let kernel = FakeKernel::new(&tree.root);
        let mut devs: Vec<String> = Vec::new();
        let mut tables = Vec::new();
        for (i, node) in plan.nodes.iter().enumerate() {
            let minor = u32::try_from(i).unwrap();
            match &node.kind {
                NodeKind::Md {
                    level,
                    chunk_bytes,
                    members,
                } => {
                    let slots: Vec<(String, u32)> = members
                        .iter()
                        .zip(0..)
                        .map(|(d, slot)| (kernel_name(plan, *d), slot))
                        .collect();
                    let slots: Vec<(&str, u32)> =
                        slots.iter().map(|(n, s)| (n.as_str(), *s)).collect();
                    tree.md_array(
                        &node.name,
                        127,
                        crate::plan::md_level_name(*level),
                        &slots,
                        node.size_bytes,
                    )
                    .attr(
                        &node.name,
                        "md/chunk_size",
                        &chunk_bytes.to_string(),
                    );
                    devs.push("9:127".to_owned());
                    tables.push(String::new());
                }
                kind => {
                    let below: Vec<String> = match kind {
                        NodeKind::Crypt { device, .. } | NodeKind::Linear { device } => {
                            vec![kernel_name(plan, *device)]
                        }
                        NodeKind::Striped { devices, .. } => {
                            devices.iter().map(|d| kernel_name(plan, *d)).collect()
                        }
                        NodeKind::Md { .. } => unreachable!(),
                    };
                    let below: Vec<&str> = below.iter().map(String::as_str).collect();
                    let uuid = node.uuid.as_deref().unwrap();
                    tree.dm(
                        &format!("dm-{i}"),
                        minor,
                        &node.name,
                        uuid,
                        &below,
                        node.size_bytes,
                    );
                    let mut table = node.table.clone().unwrap();
                    for (j, earlier) in plan.nodes[..i].iter().enumerate() {
                        table = table.replace(
                            &format!("{} ", earlier.path.display()),
                            &format!("{} ", devs[j]),
                        );
                    }
                    tables.push(table.clone());
                    // With hex loading the kernel holds the key itself.
                    let live = table.replace("<key-elided>", &"ab".repeat(64));
                    let lines: Vec<&str> = live.split("; ").collect();
                    kernel.dm(&node.name, (253, minor), uuid, &lines);
                    devs.push(format!("253:{minor}"));
                }
            }
        }
        let state = tempfile::tempdir().unwrap();
        let env = Environment {
            root: tree.root.clone(),
            journals: JournalDir::new(state.path()),
        };
        let mut journal = Journal::new(
            &plan.name,
            "b",
            plan.members.iter().map(|m| m.path.clone()).collect(),
        );
        journal.built = plan
            .nodes
            .iter()
            .map(|n| match n.kind {
                NodeKind::Md { .. } => Component::Md {
                    name: n.name.clone(),
                },
                NodeKind::Crypt { .. } => Component::Dm {
                    name: n.name.clone(),
                    target: Some(MappingTarget::Crypt),
                },
                NodeKind::Striped { .. } => Component::Dm {
                    name: n.name.clone(),
                    target: Some(MappingTarget::Striped),
                },
                NodeKind::Linear { .. } => Component::Dm {
                    name: n.name.clone(),
                    target: Some(MappingTarget::Linear),
                },
            })
            .collect();
        journal.stage = Stage::Complete;
        env.journals.save(&journal).unwrap();
        Built {
            tree,
            kernel,
            env,
            _state: state,
            tables,
        }
    }

    /// Provision arguments and disk counts covering every layout, level and key loading.
    pub(crate) const EVERY_LAYOUT: [(&[&str], usize); 10] = [
        (&[], 1),
        (&[], 2),
        (&["--level", "raid1"], 2),
        (&["--level", "linear"], 2),
        (&["--raid", "dm-stripe"], 3),
        (&["--layout", "per-disk"], 2),
        (&["--layout", "per-disk", "--level", "raid1"], 2),
        (&["--layout", "per-disk", "--raid", "dm-stripe"], 2),
        (&["--key-loading", "hex"], 2),
        (&["--key-scope", "100MiB"], 3),
    ];

    #[test]
    fn status_of_what_a_plan_built_reads_back_as_that_plan() {
        use crate::plan::derive::tests::plan_sized;
        for (args, disks) in EVERY_LAYOUT {
            let plan = plan_sized(args, disks, 256 * MIB).unwrap();
            let (volumes, tables) = status_of_built(&plan);
            let [volume] = volumes.as_slice() else {
                panic!("{args:?}: {volumes:?}")
            };
            assert!(volume.other_mappings.is_empty(), "{args:?}");
            assert_eq!(volume.devices, plan.members, "{args:?}");
            assert_eq!(volume.keys, plan.keys, "{args:?}");
            assert_eq!(volume.key_scope.keys, plan.key_scope.keys, "{args:?}");
            assert_eq!(
                volume.key_scope.largest_key_bytes, plan.key_scope.largest_key_bytes,
                "{args:?}"
            );
            assert_eq!(volume.mappings.len(), plan.nodes.len(), "{args:?}");
            for ((live, planned), table) in volume.mappings.iter().zip(&plan.nodes).zip(&tables) {
                let node = &live.node;
                assert_eq!(
                    (
                        &node.name,
                        &node.path,
                        &node.uuid,
                        node.size_bytes,
                        &node.kind
                    ),
                    (
                        &planned.name,
                        &planned.path,
                        &planned.uuid,
                        planned.size_bytes,
                        &planned.kind
                    ),
                    "{args:?}"
                );
                // The plan's table with built nodes' numbers for their paths.
                assert_eq!(node.table.as_deref().unwrap_or(""), table, "{args:?}");
                if matches!(node.kind, NodeKind::Crypt { .. }) {
                    let mut expected = plan.crypt.clone();
                    if expected.key_loading == KeyLoading::Auto {
                        // What auto loading became: the table names a keyring key.
                        expected.key_loading = KeyLoading::Keyring;
                    }
                    assert_eq!(live.crypt.as_ref(), Some(&expected), "{args:?}");
                }
            }
        }
    }
}
