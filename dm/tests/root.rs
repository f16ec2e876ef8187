//! Root tests of tosskey-dm against the guest kernel (Debian 6.1, no udev). Run with
//! `scripts/vm-test -p tosskey-dm`; on the host they are listed as ignored.

use std::fs::{self, File};
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::{Duration, Instant};

use crate::common::{
    dev_of, hex, name, pattern, read_direct, report, test_key, write_direct, Cleanup,
};
use tosskey_dm::{
    activate_crypt, keyring_description, CryptKeyField, CryptOptions, CryptParams, CryptTarget,
    DmControl, DmName, DmUuid, Error, ErrorParams, KeyLoaded, KeyLoading, LinearTarget,
    NoKeyringSupport, RaidDevice, RaidParams, Sectors, StripeMember, StripedTarget, TableEntry,
    TargetLine, TargetParams, ZeroParams, ELIDED_KEY,
};
use tosskey_testkit::LoopDevice;

const MIB: u64 = 1 << 20;

fn uuid(text: &str) -> DmUuid {
    DmUuid::new(&format!("TOSSKEY-TEST-{text}")).unwrap()
}

/// A crypt target over the whole of `backing`.
fn crypt_over(cipher: &str, backing: &LoopDevice) -> CryptTarget {
    CryptTarget::new(cipher, dev_of(backing), Sectors(backing.size_sectors())).unwrap()
}

/// A linear target over the whole of `backing`.
fn linear_over(backing: &LoopDevice) -> LinearTarget {
    LinearTarget {
        device: dev_of(backing),
        offset: Sectors(0),
        length: Sectors(backing.size_sectors()),
    }
}

fn tosskey_keys_in_proc() -> Vec<String> {
    fs::read_to_string("/proc/keys")
        .unwrap_or_default()
        .lines()
        .filter(|line| line.contains("tosskey:"))
        .map(str::to_owned)
        .collect()
}

