//! Command-line surface (clap derive): every value is checked and turned into a config
//! struct in [`crate::cli::config`] before anything touches a device; [`run`] dispatches the
//! parsed command and [`output`] makes what it prints.

pub mod config;
pub mod output;
pub mod run;

use std::path::PathBuf;

use clap::builder::TypedValueParser as _;
use clap::{Args, Parser, Subcommand, ValueEnum};

use crate::commands::mkfs::{Filesystem, MkfsRequest};
use crate::plan::request::MeasurePcr;

/// Encrypt ephemeral disks with a key nobody keeps.
///
/// tosskey generates a random volume key, loads it into a plain dm-crypt mapping with
/// device-mapper ioctls (no LUKS header: nothing about the key is written to disk), proves the
/// kernel encrypts as claimed, and forgets the key. Whatever outlives the machine is ciphertext
/// under a key that no longer exists. No cryptsetup, dmsetup, mdadm, mkfs or udev is needed.
#[derive(Debug, Parser)]
#[command(name = "tosskey", version, about, long_about, propagate_version = true)]
#[command(
    after_help = "Exit codes: 0 ok, 1 failed (what was built was rolled back), \
2 usage, 3 refused by a safety check (nothing written), 4 verification mismatch, \
5 rollback incomplete (manual cleanup needed, the message says what), \
6 degraded and 7 failed (`status --check`)."
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    // Boxed: its flags outweigh every other command's many times over.
    /// Build the encrypted volume: RAID (several disks) -> dm-crypt with a fresh random key -> verify -> mkfs -> mount.
    Provision(Box<ProvisionArgs>),
    /// Show the mappings (and arrays) tosskey made, without ever showing the key.
    Status(StatusArgs),
    /// Tear a tosskey volume down: unmount (if asked), remove the mapping and the array.
    Close(CloseArgs),
    /// Emergency crypto-shred: wipe the key from the kernel and remove the mapping.
    Shred(ShredArgs),
    /// Reopen an escrowed volume with the RSA private key.
    Recover(RecoverArgs),
    /// Work with escrow files.
    #[command(subcommand)]
    Escrow(EscrowCommand),
    /// Format a block device or image file as ext4 (pure Rust, no mke2fs needed).
    Mkfs(MkfsArgs),
    /// Measure the kernel and userspace ciphers (or, with --device, dm-crypt over a RAM disk).
    Bench(BenchArgs),
    /// Work with TPM measurements (`provision --measure-pcr`).
    #[command(subcommand)]
    Measure(MeasureCommand),
}

#[derive(Debug, Subcommand)]
pub enum MeasureCommand {
    /// Replay a measurement log and check it against PCR values (e.g. from a checked quote).
    Verify(MeasureVerifyArgs),
}

#[derive(Debug, Args)]
pub struct MeasureVerifyArgs {
    /// The event log (JSON-SEQ, systemd's format).
    #[arg(long, value_name = "FILE", default_value = tosskey_tpm::DEFAULT_LOG)]
    pub log: PathBuf,
    /// The PCR values, in tpm2_pcrread's text format.
    #[arg(long, value_name = "FILE")]
    pub pcr_values: PathBuf,
}

#[derive(Debug, Args)]
pub struct ProvisionArgs {
    /// Block devices to encrypt (striped together when more than one). Or use --discover.
    #[arg(value_name = "DEVICE")]
    pub devices: Vec<PathBuf>,

    /// Find the instance-store disks of this cloud instead of naming devices.
    #[arg(long, value_enum, conflicts_with = "devices", long_help = crate::host::discover::discover_help())]
    pub discover: Option<CloudArg>,

    /// Test-only: with --discover, pick disks whose serial starts with PREFIX (the VM's virtio
    /// disks) instead of a cloud's identities.
    #[arg(long, hide = true, requires = "discover", value_name = "PREFIX")]
    pub discover_serial_prefix: Option<String>,

    /// Name of the dm-crypt mapping (/dev/mapper/NAME).
    #[arg(long, default_value = "ephemeral-encrypted")]
    pub name: String,

    /// dm-crypt cipher specification.
    #[arg(long, default_value = "twofish-xts-plain64")]
    pub cipher: String,

    /// Key size in bits (XTS splits it in two halves: 512 = 256-bit cipher key).
    #[arg(long, default_value_t = 512, value_parser = clap::builder::PossibleValuesParser::new(["256", "512"]).map(|s| s.parse::<u32>().expect("possible value is numeric")))]
    pub key_size: u32,

    /// Encryption sector size in bytes [default: 4096 when every device allows it, else 512].
    #[arg(long, value_parser = clap::builder::PossibleValuesParser::new(["512", "4096"]).map(|s| s.parse::<u32>().expect("possible value is numeric")))]
    pub sector_size: Option<u32>,

