//! Whether a volume still serves its data, and which member failed when it does not.
//!
//! Read from the kernel the way an operator would look, and for any md level: md's own
//! view (`md/array_state`, `md/degraded`, `md/raid_disks`, each `md/dev-*/state`), and under
//! every node the devices themselves — gone from sysfs, or a device-mapper device whose
//! table is an `error` target. A failed member under a redundant md array (raid1, raid10,
//! …) that still runs leaves the volume **degraded**; a failed member anywhere else, an
//! array md gave up on, a mapping suspended or shredded, or a run that did not finish
//! leaves it **failed**. `status --check` turns the state into an exit code.

use std::path::{Path, PathBuf};

use crate::commands::volume::{FailedMember, Health, HealthState, VolumeStatus};
use crate::error::{Error, Result};
use crate::exec::journal::Stage;
use crate::exec::kernel::StackKernel;
use crate::host::sysfs::{DevId, SystemRoot, SystemState};
use crate::plan::{DeviceRef, NodeKind};

/// md levels that keep serving with a member gone.
const REDUNDANT_MD_LEVELS: [&str; 5] = ["raid1", "raid10", "raid4", "raid5", "raid6"];

/// `md/array_state` values of an array that no longer serves I/O.
const STOPPED_MD_STATES: [&str; 3] = ["broken", "inactive", "clear"];

impl Health {
    fn found(&mut self, state: HealthState, finding: String) {
        self.state = self.state.max(state);
        self.findings.push(finding);
    }
}

/// One `md/dev-*` entry: its kernel name, its device (`None` once the device is gone from
/// sysfs) and whether md marks it faulty.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdMember {
    pub name: String,
    pub dev: Option<DevId>,
    pub faulty: bool,
}

/// md's own view of array `name`, read leniently: a member whose device vanished is a
/// member with no device, not an error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdHealth {
    pub level: String,
    pub array_state: String,
    /// `md/degraded`: how many of `raid_disks` slots have no working member.
    pub degraded: u64,
    pub raid_disks: u64,
    pub members: Vec<MdMember>,
}

impl MdHealth {
    pub fn read(root: &SystemRoot, name: &str) -> Result<Self> {
        let md = root.block(name).join("md");
        let attr = |rel: &str| tosskey_sysutil::read_attr(&md.join(rel)).unwrap_or_default();
        let number = |rel: &str| attr(rel).parse::<u64>().unwrap_or(0);
        let entries = std::fs::read_dir(&md)
            .map_err(|e| Error::Failed(anyhow::anyhow!("reading {}: {e}", md.display())))?;
        let mut members = Vec::new();
        for entry in entries.flatten() {
            let file_name = entry.file_name();
            let Some(member) = file_name.to_str().and_then(|n| n.strip_prefix("dev-")) else {
                continue;
            };
            let dir = entry.path();
            members.push(MdMember {
                name: member.to_owned(),
                dev: tosskey_sysutil::read_attr(&dir.join("block/dev"))
                    .ok()
                    .and_then(|d| d.parse().ok()),
                faulty: tosskey_sysutil::read_attr(&dir.join("state"))
                    .unwrap_or_default()
                    .split(',')
                    .any(|flag| flag == "faulty"),
            });
        }
        members.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(MdHealth {
            level: attr("level"),
            array_state: attr("array_state"),
            degraded: number("degraded"),
            raid_disks: number("raid_disks"),
            members,
        })
    }

    fn redundant(&self) -> bool {
        REDUNDANT_MD_LEVELS.contains(&self.level.as_str())
    }

    fn stopped(&self) -> bool {
        STOPPED_MD_STATES.contains(&self.array_state.as_str())
    }

    /// Still serving every block: running, and for a redundant level a working member left
    /// in some slot.
    fn serving(&self) -> bool {
        !self.stopped() && (!self.redundant() || self.degraded < self.raid_disks.max(1))
    }
}

