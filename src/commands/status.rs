//! `status`: looking at the volumes tosskey made.
//!
//! `status` reads the kernel's state back into the plan's own types — each md array and dm
//! mapping a [`Node`] with its table rebuilt as the plan's targets, each crypt segment a
//! [`PlannedKey`], the crypt options [`CryptSettings`] — and [`status_text`] shows
//! them with the renderers a dry run uses, so a live volume reads like its plan. Every
//! kernel operation goes through a [`StackKernel`] and every sysfs/procfs read through the
//! [`SystemRoot`]: host tests run all three commands on fake trees.

use std::path::{Path, PathBuf};
use tosskey_sysutil::SECTOR_SIZE;

use anyhow::Context as _;
use tosskey_crypto::CipherSpec;
use tosskey_dm::{
    CryptKeyField, CryptParams, CryptTable, DevId, DeviceInfo, DmControl, DmName, KeyRef,
    LinearParams, LinearTarget, Sectors, StripedParams, StripedTarget, TableEntry, TargetParams,
};
use tosskey_raid::MdSysfs as _;

use crate::commands::health;
use crate::commands::volume::{
    BindState, Health, HealthState, LiveMount, LiveNode, OtherMapping, VolumeStatus,
};
use crate::error::{Error, Refusal, Result, UnhealthyState, Usage};
use crate::exec::kernel::{HostKernel, StackKernel};
use crate::exec::mount::mounts_of;
use crate::names;
use std::fmt::Write as _;

use crate::commands::Environment;
use crate::exec::journal::{Component, Journal, Stage};
use crate::host::sysfs::{MountEntry, SystemRoot, SystemState};
use crate::plan::render::{
    bytes_and_human, describe_node, human_bytes, join_lines, keys_section, target_lines,
};
use crate::plan::{
    CryptSegment, CryptSettings, DeviceRef, DmTarget, EscrowCrypt, KeyLoading, KeyScope, MdLevel,
    Node, NodeKind, PlannedKey, PlannedMember, SectorRange,
};

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
            binds: Vec::new(),
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
        let size_bytes = entries.iter().map(|e| e.length.0 * SECTOR_SIZE).sum();
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
                    table: join_lines(entries.iter().map(|e| e.to_string()).collect()),
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
                .map(|k| k.covers.length * SECTOR_SIZE)
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
            "striped" | "linear" if entries.len() == 1 => {
                // A table that does not parse is none tosskey builds: shown as it is.
                Ok(match first.target_params() {
                    Ok(TargetParams::Striped(params)) => self.read_striped(system, first, &params),
                    Ok(TargetParams::Linear(params)) => {
                        Some(self.read_linear(system, first, params))
                    }
                    _ => None,
                })
            }
            _ => Ok(None),
        }
    }

    /// A one-line `striped` table as the plan's stripe node (`None`: not whole chunks on
    /// each stripe, which tosskey never builds).
    fn read_striped(
        &mut self,
        system: &SystemState,
        entry: &TableEntry,
        params: &StripedParams,
    ) -> Option<ReadBack> {
        let target = StripedTarget::from_params(entry.length, params).ok()?;
        let devices = params
            .stripes
            .iter()
            .map(|stripe| self.device_ref(system, stripe.device))
            .collect();
        Some(ReadBack {
            kind: NodeKind::Striped {
                chunk_bytes: params.chunk.0 * SECTOR_SIZE,
                devices,
            },
            target: DmTarget::Striped(target),
            key_refs: None,
            crypt: None,
        })
    }

    /// A one-line `linear` table as the plan's linear node.
    fn read_linear(
        &mut self,
        system: &SystemState,
        entry: &TableEntry,
        params: LinearParams,
    ) -> ReadBack {
        let device = self.device_ref(system, params.device);
        ReadBack {
            kind: NodeKind::Linear { device },
            target: DmTarget::Linear(LinearTarget::from_params(entry.length, params)),
            key_refs: None,
            crypt: None,
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
        let Some((cipher, table)) = rebuild_crypt_table(entries, &params)? else {
            return Ok(None);
        };
        let Some(key_bytes) = segment_key_bytes(&params) else {
            return Ok(None);
        };
        let keyring = keyring_refs(&params);
        let bits = u32::try_from(key_bytes * 8).expect("a crypt key has few bits");
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
        let first = params[0];
        let settings = crypt_settings(first, cipher, bits, keyring.is_some());
        let device = self.device_ref(system, first.device);
        Ok(Some(ReadBack {
            kind: NodeKind::Crypt { device, segments },
            target: DmTarget::Crypt(table),
            key_refs: keyring,
            crypt: Some(settings),
        }))
    }
}

