//! `tosskey provision`: devices → safety checks → plan → (RAID) → key → dm-crypt → verify →
//! (escrow) → key wiped → (mkfs) → (mount), with rollback of everything this run built.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::Context as _;
use serde::Serialize;
use tosskey_crypto::escrow::{
    rfc3339_utc, EscrowFile, EscrowMember, EscrowMetadata, EscrowPublicKey, KeySegment,
};
use tosskey_crypto::key::{KeyArena, KeySize};
use tosskey_dm::DmControl;

use crate::config::{MemberSource, ProvisionConfig, UUID_PREFIX};
use crate::discover::discover_matching;
use crate::error::{Error, Result};
use crate::exec::{crash_point, teardown, BuiltStack, Executor};
use crate::facilities::KernelFacilities;
use crate::harden::Hardening;
use crate::measure::{self, MeasurementOutcome, Measurer};
use crate::plan::{derive, EscrowSettings, Plan};
use crate::safety::{check_members, CheckOptions, MemberClaims};
use crate::state::{boot_id, JournalDir, Stage};
use crate::sysfs::SystemRoot;

/// Where provisioning looks and keeps its journal (parameters so tests can redirect them).
#[derive(Debug, Clone)]
pub struct Environment {
    pub root: SystemRoot,
    pub journals: JournalDir,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            root: SystemRoot::host(),
            journals: JournalDir::default(),
        }
    }
}

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
    /// The same volume is already up: nothing changed.
    AlreadyProvisioned {
        name: String,
        members: Vec<PathBuf>,
        mount: Option<PathBuf>,
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
        refuse_existing_escrow_file(&escrow.file)?;
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
    let plan = derive::from_config(cfg, &checked, &boot)?;
    if cfg.dry_run {
        return Ok(Outcome::DryRun {
            kernel_facilities: kernel.survey(&plan)?,
            plan: Box::new(plan),
        });
    }
    // An explicit PCR without a TPM refuses the run here, before anything is built.
    let mut measurer = measure::open(cfg.measure_pcr)?;
    // Held through the journal and the keys: the executor releases each member's claim
    // right before md or dm claims it.
    let claims = MemberClaims::take(&mut checked);
    let mut run = Executor::start(&env.root, &env.journals, kernel, &plan.name, &boot, paths)?;
    run.hold_claims(claims);
    let measured = Measured {
        measurer: measurer.as_mut(),
        unmeasured: measure::not_measured(cfg.measure_pcr),
    };
    let report = execute(
        &mut run,
        &env.root,
        &plan,
        escrow_key.as_ref(),
        hardening,
        measured,
        started_at,
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
    let readiness = crate::state::Readiness {
        started_unix_ms: unix_ms(started),
        ready_unix_ms: unix_ms(SystemTime::now()),
        verified_sectors: checks.clone().count(),
        mismatched_sectors: checks.filter(|c| !c.matched).count(),
        escrow_file: report.escrow_file.clone(),
        filesystem: report.filesystem.as_ref().map(|f| f.kind.to_owned()),
        label: report.plan.mkfs.as_ref().and_then(|m| m.label.clone()),
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

/// Build the plan with fresh keys, escrow them (to `escrow_key`, read when the run started),
/// measure them, wipe them, format, mount.
fn execute(
    run: &mut Executor<'_>,
    root: &SystemRoot,
    plan: &Plan,
    escrow_key: Option<&EscrowPublicKey>,
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

    let escrow_file = match plan.escrow.as_ref().zip(escrow_key) {
        Some((escrow, public_key)) => {
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
            let file = EscrowFile::seal_segments(
                public_key,
                &segments,
                &keys,
                escrow_metadata(plan, root)?,
            )?;
            file.write_atomic(&escrow.file, false)
                .with_context(|| format!("writing the escrow file {}", escrow.file.display()))?;
            run.wrote_file(&escrow.file);
            crash_point("escrow");
            Some(escrow.file.clone())
        }
        None => None,
    };
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

    let filesystem = match &plan.mkfs {
        Some(ext4) => {
            let report = tosskey_ext4::format(
                &built.node,
                &tosskey_ext4::FormatOptions {
                    label: ext4.label.clone(),
                    inode_ratio: ext4.inode_ratio,
                    journal: ext4.journal,
                    // A fresh mapping over a fresh key: stale journal blocks decrypt to noise.
                    lazy_journal_init: true,
                    ..tosskey_ext4::FormatOptions::default()
                },
            )
            .with_context(|| format!("formatting {}", built.node.display()))?;
            crash_point("mkfs");
            Some(FilesystemReport {
                kind: "ext4",
                blocks: report.blocks,
                inodes: report.inodes,
                journal: ext4.journal,
            })
        }
        None => None,
    };
    if let Some(dir) = &plan.mount {
        run.mount(&built.node, dir, false)?;
    }
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
        hardening,
        key_wiped_from_tosskey_memory,
        kernel_facilities: run.kernel_facilities().to_vec(),
        measurement,
    })
}

/// Before anything else: is this volume already up (nothing to do), or did an earlier run
/// die half-way (tear down what it recorded, then build afresh)?
fn converge_previous_run(cfg: &ProvisionConfig, env: &Environment) -> Result<Option<Outcome>> {
    let dm = DmControl::open()?;
    let live = dm.list()?;
    let mapping_live = live.iter().any(|(name, _)| name == &cfg.name);
    match env.journals.load(cfg.name.as_str())? {
        Some(journal) if journal.stage == Stage::Complete && mapping_live => {
            if let MemberSource::Explicit(paths) = &cfg.source {
                if !same_devices(paths, &journal.members) {
                    return Err(Error::Refused(format!(
                        "{} is already provisioned on {}: run `tosskey close {}` first, or choose another --name",
                        cfg.name,
                        display_paths(&journal.members),
                        cfg.name
                    )));
                }
            }
            Ok(Some(Outcome::AlreadyProvisioned {
                name: journal.name,
                members: journal.members,
                mount: journal.mount,
            }))
        }
        Some(journal) => {
            eprintln!(
                "tosskey: an earlier run for {} did not finish: tearing down what it built",
                cfg.name
            );
            teardown(&env.root, &journal, &env.journals)?;
            Ok(None)
        }
        None if mapping_live => {
            let info = dm.info(&cfg.name)?;
            let ours = info
                .uuid
                .as_deref()
                .is_some_and(|u| u.starts_with(UUID_PREFIX));
            Err(Error::Refused(if ours {
                format!(
                    "dm mapping {} exists but tosskey has no record of it in this boot: run `tosskey close {}` first",
                    cfg.name, cfg.name
                )
            } else {
                format!(
                    "dm mapping {} exists and was not made by tosskey: choose another --name",
                    cfg.name
                )
            }))
        }
        None => Ok(None),
    }
}

/// The escrow public key, read and checked, and the escrow file's directory checked: it
/// exists, is a directory and this process may create files in it.
fn read_escrow_inputs(escrow: &EscrowSettings) -> Result<EscrowPublicKey> {
    let key = &escrow.public_key;
    let public_pem = std::fs::read_to_string(key).map_err(|e| {
        Error::Refused(format!(
            "cannot read the escrow public key {}: {e}: check --escrow-key",
            key.display()
        ))
    })?;
    let public_key = EscrowPublicKey::from_pem(&public_pem).map_err(|e| {
        Error::Refused(format!(
            "the escrow public key {} is unusable: {e}: check --escrow-key",
            key.display()
        ))
    })?;
    let file = &escrow.file;
    if file.file_name().is_none() {
        return Err(Error::Refused(format!(
            "the escrow file {} does not name a file: check --escrow-file",
            file.display()
        )));
    }
    let dir = match file.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent,
        _ => Path::new("."),
    };
    let unusable = |why: String| {
        Error::Refused(format!(
            "the escrow file's directory {} {why}: create it or choose another --escrow-file",
            dir.display()
        ))
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

/// tosskey never overwrites an escrow file: one that exists fails the run before it builds.
fn refuse_existing_escrow_file(file: &Path) -> Result<()> {
    match std::fs::symlink_metadata(file) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Ok(_) => Err(Error::Refused(format!(
            "the escrow file {} exists already and tosskey never overwrites one: move it away or choose another --escrow-file",
            file.display()
        ))),
        Err(e) => Err(Error::Refused(format!(
            "cannot check the escrow file {}: {e}: choose another --escrow-file",
            file.display()
        ))),
    }
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
        MemberSource::Explicit(paths) => paths.clone(),
        MemberSource::Discover(matcher) => {
            let discovery = discover_matching(&env.root, matcher)?;
            for skipped in &discovery.skipped {
                eprintln!("tosskey: skipping {}: {}", skipped.name, skipped.reason);
            }
            discovery.disks.into_iter().map(|d| d.path).collect()
        }
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
