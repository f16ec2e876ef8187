//! `tosskey provision`: devices → safety checks → plan → (RAID) → key → dm-crypt → verify →
//! (escrow) → key wiped → (mkfs) → (mount), with rollback of everything this run built.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use serde::Serialize;
use tosskey_crypto::escrow::{
    rfc3339_utc, EscrowFile, EscrowMember, EscrowMetadata, EscrowPublicKey, KeySegment,
    UnsealedEscrow,
};
use tosskey_crypto::key::{KeyArena, KeySize};
use tosskey_dm::{DeviceInfo, DmControl};

use crate::commands::Environment;
use crate::error::{Error, HeldMountPoint, Refusal, Result};
use crate::exec::bind::{check_bind_targets, describe, BoundDir};
use crate::exec::facilities::KernelFacilities;
use crate::exec::harden::Hardening;
use crate::exec::hooks::crash_point;
use crate::exec::journal::{boot_id, Component, Journal, MappingTarget, RecordedOption, Stage};
use crate::exec::kernel::{HostKernel, StackKernel};
use crate::exec::measure::{self, MeasurementOutcome, Measurer};
use crate::exec::{refuse_foreign_dm, refuse_foreign_md, teardown_in, BuiltStack, Executor};
use crate::host::discover::discover_matching;
use crate::host::safety::{check_members, CheckOptions, MemberClaims};
use crate::host::sysfs::SystemRoot;
use crate::host::wait::{wait_for_discovery, wait_for_paths};
use crate::names::{self, previous_escrow_file};
use crate::plan::request::MeasurePcr;
use crate::plan::request::{AssemblyChoice, MemberSource, ProvisionConfig};
use crate::plan::{
    derive, md_level_name, EscrowSettings, Ext4Settings, Filesystem, FilesystemSettings,
    KeyLoading, Layout, Plan,
};

/// What a provision run did.
#[derive(Debug, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum Outcome {
    /// `--dry-run`: the plan, nothing touched.
    DryRun {
        plan: Box<Plan>,
        /// What the run would find in the kernel or bring up, in order.
        kernel_facilities: Vec<tosskey_kmod::Outcome>,
    },
    /// The same volume is already up: nothing changed (but a mount of it that had gone
    /// may have been restored).
    AlreadyProvisioned {
        name: String,
        members: Vec<PathBuf>,
        /// Where it is mounted, as asked and checked.
        mount: Option<PathBuf>,
        /// The volume was not mounted at `mount` and was mounted there again.
        remounted: bool,
        /// Recorded `--bind` directories whose bind had gone and was made again (from the
        /// copy on the volume, which holds their data: nothing is copied again).
        #[serde(skip_serializing_if = "Vec::is_empty")]
        rebound: Vec<PathBuf>,
        /// Options this run asked differently: they apply to the next volume (after a
        /// reboot, or after `close`), not to this one.
        differing_options: Vec<DifferingOption>,
    },
    /// Built now: the verification report.
    Provisioned(Box<Report>),
}

/// The attestation-grade report of a provision run (`--json`).
#[derive(Debug, Serialize)]
pub struct Report {
    pub tool: &'static str,
    pub version: &'static str,
    pub kernel: String,
    pub started_at: String,
    pub finished_at: String,
    pub plan: Plan,
    /// mount → crypt → assembly → members.
    pub chain: Chain,
    pub stack: BuiltStack,
    pub escrow_file: Option<PathBuf>,
    pub filesystem: Option<FilesystemReport>,
    /// The `--bind` directories, bound from the volume, with what each copy carried.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BoundDir>,
    /// `--raid none`: each member's volume's filesystem, in member order (`filesystem` is
    /// then `None`).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub separate_filesystems: Vec<FilesystemReport>,
    pub hardening: Hardening,
    /// What [`KeyArena::wipe`] found after escrow and measurement: tosskey's copy of every
    /// key read back as zeros and its memory was unmapped.
    pub key_wiped_from_tosskey_memory: bool,
    /// Kernel facilities found present or brought up (and the modules loaded) before
    /// anything was built.
    pub kernel_facilities: Vec<tosskey_kmod::Outcome>,
    /// `--measure-pcr`: what was extended into the TPM.
    pub measurement: MeasurementOutcome,
}

#[derive(Debug, Serialize)]
pub struct Chain {
    pub mount: Option<PathBuf>,
    pub volume: PathBuf,
    pub crypt: Vec<String>,
    pub assembled: Option<PathBuf>,
    pub members: Vec<PathBuf>,
}

#[derive(Debug, Serialize)]
pub struct FilesystemReport {
    pub kind: &'static str,
    pub blocks: u64,
    pub inodes: u64,
    pub journal: bool,
}

