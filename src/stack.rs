//! Building and tearing down the block-device stack: members → (md | dm stripe) → dm-crypt,
//! or members → dm-crypt each → (md | dm stripe). Provision and recover both build through
//! here (provision with fresh keys, recover with escrowed ones); close and reruns tear down
//! through here.
//!
//! Every object is recorded in the [`Journal`] *before* it is created and registered with
//! the [`Rollback`] right after, so a failure undoes it and a SIGKILL leaves a record a rerun
//! can clean up.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use tosskey_crypto::key::VolumeKey;
use tosskey_crypto::sector::{SectorCipher, SectorLayout, SectorSize};
use tosskey_crypto::spec::CipherSpec;
use tosskey_dm::{
    activate_crypt, CryptOptions, CryptTarget, DevId, DmControl, DmName, DmUuid, KeyLoaded,
    LinearTarget, Sectors, StripeMember, StripedTarget, TargetLine,
};
use tosskey_raid::{ArraySpec, MdArray};

use crate::config::mapping_uuid;
use crate::exit::VerifyMismatch;
use crate::plan::{
    crypt_length_sectors, Assembly, CryptSettings, KeyLoading, Layout, MdLevel, PlannedMember,
};
use crate::rollback::Rollback;
use crate::state::{Component, Journal, JournalDir};
use crate::verify::{random_picks, spread_offsets, verify_sectors, VerifyReport, RANDOM_SECTORS};

/// Test-only crash injection: `TOSSKEY_TEST_CRASH_AFTER=<step>` SIGKILLs the process right
/// after that step, so root tests can prove a rerun converges. Steps: `journal`, `assembly`,
/// `crypt`, `verify`, `escrow`, `mkfs`, `mount`.
pub fn crash_point(step: &str) {
    if std::env::var("TOSSKEY_TEST_CRASH_AFTER").is_ok_and(|s| s == step) {
        eprintln!("tosskey: TOSSKEY_TEST_CRASH_AFTER={step}: killing myself");
        let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
    }
}

/// The dm-crypt optional parameters for `crypt`.
pub fn crypt_options(crypt: &CryptSettings) -> CryptOptions {
    CryptOptions {
        allow_discards: crypt.allow_discards,
        no_read_workqueue: crypt.no_read_workqueue,
        no_write_workqueue: crypt.no_write_workqueue,
        iv_large_sectors: crypt.iv_large_sectors,
        sector_size: crypt.sector_size,
        ..CryptOptions::default()
    }
}

/// What is needed to build a stack, whoever supplies the keys.
#[derive(Debug)]
pub struct StackSpec<'a> {
    pub name: &'a DmName,
    pub boot_id: &'a str,
    pub members: &'a [PlannedMember],
    pub assembly: Assembly,
    pub layout: Layout,
    pub cipher: CipherSpec,
    pub crypt: &'a CryptSettings,
}

/// One live crypt mapping of the stack.
#[derive(Debug, Clone, Serialize)]
pub struct CryptMapping {
    pub name: String,
    pub node: PathBuf,
    /// The device under it (the array, or a member for per-disk).
    pub backing: PathBuf,
    /// The live table as the kernel reports it, key elided.
    pub table: String,
    /// `keyring` or `hex`.
    pub key_loaded: &'static str,
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

/// A crypt mapping of a stack: its dm name and the role suffix of its dm UUID.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptName {
    pub name: String,
    pub uuid_suffix: Option<String>,
}

/// The crypt mappings a stack has, in key order: `<name>` for the shared layout,
/// `<name>-m<i>` per member for per-disk.
pub fn crypt_mapping_names(name: &DmName, members: usize, layout: Layout) -> Vec<CryptName> {
    match layout {
        Layout::PerDisk if members > 1 => (0..members)
            .map(|i| CryptName {
                name: format!("{name}-m{i}"),
                uuid_suffix: Some(format!("m{i}")),
            })
            .collect(),
        _ => vec![CryptName {
            name: name.to_string(),
            uuid_suffix: None,
        }],
    }
}

/// The md array name tosskey uses for mapping `name` (kernel name `md_<hint>`).
pub fn md_name_hint(name: &DmName) -> String {
    let cleaned: String = name
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(tosskey_raid::MAX_NAME_HINT_LEN - 3)
        .collect();
    format!("tk_{cleaned}")
}

