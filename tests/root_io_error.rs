//! Root test (VM guest): provision on a member whose writes fail. The run must be rolled back
//! (exit 1, nothing left) and its one-line message must say so and point at the disk's I/O
//! error — not at a step of the undone run such as "format again".

use std::path::{Path, PathBuf};

use crate::common::tosskey;
use tosskey_dm::{DevId, DmControl, DmName, DmUuid, Sectors, TargetLine};
use tosskey_testkit::virtio_disks;
use zeroize::Zeroizing;

/// A device-mapper device over a virtio disk that serves its first and last `EDGE` bytes
/// (so the safety checks can read the disk's head and tail) and fails every I/O in
/// between with EIO (the `error` target, built into dm_mod). Removed when dropped.
struct FailingDisk {
    dm: DmControl,
    name: DmName,
}

const EDGE: u64 = 16 << 20;

impl FailingDisk {
    fn over(disk: DevId, size_bytes: u64) -> FailingDisk {
        let dm = DmControl::open().unwrap();
        let name = DmName::new("t-eio-disk").unwrap();
        let _ = dm.remove(&name);
        let edge = Sectors(EDGE / 512);
        let middle = Sectors(size_bytes / 512 - 2 * edge.0);
        let line = |start: Sectors, length: Sectors, target: &str, params: String| {
            TargetLine::new(start, length, target, Zeroizing::new(params), false).unwrap()
        };
        let table = [
            line(Sectors(0), edge, "linear", format!("{disk} 0")),
            line(edge, middle, "error", String::new()),
            line(
                Sectors(edge.0 + middle.0),
                edge,
                "linear",
                format!("{disk} {}", edge.0 + middle.0),
            ),
        ];
        dm.create(&name, &DmUuid::new("TEST-t-eio-disk").unwrap())
            .unwrap();
        dm.load_table(&name, &table).unwrap();
        dm.resume(&name).unwrap();
        FailingDisk { dm, name }
    }

    fn path(&self) -> PathBuf {
        DmControl::node_path(&self.name)
    }
}

impl Drop for FailingDisk {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "t-eio"]);
        let _ = self.dm.remove(&self.name);
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn user_facing_rollback_on_a_member_whose_writes_fail_says_so_and_leaves_nothing() {
    let disk = virtio_disks().unwrap().remove(2);
    let failing = FailingDisk::over(disk.dev, disk.size_bytes);
    let member = failing.path();
    let run = tosskey(&[
        "provision",
        member.to_str().unwrap(),
        "--name",
        "t-eio",
        "--mkfs",
        "ext4",
    ]);
    let line = run.stderr.trim_end();
    assert_eq!(run.code, 1, "exit code; stderr: {line}");
    assert_eq!(line.lines().count(), 1, "one line: {line}");
    for said in [
        "Input/output error (os error 5)",
        "the run was rolled back and nothing it built is left",
        "a disk under the volume returned I/O errors (EIO)",
    ] {
        assert_eq!(line.matches(said).count(), 1, "{said:?} once in: {line}");
    }
    assert!(!line.contains("format again"), "{line}");

    // Nothing is left: no mapping of the volume, no journal.
    let left: Vec<String> = failing
        .dm
        .list()
        .unwrap()
        .into_iter()
        .map(|(name, _)| name.to_string())
        .filter(|name| name.starts_with("t-eio") && name != "t-eio-disk")
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
    assert!(!Path::new("/run/tosskey/t-eio.json").exists());
    let status = tosskey(&["status"]);
    assert!(!status.stdout.contains("t-eio"), "{}", status.stdout);
}
