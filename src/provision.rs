//! `tosskey provision`: devices → safety checks → plan → [RAID] → key → dm-crypt → verify →
//! [escrow] → key wiped → [mkfs] → [mount], with rollback of everything this run built.

use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result};
use serde::Serialize;
use tosskey_crypto::escrow::{
    rfc3339_utc, EscrowCrypt, EscrowFile, EscrowMember, EscrowMetadata, EscrowPublicKey,
};
use tosskey_crypto::key::VolumeKey;
use tosskey_dm::{DmControl, DmName};

use crate::config::{MemberSource, ProvisionConfig, UUID_PREFIX};
use crate::discover::discover_matching;
use crate::exit::Refused;
use crate::facilities;
use crate::harden::Hardening;
use crate::plan::{
    assembled_bytes, crypt_length_sectors, md_level_name, Assembly, CryptSettings, Layout, Plan,
    PlannedMapping, PlannedMember,
};
use crate::rollback::Rollback;
use crate::safety::{check_members, CheckOptions, CheckedDevice, MemberKind};
use crate::stack::{self, crash_point, BuiltStack, StackSpec};
use crate::state::{boot_id, Journal, JournalDir, Stage};
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
        mappings: Vec<PlannedMapping>,
        /// What the run would find in the kernel or bring up.
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
    pub key_wiped_from_tosskey_memory: bool,
    /// Kernel facilities found present or brought up (and the modules loaded) before
    /// anything was built.
    pub kernel_facilities: Vec<tosskey_kmod::Outcome>,
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
    let started_at = rfc3339_utc(SystemTime::now());
    let boot = boot_id(&env.root.proc)?;
    let kernel = tosskey_kmod::Kernel::host()?;
    let mut kernel_facilities = Vec::new();
    if !cfg.dry_run {
        kernel_facilities.push(facilities::ensure_device_mapper(&kernel)?);
        if let Some(done) = converge_previous_run(cfg, env)? {
            return Ok(done);
        }
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
    let plan = build_plan(cfg, &checked)?;
    let mappings = planned_mappings(&plan, &boot)?;
    let needs = facilities::Needs {
        assembly: plan.assembly,
        cipher: cfg.cipher,
        mount: plan.mount.is_some(),
    };
    if cfg.dry_run {
        return Ok(Outcome::DryRun {
            kernel_facilities: facilities::survey(&kernel, &needs)?,
            plan: Box::new(plan),
            mappings,
        });
    }
    // Before anything is built: a facility that cannot come up leaves nothing to undo.
    let kernel_facilities = facilities::ensure(&kernel, &needs, kernel_facilities)?;
    // md and dm claim the members exclusively: our own O_EXCL opens must go first.
    checked.iter_mut().for_each(CheckedDevice::release_claim);

    let mut journal = Journal::new(cfg.name.as_str(), &boot, paths.clone());
    env.journals.save(&journal)?;
    let mut rollback = Rollback::new();
    {
        let journals = env.journals.clone();
        let name = cfg.name.to_string();
        rollback.push(format!("journal of {name}"), move || journals.remove(&name));
    }
    crash_point("journal");
    let result = execute(
        cfg,
        env,
        &plan,
        &boot,
        &mut journal,
        &mut rollback,
        hardening,
        started_at,
    )
    .and_then(|mut report| {
        report.kernel_facilities = kernel_facilities;
        journal.stage = Stage::Complete;
        env.journals.save(&journal)?;
        Ok(Outcome::Provisioned(Box::new(report)))
    });
    rollback.settle(result)
}

