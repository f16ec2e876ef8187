//! Root tests of the multi-disk path, run inside the VM guest by `scripts/vm-test`:
//! md raid0/raid1/raid10/linear and dm-stripe (shared and per-disk) with escrow, mkfs and mount;
//! close; recover from escrow; nothing on the members but ciphertext; bad input.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::Read;
use std::path::{Path, PathBuf};

use crate::common::{
    assert_no_volume_left, assert_verified_mappings, check_files, contains, disks, escrow_decrypt,
    escrow_test_keys, other_private_key, recover_and_mount, tosskey, Cleanup,
};
use sha2::{Digest, Sha256};

fn strs(paths: &[PathBuf]) -> Vec<&str> {
    paths.iter().map(|p| p.to_str().unwrap()).collect()
}

/// Writes a tree of files (large, many small, a deep directory) and returns their hashes.
fn write_files(dir: &Path) -> BTreeMap<PathBuf, [u8; 32]> {
    let mut files = BTreeMap::new();
    let mut seed = [0u8; 32];
    let mut next = |len: usize| {
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            seed = Sha256::digest(seed).into();
            data.extend_from_slice(&seed);
        }
        data.truncate(len);
        data
    };
    let mut put = |path: PathBuf, data: Vec<u8>| {
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(&path, &data).unwrap();
        files.insert(path, Sha256::digest(&data).into());
    };
    put(dir.join("large.bin"), next(8 << 20));
    for i in 0..200 {
        put(dir.join(format!("small/{i}.txt")), next(100 + i));
    }
    put(dir.join("a/b/c/d/e/f/g/h/deep.txt"), next(5000));
    files
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

/// Provision with escrow, fill, close, recover, compare; check the members hold nothing
/// but ciphertext and no key material.
/// No md superblock where md puts one (v0.90 at the end, v1.x at 0, 4 KiB and the end), no
/// ext4 or LUKS magic, and no key bytes (raw or hex) anywhere on `member`.
fn assert_only_ciphertext(member: &Path, key_files: &[PathBuf]) {
    const MD_MAGIC: [u8; 4] = 0xa92b_4efc_u32.to_le_bytes();
    let raw = read_all(member);
    let size = raw.len();
    let v090 = (size & !0xffff) - 0x10000;
    let v10 = ((size / 512 - 16) & !7) * 512;
    for offset in [0, 4096, v10, v090] {
        assert_ne!(
            raw[offset..offset + 4],
            MD_MAGIC,
            "md superblock at {offset} on {}",
            member.display()
        );
    }
    assert!(
        !contains(&raw, b"LUKS\xba\xbe"),
        "LUKS magic on {}",
        member.display()
    );
    assert_ne!(
        raw[1080..1082],
        [0x53, 0xef],
        "ext4 magic on {}",
        member.display()
    );
    for key_file in key_files {
        let key = std::fs::read(key_file).unwrap();
        for half in key.chunks(key.len() / 2) {
            assert!(
                !contains(&raw, &half[..16]),
                "key bytes on {}",
                member.display()
            );
            let hex: String = half[..16].iter().map(|b| format!("{b:02x}")).collect();
            assert!(
                !contains(&raw, hex.as_bytes()),
                "hex key on {}",
                member.display()
            );
        }
    }
}

/// The first and last MiB of each member: enough to see that nothing wrote a header.
fn heads_and_tails(members: &[PathBuf]) -> Vec<Vec<u8>> {
    members
        .iter()
        .map(|m| {
            let raw = read_all(m);
            [&raw[..1 << 20], &raw[raw.len() - (1 << 20)..]].concat()
        })
        .collect()
}

