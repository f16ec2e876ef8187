//! Checked configuration: the CLI's raw values turned into validated types, before any
//! device is looked at. Every error here is a usage error (exit code 2).

use std::path::{Component, Path, PathBuf};

use tosskey_crypto::key::KeySize;
use tosskey_crypto::spec::CipherSpec;
use tosskey_dm::DmName;

use crate::cli::{self, ProvisionArgs};
use crate::error::{Error, Usage};
use crate::host::discover::{Cloud, DiskMatcher};
use crate::names::MAX_NAME_LEN;
use crate::plan::derive::member_count_problem;
use crate::plan::request::{AssemblyChoice, MemberSource, ProvisionConfig};
use crate::plan::{
    Assembly, EscrowSettings, Ext4Settings, KeyLoading, Layout, MdLevel, BYPASS_WORKQUEUES,
};

impl ProvisionConfig {
    /// The checked configuration of a `provision` run. The checks run in a fixed order, so
    /// of several bad values the same one is reported every time.
    pub fn from_args(args: Box<ProvisionArgs>) -> Result<Self, Error> {
        let args = *args;
        let name = volume_name(&args.name)?;
        let (cipher, key_size) = cipher_and_key_size(&args.cipher, args.key_size)?;
        let chunk_bytes = chunk_bytes(args.chunk_kib)?;
        let assembly = assembly_choice(args.raid, args.level)?;
        let source = member_source(args.discover, args.devices, args.discover_serial_prefix)?;
        check_filesystem_args(args.mkfs, args.mount.as_deref(), args.label.as_deref())?;
        check_binds(&args.binds, args.mkfs, args.mount.as_deref())?;
        let key_scope = parse_key_scope(&args.key_scope)?;
        if let MemberSource::Explicit(devices) = &source {
            if let Some(level) = member_count_problem(assembly, devices.len()) {
                return Err(Error::Usage(Usage::TooFewDevices {
                    level,
                    count: devices.len(),
                }));
            }
        }
        Ok(ProvisionConfig {
            source,
            name,
            cipher,
            key_size,
            sector_size: args.sector_size,
            key_scope,
            assembly,
            chunk_bytes,
            layout: match args.layout {
                cli::LayoutArg::Shared => Layout::Shared,
                cli::LayoutArg::PerDisk => Layout::PerDisk,
            },
            allow_discards: args.allow_discards,
            no_read_workqueue: BYPASS_WORKQUEUES && !args.read_workqueue,
            no_write_workqueue: BYPASS_WORKQUEUES && !args.write_workqueue,
            key_loading: match args.key_loading {
                cli::KeyLoadingArg::Auto => KeyLoading::Auto,
                cli::KeyLoadingArg::Keyring => KeyLoading::Keyring,
                cli::KeyLoadingArg::Hex => KeyLoading::Hex,
            },
            mkfs: match args.mkfs {
                cli::MkfsKindArg::Ext4 => Some(Ext4Settings {
                    inode_ratio: args.inode_ratio,
                    journal: args.journal,
                    label: args.label,
                }),
                cli::MkfsKindArg::None => None,
            },
            mount: args.mount,
            binds: args.binds,
            escrow: args.escrow_key.map(|public_key| EscrowSettings {
                public_key,
                file: args.escrow_file,
            }),
            force: args.force,
            dry_run: args.dry_run,
            json: args.json,
            measure_pcr: args.measure_pcr,
            metrics_file: args.metrics_file,
        })
    }

    /// The assembly for `members` devices.
    pub fn assembly_for(&self, members: usize) -> Assembly {
        match (members, self.assembly) {
            (1, _) => Assembly::Single,
            (_, AssemblyChoice::Md(level)) => Assembly::Md {
                level,
                chunk_bytes: self.chunk_bytes,
            },
            (_, AssemblyChoice::DmStripe) => Assembly::DmStripe {
                chunk_bytes: self.chunk_bytes,
            },
        }
    }
}

