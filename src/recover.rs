//! `recover` and `escrow decrypt`: reopening an escrowed volume, with tosskey or with stock
//! cryptsetup.

use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use tosskey_crypto::escrow::{EscrowFile, EscrowMetadata, OpenedKey};
use tosskey_crypto::key::VolumeKey;
use tosskey_dm::{CryptTarget, DevId, DmControl, DmName, Sectors};

use crate::exit::Refused;
use crate::plan::{
    crypt_length_sectors, Assembly, CryptSettings, KeyLoading, Layout, BYPASS_WORKQUEUES,
};
use crate::provision::planned_member;
use crate::provision::Environment;
use crate::rollback::Rollback;
use crate::safety::{check_members, CheckOptions, CheckedDevice};
use crate::stack::{self, crypt_options, BuiltStack, StackSpec};
use crate::state::{boot_id, Journal, Stage};
use crate::sysfs::{BlockDevice, SystemState};

/// Options of `tosskey recover`.
#[derive(Debug, Clone)]
pub struct RecoverOptions {
    pub escrow_file: PathBuf,
    pub private_key: PathBuf,
    pub mount: Option<PathBuf>,
    pub read_only: bool,
    /// Explicit members in recorded order, when their identities cannot be found.
    pub devices: Vec<PathBuf>,
}

fn open_escrow(escrow_file: &Path, private_key: &Path) -> Result<(EscrowFile, Vec<OpenedKey>)> {
    let escrow = EscrowFile::read(escrow_file)
        .with_context(|| format!("escrow file {}", escrow_file.display()))?;
    let pem = zeroize::Zeroizing::new(
        std::fs::read_to_string(private_key)
            .with_context(|| format!("reading the private key {}", private_key.display()))?,
    );
    let keys = escrow.open_all(&pem).with_context(|| {
        format!(
            "opening {} with {}",
            escrow_file.display(),
            private_key.display()
        )
    })?;
    Ok((escrow, keys))
}

/// Find the recorded members by identity (serial, WWN, by-id link), checking sizes.
fn find_members(
    env: &Environment,
    meta: &EscrowMetadata,
    explicit: &[PathBuf],
) -> Result<Vec<PathBuf>> {
    if !explicit.is_empty() {
        if explicit.len() != meta.members.len() {
            bail!(
                "the escrow file records {} member(s) but {} were given with --devices",
                meta.members.len(),
                explicit.len()
            );
        }
        return Ok(explicit.to_vec());
    }
    let state = SystemState::read(&env.root).context("reading the block device inventory")?;
    meta.members
        .iter()
        .map(|member| {
            let matches = |d: &&BlockDevice| {
                d.serial.as_deref() == Some(member.identity.as_str())
                    || d.wwid.as_deref() == Some(member.identity.as_str())
                    || d.by_id.iter().any(|id| member.identity == format!("/dev/disk/by-id/{id}"))
            };
            let device = state.devices.iter().filter(|d| !d.is_partition()).find(matches).ok_or_else(|| {
                Refused(format!(
                    "no disk with identity {:?} (was {} when the escrow was made): pass the members in order with --devices",
                    member.identity,
                    member.path_at_creation.display()
                ))
            })?;
            if device.size_bytes != member.size_bytes {
                return Err(Refused(format!(
                    "/dev/{} has identity {:?} but {} bytes, not the recorded {}: pass the members with --devices",
                    device.name, member.identity, device.size_bytes, member.size_bytes
                ))
                .into());
            }
            Ok(state.root.dev.join(&device.name))
        })
        .collect()
}

/// The crypt settings an escrow file records, with tosskey's table options.
fn crypt_settings(meta: &EscrowMetadata, key_loading: KeyLoading) -> CryptSettings {
    CryptSettings {
        cipher: meta.crypt.cipher.to_string(),
        key_bits: meta.crypt.key_bits,
        sector_size: meta.crypt.sector_size,
        iv_large_sectors: meta.crypt.iv_large_sectors,
        iv_offset: meta.crypt.iv_offset,
        data_offset: meta.crypt.data_offset,
        allow_discards: false,
        no_read_workqueue: BYPASS_WORKQUEUES,
        no_write_workqueue: BYPASS_WORKQUEUES,
        key_loading,
    }
}

