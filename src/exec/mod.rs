//! Execute: build a [`Plan`]'s nodes bottom-up, and tear down what a journal recorded.
//! Provision and recover both build through [`Executor`] (provision with fresh keys, recover
//! with escrowed ones); close and reruns tear down through [`teardown`]. Every kernel
//! operation of both — and of the undo steps a failed build runs — goes through one
//! [`StackKernel`], so host tests build and undo every layout against a fake kernel.
//!
//! Every kernel object is recorded in the [`Journal`] *before* it is created and registered
//! with the [`Rollback`] right after (`Executor::create`, the one way a run makes one), so a
//! failure undoes it and a SIGKILL leaves a record a rerun can clean up.

pub mod af_alg;
pub mod bind;
#[cfg(test)]
mod build_tests;
pub mod facilities;
pub mod harden;
pub mod hooks;
pub mod journal;
pub mod kernel;
pub mod measure;
pub mod mount;
pub mod rollback;
pub mod verify;

use std::fs::File;
use std::path::{Path, PathBuf};
use std::rc::Rc;
use tosskey_sysutil::SECTOR_SIZE;

use anyhow::Context as _;
use serde::Serialize;
use tosskey_crypto::key::KeyArena;
use tosskey_crypto::sector::{SectorLayout, SectorSize};
use tosskey_dm::{CryptTable, DevId, DeviceInfo, DmControl, DmName, DmUuid, KeyLoaded, Sectors};
use tosskey_raid::ArraySpec;

use crate::error::{Error, Result};
use crate::exec::bind::BoundDir;
use crate::exec::facilities::KernelFacilities;
use crate::exec::hooks::crash_point;
use crate::exec::journal::{
    Component, Journal, JournalDir, MappingTarget, RecordedBind, RecordedOption, Stage,
};
use crate::exec::kernel::{HostKernel, StackKernel};
use crate::exec::measure::VolumeMeasurement;
use crate::exec::rollback::Rollback;
use crate::exec::verify::{
    pick_sectors, verify_ranges, Encryption, KeyedRange, RawSide, Sides, VerifyReport,
    RANDOM_SECTORS,
};
use crate::host::safety::MemberClaims;
use crate::host::sysfs::SystemRoot;
use crate::names::{self, UUID_PREFIX};
use crate::plan::{
    DeviceRef, DmTarget, Filesystem, KeyLoading, MdLevel, Node, NodeKind, Plan, PlannedBind,
    VolumeRef,
};

/// One live crypt mapping of the stack.
#[derive(Debug, Clone, Serialize)]
pub struct CryptMapping {
    pub name: String,
    pub node: PathBuf,
    /// The device under it (the array, or a member for per-disk).
    pub backing: PathBuf,
    /// The live table as the kernel reports it, key elided.
    pub table: String,
    /// `keyring`, `hex`, or `hex (fallback: <reason>)` when `--key-loading auto` found no
    /// keyring support for dm-crypt in this kernel.
    pub key_loaded: String,
    /// How many keys (segments) the mapping has.
    pub keys: usize,
    /// Every segment's first and last sector and random ones, each decrypted with its key.
    pub verification: VerifyReport,
}

/// What was built.
#[derive(Debug, Clone, Serialize)]
pub struct BuiltStack {
    /// The volume: `/dev/mapper/<name>`.
    pub node: PathBuf,
    /// The md array or dm stripe, if any.
    pub assembled: Option<PathBuf>,
    pub crypt: Vec<CryptMapping>,
}

/// A run that builds: its journal, its undo stack and the kernel it builds in.
pub struct Executor<'a> {
    facilities: KernelFacilities,
    /// Shared with the undo steps, which take down what was built through it.
    kernel: Rc<dyn StackKernel>,
    journal: Journal,
    journals: &'a JournalDir,
    rollback: Rollback,
    /// The members' exclusive opens from the safety checks, each released right before
    /// the node built on it is created.
    claims: MemberClaims,
}

impl std::fmt::Debug for Executor<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Executor")
            .field("facilities", &self.facilities)
            .field("journal", &self.journal)
            .field("rollback", &self.rollback)
            .finish_non_exhaustive()
    }
}