/// `--name`: a dm name short enough for the UUIDs built from it.
fn volume_name(name: &str) -> Result<DmName, Error> {
    if name.len() > MAX_NAME_LEN {
        return Err(Error::Usage(Usage::NameTooLong {
            name: name.to_owned(),
            max: MAX_NAME_LEN,
        }));
    }
    DmName::new(name).map_err(|e| {
        Error::Usage(Usage::BadName {
            name: name.to_owned(),
            reason: e.to_string(),
        })
    })
}

/// `--cipher` and `--key-size`: each known, and the size one the cipher takes.
fn cipher_and_key_size(cipher: &str, bits: u32) -> Result<(CipherSpec, KeySize), Error> {
    let cipher = cipher.parse::<CipherSpec>().map_err(|e| {
        Error::Usage(Usage::BadCipher {
            reason: e.to_string(),
        })
    })?;
    let key_size = KeySize::from_bits(bits).map_err(|e| {
        Error::Usage(Usage::BadKeySize {
            reason: e.to_string(),
        })
    })?;
    cipher.validate_key_bits(key_size.bits()).map_err(|e| {
        Error::Usage(Usage::KeySizeForCipher {
            bits,
            cipher: cipher.to_string(),
            reason: e.to_string(),
        })
    })?;
    Ok((cipher, key_size))
}

/// `--chunk-kib` in bytes: a power of two of at least one page.
fn chunk_bytes(kib: u64) -> Result<u64, Error> {
    kib.checked_mul(1024)
        .filter(|c| c.is_power_of_two() && *c >= 4096)
        .ok_or(Error::Usage(Usage::BadChunk { kib }))
}

/// `--raid` and `--level`: dm-stripe stripes only.
fn assembly_choice(raid: cli::RaidArg, level: cli::LevelArg) -> Result<AssemblyChoice, Error> {
    match (raid, level) {
        (cli::RaidArg::Md, level) => Ok(AssemblyChoice::Md(md_level(level))),
        (cli::RaidArg::DmStripe, cli::LevelArg::Raid0) => Ok(AssemblyChoice::DmStripe),
        (cli::RaidArg::DmStripe, level) => Err(Error::Usage(Usage::StripeLevel {
            level: crate::plan::md_level_name(md_level(level)),
        })),
    }
}

/// Device paths or `--discover` (with its optional serial prefix): exactly one of them.
fn member_source(
    discover: Option<cli::CloudArg>,
    devices: Vec<PathBuf>,
    serial_prefix: Option<String>,
) -> Result<MemberSource, Error> {
    match (discover, devices.is_empty()) {
        (None, true) => Err(Error::Usage(Usage::NoDevice)),
        (None, false) => Ok(MemberSource::Explicit(devices)),
        (Some(cloud), true) => Ok(MemberSource::Discover(match serial_prefix {
            Some(prefix) => DiskMatcher::SerialPrefix(prefix),
            None => DiskMatcher::Cloud(cloud_of(cloud)),
        })),
        (Some(_), false) => Err(Error::Usage(Usage::DevicesAndDiscover)),
    }
}

/// `--mount` needs a filesystem and an absolute path; an ext4 `--label` holds 16 bytes.
fn check_filesystem_args(
    mkfs: cli::MkfsKindArg,
    mount: Option<&Path>,
    label: Option<&str>,
) -> Result<(), Error> {
    if mkfs == cli::MkfsKindArg::None && mount.is_some() {
        return Err(Error::Usage(Usage::MountWithoutFilesystem));
    }
    if let Some(label) = label.filter(|label| label.len() > 16) {
        return Err(Error::Usage(Usage::LabelTooLong {
            label: label.to_owned(),
        }));
    }
    match mount {
        Some(dir) if !dir.is_absolute() => Err(Error::Usage(Usage::RelativeMount {
            dir: dir.to_owned(),
        })),
        _ => Ok(()),
    }
}

