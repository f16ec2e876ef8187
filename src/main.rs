//! The `tosskey` binary: harden the process, parse, run one command, print what it returns
//! or the error, exit with its code.

use std::process::ExitCode;

use clap::Parser as _;
use tosskey::cli::{run::run, Cli};
use tosskey::error;
use tosskey::exec::harden;

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
