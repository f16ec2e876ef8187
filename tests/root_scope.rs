//! Root tests (VM guest) of key scope in the binary.
//!
//! - 8 sparse disks of 7.5 TiB (`scripts/vm-test -p tosskey --disks 8 --disk-size 7680G
//!   --test-timeout 900 -- large_disks_8x7680g_key_scope`): raid0 shared provisions 60
//!   segments with 60 keys, every key verified, formats and mounts 60 TiB; `dmsetup table` shows
//!   60 crypt targets with 60 distinct logon keys; close → recover with the escrow file mounts
//!   it again with the files and the data in the middle and last segments intact.
//! - The cost of many keys, on the same disks, run by hand (`... --test-timeout 3600 --
//!   large_disks_8x7680g_bench`): per-step times of `--key-scope 1TiB` against `none`, to a
//!   mounted volume and with `--mkfs none`, alternating; and the kernel's bare cost of loading
//!   60 crypt targets against 1.
//! - 24 sparse disks of 14 TB, d3en.12xlarge's 336 TB (`--disks 24 --disk-size 14000000000000
//!   -- large_disks_24x14tb`): 306 keys, provisions and mounts.
//! - Shred of a volume with several segments, on the default small disks.

use std::collections::BTreeSet;
use std::fs::OpenOptions;
use std::os::unix::fs::FileExt as _;
use std::path::Path;

use crate::common::{
    assert_direct_read_fails_with_eio, assert_error_targets, assert_verified_mappings, contains,
    dmsetup_table, escrow_test_keys, tosskey, tosskey_env, Cleanup,
};
use tosskey_testkit::virtio_disks;

const TIB: u64 = 1 << 40;
const GIB: u64 = 1 << 30;

/// Closes (and unmounts) the volume even when an assertion fails half-way.
struct Volume(&'static str);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "--unmount", self.0]);
    }
}

/// The first `count` virtio disks, each at least `min_bytes`.
fn big_disks(count: usize, min_bytes: u64, how: &str) -> Vec<String> {
    let disks = virtio_disks().expect("list virtio disks");
    assert!(
        disks.len() >= count && disks.iter().take(count).all(|d| d.size_bytes >= min_bytes),
        "run with scripts/vm-test {how}"
    );
    disks
        .into_iter()
        .take(count)
        .map(|d| d.path.display().to_string())
        .collect()
}

fn eight_big_disks() -> Vec<String> {
    big_disks(8, 15 * TIB / 2, "--disks 8 --disk-size 7680G")
}

/// `tosskey provision --name NAME --json MEMBERS EXTRA...`, which must succeed.
fn provision(name: &str, members: &[String], extra: &[&str]) -> serde_json::Value {
    let mut args = vec!["provision", "--name", name, "--json"];
    args.extend(members.iter().map(String::as_str));
    args.extend(extra);
    tosskey(&args).ok().json()
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

/// The table of mapping `name` has `count` crypt targets of at most `largest` sectors, each
/// with its own logon key, their offsets and IV offsets continuing the mapping's numbering.
fn assert_crypt_targets_with_distinct_logon_keys(name: &str, count: usize, largest: u64) {
    let lines = dmsetup_table(name);
    assert_eq!(lines.len(), count, "{lines:#?}");
    let mut keys = BTreeSet::new();
    let mut next = 0u64;
    for line in &lines {
        // start length crypt cipher key iv_offset device offset ...
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[2], "crypt", "{line}");
        let start: u64 = words[0].parse().unwrap();
        let length: u64 = words[1].parse().unwrap();
        assert_eq!(start, next, "{line}");
        assert!(length <= largest, "{line}");
        assert_eq!(words[5], words[0], "iv_offset continues: {line}");
        assert_eq!(words[7], words[0], "offset continues: {line}");
        assert!(
            words[4].starts_with(&format!(":64:logon:tosskey:{name}#")),
            "{line}"
        );
        keys.insert(words[4].to_owned());
        next = start + length;
    }
    assert_eq!(keys.len(), count, "{lines:#?}");
}