impl<'a> Executor<'a> {
    /// Start a run for volume `name` over `members`, provisioned with `options`, building
    /// in the running kernel: device-mapper is up and the journal exists (and is removed on
    /// rollback) before anything is built.
    pub fn start(
        root: &SystemRoot,
        journals: &'a JournalDir,
        mut facilities: KernelFacilities,
        name: &str,
        boot_id: &str,
        members: Vec<PathBuf>,
        options: Vec<RecordedOption>,
    ) -> Result<Self> {
        facilities.device_mapper()?;
        let kernel = Rc::new(HostKernel::open(root)?);
        Self::start_in(
            journals, facilities, kernel, name, boot_id, members, options,
        )
    }

    /// [`Executor::start`] building in `kernel` (the running one, whose device-mapper
    /// `facilities` brought up, or a fake one in host tests).
    pub fn start_in(
        journals: &'a JournalDir,
        facilities: KernelFacilities,
        kernel: Rc<dyn StackKernel>,
        name: &str,
        boot_id: &str,
        members: Vec<PathBuf>,
        options: Vec<RecordedOption>,
    ) -> Result<Self> {
        let mut journal = Journal::new(name, boot_id, members);
        journal.options = options;
        journals.save(&journal)?;
        let mut rollback = Rollback::new();
        let (dir, volume) = (journals.clone(), name.to_owned());
        rollback.push(format!("journal of {name}"), move || dir.remove(&volume));
        crash_point("journal");
        Ok(Executor {
            facilities,
            kernel,
            journal,
            journals,
            rollback,
            claims: MemberClaims::default(),
        })
    }

    /// Keep the members' exclusive opens until [`Executor::build`] hands each member to md
    /// or dm: nothing else can claim or mount a member in between.
    pub fn hold_claims(&mut self, claims: MemberClaims) {
        self.claims = claims;
    }

    /// Record `component` in the journal, create it, register its undo: the one way this
    /// run makes a kernel object. `create` cleans up after itself if it fails.
    fn create<T>(
        &mut self,
        component: Component,
        create: impl FnOnce(&dyn StackKernel) -> Result<T>,
    ) -> Result<T> {
        self.journal.built.push(component.clone());
        self.journals.save(&self.journal)?;
        let made = create(&*self.kernel)?;
        let kernel = Rc::clone(&self.kernel);
        match component {
            Component::Dm { name, .. } => {
                let undo = DmName::new(&name)?;
                self.rollback.push(format!("dm mapping {name}"), move || {
                    Ok(kernel.remove_dm(&undo)?)
                });
            }
            Component::Md { name } => {
                let undo = name.clone();
                self.rollback.push(format!("md array {name}"), move || {
                    Ok(kernel.stop_md(&undo)?)
                });
            }
        }
        Ok(made)
    }

    /// Register the removal of a file this run wrote (the escrow file).
    pub fn wrote_file(&mut self, path: &Path) {
        let undo = path.to_path_buf();
        self.rollback
            .push(format!("file {}", path.display()), move || {
                Ok(std::fs::remove_file(&undo)?)
            });
    }

    /// Register moving a file this run moved from `original` to `moved_to` back (an
    /// earlier volume's escrow file, rotated aside).
    pub fn moved_file(&mut self, moved_to: &Path, original: &Path) {
        let (from, to) = (moved_to.to_path_buf(), original.to_path_buf());
        self.rollback.push(
            format!("file {} (moved from {})", from.display(), to.display()),
            move || Ok(std::fs::rename(&from, &to)?),
        );
    }

