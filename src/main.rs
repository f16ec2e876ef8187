//! The `tosskey` binary: parse → config → command → render → exit code.

use std::process::ExitCode;

use clap::Parser as _;
use serde::Serialize;
use tosskey::cli::{Cli, CloseArgs, Command, EscrowCommand, MeasureCommand, RecoverArgs};
use tosskey::commands::provision::{provision, Outcome};
use tosskey::commands::recover::{escrow_decrypt, recover, RecoverOptions};
use tosskey::commands::Environment;
use tosskey::commands::{bench, close, metrics, mkfs, status};
use tosskey::error::{self, Error};
use tosskey::exec::harden;
use tosskey::exec::measure;
use tosskey::exec::measure::MeasurementOutcome;
use tosskey::plan::render;
use tosskey::plan::request::ProvisionConfig;

fn main() -> ExitCode {
    // Before anything else, `--help` included: every command may read key material.
    let result = harden::harden_process().and_then(|hardening| run(Cli::parse(), hardening));
    harden::warn_if_key_buffers_unlocked();
    match result {
        Ok(output) => {
            print!("{output}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tosskey: {}", error::render(&error));
            ExitCode::from(error.exit_code())
        }
    }
}

/// The command's result as text, or as pretty JSON when `json` is set.
fn output(
    json: bool,
    value: &impl Serialize,
    text: impl FnOnce() -> String,
) -> Result<String, Error> {
    if json {
        Ok(serde_json::to_string_pretty(value)? + "\n")
    } else {
        Ok(text())
    }
}

/// Run one command; what it prints on success is returned.
fn run(cli: Cli, hardening: harden::Hardening) -> Result<String, Error> {
    let env = Environment::default();
    match cli.command {
        Command::Provision(args) => {
            let cfg = ProvisionConfig::from_args(args)?;
            let outcome = provision(&cfg, &env, hardening);
            if let Some(path) = &cfg.metrics_file {
                metrics::write_after_provision(
                    &env,
                    path,
                    cfg.name.as_str(),
                    outcome.as_ref().err(),
                )?;
            }
            let outcome = outcome?;
            output(cfg.json, &outcome, || render_outcome(&outcome))
        }
        Command::Status(args) => {
            let volumes = status::status(&env, args.name.as_deref())?;
            if args.check {
                // `--check` requires NAME: status returned that one volume or refused.
                return status::check(&volumes[0]);
            }
            if args.prometheus {
                return Ok(metrics::render(&volumes));
            }
            output(args.json, &volumes, || status::render_status(&volumes))
        }
        Command::Close(args) => close_volumes(&env, args),
        Command::Shred(args) => Ok(format!("{}\n", close::shred(&env, &args.name)?)),
        Command::Recover(args) => recover_volume(&env, args),
        Command::Escrow(EscrowCommand::Decrypt(args)) => Ok(escrow_decrypt(
            &args.escrow.escrow_file,
            &args.escrow.private_key,
            &args.key_out,
        )?
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()),
        Command::Bench(args) => {
            let options = bench::BenchOptions {
                duration: std::time::Duration::from_millis(args.millis),
                ramdisk: args.ramdisk,
            };
            if args.device {
                let report = bench::run_device(&options)?;
                output(args.json, &report, || bench::render_device(&report))
            } else {
                let report = bench::run_ciphers(&options)?;
                output(args.json, &report, || bench::render_ciphers(&report))
            }
        }
        Command::Measure(MeasureCommand::Verify(args)) => {
            measure::verify(&args.log, &args.pcr_values)
        }
        Command::Mkfs(args) => mkfs::run(&tosskey::host::sysfs::SystemRoot::host(), args.into()),
    }
}

/// `close NAME` or `close --all`; one line per closed volume and per mount left alone.
fn close_volumes(env: &Environment, args: CloseArgs) -> Result<String, Error> {
    if args.name.is_none() && !args.all {
        return Err(Error::Usage(error::Usage::CloseWithoutName));
    }
    Ok(close::close(env, args.name.as_deref(), args.unmount)?
        .iter()
        .map(|closed| {
            std::iter::once(format!("closed {}\n", closed.name))
                .chain(closed.left_alone.iter().map(|line| format!("{line}\n")))
                .collect::<String>()
        })
        .collect())
}