/// The plan's crypt table that `entries` (with their parsed `params`) are, if they are one:
/// the first segment's target over the whole length, cut at the segments' lengths, must give
/// back every segment as the kernel has it. `None` for a table tosskey does not build (a
/// segment with options it never sets is shown as it is).
fn rebuild_crypt_table(
    entries: &[TableEntry],
    params: &[&CryptParams],
) -> Result<Option<(CipherSpec, CryptTable)>> {
    let first = params[0];
    let total = Sectors(entries.iter().map(|e| e.length.0).sum());
    let (Ok(cipher), Some(whole), true) = (
        first.cipher.parse::<CipherSpec>(),
        first.target(total)?,
        params.iter().all(|p| p.other_options.is_empty()),
    ) else {
        return Ok(None);
    };
    let lengths: Vec<Sectors> = entries.iter().map(|e| e.length).collect();
    let Ok(table) = CryptTable::from_lengths(&whole, &lengths) else {
        return Ok(None);
    };
    let rebuilt =
        table
            .segments()
            .iter()
            .zip(entries.iter().zip(params))
            .all(|(segment, (entry, p))| {
                segment.start == entry.start
                    && segment.target.cipher() == p.cipher
                    && segment.target.device() == p.device
                    && segment.target.offset() == p.offset
                    && segment.target.iv_offset() == p.iv_offset
                    && segment.target.options() == p.options
            });
    Ok(rebuilt.then_some((cipher, table)))
}

/// The key length every segment shows, if they all show one and the same.
fn segment_key_bytes(params: &[&CryptParams]) -> Option<usize> {
    let bytes: Vec<usize> = params
        .iter()
        .map(|p| match &p.key {
            CryptKeyField::Keyring { bytes, .. } | CryptKeyField::Hex { bytes } => Some(*bytes),
            CryptKeyField::None | CryptKeyField::Elided => None,
        })
        .collect::<Option<_>>()?;
    bytes.iter().all(|&n| n == bytes[0]).then_some(bytes[0])
}

/// Each segment's logon-key reference, if every segment loads its key from the keyring.
fn keyring_refs(params: &[&CryptParams]) -> Option<Vec<KeyRef>> {
    params
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
        .collect()
}

/// The plan's crypt settings a live crypt segment shows.
fn crypt_settings(
    first: &CryptParams,
    cipher: CipherSpec,
    bits: u32,
    keyring: bool,
) -> CryptSettings {
    CryptSettings {
        format: EscrowCrypt {
            cipher,
            key_bits: bits,
            sector_size: first.options.sector_size,
            iv_large_sectors: first.options.iv_large_sectors,
            iv_offset: first.iv_offset.0,
            data_offset: first.offset.0,
            allow_discards: first.options.allow_discards,
        },
        allow_discards: first.options.allow_discards,
        no_read_workqueue: first.options.no_read_workqueue,
        no_write_workqueue: first.options.no_write_workqueue,
        key_loading: if keyring {
            KeyLoading::Keyring
        } else {
            KeyLoading::Hex
        },
    }
}

/// A volume name from the command line: a dm name (so it cannot lead anywhere else).
pub(crate) fn volume_name(name: &str) -> Result<DmName> {
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
        .filter(|d| d.uuid.as_deref().is_some_and(names::is_tosskey_uuid))
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
        let volume_dev = ours
            .iter()
            .find(|d| d.name.as_str() == journal.name)
            .map(|d| d.dev);
        volume.binds = bind_states(&system.mounts, journal, volume_dev);
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

/// Each bind `journal` records, in place when the topmost mount at its directory is the
/// volume (`volume_dev`) at its `/bind/DIR`.
fn bind_states(
    mounts: &[MountEntry],
    journal: &Journal,
    volume_dev: Option<DevId>,
) -> Vec<BindState> {
    journal
        .binds
        .iter()
        .map(|bind| {
            let top = mounts
                .iter()
                .rfind(|m| Path::new(&m.mount_point) == bind.dir);
            BindState {
                dir: bind.dir.clone(),
                source: bind.source.clone(),
                in_place: top.is_some_and(|m| {
                    Some(m.dev) == volume_dev && Path::new(&m.root) == names::bind_root(&bind.dir)
                }),
            }
        })
        .collect()
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
        HealthState::Healthy => Ok(line + "\n"),
        HealthState::Degraded => Err(Error::Unhealthy {
            state: UnhealthyState::Degraded,
            message: line,
        }),
        HealthState::Failed => Err(Error::Unhealthy {
            state: UnhealthyState::Failed,
            message: line,
        }),
    }
}