    /// Mount `volume` of `plan` (holding `filesystem`) at its directory, register the
    /// unmount, and record the plan's mount point in the journal: the volume's own, or with
    /// `--raid none` the base directory, each volume's directory following from its index.
    /// A plan without a mount point mounts nothing.
    pub fn mount_volume(
        &mut self,
        plan: &Plan,
        volume: VolumeRef<'_>,
        filesystem: Filesystem,
        read_only: bool,
    ) -> Result<()> {
        let (Some(dir), Some(recorded)) = (volume.mount, plan.mount.as_deref()) else {
            return Ok(());
        };
        let node = volume.node.path.as_path();
        self.facilities.filesystem(filesystem)?;
        self.kernel.mount(node, dir, filesystem, read_only)?;
        let (kernel, undo) = (Rc::clone(&self.kernel), dir.to_path_buf());
        self.rollback
            .push(format!("mount {}", dir.display()), move || {
                Ok(kernel.unmount(&undo)?)
            });
        self.journal.mount = Some(recorded.to_path_buf());
        self.journals.save(&self.journal)?;
        crash_point("mount");
        Ok(())
    }

    /// `--bind`: create `bind.dir` if missing, copy its contents onto the mounted volume,
    /// record the bind in the journal and bind-mount the copy over `bind.dir`, registering
    /// the unmount (and the removal of the directories created). A failure names the file.
    pub fn bind(&mut self, bind: &PlannedBind) -> Result<BoundDir> {
        let created = crate::exec::bind::create_missing_dirs(&bind.dir)?;
        if !created.is_empty() {
            self.rollback.push(
                format!("directories created for --bind {}", bind.dir.display()),
                move || {
                    for dir in created.iter().rev() {
                        std::fs::remove_dir(dir)?;
                    }
                    Ok(())
                },
            );
        }
        let copied = crate::exec::bind::copy_onto_volume(bind)?;
        crash_point("copy");
        self.journal.binds.push(RecordedBind {
            dir: bind.dir.clone(),
            source: bind.source.clone(),
        });
        self.journals.save(&self.journal)?;
        self.kernel.bind(&bind.source, &bind.dir)?;
        let (kernel, undo) = (Rc::clone(&self.kernel), bind.dir.clone());
        self.rollback
            .push(format!("bind {}", bind.dir.display()), move || {
                Ok(kernel.unmount(&undo)?)
            });
        crash_point("bind");
        Ok(BoundDir {
            dir: bind.dir.clone(),
            source: bind.source.clone(),
            entries: copied.entries,
            bytes: copied.bytes,
        })
    }

    /// What the kernel had or was given for this run, in order.
    pub fn kernel_facilities(&self) -> &[tosskey_kmod::Outcome] {
        self.facilities.outcomes()
    }

    /// Record what was measured into the TPM (shown by `status`).
    pub fn measured(&mut self, measurements: &[VolumeMeasurement]) -> Result<()> {
        self.journal.measurements = measurements.to_vec();
        Ok(self.journals.save(&self.journal)?)
    }

    /// Bring up the kernel facilities `plan` lists, then build every node bottom-up with
    /// `keys` (`plan.keys` order). A facility that cannot come up fails before the first
    /// node.
    pub fn build(&mut self, plan: &Plan, keys: &KeyArena) -> Result<BuiltStack> {
        if keys.len() != plan.keys.len() {
            return Err(Error::Failed(anyhow::anyhow!(
                "{} keys for the plan's {}",
                keys.len(),
                plan.keys.len()
            )));
        }
        self.facilities.ensure(plan)?;
        let mut devs: Vec<DevId> = Vec::with_capacity(plan.nodes.len());
        let mut crypt = Vec::new();
        for (index, node) in plan.nodes.iter().enumerate() {
            // md and dm claim their devices exclusively: ours must be gone first.
            for member in members_used(&node.kind) {
                self.claims.release(member);
            }
            let target = plan.dm_target(index, |d| plan.dev_id(d, &devs))?;
            let built = match (&node.kind, target) {
                (NodeKind::Md { .. }, _) => self.build_md(plan, node, &devs)?,
                (NodeKind::Crypt { device, segments }, Some(DmTarget::Crypt(table))) => {
                    let node_keys: Vec<&[u8]> = segments
                        .iter()
                        .map(|s| keys.key(s.key).expect("plan and arena have the same keys"))
                        .collect();
                    let mapping =
                        self.open_crypt(plan, node, &table, *device, &devs, &node_keys)?;
                    let dev = mapping.0;
                    crypt.push(mapping.1);
                    dev
                }
                (_, Some(DmTarget::Striped(target))) => {
                    let dev = self.plain_mapping(node, &target.line(Sectors(0))?)?;
                    crash_point("assembly");
                    dev
                }
                (_, Some(DmTarget::Linear(target))) => {
                    self.plain_mapping(node, &target.line(Sectors(0))?)?
                }
                _ => unreachable!("dm_target follows the node kind"),
            };
            devs.push(built);
        }
        let assembled = plan
            .nodes
            .iter()
            .find(|n| matches!(n.kind, NodeKind::Md { .. } | NodeKind::Striped { .. }))
            .map(|n| n.path.clone());
        Ok(BuiltStack {
            node: plan.volume().path.clone(),
            assembled,
            crypt,
        })
    }

