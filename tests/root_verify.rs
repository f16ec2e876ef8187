//! Root test (VM guest): the read-only verification catches a mapping whose key or cipher
//! differs from what userspace believes, and checks every key of a mapping with a key scope
//! against its own range.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;

use tosskey::exec::verify::{
    pick_sectors, spread_offsets, verify_ranges, Encryption, KeyedRange, Pick, RawSide, Sides,
};
use tosskey_crypto::sector::{SectorLayout, SectorSize};
use tosskey_crypto::spec::BlockCipher;
use tosskey_dm::{
    activate_crypt, CryptOptions, CryptTarget, DevId, DmControl, DmName, DmUuid, KeyLoading,
    Sectors,
};
use tosskey_testkit::LoopDevice;

fn open_direct(path: &std::path::Path) -> File {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap()
}

/// twofish-xts-plain64 with 4096-byte sectors over the whole of `backing`.
fn twofish_target(backing: &LoopDevice) -> CryptTarget {
    let dev = backing.dev();
    CryptTarget::new(
        "twofish-xts-plain64",
        DevId::new(dev.major, dev.minor),
        Sectors(backing.size_sectors()),
    )
    .unwrap()
    .with_options(CryptOptions {
        sector_size: 4096,
        ..CryptOptions::default()
    })
}

const LAYOUT: SectorLayout = SectorLayout {
    sector_size: SectorSize::S4096,
    iv_large_sectors: false,
    iv_offset: 0,
};

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn verification_catches_a_wrong_key_and_a_wrong_cipher() {
    let backing = LoopDevice::new(32 << 20).unwrap();
    let key: Vec<u8> = (0u8..64).collect();
    let dm = DmControl::open().unwrap();
    let name = DmName::new("t-verify").unwrap();
    let target = twofish_target(&backing);
    let activation = activate_crypt(
        &dm,
        &name,
        &DmUuid::new("TOSSKEY-test-verify").unwrap(),
        &target,
        &key,
        KeyLoading::Keyring,
    )
    .unwrap();

    let layout = LAYOUT;
    let offsets = spread_offsets(backing.size_bytes(), 4096, &[12345, 999_999]);
    let picks: Vec<Pick> = offsets
        .iter()
        .map(|&offset| Pick { range: 0, offset })
        .collect();
    let verify = |cipher: BlockCipher, key: &[u8], layout: SectorLayout| {
        verify_ranges(
            Sides {
                raw: RawSide::Device(&open_direct(backing.path())),
                raw_offset: 0,
                mapping: &open_direct(&activation.node),
                sector_size: 4096,
                encryption: Encryption { cipher, layout },
                ranges: &[KeyedRange {
                    start: 0,
                    length: backing.size_bytes(),
                    key,
                }],
            },
            &picks,
        )
        .unwrap()
    };
    let right = verify(BlockCipher::Twofish, &key, layout);
    assert!(right.all_matched());
    assert_eq!(
        right.checks.iter().map(|c| c.offset).collect::<Vec<_>>(),
        offsets,
        "one check per pick, in order"
    );

    let mut wrong_key = key.clone();
    wrong_key[63] ^= 1;
    let report = verify(BlockCipher::Twofish, &wrong_key, layout);
    assert!(
        report.checks.iter().all(|c| !c.matched),
        "a wrong key must mismatch everywhere"
    );

    let report = verify(BlockCipher::Aes, &key, layout);
    assert!(
        report.checks.iter().all(|c| !c.matched),
        "a wrong cipher must mismatch everywhere"
    );

    let wrong_sector = SectorLayout {
        sector_size: SectorSize::S512,
        ..layout
    };
    let report = verify(BlockCipher::Twofish, &key, wrong_sector);
    assert!(!report.all_matched(), "a wrong sector size must not verify");
    dm.remove(&name).unwrap();
}

/// A mapping with several keys (key scope): every range is checked with its own key, in
/// parallel, and a wrong key for one range mismatches exactly that range's sectors.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn each_segment_is_verified_with_its_own_key() {
    use tosskey_crypto::key::{KeyArena, KeySize};
    use tosskey_dm::{activate_crypt_table, Bytes, CryptTable};

    const SEGMENT: u64 = 4 << 20;
    let backing = LoopDevice::new(12 * SEGMENT).unwrap();
    let dm = DmControl::open().unwrap();
    let name = DmName::new("t-verify-segments").unwrap();
    let table =
        CryptTable::split(&twofish_target(&backing), Some(Bytes(SEGMENT)), Sectors(0)).unwrap();
    assert_eq!(table.len(), 12);
    let keys = KeyArena::generate(KeySize::Bits512, 12).unwrap();
    let key_slices: Vec<&[u8]> = keys.iter().collect();
    let activation = activate_crypt_table(
        &dm,
        &name,
        &DmUuid::new("TOSSKEY-test-verify-segments").unwrap(),
        &table,
        &key_slices,
        KeyLoading::Keyring,
    )
    .unwrap();
    let encryption = Encryption {
        cipher: BlockCipher::Twofish,
        layout: LAYOUT,
    };
    let mut wrong = keys.key(5).unwrap().to_vec();
    wrong[0] ^= 1;
    let verify = |wrong_at: Option<usize>| {
        let ranges: Vec<KeyedRange<'_>> = table
            .segments()
            .iter()
            .enumerate()
            .map(|(index, segment)| KeyedRange {
                start: segment.start.0 * 512,
                length: segment.target.length().0 * 512,
                key: if Some(index) == wrong_at {
                    &wrong
                } else {
                    key_slices[index]
                },
            })
            .collect();
        let picks = pick_sectors(&ranges, 4096, 2).unwrap();
        let report = verify_ranges(
            Sides {
                raw: RawSide::Device(&open_direct(backing.path())),
                raw_offset: 0,
                mapping: &open_direct(&activation.node),
                sector_size: 4096,
                encryption,
                ranges: &ranges,
            },
            &picks,
        )
        .unwrap();
        (picks, report)
    };
    let (picks, report) = verify(None);
    assert!(report.all_matched());
    // First, last and 2 random sectors of each of the 12 ranges (random ones may coincide).
    assert!(
        picks.len() >= 12 * 2 && picks.len() <= 12 * 4,
        "{}",
        picks.len()
    );
    for segment in 0..12u64 {
        for at in [segment * SEGMENT, (segment + 1) * SEGMENT - 4096] {
            assert!(picks.iter().any(|p| p.offset == at), "byte {at} not picked");
        }
    }
    let (picks, report) = verify(Some(5));
    for (pick, check) in picks.iter().zip(&report.checks) {
        assert_eq!(pick.offset, check.offset);
        assert_eq!(check.matched, pick.range != 5, "{pick:?}");
    }
    dm.remove(&name).unwrap();
}