/// Waits up to 2 s for the key garbage collector to drop invalidated keys from /proc/keys.
fn wait_until_no_tosskey_keys() -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let keys = tosskey_keys_in_proc();
        if keys.is_empty() || Instant::now() > deadline {
            return keys;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn dm_version_is_4_x_and_crypt_is_available() {
    let dm = DmControl::open().unwrap();
    let (major, minor, patch) = dm.version().unwrap();
    report(&format!("device-mapper interface {major}.{minor}.{patch}"));
    assert_eq!(major, 4);
    assert!(minor >= 20, "interface 4.{minor} lacks DM_SECURE_DATA_FLAG");
    let targets = dm.target_versions().unwrap();
    for wanted in ["crypt", "linear", "striped"] {
        assert!(
            targets.iter().any(|t| t.name == wanted),
            "target {wanted} missing from {targets:?}"
        );
    }
    assert!(!dm.udev_running(), "the harness guest runs no udev");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn linear_mapping_create_load_resume_remove() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(8 * MIB).unwrap();
    let n = name("tkdm-linear");
    let _cleanup = Cleanup(vec![n.clone()]);
    let created = dm.create(&n, &uuid("linear")).unwrap();
    let info = dm.info(&n).unwrap();
    assert_eq!(info.dev, created);
    assert!(!info.live_table && !info.inactive_table);
    assert_eq!(info.uuid.as_deref(), Some("TOSSKEY-TEST-linear"));

    let linear = LinearTarget {
        device: dev_of(&backing),
        offset: Sectors(8),
        length: Sectors(backing.size_sectors() - 8),
    };
    dm.load_table(&n, &[linear.line(Sectors(0)).unwrap()])
        .unwrap();
    assert!(dm.info(&n).unwrap().inactive_table);
    let dev = dm.resume(&n).unwrap();
    assert_eq!(dev, created);
    let info = dm.info(&n).unwrap();
    assert!(info.live_table && !info.suspended && !info.read_only);
    assert_eq!(info.target_count, 1);
    let table = dm.table(&n).unwrap();
    assert_eq!(table.len(), 1);
    assert_eq!(table[0].target_type, "linear");
    assert_eq!(table[0].params, format!("{} 8", dev_of(&backing)));
    assert_eq!(table[0].length, linear.length);
    assert!(dm.list().unwrap().contains(&(n.clone(), dev)));
    let tagged = dm.devices_with_uuid_prefix("TOSSKEY-TEST-lin").unwrap();
    assert_eq!(tagged.len(), 1);
    assert_eq!((tagged[0].name.clone(), tagged[0].dev), (n.clone(), dev));
    assert!(dm
        .devices_with_uuid_prefix("TOSSKEY-TEST-nothing")
        .unwrap()
        .is_empty());

    // Data written at mapping sector 0 lands at sector 8 of the backing device.
    let node = DmControl::node_path(&n);
    let data = pattern(4096);
    write_direct(&node, 0, &data);
    assert_eq!(read_direct(backing.path(), 8 * 512, 4096), data);

    dm.remove(&n).unwrap();
    assert!(!node.exists(), "{} left behind", node.display());
    let err = dm.info(&n).unwrap_err();
    assert_eq!(err.errno(), Some(libc::ENXIO), "{err}");
    assert!(!dm.list().unwrap().iter().any(|(listed, _)| *listed == n));
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn hex_key_is_returned_by_the_kernel_and_elided_by_table() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(4 * MIB).unwrap();
    let n = name("tkdm-hex");
    let _cleanup = Cleanup(vec![n.clone()]);
    let key = test_key();
    let target = crypt_over("aes-xts-plain64", &backing);
    let activation = activate_crypt(&dm, &n, &uuid("hex"), &target, &key, KeyLoading::Hex).unwrap();
    assert_eq!(activation.key_loaded, KeyLoaded::Hex);

    let table = dm.table(&n).unwrap();
    assert_eq!(table.len(), 1);
    let key_hex = hex(&key);
    assert!(
        !table[0].params.contains(&key_hex),
        "table() leaked the key"
    );
    assert_eq!(
        table[0].params,
        format!("aes-xts-plain64 {ELIDED_KEY} 0 {} 0", dev_of(&backing))
    );
    let crypt = table[0].crypt.as_ref().unwrap();
    assert_eq!(crypt.key, CryptKeyField::Hex { bytes: 64 });
    assert!(!format!("{table:?}").contains(&key_hex));

    // What dm-crypt keeps: the hex key, handed back by TABLE_STATUS.
    let secret = dm.table_with_keys(&n).unwrap();
    assert!(
        secret[0].params.contains(&key_hex),
        "the kernel no longer returns hex keys?"
    );
    assert!(!format!("{secret:?}").contains(&key_hex));

    // The mapping encrypts: plaintext in, something else on the disk, plaintext back.
    let data = pattern(8192);
    write_direct(&activation.node, 0, &data);
    assert_eq!(read_direct(&activation.node, 0, 8192), data);
    assert_ne!(read_direct(backing.path(), 0, 8192), data);
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn keyring_key_is_invalidated_and_absent_from_the_table() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(4 * MIB).unwrap();
    let n = name("tkdm-keyring");
    let _cleanup = Cleanup(vec![n.clone()]);
    let key = test_key();
    let options = CryptOptions {
        sector_size: 4096,
        ..CryptOptions::default()
    };
    let target = crypt_over("twofish-xts-plain64", &backing).with_options(options);
    let activation = activate_crypt(
        &dm,
        &n,
        &uuid("keyring"),
        &target,
        &key,
        KeyLoading::Keyring,
    )
    .unwrap();
    assert_eq!(
        activation.key_loaded,
        KeyLoaded::Keyring {
            descriptions: vec!["tosskey:tkdm-keyring".into()]
        }
    );
    let leftover = wait_until_no_tosskey_keys();
    assert!(leftover.is_empty(), "keys left in /proc/keys: {leftover:?}");

    let key_hex = hex(&key);
    let secret = dm.table_with_keys(&n).unwrap();
    assert!(!secret[0].params.contains(&key_hex));
    let table = dm.table(&n).unwrap();
    assert_eq!(
        table[0].params,
        format!(
            "twofish-xts-plain64 :64:logon:tosskey:tkdm-keyring 0 {} 0 1 sector_size:4096",
            dev_of(&backing)
        )
    );
    report(&format!("table after keyring load: {}", table[0].params));

    // The invalidated key is not needed any more: the mapping keeps working.
    let data = pattern(16384);
    write_direct(&activation.node, 4096, &data);
    assert_eq!(read_direct(&activation.node, 4096, data.len()), data);
    let raw = read_direct(backing.path(), 4096, data.len());
    assert_ne!(raw, data);
    dm.remove(&n).unwrap();

    // And it was the right key: a hex-keyed mapping with the same key reads the plaintext.
    let again = activate_crypt(&dm, &n, &uuid("keyring"), &target, &key, KeyLoading::Hex).unwrap();
    assert_eq!(read_direct(&again.node, 4096, data.len()), data);
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn auto_loading_prefers_the_keyring() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(2 * MIB).unwrap();
    let n = name("tkdm-auto");
    let _cleanup = Cleanup(vec![n.clone()]);
    let target = crypt_over("aes-xts-plain64", &backing);
    let activation = activate_crypt(
        &dm,
        &n,
        &uuid("auto"),
        &target,
        &test_key(),
        KeyLoading::Auto,
    )
    .unwrap();
    assert!(matches!(activation.key_loaded, KeyLoaded::Keyring { .. }));
    assert!(wait_until_no_tosskey_keys().is_empty());
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn remove_of_a_busy_device_names_who_holds_it() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(4 * MIB).unwrap();
    let lower = name("tkdm-busy-lower");
    let upper = name("tkdm-busy-upper");
    let _cleanup = Cleanup(vec![lower.clone(), upper.clone()]);
    let sectors = Sectors(backing.size_sectors());
    dm.create(&lower, &uuid("busy-lower")).unwrap();
    let linear = LinearTarget {
        device: dev_of(&backing),
        offset: Sectors(0),
        length: sectors,
    };
    dm.load_table(&lower, &[linear.line(Sectors(0)).unwrap()])
        .unwrap();
    let lower_dev = dm.resume(&lower).unwrap();

    // Held by an open file descriptor of this process.
    let holder = File::open(DmControl::node_path(&lower)).unwrap();
    let started = Instant::now();
    let err = dm.remove(&lower).unwrap_err();
    assert!(
        started.elapsed() >= Duration::from_millis(1500),
        "gave up without retrying"
    );
    let text = err.to_string();
    report(&text);
    assert!(matches!(err, Error::Busy { open_count: 1, .. }), "{err:?}");
    assert!(
        text.contains(&format!("open by pid {}", std::process::id())),
        "{text}"
    );
    assert!(
        text.contains("tkdm-busy-lower") && !text.contains('\n'),
        "{text}"
    );
    drop(holder);

    // Held by a mapping stacked on it.
    dm.create(&upper, &uuid("busy-upper")).unwrap();
    let stacked = LinearTarget {
        device: lower_dev,
        offset: Sectors(0),
        length: sectors,
    };
    dm.load_table(&upper, &[stacked.line(Sectors(0)).unwrap()])
        .unwrap();
    dm.resume(&upper).unwrap();
    let text = dm.remove(&lower).unwrap_err().to_string();
    report(&text);
    assert!(text.contains("(tkdm-busy-upper)"), "{text}");
    dm.remove(&upper).unwrap();
    dm.remove(&lower).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn shred_wipes_the_key_so_resume_fails_and_remove_succeeds() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(4 * MIB).unwrap();
    let n = name("tkdm-shred");
    let _cleanup = Cleanup(vec![n.clone()]);
    let key = test_key();
    let target = crypt_over("twofish-xts-plain64", &backing);
    let activation =
        activate_crypt(&dm, &n, &uuid("shred"), &target, &key, KeyLoading::Keyring).unwrap();
    let data = pattern(8192);
    write_direct(&activation.node, 0, &data);

    // `key wipe` is refused while the device is live.
    let err = dm.wipe_crypt_key(&n).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EINVAL), "{err}");

    dm.suspend(&n).unwrap();
    assert!(dm.info(&n).unwrap().suspended);
    dm.wipe_crypt_key(&n).unwrap();
    let after_wipe = dm.table_with_keys(&n).unwrap();
    // Keyring-loaded, so even before the wipe the table held only the reference; report what
    // the key field says now (the test key is public, printing it would be harmless anyway).
    let key_field = after_wipe[0]
        .params
        .split(' ')
        .nth(1)
        .unwrap_or("?")
        .to_owned();
    report(&format!("crypt key field after `key wipe`: {key_field}"));
    assert!(!after_wipe[0].params.contains(&hex(&key)));
    let err = dm.resume(&n).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EAGAIN), "{err}");
    assert!(err.to_string().contains("wiped"), "{err}");
    dm.remove(&n).unwrap();
    assert!(!activation.node.exists());
    assert!(wait_until_no_tosskey_keys().is_empty());
    assert_ne!(read_direct(backing.path(), 0, 8192), data);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn striped_target_over_two_loop_devices() {
    let dm = DmControl::open().unwrap();
    let first = LoopDevice::new(8 * MIB).unwrap();
    let second = LoopDevice::new(9 * MIB).unwrap();
    let n = name("tkdm-striped");
    let _cleanup = Cleanup(vec![n.clone()]);
    let member = |device: &LoopDevice| StripeMember {
        device: dev_of(device),
        offset: Sectors(0),
        size: Sectors(device.size_sectors()),
    };
    let chunk = Sectors(128); // 64 KiB
    let striped = StripedTarget::new(chunk, vec![member(&first), member(&second)]).unwrap();
    assert_eq!(striped.length(), Sectors(2 * 16384));
    dm.create(&n, &uuid("striped")).unwrap();
    dm.load_table(&n, &[striped.line(Sectors(0)).unwrap()])
        .unwrap();
    dm.resume(&n).unwrap();
    let table = dm.table(&n).unwrap();
    assert_eq!(
        table[0].params,
        format!("2 128 {} 0 {} 0", dev_of(&first), dev_of(&second))
    );
    let status = dm.status(&n).unwrap();
    assert!(status[0].status.contains("AA"), "{status:?}");

    // Chunks alternate: 0 → first@0, 1 → second@0, 2 → first@64K.
    let node = DmControl::node_path(&n);
    let data = pattern(3 * 65536);
    write_direct(&node, 0, &data);
    assert_eq!(read_direct(first.path(), 0, 65536), data[..65536]);
    assert_eq!(read_direct(second.path(), 0, 65536), data[65536..131072]);
    assert_eq!(read_direct(first.path(), 65536, 65536), data[131072..]);
    assert_eq!(
        dm.info(&n).unwrap().dev,
        dm.list()
            .unwrap()
            .into_iter()
            .find(|(l, _)| *l == n)
            .unwrap()
            .1
    );
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn device_node_is_made_and_removed_without_udev() {
    let dm = DmControl::open().unwrap();
    assert!(!Path::new("/run/udev/control").exists());
    let backing = LoopDevice::new(2 * MIB).unwrap();
    let n = name("tkdm-node");
    let _cleanup = Cleanup(vec![n.clone()]);
    let node = DmControl::node_path(&n);
    let linear = linear_over(&backing);
    dm.create(&n, &uuid("node")).unwrap();
    dm.load_table(&n, &[linear.line(Sectors(0)).unwrap()])
        .unwrap();
    assert!(!node.exists(), "node exists before resume");
    let dev = dm.resume(&n).unwrap();
    let metadata = fs::symlink_metadata(&node).unwrap();
    assert!(metadata.file_type().is_block_device());
    assert_eq!(metadata.rdev(), dev.to_dev_t());
    assert_eq!(metadata.permissions().mode() & 0o777, 0o600);
    assert_eq!((metadata.uid(), metadata.gid()), (0, 0));
    // Resuming again keeps the node.
    dm.suspend(&n).unwrap();
    dm.resume(&n).unwrap();
    assert_eq!(fs::symlink_metadata(&node).unwrap().ino(), metadata.ino());
    dm.remove(&n).unwrap();
    assert!(!node.exists());

    // A file that is not our node is neither replaced nor removed.
    dm.create(&n, &uuid("node")).unwrap();
    dm.load_table(&n, &[linear.line(Sectors(0)).unwrap()])
        .unwrap();
    fs::write(&node, b"not a device").unwrap();
    let err = dm.resume(&n).unwrap_err();
    assert!(matches!(err, Error::NodeConflict { .. }), "{err}");
    dm.remove(&n).unwrap();
    assert_eq!(fs::read(&node).unwrap(), b"not a device");
    fs::remove_file(&node).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn duplicate_name_is_refused_and_the_existing_device_kept() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(2 * MIB).unwrap();
    let other = LoopDevice::new(2 * MIB).unwrap();
    let n = name("tkdm-dup");
    let _cleanup = Cleanup(vec![n.clone()]);
    let target = crypt_over("aes-xts-plain64", &backing);
    let first = activate_crypt(
        &dm,
        &n,
        &uuid("dup"),
        &target,
        &test_key(),
        KeyLoading::Keyring,
    )
    .unwrap();

    let err = dm.create(&n, &uuid("dup-2")).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBUSY));
    assert!(err.to_string().contains("already exists"), "{err}");

    let second_target = crypt_over("aes-xts-plain64", &other);
    let err = activate_crypt(
        &dm,
        &n,
        &uuid("dup-3"),
        &second_target,
        &test_key(),
        KeyLoading::Auto,
    )
    .unwrap_err();
    assert_eq!(err.errno(), Some(libc::EBUSY), "{err}");
    // The first mapping is untouched: same device, same table, node still there.
    let info = dm.info(&n).unwrap();
    assert_eq!(info.dev, first.dev);
    assert_eq!(info.uuid.as_deref(), Some("TOSSKEY-TEST-dup"));
    assert_eq!(
        dm.table(&n).unwrap()[0].crypt.as_ref().unwrap().device,
        dev_of(&backing)
    );
    assert!(first.node.exists());
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn failed_activation_rolls_back() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(2 * MIB).unwrap();
    let n = name("tkdm-rollback");
    let _cleanup = Cleanup(vec![n.clone()]);
    let target = crypt_over("nosuchcipher-xts-plain64", &backing);
    let err = activate_crypt(
        &dm,
        &n,
        &uuid("rollback"),
        &target,
        &test_key(),
        KeyLoading::Auto,
    )
    .unwrap_err();
    let text = err.to_string();
    report(&text);
    assert!(
        text.contains("DM_TABLE_LOAD") && text.contains("tkdm-rollback"),
        "{text}"
    );
    assert!(
        !dm.list().unwrap().iter().any(|(listed, _)| *listed == n),
        "device left behind"
    );
    assert!(!DmControl::node_path(&n).exists());
    assert!(wait_until_no_tosskey_keys().is_empty());
}

