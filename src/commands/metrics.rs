//! `status --prometheus` and `provision --metrics-file`: the volumes in Prometheus's text
//! exposition format, for node_exporter's textfile collector.
//!
//! Every series carries a `volume` label. Sizes are `_bytes`, durations and times
//! `_seconds`; nothing here only ever increases, so every series is a gauge and none ends in
//! `_total`. Health is a state set (`tosskey_volume_health{state="…"}`, exactly one 1), each
//! member has its own `tosskey_volume_member_failed` so an alert names the disk, and
//! `tosskey_volume_mount_in_place` has a `kind` label (`mount` for the volume's mount,
//! `bind` for each `--bind` directory). Built from [`VolumeStatus`], which never carries
//! key material: no series or label can hold a key.

use std::fmt::Write as _;
use std::io::Write as _;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::Path;

use anyhow::Context as _;

use crate::commands::status;
use crate::commands::volume::{HealthState, VolumeStatus};
use crate::commands::Environment;
use crate::error::{Error, Result};
use crate::plan::{md_level_name, DeviceRef, KeyLoading, NodeKind};

/// One metric family: its samples (label pairs, value) under one HELP and TYPE.
struct Family {
    name: &'static str,
    help: &'static str,
    samples: Vec<(Vec<(&'static str, String)>, f64)>,
}

impl Family {
    fn new(name: &'static str, help: &'static str) -> Self {
        Family {
            name,
            help,
            samples: Vec::new(),
        }
    }

    fn add(&mut self, labels: Vec<(&'static str, String)>, value: f64) {
        self.samples.push((labels, value));
    }

    fn render(&self, out: &mut String) {
        if self.samples.is_empty() {
            return;
        }
        let _ = writeln!(out, "# HELP {} {}", self.name, self.help);
        let _ = writeln!(out, "# TYPE {} gauge", self.name);
        for (labels, value) in &self.samples {
            let labels: Vec<String> = labels
                .iter()
                .map(|(name, value)| format!("{name}=\"{}\"", escape_label(value)))
                .collect();
            let _ = writeln!(out, "{}{{{}}} {value}", self.name, labels.join(","));
        }
    }
}

/// A label value as the text format wants it: `\`, `"` and newlines escaped.
fn escape_label(value: &str) -> String {
    value
        .replace('\\', "\\\\")
        .replace('"', "\\\"")
        .replace('\n', "\\n")
}

/// How the volume's devices are combined: the md level, `dm-stripe`, or `single`.
fn level(volume: &VolumeStatus) -> String {
    let kinds = volume.mappings.iter().map(|m| &m.node.kind);
    for kind in kinds {
        match kind {
            NodeKind::Md { level, .. } => return md_level_name(*level).to_owned(),
            NodeKind::Striped { .. } => return "dm-stripe".to_owned(),
            _ => {}
        }
    }
    "single".to_owned()
}

/// `per-disk` when the array or stripe is built on crypt mappings, else `shared`.
fn layout(volume: &VolumeStatus) -> &'static str {
    let on_crypt = |device: &DeviceRef| matches!(device, DeviceRef::Node(i) if matches!(volume.mappings[*i].node.kind, NodeKind::Crypt { .. }));
    let per_disk = volume.mappings.iter().any(|m| match &m.node.kind {
        NodeKind::Md { .. } | NodeKind::Striped { .. } => {
            m.node.kind.devices().iter().any(on_crypt)
        }
        _ => false,
    });
    if per_disk {
        "per-disk"
    } else {
        "shared"
    }
}

fn key_loading(loading: KeyLoading) -> &'static str {
    match loading {
        KeyLoading::Auto => "auto",
        KeyLoading::Keyring => "keyring",
        KeyLoading::Hex => "hex",
    }
}

fn seconds(unix_ms: u64) -> f64 {
    unix_ms as f64 / 1000.0
}

/// The volumes as Prometheus text (empty when there are none).
pub fn render(volumes: &[VolumeStatus]) -> String {
    let mut families = VolumeFamilies::new();
    for volume in volumes {
        families.add(volume);
    }
    families.render()
}

/// The `volume` label every series carries.
fn volume_label(volume: &VolumeStatus) -> (&'static str, String) {
    ("volume", volume.name.clone())
}

/// The families [`render`] fills, one sample set per volume, in the order they are printed.
struct VolumeFamilies {
    info: Family,
    size: Family,
    keys: Family,
    key_scope: Family,
    members: Family,
    members_failed: Family,
    member_failed: Family,
    health: Family,
    verified: Family,
    verify_failed: Family,
    ready_duration: Family,
    ready_time: Family,
    mount_in_place: Family,
}

impl VolumeFamilies {
    fn new() -> Self {
        VolumeFamilies {
            info: Family::new(
                "tosskey_volume_info",
                "A tosskey volume and how it is built (always 1).",
            ),
            size: Family::new(
                "tosskey_volume_size_bytes",
                "Size of the volume's device, /dev/mapper/NAME.",
            ),
            keys: Family::new(
                "tosskey_volume_keys",
                "How many random keys encrypt the volume (one per key-scope segment).",
            ),
            key_scope: Family::new(
                "tosskey_volume_key_scope_bytes",
                "The most bytes one key encrypts.",
            ),
            members: Family::new(
                "tosskey_volume_members",
                "Member devices the volume was built on.",
            ),
            members_failed: Family::new(
                "tosskey_volume_members_failed",
                "Member devices that failed (md faulty, dm error target, gone from sysfs).",
            ),
            member_failed: Family::new(
                "tosskey_volume_member_failed",
                "1 if this member device failed, else 0.",
            ),
            health: Family::new(
                "tosskey_volume_health",
                "The volume's health: 1 for its state (healthy, degraded or failed), 0 for the others.",
            ),
            verified: Family::new(
                "tosskey_volume_verified_sectors",
                "Sectors provision decrypted in userspace and compared with the mapping.",
            ),
            verify_failed: Family::new(
                "tosskey_volume_verification_failed_sectors",
                "Of the verified sectors, how many differed from the userspace decryption.",
            ),
            ready_duration: Family::new(
                "tosskey_volume_ready_duration_seconds",
                "Seconds from the start of the provision run to the volume being ready.",
            ),
            ready_time: Family::new(
                "tosskey_volume_ready_timestamp_seconds",
                "Unix time the volume became ready.",
            ),
            mount_in_place: Family::new(
                "tosskey_volume_mount_in_place",
                "1 if the mount (kind=mount) or bind mount (kind=bind) the run made is in place, else 0.",
            ),
        }
    }

