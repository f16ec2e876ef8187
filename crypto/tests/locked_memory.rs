//! The sector cipher's expanded keys sit in locked memory while it lives (its own test
//! binary: VmLck is process-wide, so no other test may create ciphers meanwhile).

use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{SectorCipher, SectorLayout};

fn locked_kib() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").expect("/proc/self/status");
    let line = status
        .lines()
        .find(|l| l.starts_with("VmLck:"))
        .expect("VmLck line");
    line.split_whitespace()
        .nth(1)
        .expect("value")
        .parse()
        .expect("number")
}

#[test]
fn expanded_keys_are_mlocked_while_alive() {
    let before = locked_kib();
    let ciphers: Vec<SectorCipher> = [BlockCipher::Aes, BlockCipher::Twofish]
        .into_iter()
        .flat_map(|c| {
            [
                SectorCipher::new(c, &[1; 64], SectorLayout::DEFAULT).expect("cipher"),
                SectorCipher::new_portable(c, &[2; 32], SectorLayout::DEFAULT).expect("cipher"),
            ]
        })
        .collect();
    let during = locked_kib();
    // Every cipher locks at least one whole 4 KiB page of its own.
    assert!(during >= before + 4 * 4, "VmLck {before} kB -> {during} kB");
    drop(ciphers);
    assert_eq!(locked_kib(), before, "pages unlocked on drop");
}