/// Run `provision` as configured.
pub fn provision(
    cfg: &ProvisionConfig,
    env: &Environment,
    hardening: Hardening,
) -> Result<Outcome> {
    let started = SystemTime::now();
    let started_at = rfc3339_utc(started);
    if cfg.key_scope.is_none() {
        eprintln!(
            "tosskey: warning: --key-scope none puts each crypt mapping under one key however large; IEEE 1619 advises at most 2^36 blocks (1 TiB) per XTS key"
        );
    }
    // Escrow inputs are checked before anything else: a wrong path must fail the run now,
    // not after a volume was built (and rolled back).
    let escrow_key = cfg.escrow.as_ref().map(read_escrow_inputs).transpose()?;
    let boot = boot_id(&env.root.proc)?;
    let mut kernel = KernelFacilities::host()?;
    if !cfg.dry_run {
        // A previous run's mappings are looked at through device-mapper.
        kernel.device_mapper()?;
        if let Some(done) = converge_previous_run(cfg, env)? {
            return Ok(done);
        }
    }
    // Only now, as an already provisioned volume keeps the escrow file it wrote.
    if let Some(escrow) = &cfg.escrow {
        check_escrow_rotation(&escrow.file)?;
    }
    // The checks that need no write come before any device is looked at, in the dry run
    // too: a dry run that passes means the real run gets past them. An explicit PCR without
    // a TPM refuses the run here (opening the TPM writes nothing).
    let mut measurer = measure::open(cfg.measure_pcr)?;
    if let Some(dir) = &cfg.mount {
        crate::exec::mount::check_mount_target(dir)?;
    }
    let paths = member_paths(cfg, env)?;
    let mut checked = check_members(
        &env.root,
        &paths,
        &CheckOptions {
            force: cfg.force,
            allow_regular_file: false,
        },
    )?;
    let mut plan = derive::from_config(cfg, &checked, &boot)?;
    check_bind_targets(&env.root.proc, &plan.binds)?;
    plan.measure_pcr = measurer.as_ref().map(Measurer::pcr);
    // The escrow file's metadata (hostname, serials, paths) is checked in full now: a value
    // it cannot record must refuse the run before anything is built, not roll it back.
    let escrow = escrow_key
        .as_ref()
        .map(|public_key| prepare_escrow(&plan, public_key, &env.root))
        .transpose()?;
    if cfg.dry_run {
        return Ok(Outcome::DryRun {
            kernel_facilities: kernel.survey(&plan)?,
            plan: Box::new(plan),
        });
    }
    // Held through the journal and the keys: the executor releases each member's claim
    // right before md or dm claims it.
    let claims = MemberClaims::take(&mut checked);
    let mut run = Executor::start(
        &env.root,
        &env.journals,
        kernel,
        &plan.name,
        &boot,
        paths,
        recorded_options(cfg),
    )?;
    run.hold_claims(claims);
    let measured = Measured {
        measurer: measurer.as_mut(),
        unmeasured: measure::not_measured(cfg.measure_pcr),
    };
    let report = execute(
        &mut run, &env.root, &plan, escrow, hardening, measured, started_at,
    );
    let report = run.finish(report)?;
    record_readiness(env, &report, started);
    Ok(Outcome::Provisioned(Box::new(report)))
}

/// Record in the journal when and how the volume became ready, for `status` and the
/// metrics. The volume is up either way: a journal that cannot be written is warned about.
fn record_readiness(env: &Environment, report: &Report, started: SystemTime) {
    let unix_ms = |time: SystemTime| {
        time.duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    };
    let checks = report
        .stack
        .crypt
        .iter()
        .flat_map(|c| &c.verification.checks);
    let readiness = crate::exec::journal::Readiness {
        started_unix_ms: unix_ms(started),
        ready_unix_ms: unix_ms(SystemTime::now()),
        verified_sectors: checks.clone().count(),
        mismatched_sectors: checks.filter(|c| !c.matched).count(),
        escrow_file: report.escrow_file.clone(),
        filesystem: report
            .filesystem
            .as_ref()
            .or(report.separate_filesystems.first())
            .map(|f| f.kind.to_owned()),
        label: report
            .plan
            .mkfs
            .as_ref()
            .and_then(|m| m.label().map(str::to_owned)),
    };
    let saved = env.journals.load(&report.plan.name).and_then(|journal| {
        let mut journal = journal
            .ok_or_else(|| anyhow::anyhow!("the journal of {} is gone", report.plan.name))?;
        journal.ready = Some(readiness);
        env.journals.save(&journal)
    });
    if let Err(e) = saved {
        eprintln!(
            "tosskey: warning: {} is ready but its journal could not record when: {e:#}",
            report.plan.name
        );
    }
}

/// The TPM to measure into, or what to report when there is none.
struct Measured<'m> {
    measurer: Option<&'m mut Measurer>,
    unmeasured: MeasurementOutcome,
}

/// Build the plan with fresh keys, escrow them (into `escrow`, checked before the run
/// built anything), measure them, wipe them, format, mount.
fn execute(
    run: &mut Executor<'_>,
    root: &SystemRoot,
    plan: &Plan,
    escrow: Option<UnsealedEscrow>,
    hardening: Hardening,
    measured: Measured<'_>,
    started_at: String,
) -> Result<Report> {
    // One locked arena for all the keys: hundreds of keys fit the mlock limit.
    let keys = KeyArena::generate(
        KeySize::from_bits(plan.crypt.format.key_bits)?,
        plan.keys.len(),
    )?;
    let built = run.build(plan, &keys)?;
    let escrow_file = escrow_keys(run, plan, escrow, &keys)?;
    // Verified (by build) and escrowed: the keys are measured before they are wiped.
    let measurement = match measured.measurer {
        Some(measurer) => {
            let volumes = measurer.measure(plan, &keys)?;
            run.measured(&volumes)?;
            MeasurementOutcome::Measured { volumes }
        }
        None => measured.unmeasured,
    };
    // The kernel holds the key(s) now; tosskey's copies are zeroized here, and the report
    // says what this wipe found.
    let key_wiped_from_tosskey_memory = keys.wipe();
    let mut made = format_and_mount(run, plan)?;
    // `--raid none` reports each volume's filesystem apart; one volume reports its own.
    let (filesystem, separate_filesystems) = if plan.separate_volumes.is_empty() {
        (made.pop(), Vec::new())
    } else {
        (None, made)
    };
    let binds = plan
        .binds
        .iter()
        .map(|bind| run.bind(bind))
        .collect::<Result<Vec<_>>>()?;
    Ok(Report {
        tool: "tosskey",
        version: env!("CARGO_PKG_VERSION"),
        kernel: kernel_release(root),
        started_at,
        finished_at: rfc3339_utc(SystemTime::now()),
        chain: Chain {
            mount: plan.mount.clone(),
            volume: built.node.clone(),
            crypt: built
                .crypt
                .iter()
                .map(|c| c.node.display().to_string())
                .collect(),
            assembled: built.assembled.clone(),
            members: plan.members.iter().map(|m| m.path.clone()).collect(),
        },
        plan: plan.clone(),
        stack: built,
        escrow_file,
        filesystem,
        binds,
        separate_filesystems,
        hardening,
        key_wiped_from_tosskey_memory,
        kernel_facilities: run.kernel_facilities().to_vec(),
        measurement,
    })
}

