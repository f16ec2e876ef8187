//! VolumeKey: sizes, randomness, locking, hygiene of Debug/hex, key files.

use crate::common::smaps;

use std::os::unix::fs::PermissionsExt;

use smaps::Mapping;
use tosskey_crypto::{Error, KeyArena, KeySize, VolumeKey};
use zeroize::Zeroizing;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

#[test]
fn key_sizes_come_from_key_size_bits() {
    assert_eq!(KeySize::from_bits(256).unwrap(), KeySize::Bits256);
    assert_eq!(KeySize::try_from(512).unwrap(), KeySize::Bits512);
    for bits in [0, 128, 384, 1024] {
        let err = KeySize::from_bits(bits).unwrap_err();
        assert!(matches!(err, Error::UnsupportedKeySize { .. }));
        assert!(err.to_string().contains("--key-size 256 or 512"), "{err}");
    }
    for size in [KeySize::Bits256, KeySize::Bits512] {
        let key = VolumeKey::generate(size).unwrap();
        assert_eq!(key.len(), size.bytes());
        assert_eq!(key.bits(), size.bits());
        assert_eq!(key.key_size(), size);
        assert_eq!(key.expose_secret().len() * 8, key.bits() as usize);
    }
}

#[test]
fn generated_keys_are_random() {
    let a = VolumeKey::generate(KeySize::Bits512).unwrap();
    let b = VolumeKey::generate(KeySize::Bits512).unwrap();
    assert_ne!(a.expose_secret(), b.expose_secret());
    // 64 random bytes: the chance of more than 8 zero bytes is negligible (~1e-9).
    let zeros = a.expose_secret().iter().filter(|&&x| x == 0).count();
    assert!(zeros <= 8, "{zeros} zero bytes");
}

#[test]
fn debug_shows_only_the_size() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let debug = format!("{key:?}");
    assert_eq!(debug, "VolumeKey(<512 bits>)");
    let pretty = format!("{key:#?}");
    assert!(!pretty.contains(&hex(key.expose_secret())));
    // No 2-byte window of the key, in hex, shows up either.
    for pair in key.expose_secret().windows(2) {
        assert!(!debug.contains(&hex(pair)));
    }
}

#[test]
fn hex_is_lower_case_and_exact() {
    let bytes: Vec<u8> = (0u8..32).map(|i| i.wrapping_mul(37) ^ 0xa5).collect();
    let key = VolumeKey::from_secret_bytes(Zeroizing::new(bytes.clone())).unwrap();
    assert_eq!(key.to_hex().as_str(), hex(&bytes));
    let all: Vec<u8> = (0u8..64).map(|i| i * 4 + 3).collect();
    let key = VolumeKey::from_secret_bytes(Zeroizing::new(all.clone())).unwrap();
    assert_eq!(key.to_hex().as_str(), hex(&all));
}

#[test]
fn recovered_keys_must_be_32_or_64_bytes() {
    for len in [0, 1, 16, 31, 33, 48, 63, 65, 128] {
        let err = VolumeKey::from_secret_bytes(Zeroizing::new(vec![7; len])).unwrap_err();
        assert!(matches!(err, Error::KeyLength { len: l } if l == len));
    }
    let key = VolumeKey::from_secret_bytes(Zeroizing::new(vec![7; 64])).unwrap();
    assert_eq!(key.expose_secret(), &[7u8; 64][..]);
}

/// The mapping of /proc/self/smaps that holds `address`; it must exist.
fn mapping_at(address: usize) -> Mapping {
    smaps::mapping_at(address).unwrap_or_else(|| panic!("no mapping holds {address:#x}"))
}

fn locked_kb_at(address: usize) -> u64 {
    mapping_at(address).locked_kb
}

#[test]
fn key_memory_is_locked_while_alive() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let address = key.expose_secret().as_ptr().addr();
    assert!(locked_kb_at(address) >= 4, "the key's page is not mlocked");
    let recovered = VolumeKey::from_secret_bytes(Zeroizing::new(vec![1; 32])).unwrap();
    assert!(locked_kb_at(recovered.expose_secret().as_ptr().addr()) >= 4);
}

#[test]
fn keys_do_not_share_a_locked_page() {
    // munlock is per page and not counted: two keys on one page would unlock each other.
    let page = 4096;
    let keys: Vec<VolumeKey> = (0..8)
        .map(|_| VolumeKey::generate(KeySize::Bits256).unwrap())
        .collect();
    let mut pages: Vec<usize> = keys
        .iter()
        .map(|k| k.expose_secret().as_ptr().addr() / page)
        .collect();
    for k in &keys {
        assert_eq!(
            k.expose_secret().as_ptr().addr() % page,
            0,
            "key not page-aligned"
        );
    }
    pages.sort_unstable();
    pages.dedup();
    assert_eq!(pages.len(), keys.len());
}

#[test]
fn key_file_is_raw_bytes_mode_0400_and_never_overwritten() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("volume.key");
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    key.write_key_file(&path).unwrap();
    assert_eq!(std::fs::read(&path).unwrap(), key.expose_secret());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777;
    assert_eq!(mode, 0o400);

    let other = VolumeKey::generate(KeySize::Bits512).unwrap();
    let err = other.write_key_file(&path).unwrap_err();
    assert!(matches!(err, Error::FileExists { .. }), "{err}");
    assert_eq!(std::fs::read(&path).unwrap(), key.expose_secret());
    // No temp file is left behind.
    assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 1);
}

#[test]
fn keys_are_excluded_from_core_dumps() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let flags = mapping_at(key.expose_secret().as_ptr().addr()).flags;
    assert!(flags.iter().any(|f| f == "dd"), "VmFlags {flags:?}");
}

#[test]
fn three_hundred_keys_share_one_locked_undumpable_mapping_of_five_pages() {
    let arena = KeyArena::generate(KeySize::Bits512, 300).unwrap();
    assert_eq!(arena.len(), 300);
    // 300 x 64 bytes = 19200 bytes: 5 pages of 4 KiB, against 300 pages for 300 VolumeKeys.
    let page = 4096;
    assert_eq!(arena.locked_bytes(), 19200usize.div_ceil(page) * page);
    let first = arena.key(0).unwrap().as_ptr().addr();
    let last = arena.key(299).unwrap().as_ptr().addr();
    // The kernel may merge it with an adjacent mapping of the same kind (another test's key),
    // so the area holding the keys is at least the arena, wholly locked.
    let mapping = mapping_at(first);
    assert!(mapping.bytes >= arena.locked_bytes());
    assert_eq!(mapping.locked_kb * 1024, mapping.bytes as u64);
    assert!(
        mapping.flags.iter().any(|f| f == "dd"),
        "{:?}",
        mapping.flags
    );
    assert!(
        mapping.flags.iter().any(|f| f == "lo"),
        "{:?}",
        mapping.flags
    );
    assert_eq!(last - first, 299 * 64, "keys are packed");
    assert_eq!(
        mapping_at(last).bytes,
        mapping.bytes,
        "one mapping holds every key"
    );
    // Distinct random keys, none with equal XTS halves.
    let distinct: std::collections::HashSet<&[u8]> = arena.iter().collect();
    assert_eq!(distinct.len(), 300);
    assert!(arena.iter().all(|k| k[..32] != k[32..]));
    assert_eq!(format!("{arena:?}"), "KeyArena(<300 keys of 512 bits>)");
}
