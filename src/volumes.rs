//! `status`, `close` and `shred`: looking at and taking down the volumes tosskey made.

use anyhow::Context as _;
use serde::Serialize;
use tosskey_dm::{CryptKeyField, DmControl, DmName, TargetLine};
use zeroize::Zeroizing;

use crate::config::UUID_PREFIX;
use crate::error::{Error, Result};
use crate::exec::teardown;
use crate::measure::VolumeMeasurement;
use crate::mount::{mount_points_of, unmount};
use crate::provision::Environment;
use crate::state::{Component, Journal, Stage};
use crate::sysfs::SystemRoot;

/// One dm mapping tosskey made, as the kernel reports it. Never carries key material.
#[derive(Debug, Serialize)]
pub struct MappingStatus {
    pub name: String,
    pub uuid: String,
    pub dev: String,
    pub size_bytes: u64,
    pub target: String,
    pub cipher: Option<String>,
    pub key_bits: Option<usize>,
    /// `keyring` (the table names a kernel key, long since invalidated) or `hex`.
    pub key_source: Option<&'static str>,
    pub sector_size: Option<u32>,
    /// Crypt targets in the table, one key each (key scope).
    pub keys: usize,
    /// The most bytes one of those keys encrypts.
    pub largest_key_bytes: u64,
    pub flags: Vec<String>,
    /// Kernel names of the devices under it.
    pub backing: Vec<String>,
    pub mount_points: Vec<String>,
    pub suspended: bool,
    pub open_count: i32,
}

/// A volume: its journal (members, stage) and its live mappings.
#[derive(Debug, Serialize)]
pub struct VolumeStatus {
    pub name: String,
    pub stage: Option<Stage>,
    pub members: Vec<String>,
    pub md_arrays: Vec<String>,
    pub mappings: Vec<MappingStatus>,
    /// What `provision --measure-pcr` extended (empty when not asked).
    pub measurements: Vec<VolumeMeasurement>,
}

/// Every tosskey mapping (or only those of volume `name`).
pub fn status(env: &Environment, name: Option<&str>) -> Result<Vec<VolumeStatus>> {
    let dm = DmControl::open()?;
    let journals = env.journals.list()?;
    let mut volumes: Vec<VolumeStatus> = journals
        .iter()
        .map(|j| VolumeStatus {
            name: j.name.clone(),
            stage: Some(j.stage),
            members: j.members.iter().map(|p| p.display().to_string()).collect(),
            md_arrays: j
                .built
                .iter()
                .filter_map(|c| match c {
                    Component::Md { name } => Some(name.clone()),
                    Component::Dm { .. } => None,
                })
                .collect(),
            mappings: Vec::new(),
            measurements: j.measurements.clone(),
        })
        .collect();
    for info in dm.devices_with_uuid_prefix(UUID_PREFIX)? {
        let dm_name = info.name.clone();
        let mapping = mapping_status(&dm, &env.root, &info)?;
        let owner = journals
            .iter()
            .find(|j| {
                j.built.contains(&Component::Dm {
                    name: dm_name.to_string(),
                })
            })
            .map(|j| j.name.clone())
            .unwrap_or_else(|| dm_name.to_string());
        match volumes.iter_mut().find(|v| v.name == owner) {
            Some(volume) => volume.mappings.push(mapping),
            None => volumes.push(VolumeStatus {
                name: owner,
                stage: None,
                members: Vec::new(),
                md_arrays: Vec::new(),
                mappings: vec![mapping],
                measurements: Vec::new(),
            }),
        }
    }
    if let Some(name) = name {
        volumes.retain(|v| v.name == name);
        if volumes.is_empty() {
            return Err(Error::Refused(format!(
                "no tosskey volume named {name} in this boot; `tosskey status` lists them"
            )));
        }
    }
    Ok(volumes)
}