/// Seal `keys` into the escrow file `plan` asks for (with `escrow`, checked before the run
/// built anything), moving an earlier volume's file aside; both registered with the run's
/// undo. Returns the file written.
fn escrow_keys(
    run: &mut Executor<'_>,
    plan: &Plan,
    escrow: Option<UnsealedEscrow>,
    keys: &KeyArena,
) -> Result<Option<PathBuf>> {
    let Some((escrow, unsealed)) = plan.escrow.as_ref().zip(escrow) else {
        return Ok(None);
    };
    let file = unsealed.seal(keys)?;
    rotate_escrow_file(run, &escrow.file)?;
    file.write_atomic(&escrow.file, false)
        .with_context(|| format!("writing the escrow file {}", escrow.file.display()))?;
    run.wrote_file(&escrow.file);
    crash_point("escrow");
    Ok(Some(escrow.file.clone()))
}

/// Format each volume (the one volume, or with `--raid none` each member's) if asked and
/// mount it, in member order; each mount is registered with the run's undo. The
/// filesystems made, in member order.
fn format_and_mount(run: &mut Executor<'_>, plan: &Plan) -> Result<Vec<FilesystemReport>> {
    let mut made = Vec::new();
    let Some(settings) = &plan.mkfs else {
        return Ok(made);
    };
    for volume in plan.volumes() {
        made.push(format_volume(&volume.node.path, settings)?);
        run.mount_volume(plan, volume, settings.filesystem(), false)?;
    }
    Ok(made)
}

/// Make the filesystem `settings` asks for on the volume `node`.
fn format_volume(node: &Path, settings: &FilesystemSettings) -> Result<FilesystemReport> {
    let report = match settings {
        FilesystemSettings::Ext4(ext4) => format_ext4(node, ext4)?,
        FilesystemSettings::Xfs { label } => format_xfs(node, label.clone())?,
    };
    crash_point("mkfs");
    Ok(report)
}

/// XFS as `mkfs.xfs -K` makes it, its stripe unit and width read from the mapping's
/// `minimum_io_size`/`optimal_io_size` (the chunk and the stripe of an md raid0 or
/// dm-stripe below, which dm-crypt passes up).
fn format_xfs(node: &Path, label: Option<String>) -> Result<FilesystemReport> {
    let report = tosskey_xfs::format(
        node,
        &tosskey_xfs::FormatOptions {
            label,
            ..tosskey_xfs::FormatOptions::default()
        },
    )
    .with_context(|| format!("formatting {}", node.display()))?;
    Ok(FilesystemReport {
        kind: Filesystem::Xfs.name(),
        blocks: report.geometry.dblocks,
        // XFS allocates inodes as files are made: none exist beyond the root's chunk.
        inodes: 0,
        journal: true,
    })
}

fn format_ext4(node: &Path, ext4: &Ext4Settings) -> Result<FilesystemReport> {
    let report = tosskey_ext4::format(
        node,
        &tosskey_ext4::FormatOptions {
            label: ext4.label.clone(),
            inode_ratio: ext4.inode_ratio,
            journal: ext4.journal,
            // A fresh mapping over a fresh key: stale journal blocks decrypt to noise.
            lazy_journal_init: true,
            ..tosskey_ext4::FormatOptions::default()
        },
    )
    .with_context(|| format!("formatting {}", node.display()))?;
    Ok(FilesystemReport {
        kind: Filesystem::Ext4.name(),
        blocks: report.blocks,
        inodes: report.inodes,
        journal: ext4.journal,
    })
}

/// Before anything else: is this volume already up (nothing to do), or did an earlier run
/// die half-way (tear down what it recorded, then build afresh)?
fn converge_previous_run(cfg: &ProvisionConfig, env: &Environment) -> Result<Option<Outcome>> {
    converge_previous_run_in(&HostKernel::open(&env.root)?, cfg, env)
}

/// [`converge_previous_run`] through `kernel` (a fake one in host tests). A journal is
/// only a claim: "already provisioned" is said only when the world agrees with it — every
/// recorded node exists with tosskey's UUID and the target type it was built of (a
/// shredded mapping is `error`), and the mount point asked for is a mount of the volume
/// itself (remounted if nothing is mounted there; another filesystem there is refused).
fn converge_previous_run_in(
    kernel: &dyn StackKernel,
    cfg: &ProvisionConfig,
    env: &Environment,
) -> Result<Option<Outcome>> {
    let live = kernel.dm_devices()?;
    let volume = live.iter().find(|d| d.name == cfg.name);
    match env.journals.load(cfg.name.as_str())? {
        Some(journal) if journal.stage == Stage::Shredded => {
            Err(Error::Refused(Refusal::Shredded {
                name: cfg.name.to_string(),
            }))
        }
        Some(journal)
            if journal.stage == Stage::Complete
                && journal
                    .volumes()
                    .iter()
                    .all(|(name, _)| live.iter().any(|d| d.name.as_str() == *name)) =>
        {
            if let MemberSource::Explicit(paths) = &cfg.source {
                if !same_devices(paths, &journal.members) {
                    return Err(Error::Refused(Refusal::ProvisionedElsewhere {
                        name: cfg.name.to_string(),
                        members: display_paths(&journal.members),
                    }));
                }
            }
            check_recorded_stack(kernel, &env.root, &journal, &live)?;
            let remounted = match &cfg.mount {
                Some(dir) => {
                    let filesystem = mounted_filesystem(&journal, cfg);
                    converge_mount(kernel, &env.root, &journal, &live, dir, filesystem)?
                }
                None => false,
            };
            let rebound = converge_binds(kernel, &env.root, &journal, &live)?;
            Ok(Some(Outcome::AlreadyProvisioned {
                differing_options: differing_options(&journal.options, &recorded_options(cfg)),
                name: journal.name,
                members: journal.members,
                mount: cfg.mount.clone(),
                remounted,
                rebound,
            }))
        }
        Some(journal) => {
            eprintln!(
                "tosskey: an earlier run for {} did not finish: tearing down what it built",
                cfg.name
            );
            for line in teardown_in(kernel, &env.root, &journal, &env.journals)? {
                eprintln!("tosskey: {line}");
            }
            Ok(None)
        }
        None => match volume {
            Some(info) => {
                let ours = info.uuid.as_deref().is_some_and(names::is_tosskey_uuid);
                let name = cfg.name.to_string();
                Err(Error::Refused(if ours {
                    Refusal::UnrecordedMapping { name }
                } else {
                    Refusal::ForeignMapping { name }
                }))
            }
            None => Ok(None),
        },
    }
}