/// The 60-key volume over 60 TiB as users make it: formatted, mounted, escrowed; then closed
/// and recovered from the escrow file with its files intact.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn large_disks_8x7680g_key_scope_sixty_keys_mount_close_recover() {
    const NAME: &str = "t-scope";
    let mount = Path::new("/mnt/t-scope");
    let members = eight_big_disks();
    let (public, private) = escrow_test_keys();
    let escrow = std::env::temp_dir().join("t-scope.escrow.json");
    let _ = std::fs::remove_file(&escrow);
    let _volume = Volume(NAME);

    let report = provision(
        NAME,
        &members,
        &[
            "--mount",
            mount.to_str().unwrap(),
            "--escrow-key",
            public.to_str().unwrap(),
            "--escrow-file",
            escrow.to_str().unwrap(),
        ],
    );
    let scope = &report["plan"]["key_scope"];
    assert_eq!(scope["keys"], 60);
    assert_eq!(scope["largest_key_bytes"], TIB);
    assert_eq!(scope["limit_bytes"], TIB);
    assert_eq!(report["filesystem"]["kind"], "ext4");
    assert_eq!(report["chain"]["mount"], mount.to_str().unwrap());
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
    assert_crypt_targets_with_distinct_logon_keys(NAME, 60, TIB / 512);

    // Files through the filesystem, and raw blocks in the middle and the last segment: the
    // middle of a 32 GiB flex group is free data space, which the filesystem never touches.
    let small = b"sixty keys, one volume\n".to_vec();
    let mut big = vec![0u8; 4 << 20];
    getrandom::fill(&mut big).unwrap();
    std::fs::write(mount.join("small.txt"), &small).unwrap();
    std::fs::create_dir(mount.join("dir")).unwrap();
    std::fs::write(mount.join("dir/random.bin"), &big).unwrap();
    let volume = format!("/dev/mapper/{NAME}");
    let places = [30 * TIB + 16 * GIB, 60 * TIB - 16 * GIB];
    {
        let dev = OpenOptions::new().write(true).open(&volume).unwrap();
        for at in places {
            dev.write_all_at(&marker(at), at).unwrap();
        }
        dev.sync_all().unwrap();
    }

    tosskey(&["close", "--unmount", NAME]).ok();
    assert!(!Path::new(&volume).exists());
    let recovered = tosskey(&[
        "recover",
        "--escrow-file",
        escrow.to_str().unwrap(),
        "--private-key",
        private.to_str().unwrap(),
        "--mount",
        mount.to_str().unwrap(),
    ])
    .ok();
    assert!(
        recovered.stdout.contains("mounted at /mnt/t-scope"),
        "{}",
        recovered.stdout
    );
    assert_eq!(std::fs::read(mount.join("small.txt")).unwrap(), small);
    assert!(std::fs::read(mount.join("dir/random.bin")).unwrap() == big);
    let dev = OpenOptions::new().read(true).open(&volume).unwrap();
    for at in places {
        let mut back = vec![0u8; 4096];
        dev.read_exact_at(&mut back, at).unwrap();
        assert!(back == marker(at), "byte {at} did not survive recovery");
    }
    // The recovered table is the provisioned one: 60 targets, 60 distinct logon keys.
    assert_crypt_targets_with_distinct_logon_keys(NAME, 60, TIB / 512);
    let status = tosskey(&["status", NAME]).ok().stdout;
    assert!(status.contains("60 512-bit key(s)"), "{status}");
    assert!(
        status.contains(&format!("at most {TIB} bytes (1 TiB) under one key")),
        "{status}"
    );
}

/// One timed `tosskey provision` run: wall time and the time of each step, from the
/// `TOSSKEY_TEST_STEP_TIMES` lines (each step's end on `CLOCK_MONOTONIC`).
struct TimedRun {
    total: f64,
    steps: Vec<(String, f64)>,
    /// Where verification spent its time (`tosskey: verify of N sectors: ...`).
    verify_detail: String,
}

fn monotonic() -> f64 {
    let now = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC).unwrap();
    now.tv_sec() as f64 + now.tv_nsec() as f64 / 1e9
}

