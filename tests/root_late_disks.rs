//! `provision --wait-for-disks` in the guest while a disk is hot-added through QEMU's
//! monitor (scripts/vm-test --hot-disk: the host adds a blank virtio disk with the serial
//! `tosskey-hot-0` a few seconds after the test asks for it on the console).

use std::fs;
use std::io::{Seek, SeekFrom, Write};
use std::path::PathBuf;
use std::time::{Duration, Instant};

use crate::common::{disks, tosskey, Cleanup};

/// The serial scripts/vm/run-qemu.py gives the hot-added disk.
const HOT_SERIAL: &str = "tosskey-hot-0";

/// Block devices whose virtio serial is `serial`.
fn with_serial(serial: &str) -> Vec<PathBuf> {
    let mut found = Vec::new();
    for entry in fs::read_dir("/sys/block").unwrap() {
        let entry = entry.unwrap();
        let value = fs::read_to_string(entry.path().join("serial")).unwrap_or_default();
        if value.trim() == serial {
            found.push(PathBuf::from("/dev").join(entry.file_name()));
        }
    }
    found
}

/// Asks the host (scripts/vm/run-qemu.py) to hot-add its disk: a protocol line on the
/// console, which the test runner's captured output would not reach.
fn ask_host_for_hot_disk() {
    let mut console = fs::OpenOptions::new()
        .write(true)
        .open("/dev/console")
        .unwrap();
    console.write_all(b"\n@@tosskey@@ HOT-DISK-ADD\n").unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test --hot-disk -- hot_disk_)"]
fn hot_disk_added_during_the_wait_joins_the_volume() {
    assert!(
        with_serial(HOT_SERIAL).is_empty(),
        "the hot disk is there before the test asked for it"
    );
    let cold = disks(4);
    ask_host_for_hot_disk();
    let started = Instant::now();
    let run = tosskey(&[
        "provision",
        "--discover",
        "any",
        "--discover-serial-prefix",
        "tosskey-",
        "--wait-for-disks",
        "5",
        "--wait-timeout",
        "120s",
        "--name",
        "t-hot",
        "--mkfs",
        "none",
        "--json",
    ]);
    let waited = started.elapsed();
    let hot = with_serial(HOT_SERIAL);
    let _cleanup = Cleanup {
        name: "t-hot",
        disks: cold.iter().chain(&hot).cloned().collect(),
    };
    let run = run.ok();
    assert_eq!(
        hot.len(),
        1,
        "no disk with serial {HOT_SERIAL} when provision returned after {waited:?}: it did not wait for the host to add it"
    );
    // The host adds the disk seconds after the request: a run that did not wait would have
    // found 4 disks and refused --wait-for-disks 5 no sooner than the timeout.
    assert!(
        waited >= Duration::from_secs(1),
        "provision did not wait ({waited:?})"
    );
    let members: Vec<PathBuf> = run.json()["chain"]["members"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| PathBuf::from(m.as_str().unwrap()))
        .collect();
    let mut expected: Vec<PathBuf> = cold.iter().chain(&hot).cloned().collect();
    expected.sort();
    let mut members_sorted = members.clone();
    members_sorted.sort();
    assert_eq!(
        members_sorted, expected,
        "the volume does not span all 5 disks"
    );
    // The kernel's side: the volume holds more than four of the disks could.
    let size_of = |path: &PathBuf| {
        let mut file = fs::File::open(path).unwrap();
        file.seek(SeekFrom::End(0)).unwrap()
    };
    let volume = size_of(&PathBuf::from("/dev/mapper/t-hot"));
    let four: u64 = cold.iter().map(size_of).sum();
    assert!(
        volume > four,
        "the volume ({volume} bytes) is not larger than four disks ({four})"
    );
}
