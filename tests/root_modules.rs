//! Root tests of bringing up the kernel facilities on demand (tosskey-kmod), run only by
//! `scripts/vm-test --modules on-demand`: a guest whose init loaded none of dm, md, the
//! ciphers or ext4, with a real `/lib/modules/<release>` tree and busybox modprobe as the
//! kernel's module helper. (Every test here is named `on_demand_*`; the default preload
//! guest skips them.)
//!
//! Modules stay loaded for the rest of a boot, so each test starts by checking that the
//! modules it needs are not loaded, and ends by unloading everything that appeared while it
//! ran ([`LoadedDuring`]): every test sees the "stock machine" state, whatever the order.

use std::collections::BTreeSet;
use std::fs;
use std::path::Path;
use std::process::Command;

use crate::common::{disks, escrow_test_keys, tosskey, Cleanup};
// Named so that this executable carries testkit's guest gate (root tests only in the guest).

fn loaded_modules() -> BTreeSet<String> {
    fs::read_to_string("/proc/modules")
        .expect("read /proc/modules")
        .lines()
        .filter_map(|line| line.split_whitespace().next())
        .map(str::to_owned)
        .collect()
}

/// Fails the test unless the guest is in on-demand mode and none of `modules` is loaded.
#[track_caller]
fn assert_not_loaded(modules: &[&str]) {
    assert_eq!(
        fs::read_to_string("/etc/tosskey/module-mode")
            .unwrap_or_default()
            .trim(),
        "on-demand",
        "this test needs a guest that preloads nothing: scripts/vm-test --modules on-demand"
    );
    let loaded = loaded_modules();
    let present: Vec<&&str> = modules.iter().filter(|m| loaded.contains(**m)).collect();
    assert!(
        present.is_empty(),
        "{present:?} already loaded: an earlier test did not unload them"
    );
}

/// Unloads, at drop, every module that was not loaded when it was made (repeating
/// `rmmod` until no more go: users before the modules they use).
struct LoadedDuring {
    before: BTreeSet<String>,
}

impl LoadedDuring {
    fn now() -> Self {
        LoadedDuring {
            before: loaded_modules(),
        }
    }

    /// Unloads what appeared; returns what could not be unloaded.
    fn unload(&self) -> Vec<String> {
        loop {
            let extra: Vec<String> = loaded_modules().difference(&self.before).cloned().collect();
            let mut progress = false;
            for module in &extra {
                progress |= Command::new("rmmod")
                    .arg(module)
                    .output()
                    .is_ok_and(|o| o.status.success());
            }
            if !progress {
                return extra;
            }
        }
    }
}

impl Drop for LoadedDuring {
    fn drop(&mut self) {
        self.unload();
    }
}