    /// Most data one key encrypts (IEEE 1619 key scope): the crypt layer is split into
    /// segments of at most SIZE, each with its own key. `none`: one key per crypt mapping
    /// (warns). Units: KiB, MiB, GiB, TiB (powers of 1024).
    #[arg(long, default_value = "1TiB", value_name = "SIZE")]
    pub key_scope: String,

    /// How several devices are combined.
    #[arg(long, value_enum, default_value_t = RaidArg::Md)]
    pub raid: RaidArg,

    /// RAID level for --raid md.
    #[arg(long, value_enum, default_value_t = LevelArg::Raid0)]
    pub level: LevelArg,

    /// Stripe chunk size in KiB (raid0, raid10 and dm-stripe).
    #[arg(long, default_value_t = 512, value_name = "KIB")]
    pub chunk_kib: u64,

    /// `shared`: one mapping over the array. `per-disk`: one mapping (own key) per member, array on top.
    #[arg(long, value_enum, default_value_t = LayoutArg::Shared)]
    pub layout: LayoutArg,

    /// Pass discards through (leaks which blocks are in use).
    #[arg(long)]
    pub allow_discards: bool,

    /// Decrypt reads in dm-crypt's read workqueue. Default: bypass it (no_read_workqueue),
    /// measured faster with `tosskey bench --device`.
    #[arg(long)]
    pub read_workqueue: bool,

    /// Encrypt writes in dm-crypt's write workqueue. Default: bypass it (no_write_workqueue),
    /// measured faster with `tosskey bench --device`.
    #[arg(long)]
    pub write_workqueue: bool,

    /// How the key reaches dm-crypt. `keyring`: a logon key the table references (the table
    /// never holds the key); `hex`: the key in the table; `auto`: keyring, else hex.
    #[arg(long, value_enum, default_value_t = KeyLoadingArg::Auto)]
    pub key_loading: KeyLoadingArg,

    /// Filesystem to create on the mapping.
    #[arg(long, value_enum, default_value_t = MkfsKindArg::Ext4)]
    pub mkfs: MkfsKindArg,

    /// Bytes per inode for ext4 (default: largefile4, one inode per 4 MiB).
    #[arg(long, default_value_t = 4 << 20, value_name = "BYTES")]
    pub inode_ratio: u64,

    /// Give ext4 a journal (for escrowed volumes that may be recovered after a crash).
    #[arg(long)]
    pub journal: bool,

    /// ext4 volume label.
    #[arg(long)]
    pub label: Option<String>,

    /// Mount the filesystem here (the directory is created).
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,

    /// After mounting, copy DIR's contents onto the volume (to MOUNT/bind/DIR) and
    /// bind-mount that copy over DIR; repeatable. DIR is created if missing.
    #[arg(long = "bind", value_name = "DIR")]
    pub binds: Vec<PathBuf>,

    /// Escrow the key to this RSA public key (PEM, >= 2048 bits) with RSA-OAEP-SHA-256.
    #[arg(long, value_name = "PUB.pem")]
    pub escrow_key: Option<PathBuf>,

    /// Where the escrow file goes. An earlier volume's file there is first moved to
    /// PATH.previous (replacing an older one), so PATH is always the current volume's.
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/root/.ephemeral_escrowed_key",
        requires = "escrow_key"
    )]
    pub escrow_file: PathBuf,

    /// Overwrite devices that carry a filesystem, LUKS, md or partition-table signature.
    #[arg(long)]
    pub force: bool,

    /// Print the plan (devices, layout, tables with the key elided) and touch nothing.
    #[arg(long)]
    pub dry_run: bool,

    /// Print a JSON verification report (or the JSON plan with --dry-run).
    #[arg(long)]
    pub json: bool,

    /// After verification, extend this TPM PCR (0-23) with a measurement of each volume and
    /// log it to /run/tosskey/tpm2-measure.log. `auto`: PCR 15 when /dev/tpmrm0 exists, else
    /// nothing. With a number, no TPM refuses the run before anything is built.
    #[arg(long, value_name = "N|auto")]
    pub measure_pcr: Option<MeasurePcr>,

    /// After the run (also a failed one), write the volume's Prometheus metrics here, as
    /// `status --prometheus` shows them plus the run's exit code; atomically (temp file +
    /// rename), for node_exporter's textfile collector (a `*.prom` file in its directory).
    #[arg(long, value_name = "PATH", conflicts_with = "dry_run")]
    pub metrics_file: Option<PathBuf>,
}

