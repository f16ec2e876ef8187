//! The real binary on the host: help, usage errors, refusals that need no kernel support.

use crate::common::tosskey;

#[test]
fn help_lists_every_command_and_the_exit_codes() {
    let run = tosskey(&["--help"]).ok();
    for command in [
        "provision",
        "status",
        "close",
        "shred",
        "recover",
        "escrow",
        "mkfs",
    ] {
        assert!(
            run.stdout.contains(command),
            "--help lacks {command}: {}",
            run.stdout
        );
    }
    assert!(run.stdout.contains("Exit codes"), "{}", run.stdout);
}

#[test]
fn every_subcommand_has_help() {
    for command in ["provision", "status", "close", "shred", "recover", "mkfs"] {
        let run = tosskey(&[command, "--help"]).ok();
        assert!(
            run.stdout.starts_with(char::is_uppercase),
            "{command} --help: {}",
            run.stdout
        );
    }
    let run = tosskey(&["escrow", "decrypt", "--help"]).ok();
    assert!(run.stdout.contains("--key-out"), "{}", run.stdout);
    let run = tosskey(&["provision", "--help"]).ok();
    for flag in [
        "--cipher",
        "--key-size",
        "--sector-size",
        "--raid",
        "--layout",
        "--dry-run",
        "--json",
        "--escrow-key",
    ] {
        assert!(run.stdout.contains(flag), "provision --help lacks {flag}");
    }
    assert!(
        !run.stdout.contains("discover-serial-prefix"),
        "test-only flag is hidden"
    );
}

#[test]
fn unknown_cipher_is_a_usage_error_listing_the_supported_ones() {
    tosskey(&[
        "provision",
        "/dev/null",
        "--cipher",
        "serpent-cbc-essiv",
        "--dry-run",
    ])
    .fails_with(2, "supported: twofish-xts-plain64, aes-xts-plain64");
}

#[test]
fn missing_device_is_refused_with_the_fix() {
    tosskey(&["provision", "/dev/does-not-exist", "--dry-run"])
        .fails_with(3, "/dev/does-not-exist: no such device");
}

#[test]
fn a_regular_file_is_refused() {
    let file = tempfile::NamedTempFile::new().unwrap();
    file.as_file().set_len(64 << 20).unwrap();
    let path = file.path().to_str().unwrap();
    tosskey(&["provision", path, "--dry-run"]).fails_with(3, "not a block device");
}

#[test]
fn raid1_with_one_disk_is_a_usage_error() {
    tosskey(&["provision", "/dev/vdb", "--level", "raid1"])
        .fails_with(2, "raid1 needs at least 2 devices");
}

/// `mkfs` runs the member checks: a target that already holds a filesystem (or any other
/// strong signature) is refused with exit code 3 unless `--force` says to overwrite it.
#[test]
fn mkfs_refuses_a_filesystem_without_force() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fs.img");
    blank_image(&image);
    let path = image.to_str().unwrap();
    tosskey(&["mkfs", path]).ok();
    let before = std::fs::read(&image).unwrap();
    tosskey(&["mkfs", path, "--label", "again"]).fails_with(
        3,
        &format!(
            "{path} has an ext4 filesystem signature at offset 1024: pass --force to overwrite it, or pick another device"
        ),
    );
    assert!(
        std::fs::read(&image).unwrap() == before,
        "a refused mkfs wrote"
    );
    let run = tosskey(&["mkfs", path, "--label", "again", "--force"]).ok();
    assert!(run.stdout.contains("ext4, 16384 blocks"), "{}", run.stdout);
}

/// A sparse, blank 64 MiB image file at `path`.
fn blank_image(path: &std::path::Path) {
    std::fs::File::create(path)
        .unwrap()
        .set_len(64 << 20)
        .unwrap();
}