    /// `volume`'s samples, in every family that has one for it.
    fn add(&mut self, volume: &VolumeStatus) {
        self.add_info(volume);
        if let Some(top) = volume.mappings.last() {
            self.size
                .add(vec![volume_label(volume)], top.node.size_bytes as f64);
        }
        self.keys
            .add(vec![volume_label(volume)], volume.key_scope.keys as f64);
        self.key_scope.add(
            vec![volume_label(volume)],
            volume.key_scope.largest_key_bytes as f64,
        );
        self.add_members_and_health(volume);
        self.add_ready(volume);
        self.add_mount(volume);
    }

    /// How the volume is built: layout, level, cipher, key loading, filesystem, label.
    fn add_info(&mut self, volume: &VolumeStatus) {
        let crypt = volume.mappings.iter().find_map(|m| m.crypt.as_ref());
        let filesystem = volume
            .mappings
            .last()
            .and_then(|top| top.mounts.first())
            .map(|m| m.fs_type.clone())
            .or_else(|| volume.ready.as_ref().and_then(|r| r.filesystem.clone()))
            .unwrap_or_else(|| "none".to_owned());
        self.info.add(
            vec![
                volume_label(volume),
                ("layout", layout(volume).to_owned()),
                ("level", level(volume)),
                (
                    "cipher",
                    crypt.map_or(String::new(), |c| c.format.cipher.to_string()),
                ),
                (
                    "key_loading",
                    crypt.map_or("", |c| key_loading(c.key_loading)).to_owned(),
                ),
                ("filesystem", filesystem),
                (
                    "label",
                    volume
                        .ready
                        .as_ref()
                        .and_then(|r| r.label.clone())
                        .unwrap_or_default(),
                ),
            ],
            1.0,
        );
    }

