//! Key memory as the process's own mapping table shows it: the sector cipher's expanded
//! keys are locked while the cipher lives, and a wiped key arena is no longer mapped.
//! These read process-wide state (VmLck, /proc/self/smaps), so they are an executable of
//! their own beside tests/tests.rs (its other tests create ciphers and arenas on every
//! thread), and take turns.

#[path = "common/smaps.rs"]
mod smaps;

use std::sync::Mutex;

use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{KeyArena, KeySize, SectorCipher, SectorLayout};

/// Held by each test: one at a time reads and changes the process's locked memory.
static PROCESS_MEMORY: Mutex<()> = Mutex::new(());

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
    let _turn = PROCESS_MEMORY.lock().unwrap();
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

/// `wipe` returning true is not the evidence: the kernel's mapping table is. Before the
/// wipe the arena's address lies in a whole locked page (`Locked:`, `lo`) excluded from
/// dumps (`dd`); after it, in no mapping at all.
#[test]
fn wiping_an_arena_unmaps_its_locked_pages() {
    let _turn = PROCESS_MEMORY.lock().unwrap();
    let arena = KeyArena::generate(KeySize::Bits512, 3).unwrap();
    assert!(arena.iter().all(|key| key.iter().any(|&b| b != 0)));
    let address = arena.key(0).expect("key 0").as_ptr().addr();
    let mapping = smaps::mapping_at(address).expect("the arena is mapped");
    assert!(
        mapping.bytes >= 4096
            && mapping.locked_kb >= 4
            && mapping.flags.iter().any(|f| f == "lo")
            && mapping.flags.iter().any(|f| f == "dd"),
        "the arena's mapping is not locked and excluded from dumps: {mapping:?}"
    );
    assert!(arena.wipe());
    let after = smaps::mapping_at(address);
    assert!(
        after.is_none(),
        "the wiped arena's address {address:#x} is still mapped: {after:?}"
    );
}