#[allow(clippy::too_many_arguments)]
fn execute(
    cfg: &ProvisionConfig,
    env: &Environment,
    plan: &Plan,
    boot: &str,
    journal: &mut Journal,
    rollback: &mut Rollback,
    hardening: Hardening,
    started_at: String,
) -> Result<Report> {
    let dm = DmControl::open()?;
    let key_count = stack::crypt_mapping_names(&cfg.name, plan.members.len(), plan.layout).len();
    let keys = (0..key_count)
        .map(|_| VolumeKey::generate(cfg.key_size))
        .collect::<Result<Vec<_>, _>>()?;
    let spec = StackSpec {
        name: &cfg.name,
        boot_id: boot,
        members: &plan.members,
        assembly: plan.assembly,
        layout: plan.layout,
        cipher: cfg.cipher,
        crypt: &plan.crypt,
    };
    let built = stack::build(&dm, &spec, &keys, journal, &env.journals, rollback)?;

    let escrow_file = match &plan.escrow {
        Some(escrow) => {
            let public_pem = std::fs::read_to_string(&escrow.public_key).with_context(|| {
                format!(
                    "reading the escrow public key {}",
                    escrow.public_key.display()
                )
            })?;
            let public_key = EscrowPublicKey::from_pem(&public_pem)
                .with_context(|| format!("escrow public key {}", escrow.public_key.display()))?;
            let names: Vec<&str> = built.crypt.iter().map(|c| c.name.as_str()).collect();
            let pairs: Vec<(&str, &VolumeKey)> = names.iter().copied().zip(keys.iter()).collect();
            let file = EscrowFile::seal_keys(&public_key, &pairs, escrow_metadata(plan)?)?;
            file.write_atomic(&escrow.file, false)
                .with_context(|| format!("writing the escrow file {}", escrow.file.display()))?;
            let path = escrow.file.clone();
            rollback.push(format!("escrow file {}", path.display()), move || {
                Ok(std::fs::remove_file(&path)?)
            });
            crash_point("escrow");
            Some(escrow.file.clone())
        }
        None => None,
    };
    // The kernel holds the key(s) now; tosskey's copies are zeroized here.
    drop(keys);

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
        crate::mount::mount_volume(&built.node, dir, false)?;
        journal.mount = Some(dir.clone());
        env.journals.save(journal)?;
        let undo = dir.clone();
        rollback.push(format!("mount {}", dir.display()), move || {
            crate::mount::unmount(&undo)
        });
        crash_point("mount");
    }
    Ok(Report {
        tool: "tosskey",
        version: env!("CARGO_PKG_VERSION"),
        kernel: kernel_release(),
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
        key_wiped_from_tosskey_memory: true,
        kernel_facilities: Vec::new(),
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
                    return Err(Refused(format!(
                        "{} is already provisioned on {}: run `tosskey close {}` first, or choose another --name",
                        cfg.name,
                        display_paths(&journal.members),
                        cfg.name
                    ))
                    .into());
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
            stack::teardown(&journal, &env.journals)?;
            Ok(None)
        }
        None if mapping_live => {
            let info = dm.info(&cfg.name)?;
            let ours = info
                .uuid
                .as_deref()
                .is_some_and(|u| u.starts_with(UUID_PREFIX));
            Err(Refused(if ours {
                format!(
                    "dm mapping {} exists but tosskey has no record of it in this boot: run `tosskey close {}` first",
                    cfg.name, cfg.name
                )
            } else {
                format!(
                    "dm mapping {} exists and was not made by tosskey: choose another --name",
                    cfg.name
                )
            })
            .into())
        }
        None => Ok(None),
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

/// Turn checked members and the config into the plan.
pub fn build_plan(cfg: &ProvisionConfig, checked: &[CheckedDevice]) -> Result<Plan> {
    let members = checked
        .iter()
        .map(|c| planned_member(c, None))
        .collect::<Result<Vec<_>>>()?;
    let assembly = cfg.assembly_for(members.len());
    if matches!(
        assembly,
        Assembly::Md {
            level: crate::plan::MdLevel::Raid1,
            ..
        }
    ) && members.len() < 2
    {
        return Err(Refused("--level raid1 needs at least 2 devices".into()).into());
    }
    refuse_wasteful_sizes(assembly, &members)?;
    let largest_block = members
        .iter()
        .map(|m| m.logical_block_size)
        .max()
        .unwrap_or(512);
    let sector_size = match cfg.sector_size {
        Some(size) if size < largest_block => {
            return Err(Refused(format!(
                "--sector-size {size} is smaller than the {largest_block}-byte logical blocks of a member: use --sector-size 4096"
            ))
            .into())
        }
        Some(size) => size,
        None if largest_block <= 4096 => 4096,
        None => {
            return Err(Refused(format!(
                "members have {largest_block}-byte logical blocks, more than dm-crypt's 4096-byte maximum sector"
            ))
            .into())
        }
    };
    let layout = if members.len() > 1 {
        cfg.layout
    } else {
        Layout::Shared
    };
    let crypt = CryptSettings {
        cipher: cfg.cipher.to_string(),
        key_bits: cfg.key_size.bits(),
        sector_size,
        iv_large_sectors: false,
        iv_offset: 0,
        data_offset: 0,
        allow_discards: cfg.allow_discards,
        no_read_workqueue: cfg.no_read_workqueue,
        no_write_workqueue: cfg.no_write_workqueue,
        key_loading: cfg.key_loading,
    };
    let sizes: Vec<u64> = members.iter().map(|m| m.size_bytes).collect();
    let volume_bytes = match layout {
        Layout::Shared => {
            crypt_length_sectors(assembled_bytes(assembly, &sizes), sector_size) * 512
        }
        Layout::PerDisk => {
            let crypt_sizes: Vec<u64> = sizes
                .iter()
                .map(|s| crypt_length_sectors(*s, sector_size) * 512)
                .collect();
            assembled_bytes(assembly, &crypt_sizes)
        }
    };
    if volume_bytes == 0 {
        return Err(Refused("the members are too small for one encryption sector".into()).into());
    }
    let mut steps = Vec::new();
    let describe_assembly = |on: &str| {
        match assembly {
        Assembly::Single => None,
        Assembly::Md { level, chunk_bytes } => Some(format!(
            "build a non-persistent md {} array md_{} over {on} (chunk {} KiB, no superblock written)",
            md_level_name(level),
            stack::md_name_hint(&cfg.name),
            chunk_bytes >> 10
        )),
        Assembly::DmStripe { chunk_bytes } => {
            Some(format!("build a dm striped mapping over {on} (chunk {} KiB)", chunk_bytes >> 10))
        }
    }
    };
    let key_count = stack::crypt_mapping_names(&cfg.name, members.len(), layout).len();
    if layout == Layout::Shared {
        steps.extend(describe_assembly("the members"));
    }
    steps.push(format!(
        "generate {key_count} random {}-bit key(s) in locked memory",
        cfg.key_size.bits()
    ));
    steps.push(format!(
        "load {key_count} dm-crypt mapping(s) {} {} sector {sector_size} (key via {:?} loading), then invalidate the kernel keyring copy",
        cfg.cipher,
        cfg.key_size.bits(),
        cfg.key_loading
    ));
    steps.push("verify read-only: decrypt raw sectors (first, last, random) in userspace and compare with the mapping".into());
    if layout == Layout::PerDisk {
        steps.extend(describe_assembly("the crypt mappings"));
    }
    if let Some(escrow) = &cfg.escrow {
        steps.push(format!(
            "escrow the key(s) with RSA-OAEP-SHA-256 to {} into {} (mode 0400)",
            escrow.public_key.display(),
            escrow.file.display()
        ));
    }
    steps.push("wipe the key(s) from tosskey's memory: only the kernel holds them".into());
    if let Some(ext4) = &cfg.mkfs {
        steps.push(format!(
            "format /dev/mapper/{} as ext4 ({} bytes per inode, {})",
            cfg.name,
            ext4.inode_ratio,
            if ext4.journal {
                "with journal"
            } else {
                "no journal"
            }
        ));
    }
    if let Some(dir) = &cfg.mount {
        steps.push(format!(
            "mount it at {} (noatime,nodev,nosuid)",
            dir.display()
        ));
    }
    Ok(Plan {
        name: cfg.name.to_string(),
        members,
        assembly,
        layout,
        crypt,
        volume_bytes,
        mkfs: cfg.mkfs.clone(),
        mount: cfg.mount.clone(),
        escrow: cfg.escrow.clone(),
        steps,
    })
}

/// Striping and mirroring use every member only up to the smallest one's size. Members that
/// differ by more than half are almost certainly a wrong device, and would waste most of the
/// big ones: refuse (linear concatenation has no such problem).
fn refuse_wasteful_sizes(assembly: Assembly, members: &[PlannedMember]) -> Result<()> {
    let striped = matches!(
        assembly,
        Assembly::DmStripe { .. }
            | Assembly::Md {
                level: crate::plan::MdLevel::Raid0 | crate::plan::MdLevel::Raid1,
                ..
            }
    );
    let smallest = members.iter().min_by_key(|m| m.size_bytes);
    let largest = members.iter().max_by_key(|m| m.size_bytes);
    if let (true, Some(small), Some(large)) = (striped, smallest, largest) {
        if small.size_bytes.saturating_mul(2) < large.size_bytes {
            return Err(Refused(format!(
                "member sizes differ too much: {} has {} bytes but {} has {}, so striping would waste over half of it: leave out {}, or use --level linear",
                small.path.display(),
                small.size_bytes,
                large.path.display(),
                large.size_bytes,
                small.path.display()
            ))
            .into());
        }
    }
    Ok(())
}

/// A checked member as the plan records it. `identity`: the recorded one (recovery), else
/// the device's serial, WWN or by-id link.
pub fn planned_member(checked: &CheckedDevice, identity: Option<String>) -> Result<PlannedMember> {
    let MemberKind::Block(device) = &checked.kind else {
        anyhow::bail!("{} is not a block device", checked.path.display());
    };
    let identity = identity
        .or_else(|| device.serial.clone())
        .or_else(|| device.wwid.clone())
        .or_else(|| {
            device
                .by_id
                .first()
                .map(|id| format!("/dev/disk/by-id/{id}"))
        });
    Ok(PlannedMember {
        path: checked.path.clone(),
        dev: device.dev.to_string(),
        major: device.dev.major,
        minor: device.dev.minor,
        size_bytes: checked.size_bytes,
        logical_block_size: checked.logical_block_size,
        identity,
    })
}

/// The tables the plan will load, key elided, for `--dry-run`.
pub fn planned_mappings(plan: &Plan, boot: &str) -> Result<Vec<PlannedMapping>> {
    let name = DmName::new(&plan.name)?;
    let names = stack::crypt_mapping_names(&name, plan.members.len(), plan.layout);
    let (under, sizes): (Vec<String>, Vec<u64>) = match plan.layout {
        Layout::PerDisk => plan
            .members
            .iter()
            .map(|m| (m.dev.clone(), m.size_bytes))
            .unzip(),
        Layout::Shared => {
            let sizes: Vec<u64> = plan.members.iter().map(|m| m.size_bytes).collect();
            let under = match plan.assembly {
                Assembly::Single => plan.members[0].dev.clone(),
                Assembly::Md { .. } => format!("/dev/md_{}", stack::md_name_hint(&name)),
                Assembly::DmStripe { .. } => format!("/dev/mapper/{name}-stripe"),
            };
            (vec![under], vec![assembled_bytes(plan.assembly, &sizes)])
        }
    };
    let words = stack::crypt_options(&plan.crypt).words();
    let option_words = if words.is_empty() {
        String::new()
    } else {
        format!(" {} {}", words.len(), words.join(" "))
    };
    names
        .iter()
        .zip(under.iter().zip(sizes))
        .map(|(mapping, (dev, bytes))| {
            Ok(PlannedMapping {
                name: mapping.name.clone(),
                uuid: crate::config::mapping_uuid(
                    boot,
                    &plan.name,
                    mapping.uuid_suffix.as_deref(),
                )?
                .to_string(),
                table: format!(
                    "0 {} crypt {} :{}:logon:tosskey:{} {} {dev} {}{option_words}",
                    crypt_length_sectors(bytes, plan.crypt.sector_size),
                    plan.crypt.cipher,
                    plan.crypt.key_bits / 8,
                    mapping.name,
                    plan.crypt.iv_offset,
                    plan.crypt.data_offset,
                ),
            })
        })
        .collect()
}

fn escrow_metadata(plan: &Plan) -> Result<EscrowMetadata> {
    Ok(EscrowMetadata {
        name: plan.name.clone(),
        hostname: read_proc_line("/proc/sys/kernel/hostname"),
        created_at: rfc3339_utc(SystemTime::now()),
        crypt: EscrowCrypt {
            cipher: plan.crypt.cipher.parse()?,
            key_bits: plan.crypt.key_bits,
            sector_size: plan.crypt.sector_size,
            iv_large_sectors: plan.crypt.iv_large_sectors,
            iv_offset: plan.crypt.iv_offset,
            data_offset: plan.crypt.data_offset,
        },
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
    })
}

fn read_proc_line(path: &str) -> String {
    std::fs::read_to_string(Path::new(path))
        .map(|s| s.trim().to_owned())
        .unwrap_or_else(|_| "unknown".to_owned())
}

/// The running kernel's release (`uname -r`).
pub fn kernel_release() -> String {
    read_proc_line("/proc/sys/kernel/osrelease")
}