/// Provisions with nothing preloaded and checks the report's `kernel_facilities`: each
/// named facility was brought up (not found present) by the expected mechanism, then the
/// volume works. Returns the facilities as `(name, state, modules)`.
fn provision_on_demand(
    name: &'static str,
    disk_count: usize,
    extra: &[&str],
) -> Vec<(String, String, Vec<String>)> {
    let modules = LoadedDuring::now();
    let volume = Cleanup {
        name,
        disks: disks(disk_count),
    };
    let mount = format!("/tmp/{name}");
    let mut args = vec!["provision", "--name", name, "--json", "--mount", &mount];
    let disk_args: Vec<&str> = volume.disks.iter().map(|d| d.to_str().unwrap()).collect();
    args.extend(&disk_args);
    args.extend(extra);
    let report = tosskey(&args).ok().json();
    assert_eq!(report["outcome"], "provisioned");
    let facilities: Vec<(String, String, Vec<String>)> = report["kernel_facilities"]
        .as_array()
        .expect("kernel_facilities in the report")
        .iter()
        .map(|f| {
            (
                f["facility"].as_str().unwrap().to_owned(),
                f["state"].as_str().unwrap().to_owned(),
                f["modules"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .map(|m| m.as_str().unwrap().to_owned())
                    .collect(),
            )
        })
        .collect();
    // The volume is usable: a file written through the mount reads back.
    let file = Path::new(&mount).join("probe");
    fs::write(&file, b"on demand").unwrap();
    assert_eq!(fs::read(&file).unwrap(), b"on demand");
    drop(volume);
    let stuck = modules.unload();
    assert!(stuck.is_empty(), "could not unload {stuck:?}");
    eprintln!("{name}: {facilities:?}");
    facilities
}

#[track_caller]
fn assert_brought_up(
    facilities: &[(String, String, Vec<String>)],
    facility: &str,
    state: &str,
    module: &str,
) {
    let found = facilities
        .iter()
        .find(|(name, _, _)| name == facility)
        .unwrap_or_else(|| panic!("{facility} missing from {facilities:?}"));
    assert_eq!(found.1, state, "{facility}: {facilities:?}");
    assert!(
        found.2.iter().any(|m| m == module),
        "{facility} did not load {module}: {facilities:?}"
    );
}

/// The modules a single-disk volume with the default cipher needs.
const SINGLE: &[&str] = &["dm_mod", "dm_crypt", "xts", "twofish_generic", "ext4"];

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_single_disk_brings_up_dm_crypt_the_cipher_and_ext4() {
    assert_not_loaded(SINGLE);
    // --dry-run lists what would be loaded, and loads nothing.
    let disk = disks(1).remove(0);
    let plan = tosskey(&[
        "provision",
        disk.to_str().unwrap(),
        "--mount",
        "/tmp/dry",
        "--dry-run",
        "--json",
    ])
    .ok()
    .json();
    let survey: Vec<(&str, &str)> = plan["kernel_facilities"]
        .as_array()
        .expect("kernel_facilities in the dry-run plan")
        .iter()
        .map(|f| {
            (
                f["facility"].as_str().unwrap(),
                f["state"].as_str().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        survey,
        [
            ("device-mapper", "would-request"),
            ("dm-crypt target", "would-request"),
            ("cipher xts(twofish)", "would-request"),
            ("filesystem ext4", "would-request"),
        ]
    );
    assert_eq!(plan["kernel_facilities"][1]["modules"][1], "dm_crypt");
    assert_not_loaded(SINGLE);
    let facilities = provision_on_demand("tk-od-single", 1, &[]);
    assert_brought_up(&facilities, "device-mapper", "requested", "dm_mod");
    assert_brought_up(&facilities, "dm-crypt target", "requested", "dm_crypt");
    assert_brought_up(&facilities, "cipher xts(twofish)", "requested", "xts");
    assert_brought_up(&facilities, "filesystem ext4", "requested", "ext4");
    assert_eq!(facilities.len(), 4, "{facilities:?}");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_raid0_loads_md_and_its_personality() {
    assert_not_loaded(&[SINGLE, &["md_mod", "raid0"]].concat());
    let facilities = provision_on_demand("tk-od-raid0", 2, &["--level", "raid0"]);
    // md has no request path that builds nothing: tosskey loads it from the tree.
    assert_brought_up(&facilities, "md", "loaded", "md_mod");
    assert_brought_up(&facilities, "md raid0 personality", "loaded", "raid0");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_raid1_loads_md_and_its_personality() {
    assert_not_loaded(&[SINGLE, &["md_mod", "raid1"]].concat());
    let facilities = provision_on_demand("tk-od-raid1", 2, &["--level", "raid1"]);
    assert_brought_up(&facilities, "md", "loaded", "md_mod");
    assert_brought_up(&facilities, "md raid1 personality", "loaded", "raid1");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_dm_stripe_needs_only_dm() {
    assert_not_loaded(&[SINGLE, &["md_mod"]].concat());
    let facilities = provision_on_demand("tk-od-stripe", 2, &["--raid", "dm-stripe"]);
    assert!(
        facilities
            .iter()
            .any(|(name, state, _)| name == "dm-striped target" && state == "present"),
        "striped is part of dm_mod, up with device-mapper: {facilities:?}"
    );
    assert!(!facilities.iter().any(|(name, _, _)| name.starts_with("md")));
    assert!(!loaded_modules().contains("md_mod"));
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_recover_brings_up_what_the_escrow_names() {
    assert_not_loaded(&[SINGLE, &["md_mod", "raid1"]].concat());
    let modules = LoadedDuring::now();
    let (public, private) = escrow_test_keys();
    let escrow = "/tmp/tk-od-recover.escrow";
    let _ = fs::remove_file(escrow);
    let volume = Cleanup {
        name: "tk-od-recover",
        disks: disks(2),
    };
    let members: Vec<&str> = volume.disks.iter().map(|d| d.to_str().unwrap()).collect();
    let mut args = vec!["provision", "--name", volume.name, "--level", "raid1"];
    args.extend(&members);
    args.extend([
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        escrow,
    ]);
    tosskey(&args).ok();
    tosskey(&["close", volume.name]).ok();
    // A reboot's worth of forgetting: nothing of dm or md is loaded any more.
    let stuck = modules.unload();
    assert!(stuck.is_empty(), "could not unload {stuck:?}");
    assert_not_loaded(&["dm_mod", "dm_crypt", "md_mod", "raid1", "ext4"]);
    tosskey(&[
        "recover",
        "--escrow-file",
        escrow,
        "--private-key",
        private.to_str().unwrap(),
        "--mount",
        "/tmp/tk-od-recover",
    ])
    .ok();
    let loaded = loaded_modules();
    for module in ["dm_mod", "dm_crypt", "md_mod", "raid1", "ext4"] {
        assert!(loaded.contains(module), "{module} not loaded: {loaded:?}");
    }
    drop(volume);
    let stuck = modules.unload();
    assert!(stuck.is_empty(), "could not unload {stuck:?}");
}

/// Hides the kernel's module helper and, if asked, the module tree (a tmpfs over
/// /lib/modules), until dropped.
struct Hidden {
    helper: String,
    tree: bool,
}

impl Hidden {
    fn hide(tree: bool) -> Self {
        let helper = fs::read_to_string("/proc/sys/kernel/modprobe").unwrap();
        let hidden = Hidden { helper, tree };
        if tree {
            let status = Command::new("mount")
                .args(["-t", "tmpfs", "tmpfs", "/lib/modules"])
                .status()
                .unwrap();
            assert!(status.success(), "mount tmpfs over /lib/modules");
        }
        fs::write("/proc/sys/kernel/modprobe", "/nonexistent/modprobe\n").unwrap();
        hidden
    }
}

impl Drop for Hidden {
    fn drop(&mut self) {
        let _ = fs::write("/proc/sys/kernel/modprobe", &self.helper);
        if self.tree {
            let _ = Command::new("umount").arg("/lib/modules").status();
        }
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_without_a_helper_tosskey_loads_from_the_tree() {
    assert_not_loaded(SINGLE);
    let _ = fs::remove_file("/dev/mapper/control");
    let hidden = Hidden::hide(false);
    let facilities = provision_on_demand("tk-od-finit", 1, &[]);
    drop(hidden);
    // Every facility came from finit_module, dependencies and soft dependencies included
    // (ext4 needs crc32c for its checksums; xts(twofish) needs ecb).
    assert_brought_up(&facilities, "device-mapper", "loaded", "dm_mod");
    assert_brought_up(&facilities, "dm-crypt target", "loaded", "dm_crypt");
    assert_brought_up(&facilities, "cipher xts(twofish)", "loaded", "ecb");
    assert_brought_up(&facilities, "filesystem ext4", "loaded", "ext4");
    assert_brought_up(&facilities, "filesystem ext4", "loaded", "crc32c_generic");
}

fn block_devices(prefix: &str) -> Vec<String> {
    fs::read_dir("/sys/block")
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with(prefix))
        .collect()
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn on_demand_missing_modules_fail_in_one_line_and_build_nothing() {
    assert_not_loaded(&["dm_mod", "md_mod"]);
    let modules = LoadedDuring::now();
    let members = disks(2);
    let heads: Vec<Vec<u8>> = members
        .iter()
        .map(|d| {
            let mut head = vec![0u8; 1 << 20];
            use std::io::Read as _;
            fs::File::open(d).unwrap().read_exact(&mut head).unwrap();
            head
        })
        .collect();
    // A control node an earlier test's run made by mknod outlives dm_mod's unloading
    // (devtmpfs removes only its own nodes): remove it, so that this run must make its own.
    let _ = fs::remove_file("/dev/mapper/control");
    let hidden = Hidden::hide(true);
    let run = tosskey(&[
        "provision",
        "--name",
        "tk-od-missing",
        members[0].to_str().unwrap(),
        members[1].to_str().unwrap(),
    ]);
    drop(hidden);
    let run = run.fails_with(1, "kernel facility device-mapper");
    for part in [
        "dm_mod",
        "CONFIG_BLK_DEV_DM",
        "/nonexistent/modprobe",
        "modules.dep",
    ] {
        assert!(run.stderr.contains(part), "{part} missing: {}", run.stderr);
    }
    eprintln!("{}", run.stderr.trim_end());
    // Nothing built: no mapping, no array, no journal, members untouched, nothing loaded.
    assert!(
        block_devices("dm-").is_empty(),
        "{:?}",
        block_devices("dm-")
    );
    assert!(block_devices("md").is_empty(), "{:?}", block_devices("md"));
    assert!(!Path::new("/run/tosskey/tk-od-missing.json").exists());
    assert!(
        !Path::new("/dev/mapper/control").exists(),
        "the control node made for the request stayed"
    );
    for (disk, head) in members.iter().zip(&heads) {
        let mut now = vec![0u8; 1 << 20];
        use std::io::Read as _;
        fs::File::open(disk).unwrap().read_exact(&mut now).unwrap();
        assert!(&now == head, "{} changed", disk.display());
    }
    assert!(!loaded_modules().contains("dm_mod"));
    let stuck = modules.unload();
    assert!(stuck.is_empty(), "could not unload {stuck:?}");
}