fn mapping_status(
    dm: &DmControl,
    root: &SystemRoot,
    info: &tosskey_dm::DeviceInfo,
) -> Result<MappingStatus> {
    let name = &info.name;
    let table = dm.table(name)?;
    let size_bytes = table.iter().map(|t| t.length.0 * 512).sum();
    let target = table
        .first()
        .map(|t| t.target_type.clone())
        .unwrap_or_default();
    let crypt = table.iter().find_map(|t| t.crypt.as_ref());
    let backing = std::fs::read_dir(root.block_dir(info.dev).join("slaves"))
        .map(|entries| {
            entries
                .filter_map(|e| e.ok().map(|e| e.file_name().to_string_lossy().into_owned()))
                .collect()
        })
        .unwrap_or_default();
    Ok(MappingStatus {
        name: name.to_string(),
        uuid: info.uuid.clone().unwrap_or_default(),
        dev: info.dev.to_string(),
        size_bytes,
        target,
        cipher: crypt.map(|c| c.cipher.clone()),
        key_bits: crypt.and_then(|c| match &c.key {
            CryptKeyField::Keyring { bytes, .. } | CryptKeyField::Hex { bytes } => Some(bytes * 8),
            CryptKeyField::None | CryptKeyField::Elided => None,
        }),
        key_source: crypt.and_then(|c| match &c.key {
            CryptKeyField::Keyring { .. } => Some("keyring"),
            CryptKeyField::Hex { .. } | CryptKeyField::Elided => Some("hex"),
            CryptKeyField::None => None,
        }),
        sector_size: crypt.map(|c| c.options.sector_size),
        keys: table.iter().filter(|t| t.crypt.is_some()).count(),
        largest_key_bytes: table
            .iter()
            .filter(|t| t.crypt.is_some())
            .map(|t| t.length.0 * 512)
            .max()
            .unwrap_or(0),
        flags: crypt.map(|c| c.options.words()).unwrap_or_default(),
        backing,
        mount_points: mount_points_of(&root.proc, info.dev.major, info.dev.minor)?,
        suspended: info.suspended,
        open_count: info.open_count,
    })
}

/// Render `status` for humans.
pub fn render_status(volumes: &[VolumeStatus]) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    if volumes.is_empty() {
        out.push_str("no tosskey volumes in this boot\n");
    }
    for v in volumes {
        let stage = match v.stage {
            Some(Stage::Complete) => "complete",
            Some(Stage::Building) => "incomplete (a run did not finish: `tosskey close` cleans up)",
            None => "no journal",
        };
        let _ = writeln!(out, "{}: {stage}", v.name);
        if !v.members.is_empty() {
            let _ = writeln!(out, "  members: {}", v.members.join(", "));
        }
        for md in &v.md_arrays {
            let _ = writeln!(out, "  md array: /dev/{md}");
        }
        for m in &v.mappings {
            let _ = write!(
                out,
                "  /dev/mapper/{} ({}, {} bytes, {}",
                m.name, m.dev, m.size_bytes, m.target
            );
            if let (Some(cipher), Some(bits)) = (&m.cipher, m.key_bits) {
                let _ = write!(
                    out,
                    " {cipher}, {} {bits}-bit key(s) via {}, at most {} bytes under one key",
                    m.keys,
                    m.key_source.unwrap_or("?"),
                    m.largest_key_bytes
                );
            }
            if let Some(size) = m.sector_size {
                let _ = write!(out, ", {size}-byte sectors");
            }
            if !m.flags.is_empty() {
                let _ = write!(out, ", {}", m.flags.join(" "));
            }
            let _ = write!(out, ") on {}", m.backing.join(", "));
            if !m.mount_points.is_empty() {
                let _ = write!(out, ", mounted at {}", m.mount_points.join(", "));
            }
            if m.suspended {
                let _ = write!(out, ", SUSPENDED");
            }
            out.push('\n');
        }
    }
    out
}

fn journal_for(env: &Environment, name: &str) -> Result<Journal> {
    env.journals.load(name)?.ok_or_else(|| {
        Error::Refused(format!(
            "no tosskey volume named {name} in this boot; `tosskey status` lists them"
        ))
    })
}

