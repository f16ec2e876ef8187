//! Root tests of key scope (segmented crypt tables) against the guest kernel: one mapping made
//! of 60 crypt targets, each loaded through its own `logon` key. Run with
//! `scripts/vm-test -p tosskey-dm -- segment`.

use std::collections::HashSet;
use std::fs;
use std::process::Command;
use std::time::{Duration, Instant};

use crate::common::{dev_of, hex, name, pattern, read_direct, report, write_direct, Cleanup};
use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{KeyArena, KeySize, SectorCipher, SectorLayout, SectorSize};
use tosskey_dm::{
    activate_crypt_table, wipe_crypt_keys, Activation, Bytes, CryptKeyField, CryptOptions,
    CryptTable, CryptTarget, DmControl, DmName, DmUuid, KeyLoaded, KeyLoading, Sectors,
};
use tosskey_testkit::LoopDevice;

const SEGMENTS: usize = 60;
/// The key scope of these tests: 64 KiB, so 60 segments fit a 3.75 MiB loop device.
const SCOPE: u64 = 64 << 10;

/// 60 segments of 64 KiB over `backing` (aes-xts-plain64, 4096-byte sectors, 16 KiB chunks).
fn sixty_segments(backing: &LoopDevice) -> CryptTable {
    let whole = CryptTarget::new(
        "aes-xts-plain64",
        dev_of(backing),
        Sectors(backing.size_sectors()),
    )
    .unwrap()
    .with_options(CryptOptions {
        sector_size: 4096,
        ..CryptOptions::default()
    });
    let table = CryptTable::split(&whole, Some(Bytes(SCOPE)), Sectors(32)).unwrap();
    assert_eq!(table.len(), SEGMENTS);
    table
}

fn activate(
    dm: &DmControl,
    n: &DmName,
    table: &CryptTable,
    keys: &KeyArena,
    loading: KeyLoading,
) -> Activation {
    let key_slices: Vec<&[u8]> = keys.iter().collect();
    let uuid = DmUuid::new(&format!("TOSSKEY-TEST-{n}")).unwrap();
    activate_crypt_table(dm, n, &uuid, table, &key_slices, loading).unwrap()
}