/// Build the stack with `keys` (one for the shared layout, one per member for per-disk).
pub fn build(
    dm: &DmControl,
    spec: &StackSpec<'_>,
    keys: &[VolumeKey],
    journal: &mut Journal,
    journals: &JournalDir,
    rollback: &mut Rollback,
) -> Result<BuiltStack> {
    let per_disk = spec.layout == Layout::PerDisk && spec.members.len() > 1;
    let crypt_names = crypt_mapping_names(spec.name, spec.members.len(), spec.layout);
    if keys.len() != crypt_names.len() {
        bail!(
            "{} keys for {} crypt mappings",
            keys.len(),
            crypt_names.len()
        );
    }
    if per_disk {
        let mut crypt = Vec::new();
        let mut under_array = Vec::new();
        for ((member, key), crypt_name) in spec.members.iter().zip(keys).zip(&crypt_names) {
            let dev = DevId::new(member.major, member.minor);
            let mapping = open_crypt(
                dm,
                spec,
                crypt_name,
                dev,
                &member.path,
                member.size_bytes,
                key,
                journal,
                journals,
                rollback,
            )?;
            let info = dm.info(&DmName::new(&crypt_name.name)?)?;
            under_array.push(PlannedMember {
                path: mapping.node.clone(),
                dev: info.dev.to_string(),
                major: info.dev.major,
                minor: info.dev.minor,
                size_bytes: crypt_length_sectors(member.size_bytes, spec.crypt.sector_size) * 512,
                logical_block_size: spec.crypt.sector_size,
                identity: None,
            });
            crypt.push(mapping);
        }
        let (assembled, dev, bytes) =
            assemble(dm, spec, &under_array, journal, journals, rollback)?;
        // The volume is always /dev/mapper/<name>: a linear mapping over an md array.
        let node = match spec.assembly {
            Assembly::Md { .. } => {
                let line = LinearTarget {
                    device: dev,
                    offset: Sectors(0),
                    length: Sectors(bytes / 512),
                }
                .line(Sectors(0))?;
                create_plain_mapping(
                    dm,
                    spec,
                    spec.name.as_str(),
                    None,
                    &[line],
                    journal,
                    journals,
                    rollback,
                )?
            }
            _ => assembled.clone(),
        };
        return Ok(BuiltStack {
            node,
            assembled: Some(assembled),
            crypt,
        });
    }
    let (assembled, dev, bytes) = match spec.assembly {
        Assembly::Single => {
            let member = &spec.members[0];
            (
                member.path.clone(),
                DevId::new(member.major, member.minor),
                member.size_bytes,
            )
        }
        _ => assemble(dm, spec, spec.members, journal, journals, rollback)?,
    };
    let mapping = open_crypt(
        dm,
        spec,
        &crypt_names[0],
        dev,
        &assembled,
        bytes,
        &keys[0],
        journal,
        journals,
        rollback,
    )?;
    Ok(BuiltStack {
        node: mapping.node.clone(),
        assembled: (spec.assembly != Assembly::Single).then_some(assembled),
        crypt: vec![mapping],
    })
}