/// `mkfs --type xfs` writes an XFS that xfs_repair finds clean, and a second `mkfs` is
/// refused on its signature like on ext4's.
#[test]
fn mkfs_formats_an_image_file_as_xfs() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("xfs.img");
    std::fs::File::create(&image)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let path = image.to_str().unwrap();
    let run = tosskey(&["mkfs", path, "--type", "xfs", "--label", "data"]).ok();
    assert!(
        run.stdout
            .contains("xfs, 262144 blocks of 4096 bytes, 4 AGs of 65536 blocks"),
        "{}",
        run.stdout
    );
    tosskey_testkit::assert_xfs_repair_clean(&image);
    tosskey(&["mkfs", path, "--type", "xfs"]).fails_with(3, "has an XFS filesystem signature");
    tosskey(&["mkfs", path, "--type", "xfs", "--journal"]).fails_with(2, "ext4 options");
}

#[test]
fn mkfs_formats_an_image_file() {
    let dir = tempfile::tempdir().unwrap();
    let image = dir.path().join("fs.img");
    blank_image(&image);
    let run = tosskey(&["mkfs", image.to_str().unwrap(), "--label", "data"]).ok();
    assert!(run.stdout.contains("ext4, 16384 blocks"), "{}", run.stdout);
    let fsck = std::process::Command::new("e2fsck")
        .args(["-fn"])
        .arg(&image)
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
}

#[test]
fn the_test_hooks_exist_only_with_the_test_hooks_feature() {
    // Release builds enable no feature: their binary must not even carry the hooks' names.
    let binary = std::fs::read(env!("CARGO_BIN_EXE_tosskey")).unwrap();
    for hook in ["TOSSKEY_TEST_CRASH_AFTER", "TOSSKEY_TEST_STEP_TIMES"] {
        let has_hook = memchr::memmem::find(&binary, hook.as_bytes()).is_some();
        assert_eq!(has_hook, cfg!(feature = "test-hooks"), "{hook}");
    }
}

