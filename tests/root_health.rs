//! Root test (VM guest): a raid1 member fails while the volume is mounted. The data written
//! before and after stays readable, `status` names the member and says "degraded",
//! `status --json` and `status --prometheus` carry it, and `status --check` exits 6 (0
//! while healthy), as the README's exit-code table says.

use std::path::{Path, PathBuf};

use crate::common::{disks, tosskey, Cleanup};
use sha2::{Digest, Sha256};

const NAME: &str = "t-health";
const MOUNT: &str = "/mnt/t-health";

/// `len` bytes of a SHA-256 chain from `seed`, written to `path`; returns their hash.
fn write_file(path: &Path, seed: u8, len: usize) -> [u8; 32] {
    let mut block: [u8; 32] = Sha256::digest([seed]).into();
    let mut data = Vec::with_capacity(len);
    while data.len() < len {
        block = Sha256::digest(block).into();
        data.extend_from_slice(&block);
    }
    data.truncate(len);
    std::fs::write(path, &data).unwrap();
    Sha256::digest(&data).into()
}

/// Read every file back from the disks, not the page cache, and compare its hash.
fn check_files(files: &[(PathBuf, [u8; 32])]) {
    nix::unistd::sync();
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
    for (path, hash) in files {
        let data = std::fs::read(path).unwrap();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&data)),
            *hash,
            "{}",
            path.display()
        );
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn a_failed_raid1_member_is_named_degraded_and_checked_while_the_data_stays() {
    let members = disks(2);
    let _cleanup = Cleanup {
        name: NAME,
        disks: members.clone(),
    };
    let metrics_file = std::env::temp_dir().join("t-health.prom");
    let mut args = vec![
        "provision",
        "--name",
        NAME,
        "--level",
        "raid1",
        "--mount",
        MOUNT,
    ];
    args.extend(members.iter().map(|m| m.to_str().unwrap()));
    args.extend(["--force", "--metrics-file", metrics_file.to_str().unwrap()]);
    tosskey(&args).ok();
    let metrics = std::fs::read_to_string(&metrics_file).unwrap();
    for series in [
        format!("tosskey_volume_health{{volume=\"{NAME}\",state=\"healthy\"}} 1"),
        format!("tosskey_provision_exit_code{{volume=\"{NAME}\"}} 0"),
        format!(
            "tosskey_volume_mount_in_place{{volume=\"{NAME}\",kind=\"mount\",path=\"{MOUNT}\"}} 1"
        ),
    ] {
        assert!(metrics.contains(&series), "{series} in\n{metrics}");
    }
    let healthy = tosskey(&["status", "--check", NAME]);
    assert_eq!(healthy.code, 0, "{healthy:?}");
    assert_eq!(healthy.stdout, format!("{NAME}: healthy\n"));

    let mut files = vec![(
        Path::new(MOUNT).join("before.bin"),
        write_file(&Path::new(MOUNT).join("before.bin"), 1, 4 << 20),
    )];
    check_files(&files);

    // md's own failure path: the member is marked faulty as on an I/O error.
    let failed = &members[0];
    let kernel_name = failed.file_name().unwrap().to_str().unwrap();
    std::fs::write(
        format!("/sys/block/md_tk_{NAME}/md/dev-{kernel_name}/state"),
        "faulty",
    )
    .unwrap();

    let after = Path::new(MOUNT).join("after.bin");
    files.push((after.clone(), write_file(&after, 2, 4 << 20)));
    check_files(&files);

    let status = tosskey(&["status", NAME]).ok().stdout;
    assert!(status.contains("  health: degraded\n"), "{status}");
    assert!(
        status.contains(&format!(
            "member {} failed: md_tk_{NAME} marks it faulty",
            failed.display()
        )),
        "{status}"
    );
    let json = tosskey(&["status", "--json", NAME]).ok().json();
    assert_eq!(json[0]["health"]["state"], "degraded", "{json}");
    assert_eq!(
        json[0]["health"]["failed_members"][0]["device"],
        failed.to_str().unwrap(),
        "{json}"
    );
    let check = tosskey(&["status", "--check", NAME]);
    assert_eq!(check.code, 6, "{check:?}");
    assert!(
        check
            .stderr
            .contains(&format!("{NAME}: degraded: member {}", failed.display())),
        "{check:?}"
    );
    let prometheus = tosskey(&["status", "--prometheus", NAME]).ok().stdout;
    for series in [
        format!("tosskey_volume_health{{volume=\"{NAME}\",state=\"degraded\"}} 1"),
        format!("tosskey_volume_members_failed{{volume=\"{NAME}\"}} 1"),
        format!(
            "tosskey_volume_member_failed{{volume=\"{NAME}\",member=\"{}\"}} 1",
            failed.display()
        ),
    ] {
        assert!(prometheus.contains(&series), "{series} in\n{prometheus}");
    }
    // Still serving: the data is there and a rewrite lands on the remaining mirror.
    check_files(&files);
}