    /// The members, which of them failed, and the health state set.
    fn add_members_and_health(&mut self, volume: &VolumeStatus) {
        let name = || volume_label(volume);
        let failed = &volume.health.failed_members;
        let paths: Vec<&Path> = if volume.members.is_empty() {
            volume.devices.iter().map(|d| d.path.as_path()).collect()
        } else {
            volume.members.iter().map(|p| p.as_path()).collect()
        };
        self.members.add(vec![name()], paths.len() as f64);
        self.members_failed.add(vec![name()], failed.len() as f64);
        for path in &paths {
            let down = failed.iter().any(|f| f.device == *path);
            self.member_failed.add(
                vec![name(), ("member", path.display().to_string())],
                f64::from(u8::from(down)),
            );
        }
        for state in [
            HealthState::Healthy,
            HealthState::Degraded,
            HealthState::Failed,
        ] {
            self.health.add(
                vec![name(), ("state", state.word().to_owned())],
                f64::from(u8::from(volume.health.state == state)),
            );
        }
    }

    /// What the run that made the volume recorded: verification and when it became ready.
    fn add_ready(&mut self, volume: &VolumeStatus) {
        let Some(ready) = &volume.ready else {
            return;
        };
        let name = || volume_label(volume);
        self.verified
            .add(vec![name()], ready.verified_sectors as f64);
        self.verify_failed
            .add(vec![name()], ready.mismatched_sectors as f64);
        self.ready_duration.add(
            vec![name()],
            seconds(ready.ready_unix_ms.saturating_sub(ready.started_unix_ms)),
        );
        self.ready_time
            .add(vec![name()], seconds(ready.ready_unix_ms));
    }

    /// Whether the mount and the binds the run made are still in place.
    fn add_mount(&mut self, volume: &VolumeStatus) {
        let Some(dir) = &volume.mount else {
            return;
        };
        let in_place = volume
            .mappings
            .last()
            .is_some_and(|top| top.mount_points.iter().any(|p| Path::new(p) == dir));
        self.mount_in_place.add(
            vec![
                volume_label(volume),
                ("kind", "mount".to_owned()),
                ("path", dir.display().to_string()),
            ],
            f64::from(u8::from(in_place)),
        );
        for bind in &volume.binds {
            self.mount_in_place.add(
                vec![
                    volume_label(volume),
                    ("kind", "bind".to_owned()),
                    ("path", bind.dir.display().to_string()),
                ],
                f64::from(u8::from(bind.in_place)),
            );
        }
    }

    fn render(&self) -> String {
        let mut out = String::new();
        for family in [
            &self.info,
            &self.size,
            &self.keys,
            &self.key_scope,
            &self.members,
            &self.members_failed,
            &self.member_failed,
            &self.health,
            &self.verified,
            &self.verify_failed,
            &self.ready_duration,
            &self.ready_time,
            &self.mount_in_place,
        ] {
            family.render(&mut out);
        }
        out
    }
}

/// After a provision run: the volume's metrics (none if the run left no volume) and the
/// run's exit code (`tosskey_provision_exit_code`, 0 on success), written to `path`.
pub fn write_after_provision(
    env: &Environment,
    path: &Path,
    name: &str,
    failure: Option<&Error>,
) -> Result<()> {
    let volumes = match status::status(env, Some(name)) {
        Ok(volumes) => volumes,
        // The run left no volume (or dm is not there): the exit code says why.
        Err(_) if failure.is_some() => Vec::new(),
        Err(e) => return Err(e),
    };
    let mut exit_code = Family::new(
        "tosskey_provision_exit_code",
        "Exit code of the last provision run for the volume (0: ready; see tosskey --help).",
    );
    exit_code.add(
        vec![("volume", name.to_owned())],
        f64::from(failure.map_or(0, Error::exit_code)),
    );
    let mut text = render(&volumes);
    exit_code.render(&mut text);
    write_atomic(path, &text)
        .map_err(|e| Error::Failed(e.context("writing the metrics file (--metrics-file)")))
}

/// Write `text` to `path` atomically for node_exporter's textfile collector: a new temp
/// file in the same directory (`.NAME.tmp`, `O_EXCL`; the collector reads only `*.prom`),
/// fsync, rename over `path`. The collector never sees half a file.
pub fn write_atomic(path: &Path, text: &str) -> anyhow::Result<()> {
    let name = path
        .file_name()
        .and_then(|n| n.to_str())
        .with_context(|| format!("{} does not name a file", path.display()))?;
    let tmp = path.with_file_name(format!(".{name}.{}.tmp", std::process::id()));
    let written = (|| {
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(text.as_bytes())?;
        file.sync_all()?;
        std::fs::rename(&tmp, path)
            .with_context(|| format!("renaming {} to {}", tmp.display(), path.display()))
    })();
    if written.is_err() {
        let _ = std::fs::remove_file(&tmp);
    }
    written
}

#[cfg(test)]
mod tests {
    use std::io::Write as _;
    use std::path::PathBuf;
    use std::process::{Command, Stdio};