fn timed_provision(name: &str, members: &[String], extra: &[&str]) -> TimedRun {
    let mut args = vec!["provision", "--name", name];
    args.extend(members.iter().map(String::as_str));
    args.extend(extra);
    let started = monotonic();
    let run = tosskey_env(&args, &[("TOSSKEY_TEST_STEP_TIMES", "1")]).ok();
    let ended = monotonic();
    let mut steps = Vec::new();
    let mut last = started;
    let verify_detail = run
        .stderr
        .lines()
        .find(|line| line.starts_with("tosskey: verify of"))
        .map(|line| line.trim_start_matches("tosskey: ").to_owned())
        .unwrap_or_default();
    for line in run.stderr.lines() {
        let Some(rest) = line.strip_prefix("tosskey: step ") else {
            continue;
        };
        let (step, at) = rest.split_once(" done at ").unwrap();
        let at: f64 = at.parse().unwrap();
        steps.push((step.to_owned(), at - last));
        last = at;
    }
    steps.push(("exit".to_owned(), ended - last));
    TimedRun {
        total: ended - started,
        steps,
        verify_detail,
    }
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}

/// The kernel's own cost of a table of `targets` crypt targets over `disk` (keyring keys, as
/// provision loads them): DEV_CREATE, add keys, TABLE_LOAD, invalidate keys, resume, remove.
fn bare_crypt_table(disk: &tosskey_testkit::VirtioDisk, targets: usize) -> Vec<(String, f64)> {
    use tosskey_crypto::key::{KeyArena, KeySize};
    use tosskey_dm::{
        Bytes, CryptOptions, CryptTable, CryptTarget, DevId, DmControl, DmName, DmUuid, KeyRef,
        KeyringKey, Sectors,
    };
    let dm = DmControl::open().unwrap();
    let length = disk.size_bytes / 4096 * 8;
    let whole = CryptTarget::new(
        "twofish-xts-plain64",
        DevId::new(disk.dev.major, disk.dev.minor),
        Sectors(length),
    )
    .unwrap()
    .with_options(CryptOptions {
        sector_size: 4096,
        no_read_workqueue: true,
        no_write_workqueue: true,
        ..CryptOptions::default()
    });
    let scope = (length * 512)
        .div_ceil(targets as u64)
        .next_multiple_of(4096);
    let table = CryptTable::split(&whole, Some(Bytes(scope)), Sectors(0)).unwrap();
    assert_eq!(table.len(), targets);
    let keys = KeyArena::generate(KeySize::Bits512, targets).unwrap();
    let name = DmName::new("t-bare").unwrap();
    let uuid = DmUuid::new("TOSSKEY-TEST-t-bare").unwrap();
    let descriptions: Vec<String> = (0..targets)
        .map(|i| format!("tosskey:t-bare#{i}"))
        .collect();
    let refs: Vec<KeyRef> = descriptions
        .iter()
        .map(|d| KeyRef::Keyring {
            bytes: 64,
            description: d.clone(),
        })
        .collect();
    let lines = table.lines(&refs).unwrap();
    let mut times = Vec::new();
    let mut at = monotonic();
    let mut lap = |what: &str, times: &mut Vec<(String, f64)>| {
        let now = monotonic();
        times.push((what.to_owned(), now - at));
        at = now;
    };
    dm.create(&name, &uuid).unwrap();
    lap("create", &mut times);
    let added: Vec<KeyringKey> = descriptions
        .iter()
        .zip(keys.iter())
        .map(|(d, k)| KeyringKey::add_logon(d, k).unwrap())
        .collect();
    lap("add keys", &mut times);
    dm.load_table(&name, &lines).unwrap();
    lap("TABLE_LOAD", &mut times);
    for key in added {
        key.invalidate().unwrap();
    }
    lap("invalidate keys", &mut times);
    dm.resume(&name).unwrap();
    lap("resume", &mut times);
    dm.remove(&name).unwrap();
    lap("remove", &mut times);
    times
}