/// A device-mapper device named `name` passing `disk` through (`linear`), removed when
/// dropped: a member whose table a test can swap for an `error` target.
struct DmDisk {
    dm: tosskey_dm::DmControl,
    name: tosskey_dm::DmName,
    sectors: tosskey_dm::Sectors,
}

impl DmDisk {
    fn over(name: &str, disk: &tosskey_testkit::VirtioDisk) -> DmDisk {
        use tosskey_dm::{DmControl, DmName, DmUuid, Sectors};
        let dm = DmControl::open().unwrap();
        let name = DmName::new(name).unwrap();
        let _ = dm.remove(&name);
        let sectors = Sectors(disk.size_bytes / 512);
        dm.create(&name, &DmUuid::new(&format!("TEST-{name}")).unwrap())
            .unwrap();
        let member = DmDisk { dm, name, sectors };
        member.load("linear", format!("{} 0", disk.dev));
        member
    }

    fn load(&self, target: &str, params: String) {
        let line = tosskey_dm::TargetLine::new(
            tosskey_dm::Sectors(0),
            self.sectors,
            target,
            zeroize::Zeroizing::new(params),
            false,
        )
        .unwrap();
        self.dm.load_table(&self.name, &[line]).unwrap();
        self.dm.resume(&self.name).unwrap();
    }

    fn path(&self) -> PathBuf {
        tosskey_dm::DmControl::node_path(&self.name)
    }
}

impl Drop for DmDisk {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "t-health-stripe"]);
        let _ = self.dm.remove(&self.name);
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn a_failed_stripe_member_is_named_and_the_volume_failed_once_its_table_is_an_error_target() {
    let disks = tosskey_testkit::virtio_disks().unwrap();
    let members = [
        DmDisk::over("t-health-m0", &disks[0]),
        DmDisk::over("t-health-m1", &disks[1]),
    ];
    let paths: Vec<String> = members
        .iter()
        .map(|m| m.path().display().to_string())
        .collect();
    let mut args = vec![
        "provision",
        "--name",
        "t-health-stripe",
        "--raid",
        "dm-stripe",
        "--mkfs",
        "none",
        "--force",
    ];
    args.extend(paths.iter().map(String::as_str));
    tosskey(&args).ok();
    assert_eq!(tosskey(&["status", "--check", "t-health-stripe"]).code, 0);

    // The disk dies under the stripe: every I/O to it fails from now on.
    members[1].load("error", String::new());
    let check = tosskey(&["status", "--check", "t-health-stripe"]);
    assert_eq!(check.code, 7, "{check:?}");
    assert!(
        check.stderr.contains(&format!(
            "t-health-stripe: failed: member {} failed: its device-mapper table is an error target",
            paths[1]
        )),
        "{check:?}"
    );
    let prometheus = tosskey(&["status", "--prometheus", "t-health-stripe"])
        .ok()
        .stdout;
    assert!(
        prometheus.contains(&format!(
            "tosskey_volume_member_failed{{volume=\"t-health-stripe\",member=\"{}\"}} 1",
            paths[1]
        )),
        "{prometheus}"
    );
    assert!(
        prometheus.contains("tosskey_volume_health{volume=\"t-health-stripe\",state=\"failed\"} 1"),
        "{prometheus}"
    );
}
