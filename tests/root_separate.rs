//! Root tests of `--raid none` (one volume per disk, nodeadm's `Mount` strategy), run inside
//! the VM guest by `scripts/vm-test`: three disks become three mappings with their own keys,
//! filesystems and mounts under one base directory; status, rerun, close, escrow and
//! recover cover all three; a failure half-way takes down what was built.

use std::fs::File;
use std::io::Read as _;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::common::{
    assert_no_volume_left, assert_verified_mappings, contains, disks, dmsetup_table,
    escrow_decrypt, escrow_test_keys, recover_and_mount, tosskey, tosskey_env, Cleanup,
};

fn read_all(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

/// 1 MiB that says which volume it was written to, unlike anything on a fresh disk.
fn pattern(index: usize) -> Vec<u8> {
    format!("tosskey separate volume {index} plaintext marker; ")
        .into_bytes()
        .into_iter()
        .cycle()
        .take(1 << 20)
        .collect()
}

/// The `MAJ:MIN` of block device `path`.
fn dev_of(path: &Path) -> String {
    let rdev = std::fs::metadata(path).unwrap().rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

/// Fails unless `dir` is the root of a mount of mapping `name` (its device, not the parent
/// directory's).
#[track_caller]
fn assert_mounted(dir: &Path, name: &str) {
    let mapping = std::fs::metadata(format!("/dev/mapper/{name}"))
        .unwrap()
        .rdev();
    assert_eq!(
        std::fs::metadata(dir).unwrap().dev(),
        mapping,
        "{} is not a mount of {name}",
        dir.display()
    );
}

/// Fails if any mapping of volume `name` (`name` itself or `name-<i>`) exists.
#[track_caller]
fn assert_no_mapping_of(name: &str) {
    for entry in std::fs::read_dir("/dev/mapper").unwrap() {
        let entry = entry.unwrap().file_name();
        let entry = entry.to_string_lossy();
        assert!(
            entry != name && !entry.starts_with(&format!("{name}-")),
            "mapping {entry} left behind"
        );
    }
}

/// `provision MEMBERS --raid none --name NAME --mount BASE`.
fn provision_args<'a>(members: &'a [PathBuf], name: &'a str, base: &'a Path) -> Vec<&'a str> {
    let mut args = vec!["provision"];
    args.extend(members.iter().map(|m| m.to_str().unwrap()));
    args.extend([
        "--raid",
        "none",
        "--name",
        name,
        "--mount",
        base.to_str().unwrap(),
    ]);
    args
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn raid_none_gives_each_of_three_disks_its_own_key_filesystem_and_mount() {
    const NAME: &str = "t-sep";
    let members = disks(3);
    let _cleanup = Cleanup {
        name: NAME,
        disks: members.clone(),
    };
    let (public, private) = escrow_test_keys();
    let escrow = format!("/tmp/{NAME}.escrow");
    let base = PathBuf::from(format!("/mnt/{NAME}"));
    let _ = std::fs::remove_file(&escrow);
    let mut args = provision_args(&members, NAME, &base);
    args.extend([
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        &escrow,
    ]);
    let report = tosskey(&[&args[..], &["--json"]].concat()).ok().json();
    assert_verified_mappings(&report, 3);

    // Each disk has its own mapping directly over it, mounted at BASE/<index>.
    for (i, member) in members.iter().enumerate() {
        let name = format!("{NAME}-{i}");
        let table = dmsetup_table(&name).join("\n");
        assert!(
            table.contains(&format!(" {} ", dev_of(member))),
            "{name} is not over {}: {table}",
            member.display()
        );
        assert_mounted(&base.join(i.to_string()), &name);
        std::fs::write(base.join(format!("{i}/data.bin")), pattern(i)).unwrap();
    }
    nix::unistd::sync();

    let status = tosskey(&["status", NAME]).ok().stdout;
    for i in 0..3 {
        assert!(
            status.contains(&format!("{NAME}-{i} at {}/{i}", base.display())),
            "{status}"
        );
        assert!(
            status.contains(&format!("mounted at {}/{i} (ext4", base.display())),
            "{status}"
        );
    }
    assert!(status.contains("one volume per disk"), "{status}");

    // A rerun in the same boot changes nothing.
    let rerun = tosskey(&args).ok().stdout;
    assert!(rerun.contains("nothing changed"), "{rerun}");

    tosskey(&["close", "--all", "--unmount"]).ok();
    assert_no_volume_left();
    assert_no_mapping_of(NAME);
    for i in 0..3 {
        let dir = base.join(i.to_string());
        assert!(
            !dir.join("data.bin").exists(),
            "{} still mounted",
            dir.display()
        );
    }

    // Ciphertext only: no volume's plaintext on any disk.
    for member in &members {
        let raw = read_all(member);
        for i in 0..3 {
            assert!(
                !contains(&raw, &pattern(i)[..4096]),
                "volume {i}'s plaintext on {}",
                member.display()
            );
        }
    }

    // One escrow file records three mappings, each with its own key: the key files differ.
    let key_out = format!("/tmp/{NAME}.key");
    let key_files: Vec<PathBuf> = (0..3)
        .map(|i| PathBuf::from(format!("{key_out}.{i}")))
        .collect();
    for file in &key_files {
        let _ = std::fs::remove_file(file);
    }
    escrow_decrypt(&escrow, &private, &key_out).ok();
    let keys: Vec<Vec<u8>> = key_files
        .iter()
        .map(|f| std::fs::read(f).unwrap())
        .collect();
    for file in &key_files {
        std::fs::remove_file(file).unwrap();
    }
    assert_eq!(keys.len(), 3);
    assert!(keys.iter().all(|k| k.len() == 64));
    assert!(
        keys[0] != keys[1] && keys[1] != keys[2] && keys[0] != keys[2],
        "two volumes share a key"
    );

    // recover reopens and mounts all three, and every file reads back.
    recover_and_mount(&escrow, &private, base.to_str().unwrap()).ok();
    for i in 0..3 {
        assert_mounted(&base.join(i.to_string()), &format!("{NAME}-{i}"));
        assert!(
            std::fs::read(base.join(format!("{i}/data.bin"))).unwrap() == pattern(i),
            "volume {i} did not read back"
        );
    }
    tosskey(&["close", NAME, "--unmount"]).ok();
    assert_no_volume_left();
    std::fs::remove_file(&escrow).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn raid_none_failing_at_the_second_disk_takes_down_the_first() {
    const NAME: &str = "t-sepf";
    let members = disks(3);
    let _cleanup = Cleanup {
        name: NAME,
        disks: members.clone(),
    };
    let base = PathBuf::from(format!("/mnt/{NAME}"));
    std::fs::create_dir_all(&base).unwrap();
    // A file where disk 1's mount point goes: its mount fails after disk 0 is mounted.
    let blocker = base.join("1");
    let _ = std::fs::remove_dir(&blocker);
    std::fs::write(&blocker, b"not a directory").unwrap();
    let args = provision_args(&members, NAME, &base);
    let failed = tosskey(&args);
    assert_ne!(failed.code, 0, "{}", failed.stdout);
    assert!(
        failed.stderr.contains(&blocker.display().to_string()),
        "{}",
        failed.stderr
    );
    assert!(failed.stderr.contains("rolled back"), "{}", failed.stderr);
    assert_no_volume_left();
    assert_no_mapping_of(NAME);
    let zero = base.join("0");
    assert!(
        !zero.exists()
            || std::fs::metadata(&zero).unwrap().dev() == std::fs::metadata(&base).unwrap().dev(),
        "disk 0's mount was left"
    );
    std::fs::remove_file(&blocker).unwrap();

    // Killed right after the first mount: close --all --unmount takes down all it built.
    let crashed = tosskey_env(&args, &[("TOSSKEY_TEST_CRASH_AFTER", "mount")]);
    assert_ne!(crashed.code, 0, "{}", crashed.stderr);
    assert_mounted(&zero, &format!("{NAME}-0"));
    tosskey(&["close", "--all", "--unmount"]).ok();
    assert_no_volume_left();
    assert_no_mapping_of(NAME);
    assert_eq!(
        std::fs::metadata(&zero).unwrap().dev(),
        std::fs::metadata(&base).unwrap().dev(),
        "disk 0's mount was left"
    );

    // And then it builds.
    tosskey(&args).ok();
    for i in 0..3 {
        assert_mounted(&base.join(i.to_string()), &format!("{NAME}-{i}"));
    }
    tosskey(&["close", NAME, "--unmount"]).ok();
    assert_no_volume_left();
}