/// Sets root's key quota (`/proc/sys/kernel/keys/root_maxkeys`) for the life of the guard.
struct RootKeyQuota(String);

impl RootKeyQuota {
    const PATH: &'static str = "/proc/sys/kernel/keys/root_maxkeys";

    fn set(value: &str) -> Self {
        let old = fs::read_to_string(Self::PATH).unwrap();
        fs::write(Self::PATH, value).unwrap();
        Self(old.trim().to_owned())
    }
}

impl Drop for RootKeyQuota {
    fn drop(&mut self) {
        fs::write(Self::PATH, &self.0).unwrap();
    }
}

/// Makes `add_key` fail with `ENOSYS` on the calling thread only (and threads it starts), as
/// on a kernel built without `CONFIG_KEYS`: a seccomp filter, which cannot be removed, so
/// the caller runs on a thread of its own. x86_64 syscall numbers (the guest's).
#[allow(unsafe_code)]
fn refuse_add_key_on_this_thread() {
    const ADD_KEY: u32 = 248;
    let errno = 0x0005_0000 | u32::try_from(libc::ENOSYS).unwrap(); // SECCOMP_RET_ERRNO
    let filter = [
        // A = seccomp_data.nr
        libc::sock_filter {
            code: 0x20,
            jt: 0,
            jf: 0,
            k: 0,
        },
        // if A == add_key: next, else skip one
        libc::sock_filter {
            code: 0x15,
            jt: 0,
            jf: 1,
            k: ADD_KEY,
        },
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: errno,
        },
        // SECCOMP_RET_ALLOW
        libc::sock_filter {
            code: 0x06,
            jt: 0,
            jf: 0,
            k: 0x7fff_0000,
        },
    ];
    let program = libc::sock_fprog {
        len: 4,
        filter: filter.as_ptr().cast_mut(),
    };
    // SAFETY: `program` points at `filter`, both alive for the call; the kernel copies the
    // filter. Root holds CAP_SYS_ADMIN, so no_new_privs is not needed.
    let installed = unsafe {
        libc::prctl(
            libc::PR_SET_SECCOMP,
            libc::SECCOMP_MODE_FILTER,
            &program as *const libc::sock_fprog,
        )
    };
    assert_eq!(installed, 0, "{}", std::io::Error::last_os_error());
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn auto_refuses_hex_on_a_keyring_error_and_falls_back_only_without_logon_keys() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(2 * MIB).unwrap();
    let n = name("tkdm-fallback");
    let _cleanup = Cleanup(vec![n.clone()]);
    let target = crypt_over("aes-xts-plain64", &backing);
    let activate =
        |loading| activate_crypt(&dm, &n, &uuid("fallback"), &target, &test_key(), loading);
    let data = pattern(4096);
    {
        // No key may be added: add_key fails with EDQUOT. A keyring that refuses a key is
        // not a kernel without keyring support: Auto fails as Keyring does, nothing is left.
        let _quota = RootKeyQuota::set("1");
        for loading in [KeyLoading::Keyring, KeyLoading::Auto] {
            let err = activate(loading).unwrap_err();
            report(&err.to_string());
            assert!(matches!(err, Error::Keyring { .. }), "{loading:?}: {err}");
            assert_eq!(err.errno(), Some(libc::EDQUOT), "{err}");
            assert!(!dm.list().unwrap().iter().any(|(listed, _)| *listed == n));
        }
    }
    // add_key answers ENOSYS, as without CONFIG_KEYS: Auto loads hex and says why.
    let (loaded, table) = std::thread::scope(|scope| {
        scope
            .spawn(|| {
                refuse_add_key_on_this_thread();
                let activation = activate(KeyLoading::Auto).unwrap();
                write_direct(&activation.node, 0, &data);
                let table = dm.table(&n).unwrap();
                (activation.key_loaded, table)
            })
            .join()
            .unwrap()
    });
    assert_eq!(
        loaded,
        KeyLoaded::HexFallback {
            reason: NoKeyringSupport::NoLogonKeys {
                errno: libc::ENOSYS
            }
        }
    );
    assert!(loaded
        .to_string()
        .starts_with("hex (fallback: the kernel has no logon keys"));
    let crypt = table[0].crypt.as_ref().unwrap();
    assert_eq!(crypt.key, CryptKeyField::Hex { bytes: 64 });
    dm.remove(&n).unwrap();
    // Same key through the keyring on this (unfiltered) thread: same plaintext.
    let activation = activate(KeyLoading::Keyring).unwrap();
    assert_eq!(read_direct(&activation.node, 0, 4096), data);
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn a_table_larger_than_the_first_buffer_is_read_back_whole() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(4 * MIB).unwrap();
    let n = name("tkdm-large-table");
    let _cleanup = Cleanup(vec![n.clone()]);
    // 1000 targets of 8 sectors, in reverse order on the backing device: about 56 KiB of
    // TABLE_STATUS answer, several times the first 16 KiB buffer.
    let count = 1000u64;
    let lines: Vec<_> = (0..count)
        .map(|i| {
            LinearTarget {
                device: dev_of(&backing),
                offset: Sectors(8 * (count - 1 - i)),
                length: Sectors(8),
            }
            .line(Sectors(8 * i))
            .unwrap()
        })
        .collect();
    dm.create(&n, &uuid("large-table")).unwrap();
    dm.load_table(&n, &lines).unwrap();
    dm.resume(&n).unwrap();
    assert_eq!(dm.info(&n).unwrap().target_count, 1000);
    let table = dm.table(&n).unwrap();
    assert_eq!(table.len(), 1000);
    for (i, entry) in (0u64..).zip(&table) {
        assert_eq!((entry.start, entry.length), (Sectors(8 * i), Sectors(8)));
        assert_eq!(
            entry.params,
            format!("{} {}", dev_of(&backing), 8 * (count - 1 - i))
        );
    }
    // The last 4 KiB of the mapping is the first 4 KiB of the backing device.
    let data = pattern(4096);
    write_direct(&DmControl::node_path(&n), 8 * 512 * (count - 1), &data);
    assert_eq!(read_direct(backing.path(), 0, 4096), data);
    dm.remove(&n).unwrap();
}