/// Render `status` for humans.
pub fn render_status(volumes: &[VolumeStatus]) -> String {
    status_text(volumes)
}

/// `status` for humans: per volume its journal's stage and health (the failed members
/// named), its members, then each node that exists, bottom first, as a dry run shows it
/// (with its device number, size and mounts below), its keys, and what the run that made
/// it recorded: escrow file, measurement, when it became ready.
pub fn status_text(volumes: &[VolumeStatus]) -> String {
    let mut out = String::new();
    if volumes.is_empty() {
        out.push_str("no tosskey volumes in this boot\n");
    }
    for volume in volumes {
        write_stage_health_and_members(&mut out, volume);
        for live in &volume.mappings {
            write_live_node(&mut out, volume, live);
        }
        for other in &volume.other_mappings {
            let _ = writeln!(
                out,
                "  {}: {} (not a table tosskey builds: shredded?)\n    {} ({})",
                other.name,
                other.table,
                other.path.display(),
                other.dev
            );
        }
        if !volume.keys.is_empty() {
            keys_section(
                &mut out,
                "  ",
                &volume.keys,
                volume.key_scope.largest_key_bytes,
                "",
            );
        }
        write_recorded_run(&mut out, volume);
    }
    out
}

/// The volume's first lines: name and journal stage, health with its findings, members.
fn write_stage_health_and_members(out: &mut String, volume: &VolumeStatus) {
    let stage = match volume.stage {
        Some(Stage::Complete) => "complete",
        Some(Stage::Building) => "incomplete (a run did not finish: `tosskey close` cleans up)",
        Some(Stage::Shredded) => {
            "shredded (keys wiped; the mappings fail every I/O until `tosskey close` removes them)"
        }
        None => "no journal",
    };
    let _ = writeln!(out, "{}: {stage}", volume.name);
    let health = &volume.health;
    let _ = writeln!(out, "  health: {}", health.state.word());
    for finding in &health.findings {
        let _ = writeln!(out, "    {finding}");
    }
    if !volume.members.is_empty() {
        let members: Vec<String> = volume
            .members
            .iter()
            .map(
                |path| match volume.devices.iter().find(|d| &d.path == path) {
                    Some(d) => format!("{} ({})", path.display(), human_bytes(d.size_bytes)),
                    None => path.display().to_string(),
                },
            )
            .collect();
        let _ = writeln!(out, "  members: {}", members.join(", "));
    }
}

/// One node as a dry run shows it, then its path, device number, size, crypt sector size
/// and key loading, mounts, and whether it is suspended.
fn write_live_node(out: &mut String, volume: &VolumeStatus, live: &LiveNode) {
    let node = &live.node;
    let _ = writeln!(
        out,
        "  {}",
        describe_node(node, |d| volume.device_path(d).display().to_string())
    );
    let _ = write!(out, "    {} ({}", node.path.display(), live.dev);
    if !matches!(node.kind, NodeKind::Md { .. }) {
        let _ = write!(out, ", {}", bytes_and_human(node.size_bytes));
    }
    if let Some(crypt) = &live.crypt {
        let _ = write!(
            out,
            ", {}-byte sectors, key via {}",
            crypt.format.sector_size,
            key_loading_word(crypt.key_loading, volume.key_loading_fallback.as_deref())
        );
    }
    let _ = write!(out, ")");
    let mounts: Vec<String> = live
        .mounts
        .iter()
        .map(|m| format!("{} ({} {})", m.mount_point, m.fs_type, m.options))
        .collect();
    if !mounts.is_empty() {
        let _ = write!(out, ", mounted at {}", mounts.join(", "));
    }
    if live.suspended {
        let _ = write!(out, ", SUSPENDED");
    }
    out.push('\n');
}

/// What the run that made the volume recorded, checked against now: its mount, the
/// measurements, the escrow file, when it became ready and what verification found.
fn write_recorded_run(out: &mut String, volume: &VolumeStatus) {
    if let Some(dir) = &volume.mount {
        if !volume.mappings.iter().any(|m| {
            m.mount_points
                .iter()
                .any(|p| dir == std::path::Path::new(p))
        }) {
            let _ = writeln!(
                out,
                "  NOT MOUNTED at {} (where the run mounted it)",
                dir.display()
            );
        }
    }
    for bind in &volume.binds {
        if bind.in_place {
            let _ = writeln!(
                out,
                "  bind: {} from {}",
                bind.dir.display(),
                bind.source.display()
            );
        } else {
            let _ = writeln!(
                out,
                "  bind NOT IN PLACE: {} (from {}; `tosskey provision` with the same flags binds it again)",
                bind.dir.display(),
                bind.source.display()
            );
        }
    }
    for measured in &volume.measurements {
        let _ = writeln!(
            out,
            "  measured: {} into PCR {} of {} (log {})",
            measured.mapping,
            measured.pcr,
            measured.device.display(),
            measured.log.display()
        );
    }
    if let Some(ready) = &volume.ready {
        if let Some(file) = &ready.escrow_file {
            let there = if file.exists() {
                ""
            } else {
                ", no longer there"
            };
            let _ = writeln!(out, "  escrow file: {}{there}", file.display());
        }
        let _ = writeln!(
            out,
            "  ready {:.1} s after the run started ({} sectors verified, {} differed)",
            ready.ready_unix_ms.saturating_sub(ready.started_unix_ms) as f64 / 1000.0,
            ready.verified_sectors,
            ready.mismatched_sectors
        );
    }
}

