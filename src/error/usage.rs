//! Usage errors (exit code 2): a flag or value that cannot work, found before any device is
//! looked at. One variant per place that finds one; each names the flag or value and, where
//! there is one, the fix.

use std::path::PathBuf;

use super::Said;

#[derive(Debug)]
pub enum Usage {
    /// `--name` longer than the dm UUID leaves room for.
    NameTooLong { name: String, max: usize },
    /// `--name` that is no dm name (the dm crate's reason carries its own advice).
    BadName { name: String, reason: String },
    /// `--cipher` that is not supported (the reason lists the supported ones).
    BadCipher { reason: String },
    /// `--key-size` that is no key size.
    BadKeySize { reason: String },
    /// `--key-size` that the cipher does not take.
    KeySizeForCipher {
        bits: u32,
        cipher: String,
        reason: String,
    },
    /// `--chunk-kib` that md and dm-stripe cannot use.
    BadChunk { kib: u64 },
    /// `--raid dm-stripe` with a mirrored or linear `--level`.
    StripeLevel { level: &'static str },
    /// `provision` with no device and no `--discover`.
    NoDevice,
    /// `provision` with both device paths and `--discover`.
    DevicesAndDiscover,
    /// `--mount` with `--mkfs none`.
    MountWithoutFilesystem,
    /// `--label` longer than ext4 holds.
    LabelTooLong { label: String },
    /// `--mount` with a relative path.
    RelativeMount { dir: PathBuf },
    /// `--key-scope` that is no size.
    BadKeyScope { text: String },
    /// `--key-scope` under one stripe chunk's worth.
    KeyScopeTooSmall { text: String },
    /// A mirror `--level` over fewer than two named devices.
    TooFewDevices { level: &'static str, count: usize },
    /// `close` with neither a name nor `--all`.
    CloseWithoutName,
    /// `mkfs --type xfs` with ext4-only options.
    Ext4OptionsForXfs,
    /// A volume name on the command line that is no dm name.
    BadVolumeName { name: String, reason: String },
    /// `--private-key` that is not PEM text.
    PrivateKeyNotPem { path: PathBuf },
    /// `recover --devices` with another count than the escrow file records.
    MemberCountDiffers { recorded: usize, given: usize },
    /// `--bind` with `--mkfs none`.
    BindWithoutFilesystem { dir: PathBuf },
    /// `--bind` without `--mount`.
    BindWithoutMount { dir: PathBuf },
    /// `--bind` with a relative path, or one with `.` or `..` in it.
    BindNotAbsolute { dir: PathBuf },
    /// `--bind /`.
    BindRoot,
    /// `--bind` inside the mount point, or holding it.
    BindOverlapsMount { dir: PathBuf, mount: PathBuf },
    /// The same `--bind` twice.
    BindTwice { dir: PathBuf },
    /// One `--bind` inside another.
    BindNested { outer: PathBuf, inner: PathBuf },
}

impl Usage {
    /// The statement and the fix, each formatted from the variant's fields.
    pub fn said(&self) -> Said {
        match self {
            Usage::NameTooLong { name, max } => Said::fix(
                format!("--name {name:?} is longer than {max} bytes"),
                "choose a shorter name",
            ),
            Usage::BadName { name, reason } => Said::stated(format!("--name {name:?}: {reason}")),
            Usage::BadCipher { reason } => Said::stated(format!("--cipher: {reason}")),
            Usage::BadKeySize { reason } => Said::stated(format!("--key-size: {reason}")),
            Usage::KeySizeForCipher {
                bits,
                cipher,
                reason,
            } => Said::stated(format!("--key-size {bits} with --cipher {cipher}: {reason}")),
            Usage::BadChunk { kib } => Said::stated(format!(
                "--chunk-kib {kib} must be a power of two of at least 4 (KiB)"
            )),
            Usage::StripeLevel { level } => Said::fix(
                format!("--raid dm-stripe stripes (raid0) only, not --level {level}"),
                "use --raid md for it",
            ),
            Usage::NoDevice => Said::fix(
                "no device given".into(),
                "name the disks to encrypt (e.g. /dev/nvme1n1), or find this cloud's instance-store disks with --discover aws|gcp|azure|any",
            ),
            Usage::DevicesAndDiscover => {
                Said::stated("give device paths or --discover, not both".into())
            }
            Usage::MountWithoutFilesystem => {
                Said::fix("--mount needs a filesystem".into(), "drop --mkfs none")
            }
            Usage::LabelTooLong { label } => {
                Said::stated(format!("--label {label:?} is longer than 16 bytes"))
            }
            Usage::RelativeMount { dir } => Said::fix(
                format!("--mount {} is a relative path", dir.display()),
                "give an absolute path",
            ),
            Usage::BadKeyScope { text } => Said::fix(
                format!("--key-scope {text:?} is not a size"),
                "give a size such as 1TiB, 512GiB or 64MiB, or none",
            ),
            Usage::KeyScopeTooSmall { text } => Said::stated(format!(
                "--key-scope {text}: at least 1MiB (one key per stripe chunk at most)"
            )),
            Usage::TooFewDevices { level, count } => Said::fix(
                too_few(level, *count),
                "add a device or drop --level",
            ),
            Usage::CloseWithoutName => Said::fix(
                "close needs the volume's name".into(),
                "give it (`tosskey status` lists them), or --all for every tosskey volume of this boot",
            ),
            Usage::Ext4OptionsForXfs => Said::fix(
                "--journal and --inode-ratio are ext4 options".into(),
                "drop them for --type xfs (XFS always has its log and allocates inodes as it needs them)",
            ),
            Usage::BadVolumeName { name, reason } => {
                Said::stated(format!("{name:?} is not a volume name: {reason}"))
            }
            Usage::PrivateKeyNotPem { path } => Said::fix(
                format!("the private key {} is not PEM text", path.display()),
                "pass the PEM file (openssl pkey -in KEY)",
            ),
            Usage::MemberCountDiffers { recorded, given } => Said::stated(format!(
                "the escrow file records {recorded} member(s) but {given} were given with --devices"
            )),
            Usage::BindWithoutFilesystem { dir } => Said::fix(
                format!("--bind {} needs a filesystem to copy it onto", dir.display()),
                "drop --mkfs none",
            ),
            Usage::BindWithoutMount { dir } => Said::fix(
                format!("--bind {} needs the volume mounted", dir.display()),
                "add --mount DIR (e.g. --mount /mnt/ephemeral)",
            ),
            Usage::BindNotAbsolute { dir } => Said::fix(
                format!("--bind {} is not an absolute path without . or ..", dir.display()),
                "give the directory's absolute path",
            ),
            Usage::BindRoot => Said::fix(
                "--bind / would put the whole system on the volume".into(),
                "bind the directories that hold the data (e.g. --bind /var/lib/containerd)",
            ),
            Usage::BindOverlapsMount { dir, mount } => Said::fix(
                format!(
                    "--bind {} overlaps --mount {}: one would hold the other",
                    dir.display(),
                    mount.display()
                ),
                "bind a directory outside the mount point, or mount the volume elsewhere",
            ),
            Usage::BindTwice { dir } => Said::fix(
                format!("--bind {} is given twice", dir.display()),
                "give each directory once",
            ),
            Usage::BindNested { outer, inner } => Said::fix(
                format!(
                    "--bind {} lies inside --bind {}",
                    inner.display(),
                    outer.display()
                ),
                "bind only the outer one (its contents move with it)",
            ),
        }
    }
}

/// A mirror `level` over `count` members, fewer than it needs: said alike as a usage error
/// (named devices) and as a refusal (discovered ones).
pub(super) fn too_few(level: &str, count: usize) -> String {
    format!("--level {level} needs at least 2 devices, got {count}")
}

impl std::fmt::Display for Usage {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.said().fmt(f)
    }
}