/// Close volume `name` (or every volume): unmount if asked, remove mappings and arrays.
pub fn close(env: &Environment, name: Option<&str>, unmount_first: bool) -> Result<Vec<String>> {
    let journals = match name {
        Some(name) => vec![journal_for(env, name)?],
        None => env.journals.list()?,
    };
    let mut closed = Vec::new();
    for journal in journals {
        if let Some(dir) = &journal.mount {
            if is_mount_point_of_volume(env, &journal)? {
                if !unmount_first {
                    return Err(Error::Refused(format!(
                        "{} is mounted at {}: unmount it first or pass --unmount",
                        journal.name,
                        dir.display()
                    )));
                }
                unmount(dir)?;
            }
        }
        teardown(&env.root, &journal, &env.journals)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("closing {}", journal.name))?;
        closed.push(journal.name);
    }
    Ok(closed)
}

fn is_mount_point_of_volume(env: &Environment, journal: &Journal) -> Result<bool> {
    let dm = DmControl::open()?;
    let name = DmName::new(&journal.name)?;
    if !dm.list()?.iter().any(|(n, _)| n == &name) {
        return Ok(false);
    }
    let dev = dm.info(&name)?.dev;
    Ok(!mount_points_of(&env.root.proc, dev.major, dev.minor)?.is_empty())
}

/// Emergency crypto-shred of volume `name`. Every crypt mapping is suspended and told to
/// `key wipe` (the kernel zeroes its key: from here on the data is unrecoverable), then its
/// table is replaced by an `error` target and resumed, so whatever still uses the device
/// (a filesystem with dirty pages, a process with open files) gets I/O errors instead of
/// hanging on a suspended device forever. Then the stack is taken down as far as its users
/// allow.
pub fn shred(env: &Environment, name: &str) -> Result<String> {
    let journal = journal_for(env, name)?;
    let dm = DmControl::open()?;
    let live: Vec<DmName> = dm.list()?.into_iter().map(|(n, _)| n).collect();
    let mut wiped = Vec::new();
    let mut keys_wiped = 0;
    for component in &journal.built {
        let Component::Dm { name: dm_name } = component else {
            continue;
        };
        let dm_name = DmName::new(dm_name)?;
        if !live.contains(&dm_name) {
            continue;
        }
        let table = dm.table(&dm_name)?;
        if !table.iter().any(|t| t.target_type == "crypt") {
            continue;
        }
        dm.suspend(&dm_name)?;
        // Every segment's target holds its own key: one `key wipe` each.
        let keys = tosskey_dm::wipe_crypt_keys(&dm, &dm_name)?;
        let errors = table
            .iter()
            .map(|t| {
                TargetLine::new(
                    t.start,
                    t.length,
                    "error",
                    Zeroizing::new(String::new()),
                    false,
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        dm.load_table(&dm_name, &errors)?;
        dm.resume(&dm_name)?;
        keys_wiped += keys;
        wiped.push(if keys == 1 {
            dm_name.to_string()
        } else {
            format!("{dm_name} ({keys} keys)")
        });
    }
    // The keys are gone and the devices answer with errors: unmount without waiting for
    // users (a lazy unmount completes when the last one lets go).
    if let Some(dir) = &journal.mount {
        let _ = nix::mount::umount2(dir, nix::mount::MntFlags::MNT_DETACH);
    }
    let what = if keys_wiped == 1 { "key" } else { "keys" };
    Ok(match teardown(&env.root, &journal, &env.journals) {
        Ok(()) => format!("shredded {name}: {what} wiped from {} and the stack removed", wiped.join(", ")),
        Err(e) => format!(
            "shredded {name}: {what} wiped from {}; the mappings now fail every I/O and stay until their users let go ({}); run `tosskey close {name}` later",
            wiped.join(", "),
            crate::error::render(&e)
        ),
    })
}
