//! Root tests, run inside the VM guest by `scripts/vm-test`: a rerun of `provision` checks
//! the world rather than trusting its journal (an unmounted volume is mounted again,
//! another filesystem at the mount point or a shredded volume is refused, other options
//! are named), and `close`/`shred` unmount the volume's own mounts only.

/// One module, so that `scripts/vm-test -p tosskey -- rerun_close_shred` selects these tests.
mod rerun_close_shred {
    use std::os::unix::fs::FileTypeExt as _;
    use std::os::unix::fs::MetadataExt as _;
    use std::path::{Path, PathBuf};

    use crate::common::tosskey;
    use nix::mount::{mount, umount2, MntFlags, MsFlags};
    use tosskey_sysutil::{parse_mountinfo, DevId};
    use tosskey_testkit::{virtio_disks, zero_range};

    /// A volume closed (and its disk's head wiped) when the test ends, pass or fail, and the
    /// directories whose tmpfs mounts the test made.
    struct Volume {
        name: &'static str,
        disk: PathBuf,
        tmpfs: std::cell::RefCell<Vec<&'static str>>,
    }

    impl Volume {
        fn new(name: &'static str, index: usize) -> Volume {
            let disks = virtio_disks().expect("list virtio disks");
            assert!(disks.len() > index, "the guest needs {} disks", index + 1);
            Volume {
                name,
                disk: disks[index].path.clone(),
                tmpfs: std::cell::RefCell::default(),
            }
        }

        fn disk(&self) -> &str {
            self.disk.to_str().unwrap()
        }

        /// `provision DISK --name NAME --mount DIR`.
        fn provision_at<'a>(&'a self, dir: &'a str) -> [&'a str; 6] {
            [
                "provision",
                self.disk(),
                "--name",
                self.name,
                "--mount",
                dir,
            ]
        }