#[test]
fn bad_escrow_inputs_fail_the_run_before_any_device_is_looked_at() {
    let dir = tempfile::tempdir().unwrap();
    // The member is an image file, which the device checks refuse ("not a block device"):
    // the escrow inputs must be refused first, with and without --dry-run (which, unlike a
    // dry run, starts with device-mapper).
    let image = dir.path().join("disk.img");
    blank_image(&image);
    let garbage = dir.path().join("garbage.pem");
    std::fs::write(
        &garbage,
        "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    )
    .unwrap();
    // An earlier volume's escrow file is moved to .previous; a directory in its place is not.
    let existing = dir.path().join("escrow-exists");
    std::fs::create_dir(&existing).unwrap();
    let (public, _) = crate::common::escrow_test_keys();
    let public = public.to_str().unwrap();
    let missing_dir = dir.path().join("no-such-dir/escrow");
    let cases: [(&[&str], &str, bool); 4] = [
        (
            &["--escrow-key", "/nonexistent/escrow.pub.pem"],
            "cannot read the escrow public key /nonexistent/escrow.pub.pem",
            true,
        ),
        (
            &["--escrow-key", garbage.to_str().unwrap()],
            "garbage.pem is unusable",
            true,
        ),
        (
            &[
                "--escrow-key",
                public,
                "--escrow-file",
                missing_dir.to_str().unwrap(),
            ],
            "no-such-dir cannot be used",
            true,
        ),
        // Only a dry run reaches this check without root: a real run checks it once it knows
        // the volume is not already provisioned (which keeps its escrow file).
        (
            &[
                "--escrow-key",
                public,
                "--escrow-file",
                existing.to_str().unwrap(),
            ],
            "escrow-exists exists and is not a regular file",
            false,
        ),
    ];
    for (escrow_args, message, also_real_run) in cases {
        let mut args = vec!["provision", image.to_str().unwrap(), "--dry-run"];
        args.extend_from_slice(escrow_args);
        tosskey(&args).fails_with(3, message);
        if also_real_run {
            args.retain(|a| *a != "--dry-run");
            tosskey(&args).fails_with(3, message);
        }
    }
    // Same inputs made good: the image is what is refused now.
    tosskey(&[
        "provision",
        image.to_str().unwrap(),
        "--dry-run",
        "--escrow-key",
        public,
        "--escrow-file",
        dir.path().join("escrow-new").to_str().unwrap(),
    ])
    .fails_with(3, "not a block device");
}

/// What a new user meets first (issue 27, part 4): each mistake's one line says the fix.
#[test]
fn first_contact_mistakes_get_the_fix_in_one_line() {
    tosskey(&["provision"]).fails_with(2, "--discover aws|gcp|azure|any");
    tosskey(&["mkfs", "/nonexistent/tosskey.img"]).fails_with(
        3,
        "/nonexistent/tosskey.img: no such file or device; check the path",
    );
    // A bare kernel name: its /dev path (null is a device on every host).
    tosskey(&["provision", "null", "--dry-run"]).fails_with(3, "give the device's path: /dev/null");
    // A volume by its /dev/mapper path is the volume's name.
    tosskey(&["close", "/dev/mapper/t-nothing"]).fails_with(3, "no tosskey volume named t-nothing");
    let run = tosskey(&["shred", "/dev/vdb"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("give its name"), "{}", run.stderr);
}

#[test]
fn close_without_a_name_needs_all() {
    tosskey(&["close"]).fails_with(2, "or --all for every tosskey volume");
    let run = tosskey(&["close", "x", "--all"]);
    assert_eq!(run.code, 2, "{}", run.stderr);
}

#[test]
fn discover_help_says_what_each_cloud_matches() {
    let run = tosskey(&["provision", "--help"]).ok();
    for identity in [
        "Amazon EC2 NVMe Instance Storage",
        "nvme_card",
        "EphemeralDisk",
        "google-local-ssd-",
        "Microsoft NVMe Direct Disk",
    ] {
        assert!(
            run.stdout.contains(identity),
            "no {identity:?} in {}",
            run.stdout
        );
    }
}

/// The dry run refuses what the real run's preflight refuses, before any device: a
/// `--mount` target that cannot be a directory, and `--measure-pcr 15` without a TPM.
#[test]
fn the_dry_run_refuses_what_the_real_run_refuses_before_any_device() {
    let file = tempfile::NamedTempFile::new().unwrap();
    let target = file.path().to_str().unwrap().to_owned();
    for mount in [target.clone(), format!("{target}/below")] {
        tosskey(&[
            "provision",
            "/nonexistent/disk",
            "--mount",
            &mount,
            "--dry-run",
        ])
        .fails_with(3, &format!("{target} is not a directory"));
    }
    let run = tosskey(&[
        "provision",
        "/nonexistent/disk",
        "--measure-pcr",
        "15",
        "--dry-run",
    ]);
    if std::path::Path::new("/dev/tpmrm0").exists() {
        // With a TPM the dry run goes on to the (missing) device.
        run.fails_with(3, "/nonexistent/disk: no such file or device");
    } else {
        run.fails_with(3, "--measure-pcr 15");
    }
}

/// `status` where device-mapper is not loaded (this host's kernel needs none) says there is
/// no volume; where it is loaded, a non-root user is told to run as root; never modprobe.
#[test]
fn status_without_device_mapper_says_no_volumes_and_never_suggests_modprobe() {
    let run = tosskey(&["status"]);
    let dm_loaded = std::path::Path::new("/sys/class/misc/device-mapper").exists();
    if !dm_loaded || nix::unistd::geteuid().is_root() {
        let run = run.ok();
        assert_eq!(run.stdout, "no tosskey volumes in this boot\n");
    } else {
        run.fails_with(1, "run as root");
    }
    let as_nobody = std::process::Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
        .arg(crate::common::TOSSKEY)
        .arg("status")
        .output();
    if nix::unistd::geteuid().is_root() {
        let out = as_nobody.unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(!stderr.contains("modprobe"), "{stderr}");
        if !dm_loaded {
            assert!(out.status.success(), "{stderr}");
        }
    }
}

/// `--wait-timeout` on named devices: a device that never appears fails after the timeout
/// with the list of what was found and missing (a dry run waits too).
#[test]
fn a_named_device_that_never_appears_times_out_listing_it() {
    let started = std::time::Instant::now();
    tosskey(&[
        "provision",
        "/dev/null",
        "/dev/does-not-exist",
        "--wait-timeout",
        "600ms",
        "--dry-run",
    ])
    .fails_with(
        3,
        "timed out after 0.6s waiting for /dev/null, /dev/does-not-exist to exist as block devices: found none; missing /dev/null, /dev/does-not-exist: check the device names (ls /sys/class/block), or raise --wait-timeout",
    );
    assert!(started.elapsed() >= std::time::Duration::from_millis(600));
}