    use super::*;
    use crate::commands::status::tests::{build_fake, Built};
    use crate::exec::journal::Readiness;
    use crate::plan::derive::tests::plan_sized;

    const MIB: u64 = 1 << 20;

    /// A volume built as `args` over `disks` fake disks, its journal completed as a run
    /// that mounted it at /mnt/v and escrowed its key would leave it.
    fn volume(args: &[&str], disks: usize) -> Built {
        let built = build_fake(&plan_sized(args, disks, 256 * MIB).unwrap());
        let mut journal = built.env.journals.load("v").unwrap().unwrap();
        journal.mount = Some(PathBuf::from("/mnt/v"));
        journal.ready = Some(Readiness {
            started_unix_ms: 1_765_000_000_000,
            ready_unix_ms: 1_765_000_001_250,
            verified_sectors: 66,
            mismatched_sectors: 0,
            escrow_file: Some(PathBuf::from("/run/tosskey/escrow/v.json")),
            filesystem: Some("ext4".into()),
            label: Some("scratch \"data\"".into()),
        });
        built.env.journals.save(&journal).unwrap();
        built
    }

    /// `promtool check metrics` on `text`: its complaints, or why it could not run.
    fn promtool(text: &str) -> String {
        let mut child = Command::new("promtool")
            .args(["check", "metrics"])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("promtool (Debian package prometheus; scripts/test installs it)");
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let output = child.wait_with_output().unwrap();
        let said = String::from_utf8_lossy(&output.stdout).into_owned()
            + &String::from_utf8_lossy(&output.stderr);
        if output.status.success() {
            said
        } else {
            format!("exit {:?}: {said}", output.status.code())
        }
    }