/// md array or dm stripe over `members`; returns its node, device number and size.
fn assemble(
    dm: &DmControl,
    spec: &StackSpec<'_>,
    members: &[PlannedMember],
    journal: &mut Journal,
    journals: &JournalDir,
    rollback: &mut Rollback,
) -> Result<(PathBuf, DevId, u64)> {
    match spec.assembly {
        Assembly::Single => bail!("a single device is not assembled"),
        Assembly::Md { level, chunk_bytes } => {
            let array_spec = ArraySpec {
                level: match level {
                    MdLevel::Raid0 => tosskey_raid::Level::Raid0,
                    MdLevel::Raid1 => tosskey_raid::Level::Raid1,
                    MdLevel::Linear => tosskey_raid::Level::Linear,
                },
                chunk: tosskey_raid::Bytes(chunk_bytes),
                members: members
                    .iter()
                    .map(|m| tosskey_raid::Member {
                        path: m.path.clone(),
                        dev: tosskey_raid::DevNumber {
                            major: m.major,
                            minor: m.minor,
                        },
                        size_bytes: m.size_bytes,
                    })
                    .collect(),
                name_hint: Some(md_name_hint(spec.name)),
            };
            let kernel_name = array_spec
                .kernel_name_from_hint()
                .expect("name hint is set");
            record(
                journal,
                journals,
                Component::Md {
                    name: kernel_name.clone(),
                },
            )?;
            let array = MdArray::build(&array_spec)?;
            let undo_name = kernel_name.clone();
            rollback.push(format!("md array {kernel_name}"), move || {
                Ok(MdArray::open_existing(&undo_name)?.stop()?)
            });
            crash_point("assembly");
            let info = array.info()?;
            let dev = array.dev();
            Ok((
                array.path().to_path_buf(),
                DevId::new(dev.major, dev.minor),
                info.size_bytes,
            ))
        }
        Assembly::DmStripe { chunk_bytes } => {
            let stripe = StripedTarget::new(
                Sectors(chunk_bytes / 512),
                members
                    .iter()
                    .map(|m| StripeMember {
                        device: DevId::new(m.major, m.minor),
                        offset: Sectors(0),
                        size: Sectors(m.size_bytes / 512),
                    })
                    .collect(),
            )?;
            let length = stripe.length();
            // Per-disk: the stripe is the volume itself. Shared: it sits under the crypt mapping.
            let (name, uuid_suffix) = match spec.layout {
                Layout::PerDisk => (spec.name.to_string(), None),
                Layout::Shared => (format!("{}-stripe", spec.name), Some("stripe")),
            };
            let node = create_plain_mapping(
                dm,
                spec,
                &name,
                uuid_suffix,
                &[stripe.line(Sectors(0))?],
                journal,
                journals,
                rollback,
            )?;
            crash_point("assembly");
            let info = dm.info(&DmName::new(&name)?)?;
            Ok((node, info.dev, length.0 * 512))
        }
    }
}

fn record(journal: &mut Journal, journals: &JournalDir, component: Component) -> Result<()> {
    journal.built.push(component);
    journals.save(journal)
}

/// The dm name and tagged UUID of mapping `name`, recorded in the journal before it is made.
fn name_and_record(
    spec: &StackSpec<'_>,
    name: &str,
    uuid_suffix: Option<&str>,
    journal: &mut Journal,
    journals: &JournalDir,
) -> Result<(DmName, DmUuid)> {
    let dm_name = DmName::new(name)?;
    let uuid = mapping_uuid(spec.boot_id, spec.name.as_str(), uuid_suffix)?;
    record(
        journal,
        journals,
        Component::Dm {
            name: name.to_owned(),
        },
    )?;
    Ok((dm_name, uuid))
}

/// A keyless mapping (stripe, linear): create, load, resume, with rollback.
#[allow(clippy::too_many_arguments)]
fn create_plain_mapping(
    dm: &DmControl,
    spec: &StackSpec<'_>,
    name: &str,
    uuid_suffix: Option<&str>,
    lines: &[TargetLine],
    journal: &mut Journal,
    journals: &JournalDir,
    rollback: &mut Rollback,
) -> Result<PathBuf> {
    let (dm_name, uuid) = name_and_record(spec, name, uuid_suffix, journal, journals)?;
    dm.create(&dm_name, &uuid)?;
    push_dm_removal(rollback, &dm_name);
    dm.load_table(&dm_name, lines)?;
    dm.resume(&dm_name)?;
    Ok(DmControl::node_path(&dm_name))
}

fn push_dm_removal(rollback: &mut Rollback, name: &DmName) {
    let undo = name.clone();
    rollback.push(format!("dm mapping {name}"), move || {
        Ok(DmControl::open()?.remove(&undo)?)
    });
}