/// `--bind`: each needs a filesystem mounted with `--mount`, is an absolute path other
/// than `/` without `.` or `..`, is given once, and neither holds another `--bind` or the
/// mount point nor lies inside one (a copy would hold itself, or one bind would hide
/// another).
fn check_binds(
    binds: &[PathBuf],
    mkfs: cli::MkfsKindArg,
    mount: Option<&Path>,
) -> Result<(), Error> {
    let Some(first) = binds.first() else {
        return Ok(());
    };
    if mkfs == cli::MkfsKindArg::None {
        return Err(Error::Usage(Usage::BindWithoutFilesystem {
            dir: first.clone(),
        }));
    }
    let Some(mount) = mount else {
        return Err(Error::Usage(Usage::BindWithoutMount { dir: first.clone() }));
    };
    let inside = |inner: &Path, outer: &Path| inner != outer && inner.starts_with(outer);
    for (index, dir) in binds.iter().enumerate() {
        let plain = dir
            .components()
            .all(|c| matches!(c, Component::RootDir | Component::Normal(_)));
        if !dir.is_absolute() || !plain {
            return Err(Error::Usage(Usage::BindNotAbsolute { dir: dir.clone() }));
        }
        if dir.parent().is_none() {
            return Err(Error::Usage(Usage::BindRoot));
        }
        if dir.starts_with(mount) || mount.starts_with(dir) {
            return Err(Error::Usage(Usage::BindOverlapsMount {
                dir: dir.clone(),
                mount: mount.to_owned(),
            }));
        }
        for other in &binds[..index] {
            if other == dir {
                return Err(Error::Usage(Usage::BindTwice { dir: dir.clone() }));
            }
            if inside(dir, other) || inside(other, dir) {
                let (outer, inner) = if inside(dir, other) {
                    (other, dir)
                } else {
                    (dir, other)
                };
                return Err(Error::Usage(Usage::BindNested {
                    outer: outer.clone(),
                    inner: inner.clone(),
                }));
            }
        }
    }
    Ok(())
}

/// `--key-scope`: `none`, or a size with a binary unit (`1TiB`, `512GiB`), at least 1 MiB.
fn parse_key_scope(text: &str) -> Result<Option<u64>, Error> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        Error::Usage(Usage::BadKeyScope {
            text: text.to_owned(),
        })
    };
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (digits, unit) = text.split_at(split);
    let shift = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 0,
        "k" | "kib" => 10,
        "m" | "mib" => 20,
        "g" | "gib" => 30,
        "t" | "tib" => 40,
        "p" | "pib" => 50,
        _ => return Err(bad()),
    };
    let bytes = digits
        .parse::<u64>()
        .ok()
        .and_then(|n| n.checked_mul(1 << shift))
        .ok_or_else(bad)?;
    if bytes < 1 << 20 {
        return Err(Error::Usage(Usage::KeyScopeTooSmall {
            text: text.to_owned(),
        }));
    }
    Ok(Some(bytes))
}

fn md_level(level: cli::LevelArg) -> MdLevel {
    match level {
        cli::LevelArg::Raid0 => MdLevel::Raid0,
        cli::LevelArg::Raid1 => MdLevel::Raid1,
        cli::LevelArg::Raid10 => MdLevel::Raid10,
        cli::LevelArg::Linear => MdLevel::Linear,
    }
}