    #[test]
    fn every_layout_passes_promtool_and_carries_the_series() {
        for (args, disks, level, layout) in [
            (&[][..], 1, "single", "shared"),
            (&[][..], 2, "raid0", "shared"),
            (&["--level", "raid1"][..], 2, "raid1", "shared"),
            (&["--level", "linear"][..], 2, "linear", "shared"),
            (&["--raid", "dm-stripe"][..], 3, "dm-stripe", "shared"),
            (&["--layout", "per-disk"][..], 2, "raid0", "per-disk"),
            (
                &["--layout", "per-disk", "--level", "raid1"][..],
                2,
                "raid1",
                "per-disk",
            ),
            (
                &["--layout", "per-disk", "--raid", "dm-stripe"][..],
                2,
                "dm-stripe",
                "per-disk",
            ),
            (&["--level", "raid10"][..], 4, "raid10", "shared"),
            (
                &["--layout", "per-disk", "--level", "raid10"][..],
                4,
                "raid10",
                "per-disk",
            ),
            (
                &["--key-loading", "hex", "--key-scope", "100MiB"][..],
                3,
                "raid0",
                "shared",
            ),
        ] {
            let built = volume(args, disks);
            let text = render(&built.status());
            assert_eq!(promtool(&text), "", "{args:?}:\n{text}");
            let loading = if args.contains(&"hex") {
                "hex"
            } else {
                "keyring"
            };
            for series in [
                format!("tosskey_volume_info{{volume=\"v\",layout=\"{layout}\",level=\"{level}\",cipher=\"twofish-xts-plain64\",key_loading=\"{loading}\",filesystem=\"ext4\",label=\"scratch \\\"data\\\"\"}} 1\n"),
                format!("tosskey_volume_members{{volume=\"v\"}} {disks}\n"),
                "tosskey_volume_members_failed{volume=\"v\"} 0\n".to_owned(),
                "tosskey_volume_member_failed{volume=\"v\",member=\"/dev/vdb\"} 0\n".to_owned(),
                "tosskey_volume_health{volume=\"v\",state=\"healthy\"} 1\n".to_owned(),
                "tosskey_volume_health{volume=\"v\",state=\"degraded\"} 0\n".to_owned(),
                "tosskey_volume_verified_sectors{volume=\"v\"} 66\n".to_owned(),
                "tosskey_volume_verification_failed_sectors{volume=\"v\"} 0\n".to_owned(),
                "tosskey_volume_ready_duration_seconds{volume=\"v\"} 1.25\n".to_owned(),
                "tosskey_volume_ready_timestamp_seconds{volume=\"v\"} 1765000001.25\n".to_owned(),
                "tosskey_volume_mount_in_place{volume=\"v\",kind=\"mount\",path=\"/mnt/v\"} 0\n".to_owned(),
                "# TYPE tosskey_volume_size_bytes gauge\n".to_owned(),
                "# HELP tosskey_volume_key_scope_bytes ".to_owned(),
            ] {
                assert!(text.contains(&series), "{args:?}: {series} in\n{text}");
            }
            let keys = built.status()[0].key_scope.keys;
            assert!(text.contains(&format!("tosskey_volume_keys{{volume=\"v\"}} {keys}\n")));
            // The fake kernel holds hex keys as `abab…`: never in the metrics.
            assert!(!text.contains("abababab"), "{text}");
        }
    }

    #[test]
    fn a_degraded_volume_names_its_failed_member_and_the_mount_in_place() {
        let mut built = volume(&["--level", "raid1"], 2);
        built
            .tree
            .attr("md_tk_v", "md/dev-vdc/state", "faulty")
            .attr("md_tk_v", "md/dev-vdc/slot", "none")
            .attr("md_tk_v", "md/degraded", "1")
            .attr("md_tk_v", "md/raid_disks", "2")
            .mount((253, 1), "/mnt/v", "ext4", "/dev/mapper/v");
        let text = render(&built.status());
        assert_eq!(promtool(&text), "", "{text}");
        for series in [
            "tosskey_volume_health{volume=\"v\",state=\"degraded\"} 1\n",
            "tosskey_volume_health{volume=\"v\",state=\"healthy\"} 0\n",
            "tosskey_volume_members_failed{volume=\"v\"} 1\n",
            "tosskey_volume_member_failed{volume=\"v\",member=\"/dev/vdc\"} 1\n",
            "tosskey_volume_member_failed{volume=\"v\",member=\"/dev/vdb\"} 0\n",
            "tosskey_volume_mount_in_place{volume=\"v\",kind=\"mount\",path=\"/mnt/v\"} 1\n",
        ] {
            assert!(text.contains(series), "{series} in\n{text}");
        }
    }

    #[test]
    fn no_volumes_is_an_empty_exposition_and_the_file_is_replaced_whole() {
        assert_eq!(render(&[]), "");
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("tosskey.prom");
        std::fs::write(&path, "old").unwrap();
        write_atomic(&path, "# new\n").unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "# new\n");
        let names: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["tosskey.prom"], "no temp file left");
        let err = write_atomic(&dir.path().join("missing/x.prom"), "").unwrap_err();
        assert!(format!("{err:#}").contains("missing/.x.prom"), "{err:#}");
    }
}