/// Create crypt mapping `name` over `backing` and prove it with the userspace cipher.
#[allow(clippy::too_many_arguments)]
fn open_crypt(
    dm: &DmControl,
    spec: &StackSpec<'_>,
    crypt_name: &CryptName,
    backing_dev: DevId,
    backing: &Path,
    backing_bytes: u64,
    key: &VolumeKey,
    journal: &mut Journal,
    journals: &JournalDir,
    rollback: &mut Rollback,
) -> Result<CryptMapping> {
    let crypt = spec.crypt;
    let data_bytes = backing_bytes.saturating_sub(crypt.data_offset * 512);
    let length = crypt_length_sectors(data_bytes, crypt.sector_size);
    if length == 0 {
        bail!(
            "{} is too small for one {}-byte encryption sector",
            backing.display(),
            crypt.sector_size
        );
    }
    let target = CryptTarget::new(&spec.cipher.to_string(), backing_dev, Sectors(length))?
        .with_offset(Sectors(crypt.data_offset))
        .with_iv_offset(Sectors(crypt.iv_offset))
        .with_options(crypt_options(crypt));
    let name = crypt_name.name.as_str();
    let (dm_name, uuid) = name_and_record(
        spec,
        name,
        crypt_name.uuid_suffix.as_deref(),
        journal,
        journals,
    )?;
    let loading = match crypt.key_loading {
        KeyLoading::Auto => tosskey_dm::KeyLoading::Auto,
        KeyLoading::Keyring => tosskey_dm::KeyLoading::Keyring,
        KeyLoading::Hex => tosskey_dm::KeyLoading::Hex,
    };
    let activation = activate_crypt(dm, &dm_name, &uuid, &target, key.expose_secret(), loading)?;
    push_dm_removal(rollback, &dm_name);
    crash_point("crypt");

    let layout = SectorLayout {
        sector_size: SectorSize::try_from(u64::from(crypt.sector_size))?,
        iv_large_sectors: crypt.iv_large_sectors,
        iv_offset: crypt.iv_offset,
    };
    let cipher = SectorCipher::new(spec.cipher.block_cipher(), key.expose_secret(), layout)?;
    let verification = verify_mapping(
        backing,
        crypt.data_offset * 512,
        &activation.node,
        &cipher,
        crypt.sector_size,
        length * 512,
    )?;
    let mismatched = verification.checks.iter().filter(|c| !c.matched).count();
    if mismatched > 0 {
        return Err(VerifyMismatch {
            mapping: activation.node.display().to_string(),
            mismatched,
            checked: verification.checks.len(),
        }
        .into());
    }
    crash_point("verify");
    let table = dm
        .table(&dm_name)?
        .iter()
        .map(|e| format!("{} {} {} {}", e.start, e.length, e.target_type, e.params))
        .collect::<Vec<_>>()
        .join("; ");
    Ok(CryptMapping {
        name: name.to_owned(),
        node: activation.node,
        backing: backing.to_path_buf(),
        table,
        key_loaded: match activation.key_loaded {
            KeyLoaded::Keyring { .. } => "keyring",
            KeyLoaded::Hex => "hex",
        },
        verification,
    })
}

fn open_direct(path: &Path) -> Result<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .with_context(|| format!("opening {} with O_DIRECT", path.display()))
}

fn verify_mapping(
    backing: &Path,
    backing_offset: u64,
    mapping: &Path,
    cipher: &SectorCipher,
    sector_size: u32,
    volume_bytes: u64,
) -> Result<VerifyReport> {
    let offsets = spread_offsets(volume_bytes, sector_size, &random_picks(RANDOM_SECTORS)?);
    verify_sectors(
        &open_direct(backing)?,
        backing_offset,
        &open_direct(mapping)?,
        cipher,
        sector_size,
        &offsets,
    )
}

/// Tear down everything `journal` recorded, top first, then forget the journal. Objects that
/// no longer exist are skipped, so this also cleans up after a crash half-way.
pub fn teardown(journal: &Journal, journals: &JournalDir) -> Result<()> {
    if let Some(dir) = &journal.mount {
        if crate::mount::is_mount_point(dir)? {
            crate::mount::unmount(dir)?;
        }
    }
    let dm = DmControl::open()?;
    let live: Vec<String> = dm
        .list()?
        .into_iter()
        .map(|(name, _)| name.to_string())
        .collect();
    for component in journal.built.iter().rev() {
        match component {
            Component::Dm { name } => {
                if live.contains(name) {
                    dm.remove(&DmName::new(name)?)
                        .with_context(|| format!("removing dm mapping {name}"))?;
                }
            }
            Component::Md { name } => {
                if Path::new("/sys/block").join(name).join("md").is_dir() {
                    MdArray::open_existing(name)?
                        .stop()
                        .with_context(|| format!("stopping md array {name}"))?;
                }
            }
        }
    }
    journals.remove(&journal.name)
}
