//! What a command prints on success: its result as text for humans, or as pretty JSON.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::commands::provision::{DifferingOption, Outcome, Report};
use crate::error::Error;
use crate::exec::measure::MeasurementOutcome;
use crate::plan::render;

/// The command's result as text, or as pretty JSON when `json` is set.
pub fn output(
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

/// A provision outcome for humans.
pub fn render_outcome(outcome: &Outcome) -> String {
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
            rebound,
            differing_options,
        } => {
            let mut text = already_provisioned_text(
                name,
                members,
                mount.as_deref(),
                *remounted,
                differing_options,
            );
            for dir in rebound {
                text.push_str(&format!(
                    "{} was no longer bound from the volume: bound it again (nothing copied)\n",
                    dir.display()
                ));
            }
            text
        }
        Outcome::Provisioned(report) => provisioned_text(report),
    }
}

/// A rerun that found the volume running: where, and the options that apply only to a new one.
fn already_provisioned_text(
    name: &str,
    members: &[PathBuf],
    mount: Option<&Path>,
    remounted: bool,
    differing_options: &[DifferingOption],
) -> String {
    let members = members
        .iter()
        .map(|m| m.display().to_string())
        .collect::<Vec<_>>()
        .join(", ");
    let mut text = match mount {
        Some(dir) if remounted => format!(
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

/// A built volume: the ready line, then its measurements and its escrow file.
fn provisioned_text(report: &Report) -> String {
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
    for bind in &report.binds {
        text.push_str(&format!(
            "{} bound from {} ({} entries, {} bytes copied)\n",
            bind.dir.display(),
            bind.source.display(),
            bind.entries,
            bind.bytes
        ));
    }
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

#[cfg(test)]
mod tests {
    use super::*;

    fn already(mount: Option<&str>, remounted: bool, differing: Vec<DifferingOption>) -> String {
        render_outcome(&Outcome::AlreadyProvisioned {
            name: "v".to_owned(),
            members: vec![PathBuf::from("/dev/vdb"), PathBuf::from("/dev/vdc")],
            mount: mount.map(PathBuf::from),
            remounted,
            rebound: Vec::new(),
            differing_options: differing,
        })
    }

    #[test]
    fn a_rerun_says_where_the_running_volume_is_and_what_only_a_new_one_gets() {
        assert_eq!(
            already(None, false, Vec::new()),
            "v is already provisioned on /dev/vdb, /dev/vdc: nothing changed\n"
        );
        assert_eq!(
            already(Some("/mnt/v"), false, Vec::new()),
            "v is already provisioned on /dev/vdb, /dev/vdc (mounted at /mnt/v): nothing changed\n"
        );
        let cipher = |asked: &str| DifferingOption {
            flag: "--cipher".to_owned(),
            running: "twofish".to_owned(),
            asked: asked.to_owned(),
        };
        assert_eq!(
            already(Some("/mnt/v"), true, vec![cipher("aes"), cipher("serpent")]),
            "v is already provisioned on /dev/vdb, /dev/vdc; it was not mounted at /mnt/v: mounted it there again\n\
             options that differ from the running volume apply only to a new one (after a reboot, or after \
             `tosskey close v`, which destroys its data): --cipher aes (running: twofish), --cipher serpent (running: twofish)\n"
        );
    }
}