    fn build_md(&mut self, plan: &Plan, node: &Node, devs: &[DevId]) -> Result<DevId> {
        let spec = array_spec(plan, node, devs);
        let array = self.create(
            Component::Md {
                name: node.name.clone(),
            },
            |kernel| kernel.assemble_md(&spec),
        )?;
        crash_point("assembly");
        let size_bytes = array.size_bytes;
        if size_bytes != node.size_bytes {
            return Err(Error::Failed(anyhow::anyhow!(
                "md array {} has {size_bytes} bytes but the plan computed {}: the kernel sized it differently, nothing above it was built",
                node.name,
                node.size_bytes
            )));
        }
        Ok(array.dev)
    }

    fn names(node: &Node) -> Result<(DmName, DmUuid)> {
        let uuid = node.uuid.as_deref().expect("dm nodes have a UUID");
        Ok((DmName::new(&node.name)?, DmUuid::new(uuid)?))
    }

    /// A keyless mapping (stripe, linear): create, load, resume.
    fn plain_mapping(&mut self, node: &Node, line: &tosskey_dm::TargetLine) -> Result<DevId> {
        let (name, uuid) = Self::names(node)?;
        let target = match node.kind {
            NodeKind::Striped { .. } => MappingTarget::Striped,
            _ => MappingTarget::Linear,
        };
        self.create(
            Component::Dm {
                name: node.name.clone(),
                target: Some(target),
            },
            |kernel| kernel.create_dm(&name, &uuid),
        )?;
        self.kernel.load_dm(&name, std::slice::from_ref(line))?;
        self.kernel.resume_dm(&name)
    }

    /// Create crypt node `node` over `device` as `table` (segment `i` keyed with `keys[i]`)
    /// and prove every segment with the userspace cipher.
    fn open_crypt(
        &mut self,
        plan: &Plan,
        node: &Node,
        table: &CryptTable,
        device: DeviceRef,
        devs: &[DevId],
        keys: &[&[u8]],
    ) -> Result<(DevId, CryptMapping)> {
        let (name, uuid) = Self::names(node)?;
        let loading = match plan.crypt.key_loading {
            KeyLoading::Auto => tosskey_dm::KeyLoading::Auto,
            KeyLoading::Keyring => tosskey_dm::KeyLoading::Keyring,
            KeyLoading::Hex => tosskey_dm::KeyLoading::Hex,
        };
        self.create(
            Component::Dm {
                name: node.name.clone(),
                target: Some(MappingTarget::Crypt),
            },
            |kernel| kernel.create_dm(&name, &uuid),
        )?;
        let key_loaded = self.kernel.load_crypt(&name, table, keys, loading)?;
        let dev = self.kernel.resume_dm(&name)?;
        crash_point("crypt");
        if let KeyLoaded::HexFallback { reason } = &key_loaded {
            eprintln!(
                "tosskey: warning: {name}: key loaded as hex, which the live table keeps and returns to any CAP_SYS_ADMIN process: {reason}"
            );
            self.journal.key_loading_fallback = Some(reason.to_string());
            self.journals.save(&self.journal)?;
        }
        let node_path = DmControl::node_path(&name);
        let verification = self.verify_crypt(plan, table, device, devs, keys, &node_path)?;
        crash_point("verify");
        let live_table = self
            .kernel
            .dm_table(&name)?
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join("; ");
        Ok((
            dev,
            CryptMapping {
                name: node.name.clone(),
                node: node_path,
                backing: plan.device_path(device).to_path_buf(),
                table: live_table,
                key_loaded: key_loaded.to_string(),
                keys: table.len(),
                verification,
            },
        ))
    }

