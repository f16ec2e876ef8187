//! Root tests (VM guest) of key scope in the binary, on 8 sparse disks of 7.5 TiB
//! (`scripts/vm-test -p tosskey --disks 8 --disk-size 7680G -- large_disks_`): raid0 shared
//! provisions 60 segments with 60 keys, every key verified, `dmsetup table` shows 60 crypt
//! targets with 60 distinct logon keys, and close → recover with the escrow file brings back
//! data written in the first, a middle and the last segment. The same run times provisioning
//! with `--key-scope 1TiB` against `none` (mkfs none: our ext4 formatter over 60 TiB under TCG
//! would dominate both and hide the key cost).

mod common;

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::process::Command;
use std::time::Instant;

use common::{escrow_test_keys, tosskey};
use tosskey_testkit::virtio_disks;

const TIB: u64 = 1 << 40;
const NAME: &str = "t-scope";

/// Closes the volume even when an assertion fails half-way.
struct Volume;

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tosskey(&["close", NAME]);
    }
}

fn eight_big_disks() -> Vec<String> {
    let disks = virtio_disks().expect("list virtio disks");
    assert!(
        disks.len() >= 8 && disks.iter().take(8).all(|d| d.size_bytes >= 15 * TIB / 2),
        "run with scripts/vm-test --disks 8 --disk-size 7680G"
    );
    disks
        .into_iter()
        .take(8)
        .map(|d| d.path.display().to_string())
        .collect()
}

fn provision(members: &[String], extra: &[&str]) -> (serde_json::Value, f64) {
    let mut args = vec!["provision", "--name", NAME, "--mkfs", "none", "--json"];
    args.extend(members.iter().map(String::as_str));
    args.extend(extra);
    let started = Instant::now();
    let run = tosskey(&args).ok();
    (run.json(), started.elapsed().as_secs_f64())
}

/// Measurements go to the guest console, which scripts/vm-test echoes (a passing test's
/// own output is not shown).
fn to_console(line: &str) {
    use std::io::Write as _;
    eprintln!("{line}");
    if let Ok(mut console) = OpenOptions::new().write(true).open("/dev/console") {
        let _ = writeln!(console, "root_scope: {line}");
    }
}

/// A recognisable 4 KiB block for byte offset `at` of the volume.
fn marker(at: u64) -> Vec<u8> {
    let mut block = format!("tosskey key scope marker at {at}\n").into_bytes();
    block.resize(4096, b'.');
    block
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn large_disks_key_scope_sixty_keys_over_sixty_tib() {
    let members = eight_big_disks();
    let (public, private) = escrow_test_keys();

    // Timing, alternating so that load on the host hits both alike: one key against 60.
    let (mut none_secs, mut scope_secs) = (Vec::new(), Vec::new());
    for _ in 0..2 {
        for (scope, times) in [("none", &mut none_secs), ("1TiB", &mut scope_secs)] {
            let _volume = Volume;
            let (report, secs) = provision(&members, &["--key-scope", scope]);
            let keys = if scope == "none" { 1 } else { 60 };
            assert_eq!(report["plan"]["key_scope"]["keys"], keys);
            times.push(secs);
        }
    }
    let (none_total, scope_total): (f64, f64) = (none_secs.iter().sum(), scope_secs.iter().sum());
    to_console(&format!(
        "provision 8 x 7.5 TiB raid0 shared, mkfs none, 2 runs each: --key-scope none {none_secs:.2?} s, 1TiB (60 keys) {scope_secs:.2?} s, ratio of totals {:.3}",
        scope_total / none_total
    ));

    let escrow = std::env::temp_dir().join("t-scope.escrow.json");
    let _ = std::fs::remove_file(&escrow);
    let _volume = Volume;
    let (report, escrowed_secs) = provision(
        &members,
        &[
            "--escrow-key",
            public.to_str().unwrap(),
            "--escrow-file",
            escrow.to_str().unwrap(),
        ],
    );
    to_console(&format!(
        "provision with escrow of 60 keys: {escrowed_secs:.2} s"
    ));
    assert_eq!(report["plan"]["key_scope"]["keys"], 60);
    assert_eq!(report["plan"]["key_scope"]["largest_key_bytes"], TIB);
    let crypt = &report["stack"]["crypt"][0];
    assert_eq!(crypt["keys"], 60);
    let checks = crypt["verification"]["checks"].as_array().unwrap();
    assert!(checks.iter().all(|c| c["matched"] == true));
    // Every segment had its first and last sector checked.
    for segment in 0..60u64 {
        for at in [segment * TIB, (segment + 1) * TIB - 4096] {
            assert!(
                checks.iter().any(|c| c["offset"] == at),
                "segment {segment}: byte {at} not verified"
            );
        }
    }

    // dmsetup, not our own parser, as the witness.
    let table = Command::new("dmsetup")
        .args(["table", NAME])
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .expect("dmsetup in the guest (scripts/vm-test carries it)");
    assert!(table.status.success());
    let table = String::from_utf8(table.stdout).unwrap();
    let lines: Vec<&str> = table.lines().collect();
    assert_eq!(lines.len(), 60, "{table}");
    let keys: BTreeSet<&str> = lines
        .iter()
        .map(|l| {
            let words: Vec<&str> = l.split_whitespace().collect();
            assert_eq!(words[2], "crypt", "{l}");
            words[4]
        })
        .collect();
    assert_eq!(keys.len(), 60, "{table}");
    assert!(keys
        .iter()
        .all(|k| k.starts_with(":64:logon:tosskey:t-scope#")));

    // Data in the first, a middle and the last segment survives close → recover.
    let volume = format!("/dev/mapper/{NAME}");
    let places = [0, 30 * TIB + 4096, 60 * TIB - 4096];
    {
        let dev = OpenOptions::new().write(true).open(&volume).unwrap();
        for at in places {
            dev.write_all_at(&marker(at), at).unwrap();
        }
        dev.sync_all().unwrap();
    }
    tosskey(&["close", NAME]).ok();
    tosskey(&[
        "recover",
        "--escrow-file",
        escrow.to_str().unwrap(),
        "--private-key",
        private.to_str().unwrap(),
    ])
    .ok();
    let dev = OpenOptions::new().read(true).open(&volume).unwrap();
    for at in places {
        let mut back = vec![0u8; 4096];
        dev.read_exact_at(&mut back, at).unwrap();
        assert!(back == marker(at), "byte {at} did not survive recovery");
    }
    let status = tosskey(&["status", NAME]).ok().stdout;
    assert!(status.contains("60 512-bit key(s)"), "{status}");
    assert!(
        status.contains(&format!("at most {TIB} bytes under one key")),
        "{status}"
    );
}