/// A device under the volume that failed, before it is known whether redundancy covers it.
struct Failure {
    /// The device, while the volume knows it.
    device: Option<DeviceRef>,
    /// The disk it stands for, as shown.
    shown: PathBuf,
    /// The md array (index into the mappings) that reported it, if md did.
    array: Option<usize>,
    reason: String,
}

/// Assess `volume` as read by `status`: `missing` are the components its journal records
/// that the kernel no longer has.
pub fn assess(
    volume: &mut VolumeStatus,
    kernel: &dyn StackKernel,
    root: &SystemRoot,
    system: &SystemState,
    missing: &[String],
) -> Result<Health> {
    let mut health = Health::healthy();
    note_journal_findings(&mut health, volume, missing);
    let mut failures: Vec<Failure> = Vec::new();
    let arrays = assess_arrays(&mut health, volume, root, system, &mut failures)?;
    failures.extend(failed_devices(volume, kernel, root, system, &failures));
    note_failed_members(&mut health, volume, system, failures, &arrays);
    Ok(health)
}

/// What the journal and the mappings tell without sysfs: an unfinished run, recorded
/// components the kernel lost, mappings whose table tosskey does not build.
fn note_journal_findings(health: &mut Health, volume: &VolumeStatus, missing: &[String]) {
    if volume.stage == Some(Stage::Building) {
        health.found(
            HealthState::Failed,
            "a provision run did not finish".to_owned(),
        );
    }
    for name in missing {
        health.found(
            HealthState::Failed,
            format!("{name}, recorded in the journal, is gone from the kernel"),
        );
    }
    for other in &volume.other_mappings {
        health.found(
            HealthState::Failed,
            format!(
                "{} has a table tosskey does not build (shredded?)",
                other.name
            ),
        );
    }
}

/// md's view: members it marks faulty or whose device is gone (added to `failures`), arrays
/// it stopped or reports degraded; and every suspended mapping. Returns each md array with
/// its index into the mappings.
fn assess_arrays(
    health: &mut Health,
    volume: &mut VolumeStatus,
    root: &SystemRoot,
    system: &SystemState,
    failures: &mut Vec<Failure>,
) -> Result<Vec<(usize, MdHealth)>> {
    let mut arrays: Vec<(usize, MdHealth)> = Vec::new();
    for index in 0..volume.mappings.len() {
        let live = &volume.mappings[index];
        if live.suspended {
            health.found(
                HealthState::Failed,
                format!("{} is suspended: its I/O waits", live.node.name),
            );
        }
        if !matches!(live.node.kind, NodeKind::Md { .. }) {
            continue;
        }
        let name = live.node.name.clone();
        let md = MdHealth::read(root, &name)?;
        if md.stopped() {
            health.found(
                HealthState::Failed,
                format!("md reports {name} {}", md.array_state),
            );
        }
        let named_before = failures.len();
        failures.extend(md_member_failures(volume, system, index, &name, &md));
        if md.degraded > 0 && failures.len() == named_before {
            let state = if md.serving() {
                HealthState::Degraded
            } else {
                HealthState::Failed
            };
            health.found(
                state,
                format!(
                    "md reports {} of the {} members of {name} missing",
                    md.degraded, md.raid_disks
                ),
            );
        }
        arrays.push((index, md));
    }
    Ok(arrays)
}

/// The members md array `name` (mapping `index`) marks faulty or whose device is gone.
fn md_member_failures(
    volume: &mut VolumeStatus,
    system: &SystemState,
    index: usize,
    name: &str,
    md: &MdHealth,
) -> Vec<Failure> {
    let mut failures = Vec::new();
    for member in &md.members {
        let present = member.dev.filter(|&dev| system.by_dev(dev).is_some());
        let reason = if member.faulty {
            format!("{name} marks it faulty")
        } else if present.is_none() {
            format!("gone from sysfs (a member of {name})")
        } else {
            continue;
        };
        let device = present.map(|dev| volume.device_ref(system, dev));
        failures.push(Failure {
            device,
            shown: device.map_or_else(
                || Path::new("/dev").join(&member.name),
                |d| volume.disk_under(d).to_path_buf(),
            ),
            array: Some(index),
            reason,
        });
    }
    failures
}