/// Waits up to 2 s for the key garbage collector to drop invalidated keys from /proc/keys.
fn tosskey_keys_left() -> Vec<String> {
    let deadline = Instant::now() + Duration::from_secs(2);
    loop {
        let keys: Vec<String> = fs::read_to_string("/proc/keys")
            .unwrap_or_default()
            .lines()
            .filter(|line| line.contains("tosskey:"))
            .map(str::to_owned)
            .collect();
        if keys.is_empty() || Instant::now() > deadline {
            return keys;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn sixty_segments_load_sixty_logon_keys_and_re_derive_across_boundaries() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(SEGMENTS as u64 * SCOPE).unwrap();
    let n = name("tkdm-segments");
    let _cleanup = Cleanup(vec![n.clone()]);
    let table = sixty_segments(&backing);
    let keys = KeyArena::generate(KeySize::Bits512, SEGMENTS).unwrap();
    let activation = activate(&dm, &n, &table, &keys, KeyLoading::Keyring);

    let KeyLoaded::Keyring { descriptions } = &activation.key_loaded else {
        panic!("loaded as {:?}", activation.key_loaded)
    };
    assert_eq!(descriptions.iter().collect::<HashSet<_>>().len(), SEGMENTS);
    let leftover = tosskey_keys_left();
    assert!(leftover.is_empty(), "keys left in /proc/keys: {leftover:?}");

    // The table read back: 60 crypt targets, 60 distinct logon keys, offsets and IV offsets
    // continuing, and no key material even in the unelided read.
    let live = dm.table(&n).unwrap();
    assert_eq!(live.len(), SEGMENTS);
    let mut seen = HashSet::new();
    for (entry, segment) in live.iter().zip(table.segments()) {
        assert_eq!(entry.target_type, "crypt");
        assert_eq!(
            (entry.start, entry.length),
            (segment.start, Sectors(SCOPE / 512))
        );
        let crypt = entry.crypt.as_ref().unwrap();
        assert_eq!(crypt.offset, segment.start);
        assert_eq!(crypt.iv_offset, segment.start);
        let CryptKeyField::Keyring {
            bytes,
            key_type,
            description,
        } = &crypt.key
        else {
            panic!("segment at {} has key field {:?}", entry.start, crypt.key)
        };
        assert_eq!((*bytes, key_type.as_str()), (64, "logon"));
        assert!(seen.insert(description.clone()), "{description} twice");
    }
    assert_eq!(seen.len(), SEGMENTS);
    let secret = dm.table_with_keys(&n).unwrap();
    for key in keys.iter() {
        let key_hex = hex(key);
        assert!(secret.iter().all(|e| !e.params.contains(&key_hex[..32])));
    }
    report(&format!(
        "segmented table: {} crypt targets, first {} {} crypt {}, last {} {} crypt {}",
        live.len(),
        live[0].start,
        live[0].length,
        live[0].params,
        live[59].start,
        live[59].length,
        live[59].params
    ));

    // Data through the mapping, re-derived in userspace from the raw backing device as one big
    // plain64 device whose key changes at each boundary.
    let size = usize::try_from(SEGMENTS as u64 * SCOPE).unwrap();
    let plaintext = pattern(size);
    write_direct(&activation.node, 0, &plaintext);
    let raw = read_direct(backing.path(), 0, size);
    let one_device = SectorLayout {
        sector_size: SectorSize::S4096,
        iv_large_sectors: false,
        iv_offset: 0,
    };
    let mut boundaries_checked = 0;
    for (segment, key) in table.segments().iter().zip(keys.iter()) {
        let cipher = SectorCipher::new(BlockCipher::Aes, key, one_device).unwrap();
        let from = usize::try_from(segment.start.0 * 512).unwrap();
        let mut derived = raw[from..from + usize::try_from(SCOPE).unwrap()].to_vec();
        cipher.decrypt(segment.start.0, &mut derived).unwrap();
        assert!(
            derived == plaintext[from..from + derived.len()],
            "segment at {} does not decrypt to what was written",
            segment.start
        );
        boundaries_checked += 1;
    }
    assert_eq!(boundaries_checked, SEGMENTS);
    // The first sector of segment 1 under segment 0's key does not decrypt: the key really
    // changes at the boundary.
    let wrong = SectorCipher::new(BlockCipher::Aes, keys.key(0).unwrap(), one_device).unwrap();
    let after_first = usize::try_from(SCOPE).unwrap();
    let mut under_wrong_key = raw[after_first..after_first + 4096].to_vec();
    wrong.decrypt(SCOPE / 512, &mut under_wrong_key).unwrap();
    assert_ne!(under_wrong_key, plaintext[after_first..after_first + 4096]);
    assert_eq!(read_direct(&activation.node, 0, size), plaintext);

    // Shred: every segment's key is wiped, so the device can no longer be resumed.
    dm.suspend(&n).unwrap();
    assert_eq!(wipe_crypt_keys(&dm, &n).unwrap(), SEGMENTS);
    // Every segment's key is gone, not only the first one's (a resume stops at the first
    // target without a key): the kernel reports each target's key as zeros now, where it
    // named the logon key before.
    let wiped = dm.table_with_keys(&n).unwrap();
    assert_eq!(wiped.len(), SEGMENTS);
    let zeros = "0".repeat(128);
    for entry in &wiped {
        let key_field = entry.params.split_whitespace().nth(1).unwrap();
        assert_eq!(key_field, zeros, "segment at {} kept its key", entry.start);
    }
    let err = dm.resume(&n).unwrap_err();
    assert_eq!(err.errno(), Some(libc::EAGAIN), "{err}");
    dm.remove(&n).unwrap();
    assert!(tosskey_keys_left().is_empty());
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn dmsetup_sees_sixty_segments_with_distinct_logon_keys_and_no_key() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(SEGMENTS as u64 * SCOPE).unwrap();
    let n = name("tkdm-segments-witness");
    let _cleanup = Cleanup(vec![n.clone()]);
    let table = sixty_segments(&backing);
    let keys = KeyArena::generate(KeySize::Bits512, SEGMENTS).unwrap();
    activate(&dm, &n, &table, &keys, KeyLoading::Keyring);

    // --showkeys asks for the key itself: with keyring loading there is none to show.
    let output = Command::new("dmsetup")
        .args(["table", "--showkeys", n.as_str()])
        .output()
        .expect("dmsetup is the witness of this test: run with TOSSKEY_VM_TOOLS including dmsetup");
    assert!(output.status.success(), "{output:?}");
    let text = String::from_utf8(output.stdout).unwrap();
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), SEGMENTS, "{text}");
    let mut descriptions = HashSet::new();
    for (line, segment) in lines.iter().zip(table.segments()) {
        let words: Vec<&str> = line.split_whitespace().collect();
        assert_eq!(words[2], "crypt", "{line}");
        assert_eq!(words[0], segment.start.to_string(), "{line}");
        assert!(words[4].starts_with(":64:logon:tosskey:"), "{line}");
        descriptions.insert(words[4].to_owned());
    }
    assert_eq!(descriptions.len(), SEGMENTS);
    for key in keys.iter() {
        assert!(!text.contains(&hex(key)[..32]));
    }
    report(&format!(
        "dmsetup table --showkeys: {} lines, {} distinct logon keys; line 2: {}",
        lines.len(),
        descriptions.len(),
        lines[1]
    ));
    dm.remove(&n).unwrap();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn sixty_segments_load_as_hex_with_the_keys_in_the_secure_table_only() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(SEGMENTS as u64 * SCOPE).unwrap();
    let n = name("tkdm-segments-hex");
    let _cleanup = Cleanup(vec![n.clone()]);
    let table = sixty_segments(&backing);
    let keys = KeyArena::generate(KeySize::Bits512, SEGMENTS).unwrap();
    let activation = activate(&dm, &n, &table, &keys, KeyLoading::Hex);
    assert_eq!(activation.key_loaded, KeyLoaded::Hex);
    // Each segment carries its own key: the kernel returns key i in target i.
    let secret = dm.table_with_keys(&n).unwrap();
    assert_eq!(secret.len(), SEGMENTS);
    for (entry, key) in secret.iter().zip(keys.iter()) {
        assert!(
            entry.params.contains(hex(key).as_str()),
            "segment at {}",
            entry.start
        );
    }
    assert!(dm
        .table(&n)
        .unwrap()
        .iter()
        .all(|e| e.crypt.as_ref().unwrap().key == CryptKeyField::Hex { bytes: 64 }));
    let data = pattern(8192);
    // Across the first boundary: 4 KiB on each side.
    write_direct(&activation.node, SCOPE - 4096, &data);
    assert_eq!(read_direct(&activation.node, SCOPE - 4096, 8192), data);
    dm.remove(&n).unwrap();
}

