//! Command dispatch: one parsed command line run to the text it prints on success.

use crate::cli::output::{output, render_outcome};
use crate::cli::{
    BenchArgs, Cli, CloseArgs, Command, EscrowCommand, MeasureCommand, ProvisionArgs, RecoverArgs,
    StatusArgs,
};
use crate::commands::provision::provision;
use crate::commands::recover::{escrow_decrypt, recover, RecoverOptions};
use crate::commands::Environment;
use crate::commands::{bench, close, metrics, mkfs, status};
use crate::error::{Error, Usage};
use crate::exec::harden;
use crate::exec::measure;
use crate::plan::request::ProvisionConfig;

/// Run one command; what it prints on success is returned.
pub fn run(cli: Cli, hardening: harden::Hardening) -> Result<String, Error> {
    let env = Environment::default();
    match cli.command {
        Command::Provision(args) => run_provision(&env, args, hardening),
        Command::Status(args) => run_status(&env, args),
        Command::Close(args) => run_close(&env, args),
        Command::Shred(args) => Ok(format!("{}\n", close::shred(&env, &args.name)?)),
        Command::Recover(args) => run_recover(&env, args),
        Command::Escrow(EscrowCommand::Decrypt(args)) => Ok(escrow_decrypt(
            &args.escrow.escrow_file,
            &args.escrow.private_key,
            &args.key_out,
        )?
        .iter()
        .map(|line| format!("{line}\n"))
        .collect()),
        Command::Bench(args) => run_bench(args),
        Command::Measure(MeasureCommand::Verify(args)) => {
            measure::verify(&args.log, &args.pcr_values)
        }
        Command::Mkfs(args) => mkfs::run(&crate::host::sysfs::SystemRoot::host(), args.into()),
    }
}

/// `provision`, and the metrics file it was asked to write whatever the outcome.
fn run_provision(
    env: &Environment,
    args: Box<ProvisionArgs>,
    hardening: harden::Hardening,
) -> Result<String, Error> {
    let cfg = ProvisionConfig::from_args(args)?;
    let outcome = provision(&cfg, env, hardening);
    if let Some(path) = &cfg.metrics_file {
        metrics::write_after_provision(env, path, cfg.name.as_str(), outcome.as_ref().err())?;
    }
    let outcome = outcome?;
    output(cfg.json, &outcome, || render_outcome(&outcome))
}

fn run_status(env: &Environment, args: StatusArgs) -> Result<String, Error> {
    let volumes = status::status(env, args.name.as_deref())?;
    if args.check {
        // `--check` requires NAME: status returned that one volume or refused.
        return status::check(&volumes[0]);
    }
    if args.prometheus {
        return Ok(metrics::render(&volumes));
    }
    output(args.json, &volumes, || status::render_status(&volumes))
}

/// `close`: a line per volume closed, and what it left alone.
fn run_close(env: &Environment, args: CloseArgs) -> Result<String, Error> {
    if args.name.is_none() && !args.all {
        return Err(Error::Usage(Usage::CloseWithoutName));
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

fn run_recover(env: &Environment, args: RecoverArgs) -> Result<String, Error> {
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

/// `bench`: the ciphers, or with `--device` dm-crypt over a RAM disk.
fn run_bench(args: BenchArgs) -> Result<String, Error> {
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
