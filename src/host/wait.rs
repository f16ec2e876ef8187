//! Waiting for disks that appear late (`provision --wait-timeout`, `--wait-for-disks`,
//! `--settle`): NVMe and virtio controllers probe asynchronously, so a unit started early in
//! boot can look before every disk is there.
//!
//! It polls: the sysfs inventory for `--discover`, the named paths otherwise. No udev (the
//! unit deliberately runs without `systemd-udev-settle`, and an initramfs may have none),
//! no uevent netlink socket (the service allows only `AF_UNIX` and `AF_ALG`) and no inotify
//! (sysfs does not report new devices through it, and a fake tree in the host tests is a
//! plain directory). One poll reads `/sys/class/block` and a few attributes per disk, well
//! under a millisecond of CPU; every [`POLL_INTERVAL`] keeps that negligible while a disk is
//! seen at most that long after the kernel registers it, against the 2 s of the shell loop
//! this replaces.

use std::collections::BTreeSet;
use std::fs;
use std::os::unix::fs::FileTypeExt;
use std::path::{Path, PathBuf};
use std::thread;
use std::time::{Duration, Instant};

use crate::host::discover::{discover_in, Discovery, DiskMatcher};
use crate::host::safety::SafetyError;
use crate::host::sysfs::{SystemRoot, SystemState};

/// How often the disks are looked at while waiting (the module says why this often).
pub const POLL_INTERVAL: Duration = Duration::from_millis(200);

/// `--wait-timeout` when only `--wait-for-disks` or `--settle` is given.
pub const DEFAULT_WAIT_TIMEOUT: Duration = Duration::from_secs(30);

/// `--settle` when `--discover` waits without `--wait-for-disks`.
pub const DEFAULT_SETTLE: Duration = Duration::from_secs(2);

/// A wait for late disks: how long at most, and when discovery's set is complete. Named
/// devices are complete when each one exists as a block device.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DiskWait {
    pub timeout: Duration,
    pub discovered: WaitUntil,
}

/// When `--discover`'s set of disks is complete.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WaitUntil {
    /// At least this many free disks match (`--wait-for-disks N`). Disks that appear after
    /// the count is reached are not waited for.
    Count(usize),
    /// At least one free disk matches and the set has not changed for this long (`--settle`).
    Settled(Duration),
}

/// Discovery once the set is complete as `wait` says, polling sysfs; a timeout is an error
/// listing what was found and what was expected.
pub fn wait_for_discovery(
    root: &SystemRoot,
    matcher: &DiskMatcher,
    wait: &DiskWait,
) -> Result<Discovery, SafetyError> {
    let started = Instant::now();
    let mut last_names: Option<BTreeSet<String>> = None;
    let mut unchanged_since = started;
    loop {
        let state = match SystemState::read(root) {
            Ok(state) => state,
            // A device that appears or goes while it is read (its directory listed, an
            // attribute not there yet) is looked at again at the next poll; sysfs that
            // is not mounted at all fails at once.
            Err(_) if root.sys.join("class/block").is_dir() && !timed_out(started, wait) => {
                thread::sleep(POLL_INTERVAL);
                continue;
            }
            Err(source) => {
                return Err(SafetyError::Inventory {
                    sys: root.sys.clone(),
                    proc: root.proc.clone(),
                    source,
                })
            }
        };
        let discovery = discover_in(&state, matcher);
        let names: BTreeSet<String> = discovery.disks.iter().map(|d| d.name.clone()).collect();
        let now = Instant::now();
        if last_names.as_ref() != Some(&names) {
            last_names = Some(names.clone());
            unchanged_since = now;
        }
        let complete = match wait.discovered {
            WaitUntil::Count(count) => names.len() >= count,
            WaitUntil::Settled(settle) => {
                !names.is_empty() && now.duration_since(unchanged_since) >= settle
            }
        };
        if complete {
            return Ok(discovery);
        }
        if now.duration_since(started) >= wait.timeout {
            return Err(discovery_timeout(matcher, wait, &discovery));
        }
        thread::sleep(POLL_INTERVAL.min(wait.timeout.saturating_sub(now - started)));
    }
}

fn timed_out(started: Instant, wait: &DiskWait) -> bool {
    started.elapsed() >= wait.timeout
}