/// Every node `journal` recorded exists and is what tosskey built: a dm mapping with a
/// `TOSSKEY-` UUID whose table is all of the recorded target type (a journal without one
/// accepts the types tosskey builds), the volume's own non-persistent md array.
fn check_recorded_stack(
    kernel: &dyn StackKernel,
    root: &SystemRoot,
    journal: &Journal,
    live: &[DeviceInfo],
) -> Result<()> {
    let name = &journal.name;
    let broken = |what: String| {
        Err(Error::Refused(Refusal::NotTheBuiltVolume {
            name: name.clone(),
            what,
        }))
    };
    for component in &journal.built {
        match component {
            Component::Dm { name: node, target } => {
                let Some(info) = live.iter().find(|d| d.name.as_str() == node) else {
                    return broken(format!("its dm mapping {node} does not exist"));
                };
                refuse_foreign_dm(journal, info)?;
                let table = kernel.dm_table(&info.name)?;
                let fits = |target_type: &str| match target {
                    Some(recorded) => target_type == recorded.as_str(),
                    None => MappingTarget::from_kernel(target_type).is_some(),
                };
                if let Some(odd) = table.iter().find(|t| !fits(&t.target_type)) {
                    let expected = target.map_or("crypt, striped or linear", MappingTarget::as_str);
                    let shredded = if odd.target_type == "error" {
                        " (what `tosskey shred` leaves when the mapping is still in use)"
                    } else {
                        ""
                    };
                    return broken(format!(
                        "its dm mapping {node} has a {} target{shredded}, not {expected}",
                        odd.target_type
                    ));
                }
                if table.is_empty() {
                    return broken(format!("its dm mapping {node} has no table"));
                }
            }
            Component::Md { name: array } => {
                if !root.block(array).join("md").is_dir() {
                    return broken(format!("its md array {array} does not exist"));
                }
                refuse_foreign_md(root, journal, array)?;
            }
        }
    }
    Ok(())
}

/// The filesystem a rerun mounts: the one the run that made the volume recorded, else
/// (a volume made with `--mkfs none`, formatted since) the one asked for now, else ext4.
fn mounted_filesystem(journal: &Journal, cfg: &ProvisionConfig) -> Filesystem {
    journal
        .ready
        .as_ref()
        .and_then(|ready| ready.filesystem.as_deref())
        .and_then(Filesystem::from_name)
        .or_else(|| cfg.mkfs.as_ref().map(FilesystemSettings::filesystem))
        .unwrap_or(Filesystem::Ext4)
}

/// The volume must be what is mounted at `dir` (the topmost mount there): if nothing is,
/// it is mounted there (again; returns true); another filesystem there, or a `dir` other
/// than the mount point the volume was provisioned with, is refused. (A volume built
/// without a mount, e.g. from an initramfs, takes the first one asked.) With `--raid none`
/// the same holds for each member's volume at `dir/<index>`.
fn converge_mount(
    kernel: &dyn StackKernel,
    root: &SystemRoot,
    journal: &Journal,
    live: &[DeviceInfo],
    dir: &Path,
    filesystem: Filesystem,
) -> Result<bool> {
    let name = &journal.name;
    if let Some(recorded) = journal.mount.as_deref().filter(|m| *m != dir) {
        return Err(Error::Refused(Refusal::MountedElsewhere {
            name: name.clone(),
            recorded: recorded.to_owned(),
            asked: dir.to_owned(),
        }));
    }
    let asked = Journal {
        mount: Some(dir.to_owned()),
        ..journal.clone()
    };
    let mut remounted = false;
    for (volume_name, volume_dir) in asked.volumes() {
        let dir = volume_dir.expect("the journal asked for records a mount");
        let volume = live
            .iter()
            .find(|d| d.name.as_str() == volume_name)
            .expect("the caller found the volume");
        let top = crate::exec::mount::read_mountinfo(&root.proc)?
            .into_iter()
            .rfind(|m| Path::new(&m.mount_point) == dir);
        match top {
            Some(mount) if mount.dev == volume.dev => {}
            Some(mount) => {
                return Err(Error::Refused(Refusal::MountPointHeld(Box::new(
                    HeldMountPoint {
                        name: name.clone(),
                        dir,
                        source: mount.source,
                        fs_type: mount.fs_type,
                        dev: mount.dev,
                        volume_dev: volume.dev,
                    },
                ))))
            }
            None => {
                kernel.mount(&DmControl::node_path(&volume.name), &dir, filesystem, false)?;
                remounted = true;
            }
        }
    }
    Ok(remounted)
}

/// Each bind the journal records must be in place: the topmost mount at its directory is
/// the volume's `/bind/DIR`. One that has gone is made again from the copy on the volume
/// (which holds the directory's data since the first run; copying again would overwrite it
/// with the stale contents beneath the bind); another filesystem there is refused. Returns
/// the directories bound again.
fn converge_binds(
    kernel: &dyn StackKernel,
    root: &SystemRoot,
    journal: &Journal,
    live: &[DeviceInfo],
) -> Result<Vec<PathBuf>> {
    if journal.binds.is_empty() {
        return Ok(Vec::new());
    }
    let volume = live
        .iter()
        .find(|d| d.name.as_str() == journal.name)
        .expect("the caller found the volume");
    let mounts = crate::exec::mount::read_mountinfo(&root.proc)?;
    let mut rebound = Vec::new();
    for bind in &journal.binds {
        let top = mounts
            .iter()
            .rfind(|m| Path::new(&m.mount_point) == bind.dir);
        match top {
            Some(mount)
                if mount.dev == volume.dev
                    && Path::new(&mount.root) == names::bind_root(&bind.dir) => {}
            Some(mount) => {
                return Err(Error::Refused(Refusal::BindHeld {
                    name: journal.name.clone(),
                    dir: bind.dir.clone(),
                    what: format!("{} at {}", describe(mount), mount.root),
                }))
            }
            None => {
                kernel.bind(&bind.source, &bind.dir)?;
                rebound.push(bind.dir.clone());
            }
        }
    }
    Ok(rebound)
}