/// `recover`: the escrowed volume reopened (and mounted if asked).
fn recover_volume(env: &Environment, args: RecoverArgs) -> Result<String, Error> {
    let built = recover(
        env,
        &RecoverOptions {
            escrow_file: args.escrow.escrow_file,
            private_key: args.escrow.private_key,
            mount: args.mount.clone(),
            read_only: args.read_only,
            devices: args.devices,
        },
    )?;
    Ok(format!(
        "recovered {}{}\n",
        built.node.display(),
        args.mount
            .map(|m| format!(", mounted at {}", m.display()))
            .unwrap_or_default()
    ))
}

/// A provision outcome for humans.
fn render_outcome(outcome: &Outcome) -> String {
    match outcome {
        Outcome::DryRun {
            plan,
            kernel_facilities,
        } => render::text(plan) + &render::kernel_facilities(kernel_facilities),
        Outcome::AlreadyProvisioned {
            name,
            members,
            mount,
            remounted,
            differing_options,
        } => {
            let members = members
                .iter()
                .map(|m| m.display().to_string())
                .collect::<Vec<_>>()
                .join(", ");
            let mut text = match mount {
                Some(dir) if *remounted => format!(
                    "{name} is already provisioned on {members}; it was not mounted at {}: mounted it there again\n",
                    dir.display()
                ),
                Some(dir) => format!(
                    "{name} is already provisioned on {members} (mounted at {}): nothing changed\n",
                    dir.display()
                ),
                None => format!("{name} is already provisioned on {members}: nothing changed\n"),
            };
            if !differing_options.is_empty() {
                text.push_str(&format!(
                    "options that differ from the running volume apply only to a new one (after a reboot, or after `tosskey close {name}`, which destroys its data): {}\n",
                    differing_options
                        .iter()
                        .map(|o| format!("{} {} (running: {})", o.flag, o.asked, o.running))
                        .collect::<Vec<_>>()
                        .join(", ")
                ));
            }
            text
        }
        Outcome::Provisioned(report) => {
            let checks: usize = report
                .stack
                .crypt
                .iter()
                .map(|c| c.verification.checks.len())
                .sum();
            let mut text = format!(
                "{} ready: {} via {} on {}; {} key(s), at most {} bytes under one key; {checks} sectors verified against the userspace cipher; {}{}\n",
                report.chain.volume.display(),
                report.plan.crypt.format.cipher,
                report.stack.crypt.iter().map(|c| c.key_loaded.as_str()).collect::<Vec<_>>().join("+"),
                report.chain.members.iter().map(|m| m.display().to_string()).collect::<Vec<_>>().join(", "),
                report.plan.key_scope.keys,
                report.plan.key_scope.largest_key_bytes,
                if report.key_wiped_from_tosskey_memory {
                    "keys wiped from tosskey's memory"
                } else {
                    "WARNING: tosskey's key memory did not read back as zeros"
                },
                report.chain.mount.as_ref().map(|m| format!("; mounted at {}", m.display())).unwrap_or_default(),
            );
            match &report.measurement {
                MeasurementOutcome::Measured { volumes } => {
                    for volume in volumes {
                        text.push_str(&format!(
                            "{} measured into PCR {} of {} (log {})\n",
                            volume.mapping,
                            volume.pcr,
                            volume.device.display(),
                            volume.log.display()
                        ));
                    }
                }
                MeasurementOutcome::NoTpm { device } => {
                    text.push_str(&format!("not measured: no TPM at {}\n", device.display()));
                }
                MeasurementOutcome::NotRequested => {}
            }
            if let Some(file) = &report.escrow_file {
                text.push_str(&format!("escrowed key written to {}\n", file.display()));
            }
            text
        }
    }
}