/// Where the time of many keys goes: per-step times of `provision --key-scope 1TiB` (60 keys)
/// against `none` (1 key), to a mounted volume (the default mkfs, what users run) and with
/// `--mkfs none`, alternating in each round; and the kernel's bare cost of 60 crypt targets
/// against 1. Only prints: the numbers are quoted in README.md.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn large_disks_8x7680g_bench_key_scope_cost() {
    const ROUNDS: usize = 3;
    const NAME: &str = "t-cost";
    let members = eight_big_disks();

    let disk = virtio_disks().unwrap().remove(0);
    let mut bare: Vec<(usize, Vec<(String, f64)>)> = Vec::new();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 { [1, 60] } else { [60, 1] };
        for targets in order {
            let times = bare_crypt_table(&disk, targets);
            to_console(&format!(
                "bare {targets} crypt target(s): {}",
                render_steps(&times)
            ));
            bare.push((targets, times));
        }
    }

    let mut runs: Vec<(&str, &str, TimedRun)> = Vec::new();
    for round in 0..ROUNDS {
        let order = if round % 2 == 0 {
            ["none", "1TiB"]
        } else {
            ["1TiB", "none"]
        };
        for scope in order {
            for mkfs in ["mount", "none"] {
                let _volume = Volume(NAME);
                let extra: &[&str] = if mkfs == "mount" {
                    &["--key-scope", scope, "--mount", "/mnt/t-cost"]
                } else {
                    &["--key-scope", scope, "--mkfs", "none"]
                };
                let run = timed_provision(NAME, &members, extra);
                to_console(&format!(
                    "round {round}, --key-scope {scope}, {}: {:.2} s: {}; {}",
                    if mkfs == "mount" {
                        "mkfs + mount"
                    } else {
                        "--mkfs none"
                    },
                    run.total,
                    render_steps(&run.steps),
                    run.verify_detail
                ));
                runs.push((scope, mkfs, run));
            }
        }
    }

    for targets in [1, 60] {
        let of: Vec<&Vec<(String, f64)>> = bare
            .iter()
            .filter(|(t, _)| *t == targets)
            .map(|(_, times)| times)
            .collect();
        to_console(&format!(
            "median of {ROUNDS}, bare {targets} crypt target(s): {}",
            render_steps(&median_steps(&of))
        ));
    }
    for mkfs in ["mount", "none"] {
        let mut totals = Vec::new();
        for scope in ["none", "1TiB"] {
            let of: Vec<&TimedRun> = runs
                .iter()
                .filter(|(s, m, _)| *s == scope && *m == mkfs)
                .map(|(_, _, run)| run)
                .collect();
            let mut total: Vec<f64> = of.iter().map(|r| r.total).collect();
            let steps: Vec<&Vec<(String, f64)>> = of.iter().map(|r| &r.steps).collect();
            let total = median(&mut total);
            // The steps whose work grows with the number of keys.
            let mut keyed: Vec<f64> = of
                .iter()
                .map(|r| {
                    r.steps
                        .iter()
                        .filter(|(step, _)| step == "crypt" || step == "verify")
                        .map(|(_, secs)| secs)
                        .sum()
                })
                .collect();
            to_console(&format!(
                "median of {ROUNDS}, --key-scope {scope}, {mkfs}: {total:.2} s, crypt + verify {:.3} s: {}",
                median(&mut keyed),
                render_steps(&median_steps(&steps))
            ));
            totals.push(total);
        }
        to_console(&format!(
            "{mkfs}: 1TiB / none = {:.3} (medians)",
            totals[1] / totals[0]
        ));
    }
}

fn render_steps(steps: &[(String, f64)]) -> String {
    steps
        .iter()
        .map(|(step, secs)| format!("{step} {secs:.3}"))
        .collect::<Vec<_>>()
        .join(", ")
}

/// Step by step median of runs that have the same steps.
fn median_steps(runs: &[&Vec<(String, f64)>]) -> Vec<(String, f64)> {
    runs[0]
        .iter()
        .enumerate()
        .map(|(index, (step, _))| {
            let mut values: Vec<f64> = runs.iter().map(|r| r[index].1).collect();
            (step.clone(), median(&mut values))
        })
        .collect()
}