#[derive(Debug, Args)]
#[command(
    after_help = "Exit codes of --check: 0 healthy, 6 degraded (a member of a redundant \
array failed; the volume serves from the others), 7 failed (a member failed with no redundancy \
to cover it, an array md stopped, a mapping suspended, shredded or gone, or a run that did not \
finish), 3 no such volume."
)]
pub struct StatusArgs {
    /// Only this volume (its dm name, or /dev/mapper/NAME).
    #[arg(value_parser = volume_name_arg)]
    pub name: Option<String>,
    #[arg(long, conflicts_with_all = ["prometheus", "check"])]
    pub json: bool,
    /// Print the volumes as Prometheus metrics (text exposition format).
    #[arg(long, conflicts_with = "check")]
    pub prometheus: bool,
    /// Health probe for volume NAME: print one line and exit 0 healthy, 6 degraded, 7 failed.
    #[arg(long, requires = "name")]
    pub check: bool,
}

#[derive(Debug, Args)]
pub struct CloseArgs {
    /// The volume to close (its dm name, or /dev/mapper/NAME).
    #[arg(value_parser = volume_name_arg)]
    pub name: Option<String>,
    /// Close every tosskey volume of this boot.
    #[arg(long, conflicts_with = "name")]
    pub all: bool,
    /// Unmount the filesystem first if it is mounted.
    #[arg(long)]
    pub unmount: bool,
}

#[derive(Debug, Args)]
pub struct ShredArgs {
    /// The volume to shred (its dm name, or /dev/mapper/NAME).
    #[arg(value_parser = volume_name_arg)]
    pub name: String,
}

/// A volume named by its dm name or its `/dev/mapper/NAME` node: the name.
fn volume_name_arg(value: &str) -> Result<String, String> {
    match value.strip_prefix("/dev/mapper/") {
        Some("") => Err("give the volume's name after /dev/mapper/".to_owned()),
        Some(name) => Ok(name.to_owned()),
        None if value.starts_with('/') => Err(format!(
            "{value} is not a volume: give its name (or /dev/mapper/NAME); `tosskey status` lists them"
        )),
        None => Ok(value.to_owned()),
    }
}

/// Which escrow file, opened with which private key.
#[derive(Debug, Args)]
pub struct EscrowAccess {
    #[arg(
        long,
        value_name = "FILE",
        default_value = "/root/.ephemeral_escrowed_key"
    )]
    pub escrow_file: PathBuf,
    /// RSA private key (PEM, PKCS#8 or PKCS#1).
    #[arg(long, value_name = "KEY.pem")]
    pub private_key: PathBuf,
}

#[derive(Debug, Args)]
pub struct RecoverArgs {
    #[command(flatten)]
    pub escrow: EscrowAccess,
    /// Mount the filesystem here.
    #[arg(long, value_name = "DIR")]
    pub mount: Option<PathBuf>,
    /// Mount the filesystem read-only.
    #[arg(long, requires = "mount")]
    pub read_only: bool,
    /// Member devices in recorded order, when their recorded identities cannot be found.
    #[arg(long, value_name = "DEVICE", num_args = 1..)]
    pub devices: Vec<PathBuf>,
}

#[derive(Debug, Subcommand)]
pub enum EscrowCommand {
    /// Decrypt an escrow file into a raw key file and print the steps without tosskey: which disk is which, the stock commands that reopen the volume, deleting the key file, the mount and the teardown.
    Decrypt(EscrowDecryptArgs),
}

#[derive(Debug, Args)]
pub struct EscrowDecryptArgs {
    #[command(flatten)]
    pub escrow: EscrowAccess,
    /// Raw key output (mode 0400; never overwritten).
    #[arg(long, value_name = "FILE")]
    pub key_out: PathBuf,
}

#[derive(Debug, Args)]
pub struct MkfsArgs {
    /// Block device or image file.
    pub target: PathBuf,
    /// The filesystem: ext4, or XFS as `mkfs.xfs -K` writes it (at least 300 MiB).
    #[arg(long = "type", value_enum, default_value_t = FilesystemArg::Ext4)]
    pub filesystem: FilesystemArg,
    #[arg(long)]
    pub label: Option<String>,
    /// ext4 only.
    #[arg(long)]
    pub journal: bool,
    /// ext4 only.
    #[arg(long, value_name = "BYTES")]
    pub inode_ratio: Option<u64>,
    /// Overwrite a target that carries a filesystem, LUKS, md or partition-table signature
    /// (as for provision: never one that is mounted, held or otherwise in use).
    #[arg(long)]
    pub force: bool,
}