/// Under every node, the devices not already in `known`: gone from sysfs or turned into dm
/// error targets. A device gone from sysfs has no name there any more: the journal's
/// members that sysfs no longer resolves name them, in order.
fn failed_devices(
    volume: &VolumeStatus,
    kernel: &dyn StackKernel,
    root: &SystemRoot,
    system: &SystemState,
    known: &[Failure],
) -> Vec<Failure> {
    let mut failures = Vec::new();
    let mut unresolved = volume
        .members
        .iter()
        .filter(|path| system.resolve_dev_path(&path.to_string_lossy()).is_none());
    for index in 0..volume.devices.len() {
        let device = DeviceRef::Member(index);
        if known.iter().any(|f| f.device == Some(device)) {
            continue;
        }
        let planned = &volume.devices[index];
        let mut shown = planned.path.clone();
        let reason = match system.by_dev(DevId::new(planned.major, planned.minor)) {
            None => {
                if let Some(path) = unresolved.next() {
                    shown.clone_from(path);
                }
                "gone from sysfs".to_owned()
            }
            Some(block) if error_table(kernel, root, &block.name) => {
                "its device-mapper table is an error target".to_owned()
            }
            Some(_) => continue,
        };
        failures.push(Failure {
            device: Some(device),
            shown,
            array: None,
            reason,
        });
    }
    failures
}

/// One failed member per device, whichever ways it was found (md marked it faulty, its
/// table is an error target, sysfs lost it): redundancy covers it if any way shows a
/// serving redundant array above it.
fn note_failed_members(
    health: &mut Health,
    volume: &VolumeStatus,
    system: &SystemState,
    failures: Vec<Failure>,
    arrays: &[(usize, MdHealth)],
) {
    let mut named: Vec<(PathBuf, HealthState, String)> = Vec::new();
    for failure in failures {
        let covers = |(index, md): &(usize, MdHealth)| {
            md.redundant()
                && md.serving()
                && (failure.array == Some(*index)
                    || failure.device.is_some_and(|d| volume.is_below(d, *index)))
        };
        let state = if arrays.iter().any(covers) {
            HealthState::Degraded
        } else {
            HealthState::Failed
        };
        let device = as_given(volume, system, failure.shown);
        match named.iter_mut().find(|(known, _, _)| *known == device) {
            Some((_, known_state, reason)) => {
                *known_state = (*known_state).min(state);
                *reason = format!("{reason}; {}", failure.reason);
            }
            None => named.push((device, state, failure.reason)),
        }
    }
    for (device, state, reason) in named {
        health.found(
            state,
            format!("member {} failed: {reason}", device.display()),
        );
        health.failed_members.push(FailedMember { device, reason });
    }
}

/// `shown` (`/dev/<kernel name>`) as the journal's members name it (`/dev/mapper/disk1`,
/// a by-id link), when one of them is that device.
fn as_given(volume: &VolumeStatus, system: &SystemState, shown: PathBuf) -> PathBuf {
    volume
        .members
        .iter()
        .find(|given| {
            system
                .resolve_dev_path(&given.to_string_lossy())
                .is_some_and(|block| Path::new("/dev").join(&block.name) == shown)
        })
        .cloned()
        .unwrap_or(shown)
}