    /// Read every segment of crypt mapping `mapping` (built as `table` over `device`, keyed
    /// with `keys`) at its first, last and random sectors and compare with the userspace
    /// decryption of the device below: a mismatch is an error.
    fn verify_crypt(
        &self,
        plan: &Plan,
        table: &CryptTable,
        device: DeviceRef,
        devs: &[DevId],
        keys: &[&[u8]],
        mapping: &Path,
    ) -> Result<VerifyReport> {
        let crypt = &plan.crypt;
        let layout = SectorLayout {
            sector_size: SectorSize::try_from(u64::from(crypt.format.sector_size))?,
            iv_large_sectors: crypt.format.iv_large_sectors,
            iv_offset: crypt.format.iv_offset,
        };
        let backing = plan.device_path(device);
        let raw = self.kernel.open_direct(backing)?;
        let mapped = self.kernel.open_direct(mapping)?;
        let mirrored = mirrored_array(plan, device, devs);
        let mirror_files = match &mirrored {
            Some(spec) => spec
                .members
                .iter()
                .map(|member| self.kernel.open_direct(&member.path))
                .collect::<Result<Vec<File>>>()?,
            None => Vec::new(),
        };
        let copies = |offset: u64| {
            mirrored
                .as_ref()
                .and_then(|spec| spec.copies_of(offset))
                .unwrap_or_default()
        };
        let raw_side = match &mirrored {
            Some(_) => RawSide::Mirrors {
                members: &mirror_files,
                copies: &copies,
            },
            None => RawSide::Device(&raw),
        };
        let ranges = keyed_ranges(table, keys);
        // Random sectors shared out: at least one per segment, RANDOM_SECTORS in all.
        let picks = pick_sectors(
            &ranges,
            crypt.format.sector_size,
            RANDOM_SECTORS.div_ceil(ranges.len()),
        )?;
        let verification = verify_ranges(
            Sides {
                raw: raw_side,
                raw_offset: crypt.format.data_offset * SECTOR_SIZE,
                mapping: &mapped,
                sector_size: crypt.format.sector_size,
                encryption: Encryption {
                    cipher: crypt.format.cipher.block_cipher(),
                    layout,
                },
                ranges: &ranges,
            },
            &picks,
        )
        .with_context(|| {
            format!(
                "verifying {} against {}",
                mapping.display(),
                backing.display()
            )
        })?;
        let mismatched = verification.checks.iter().filter(|c| !c.matched).count();
        if mismatched > 0 {
            return Err(Error::VerifyMismatch {
                mapping: mapping.display().to_string(),
                mismatched,
                checked: verification.checks.len(),
            });
        }
        Ok(verification)
    }

    /// Keep what was built if `result` is a success (the journal says complete); otherwise
    /// undo it, newest first.
    pub fn finish<T>(mut self, result: Result<T>) -> Result<T> {
        let result = result.and_then(|value| {
            self.journal.stage = Stage::Complete;
            self.journals.save(&self.journal)?;
            Ok(value)
        });
        self.rollback.settle(result)
    }
}

/// What md array `node` of `plan` is built as; `devs`: the numbers of the nodes built so far.
fn array_spec(plan: &Plan, node: &Node, devs: &[DevId]) -> ArraySpec {
    let NodeKind::Md {
        level,
        chunk_bytes,
        members,
    } = &node.kind
    else {
        unreachable!("array_spec is called for md nodes")
    };
    ArraySpec {
        level: match level {
            MdLevel::Raid0 => tosskey_raid::Level::Raid0,
            MdLevel::Raid1 => tosskey_raid::Level::Raid1,
            MdLevel::Raid10 => tosskey_raid::Level::Raid10,
            MdLevel::Linear => tosskey_raid::Level::Linear,
        },
        chunk: tosskey_raid::Bytes(*chunk_bytes),
        members: members
            .iter()
            .map(|d| tosskey_raid::Member {
                path: plan.device_path(*d).to_path_buf(),
                dev: plan.dev_id(*d, devs),
                size_bytes: plan.device_bytes(*d),
            })
            .collect(),
        name_hint: names::md_hint_of(&node.name).map(str::to_owned),
    }
}