/// One mapping of every target type tosskey emits: its table as the kernel shows it must
/// parse, display back to exactly the kernel's text, and equal what was loaded.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn every_target_table_text_round_trips_through_the_kernel() {
    let dm = DmControl::open().unwrap();
    let disks: Vec<LoopDevice> = (0..3).map(|_| LoopDevice::new(8 * MIB).unwrap()).collect();
    let names: Vec<DmName> = [
        "crypt-keyring",
        "crypt-hex",
        "striped",
        "linear",
        "error",
        "raid-meta0",
        "raid-meta1",
        "raid-meta2",
        "raid10",
    ]
    .iter()
    .map(|suffix| name(&format!("tkdm-text-{suffix}")))
    .collect();
    let _cleanup = Cleanup(names.clone());
    let key = test_key();
    let load = |n: &DmName, lines: &[TargetLine]| {
        dm.create(n, &uuid(n.as_str())).unwrap();
        dm.load_table(n, lines).unwrap();
        dm.resume(n).unwrap()
    };
    // What each mapping was loaded with, as typed parameters.
    let mut expected: Vec<(DmName, Sectors, TargetParams)> = Vec::new();

    // crypt with a keyring key, options whose kernel order differs from the loaded order.
    let keyring = crypt_over("aes-xts-plain64", &disks[0]).with_options(CryptOptions {
        allow_discards: true,
        no_read_workqueue: true,
        iv_large_sectors: true,
        sector_size: 4096,
        ..CryptOptions::default()
    });
    activate_crypt(
        &dm,
        &names[0],
        &uuid("keyring"),
        &keyring,
        &key,
        KeyLoading::Keyring,
    )
    .unwrap();
    let keyring_params = expected_crypt(
        &keyring,
        CryptKeyField::Keyring {
            bytes: key.len(),
            key_type: "logon".into(),
            description: keyring_description(&names[0]),
        },
    );
    expected.push((names[0].clone(), keyring.length(), keyring_params));

    // crypt with a hex key (read back elided), offset and IV offset.
    let hex_target = CryptTarget::new("aes-xts-plain64", dev_of(&disks[1]), Sectors(8192))
        .unwrap()
        .with_offset(Sectors(2048))
        .with_iv_offset(Sectors(16));
    activate_crypt(
        &dm,
        &names[1],
        &uuid("hex"),
        &hex_target,
        &key,
        KeyLoading::Hex,
    )
    .unwrap();
    let hex_params = expected_crypt(&hex_target, CryptKeyField::Hex { bytes: key.len() });
    expected.push((names[1].clone(), hex_target.length(), hex_params));

    // striped over two disks, linear with an offset, error.
    let member = |device: &LoopDevice, offset: u64| StripeMember {
        device: dev_of(device),
        offset: Sectors(offset),
        size: Sectors(device.size_sectors()),
    };
    let striped = StripedTarget::new(
        Sectors(128),
        vec![member(&disks[2], 0), member(&disks[1], 8192)],
    )
    .unwrap();
    load(&names[2], &[striped.line(Sectors(0)).unwrap()]);
    expected.push((
        names[2].clone(),
        striped.length(),
        TargetParams::Striped(striped.params()),
    ));
    let linear = LinearTarget {
        device: dev_of(&disks[2]),
        offset: Sectors(24),
        length: Sectors(1000),
    };
    load(&names[3], &[linear.line(Sectors(0)).unwrap()]);
    expected.push((
        names[3].clone(),
        linear.length,
        TargetParams::Linear(linear.params()),
    ));
    load(
        &names[4],
        &[ErrorParams::line(Sectors(0), Sectors(64)).unwrap()],
    );
    expected.push((
        names[4].clone(),
        Sectors(64),
        TargetParams::Error(ErrorParams),
    ));

    // The stock raid10 recipe: zero metadata devices, dm-raid over disks of their own.
    let raid_disks: Vec<LoopDevice> = (0..3).map(|_| LoopDevice::new(8 * MIB).unwrap()).collect();
    let mut slots = Vec::new();
    for (slot, disk) in raid_disks.iter().enumerate() {
        let meta = &names[5 + slot];
        let dev = load(
            meta,
            &[ZeroParams::line(Sectors(0), Sectors(8192)).unwrap()],
        );
        expected.push((meta.clone(), Sectors(8192), TargetParams::Zero(ZeroParams)));
        slots.push(RaidDevice {
            metadata: Some(dev),
            data: Some(dev_of(disk)),
        });
    }
    // near, 2 copies over 3 disks of 16384 sectors: 3 × 16384 / 2.
    let raid = RaidParams::raid10_near_nosync(Sectors(128), 2, slots);
    load(&names[8], &[raid.line(Sectors(0), Sectors(24576)).unwrap()]);
    expected.push((names[8].clone(), Sectors(24576), TargetParams::Raid(raid)));

    for (n, length, loaded) in &expected {
        let table = dm.table(n).unwrap();
        let parsed = check_round_trip(n, &table);
        assert_eq!(table[0].length, *length, "{n}");
        assert_eq!(
            &parsed, loaded,
            "{n}: the kernel's table differs from what was loaded"
        );
    }

    // The hex key as the kernel returns it parses to the same value and displays elided.
    let secret = dm.table_with_keys(&names[1]).unwrap();
    let with_key: CryptParams = secret[0].params.parse().unwrap();
    assert_eq!(
        Some(&with_key),
        dm.table(&names[1]).unwrap()[0].crypt.as_ref()
    );
    assert_eq!(with_key.to_string(), dm.table(&names[1]).unwrap()[0].params);
    assert!(!with_key.to_string().contains(&hex(&key)));
}