fn discovery_timeout(matcher: &DiskMatcher, wait: &DiskWait, discovery: &Discovery) -> SafetyError {
    let expected = match wait.discovered {
        WaitUntil::Count(1) => format!("1 free disk matching {matcher}"),
        WaitUntil::Count(count) => format!("{count} free disks matching {matcher}"),
        WaitUntil::Settled(settle) => format!(
            "free disks matching {matcher} to stop changing for {}",
            seconds(settle)
        ),
    };
    let mut found: Vec<String> = discovery
        .disks
        .iter()
        .map(|d| format!("/dev/{}", d.name))
        .collect();
    if found.is_empty() {
        found.push("none".to_owned());
    }
    let found = format!("{} ({} free)", found.join(", "), discovery.disks.len());
    let skipped: Vec<String> = discovery
        .skipped
        .iter()
        .map(|s| format!("; skipped {}", s.reason))
        .collect();
    SafetyError::DisksLate {
        waited: seconds(wait.timeout),
        expected,
        found: format!("{found}{}", skipped.concat()),
        fix: match wait.discovered {
            WaitUntil::Count(_) => "check how many instance-store disks the machine type has and lower --wait-for-disks, or raise --wait-timeout",
            WaitUntil::Settled(_) => "check that the machine type has instance-store disks, or raise --wait-timeout",
        },
    }
}

/// Wait until every path in `paths` exists as a block device.
pub fn wait_for_paths(paths: &[PathBuf], timeout: Duration) -> Result<(), SafetyError> {
    let started = Instant::now();
    loop {
        let missing: Vec<&PathBuf> = paths.iter().filter(|p| !is_block_device(p)).collect();
        if missing.is_empty() {
            return Ok(());
        }
        let elapsed = started.elapsed();
        if elapsed >= timeout {
            let present: Vec<String> = paths
                .iter()
                .filter(|p| !missing.contains(p))
                .map(|p| p.display().to_string())
                .collect();
            let list = |items: Vec<String>| {
                if items.is_empty() {
                    "none".to_owned()
                } else {
                    items.join(", ")
                }
            };
            return Err(SafetyError::DisksLate {
                waited: seconds(timeout),
                expected: format!(
                    "{} to exist as block devices",
                    list(paths.iter().map(|p| p.display().to_string()).collect())
                ),
                found: format!(
                    "{}; missing {}",
                    list(present),
                    list(missing.iter().map(|p| p.display().to_string()).collect())
                ),
                fix: "check the device names (ls /sys/class/block), or raise --wait-timeout",
            });
        }
        thread::sleep(POLL_INTERVAL.min(timeout - elapsed));
    }
}

fn is_block_device(path: &Path) -> bool {
    fs::metadata(path).is_ok_and(|m| m.file_type().is_block_device())
}

/// A `--wait-timeout` or `--settle` value: a number with `ms`, `s` or `min` (`30s`,
/// `500ms`, `1.5s`, `2min`), or a bare number of seconds, as systemd takes them.
pub fn parse_duration(text: &str) -> Result<Duration, String> {
    let bad = || format!("{text:?} is not a duration: give e.g. 30s, 500ms or 2min");
    let digits_end = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(digits_end);
    let number: f64 = number.parse().map_err(|_| bad())?;
    let scale = match unit.trim() {
        "ms" => 0.001,
        "" | "s" => 1.0,
        "min" | "m" => 60.0,
        _ => return Err(bad()),
    };
    Duration::try_from_secs_f64(number * scale).map_err(|_| bad())
}

/// `30s`, `2.5s`, `0.2s`: how the timeout and settle time are said back.
fn seconds(duration: Duration) -> String {
    format!("{}s", duration.as_secs_f64())
}

#[cfg(test)]
mod tests {
    use std::sync::mpsc;

    use tosskey_sysutil::fake::FakeTree;

    use super::*;

    const GIB: u64 = 1 << 30;
    const INSTANCE_STORE: &str = "Amazon EC2 NVMe Instance Storage";

    fn aws() -> DiskMatcher {
        DiskMatcher::Cloud(crate::host::discover::Cloud::Aws)
    }

    fn names(discovery: &Discovery) -> Vec<&str> {
        discovery.disks.iter().map(|d| d.name.as_str()).collect()
    }

    /// A tree with the EBS root and `present` instance-store disks, and a thread that adds
    /// the instance-store disks `late` one by one, `gap` apart, after `delay`. The thread
    /// reports each disk it added.
    fn tree_with_late_disks(
        present: &[&'static str],
        late: &'static [&'static str],
        delay: Duration,
        gap: Duration,
    ) -> (
        SystemRoot,
        thread::JoinHandle<FakeTree>,
        mpsc::Receiver<&'static str>,
    ) {
        let mut tree = FakeTree::new();
        tree.nvme("nvme0n1", 0, 8 * GIB, "Amazon Elastic Block Store", "vol0");
        for (minor, name) in (10..).zip(present) {
            tree.nvme(name, minor, 100 * GIB, INSTANCE_STORE, name);
        }
        let root = tree.root.clone();
        let (added, reports) = mpsc::channel();
        let adder = thread::spawn(move || {
            thread::sleep(delay);
            for (minor, name) in (20..).zip(late) {
                if minor > 20 {
                    thread::sleep(gap);
                }
                tree.nvme(name, minor, 100 * GIB, INSTANCE_STORE, name);
                added.send(*name).unwrap();
            }
            tree
        });
        (root, adder, reports)
    }