        /// Provision at `dir`, then unmount the volume behind tosskey's back.
        fn provision_then_unmount<'a>(&'a self, dir: &'a str) -> [&'a str; 6] {
            let args = self.provision_at(dir);
            tosskey(&args).ok();
            umount2(dir, MntFlags::empty()).unwrap();
            args
        }

        /// Mount a tmpfs (someone else's filesystem) at `dir`.
        fn mount_tmpfs(&self, dir: &'static str) {
            std::fs::create_dir_all(dir).unwrap();
            mount(
                Some("tmpfs"),
                dir,
                Some("tmpfs"),
                MsFlags::empty(),
                None::<&str>,
            )
            .unwrap();
            self.tmpfs.borrow_mut().push(dir);
        }
    }

    impl Drop for Volume {
        fn drop(&mut self) {
            let _ = tosskey(&["close", "--unmount", self.name]);
            for dir in self.tmpfs.borrow().iter() {
                while top_mount(dir).is_some() {
                    if umount2(*dir, MntFlags::MNT_DETACH).is_err() {
                        break;
                    }
                }
            }
            let _ = zero_range(&self.disk, 0, 4 << 20);
        }
    }

    /// The topmost mount at `dir`: its device and filesystem type.
    fn top_mount(dir: &str) -> Option<(DevId, String)> {
        let text = std::fs::read_to_string("/proc/self/mountinfo").unwrap();
        parse_mountinfo(&text)
            .into_iter()
            .rfind(|m| m.mount_point == dir)
            .map(|m| (m.dev, m.fs_type))
    }

    /// The device number of `/dev/mapper/<name>`.
    fn mapping_dev(name: &str) -> DevId {
        let meta = std::fs::metadata(Path::new("/dev/mapper").join(name)).unwrap();
        assert!(meta.file_type().is_block_device());
        DevId::from_dev_t(meta.rdev())
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn rerun_mounts_an_unmounted_volume_again() {
        let v = Volume::new("t-remount", 1);
        let args = v.provision_then_unmount("/mnt/t-remount");
        assert_eq!(top_mount("/mnt/t-remount"), None);
        let again = tosskey(&args).ok();
        assert!(
            again
                .stdout
                .contains("it was not mounted at /mnt/t-remount: mounted it there again"),
            "{}",
            again.stdout
        );
        assert_eq!(
            top_mount("/mnt/t-remount"),
            Some((mapping_dev(v.name), "ext4".to_owned()))
        );
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn rerun_refuses_another_filesystem_at_the_mount_point() {
        let v = Volume::new("t-foreign", 2);
        let args = v.provision_then_unmount("/mnt/t-foreign");
        v.mount_tmpfs("/mnt/t-foreign");
        tosskey(&args).fails_with(3, "/mnt/t-foreign holds tmpfs (tmpfs, 0:");
        let (_, fs_type) = top_mount("/mnt/t-foreign").unwrap();
        assert_eq!(fs_type, "tmpfs");
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn rerun_refuses_a_shredded_volume_that_is_still_held() {
        let v = Volume::new("t-held", 3);
        let args = ["provision", v.disk(), "--name", v.name, "--mkfs", "none"];
        tosskey(&args).ok();
        // A process keeps the mapping open: shred wipes the key, but cannot remove it.
        let user = std::fs::File::open("/dev/mapper/t-held").unwrap();
        let shred = tosskey(&["shred", v.name]).ok();
        assert!(
            shred.stdout.contains("run `tosskey close t-held` later"),
            "{}",
            shred.stdout
        );
        assert!(Path::new("/dev/mapper/t-held").exists());
        tosskey(&args).fails_with(3, "t-held was shredded in this boot");
        drop(user);
        tosskey(&["close", v.name]).ok();
        tosskey(&args).ok();
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn close_and_shred_leave_another_filesystem_at_the_mount_point_alone() {
        let v = Volume::new("t-other", 1);
        let dir = "/mnt/t-other";
        let args = v.provision_then_unmount(dir);
        v.mount_tmpfs(dir);
        let closed = tosskey(&["close", "--unmount", v.name]).ok();
        assert!(
            closed
                .stdout
                .contains("left /mnt/t-other alone: tmpfs (tmpfs, 0:"),
            "{}",
            closed.stdout
        );
        assert_eq!(top_mount(dir).unwrap().1, "tmpfs");

        // Provisioned again over the tmpfs, unmounted, shredded: the tmpfs stays.
        tosskey(&args).ok();
        assert_eq!(top_mount(dir).unwrap().1, "ext4");
        umount2(dir, MntFlags::empty()).unwrap();
        let shredded = tosskey(&["shred", v.name]).ok();
        assert!(
            shredded
                .stdout
                .contains("left /mnt/t-other alone: tmpfs (tmpfs, 0:"),
            "{}",
            shredded.stdout
        );
        assert_eq!(top_mount(dir).unwrap().1, "tmpfs");
        assert!(!Path::new("/dev/mapper/t-other").exists());
    }

    #[test]
    #[ignore = "root: runs in the VM guest (scripts/vm-test)"]
    fn rerun_with_other_options_names_them_and_refuses_another_mount_point() {
        let v = Volume::new("t-opts", 2);
        let args = v.provision_at("/mnt/t-opts");
        tosskey(&args).ok();
        let mut other_cipher = args.to_vec();
        other_cipher.extend(["--cipher", "aes-xts-plain64"]);
        let again = tosskey(&other_cipher).ok();
        assert!(
            again.stdout.contains(
                "apply only to a new one (after a reboot, or after `tosskey close t-opts`, which destroys its data): --cipher aes-xts-plain64 (running: twofish-xts-plain64)"
            ),
            "{}",
            again.stdout
        );
        let mut other_mount = args.to_vec();
        other_mount[5] = "/mnt/t-opts-elsewhere";
        tosskey(&other_mount).fails_with(
            3,
            "t-opts is already provisioned and mounted at /mnt/t-opts, not at /mnt/t-opts-elsewhere",
        );
        assert_eq!(top_mount("/mnt/t-opts-elsewhere"), None);
        assert_eq!(
            top_mount("/mnt/t-opts"),
            Some((mapping_dev(v.name), "ext4".to_owned()))
        );
    }
}