/// The options of `cfg` that describe the volume it builds, as the command line spells
/// them (`--force`, `--dry-run` and `--json` describe a run, not a volume).
fn recorded_options(cfg: &ProvisionConfig) -> Vec<RecordedOption> {
    let flag = |flag: &str, value: String| RecordedOption {
        flag: flag.to_owned(),
        value,
    };
    let on_off = |on: bool| if on { "yes" } else { "no" }.to_owned();
    let (raid, level) = match cfg.assembly {
        AssemblyChoice::Md(level) => ("md", md_level_name(level)),
        AssemblyChoice::DmStripe => ("dm-stripe", "raid0"),
        AssemblyChoice::Separate => ("none", "none"),
    };
    let mut options = vec![
        flag("--cipher", cfg.cipher.to_string()),
        flag("--key-size", cfg.key_size.bits().to_string()),
        flag(
            "--sector-size",
            cfg.sector_size.map_or("auto".to_owned(), |s| s.to_string()),
        ),
        flag(
            "--key-scope",
            cfg.key_scope
                .map_or("none".to_owned(), |b| format!("{b} bytes")),
        ),
        flag("--raid", raid.to_owned()),
        flag("--level", level.to_owned()),
        flag("--chunk-kib", (cfg.chunk_bytes / 1024).to_string()),
        flag(
            "--layout",
            match cfg.layout {
                Layout::Shared => "shared",
                Layout::PerDisk => "per-disk",
            }
            .to_owned(),
        ),
        flag("--allow-discards", on_off(cfg.allow_discards)),
        flag("--read-workqueue", on_off(!cfg.no_read_workqueue)),
        flag("--write-workqueue", on_off(!cfg.no_write_workqueue)),
        flag(
            "--key-loading",
            match cfg.key_loading {
                KeyLoading::Auto => "auto",
                KeyLoading::Keyring => "keyring",
                KeyLoading::Hex => "hex",
            }
            .to_owned(),
        ),
        flag(
            "--mkfs",
            cfg.mkfs
                .as_ref()
                .map_or("none", |fs| fs.filesystem().name())
                .to_owned(),
        ),
    ];
    if let Some(FilesystemSettings::Ext4(ext4)) = &cfg.mkfs {
        options.push(flag("--journal", on_off(ext4.journal)));
        options.push(flag("--inode-ratio", ext4.inode_ratio.to_string()));
    }
    if let Some(fs) = &cfg.mkfs {
        options.push(flag("--label", fs.label().unwrap_or("none").to_owned()));
    }
    // The mount point is not among them: the journal records it, and a rerun checks it
    // against the world (`converge_mount`). The binds are, since a rerun checks only the
    // recorded ones (`converge_binds`).
    options.push(flag(
        "--bind",
        if cfg.binds.is_empty() {
            "none".to_owned()
        } else {
            display_paths(&cfg.binds)
        },
    ));
    options.push(flag(
        "--escrow-key",
        cfg.escrow
            .as_ref()
            .map_or("none".to_owned(), |e| e.public_key.display().to_string()),
    ));
    if let Some(escrow) = &cfg.escrow {
        options.push(flag("--escrow-file", escrow.file.display().to_string()));
    }
    options.push(flag(
        "--measure-pcr",
        match cfg.measure_pcr {
            None => "none".to_owned(),
            Some(MeasurePcr::Auto) => "auto".to_owned(),
            Some(MeasurePcr::Pcr(pcr)) => pcr.to_string(),
        },
    ));
    options
}

/// An option a rerun asks differently from the running volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DifferingOption {
    pub flag: String,
    /// What the running volume was provisioned with.
    pub running: String,
    /// What this run asked for.
    pub asked: String,
}

/// The options in `asked` whose value differs from `running`'s (a journal that recorded
/// none, from `recover`, differs in nothing).
fn differing_options(running: &[RecordedOption], asked: &[RecordedOption]) -> Vec<DifferingOption> {
    asked
        .iter()
        .filter_map(|option| {
            let before = running.iter().find(|r| r.flag == option.flag)?;
            (before.value != option.value).then(|| DifferingOption {
                flag: option.flag.clone(),
                running: before.value.clone(),
                asked: option.value.clone(),
            })
        })
        .collect()
}

/// The escrow public key, read and checked, and the escrow file's directory checked: it
/// exists, is a directory and this process may create files in it.
fn read_escrow_inputs(escrow: &EscrowSettings) -> Result<EscrowPublicKey> {
    let key = &escrow.public_key;
    let public_pem = std::fs::read_to_string(key).map_err(|source| {
        Error::Refused(Refusal::EscrowKeyUnreadable {
            key: key.clone(),
            source,
        })
    })?;
    let public_key = EscrowPublicKey::from_pem(&public_pem).map_err(|e| {
        Error::Refused(Refusal::EscrowKeyUnusable {
            key: key.clone(),
            reason: e.to_string(),
        })
    })?;
    let file = &escrow.file;
    if file.file_name().is_none() {
        return Err(Error::Refused(Refusal::EscrowFileNotAFile {
            file: file.clone(),
        }));
    }
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let unusable = |why: String| {
        Error::Refused(Refusal::EscrowDirUnusable {
            dir: dir.to_owned(),
            why,
        })
    };
    match std::fs::metadata(dir) {
        Ok(meta) if meta.is_dir() => {}
        Ok(_) => return Err(unusable("is not a directory".into())),
        Err(e) => return Err(unusable(format!("cannot be used: {e}"))),
    }
    nix::unistd::access(
        dir,
        nix::unistd::AccessFlags::W_OK | nix::unistd::AccessFlags::X_OK,
    )
    .map_err(|e| unusable(format!("is not writable: {e}")))?;
    Ok(public_key)
}

