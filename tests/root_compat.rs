//! Root test (VM guest): a tosskey volume is byte-compatible with
//! `cryptsetup open --type plain`. The escrowed key, handed to stock cryptsetup with the
//! options `tosskey escrow decrypt` prints, yields the same dm table and the same plaintext.
//! The guest gets the host's cryptsetup (scripts/vm-test's TOSSKEY_VM_TOOLS).

use std::path::Path;
use std::process::Command;

use crate::common::{escrow_test_keys, tosskey};
use tosskey_dm::{DmControl, DmName};
use tosskey_testkit::{virtio_disks, zero_range};

fn table_with_key(name: &str) -> String {
    let dm = DmControl::open().unwrap();
    let entries = dm.table_with_keys(&DmName::new(name).unwrap()).unwrap();
    assert_eq!(entries.len(), 1);
    let e = &entries[0];
    format!(
        "{} {} {} {}",
        e.start,
        e.length,
        e.target_type,
        e.params.as_str()
    )
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn cryptsetup_plain_reopens_a_tosskey_volume_with_the_same_table() {
    // tosskey's default bypasses both dm-crypt workqueues: cryptsetup must set them too.
    let table = reopen_with_cryptsetup(&[]);
    assert!(
        table.contains(" 0 3 no_read_workqueue no_write_workqueue sector_size:4096"),
        "{table}"
    );
}

/// `--allow-discards` adds a third optional parameter that the printed cryptsetup command
/// must carry as well (`--allow-discards`), next to the workqueue flags.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn cryptsetup_plain_reopens_a_volume_with_discards_and_workqueue_flags() {
    let table = reopen_with_cryptsetup(&["--allow-discards"]);
    assert!(
        table.contains(" 0 4 allow_discards no_read_workqueue no_write_workqueue sector_size:4096"),
        "{table}"
    );
}

/// Closes `t-compat` (whoever opened it) and wipes the disk's head when the test ends,
/// pass or fail: the next test needs the disk free.
struct CloseAndWipe(std::path::PathBuf);

impl Drop for CloseAndWipe {
    fn drop(&mut self) {
        let _ = Command::new("/usr/sbin/cryptsetup")
            .args(["close", "t-compat"])
            .env("DM_DISABLE_UDEV", "1")
            .output();
        let _ = tosskey(&["close", "t-compat"]);
        let _ = zero_range(&self.0, 0, 4 << 20);
    }
}

/// Provisions the second disk with `extra` options and an escrow, closes it, opens it
/// again with the stock `cryptsetup open --type plain` command `escrow decrypt` prints, and
/// checks that the kernel holds the same table (key included) and the filesystem tosskey
/// made. Returns that table.
fn reopen_with_cryptsetup(extra: &[&str]) -> String {
    assert!(
        Path::new("/usr/sbin/cryptsetup").exists(),
        "cryptsetup is not in the guest: scripts/vm-test copies it from the host (apt-get install cryptsetup-bin)"
    );
    let disk = virtio_disks().unwrap().remove(1).path;
    let _cleanup = CloseAndWipe(disk.clone());
    let (public, private) = escrow_test_keys();
    let escrow = "/tmp/t-compat.escrow";
    let key_file = "/tmp/t-compat.key";
    for stale in [escrow, key_file] {
        let _ = std::fs::remove_file(stale);
    }
    // Hex loading, so the kernel's table holds the key and can be compared whole.
    let mut provision = vec![
        "provision",
        disk.to_str().unwrap(),
        "--name",
        "t-compat",
        "--mkfs",
        "ext4",
        "--key-loading",
        "hex",
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        escrow,
    ];
    provision.extend(extra);
    tosskey(&provision).ok();
    let tosskey_table = table_with_key("t-compat");
    tosskey(&["close", "t-compat"]).ok();

    let decrypt = tosskey(&[
        "escrow",
        "decrypt",
        "--escrow-file",
        escrow,
        "--private-key",
        private.to_str().unwrap(),
        "--key-out",
        key_file,
    ])
    .ok();
    let command = decrypt
        .stdout
        .lines()
        .find(|l| l.starts_with("cryptsetup open"))
        .expect("escrow decrypt prints the cryptsetup command")
        .to_owned();
    let args: Vec<&str> = command.split_whitespace().skip(1).collect();
    let opened = Command::new("/usr/sbin/cryptsetup")
        .args(&args)
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap();
    assert!(
        opened.status.success(),
        "{command}: {}",
        String::from_utf8_lossy(&opened.stderr)
    );
    let cryptsetup_table = table_with_key("t-compat");
    assert_eq!(
        cryptsetup_table, tosskey_table,
        "cryptsetup built a different table"
    );

    // Same table, so the filesystem tosskey made is there.
    let fsck = Command::new("/usr/sbin/e2fsck")
        .args(["-fn", "/dev/mapper/t-compat"])
        .output()
        .unwrap();
    assert!(
        fsck.status.success(),
        "{}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    let closed = Command::new("/usr/sbin/cryptsetup")
        .args(["close", "t-compat"])
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap();
    assert!(
        closed.status.success(),
        "{}",
        String::from_utf8_lossy(&closed.stderr)
    );
    for file in [escrow, key_file] {
        std::fs::remove_file(file).unwrap();
    }
    zero_range(&disk, 0, 4 << 20).unwrap();
    cryptsetup_table
}
