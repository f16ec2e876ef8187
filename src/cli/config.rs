//! Checked configuration: the CLI's raw values turned into validated types, before any
//! device is looked at. Every error here is a usage error (exit code 2).

use tosskey_crypto::key::KeySize;
use tosskey_crypto::spec::CipherSpec;
use tosskey_dm::DmName;

use crate::cli::{self, ProvisionArgs};
use crate::error::Error;
use crate::host::discover::{Cloud, DiskMatcher};
use crate::names::MAX_NAME_LEN;
use crate::plan::derive::member_count_problem;
use crate::plan::request::{AssemblyChoice, MemberSource, ProvisionConfig};
use crate::plan::{
    Assembly, EscrowSettings, Ext4Settings, KeyLoading, Layout, MdLevel, BYPASS_WORKQUEUES,
};

fn usage(message: impl Into<String>) -> Error {
    Error::Usage(message.into())
}

impl ProvisionConfig {
    pub fn from_args(args: ProvisionArgs) -> Result<Self, Error> {
        if args.name.len() > MAX_NAME_LEN {
            return Err(usage(format!(
                "--name {:?} is longer than {MAX_NAME_LEN} bytes: choose a shorter name",
                args.name
            )));
        }
        let name =
            DmName::new(&args.name).map_err(|e| usage(format!("--name {:?}: {e}", args.name)))?;
        let cipher: CipherSpec = args
            .cipher
            .parse()
            .map_err(|e| usage(format!("--cipher: {e}")))?;
        let key_size =
            KeySize::from_bits(args.key_size).map_err(|e| usage(format!("--key-size: {e}")))?;
        cipher.validate_key_bits(key_size.bits()).map_err(|e| {
            usage(format!(
                "--key-size {} with --cipher {cipher}: {e}",
                args.key_size
            ))
        })?;

        let chunk_bytes = args
            .chunk_kib
            .checked_mul(1024)
            .filter(|c| c.is_power_of_two() && *c >= 4096)
            .ok_or_else(|| {
                usage(format!(
                    "--chunk-kib {} must be a power of two of at least 4 (KiB)",
                    args.chunk_kib
                ))
            })?;
        let assembly = match (args.raid, args.level) {
            (cli::RaidArg::Md, level) => AssemblyChoice::Md(md_level(level)),
            (cli::RaidArg::DmStripe, cli::LevelArg::Raid0) => AssemblyChoice::DmStripe,
            (cli::RaidArg::DmStripe, level) => {
                return Err(usage(format!(
                    "--raid dm-stripe stripes (raid0) only, not --level {}: use --raid md for it",
                    crate::plan::md_level_name(md_level(level))
                )))
            }
        };
        let source = match (args.discover, args.devices.is_empty()) {
            (None, true) => {
                return Err(usage(
                    "no device given: name the disks to encrypt (e.g. /dev/nvme1n1), or find this cloud's instance-store disks with --discover aws|gcp|azure|any",
                ));
            }
            (None, false) => MemberSource::Explicit(args.devices),
            (Some(cloud), true) => MemberSource::Discover(match args.discover_serial_prefix {
                Some(prefix) => DiskMatcher::SerialPrefix(prefix),
                None => DiskMatcher::Cloud(cloud_of(cloud)),
            }),
            (Some(_), false) => {
                return Err(usage("give device paths or --discover, not both"));
            }
        };
        if args.mkfs == cli::MkfsKindArg::None && args.mount.is_some() {
            return Err(usage("--mount needs a filesystem: drop --mkfs none"));
        }
        if let Some(label) = &args.label {
            if label.len() > 16 {
                return Err(usage(format!("--label {label:?} is longer than 16 bytes")));
            }
        }
        if let Some(dir) = &args.mount {
            if !dir.is_absolute() {
                return Err(usage(format!(
                    "--mount {}: give an absolute path",
                    dir.display()
                )));
            }
        }
        let escrow = match args.escrow_key {
            Some(public_key) => Some(EscrowSettings {
                public_key,
                file: args.escrow_file,
            }),
            None => None,
        };
        let cfg = ProvisionConfig {
            source,
            name,
            cipher,
            key_size,
            sector_size: args.sector_size,
            key_scope: parse_key_scope(&args.key_scope)?,
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
            escrow,
            force: args.force,
            dry_run: args.dry_run,
            json: args.json,
            measure_pcr: args.measure_pcr,
            metrics_file: args.metrics_file,
        };
        if let MemberSource::Explicit(devices) = &cfg.source {
            if let Some(problem) = member_count_problem(cfg.assembly, devices.len()) {
                return Err(usage(format!("{problem}: add a device or drop --level")));
            }
        }
        Ok(cfg)
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

/// `--key-scope`: `none`, or a size with a binary unit (`1TiB`, `512GiB`), at least 1 MiB.
fn parse_key_scope(text: &str) -> Result<Option<u64>, Error> {
    if text.eq_ignore_ascii_case("none") {
        return Ok(None);
    }
    let bad = || {
        usage(format!(
            "--key-scope {text:?}: give a size such as 1TiB, 512GiB or 64MiB, or none"
        ))
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
        return Err(usage(format!(
            "--key-scope {text}: at least 1MiB (one key per stripe chunk at most)"
        )));
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
}
