//! The `tosskey` binary: parse, check, hand over to the library, map errors to exit codes.

use std::process::ExitCode;

use clap::Parser as _;
use tosskey::cli::{Cli, Command, EscrowCommand};
use tosskey::config::ProvisionConfig;
use tosskey::provision::{provision, Environment, Outcome};
use tosskey::recover::{escrow_decrypt, recover, RecoverOptions};
use tosskey::{bench, exit, facilities, harden, volumes};

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => exit::report(&error),
    }
}

fn print_json(value: &impl serde::Serialize) -> anyhow::Result<()> {
    println!("{}", serde_json::to_string_pretty(value)?);
    Ok(())
}

fn run(cli: Cli) -> anyhow::Result<()> {
    let env = Environment::default();
    match cli.command {
        Command::Provision(args) => {
            let cfg = ProvisionConfig::from_args(args)?;
            let hardening = harden::harden_process()?;
            let outcome = provision(&cfg, &env, hardening)?;
            if cfg.json {
                return print_json(&outcome);
            }
            match outcome {
                Outcome::DryRun {
                    plan,
                    mappings,
                    kernel_facilities,
                } => print!(
                    "{}{}",
                    plan.render_text(&mappings),
                    facilities::render_text(&kernel_facilities)
                ),
                Outcome::AlreadyProvisioned {
                    name,
                    members,
                    mount,
                } => println!(
                    "{name} is already provisioned on {} ({}): nothing changed",
                    members
                        .iter()
                        .map(|m| m.display().to_string())
                        .collect::<Vec<_>>()
                        .join(", "),
                    mount.map_or("not mounted".to_owned(), |m| format!(
                        "mounted at {}",
                        m.display()
                    ))
                ),
                Outcome::Provisioned(report) => {
                    let checks: usize = report
                        .stack
                        .crypt
                        .iter()
                        .map(|c| c.verification.checks.len())
                        .sum();
                    println!(
                        "{} ready: {} via {} on {}; {checks} sectors verified against the userspace cipher; key wiped from tosskey's memory{}",
                        report.chain.volume.display(),
                        report.plan.crypt.cipher,
                        report.stack.crypt.iter().map(|c| c.key_loaded).collect::<Vec<_>>().join("+"),
                        report.chain.members.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", "),
                        report.chain.mount.as_ref().map(|m| format!("; mounted at {}", m.display())).unwrap_or_default(),
                    );
                    if let Some(file) = &report.escrow_file {
                        println!("escrowed key written to {}", file.display());
                    }
                }
            }
            Ok(())
        }
        Command::Status(args) => {
            let volumes = volumes::status(&env, args.name.as_deref())?;
            if args.json {
                return print_json(&volumes);
            }
            print!("{}", volumes::render_status(&volumes));
            Ok(())
        }
        Command::Close(args) => {
            for name in volumes::close(&env, args.name.as_deref(), args.unmount)? {
                println!("closed {name}");
            }
            Ok(())
        }
        Command::Shred(args) => {
            println!("{}", volumes::shred(&env, &args.name)?);
            Ok(())
        }
        Command::Recover(args) => {
            harden::harden_process()?;
            let built = recover(
                &env,
                &RecoverOptions {
                    escrow_file: args.escrow.escrow_file,
                    private_key: args.escrow.private_key,
                    mount: args.mount.clone(),
                    read_only: args.read_only,
                    devices: args.devices,
                },
            )?;
            println!(
                "recovered {}{}",
                built.node.display(),
                args.mount
                    .map(|m| format!(", mounted at {}", m.display()))
                    .unwrap_or_default()
            );
            Ok(())
        }
        Command::Escrow(EscrowCommand::Decrypt(args)) => {
            harden::harden_process()?;
            for line in escrow_decrypt(
                &args.escrow.escrow_file,
                &args.escrow.private_key,
                &args.key_out,
            )? {
                println!("{line}");
            }
            Ok(())
        }
        Command::Bench(args) => {
            harden::harden_process()?;
            let options = bench::BenchOptions {
                duration: std::time::Duration::from_millis(args.millis),
                ramdisk: args.ramdisk,
            };
            if args.device {
                let report = bench::run_device(&options)?;
                if args.json {
                    return print_json(&report);
                }
                print!("{}", bench::render_device(&report));
            } else {
                let report = bench::run_ciphers(&options)?;
                if args.json {
                    return print_json(&report);
                }
                print!("{}", bench::render_ciphers(&report));
            }
            Ok(())
        }
        Command::Mkfs(args) => {
            let report = tosskey_ext4::format(
                &args.target,
                &tosskey_ext4::FormatOptions {
                    label: args.label,
                    journal: args.journal,
                    inode_ratio: args.inode_ratio,
                    ..tosskey_ext4::FormatOptions::default()
                },
            )?;
            println!(
                "{}: ext4, {} blocks of 4096 bytes, {} inodes, {} groups{}",
                args.target.display(),
                report.blocks,
                report.inodes,
                report.groups,
                if report.journal_blocks > 0 {
                    ", with journal"
                } else {
                    ""
                }
            );
            Ok(())
        }
    }
}