#[derive(Debug, Args)]
pub struct BenchArgs {
    /// Print the results as JSON.
    #[arg(long)]
    pub json: bool,
    /// Measure dm-crypt over a brd RAM disk (overwritten) for each sector size and
    /// workqueue setting, instead of the ciphers alone.
    #[arg(long)]
    pub device: bool,
    /// The RAM disk for --device (only /dev/ramN is accepted).
    #[arg(
        long,
        value_name = "PATH",
        default_value = "/dev/ram0",
        requires = "device"
    )]
    pub ramdisk: PathBuf,
    /// Milliseconds spent on each measured cell.
    #[arg(long, value_name = "MS", default_value_t = 1000, value_parser = clap::value_parser!(u64).range(1..))]
    pub millis: u64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum CloudArg {
    Aws,
    Gcp,
    Azure,
    Any,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum RaidArg {
    /// md RAID built with md ioctls (non-persistent: no superblock).
    Md,
    /// device-mapper `striped` target (no md module needed; raid0 only).
    DmStripe,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LevelArg {
    Raid0,
    Raid1,
    /// Striped mirrors: md raid10, near layout, 2 copies.
    Raid10,
    Linear,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum LayoutArg {
    Shared,
    PerDisk,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyLoadingArg {
    Auto,
    Keyring,
    Hex,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum FilesystemArg {
    Ext4,
    Xfs,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum MkfsKindArg {
    Ext4,
    None,
}

impl From<MkfsArgs> for MkfsRequest {
    fn from(args: MkfsArgs) -> Self {
        MkfsRequest {
            target: args.target,
            filesystem: match args.filesystem {
                FilesystemArg::Ext4 => Filesystem::Ext4,
                FilesystemArg::Xfs => Filesystem::Xfs,
            },
            label: args.label,
            journal: args.journal,
            inode_ratio: args.inode_ratio,
            force: args.force,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    #[test]
    fn cli_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn provision_defaults_match_the_original_script() {
        let cli = Cli::try_parse_from(["tosskey", "provision", "/dev/vdb"]).unwrap();
        let Command::Provision(args) = cli.command else {
            panic!("expected provision")
        };
        assert_eq!(args.name, "ephemeral-encrypted");
        assert_eq!(args.cipher, "twofish-xts-plain64");
        assert_eq!(args.key_size, 512);
        assert_eq!(
            args.escrow_file,
            PathBuf::from("/root/.ephemeral_escrowed_key")
        );
        assert_eq!(args.inode_ratio, 4 << 20);
        assert_eq!(args.mkfs, MkfsKindArg::Ext4);
    }

    #[test]
    fn close_needs_a_name_or_all_and_takes_the_mapper_path() {
        let err = Cli::try_parse_from(["tosskey", "close", "v", "--all"]).unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::ArgumentConflict);
        let Command::Close(all) = Cli::try_parse_from(["tosskey", "close", "--all"])
            .unwrap()
            .command
        else {
            panic!("expected close")
        };
        assert!(all.all && all.name.is_none());
        for given in ["v", "/dev/mapper/v"] {
            let Command::Close(args) = Cli::try_parse_from(["tosskey", "close", given])
                .unwrap()
                .command
            else {
                panic!("expected close")
            };
            assert_eq!(args.name.as_deref(), Some("v"), "{given}");
        }
        let err = Cli::try_parse_from(["tosskey", "shred", "/dev/vdb"]).unwrap_err();
        assert!(err.to_string().contains("give its name"), "{err}");
    }

    #[test]
    fn status_check_needs_a_name_and_the_output_forms_exclude_each_other() {
        use clap::error::ErrorKind;
        let kind = |args: &[&str]| Cli::try_parse_from(args).unwrap_err().kind();
        assert_eq!(
            kind(&["tosskey", "status", "--check"]),
            ErrorKind::MissingRequiredArgument
        );
        for args in [
            &["tosskey", "status", "--json", "--prometheus"][..],
            &["tosskey", "status", "v", "--check", "--prometheus"],
            &["tosskey", "status", "v", "--check", "--json"],
            &[
                "tosskey",
                "provision",
                "/dev/vdb",
                "--dry-run",
                "--metrics-file",
                "/m.prom",
            ],
        ] {
            assert_eq!(kind(args), ErrorKind::ArgumentConflict, "{args:?}");
        }
        assert!(Cli::try_parse_from(["tosskey", "status", "v", "--check"]).is_ok());
    }

    #[test]
    fn key_size_is_restricted() {
        let err = Cli::try_parse_from(["tosskey", "provision", "/dev/vdb", "--key-size", "384"])
            .unwrap_err();
        assert_eq!(err.kind(), clap::error::ErrorKind::InvalidValue);
    }
}