/// The array `device` is if it is a mirrored md array (raid1, raid10), which verification
/// reads copy by copy from its members (see crate::verify).
fn mirrored_array(plan: &Plan, device: DeviceRef, devs: &[DevId]) -> Option<ArraySpec> {
    match device {
        DeviceRef::Node(index) if matches!(plan.nodes[index].kind, NodeKind::Md { .. }) => {
            Some(array_spec(plan, &plan.nodes[index], devs))
                .filter(|spec| spec.level.is_redundant())
        }
        DeviceRef::Node(_) | DeviceRef::Member(_) => None,
    }
}

/// The bytes of a crypt mapping built as `table` each key of `keys` encrypts.
fn keyed_ranges<'k>(table: &CryptTable, keys: &[&'k [u8]]) -> Vec<KeyedRange<'k>> {
    table
        .segments()
        .iter()
        .zip(keys)
        .map(|(segment, key)| KeyedRange {
            start: segment.start.0 * SECTOR_SIZE,
            length: segment.target.length().0 * SECTOR_SIZE,
            key,
        })
        .collect()
}

/// The members (by index) `kind` is built directly on.
fn members_used(kind: &NodeKind) -> Vec<usize> {
    kind.devices()
        .iter()
        .filter_map(|d| match d {
            DeviceRef::Member(i) => Some(*i),
            DeviceRef::Node(_) => None,
        })
        .collect()
}

/// One step of taking a recorded stack down.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TeardownStep {
    Unmount(PathBuf),
    RemoveDm(String),
    StopMd(String),
}

/// How a recorded stack comes down: its steps, top first, and the mounts that are not the
/// volume's, left alone (one line each, for the operator).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Teardown {
    pub steps: Vec<TeardownStep>,
    pub left_alone: Vec<String>,
}

/// The mounts of a volume, as unmounting sees them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMounts {
    /// Mount points where the volume is the topmost mount, the recorded binds first (the
    /// latest first), then the latest mount first (once per stacked mount of it):
    /// unmounting or detaching each reaches the volume and nothing else.
    pub on_top: Vec<PathBuf>,
    /// A line for each mount left alone: another filesystem at the recorded mount point,
    /// or the volume hidden beneath another filesystem mounted over it.
    pub left_alone: Vec<String>,
}