fn cloud_of(cloud: cli::CloudArg) -> Cloud {
    match cloud {
        cli::CloudArg::Aws => Cloud::Aws,
        cli::CloudArg::Gcp => Cloud::Gcp,
        cli::CloudArg::Azure => Cloud::Azure,
        cli::CloudArg::Any => Cloud::Any,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    fn config(args: &[&str]) -> Result<ProvisionConfig, Error> {
        let mut argv = vec!["tosskey", "provision"];
        argv.extend_from_slice(args);
        let cli = cli::Cli::try_parse_from(argv).unwrap();
        let cli::Command::Provision(args) = cli.command else {
            panic!("expected provision")
        };
        ProvisionConfig::from_args(args)
    }

    #[test]
    fn binds_that_cannot_work_are_usage_errors_naming_the_directory() {
        let refused = |args: &[&str]| match config(args) {
            Err(Error::Usage(usage)) => usage.to_string(),
            other => panic!("{args:?}: {other:?}"),
        };
        let with_mount = |binds: &[&'static str]| {
            let mut args = vec!["/dev/vdb", "--mount", "/mnt/e"];
            for dir in binds {
                args.extend(["--bind", dir]);
            }
            args
        };
        let ok = config(&with_mount(&["/var/lib/kubelet", "/var/log/pods"])).unwrap();
        assert_eq!(
            ok.binds,
            [
                PathBuf::from("/var/lib/kubelet"),
                PathBuf::from("/var/log/pods")
            ]
        );
        for (args, expected) in [
            (
                vec!["/dev/vdb", "--bind", "/var/lib/kubelet"],
                "--bind /var/lib/kubelet needs the volume mounted",
            ),
            (
                vec!["/dev/vdb", "--mkfs", "none", "--bind", "/var/lib/kubelet"],
                "--bind /var/lib/kubelet needs a filesystem to copy it onto; drop --mkfs none",
            ),
            (
                with_mount(&["var/lib"]),
                "--bind var/lib is not an absolute path",
            ),
            (
                with_mount(&["/var/lib/../log"]),
                "--bind /var/lib/../log is not an absolute path without . or ..",
            ),
            (with_mount(&["/"]), "--bind / would put the whole system"),
            (
                with_mount(&["/mnt/e/data"]),
                "--bind /mnt/e/data overlaps --mount /mnt/e",
            ),
            (with_mount(&["/mnt"]), "--bind /mnt overlaps --mount /mnt/e"),
            (
                with_mount(&["/mnt/e"]),
                "--bind /mnt/e overlaps --mount /mnt/e",
            ),
            (
                with_mount(&["/var/log/pods", "/var/log/pods/"]),
                "--bind /var/log/pods/ is given twice",
            ),
            (
                with_mount(&["/var/lib/kubelet", "/var/lib"]),
                "--bind /var/lib/kubelet lies inside --bind /var/lib",
            ),
            (
                with_mount(&["/var/lib", "/var/lib/kubelet"]),
                "--bind /var/lib/kubelet lies inside --bind /var/lib",
            ),
        ] {
            let said = refused(&args);
            assert!(said.starts_with(expected), "{args:?}: {said}");
        }
        // A sibling whose name merely starts the same is not inside.
        config(&with_mount(&["/var/lib/kube", "/var/lib/kubelet"])).unwrap();
    }

    #[test]
    fn key_scope_defaults_to_one_tib_and_takes_units_or_none() {
        assert_eq!(config(&["/dev/vdb"]).unwrap().key_scope, Some(1 << 40));
        let scope = |v: &str| config(&["/dev/vdb", "--key-scope", v]);
        assert_eq!(scope("512GiB").unwrap().key_scope, Some(512 << 30));
        assert_eq!(scope("64M").unwrap().key_scope, Some(64 << 20));
        assert_eq!(scope("none").unwrap().key_scope, None);
        for bad in ["1TB", "lots", "1KiB", "99999999999PiB", ""] {
            assert!(matches!(scope(bad), Err(Error::Usage(_))), "{bad}");
        }
    }

    #[test]
    fn defaults_are_the_original_scripts_choices() {
        let cfg = config(&["/dev/vdb"]).unwrap();
        assert_eq!(cfg.name.as_str(), "ephemeral-encrypted");
        assert_eq!(cfg.cipher.to_string(), "twofish-xts-plain64");
        assert_eq!(cfg.key_size.bits(), 512);
        assert_eq!(cfg.assembly_for(1), Assembly::Single);
        assert_eq!(
            cfg.assembly_for(2),
            Assembly::Md {
                level: MdLevel::Raid0,
                chunk_bytes: 512 << 10
            }
        );
        assert_eq!(cfg.mkfs.as_ref().unwrap().inode_ratio, 4 << 20);
        assert!(!cfg.mkfs.as_ref().unwrap().journal);
    }

    #[test]
    fn unknown_cipher_lists_the_supported_ones() {
        let err = config(&["/dev/vdb", "--cipher", "serpent-cbc-essiv"]).unwrap_err();
        let msg = err.to_string();
        assert!(msg.contains("serpent-cbc-essiv"), "{msg}");
        assert!(msg.contains("twofish-xts-plain64"), "{msg}");
        assert!(msg.contains("aes-xts-plain64"), "{msg}");
    }

    #[test]
    fn provision_without_devices_points_at_discover() {
        let err = config(&[]).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::USAGE);
        assert!(
            err.to_string().contains("--discover aws|gcp|azure|any"),
            "{err}"
        );
        assert!(config(&["--discover", "aws"]).is_ok());
    }

    #[test]
    fn a_mirror_with_one_device_is_refused() {
        for level in ["raid1", "raid10"] {
            let err = config(&["/dev/vdb", "--level", level]).unwrap_err();
            assert!(
                err.to_string()
                    .contains(&format!("--level {level} needs at least 2 devices")),
                "{err}"
            );
        }
    }

    #[test]
    fn dm_stripe_is_raid0_only() {
        assert!(config(&["/dev/vdb", "/dev/vdc", "--raid", "dm-stripe"]).is_ok());
        let err = config(&[
            "/dev/vdb",
            "/dev/vdc",
            "--raid",
            "dm-stripe",
            "--level",
            "raid1",
        ])
        .unwrap_err();
        assert!(err.to_string().contains("use --raid md"), "{err}");
    }

    #[test]
    fn bad_names_and_chunks_are_usage_errors() {
        assert!(config(&["/dev/vdb", "--name", "a/b"]).is_err());
        assert!(config(&["/dev/vdb", "--name", &"x".repeat(81)]).is_err());
        let err = config(&["/dev/vdb", "--chunk-kib", "3"]).unwrap_err();
        assert!(err.to_string().contains("power of two"), "{err}");
        let err = config(&["/dev/vdb", "--mkfs", "none", "--mount", "/data"]).unwrap_err();
        assert!(
            err.to_string().contains("--mount needs a filesystem"),
            "{err}"
        );
    }

    /// Of several bad values, the first in the order of checks is the one reported, each
    /// as its own usage error.
    #[test]
    fn the_first_bad_value_in_check_order_is_the_one_reported() {
        let first = |args: &[&str]| match config(args) {
            Err(Error::Usage(usage)) => usage,
            other => panic!("{args:?}: {other:?}"),
        };
        let bad = [
            "/dev/vdb",
            "--name",
            "a/b",
            "--cipher",
            "rot13",
            "--chunk-kib",
            "3",
            "--mkfs",
            "none",
            "--mount",
            "data",
            "--key-scope",
            "1TB",
            "--level",
            "raid1",
        ];
        assert!(matches!(first(&bad), Usage::BadName { .. }));
        assert!(matches!(first(&bad[3..]), Usage::BadCipher { .. }));
        assert!(matches!(
            first(&[&bad[..1], &bad[5..]].concat()),
            Usage::BadChunk { .. }
        ));
        let filesystem = [&bad[..1], &bad[7..]].concat();
        assert!(matches!(first(&filesystem), Usage::MountWithoutFilesystem));
        let scope = [&bad[..1], &bad[11..]].concat();
        assert!(matches!(first(&scope), Usage::BadKeyScope { .. }));
        let count = [&bad[..1], &bad[13..]].concat();
        assert!(matches!(
            first(&count),
            Usage::TooFewDevices {
                level: "raid1",
                count: 1
            }
        ));
    }
}
