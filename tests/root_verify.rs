//! Root test (VM guest): the read-only verification catches a mapping whose key or cipher
//! differs from what userspace believes.

use std::fs::{File, OpenOptions};
use std::os::unix::fs::OpenOptionsExt as _;

use tosskey::verify::{spread_offsets, verify_sectors};
use tosskey_crypto::sector::{SectorCipher, SectorLayout, SectorSize};
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

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn verification_catches_a_wrong_key_and_a_wrong_cipher() {
    let backing = LoopDevice::new(32 << 20).unwrap();
    let dev = backing.dev();
    let key: Vec<u8> = (0u8..64).collect();
    let dm = DmControl::open().unwrap();
    let name = DmName::new("t-verify").unwrap();
    let target = CryptTarget::new(
        "twofish-xts-plain64",
        DevId::new(dev.major, dev.minor),
        Sectors(backing.size_sectors()),
    )
    .unwrap()
    .with_options(CryptOptions {
        sector_size: 4096,
        ..CryptOptions::default()
    });
    let activation = activate_crypt(
        &dm,
        &name,
        &DmUuid::new("TOSSKEY-test-verify").unwrap(),
        &target,
        &key,
        KeyLoading::Keyring,
    )
    .unwrap();

    let layout = SectorLayout {
        sector_size: SectorSize::S4096,
        iv_large_sectors: false,
        iv_offset: 0,
    };
    let offsets = spread_offsets(backing.size_bytes(), 4096, &[12345, 999_999]);
    let verify = |cipher: &SectorCipher| {
        verify_sectors(
            &open_direct(backing.path()),
            0,
            &open_direct(&activation.node),
            cipher,
            4096,
            &offsets,
        )
        .unwrap()
    };
    let right = SectorCipher::new(BlockCipher::Twofish, &key, layout).unwrap();
    assert!(verify(&right).all_matched());

    let mut wrong_key = key.clone();
    wrong_key[63] ^= 1;
    let report = verify(&SectorCipher::new(BlockCipher::Twofish, &wrong_key, layout).unwrap());
    assert!(
        report.checks.iter().all(|c| !c.matched),
        "a wrong key must mismatch everywhere"
    );

    let report = verify(&SectorCipher::new(BlockCipher::Aes, &key, layout).unwrap());
    assert!(
        report.checks.iter().all(|c| !c.matched),
        "a wrong cipher must mismatch everywhere"
    );

    let wrong_sector = SectorLayout {
        sector_size: SectorSize::S512,
        ..layout
    };
    let report = verify(&SectorCipher::new(BlockCipher::Twofish, &key, wrong_sector).unwrap());
    assert!(!report.all_matched(), "a wrong sector size must not verify");
    dm.remove(&name).unwrap();
}