/// Provision with escrow, fill, close, recover, compare. With `scan_members`, also read
/// every member whole to prove it holds only ciphertext and no key material.
fn round_trip(name: &'static str, members: &[PathBuf], layout_args: &[&str], scan_members: bool) {
    let _cleanup = Cleanup {
        name,
        disks: members.to_vec(),
    };
    let (public, private) = escrow_test_keys();
    let escrow = format!("/tmp/{name}.escrow");
    let mount = format!("/mnt/{name}");
    let _ = std::fs::remove_file(&escrow);
    let mut args = vec!["provision"];
    args.extend(strs(members));
    args.extend([
        "--name",
        name,
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        &escrow,
    ]);
    // largefile4 (one inode per 4 MiB) leaves a 256 MiB test volume 64 inodes: too few for
    // the 200 small files written below.
    args.extend(["--mount", &mount, "--json", "--inode-ratio", "65536"]);
    args.extend(layout_args);
    let report = tosskey(&args).ok().json();
    // The per-disk layout puts a crypt mapping on each member, the others one on top.
    let crypt_mappings = if layout_args.contains(&"per-disk") {
        members.len()
    } else {
        1
    };
    assert_verified_mappings(&report, crypt_mappings);
    let files = write_files(Path::new(&mount));
    let status = tosskey(&["status", name]).ok().stdout;
    assert!(status.contains(&format!("mounted at {mount}")), "{status}");
    tosskey(&["close", name, "--unmount"]).ok();
    assert_no_volume_left();

    // Only ciphertext on the members: no md superblock, no ext4 or LUKS magic, no key.
    let key_out = format!("/tmp/{name}.key");
    let _ = std::fs::remove_file(&key_out);
    let _ = std::fs::remove_file(format!("{key_out}.0"));
    let _ = std::fs::remove_file(format!("{key_out}.1"));
    escrow_decrypt(&escrow, &private, &key_out).ok();
    let key_files: Vec<PathBuf> = [
        key_out.clone(),
        format!("{key_out}.0"),
        format!("{key_out}.1"),
    ]
    .into_iter()
    .map(PathBuf::from)
    .filter(|p| p.exists())
    .collect();
    assert!(!key_files.is_empty());
    if scan_members {
        for member in members {
            assert_only_ciphertext(member, &key_files);
        }
    }
    for key_file in &key_files {
        std::fs::remove_file(key_file).unwrap();
    }

    // A wrong private key fails clearly and changes nothing.
    let before = heads_and_tails(members);
    let wrong = tosskey(&[
        "recover",
        "--escrow-file",
        &escrow,
        "--private-key",
        other_private_key().to_str().unwrap(),
        "--mount",
        &mount,
    ]);
    assert_eq!(wrong.code, 1, "{}", wrong.stderr);
    assert!(wrong.stderr.contains("private key"), "{}", wrong.stderr);
    assert!(tosskey(&["status"])
        .ok()
        .stdout
        .contains("no tosskey volumes"));
    assert!(heads_and_tails(members) == before, "a member changed");

    // The right key brings every file back.
    recover_and_mount(&escrow, &private, &mount).ok();
    check_files(&files, "after recovery");
    // The filesystem tosskey wrote and the kernel then used is consistent.
    nix::mount::umount(mount.as_str()).unwrap();
    let fsck = std::process::Command::new("/usr/sbin/e2fsck")
        .args(["-fn", &format!("/dev/mapper/{name}")])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    tosskey(&["close", name]).ok();
    std::fs::remove_file(&escrow).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_raid0_over_two_disks_round_trips() {
    round_trip("t-r0x2", &disks(2), &[], false);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_raid0_over_four_disks_round_trips() {
    round_trip("t-r0x4", &disks(4), &[], true);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_raid1_round_trips() {
    round_trip("t-r1", &disks(2), &["--level", "raid1"], false);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_raid10_round_trips() {
    round_trip("t-r10", &disks(4), &["--level", "raid10"], false);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_raid10_per_disk_round_trips() {
    round_trip(
        "t-r10pd",
        &disks(4),
        &["--level", "raid10", "--layout", "per-disk"],
        false,
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn md_linear_round_trips() {
    round_trip("t-lin", &disks(2), &["--level", "linear"], false);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn dm_stripe_over_four_disks_round_trips() {
    round_trip("t-ds", &disks(4), &["--raid", "dm-stripe"], false);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn per_disk_layout_round_trips() {
    round_trip("t-pd", &disks(2), &["--layout", "per-disk"], true);
    round_trip(
        "t-pds",
        &disks(2),
        &["--layout", "per-disk", "--raid", "dm-stripe"],
        false,
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn discovery_finds_the_test_disks_and_refuses_when_none_is_free() {
    let all = disks(4);
    let _cleanup = Cleanup {
        name: "t-disc",
        disks: all.clone(),
    };
    let run = tosskey(&[
        "provision",
        "--discover",
        "any",
        "--discover-serial-prefix",
        "tosskey-disk-",
        "--name",
        "t-disc",
        "--mkfs",
        "none",
        "--json",
    ])
    .ok();
    let members = run.json()["chain"]["members"].as_array().unwrap().len();
    assert_eq!(members, all.len());
    tosskey(&[
        "provision",
        "--discover",
        "any",
        "--discover-serial-prefix",
        "tosskey-disk-",
        "--name",
        "t-disc2",
    ])
    .fails_with(3, "no instance-store disks found");
    tosskey(&["provision", "--discover", "aws", "--name", "t-disc3"])
        .fails_with(3, "no instance-store disks found for aws");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn bad_member_lists_are_refused_and_nothing_is_written() {
    let two = disks(2);
    let before: Vec<_> = two.iter().map(|m| read_all(m)).collect();
    let a = two[0].to_str().unwrap();
    tosskey(&["provision", a, a, "--name", "t-bad"]).fails_with(3, "name each member once");
    let small = tosskey_testkit::LoopDevice::new(20 << 20).unwrap();
    tosskey(&[
        "provision",
        a,
        small.path().to_str().unwrap(),
        "--name",
        "t-bad",
    ])
    .fails_with(3, "member sizes differ too much");
    let after: Vec<_> = two.iter().map(|m| read_all(m)).collect();
    assert!(before == after, "a member changed");
    assert!(tosskey(&["status"])
        .ok()
        .stdout
        .contains("no tosskey volumes"));
}

// TOSSKEY_TEST_CRASH_AFTER exists only with the test-hooks feature (scripts/vm-test enables it).
#[cfg(feature = "test-hooks")]
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn crash_after_assembly_converges() {
    let two = disks(2);
    let _cleanup = Cleanup {
        name: "t-rcrash",
        disks: two.clone(),
    };
    let mut args = vec!["provision"];
    args.extend(strs(&two));
    args.extend(["--name", "t-rcrash", "--mkfs", "none"]);
    for step in ["assembly", "crypt"] {
        let crashed = crate::common::tosskey_env(&args, &[("TOSSKEY_TEST_CRASH_AFTER", step)]);
        assert_eq!(crashed.code, -1, "{step}: {}", crashed.stderr);
        assert!(tosskey(&["status"]).ok().stdout.contains("incomplete"));
        tosskey(&args).ok();
        tosskey(&["close", "t-rcrash"]).ok();
        assert!(
            !std::fs::read_to_string("/proc/mdstat")
                .unwrap()
                .contains("md_tk_"),
            "{step}"
        );
    }
    // close after a crash cleans up as well.
    let crashed = crate::common::tosskey_env(&args, &[("TOSSKEY_TEST_CRASH_AFTER", "verify")]);
    assert_eq!(crashed.code, -1);
    tosskey(&["close", "t-rcrash"]).ok();
    assert_no_volume_left();
}

/// `recover --read-only` of a volume whose ext4 journal needs recovery (the members as they
/// were while it was mounted, as after a crash): the mapping is a read-only disk, the
/// journal is not replayed (the superblock still says needs_recovery), and not one byte of
/// the member changes.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn read_only_recover_replays_no_journal_and_writes_nothing() {
    use std::io::Write as _;
    use std::os::unix::fs::MetadataExt as _;
    let name = "rorecover";
    let members = disks(1);
    let _cleanup = Cleanup {
        name,
        disks: members.clone(),
    };
    let (public, private) = escrow_test_keys();
    let escrow = format!("/tmp/{name}.escrow");
    let mount = format!("/mnt/{name}");
    let _ = std::fs::remove_file(&escrow);
    let mut args = vec!["provision"];
    args.extend(strs(&members));
    args.extend([
        "--name",
        name,
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        &escrow,
        "--mount",
        &mount,
        "--journal",
    ]);
    tosskey(&args).ok();
    std::fs::write(format!("{mount}/data"), vec![0x42u8; 1 << 20]).unwrap();
    nix::unistd::sync();
    // Mounted, journal in use: what a crash leaves on the member.
    let crashed = read_all(&members[0]);
    tosskey(&["close", name, "--unmount"]).ok();
    let mut member = std::fs::OpenOptions::new()
        .write(true)
        .open(&members[0])
        .unwrap();
    member.write_all(&crashed).unwrap();
    member.sync_all().unwrap();
    drop(member);
    drop(crashed);
    let before = Sha256::digest(read_all(&members[0]));

    tosskey(&[
        "recover",
        "--escrow-file",
        &escrow,
        "--private-key",
        private.to_str().unwrap(),
        "--mount",
        &mount,
        "--read-only",
    ])
    .ok();
    let node = format!("/dev/mapper/{name}");
    let rdev = std::fs::metadata(&node).unwrap().rdev();
    let ro = std::fs::read_to_string(format!(
        "/sys/dev/block/{}:{}/ro",
        libc::major(rdev),
        libc::minor(rdev)
    ))
    .unwrap();
    assert_eq!(ro.trim(), "1", "{node} is not a read-only disk");
    let header = std::process::Command::new("/usr/sbin/dumpe2fs")
        .args(["-h", &node])
        .output()
        .unwrap();
    let header = String::from_utf8_lossy(&header.stdout);
    let features = header
        .lines()
        .find(|l| l.starts_with("Filesystem features:"))
        .unwrap_or_default();
    assert!(
        features.contains("needs_recovery"),
        "the journal was replayed: {features}"
    );
    tosskey(&["close", name, "--unmount"]).ok();
    assert!(
        Sha256::digest(read_all(&members[0])) == before,
        "recover --read-only wrote to {}",
        members[0].display()
    );
    std::fs::remove_file(&escrow).unwrap();
}