/// The escrow file and its `.previous` must each be absent or a regular file: the run moves
/// the first onto the second before it writes a new one (checked before anything is built).
fn check_escrow_rotation(file: &Path) -> Result<()> {
    for path in [file.to_path_buf(), previous_escrow_file(file)] {
        match std::fs::symlink_metadata(&path) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Ok(meta) if meta.file_type().is_file() => {}
            Ok(_) => return Err(Error::Refused(Refusal::EscrowFileNotRegular { path })),
            Err(source) => {
                return Err(Error::Refused(Refusal::EscrowFileUncheckable {
                    path,
                    source,
                }))
            }
        }
    }
    Ok(())
}

/// Move an earlier volume's escrow file to `<file>.previous` (replacing an older one there,
/// with a warning) so that `file` is always this boot's volume; a rollback moves it back.
fn rotate_escrow_file(run: &mut Executor<'_>, file: &Path) -> Result<()> {
    if std::fs::symlink_metadata(file).is_err() {
        return Ok(());
    }
    let previous = previous_escrow_file(file);
    if std::fs::symlink_metadata(&previous).is_ok() {
        eprintln!(
            "tosskey: warning: replacing {} (the escrow file of a volume two provisions back, never collected) with {}",
            previous.display(),
            file.display()
        );
    }
    std::fs::rename(file, &previous).with_context(|| {
        format!(
            "moving the earlier escrow file {} to {}",
            file.display(),
            previous.display()
        )
    })?;
    run.moved_file(&previous, file);
    Ok(())
}

fn same_devices(given: &[PathBuf], recorded: &[PathBuf]) -> bool {
    let canonical = |p: &PathBuf| std::fs::canonicalize(p).unwrap_or_else(|_| p.clone());
    given.len() == recorded.len()
        && given
            .iter()
            .map(canonical)
            .eq(recorded.iter().map(canonical))
}

fn display_paths(paths: &[PathBuf]) -> String {
    paths
        .iter()
        .map(|p| p.display().to_string())
        .collect::<Vec<_>>()
        .join(", ")
}

fn member_paths(cfg: &ProvisionConfig, env: &Environment) -> Result<Vec<PathBuf>> {
    Ok(match &cfg.source {
        MemberSource::Explicit(paths) => {
            if let Some(wait) = &cfg.wait {
                wait_for_paths(paths, wait.timeout)?;
            }
            paths.clone()
        }
        MemberSource::Discover(matcher) => {
            let discovery = match &cfg.wait {
                Some(wait) => wait_for_discovery(&env.root, matcher, wait)?,
                None => discover_matching(&env.root, matcher)?,
            };
            for skipped in &discovery.skipped {
                eprintln!("tosskey: skipping {}: {}", skipped.name, skipped.reason);
            }
            discovery.disks.into_iter().map(|d| d.path).collect()
        }
    })
}

/// The escrow file of `plan` sealed to `public_key`, checked in full but without keys yet.
fn prepare_escrow(
    plan: &Plan,
    public_key: &EscrowPublicKey,
    root: &SystemRoot,
) -> Result<UnsealedEscrow> {
    let segments: Vec<(&str, KeySegment)> = plan
        .keys
        .iter()
        .map(|k| {
            (
                k.mapping.as_str(),
                KeySegment {
                    start_sector: k.covers.start,
                    sectors: k.covers.length,
                },
            )
        })
        .collect();
    EscrowFile::prepare_segments(public_key, &segments, escrow_metadata(plan, root)?).map_err(|e| {
        Error::Refused(Refusal::EscrowCannotRecord {
            reason: e.to_string(),
        })
    })
}

fn escrow_metadata(plan: &Plan, root: &SystemRoot) -> Result<EscrowMetadata> {
    Ok(EscrowMetadata {
        name: plan.name.clone(),
        hostname: proc_line(root, "sys/kernel/hostname"),
        created_at: rfc3339_utc(SystemTime::now()),
        crypt: plan.crypt.format.clone(),
        assembly: plan.assembly,
        layout: plan.layout,
        members: plan
            .members
            .iter()
            .map(|m| EscrowMember {
                identity: m
                    .identity
                    .clone()
                    .unwrap_or_else(|| m.path.display().to_string()),
                size_bytes: m.size_bytes,
                path_at_creation: m.path.clone(),
            })
            .collect(),
        key_scope_bytes: plan.key_scope.limit_bytes,
    })
}