/// Whether block device `kernel_name` is a device-mapper device (it has `dm/name`) that
/// serves nothing but `error` targets.
fn error_table(kernel: &dyn StackKernel, root: &SystemRoot, kernel_name: &str) -> bool {
    let Ok(name) = tosskey_sysutil::read_attr(&root.block(kernel_name).join("dm/name")) else {
        return false;
    };
    let Ok(name) = tosskey_dm::DmName::new(&name) else {
        return false;
    };
    kernel.dm_table(&name).is_ok_and(|table| {
        !table.is_empty() && table.iter().all(|entry| entry.target_type == "error")
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::commands::status::tests::{build_fake, Built, EVERY_LAYOUT};
    use crate::commands::status::{check, render_status};
    use crate::error::{DEGRADED, VOLUME_FAILED};
    use crate::plan::derive::tests::plan_sized;

    const MIB: u64 = 1 << 20;

    fn built(args: &[&str], disks: usize) -> Built {
        build_fake(&plan_sized(args, disks, 256 * MIB).unwrap())
    }

    /// md marks `member` of `array` faulty and takes it out of its slot, as after an I/O
    /// error; `degraded` of `raid_disks` slots are then empty.
    fn md_fails(b: &mut Built, array: &str, member: &str, degraded: u32, raid_disks: u32) {
        b.tree
            .attr(array, &format!("md/dev-{member}/state"), "faulty")
            .attr(array, &format!("md/dev-{member}/slot"), "none")
            .attr(array, "md/degraded", &degraded.to_string())
            .attr(array, "md/raid_disks", &raid_disks.to_string());
    }

    /// The volume's health, its `status --check` exit code (0 when healthy) and text.
    fn assessed(b: &Built) -> (Health, u8, String) {
        let volumes = b.status();
        let [volume] = volumes.as_slice() else {
            panic!("{volumes:?}")
        };
        let code = check(volume).map_or_else(|e| e.exit_code(), |_| 0);
        (volume.health.clone(), code, render_status(&volumes))
    }

    #[test]
    fn every_layout_as_built_is_healthy() {
        for (args, disks) in EVERY_LAYOUT {
            let (health, code, text) = assessed(&built(args, disks));
            assert_eq!(health, Health::healthy(), "{args:?}");
            assert_eq!(code, 0, "{args:?}");
            assert!(text.contains("  health: healthy\n"), "{args:?}: {text}");
        }
    }

    #[test]
    fn a_faulty_mirror_member_leaves_the_volume_degraded_and_named() {
        for (level, disks, layout, md_member) in [
            ("raid1", 2u32, "shared", "vdb"),
            ("raid1", 2, "per-disk", "dm-0"),
            ("raid10", 4, "shared", "vdb"),
            ("raid10", 4, "per-disk", "dm-0"),
        ] {
            let mut b = built(&["--level", level, "--layout", layout], disks as usize);
            md_fails(&mut b, "md_tk_v", md_member, 1, disks);
            let layout = format!("{level} {layout}");
            let (health, code, text) = assessed(&b);
            assert_eq!(health.state, HealthState::Degraded, "{layout}: {text}");
            // Per-disk: md failed the crypt mapping; the member named is the disk under it.
            assert_eq!(
                health.failed_members,
                [FailedMember {
                    device: PathBuf::from("/dev/vdb"),
                    reason: "md_tk_v marks it faulty".into()
                }],
                "{layout}"
            );
            assert_eq!(code, DEGRADED, "{layout}");
            assert!(
                text.contains(
                    "  health: degraded\n    member /dev/vdb failed: md_tk_v marks it faulty\n"
                ),
                "{layout}: {text}"
            );
            let volumes = b.status();
            let json = serde_json::to_value(&volumes).unwrap();
            assert_eq!(json[0]["health"]["state"], "degraded", "{layout}");
            assert_eq!(json[0]["health"]["failed_members"][0]["device"], "/dev/vdb");
        }
    }

    #[test]
    fn raid1_with_every_member_faulty_has_failed() {
        let mut b = built(&["--level", "raid1"], 2);
        md_fails(&mut b, "md_tk_v", "vdb", 2, 2);
        md_fails(&mut b, "md_tk_v", "vdc", 2, 2);
        let (health, code, _) = assessed(&b);
        assert_eq!(health.state, HealthState::Failed);
        assert_eq!(health.failed_members.len(), 2);
        assert_eq!(code, VOLUME_FAILED);
    }

    #[test]
    fn a_failed_member_without_redundancy_fails_the_volume_and_is_named() {
        // md raid0 and linear: md marks the member faulty (or reports the array broken).
        for level in ["raid0", "linear"] {
            let mut b = built(&["--level", level], 2);
            md_fails(&mut b, "md_tk_v", "vdc", 0, 2);
            let (health, code, text) = assessed(&b);
            assert_eq!(health.state, HealthState::Failed, "{level}: {text}");
            assert_eq!(health.failed_members[0].device, Path::new("/dev/vdc"));
            assert_eq!(code, VOLUME_FAILED, "{level}");
            assert!(
                text.contains("member /dev/vdc failed: md_tk_v marks it faulty"),
                "{text}"
            );
        }
        let mut b = built(&[], 2);
        b.tree.attr("md_tk_v", "md/array_state", "broken");
        let (health, code, text) = assessed(&b);
        assert_eq!((health.state, code), (HealthState::Failed, VOLUME_FAILED));
        assert!(text.contains("md reports md_tk_v broken"), "{text}");
    }

    #[test]
    fn a_member_gone_from_sysfs_fails_a_stripe_and_a_per_disk_volume() {
        for args in [
            &["--raid", "dm-stripe"][..],
            &["--layout", "per-disk", "--raid", "dm-stripe"][..],
            &["--layout", "per-disk", "--level", "raid0"][..],
        ] {
            let b = built(args, 2);
            std::fs::remove_dir_all(b.tree.path().join("sys/class/block/vdc")).unwrap();
            let (health, code, text) = assessed(&b);
            assert_eq!(health.state, HealthState::Failed, "{args:?}: {text}");
            assert_eq!(
                health.failed_members,
                [FailedMember {
                    device: PathBuf::from("/dev/vdc"),
                    reason: "gone from sysfs".into()
                }],
                "{args:?}: {text}"
            );
            assert_eq!(code, VOLUME_FAILED, "{args:?}");
        }
    }

    #[test]
    fn a_member_turned_into_a_dm_error_target_is_named() {
        for (args, state) in [
            (&["--raid", "dm-stripe"][..], HealthState::Failed),
            (&["--level", "raid1"][..], HealthState::Degraded),
        ] {
            let mut b = built(args, 2);
            // vdc is a device-mapper device whose table was swapped for an error target.
            b.tree.attr("vdc", "dm/name", "flaky");
            b.kernel.dm("flaky", (254, 32), "", &["0 524288 error "]);
            let (health, _, text) = assessed(&b);
            assert_eq!(health.state, state, "{args:?}: {text}");
            assert!(
                text.contains("member /dev/vdc failed: its device-mapper table is an error target"),
                "{args:?}: {text}"
            );
        }
    }

    #[test]
    fn an_unfinished_run_a_shredded_or_missing_mapping_fail_the_volume() {
        let b = built(&[], 2);
        let mut journal = b.env.journals.load("v").unwrap().unwrap();
        journal.stage = Stage::Building;
        b.env.journals.save(&journal).unwrap();
        let (health, code, _) = assessed(&b);
        assert_eq!((health.state, code), (HealthState::Failed, VOLUME_FAILED));
        assert_eq!(health.findings, ["a provision run did not finish"]);

        let b = built(&[], 2);
        std::fs::remove_dir_all(b.tree.path().join("sys/class/block/md_tk_v/md")).unwrap();
        let (health, _, _) = assessed(&b);
        assert!(
            health
                .findings
                .contains(&"md_tk_v, recorded in the journal, is gone from the kernel".to_owned()),
            "{health:?}"
        );
        assert_eq!(health.state, HealthState::Failed);
    }
}