/// The mounts of `journal`'s volume (the dm device named like the volume in `live_dm`),
/// from mountinfo.
pub fn volume_mounts(
    root: &SystemRoot,
    journal: &Journal,
    live_dm: &[DeviceInfo],
) -> Result<VolumeMounts> {
    let mounts = crate::exec::mount::read_mountinfo(&root.proc)?;
    let recorded = journal.volumes();
    let volumes: Vec<DevId> = live_dm
        .iter()
        .filter(|d| recorded.iter().any(|(name, _)| d.name.as_str() == *name))
        .map(|d| d.dev)
        .collect();
    let ours_at = |dev: DevId| volumes.contains(&dev);
    let describe =
        |m: &crate::host::sysfs::MountEntry| format!("{} ({}, {})", m.source, m.fs_type, m.dev);
    let mut ours = Vec::new();
    let mut left_alone = Vec::new();
    let recorded_points: Vec<PathBuf> = recorded
        .iter()
        .filter_map(|(_, mount)| mount.clone())
        .chain(journal.binds.iter().map(|b| b.dir.clone()))
        .collect();
    // Each mount point once, the most recently mounted first; its entries top first.
    let mut points: Vec<&str> = Vec::new();
    for mount in mounts.iter().rev() {
        if !points.contains(&mount.mount_point.as_str()) {
            points.push(&mount.mount_point);
        }
    }
    for point in points {
        let stacked: Vec<_> = mounts
            .iter()
            .rev()
            .filter(|m| m.mount_point == point)
            .collect();
        let on_top = stacked.iter().take_while(|m| ours_at(m.dev)).count();
        ours.extend(std::iter::repeat_n(PathBuf::from(point), on_top));
        if stacked[on_top..].iter().any(|m| ours_at(m.dev)) {
            left_alone.push(format!(
                "{} is also mounted at {point} beneath {}: left alone; unmount that first",
                journal.name,
                describe(stacked[on_top])
            ));
        } else if on_top == 0 && recorded_points.iter().any(|p| p == Path::new(point)) {
            left_alone.push(format!(
                "left {point} alone: {} is mounted there, not {}",
                describe(stacked[0]),
                journal.name
            ));
        }
    }
    // The binds first, the latest first: they come down before the volume's own mount.
    let binds: Vec<&Path> = journal
        .binds
        .iter()
        .rev()
        .map(|b| b.dir.as_path())
        .collect();
    ours.sort_by_key(|point| binds.iter().position(|b| b == point).unwrap_or(binds.len()));
    Ok(VolumeMounts {
        on_top: ours,
        left_alone,
    })
}

/// What taking down `journal`'s stack involves now, top first: only what exists (a crash
/// between recording and creating leaves entries for objects that never were). `live_dm`:
/// the dm devices the kernel has. Only mounts of the volume's own device are unmounted
/// ([`volume_mounts`]); another filesystem at the recorded mount point is left alone and
/// said so. A journal is data in a file, so nothing it names is trusted: if a recorded
/// device that exists is not one tosskey makes — a dm device without the `TOSSKEY-`
/// UUID, an md array that is not the volume's non-persistent `md_tk_<name>` — the
/// teardown is refused before anything is removed.
pub fn teardown_steps(
    root: &SystemRoot,
    journal: &Journal,
    live_dm: &[DeviceInfo],
) -> Result<Teardown> {
    let mounts = volume_mounts(root, journal, live_dm)?;
    let mut steps: Vec<TeardownStep> = mounts
        .on_top
        .into_iter()
        .map(TeardownStep::Unmount)
        .collect();
    for component in journal.built.iter().rev() {
        match component {
            Component::Dm { name, .. } => {
                let Some(info) = live_dm.iter().find(|d| d.name.as_str() == name) else {
                    continue;
                };
                refuse_foreign_dm(journal, info)?;
                steps.push(TeardownStep::RemoveDm(name.clone()));
            }
            Component::Md { name } => {
                if !root.block(name).join("md").is_dir() {
                    continue;
                }
                refuse_foreign_md(root, journal, name)?;
                steps.push(TeardownStep::StopMd(name.clone()));
            }
        }
    }
    Ok(Teardown {
        steps,
        left_alone: mounts.left_alone,
    })
}

/// The refusal for a journal of volume `journal` naming `what`, which tosskey did not make.
fn not_made_by_tosskey(journal: &Journal, what: String) -> Error {
    Error::Refused(crate::error::Refusal::NotMadeByTosskey {
        volume: journal.name.clone(),
        what,
    })
}

/// Refuse a recorded dm device without a `TOSSKEY-` UUID.
pub fn refuse_foreign_dm(journal: &Journal, info: &DeviceInfo) -> Result<()> {
    let uuid = info.uuid.as_deref().unwrap_or("");
    if names::is_tosskey_uuid(uuid) {
        return Ok(());
    }
    Err(not_made_by_tosskey(
        journal,
        format!(
            "dm device {} with UUID {uuid:?} (tosskey's begin {UUID_PREFIX})",
            info.name
        ),
    ))
}