/// One line of a procfs file, or "unknown".
pub fn proc_line(root: &SystemRoot, relative: &str) -> String {
    tosskey_sysutil::read_attr(&root.proc.join(relative)).unwrap_or_else(|_| "unknown".to_owned())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release(root: &SystemRoot) -> String {
    proc_line(root, "sys/kernel/osrelease")
}

#[cfg(test)]
mod tests {
    use clap::Parser as _;
    use tosskey_dm::DmName;

    use super::*;
    use crate::commands::status::tests::{add_mount, raid0_volume, Fixture};

    /// `tosskey provision /dev/vdb /dev/vdc --name v` plus `args`.
    fn config(args: &[&str]) -> ProvisionConfig {
        let mut argv = vec![
            "tosskey",
            "provision",
            "/dev/vdb",
            "/dev/vdc",
            "--name",
            "v",
        ];
        argv.extend_from_slice(args);
        let crate::cli::Command::Provision(args) = crate::cli::Cli::parse_from(argv).command else {
            panic!("expected provision")
        };
        ProvisionConfig::from_args(args).unwrap()
    }

    fn mountinfo(f: &Fixture) -> String {
        std::fs::read_to_string(f.env.root.proc.join("self/mountinfo")).unwrap()
    }

    fn converge(f: &Fixture, args: &[&str]) -> Result<Option<Outcome>> {
        converge_previous_run_in(&f.kernel, &config(args), &f.env)
    }

    #[test]
    fn a_rerun_on_the_mounted_volume_changes_nothing() {
        let f = raid0_volume();
        let outcome = converge(&f, &["--mount", "/mnt/v"]).unwrap();
        let Some(Outcome::AlreadyProvisioned {
            mount, remounted, ..
        }) = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(mount.as_deref(), Some(Path::new("/mnt/v")));
        assert!(!remounted);
        assert!(f.kernel.log().is_empty(), "{:?}", f.kernel.log());
    }

    #[test]
    fn a_rerun_of_raid_none_mounts_each_unmounted_volume_again_then_changes_nothing() {
        let plan = crate::plan::derive::tests::plan_sized(
            &["--raid", "none", "--mount", "/mnt/v"],
            2,
            256 << 20,
        )
        .unwrap();
        let built = crate::commands::status::tests::build_fake(&plan);
        let mut journal = built.env.journals.load("v").unwrap().unwrap();
        journal.mount = Some(PathBuf::from("/mnt/v"));
        built.env.journals.save(&journal).unwrap();
        // Whether the rerun said "already provisioned" and had to mount again.
        let rerun = || match converge_previous_run_in(
            &built.kernel,
            &config(&["--raid", "none", "--mount", "/mnt/v"]),
            &built.env,
        )
        .unwrap()
        {
            Some(Outcome::AlreadyProvisioned { remounted, .. }) => remounted,
            other => panic!("{other:?}"),
        };
        assert!(rerun());
        assert_eq!(
            built.kernel.log(),
            [
                "mount /dev/mapper/v-0 /mnt/v/0 ext4",
                "mount /dev/mapper/v-1 /mnt/v/1 ext4"
            ]
        );
        assert!(!rerun());
        assert_eq!(built.kernel.log().len(), 2, "{:?}", built.kernel.log());
        // close without --unmount refuses the mounted volumes; with it, takes all down.
        let err =
            crate::commands::close::close_in(&built.kernel, &built.env, None, false).unwrap_err();
        assert!(err.to_string().contains("/mnt/v/0, /mnt/v/1"), "{err}");
        crate::commands::close::close_in(&built.kernel, &built.env, None, true).unwrap();
        assert_eq!(
            built.kernel.log()[2..],
            [
                "unmount /mnt/v/1",
                "unmount /mnt/v/0",
                "remove v-1",
                "remove v-0"
            ]
        );
    }

    #[test]
    fn a_rerun_mounts_an_unmounted_volume_again() {
        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        let outcome = converge(&f, &["--mount", "/mnt/v"]).unwrap();
        assert!(
            matches!(
                outcome,
                Some(Outcome::AlreadyProvisioned {
                    remounted: true,
                    ..
                })
            ),
            "{outcome:?}"
        );
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "mount /dev/mapper/v /mnt/v ext4"]
        );
        assert!(
            mountinfo(&f).contains(" 253:0 / /mnt/v "),
            "{}",
            mountinfo(&f)
        );
    }

    /// The fixture's volume with binds of /var/lib/kubelet and /var/log/pods recorded and
    /// in place (mountinfo shows the volume's `/bind/DIR` at each).
    fn bound_volume() -> Fixture {
        let f = raid0_volume();
        let dirs = ["/var/lib/kubelet", "/var/log/pods"];
        crate::commands::status::tests::record_binds(&f, &dirs, &dirs);
        f
    }

    const BINDS: [&str; 6] = [
        "--mount",
        "/mnt/v",
        "--bind",
        "/var/lib/kubelet",
        "--bind",
        "/var/log/pods",
    ];

    #[test]
    fn a_rerun_checks_the_binds_and_binds_a_missing_one_again_without_copying() {
        let f = bound_volume();
        let outcome = converge(&f, &BINDS).unwrap();
        let Some(Outcome::AlreadyProvisioned { rebound, .. }) = outcome else {
            panic!("{outcome:?}")
        };
        assert!(rebound.is_empty());
        assert!(f.kernel.log().is_empty(), "{:?}", f.kernel.log());

        f.kernel.unmount(Path::new("/var/log/pods")).unwrap();
        let outcome = converge(&f, &BINDS).unwrap();
        let Some(Outcome::AlreadyProvisioned { rebound, .. }) = outcome else {
            panic!("{outcome:?}")
        };
        assert_eq!(rebound, [PathBuf::from("/var/log/pods")]);
        assert_eq!(
            f.kernel.log(),
            [
                "unmount /var/log/pods",
                "bind /mnt/v/bind/var/log/pods /var/log/pods"
            ]
        );
        assert!(
            mountinfo(&f).contains(" 253:0 /bind/var/log/pods /var/log/pods "),
            "{}",
            mountinfo(&f)
        );
    }

    #[test]
    fn a_rerun_refuses_another_filesystem_over_a_bind() {
        let f = bound_volume();
        add_mount(&f, "96 1 0:50 / /var/lib/kubelet rw - tmpfs tmpfs rw");
        let err = converge(&f, &BINDS).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::REFUSED, "{err}");
        assert_eq!(
            err.to_string(),
            "/var/lib/kubelet holds tmpfs (tmpfs, 0:50) at /, not v's bind: data written there would not be encrypted; unmount it (umount /var/lib/kubelet) and rerun"
        );
        // The volume itself, but not its copy of the directory: refused as well.
        let f = bound_volume();
        add_mount(
            &f,
            "97 1 253:0 / /var/lib/kubelet rw - ext4 /dev/mapper/v rw",
        );
        let err = converge(&f, &BINDS).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "/var/lib/kubelet holds /dev/mapper/v (ext4, 253:0) at /, not v's bind"
            ),
            "{err}"
        );
        assert!(f.kernel.log().is_empty(), "{:?}", f.kernel.log());
    }

    #[test]
    fn binds_are_a_recorded_option_a_rerun_names_when_they_differ() {
        let f = bound_volume();
        let mut journal = f.env.journals.load("v").unwrap().unwrap();
        journal.options = recorded_options(&config(&BINDS));
        f.env.journals.save(&journal).unwrap();
        let outcome = converge(&f, &["--mount", "/mnt/v", "--bind", "/var/lib/kubelet"]).unwrap();
        let Some(Outcome::AlreadyProvisioned {
            differing_options, ..
        }) = outcome
        else {
            panic!("{outcome:?}")
        };
        assert_eq!(
            differing_options,
            [DifferingOption {
                flag: "--bind".into(),
                running: "/var/lib/kubelet, /var/log/pods".into(),
                asked: "/var/lib/kubelet".into(),
            }]
        );
    }

    /// A rerun mounts the filesystem the first run recorded making, whatever `--mkfs` it
    /// is given; a volume made with `--mkfs none` gets the one asked for now.
    #[test]
    fn a_rerun_mounts_the_filesystem_the_volume_was_made_with() {
        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        let mut journal = f.env.journals.load("v").unwrap().unwrap();
        journal.ready = Some(crate::exec::journal::Readiness {
            started_unix_ms: 0,
            ready_unix_ms: 0,
            verified_sectors: 0,
            mismatched_sectors: 0,
            escrow_file: None,
            filesystem: Some("xfs".into()),
            label: None,
        });
        f.env.journals.save(&journal).unwrap();
        converge(&f, &["--mount", "/mnt/v"]).unwrap();
        assert_eq!(f.kernel.log()[1..], ["mount /dev/mapper/v /mnt/v xfs"]);

        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        converge(&f, &["--mount", "/mnt/v", "--mkfs", "xfs"]).unwrap();
        assert_eq!(f.kernel.log()[1..], ["mount /dev/mapper/v /mnt/v xfs"]);
    }

    #[test]
    fn a_rerun_refuses_another_filesystem_at_the_mount_point() {
        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        add_mount(&f, "90 1 8:17 / /mnt/v rw - ext4 /dev/sdb1 rw");
        let err = converge(&f, &["--mount", "/mnt/v"]).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::REFUSED, "{err}");
        assert_eq!(
            err.to_string(),
            "/mnt/v holds /dev/sdb1 (ext4, 8:17), not v (253:0): data written there would not be encrypted; unmount it (umount /mnt/v) and rerun"
        );
        // Mounted over the volume: the same, since that is what services see.
        let f = raid0_volume();
        add_mount(&f, "91 1 0:50 / /mnt/v rw - tmpfs tmpfs rw");
        let err = converge(&f, &["--mount", "/mnt/v"]).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("/mnt/v holds tmpfs (tmpfs, 0:50), not v"),
            "{err}"
        );
        assert!(!f.kernel.log().iter().any(|l| l.starts_with("mount")));
    }

    #[test]
    fn a_rerun_refuses_a_shredded_volume_that_is_still_held() {
        let f = raid0_volume();
        f.kernel.hold("v");
        let v = DmName::new("v").unwrap();
        let message = crate::commands::close::shred_in(&f.kernel, &f.env, &v).unwrap();
        assert!(
            message.contains("stay until their users let go"),
            "{message}"
        );
        let journal = f.env.journals.load("v").unwrap().unwrap();
        assert_eq!(journal.stage, Stage::Shredded);
        let err = converge(&f, &["--mount", "/mnt/v"]).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::REFUSED, "{err}");
        assert!(
            err.to_string().starts_with("v was shredded in this boot"),
            "{err}"
        );

        // A journal that still says complete (shredded by hand, or by an older tosskey):
        // the `error` table gives it away.
        let mut journal = journal;
        journal.stage = Stage::Complete;
        f.env.journals.save(&journal).unwrap();
        let err = converge(&f, &["--mount", "/mnt/v"]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "v is recorded as provisioned, but its dm mapping v has a error target (what `tosskey shred` leaves when the mapping is still in use), not crypt: it is not the volume tosskey built; run `tosskey close v`, then provision again"
        );
    }

    #[test]
    fn a_rerun_refuses_a_stack_with_a_missing_node() {
        let f = raid0_volume();
        std::fs::remove_dir_all(f.env.root.block("md_tk_v").join("md")).unwrap();
        let err = converge(&f, &["--mount", "/mnt/v"]).unwrap_err();
        assert!(
            err.to_string().starts_with(
                "v is recorded as provisioned, but its md array md_tk_v does not exist"
            ),
            "{err}"
        );
    }

    #[test]
    fn a_rerun_names_the_options_that_differ_and_refuses_another_mount_point() {
        let f = raid0_volume();
        let mut journal = f.env.journals.load("v").unwrap().unwrap();
        journal.options = recorded_options(&config(&["--mount", "/mnt/v"]));
        f.env.journals.save(&journal).unwrap();
        let outcome = converge(&f, &["--mount", "/mnt/v"]).unwrap();
        let Some(Outcome::AlreadyProvisioned {
            differing_options, ..
        }) = outcome
        else {
            panic!("{outcome:?}")
        };
        assert!(differing_options.is_empty(), "{differing_options:?}");

        let outcome = converge(
            &f,
            &[
                "--mount",
                "/mnt/v",
                "--cipher",
                "aes-xts-plain64",
                "--level",
                "raid1",
            ],
        )
        .unwrap();
        let Some(Outcome::AlreadyProvisioned {
            differing_options, ..
        }) = outcome
        else {
            panic!("{outcome:?}")
        };
        let named: Vec<String> = differing_options
            .iter()
            .map(|o| format!("{} {} (running: {})", o.flag, o.asked, o.running))
            .collect();
        assert_eq!(
            named,
            [
                "--cipher aes-xts-plain64 (running: twofish-xts-plain64)",
                "--level raid1 (running: raid0)"
            ]
        );

        let err = converge(&f, &["--mount", "/mnt/w"]).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::REFUSED, "{err}");
        assert!(
            err.to_string()
                .starts_with("v is already provisioned and mounted at /mnt/v, not at /mnt/w"),
            "{err}"
        );
        assert!(f.kernel.log().is_empty(), "{:?}", f.kernel.log());
    }
}
