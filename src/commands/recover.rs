//! `recover` and `escrow decrypt`: reopening an escrowed volume, with tosskey or with stock
//! cryptsetup.

use std::path::{Path, PathBuf};
use std::rc::Rc;

use anyhow::Context as _;
use tosskey_crypto::escrow::{EscrowFile, EscrowMetadata, KeySegment, OpenedSegments};
use tosskey_crypto::key::KeyArena;
use tosskey_crypto::secret_file::SecretFile;
use tosskey_dm::DmName;

use crate::commands::Environment;
use crate::error::{wrong_escrow_file, Error, Refusal, Result, Usage, WRONG_ESCROW_FILE_FIX};
use crate::exec::facilities::KernelFacilities;
use crate::exec::journal::boot_id;
use crate::exec::kernel::{HostKernel, StackKernel};
use crate::exec::{BuiltStack, Executor};
use crate::host::safety::{check_members, CheckOptions, MemberClaims};
use crate::host::sysfs::{BlockDevice, SystemState};
use crate::plan::{derive, render, Filesystem, KeyLoading, Plan};

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

/// The largest private key file read: an 8192-bit RSA key in PEM is under 7 KiB.
const MAX_PRIVATE_KEY_BYTES: usize = 64 << 10;

fn open_escrow(escrow_file: &Path, private_key: &Path) -> Result<(EscrowFile, OpenedSegments)> {
    let escrow = EscrowFile::read(escrow_file)
        .with_context(|| format!("escrow file {}", escrow_file.display()))?;
    // Into locked pages, sized before the first read: no copy of the key in the heap.
    let pem = SecretFile::read(private_key, MAX_PRIVATE_KEY_BYTES)
        .with_context(|| format!("reading the private key {}", private_key.display()))?;
    let pem = pem.as_str().map_err(|_| {
        Error::Usage(Usage::PrivateKeyNotPem {
            path: private_key.to_owned(),
        })
    })?;
    let keys = escrow.open_segments(pem).with_context(|| {
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
            return Err(Error::Usage(Usage::MemberCountDiffers {
                recorded: meta.members.len(),
                given: explicit.len(),
            }));
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
                    || d.by_id
                        .iter()
                        .any(|id| member.identity == format!("/dev/disk/by-id/{id}"))
            };
            let device = state
                .devices
                .iter()
                .filter(|d| !d.is_partition())
                .find(matches)
                .ok_or_else(|| {
                    Error::Refused(Refusal::NoDiskWithIdentity {
                        identity: member.identity.clone(),
                        was: member.path_at_creation.clone(),
                    })
                })?;
            if device.size_bytes != member.size_bytes {
                return Err(Error::Refused(Refusal::MemberSizeDiffers {
                    device: device.name.clone(),
                    identity: member.identity.clone(),
                    bytes: device.size_bytes,
                    recorded: member.size_bytes,
                }));
            }
            Ok(state.root.dev.join(&device.name))
        })
        .collect()
}

/// Each escrowed key's mapping and segment, in escrow order: what the plan is derived from.
fn recorded_keys(opened: &OpenedSegments) -> Vec<(String, Option<KeySegment>)> {
    opened
        .segments
        .iter()
        .map(|s| (s.dm_name.clone(), s.segment))
        .collect()
}

/// The escrowed keys, checked to be in the plan's key order (mapping by mapping).
fn keys_for(plan: &Plan, opened: OpenedSegments) -> Result<KeyArena> {
    if opened.segments.len() != plan.keys.len()
        || opened
            .segments
            .iter()
            .zip(&plan.keys)
            .any(|(o, planned)| o.dm_name != planned.mapping)
    {
        return Err(Error::Refused(Refusal::EscrowKeysMismatch {
            keys: opened.segments.len(),
            segments: plan.keys.len(),
        }));
    }
    Ok(opened.keys)
}