/// `MemAvailable` in KiB and the number of dm-crypt kernel threads (`dmcrypt_write/...`,
/// one per crypt target).
fn kernel_footprint() -> (i64, usize) {
    let meminfo = fs::read_to_string("/proc/meminfo").unwrap();
    let available = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemAvailable:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap();
    let write_threads = fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter(|p| {
            fs::read_to_string(p.path().join("comm")).is_ok_and(|c| c.starts_with("dmcrypt_write"))
        })
        .count();
    (available, write_threads)
}

/// What one key costs the kernel: each crypt target is a dm-crypt instance of its own, with
/// its own write thread, workqueues and mempools. Measured here, against one segment over the
/// same device, so the integration can quote it.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn each_segment_is_a_dm_crypt_instance_with_its_own_write_thread() {
    let dm = DmControl::open().unwrap();
    let backing = LoopDevice::new(SEGMENTS as u64 * SCOPE).unwrap();
    let table = sixty_segments(&backing);
    let whole = CryptTable::single(
        CryptTarget::new("aes-xts-plain64", dev_of(&backing), table.length())
            .unwrap()
            .with_options(table.segments()[0].target.options()),
    );
    let mut cost = Vec::new();
    for (label, table) in [("1 segment", &whole), ("60 segments", &table)] {
        let n = name("tkdm-segments-cost");
        let _cleanup = Cleanup(vec![n.clone()]);
        let keys = KeyArena::generate(KeySize::Bits512, table.len()).unwrap();
        let (available_before, threads_before) = kernel_footprint();
        let started = Instant::now();
        activate(&dm, &n, table, &keys, KeyLoading::Keyring);
        let took = started.elapsed();
        let (available_after, threads_after) = kernel_footprint();
        assert_eq!(threads_after - threads_before, table.len(), "{label}");
        cost.push(format!(
            "{label}: activation {took:?}, MemAvailable -{} KiB, +{} dmcrypt_write threads",
            available_before - available_after,
            threads_after - threads_before
        ));
        dm.remove(&n).unwrap();
    }
    report(&format!("kernel cost of key scope: {}", cost.join("; ")));
}