/// Refuse a recorded md array `name` (which exists) other than the volume's
/// non-persistent `md_tk_<name>`.
pub fn refuse_foreign_md(root: &SystemRoot, journal: &Journal, name: &str) -> Result<()> {
    let volume_md = names::md_array_name(&DmName::new(&journal.name)?);
    let metadata = tosskey_sysutil::read_attr(&root.block(name).join("md/metadata_version"))
        .unwrap_or_default();
    if *name == volume_md && metadata == "none" {
        return Ok(());
    }
    Err(not_made_by_tosskey(
        journal,
        format!(
            "md array {name} (metadata {metadata:?}; tosskey's is {volume_md}, metadata \"none\")"
        ),
    ))
}

/// Tear down everything `journal` recorded, top first, then forget the journal. Objects that
/// no longer exist are skipped, so this also cleans up after a crash half-way. Returns the
/// mounts left alone ([`Teardown::left_alone`]).
pub fn teardown(
    root: &SystemRoot,
    journal: &Journal,
    journals: &JournalDir,
) -> Result<Vec<String>> {
    teardown_in(&HostKernel::open(root)?, root, journal, journals)
}

/// [`teardown`] through `kernel` (a fake one in host tests).
pub fn teardown_in(
    kernel: &dyn StackKernel,
    root: &SystemRoot,
    journal: &Journal,
    journals: &JournalDir,
) -> Result<Vec<String>> {
    let teardown = teardown_steps(root, journal, &kernel.dm_devices()?)?;
    for step in teardown.steps {
        match step {
            TeardownStep::Unmount(dir) => kernel.unmount(&dir)?,
            TeardownStep::RemoveDm(name) => kernel.remove_dm(&DmName::new(&name)?)?,
            TeardownStep::StopMd(name) => kernel.stop_md(&name)?,
        }
    }
    journals.remove(&journal.name)?;
    Ok(teardown.left_alone)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exec::kernel::fake::FakeKernel;

    #[test]
    fn teardown_takes_down_only_what_exists_top_first() {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::under(dir.path());
        std::fs::create_dir_all(root.proc.join("self")).unwrap();
        std::fs::write(
            root.proc.join("self/mountinfo"),
            "36 25 253:1 / /mnt/data rw,noatime shared:1 - ext4 /dev/mapper/v rw\n",
        )
        .unwrap();
        std::fs::create_dir_all(root.block("md_tk_v").join("md")).unwrap();
        std::fs::write(root.block("md_tk_v").join("md/metadata_version"), "none\n").unwrap();
        let mut journal = Journal::new("v", "boot", vec![PathBuf::from("/dev/vdb")]);
        journal.built = vec![
            Component::Dm {
                name: "v-m0".into(),
                target: Some(MappingTarget::Crypt),
            },
            Component::Dm {
                name: "v-m1".into(),
                target: Some(MappingTarget::Crypt),
            },
            Component::Md {
                name: "md_tk_v".into(),
            },
            Component::Dm {
                name: "v".into(),
                target: Some(MappingTarget::Linear),
            },
        ];
        journal.mount = Some(PathBuf::from("/mnt/data"));
        // v-m1 was recorded but never created (a crash in between).
        let kernel = FakeKernel::new(&root);
        kernel.dm("v", (253, 1), "TOSSKEY-boot-v", &[]).dm(
            "v-m0",
            (253, 0),
            "TOSSKEY-boot-v-m0",
            &[],
        );
        let live = kernel.dm_devices().unwrap();
        assert_eq!(
            teardown_steps(&root, &journal, &live).unwrap().steps,
            [
                TeardownStep::Unmount(PathBuf::from("/mnt/data")),
                TeardownStep::RemoveDm("v".into()),
                TeardownStep::StopMd("md_tk_v".into()),
                TeardownStep::RemoveDm("v-m0".into()),
            ]
        );
        // Unmounted and the array stopped already: only the mappings are left.
        std::fs::write(root.proc.join("self/mountinfo"), "").unwrap();
        std::fs::remove_dir_all(root.block("md_tk_v").join("md")).unwrap();
        assert_eq!(
            teardown_steps(&root, &journal, &live).unwrap().steps,
            [
                TeardownStep::RemoveDm("v".into()),
                TeardownStep::RemoveDm("v-m0".into()),
            ]
        );
    }
}