    #[test]
    fn a_count_waits_for_the_late_disks_and_proceeds_with_all_of_them() {
        let (root, adder, _reports) = tree_with_late_disks(
            &["nvme1n1"],
            &["nvme2n1", "nvme3n1"],
            Duration::from_millis(300),
            Duration::from_millis(300),
        );
        let wait = DiskWait {
            timeout: Duration::from_secs(20),
            discovered: WaitUntil::Count(3),
        };
        let started = Instant::now();
        let discovery = wait_for_discovery(&root, &aws(), &wait).unwrap();
        assert_eq!(names(&discovery), ["nvme1n1", "nvme2n1", "nvme3n1"]);
        assert!(started.elapsed() >= Duration::from_millis(600));
        adder.join().unwrap();
    }

    #[test]
    fn settling_waits_until_the_set_stops_changing() {
        let (root, adder, reports) = tree_with_late_disks(
            &[],
            &["nvme1n1", "nvme2n1", "nvme3n1"],
            Duration::from_millis(200),
            Duration::from_millis(400),
        );
        let wait = DiskWait {
            timeout: Duration::from_secs(20),
            discovered: WaitUntil::Settled(Duration::from_millis(1000)),
        };
        let discovery = wait_for_discovery(&root, &aws(), &wait).unwrap();
        // Each disk came 400 ms after the one before, less than the settle time: all three.
        assert_eq!(names(&discovery), ["nvme1n1", "nvme2n1", "nvme3n1"]);
        assert_eq!(reports.try_iter().count(), 3);
        adder.join().unwrap();
    }

    #[test]
    fn a_timeout_says_what_was_found_and_what_was_expected() {
        let (root, adder, _reports) =
            tree_with_late_disks(&["nvme1n1"], &["nvme2n1"], Duration::ZERO, Duration::ZERO);
        let wait = DiskWait {
            timeout: Duration::from_millis(800),
            discovered: WaitUntil::Count(4),
        };
        let started = Instant::now();
        let error = wait_for_discovery(&root, &aws(), &wait).unwrap_err();
        assert!(started.elapsed() >= Duration::from_millis(800));
        assert_eq!(
            error.to_string(),
            "timed out after 0.8s waiting for 4 free disks matching aws: found /dev/nvme1n1, /dev/nvme2n1 (2 free): check how many instance-store disks the machine type has and lower --wait-for-disks, or raise --wait-timeout"
        );
        adder.join().unwrap();
    }

    #[test]
    fn settling_without_any_disk_times_out_saying_none() {
        let tree = FakeTree::new();
        let wait = DiskWait {
            timeout: Duration::from_millis(300),
            discovered: WaitUntil::Settled(Duration::from_millis(100)),
        };
        let error = wait_for_discovery(&tree.root, &aws(), &wait).unwrap_err();
        assert!(error.to_string().contains("found none (0 free)"), "{error}");
    }

    #[test]
    fn a_disk_after_the_count_is_reached_is_not_waited_for() {
        let (root, adder, reports) = tree_with_late_disks(
            &["nvme1n1"],
            &["nvme2n1", "nvme3n1"],
            Duration::from_millis(200),
            Duration::from_secs(3),
        );
        let wait = DiskWait {
            timeout: Duration::from_secs(20),
            discovered: WaitUntil::Count(2),
        };
        let started = Instant::now();
        let discovery = wait_for_discovery(&root, &aws(), &wait).unwrap();
        assert_eq!(names(&discovery), ["nvme1n1", "nvme2n1"]);
        assert!(started.elapsed() < Duration::from_secs(3));
        assert_eq!(reports.try_iter().collect::<Vec<_>>(), ["nvme2n1"]);
        adder.join().unwrap();
    }

    #[test]
    fn durations_take_systemd_units() {
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("30"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("2min"), Ok(Duration::from_secs(120)));
        for bad in ["", "s", "30x", "-1s", "1.2.3s"] {
            assert!(parse_duration(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn named_devices_that_never_appear_time_out_naming_them() {
        let tree = FakeTree::new();
        let missing = tree.root.dev.join("nvme7n1");
        let error = wait_for_paths(
            &[PathBuf::from("/dev/null"), missing.clone()],
            Duration::from_millis(300),
        )
        .unwrap_err();
        assert_eq!(
            error.to_string(),
            format!(
                "timed out after 0.3s waiting for /dev/null, {m} to exist as block devices: found none; missing /dev/null, {m}: check the device names (ls /sys/class/block), or raise --wait-timeout",
                m = missing.display()
            )
        );
    }
}
