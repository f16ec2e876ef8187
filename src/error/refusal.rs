//! Refusals (exit code 3): what tosskey will not do, found before it writes anything. One
//! variant per place that refuses; each names the device, volume or file and, where there
//! is one, the fix.

use std::path::PathBuf;

use tosskey_sysutil::DevId;

use super::Said;

#[derive(Debug)]
pub enum Refusal {
    /// A setuid or setgid run: real and effective ids differ.
    SetId {
        real_uid: u32,
        effective_uid: u32,
        real_gid: u32,
        effective_gid: u32,
    },
    /// A run the kernel marked secure (`AT_SECURE`): file capabilities or a set-id bit.
    SecureExec,
    /// A word a printed shell command cannot carry.
    Unprintable { word: String, bad: char },
    /// An mdadm command would take a relative member path for an option.
    MdadmRelativeDevice { device: String },
    /// `--mount` names something that is not a directory.
    MountNotDirectory { dir: PathBuf, existing: PathBuf },
    /// `--mount` names something that cannot be looked at.
    MountUnusable {
        dir: PathBuf,
        existing: PathBuf,
        source: std::io::Error,
    },
    /// A mirror level over fewer than two discovered disks.
    TooFewMembers { level: &'static str, count: usize },
    /// `--sector-size` below a member's logical block size.
    SectorBelowBlock { size: u32, block: u32 },
    /// Members whose logical blocks are larger than any dm-crypt sector.
    BlockOverSectorMax { block: u32 },
    /// Members too small for one encryption sector.
    TooSmallForSector { sector_size: u32 },
    /// `--key-scope` cannot split mapping `mapping`.
    KeyScopeSplit { mapping: String, reason: String },
    /// The escrow file's keys for `mapping` leave a gap or overlap.
    EscrowKeysOutOfOrder { mapping: String },
    /// The escrow file's key segments for `mapping` do not add up to the members.
    EscrowSegmentsDoNotFit { mapping: String, reason: String },
    /// Striped members of which one is under half the size of another.
    UnevenMembers {
        small: PathBuf,
        small_bytes: u64,
        large: PathBuf,
        large_bytes: u64,
    },
    /// A member that is not a block device.
    NotBlockDevice { path: PathBuf },
    /// Volume `name` was shredded and its mappings are still there.
    Shredded { name: String },
    /// Volume `name` is provisioned on other devices.
    ProvisionedElsewhere { name: String, members: String },
    /// A tosskey mapping named `name` without a journal.
    UnrecordedMapping { name: String },
    /// A mapping named `name` that tosskey did not make.
    ForeignMapping { name: String },
    /// Volume `name`'s journal says complete, but `what` differs from what was built.
    NotTheBuiltVolume { name: String, what: String },
    /// Volume `name` is mounted at `recorded`, a rerun asks for `asked`.
    MountedElsewhere {
        name: String,
        recorded: PathBuf,
        asked: PathBuf,
    },
    /// The mount point holds another filesystem (boxed: the largest refusal, and every
    /// `Result` carries the size of its error).
    MountPointHeld(Box<HeldMountPoint>),
    /// `--escrow-key` cannot be read.
    EscrowKeyUnreadable {
        key: PathBuf,
        source: std::io::Error,
    },
    /// `--escrow-key` is no usable public key.
    EscrowKeyUnusable { key: PathBuf, reason: String },
    /// `--escrow-file` names a directory, not a file.
    EscrowFileNotAFile { file: PathBuf },
    /// The escrow file's directory cannot take it (`why`: is not a directory, …).
    EscrowDirUnusable { dir: PathBuf, why: String },
    /// The escrow file (or its `.previous`) exists and is not a regular file.
    EscrowFileNotRegular { path: PathBuf },
    /// The escrow file (or its `.previous`) cannot be looked at.
    EscrowFileUncheckable {
        path: PathBuf,
        source: std::io::Error,
    },
    /// The escrow file cannot record one of this volume's values.
    EscrowCannotRecord { reason: String },
    /// No tosskey volume `name` in this boot.
    NoSuchVolume { name: String },
    /// `close` of volume `name`, mounted at `mounts`, without `--unmount`.
    VolumeMounted { name: String, mounts: String },
    /// A journal of volume `volume` names `what`, which tosskey did not make.
    NotMadeByTosskey { volume: String, what: String },
    /// `--measure-pcr` without a usable TPM.
    NoTpm { pcr: u32, reason: String },
    /// `bench --device` on something that is not a brd RAM disk (`what`: how it is not).
    NotRamDisk { path: PathBuf, what: String },
    /// `bench --device` on a RAM disk someone holds.
    RamDiskBusy { path: PathBuf },
    /// `bench --device` on a RAM disk too small for its requests.
    RamDiskTooSmall { path: PathBuf, bytes: u64 },
    /// No disk has the identity the escrow file records for a member.
    NoDiskWithIdentity { identity: String, was: PathBuf },
    /// The disk with a recorded identity has another size.
    MemberSizeDiffers {
        device: String,
        identity: String,
        bytes: u64,
        recorded: u64,
    },
    /// The escrow file's keys and its volume's crypt segments differ.
    EscrowKeysMismatch { keys: usize, segments: usize },
    /// `recover` of volume `name`, which is open in this boot.
    AlreadyOpen { name: String },
    /// The recovered volume `node` does not decrypt to ext4 under the key in `escrow_file`.
    WrongEscrowFile { node: PathBuf, escrow_file: PathBuf },
    /// `--bind DIR` where `DIR` is a mount point already (`what`: its source and type).
    BindIsMountPoint { dir: PathBuf, what: String },
    /// `--bind DIR` with a mount point below it, which the bind would hide.
    BindHidesMount { dir: PathBuf, below: PathBuf },
    /// `--bind DIR` where `existing` (DIR or its nearest existing ancestor) is no directory.
    BindNotDirectory { dir: PathBuf, existing: PathBuf },
    /// `--bind DIR` whose path goes through a symbolic link to `resolved`.
    BindThroughSymlink { dir: PathBuf, resolved: PathBuf },
    /// A rerun finds another filesystem (`what`) mounted over the bind of `dir`.
    BindHeld {
        name: String,
        dir: PathBuf,
        what: String,
    },
}

/// Volume `name` (device `volume_dev`) is to be mounted at `dir`, where `source` (a
/// `fs_type` filesystem on device `dev`) is mounted.
#[derive(Debug)]
pub struct HeldMountPoint {
    pub name: String,
    pub dir: PathBuf,
    pub source: String,
    pub fs_type: String,
    pub dev: DevId,
    pub volume_dev: DevId,
}

/// The advice of [`Refusal::WrongEscrowFile`], also given when recover only warns.
pub const WRONG_ESCROW_FILE_FIX: &str = "use the escrow file of the volume these disks hold now (provision moves an earlier volume's file to <file>.previous)";

impl Refusal {
    /// The statement and the fix, each formatted from the variant's fields. One arm per
    /// variant, so this one match is the list of every refusal's words, side by side.
    pub fn said(&self) -> Said {
        match self {
            Refusal::SetId {
                real_uid,
                effective_uid,
                real_gid,
                effective_gid,
            } => Said::fix(
                format!("refusing to run setuid or setgid (real user {real_uid}, effective user {effective_uid}, real group {real_gid}, effective group {effective_gid})"),
                "remove the set-id bit (chmod u-s,g-s) and run tosskey as root",
            ),
            Refusal::SecureExec => Said::fix(
                "refusing to run with raised privileges (the kernel set AT_SECURE: file capabilities or a set-id bit)".into(),
                "remove them (setcap -r, chmod u-s,g-s) and run tosskey as root",
            ),
            Refusal::Unprintable { word, bad } => Said::fix(
                format!(
                    "cannot print {} in a shell command: it contains {}, which is not printable ASCII",
                    word.escape_default(),
                    bad.escape_unicode()
                ),
                "use names and paths of printable ASCII characters",
            ),
            Refusal::MdadmRelativeDevice { device } => Said::fix(
                format!(
                    "cannot print an mdadm command for the device {}: it is not an absolute path, so mdadm could read it as an option",
                    device.escape_default()
                ),
                "give the members as /dev/… paths",
            ),
            Refusal::MountNotDirectory { dir, existing } => Said::fix(
                format!(
                    "--mount {}: {} is not a directory",
                    dir.display(),
                    existing.display()
                ),
                "give a directory (a missing one is created)",
            ),
            Refusal::MountUnusable {
                dir,
                existing,
                source,
            } => Said::fix(
                format!(
                    "--mount {}: cannot use {}: {source}",
                    dir.display(),
                    existing.display()
                ),
                "give a directory (a missing one is created)",
            ),
            Refusal::TooFewMembers { level, count } => {
                Said::stated(super::usage::too_few(level, *count))
            }
            Refusal::SectorBelowBlock { size, block } => Said::fix(
                format!("--sector-size {size} is smaller than the {block}-byte logical blocks of a member"),
                "use --sector-size 4096",
            ),
            Refusal::BlockOverSectorMax { block } => Said::stated(format!(
                "members have {block}-byte logical blocks, more than dm-crypt's 4096-byte maximum sector"
            )),
            Refusal::TooSmallForSector { sector_size } => Said::stated(format!(
                "the members are too small for one {sector_size}-byte encryption sector"
            )),
            Refusal::KeyScopeSplit { mapping, reason } => {
                Said::stated(format!("--key-scope over {mapping}: {reason}"))
            }
            Refusal::EscrowKeysOutOfOrder { mapping } => Said::stated(format!(
                "the escrow file's keys for {mapping} do not cover it in order from sector 0: it is damaged"
            )),
            Refusal::EscrowSegmentsDoNotFit { mapping, reason } => Said::stated(format!(
                "the escrow file's key segments for {mapping} do not fit the members: {reason}"
            )),
            Refusal::UnevenMembers {
                small,
                small_bytes,
                large,
                large_bytes,
            } => Said::fix(
                format!(
                    "member sizes differ too much: {} has {small_bytes} bytes but {} has {large_bytes}, so striping would waste over half of it",
                    small.display(),
                    large.display()
                ),
                format!("leave out {}, or use --level linear", small.display()),
            ),
            Refusal::NotBlockDevice { path } => {
                Said::stated(format!("{} is not a block device", path.display()))
            }
            Refusal::Shredded { name } => Said::fix(
                format!("{name} was shredded in this boot and its mappings are still there, failing every I/O"),
                format!("run `tosskey close {name}` once nothing uses them, then provision again"),
            ),
            Refusal::ProvisionedElsewhere { name, members } => Said::fix(
                format!("{name} is already provisioned on {members}"),
                format!("run `tosskey close {name}` first, or choose another --name"),
            ),
            Refusal::UnrecordedMapping { name } => Said::fix(
                format!("dm mapping {name} exists but tosskey has no record of it in this boot"),
                format!("run `tosskey close {name}` first"),
            ),
            Refusal::ForeignMapping { name } => Said::fix(
                format!("dm mapping {name} exists and was not made by tosskey"),
                "choose another --name",
            ),
            Refusal::NotTheBuiltVolume { name, what } => Said::fix(
                format!("{name} is recorded as provisioned, but {what}: it is not the volume tosskey built"),
                format!("run `tosskey close {name}`, then provision again"),
            ),
            Refusal::MountedElsewhere {
                name,
                recorded,
                asked,
            } => Said::fix(
                format!(
                    "{name} is already provisioned and mounted at {}, not at {}: a new mount point applies to a new volume (after a reboot, or after `tosskey close --unmount {name}`, which destroys its data)",
                    recorded.display(),
                    asked.display()
                ),
                format!("until then rerun with --mount {}", recorded.display()),
            ),
            Refusal::MountPointHeld(held) => Said::fix(
                format!(
                    "{} holds {} ({}, {}), not {} ({}): data written there would not be encrypted",
                    held.dir.display(),
                    held.source,
                    held.fs_type,
                    held.dev,
                    held.name,
                    held.volume_dev
                ),
                format!("unmount it (umount {}) and rerun", held.dir.display()),
            ),
            Refusal::EscrowKeyUnreadable { key, source } => Said::fix(
                format!("cannot read the escrow public key {}: {source}", key.display()),
                "check --escrow-key",
            ),
            Refusal::EscrowKeyUnusable { key, reason } => Said::fix(
                format!("the escrow public key {} is unusable: {reason}", key.display()),
                "check --escrow-key",
            ),
            Refusal::EscrowFileNotAFile { file } => Said::fix(
                format!("the escrow file {} does not name a file", file.display()),
                "check --escrow-file",
            ),
            Refusal::EscrowDirUnusable { dir, why } => Said::fix(
                format!("the escrow file's directory {} {why}", dir.display()),
                "create it or choose another --escrow-file",
            ),
            Refusal::EscrowFileNotRegular { path } => Said::fix(
                format!(
                    "the escrow file {} exists and is not a regular file (tosskey moves only a regular file aside)",
                    path.display()
                ),
                "remove it or choose another --escrow-file",
            ),
            Refusal::EscrowFileUncheckable { path, source } => Said::fix(
                format!("cannot check the escrow file {}: {source}", path.display()),
                "choose another --escrow-file",
            ),
            Refusal::EscrowCannotRecord { reason } => Said::fix(
                format!("the escrow file cannot record this volume: {reason}"),
                "nothing was built: fix that value on this machine (hostname, disk serial) or provision without --escrow-key",
            ),
            Refusal::NoSuchVolume { name } => Said::fix(
                format!("no tosskey volume named {name} in this boot"),
                "`tosskey status` lists them",
            ),
            Refusal::VolumeMounted { name, mounts } => Said::fix(
                format!("{name} is mounted at {mounts}"),
                "unmount it first or pass --unmount",
            ),
            Refusal::NotMadeByTosskey { volume, what } => Said::stated(format!(
                "the journal of {volume} names {what}: tosskey did not create that, so it removes nothing of {volume}"
            )),
            Refusal::NoTpm { pcr, reason } => {
                Said::fix(format!("--measure-pcr {pcr}: {reason}"), "nothing was built")
            }
            Refusal::NotRamDisk { path, what } => Said::fix(
                format!(
                    "{}: {what}: device mode only runs on a brd RAM disk /dev/ramN (it overwrites the device)",
                    path.display()
                ),
                "load brd (modprobe brd rd_nr=1 rd_size=65536)",
            ),
            Refusal::RamDiskBusy { path } => Said::fix(
                format!(
                    "{} is in use (mounted or held: the exclusive open failed with EBUSY): refusing to overwrite it",
                    path.display()
                ),
                "unmount it or pick another RAM disk",
            ),
            Refusal::RamDiskTooSmall { path, bytes } => Said::stated(format!(
                "{} is too small for the bench ({bytes} bytes)",
                path.display()
            )),
            Refusal::NoDiskWithIdentity { identity, was } => Said::fix(
                format!(
                    "no disk with identity {identity:?} (was {} when the escrow was made)",
                    was.display()
                ),
                "pass the members in order with --devices",
            ),
            Refusal::MemberSizeDiffers {
                device,
                identity,
                bytes,
                recorded,
            } => Said::fix(
                format!("/dev/{device} has identity {identity:?} but {bytes} bytes, not the recorded {recorded}"),
                "pass the members with --devices",
            ),
            Refusal::EscrowKeysMismatch { keys, segments } => Said::stated(format!(
                "the escrow file's {keys} key(s) do not match its volume's {segments} crypt segment(s) mapping by mapping: it is damaged"
            )),
            Refusal::AlreadyOpen { name } => Said::fix(
                format!("{name} is already open in this boot"),
                format!("`tosskey status {name}` shows it"),
            ),
            Refusal::WrongEscrowFile { node, escrow_file } => Said::fix(
                wrong_escrow_file(node, escrow_file),
                WRONG_ESCROW_FILE_FIX,
            ),
            Refusal::BindIsMountPoint { dir, what } => Said::fix(
                format!("--bind {}: {what} is mounted there already", dir.display()),
                format!(
                    "unmount it first (umount {}), or drop this --bind",
                    dir.display()
                ),
            ),
            Refusal::BindHidesMount { dir, below } => Said::fix(
                format!(
                    "--bind {}: {} is a mount point below it, which the bind would hide",
                    dir.display(),
                    below.display()
                ),
                "unmount it first, or bind directories beside it instead",
            ),
            Refusal::BindNotDirectory { dir, existing } => Said::fix(
                format!(
                    "--bind {}: {} is not a directory",
                    dir.display(),
                    existing.display()
                ),
                "give a directory (a missing one is created)",
            ),
            Refusal::BindThroughSymlink { dir, resolved } => Said::fix(
                format!(
                    "--bind {} goes through a symbolic link to {}",
                    dir.display(),
                    resolved.display()
                ),
                format!("give the real path: --bind {}", resolved.display()),
            ),
            Refusal::BindHeld { name, dir, what } => Said::fix(
                format!(
                    "{} holds {what}, not {name}'s bind: data written there would not be encrypted",
                    dir.display()
                ),
                format!("unmount it (umount {}) and rerun", dir.display()),
            ),
        }
    }
}

/// Why [`Refusal::WrongEscrowFile`] refuses; recover says the same as a warning when there
/// is nothing to mount.
pub fn wrong_escrow_file(node: &std::path::Path, escrow_file: &std::path::Path) -> String {
    format!(
        "{} does not decrypt to an ext4 filesystem: the key in {} does not fit these disks (the file is probably from an earlier volume on the same disks)",
        node.display(),
        escrow_file.display()
    )
}

impl std::fmt::Display for Refusal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.said().fmt(f)
    }
}
