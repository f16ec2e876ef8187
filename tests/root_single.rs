//! Root tests of the single-device path, run inside the VM guest by `scripts/vm-test`:
//! provision / verify / status / close / shred on blank virtio disks, and every refusal.

use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};

use crate::common::{
    assert_direct_read_fails_with_eio, assert_error_targets, contains, dmsetup_table,
    escrow_test_keys, tosskey,
};
use tosskey_testkit::{virtio_disks, zero_range, LoopDevice};

/// A volume that is closed (and its disks' heads wiped) when the test ends, pass or fail.
struct Volume {
    name: String,
    disks: Vec<PathBuf>,
}

impl Volume {
    fn new(name: &str, disks: &[&Path]) -> Volume {
        Volume {
            name: name.to_owned(),
            disks: disks.iter().map(|d| d.to_path_buf()).collect(),
        }
    }
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "--unmount", &self.name]);
        for disk in &self.disks {
            let _ = zero_range(disk, 0, 4 << 20);
        }
    }
}

fn disk(index: usize) -> PathBuf {
    let disks = virtio_disks().expect("list virtio disks");
    assert!(
        disks.len() > index,
        "the guest needs at least {} virtio disks",
        index + 1
    );
    disks[index].path.clone()
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn read_all(path: &Path) -> Vec<u8> {
    let mut bytes = Vec::new();
    File::open(path).unwrap().read_to_end(&mut bytes).unwrap();
    bytes
}

fn write_at(path: &Path, offset: u64, data: &[u8]) {
    let mut file = OpenOptions::new().write(true).open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    file.write_all(data).unwrap();
    file.sync_all().unwrap();
}

fn read_at(path: &Path, offset: u64, len: usize) -> Vec<u8> {
    let mut file = File::open(path).unwrap();
    file.seek(SeekFrom::Start(offset)).unwrap();
    let mut data = vec![0u8; len];
    file.read_exact(&mut data).unwrap();
    data
}

fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in bytes.chunks(3) {
        let n = chunk
            .iter()
            .enumerate()
            .fold(0u32, |n, (i, b)| n | u32::from(*b) << (16 - 8 * i));
        for i in 0..=chunk.len() {
            out.push(char::from(
                ALPHABET[usize::try_from((n >> (18 - 6 * i)) & 63).unwrap()],
            ));
        }
    }
    out
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn provision_hides_plaintext_and_key_and_forgets_the_key() {
    let vda = disk(0);
    let volume = Volume::new("t-single", &[&vda]);
    let (public, private) = escrow_test_keys();
    let escrow = Path::new("/tmp/t-single.escrow");
    let _ = std::fs::remove_file(escrow);
    let run = tosskey(&[
        "provision",
        vda.to_str().unwrap(),
        "--name",
        &volume.name,
        "--mkfs",
        "none",
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        escrow.to_str().unwrap(),
        "--json",
    ])
    .ok();
    let report = run.json();
    assert_eq!(report["outcome"], "provisioned");
    let crypt = &report["stack"]["crypt"][0];
    assert_eq!(crypt["key_loaded"], "keyring", "{report}");
    let table = crypt["table"].as_str().unwrap();
    assert!(
        table.contains("crypt twofish-xts-plain64 :64:logon:tosskey:t-single 0"),
        "{table}"
    );
    assert!(table.contains("sector_size:4096"), "{table}");
    let checks = crypt["verification"]["checks"].as_array().unwrap();
    assert!(
        checks.len() >= 3 && checks.iter().all(|c| c["matched"] == true),
        "{report}"
    );
    assert_eq!(report["key_wiped_from_tosskey_memory"], true);
    assert_eq!(report["hardening"]["non_dumpable"], true);
    let keys = std::fs::read_to_string("/proc/keys").unwrap();
    assert!(
        !keys.contains("tosskey:"),
        "the keyring key must be gone: {keys}"
    );

    // Write plaintext through the mapping; the raw disk must hold none of it.
    let mapping = Path::new("/dev/mapper/t-single");
    let plaintext = random_bytes(1 << 20);
    write_at(mapping, 8 << 20, &plaintext);
    assert_eq!(read_at(mapping, 8 << 20, plaintext.len()), plaintext);
    let raw = read_all(&vda);
    for window in plaintext.chunks(4096).step_by(37) {
        assert!(
            !contains(&raw, &window[..32]),
            "plaintext found on the raw disk"
        );
    }

    // The escrowed key is the only way back; none of its encodings is on the disk.
    let key_file = Path::new("/tmp/t-single.key");
    let _ = std::fs::remove_file(key_file);
    let decrypt = tosskey(&[
        "escrow",
        "decrypt",
        "--escrow-file",
        escrow.to_str().unwrap(),
        "--private-key",
        private.to_str().unwrap(),
        "--key-out",
        key_file.to_str().unwrap(),
    ])
    .ok();
    assert!(
        decrypt
            .stdout
            .contains("cryptsetup open --type plain --cipher twofish-xts-plain64 --key-size 512"),
        "{}",
        decrypt.stdout
    );
    assert!(
        decrypt.stdout.contains("--sector-size 4096"),
        "{}",
        decrypt.stdout
    );
    let key = std::fs::read(key_file).unwrap();
    assert_eq!(key.len(), 64);
    assert!(
        !contains(&raw, &key[..32]) && !contains(&raw, &key[32..]),
        "raw key bytes on disk"
    );
    for encoded in [hex(&key), hex(&key).to_uppercase(), base64(&key)] {
        assert!(
            !contains(&raw, &encoded.as_bytes()[..32]),
            "encoded key on disk"
        );
    }

    // status shows the mapping without the key; close removes it.
    let status = tosskey(&["status", "t-single", "--json"]).ok().json();
    let mapping_status = &status[0]["mappings"][0];
    assert_eq!(mapping_status["cipher"], "twofish-xts-plain64");
    assert_eq!(mapping_status["key_bits"], 512);
    assert!(!tosskey(&["status"]).ok().stdout.contains(&hex(&key)[..16]));
    tosskey(&["close", "t-single"]).ok();
    assert!(!mapping.exists());

    // Without the key the data is gone: a new volume over the same disk reads noise there.
    tosskey(&[
        "provision",
        vda.to_str().unwrap(),
        "--name",
        "t-single",
        "--mkfs",
        "none",
    ])
    .ok();
    assert_ne!(read_at(mapping, 8 << 20, plaintext.len()), plaintext);
    std::fs::remove_file(key_file).unwrap();
    std::fs::remove_file(escrow).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn dry_run_prints_the_plan_and_touches_nothing() {
    let vdb = disk(1);
    let before = read_all(&vdb);
    let run = tosskey(&[
        "provision",
        vdb.to_str().unwrap(),
        "--name",
        "t-dry",
        "--dry-run",
    ])
    .ok();
    assert!(
        run.stdout
            .contains("crypt twofish-xts-plain64 :64:logon:tosskey:t-dry 0"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("verify read-only"), "{}", run.stdout);
    assert!(!Path::new("/dev/mapper/t-dry").exists());
    assert!(read_all(&vdb) == before, "the disk changed");
    let plan = tosskey(&[
        "provision",
        vdb.to_str().unwrap(),
        "--name",
        "t-dry",
        "--dry-run",
        "--json",
    ])
    .ok()
    .json();
    assert_eq!(plan["outcome"], "dry-run");
    assert_eq!(plan["plan"]["crypt"]["sector_size"], 4096);
}

/// Runs a provision that must be refused, and checks that nothing on `device` changed
/// (byte for byte: a full copy compares faster than hashing under TCG) and that no mapping
/// appeared.
fn refused(device: &Path, args: &[&str], code: i32, message: &str) {
    let before = read_all(device);
    let status_before = tosskey(&["status"]).ok().stdout;
    tosskey(args).fails_with(code, message);
    assert!(read_all(device) == before, "{} changed", device.display());
    assert_eq!(
        tosskey(&["status"]).ok().stdout,
        status_before,
        "a mapping was left behind"
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn refusals_name_the_device_and_change_nothing() {
    let vdc = disk(2);
    let vdc_str = vdc.to_str().unwrap();
    let _cleanup = Volume::new("t-refuse", &[&vdc]);

    // A filesystem signature without --force: provision and mkfs refuse it alike.
    tosskey(&["mkfs", vdc_str, "--force"]).ok();
    refused(&vdc, &["mkfs", vdc_str], 3, "ext4 filesystem signature");
    refused(
        &vdc,
        &["provision", vdc_str, "--name", "t-refuse"],
        3,
        "ext4 filesystem signature",
    );

    // Mounted (noinit_itable: no background writes while the checksums are compared).
    std::fs::create_dir_all("/mnt/t-refuse").unwrap();
    nix::mount::mount(
        Some(vdc.as_path()),
        "/mnt/t-refuse",
        Some("ext4"),
        nix::mount::MsFlags::empty(),
        Some("noinit_itable"),
    )
    .unwrap();
    refused(
        &vdc,
        &["provision", vdc_str, "--name", "t-refuse", "--force"],
        3,
        "mounted at /mnt/t-refuse",
    );
    refused(
        &vdc,
        &["mkfs", vdc_str, "--force"],
        3,
        "mounted at /mnt/t-refuse",
    );
    nix::mount::umount("/mnt/t-refuse").unwrap();
    zero_range(&vdc, 0, 4 << 20).unwrap();

    // Held by another mapping.
    let dm = tosskey_dm::DmControl::open().unwrap();
    let holder = tosskey_dm::DmName::new("t-holder").unwrap();
    let vdc_dev = tosskey_testkit::DevId::of_block_device(&vdc).unwrap();
    dm.create(&holder, &tosskey_dm::DmUuid::new("OTHER-t-holder").unwrap())
        .unwrap();
    let line = tosskey_dm::LinearTarget {
        device: tosskey_dm::DevId::new(vdc_dev.major, vdc_dev.minor),
        offset: tosskey_dm::Sectors(0),
        length: tosskey_dm::Sectors(2048),
    }
    .line(tosskey_dm::Sectors(0))
    .unwrap();
    dm.load_table(&holder, &[line]).unwrap();
    dm.resume(&holder).unwrap();
    refused(
        &vdc,
        &["provision", vdc_str, "--name", "t-refuse"],
        3,
        "held by",
    );
    refused(&vdc, &["mkfs", vdc_str, "--force"], 3, "held by");
    dm.remove(&holder).unwrap();

    // Nonexistent path, a regular file, a tiny device, an unknown cipher.
    refused(
        &vdc,
        &["provision", "/dev/vdz", "--name", "t-refuse"],
        3,
        "/dev/vdz: no such device",
    );
    std::fs::write("/tmp/t-refuse.img", vec![0u8; 1 << 20]).unwrap();
    refused(
        &vdc,
        &["provision", "/tmp/t-refuse.img", "--name", "t-refuse"],
        3,
        "not a block device",
    );
    let tiny = LoopDevice::new(1 << 20).unwrap();
    refused(
        tiny.path(),
        &[
            "provision",
            tiny.path().to_str().unwrap(),
            "--name",
            "t-refuse",
        ],
        3,
        "too small",
    );
    refused(
        &vdc,
        &[
            "provision",
            vdc_str,
            "--name",
            "t-refuse",
            "--cipher",
            "serpent-cbc-essiv",
        ],
        2,
        "supported:",
    );

    // --force overrides a signature (and only that).
    tosskey(&["mkfs", vdc_str, "--force"]).ok();
    tosskey(&[
        "provision",
        vdc_str,
        "--name",
        "t-refuse",
        "--force",
        "--mkfs",
        "none",
    ])
    .ok();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn rerun_is_idempotent_and_a_name_clash_is_refused() {
    let vdd = disk(3);
    let vdb = disk(1);
    let _cleanup = Volume::new("t-twice", &[&vdd]);
    tosskey(&[
        "provision",
        vdd.to_str().unwrap(),
        "--name",
        "t-twice",
        "--mkfs",
        "none",
    ])
    .ok();
    let before = read_all(&vdd);
    let again = tosskey(&[
        "provision",
        vdd.to_str().unwrap(),
        "--name",
        "t-twice",
        "--mkfs",
        "none",
    ])
    .ok();
    assert!(
        again.stdout.contains("already provisioned") && again.stdout.contains("nothing changed"),
        "{}",
        again.stdout
    );
    assert!(read_all(&vdd) == before, "the disk changed");
    refused(
        &vdb,
        &["provision", vdb.to_str().unwrap(), "--name", "t-twice"],
        3,
        "already provisioned on",
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn close_refuses_a_mounted_volume_unless_asked_to_unmount() {
    let vdb = disk(1);
    let _cleanup = Volume::new("t-close", &[&vdb]);
    tosskey(&[
        "provision",
        vdb.to_str().unwrap(),
        "--name",
        "t-close",
        "--mount",
        "/mnt/t-close",
    ])
    .ok();
    std::fs::write("/mnt/t-close/hello", b"hello").unwrap();
    let status = tosskey(&["status", "t-close"]).ok();
    assert!(
        status.stdout.contains("mounted at /mnt/t-close"),
        "{}",
        status.stdout
    );
    tosskey(&["close", "t-close"]).fails_with(
        3,
        "mounted at /mnt/t-close; unmount it first or pass --unmount",
    );
    assert!(Path::new("/mnt/t-close/hello").exists());
    tosskey(&["close", "t-close", "--unmount"]).ok();
    assert!(!Path::new("/dev/mapper/t-close").exists());
    assert!(tosskey(&["status"])
        .ok()
        .stdout
        .contains("no tosskey volumes"));
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn shred_wipes_the_key_while_the_machine_runs() {
    let vdb = disk(1);
    let _cleanup = Volume::new("t-shred", &[&vdb]);
    tosskey(&[
        "provision",
        vdb.to_str().unwrap(),
        "--name",
        "t-shred",
        "--mkfs",
        "none",
    ])
    .ok();
    let mapping = Path::new("/dev/mapper/t-shred");
    let plaintext = random_bytes(64 << 10);
    write_at(mapping, 1 << 20, &plaintext);
    let table = dmsetup_table("t-shred");
    assert_eq!(table.len(), 1, "{table:#?}");
    assert_eq!(
        table[0].split_whitespace().nth(2),
        Some("crypt"),
        "{table:#?}"
    );
    // A process holds the mapping open, as a running service would: shred cannot remove
    // it, so what the kernel does with it afterwards is observable.
    let holder = File::open(mapping).unwrap();
    let run = tosskey(&["shred", "t-shred"]).ok();
    assert!(
        run.stdout.contains("key wiped from t-shred")
            && run.stdout.contains("stay until their users let go"),
        "{}",
        run.stdout
    );
    // The kernel's table no longer holds a crypt target (nor its key), and the device
    // itself, past the page cache, fails the read of what was written a moment ago.
    assert_error_targets("t-shred", 1);
    assert_direct_read_fails_with_eio(mapping, 1 << 20);
    drop(holder);
    tosskey(&["close", "t-shred"]).ok();
    assert!(!mapping.exists());
    let raw = read_at(&vdb, 1 << 20, plaintext.len());
    assert!(!contains(&raw, &plaintext[..32]));
}

// TOSSKEY_TEST_CRASH_AFTER exists only with the test-hooks feature (scripts/vm-test enables it).
#[cfg(feature = "test-hooks")]
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn crash_after_any_step_converges_on_rerun() {
    let vdb = disk(1);
    let _cleanup = Volume::new("t-crash", &[&vdb]);
    for step in ["journal", "crypt", "verify", "mkfs", "mount"] {
        let crashed = crate::common::tosskey_env(
            &[
                "provision",
                vdb.to_str().unwrap(),
                "--name",
                "t-crash",
                "--mount",
                "/mnt/t-crash",
            ],
            &[("TOSSKEY_TEST_CRASH_AFTER", step)],
        );
        assert_eq!(
            crashed.code, -1,
            "step {step}: expected SIGKILL: {}",
            crashed.stderr
        );
        tosskey(&[
            "provision",
            vdb.to_str().unwrap(),
            "--name",
            "t-crash",
            "--mount",
            "/mnt/t-crash",
        ])
        .ok();
        std::fs::write("/mnt/t-crash/after-crash", step).unwrap();
        tosskey(&["close", "t-crash", "--unmount"]).ok();
        assert!(
            tosskey(&["status"])
                .ok()
                .stdout
                .contains("no tosskey volumes"),
            "after {step}"
        );
    }
}

const HOSTNAME: &str = "/proc/sys/kernel/hostname";

/// Puts the hostname back when the test ends, pass or fail.
struct Hostname(String);

impl Drop for Hostname {
    fn drop(&mut self) {
        let _ = std::fs::write(HOSTNAME, &self.0);
    }
}

/// A hostname the escrow file cannot record (a space and `$`) refuses the run before
/// anything is built: exit 3, not a rolled-back run; no journal, no escrow file.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn escrow_metadata_is_refused_before_anything_is_built() {
    let member = disk(0);
    let _volume = Volume::new("badhost", &[&member]);
    let _restore = Hostname(std::fs::read_to_string(HOSTNAME).unwrap());
    std::fs::write(HOSTNAME, "bad host$").unwrap();
    let (public, _) = escrow_test_keys();
    let escrow = "/tmp/badhost.escrow";
    let _ = std::fs::remove_file(escrow);
    for dry_run in [&["--dry-run"][..], &[]] {
        let mut args = vec![
            "provision",
            member.to_str().unwrap(),
            "--name",
            "badhost",
            "--escrow-key",
            public.to_str().unwrap(),
            "--escrow-file",
            escrow,
        ];
        args.extend(dry_run);
        let run = tosskey(&args);
        assert_eq!(run.code, 3, "{args:?}: {}{}", run.stdout, run.stderr);
        assert!(
            run.stderr
                .contains("the escrow file cannot record this volume")
                && run.stderr.contains("metadata.hostname"),
            "{}",
            run.stderr
        );
        assert!(!run.stderr.contains("rolled back"), "{}", run.stderr);
    }
    assert!(!Path::new(escrow).exists());
    assert!(!Path::new("/run/tosskey/badhost.json").exists());
    assert!(!Path::new("/dev/mapper/badhost").exists());
}