/// Reassemble and reopen the escrowed volume; mount it if asked.
pub fn recover(env: &Environment, opts: &RecoverOptions) -> Result<BuiltStack> {
    let (escrow, opened) = open_escrow(&opts.escrow_file, &opts.private_key)?;
    let meta = escrow.metadata();
    let name = DmName::new(&meta.name)?;
    // Open mappings are looked at through device-mapper; the rest comes up in the executor.
    let mut facilities = KernelFacilities::host()?;
    facilities.device_mapper()?;
    let mut kernel = HostKernel::open(&env.root)?;
    if env.journals.load(&meta.name)?.is_some()
        || kernel.dm_devices()?.iter().any(|d| d.name == name)
    {
        return Err(Error::Refused(Refusal::AlreadyOpen {
            name: meta.name.clone(),
        }));
    }
    if let Some(dir) = &opts.mount {
        crate::exec::mount::check_mount_target(dir)?;
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
        .map(|(c, m)| derive::planned_member(c, Some(m.identity.clone())))
        .collect::<Result<Vec<_>>>()?;
    let claims = MemberClaims::take(&mut checked);

    let boot = boot_id(&env.root.proc)?;
    let plan = derive::from_escrow(
        meta,
        &recorded_keys(&opened),
        members,
        &boot,
        KeyLoading::Auto,
        opts.mount.clone(),
    )?;
    let keys = keys_for(&plan, opened)?;
    if opts.read_only {
        kernel = kernel.with_read_only_tables();
    }
    let mut run = Executor::start_in(
        &env.journals,
        facilities,
        Rc::new(kernel),
        &plan.name,
        &boot,
        paths,
        Vec::new(),
    )?;
    run.hold_claims(claims);
    let built = reopen(&mut run, &plan, keys, opts);
    run.finish(built)
}

/// Build the escrowed plan, forget the keys, check that they open a filesystem, mount if
/// asked.
fn reopen(
    run: &mut Executor<'_>,
    plan: &Plan,
    keys: KeyArena,
    opts: &RecoverOptions,
) -> Result<BuiltStack> {
    let built = run.build(plan, &keys)?;
    drop(keys);
    let mut filesystems = Vec::new();
    for volume in plan.volumes() {
        let node = &volume.node.path;
        let filesystem = decrypted_filesystem(node, volume.node.size_bytes)?;
        filesystems.push(filesystem);
        if filesystem.is_some() {
            continue;
        }
        if plan.mount.is_some() {
            return Err(Error::Refused(Refusal::WrongEscrowFile {
                node: node.clone(),
                escrow_file: opts.escrow_file.clone(),
            }));
        }
        eprintln!(
            "tosskey: warning: {}, unless the volume was made with --mkfs none; {WRONG_ESCROW_FILE_FIX}",
            wrong_escrow_file(node, &opts.escrow_file)
        );
    }
    for (volume, filesystem) in plan.volumes().into_iter().zip(filesystems) {
        if let Some(filesystem) = filesystem {
            run.mount_volume(plan, volume, filesystem, opts.read_only)?;
        }
    }
    Ok(built)
}

/// The filesystem whose superblock the reopened volume `node` holds (ext4, or XFS with a
/// valid CRC): under a key that does not fit, the superblock's place decrypts to noise.
/// The escrow file does not say which filesystem was made; the superblock does.
fn decrypted_filesystem(node: &Path, size: u64) -> Result<Option<Filesystem>> {
    use crate::host::signature::SignatureKind;
    let file = std::fs::File::open(node).with_context(|| format!("opening {}", node.display()))?;
    let found = crate::host::signature::scan_file(&file, size)
        .with_context(|| format!("reading {}", node.display()))?;
    Ok(found.iter().find_map(|s| match s.kind {
        SignatureKind::Ext(_) => Some(Filesystem::Ext4),
        SignatureKind::Xfs => Some(Filesystem::Xfs),
        _ => None,
    }))
}

/// `escrow decrypt`: write the raw key(s) and return the recovery steps without tosskey:
/// the plan the escrow file records, rendered for mdadm, dmsetup and cryptsetup, then the
/// key files' removal, the mount and the teardown ([`render::recovery_steps`]), under a
/// header line that says which shell they are written for.
pub fn escrow_decrypt(
    escrow_file: &Path,
    private_key: &Path,
    key_out: &Path,
) -> Result<Vec<String>> {
    let (escrow, opened) = open_escrow(escrow_file, private_key)?;
    let meta = escrow.metadata();
    let plan = derive::from_escrow(
        meta,
        &recorded_keys(&opened),
        derive::recorded_members(meta),
        "escrow",
        KeyLoading::Hex,
        None,
    )?;
    let keys = keys_for(&plan, opened)?;
    let key_files: Vec<PathBuf> = if keys.len() == 1 {
        vec![key_out.to_path_buf()]
    } else {
        (0..keys.len())
            .map(|i| PathBuf::from(format!("{}.{i}", key_out.display())))
            .collect()
    };
    // Rendered before any key file is written: a value that cannot be printed leaves none.
    let steps = render::recovery_steps(&plan, &key_files)?;
    write_key_files(&keys, &key_files)?;
    Ok(std::iter::once(crate::plan::shell::HEADER.to_owned())
        .chain(steps)
        .collect())
}

/// Key `i` to `files[i]`, each a new file; if one cannot be written, the ones this call
/// wrote are removed again, so a failed run leaves no key on disk.
fn write_key_files(keys: &KeyArena, files: &[PathBuf]) -> Result<()> {
    for (index, file) in files.iter().enumerate() {
        if let Err(error) = keys.write_key_file(index, file) {
            for written in &files[..index] {
                if let Err(remove) = std::fs::remove_file(written) {
                    eprintln!(
                        "tosskey: could not remove the key file {} after the failure: {remove}: remove it yourself",
                        written.display()
                    );
                }
            }
            return Err(anyhow::Error::new(error)
                .context(format!("writing {}", file.display()))
                .into());
        }
    }
    Ok(())
}
