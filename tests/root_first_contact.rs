//! Root tests (VM guest): a new user's first hour (issue 27) — the escrow file across
//! provisions, a key from an earlier volume, a `--mount` target that cannot be a directory,
//! and what a non-root user is told.

/// One module, so that `scripts/vm-test -- first_contact::` selects these tests.
mod first_contact {
    use std::path::Path;
    use std::process::Command;

    use crate::common::{escrow_test_keys, tosskey};
    use tosskey_testkit::{virtio_disks, zero_range};

    /// Closes the volume and blanks the disk when the test ends, however it ends.
    struct Volume<'a> {
        name: &'a str,
        disk: String,
    }

    impl Drop for Volume<'_> {
        fn drop(&mut self) {
            let _ = tosskey(&["close", self.name, "--unmount"]);
            let _ = zero_range(Path::new(&self.disk), 0, 4 << 20);
        }
    }

    fn disk(index: usize) -> String {
        virtio_disks().unwrap()[index]
            .path
            .to_str()
            .unwrap()
            .to_owned()
    }

    /// A second escrowed provision (after a close; on a fleet, after a reboot) moves the first
    /// volume's escrow file to `.previous` and writes its own; the current file reopens the
    /// volume, and the first one is refused as a key that does not fit these disks.
    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn a_second_escrowed_provision_keeps_the_first_file_as_previous_and_it_does_not_fit() {
        let volume = Volume {
            name: "t-rotate",
            disk: disk(0),
        };
        let (public, private) = escrow_test_keys();
        let escrow = "/tmp/t-rotate.escrow";
        let previous = format!("{escrow}.previous");
        let _ = std::fs::remove_file(escrow);
        let _ = std::fs::remove_file(&previous);
        let provision = || {
            tosskey(&[
                "provision",
                &volume.disk,
                "--name",
                volume.name,
                "--mount",
                "/mnt/t-rotate",
                "--escrow-key",
                public.to_str().unwrap(),
                "--escrow-file",
                escrow,
            ])
        };
        provision().ok();
        std::fs::write("/mnt/t-rotate/first", b"first volume").unwrap();
        let first = std::fs::read(escrow).unwrap();
        tosskey(&["close", "/dev/mapper/t-rotate", "--unmount"]).ok();

        let second = provision().ok();
        assert!(second.stderr.is_empty(), "{}", second.stderr);
        assert_eq!(std::fs::read(&previous).unwrap(), first, "first file kept");
        assert_ne!(std::fs::read(escrow).unwrap(), first, "a new file");
        std::fs::write("/mnt/t-rotate/second", b"second volume").unwrap();
        tosskey(&["close", volume.name, "--unmount"]).ok();

        let recover = |file: &str| {
            tosskey(&[
                "recover",
                "--escrow-file",
                file,
                "--private-key",
                private.to_str().unwrap(),
                "--mount",
                "/mnt/t-rotate",
            ])
        };
        recover(&previous).fails_with(3, "does not fit these disks");
        assert!(
            !Path::new("/dev/mapper/t-rotate").exists(),
            "the refused recovery left its mapping"
        );
        recover(escrow).ok();
        assert_eq!(
            std::fs::read("/mnt/t-rotate/second").unwrap(),
            b"second volume"
        );
        tosskey(&["close", volume.name, "--unmount"]).ok();

        // A third provision replaces the uncollected .previous, with a warning.
        let third = provision().ok();
        assert!(
            third
                .stderr
                .starts_with("tosskey: warning: replacing /tmp/t-rotate.escrow.previous"),
            "{}",
            third.stderr
        );
        assert_ne!(std::fs::read(&previous).unwrap(), first);
        drop(volume);
        std::fs::remove_file(escrow).unwrap();
        std::fs::remove_file(&previous).unwrap();
    }

    /// A regular file as the mount target is refused before anything is built (exit 3), as the
    /// dry run refuses it.
    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn a_regular_file_as_mount_target_is_refused_before_anything_is_built() {
        let volume = Volume {
            name: "t-mountfile",
            disk: disk(1),
        };
        std::fs::write("/tmp/t-mountfile", b"not a directory").unwrap();
        for dry_run in [true, false] {
            let mut args = vec![
                "provision",
                volume.disk.as_str(),
                "--name",
                volume.name,
                "--mount",
                "/tmp/t-mountfile",
            ];
            if dry_run {
                args.push("--dry-run");
            }
            tosskey(&args).fails_with(3, "/tmp/t-mountfile is not a directory");
            assert!(!Path::new("/dev/mapper/t-mountfile").exists());
            assert!(!Path::new("/run/tosskey/t-mountfile.json").exists());
        }
        std::fs::remove_file("/tmp/t-mountfile").unwrap();
    }

    fn as_nobody(args: &[&str]) -> crate::common::Run {
        let output = Command::new("setpriv")
            .args(["--reuid=65534", "--regid=65534", "--clear-groups"])
            .arg(env!("CARGO_BIN_EXE_tosskey"))
            .args(args)
            .output()
            .expect("setpriv is in the guest (scripts/vm-test's TOSSKEY_VM_TOOLS)");
        crate::common::Run {
            code: output.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
        }
    }

    /// As a non-root user, provision and status say to run as root; nothing suggests modprobe
    /// (device-mapper is loaded here: the user only lacks the right to it).
    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn a_non_root_user_is_told_to_run_as_root() {
        let disk = disk(2);
        for args in [
            vec!["provision", disk.as_str(), "--dry-run"],
            vec!["provision", disk.as_str(), "--name", "t-nobody"],
            vec!["status"],
        ] {
            let run = as_nobody(&args);
            assert!(
                run.stderr.contains("run as root"),
                "{args:?}: {}",
                run.stderr
            );
            assert!(!run.stderr.contains("modprobe"), "{args:?}: {}", run.stderr);
            assert_eq!(run.stderr.lines().count(), 1, "{args:?}: {}", run.stderr);
        }
    }
}