/// d3en.12xlarge: 24 disks of 14 TB, 336 TB in raid0 under 1 TiB keys: 306 keys, a
/// `meta_bg` filesystem, mounted.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn large_disks_24x14tb_key_scope_provisions_and_mounts() {
    const NAME: &str = "t-scope24";
    let mount = Path::new("/mnt/t-scope24");
    let members = big_disks(
        24,
        14_000_000_000_000,
        "--disks 24 --disk-size 14000000000000",
    );
    let _volume = Volume(NAME);
    let started = std::time::Instant::now();
    let report = provision(NAME, &members, &["--mount", mount.to_str().unwrap()]);
    to_console(&format!(
        "provision 24 x 14 TB to a mounted volume: {:.1} s",
        started.elapsed().as_secs_f64()
    ));
    let scope = &report["plan"]["key_scope"];
    let volume_bytes = report["plan"]["volume_bytes"].as_u64().unwrap();
    let keys = volume_bytes.div_ceil(TIB);
    assert!(volume_bytes > 300 * TIB, "{volume_bytes}");
    assert_eq!(scope["keys"], keys);
    assert!(scope["largest_key_bytes"].as_u64().unwrap() <= TIB);
    assert_verified_mappings(&report, 1);
    assert_eq!(report["stack"]["crypt"][0]["keys"], keys);
    assert_crypt_targets_with_distinct_logon_keys(NAME, usize::try_from(keys).unwrap(), TIB / 512);
    let data = b"336 TB under 1 TiB keys\n";
    std::fs::write(mount.join("hello"), data).unwrap();
    let statfs = nix::sys::statvfs::statvfs(mount).unwrap();
    let fs_bytes = statfs.blocks() * statfs.fragment_size();
    assert!(fs_bytes > 290 * TIB, "{fs_bytes}");
    to_console(&format!(
        "24 x 14 TB: {keys} keys over {volume_bytes} bytes, filesystem of {fs_bytes} bytes mounted"
    ));
    tosskey(&["close", "--unmount", NAME]).ok();
}

/// `tosskey shred` of a volume with several segments wipes every segment's key: the output
/// counts them, and while a user holds the device open (so it cannot be removed) its table
/// read back has no crypt target and no key left, only `error` targets; once let go, the
/// stack is gone and the plaintext written before is nowhere on the disks.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn shred_wipes_every_segment_key() {
    const NAME: &str = "t-shred-scope";
    let disks = crate::common::disks(2);
    let _cleanup = Cleanup {
        name: NAME,
        disks: disks.clone(),
    };
    let members: Vec<String> = disks.iter().map(|d| d.display().to_string()).collect();
    let report = provision(NAME, &members, &["--mkfs", "none", "--key-scope", "64MiB"]);
    let keys = report["plan"]["key_scope"]["keys"].as_u64().unwrap();
    assert!(keys >= 4, "{keys} keys");
    let volume = format!("/dev/mapper/{NAME}");
    assert_crypt_targets_with_distinct_logon_keys(
        NAME,
        usize::try_from(keys).unwrap(),
        (64 << 20) / 512,
    );
    // One plaintext block in every segment.
    let segment_bytes = 64u64 << 20;
    let plaintext = |i: u64| {
        let mut block = format!("shred me: segment {i}\n").into_bytes();
        block.resize(4096, b'#');
        block
    };
    let holder = OpenOptions::new()
        .read(true)
        .write(true)
        .open(&volume)
        .unwrap();
    for i in 0..keys {
        holder
            .write_all_at(&plaintext(i), i * segment_bytes + 8192)
            .unwrap();
    }
    holder.sync_all().unwrap();

    let run = tosskey(&["shred", NAME]).ok();
    assert!(
        run.stdout
            .contains(&format!("keys wiped from {NAME} ({keys} keys)")),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("stay until their users let go"),
        "{}",
        run.stdout
    );
    // Held open: the mapping stays, with no key anywhere in its table, and the device
    // itself (past the page cache) answers with errors.
    assert_error_targets(NAME, usize::try_from(keys).unwrap());
    assert_direct_read_fails_with_eio(Path::new(&volume), 8192);
    drop(holder);

    tosskey(&["close", NAME]).ok();
    assert!(!Path::new(&volume).exists());
    for disk in &disks {
        let raw = std::fs::read(disk).unwrap();
        for i in 0..keys {
            assert!(
                !contains(&raw, &plaintext(i)[..24]),
                "segment {i}'s plaintext on {}",
                disk.display()
            );
        }
    }
}