/// Reassemble and reopen the escrowed volume; mount it if asked.
pub fn recover(env: &Environment, opts: &RecoverOptions) -> Result<BuiltStack> {
    let (escrow, opened) = open_escrow(&opts.escrow_file, &opts.private_key)?;
    let meta = escrow.metadata();
    let name = DmName::new(&meta.name)?;
    // Before anything is looked at or built: device-mapper, the array, cipher and ext4.
    crate::facilities::ensure(
        &tosskey_kmod::Kernel::host()?,
        &crate::facilities::Needs {
            assembly: meta.assembly,
            cipher: meta.crypt.cipher,
            mount: opts.mount.is_some(),
        },
        Vec::new(),
    )?;
    if env.journals.load(&meta.name)?.is_some()
        || DmControl::open()?.list()?.iter().any(|(n, _)| n == &name)
    {
        return Err(Refused(format!(
            "{} is already open in this boot: `tosskey status {}` shows it",
            meta.name, meta.name
        ))
        .into());
    }
    let paths = find_members(env, meta, &opts.devices)?;
    // Recovery writes nothing to the members, so signatures do not matter; use does.
    let mut checked = check_members(
        &env.root,
        &paths,
        &CheckOptions {
            force: true,
            allow_regular_file: false,
        },
    )?;
    let members = checked
        .iter()
        .zip(&meta.members)
        .map(|(c, m)| planned_member(c, Some(m.identity.clone())))
        .collect::<Result<Vec<_>>>()?;
    checked.iter_mut().for_each(CheckedDevice::release_claim);

    let crypt = crypt_settings(meta, KeyLoading::Auto);
    let boot = boot_id(&env.root.proc)?;
    let spec = StackSpec {
        name: &name,
        boot_id: &boot,
        members: &members,
        assembly: meta.assembly,
        layout: meta.layout,
        cipher: meta.crypt.cipher,
        crypt: &crypt,
    };
    let expected: Vec<String> = stack::crypt_mapping_names(&name, members.len(), meta.layout)
        .into_iter()
        .map(|c| c.name)
        .collect();
    let keys: Vec<VolumeKey> = opened
        .into_iter()
        .zip(&expected)
        .map(|(o, want)| {
            if &o.dm_name == want {
                Ok(o.key)
            } else {
                bail!(
                    "escrow key for {} does not belong to mapping {want}",
                    o.dm_name
                )
            }
        })
        .collect::<Result<_>>()?;

    let mut journal = Journal::new(&meta.name, &boot, paths);
    env.journals.save(&journal)?;
    let mut rollback = Rollback::new();
    {
        let journals = env.journals.clone();
        let name = meta.name.clone();
        rollback.push(format!("journal of {name}"), move || journals.remove(&name));
    }
    let dm = DmControl::open()?;
    let result = stack::build(
        &dm,
        &spec,
        &keys,
        &mut journal,
        &env.journals,
        &mut rollback,
    )
    .and_then(|built| {
        drop(keys);
        if let Some(dir) = &opts.mount {
            crate::mount::mount_volume(&built.node, dir, opts.read_only)?;
            journal.mount = Some(dir.clone());
        }
        journal.stage = Stage::Complete;
        env.journals.save(&journal)?;
        Ok(built)
    });
    rollback.settle(result)
}

/// `escrow decrypt`: write the raw key(s) and return the stock commands that reopen the
/// volume without tosskey.
pub fn escrow_decrypt(
    escrow_file: &Path,
    private_key: &Path,
    key_out: &Path,
) -> Result<Vec<String>> {
    let (escrow, opened) = open_escrow(escrow_file, private_key)?;
    let meta = escrow.metadata();
    let crypt = crypt_settings(meta, KeyLoading::Hex);
    let member_list = meta
        .members
        .iter()
        .map(|m| m.path_at_creation.display().to_string())
        .collect::<Vec<_>>();
    let mut commands = Vec::new();
    let key_files: Vec<PathBuf> = if opened.len() == 1 {
        vec![key_out.to_path_buf()]
    } else {
        (0..opened.len())
            .map(|i| PathBuf::from(format!("{}.{i}", key_out.display())))
            .collect()
    };
    let array = format!("/dev/md/{}", meta.name);
    let reassemble = |over: &[String]| match meta.assembly {
        Assembly::Single => None,
        Assembly::Md { level, chunk_bytes } => Some(format!(
            "mdadm --build {array} --level={} --chunk={}K --raid-devices={} {}",
            crate::plan::md_level_name(level),
            chunk_bytes >> 10,
            over.len(),
            over.join(" ")
        )),
        Assembly::DmStripe { chunk_bytes } => {
            let width = meta
                .members
                .iter()
                .map(|m| m.size_bytes / 512)
                .min()
                .unwrap_or(0)
                / (chunk_bytes / 512)
                * (chunk_bytes / 512);
            let devices: Vec<String> = over.iter().map(|d| format!("{d} 0")).collect();
            Some(format!(
                "dmsetup create {}-stripe --table \"0 {} striped {} {} {}\"",
                meta.name,
                width * over.len() as u64,
                over.len(),
                chunk_bytes / 512,
                devices.join(" ")
            ))
        }
    };
    let assembled = match meta.assembly {
        Assembly::Single => member_list[0].clone(),
        Assembly::Md { .. } => array.clone(),
        Assembly::DmStripe { .. } => format!("/dev/mapper/{}-stripe", meta.name),
    };
    if meta.layout == Layout::Shared {
        commands.extend(
            reassemble(&member_list)
                .map(|c| format!("{c}   # members in this order, nothing written to them")),
        );
    }
    for (i, (opened, key_file)) in opened.iter().zip(&key_files).enumerate() {
        opened
            .key
            .write_key_file(key_file)
            .with_context(|| format!("writing {}", key_file.display()))?;
        let device = match meta.layout {
            Layout::PerDisk => member_list[i].clone(),
            Layout::Shared => assembled.clone(),
        };
        let size = meta.members.get(i).map(|m| m.size_bytes).unwrap_or(0);
        let target = CryptTarget::new(
            &crypt.cipher,
            DevId::new(0, 0),
            Sectors(crypt_length_sectors(size, crypt.sector_size).max(1)),
        )?
        .with_offset(Sectors(crypt.data_offset))
        .with_iv_offset(Sectors(crypt.iv_offset))
        .with_options(crypt_options(&crypt));
        let args = target.cryptsetup_open_args(
            opened.key.len(),
            &key_file.display().to_string(),
            &device,
            &opened.dm_name,
        );
        commands.push(format!("cryptsetup {}", args.join(" ")));
    }
    if meta.layout == Layout::PerDisk {
        let mappings: Vec<String> = opened
            .iter()
            .map(|o| format!("/dev/mapper/{}", o.dm_name))
            .collect();
        commands.extend(reassemble(&mappings).map(|c| {
            format!(
                "{c}   # then mount {}",
                match meta.assembly {
                    Assembly::DmStripe { .. } => format!("/dev/mapper/{}-stripe", meta.name),
                    _ => array.clone(),
                }
            )
        }));
    }
    Ok(commands)
}