/// What a crypt mapping loaded from `target` reads back as, with the key field `key`.
fn expected_crypt(target: &CryptTarget, key: CryptKeyField) -> TargetParams {
    TargetParams::Crypt(CryptParams {
        cipher: target.cipher().to_owned(),
        key,
        iv_offset: target.iv_offset(),
        device: target.device(),
        offset: target.offset(),
        options: target.options(),
        other_options: Vec::new(),
    })
}

/// Asserts that the one-line `table` of `name`, as the kernel shows it, parses and displays
/// back to exactly the kernel's text (parameters and whole line); returns the parameters.
fn check_round_trip(name: &DmName, table: &[TableEntry]) -> TargetParams {
    assert_eq!(table.len(), 1, "{name}: {table:?}");
    let entry = &table[0];
    report(&format!("table of {name}: {entry}"));
    let parsed = entry.target_params().unwrap();
    assert_eq!(parsed.target_type(), entry.target_type, "{name}");
    assert_eq!(parsed.to_string(), entry.params, "{name}");
    let reparsed = TargetParams::parse(&entry.target_type, &entry.params).unwrap();
    assert_eq!(reparsed.to_string(), entry.params, "{name}");
    let line = entry.to_string();
    assert_eq!(
        line.parse::<TableEntry>().unwrap().to_string(),
        line,
        "{name}"
    );
    parsed
}