/// How a live table holds its keys, with the reason when `--key-loading auto` had to put
/// them in the table as hex (the journal records it).
fn key_loading_word(loading: KeyLoading, fallback: Option<&str>) -> String {
    match (loading, fallback) {
        (KeyLoading::Hex, Some(reason)) => format!("hex (fallback: {reason})"),
        (KeyLoading::Auto, _) => "auto".to_owned(),
        (KeyLoading::Keyring, _) => "keyring".to_owned(),
        (KeyLoading::Hex, None) => "hex".to_owned(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use tosskey_sysutil::fake::FakeTree;

    use super::*;
    use crate::exec::journal::{JournalDir, MappingTarget, Readiness};
    use crate::exec::kernel::fake::FakeKernel;
    use crate::exec::measure::VolumeMeasurement;

    pub(crate) const MIB: u64 = 1 << 20;
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
    fn status_and_metrics_list_the_binds_and_whether_each_is_in_place() {
        let f = raid0_volume();
        let mut journal = f.env.journals.load("v").unwrap().unwrap();
        for dir in ["/var/lib/containerd", "/var/log/pods"] {
            journal.binds.push(crate::exec::journal::RecordedBind {
                dir: PathBuf::from(dir),
                source: PathBuf::from(format!("/mnt/v/bind{dir}")),
            });
        }
        f.env.journals.save(&journal).unwrap();
        // containerd is bound from the volume; pods has the volume's root there instead.
        let mountinfo = f.env.root.proc.join("self/mountinfo");
        let text = std::fs::read_to_string(&mountinfo).unwrap()
            + "95 1 253:0 /bind/var/lib/containerd /var/lib/containerd rw - ext4 /dev/mapper/v rw\n"
            + "96 1 253:0 / /var/log/pods rw - ext4 /dev/mapper/v rw\n";
        std::fs::write(&mountinfo, text).unwrap();
        let volumes = status_in(&f.kernel, &f.env, None).unwrap();
        let binds: Vec<(&str, bool)> = volumes[0]
            .binds
            .iter()
            .map(|b| (b.dir.to_str().unwrap(), b.in_place))
            .collect();
        assert_eq!(
            binds,
            [("/var/lib/containerd", true), ("/var/log/pods", false)]
        );
        let json = serde_json::to_value(&volumes).unwrap();
        assert_eq!(
            json[0]["binds"][0]["source"],
            "/mnt/v/bind/var/lib/containerd"
        );
        assert_eq!(json[0]["binds"][1]["in_place"], false);
        let text = render_status(&volumes);
        for expected in [
            "  bind: /var/lib/containerd from /mnt/v/bind/var/lib/containerd\n",
            "  bind NOT IN PLACE: /var/log/pods (from /mnt/v/bind/var/log/pods; `tosskey provision` with the same flags binds it again)\n",
        ] {
            assert!(text.contains(expected), "{expected:?} in\n{text}");
        }
        let metrics = crate::commands::metrics::render(&volumes);
        for series in [
            "tosskey_volume_mount_in_place{volume=\"v\",kind=\"bind\",path=\"/var/lib/containerd\"} 1\n",
            "tosskey_volume_mount_in_place{volume=\"v\",kind=\"bind\",path=\"/var/log/pods\"} 0\n",
        ] {
            assert!(metrics.contains(series), "{series} in\n{metrics}");
        }
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

    #[test]
    fn status_says_why_keys_were_loaded_as_hex() {
        let reason =
            "the kernel has no logon keys (add_key: Function not implemented (os error 38))";
        assert_eq!(
            key_loading_word(KeyLoading::Hex, Some(reason)),
            format!("hex (fallback: {reason})")
        );
        assert_eq!(key_loading_word(KeyLoading::Hex, None), "hex");
        assert_eq!(key_loading_word(KeyLoading::Keyring, None), "keyring");
    }
}
