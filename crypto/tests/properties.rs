//! Property tests: decrypt(encrypt(x)) = x, and one call over a run of sectors gives
//! the same bytes as one call per sector and as the all-cores path.

use proptest::prelude::*;
use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{SectorCipher, SectorLayout, SectorSize};

fn layouts() -> impl Strategy<Value = SectorLayout> {
    (
        any::<bool>(),
        any::<bool>(),
        prop_oneof![Just(0u64), 0u64..1 << 20, Just(u64::MAX - 7)],
    )
        .prop_map(|(big, iv_large_sectors, iv_offset)| SectorLayout {
            sector_size: if big {
                SectorSize::S4096
            } else {
                SectorSize::S512
            },
            iv_large_sectors,
            iv_offset,
        })
}

fn ciphers() -> impl Strategy<Value = (BlockCipher, Vec<u8>)> {
    (
        prop_oneof![Just(BlockCipher::Aes), Just(BlockCipher::Twofish)],
        prop_oneof![
            prop::collection::vec(any::<u8>(), 32),
            prop::collection::vec(any::<u8>(), 64)
        ],
    )
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(48))]

    #[test]
    fn decrypt_inverts_encrypt(
        (cipher, key) in ciphers(),
        layout in layouts(),
        sectors in 1usize..5,
        start_units in 0u64..1 << 30,
        seed in any::<u64>(),
    ) {
        let c = SectorCipher::new(cipher, &key, layout).expect("cipher");
        let size = layout.sector_size.bytes();
        let start = start_units * layout.sector_size.units_of_512();
        let plain: Vec<u8> = (0..sectors * size).map(|i| (seed >> (i % 57)).to_le_bytes()[0] ^ i.to_le_bytes()[0]).collect();
        let mut data = plain.clone();
        c.encrypt(start, &mut data).expect("encrypt");
        prop_assert_ne!(&data, &plain);
        c.decrypt(start, &mut data).expect("decrypt");
        prop_assert_eq!(data, plain);
    }

    #[test]
    fn sector_at_a_time_equals_bulk_equals_parallel(
        (cipher, key) in ciphers(),
        layout in layouts(),
        sectors in 1usize..80,
        start_units in 0u64..1 << 30,
        fill in any::<u8>(),
    ) {
        let c = SectorCipher::new(cipher, &key, layout).expect("cipher");
        let size = layout.sector_size.bytes();
        let units = layout.sector_size.units_of_512();
        let start = start_units * units;
        let plain: Vec<u8> = (0..sectors * size).map(|i| fill.wrapping_add(i.to_le_bytes()[0])).collect();

        let mut bulk = plain.clone();
        c.encrypt(start, &mut bulk).expect("encrypt");
        let mut one_by_one = plain.clone();
        for (i, sector) in one_by_one.chunks_mut(size).enumerate() {
            c.encrypt(start + units * u64::try_from(i).expect("index"), sector).expect("encrypt");
        }
        prop_assert!(bulk == one_by_one);
        let mut parallel = plain.clone();
        c.encrypt_parallel(start, &mut parallel).expect("encrypt");
        prop_assert!(bulk == parallel);

        c.decrypt_parallel(start, &mut parallel).expect("decrypt");
        prop_assert!(parallel == plain);
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// The paths `new` picks on this CPU give the same bytes as the portable ones, and
    /// `new` did pick them: VAES where the CPU has it, the calibrated fastest Twofish
    /// path (each forced Twofish path is compared in twofish_paths.rs).
    #[test]
    fn simd_equals_portable(
        (cipher, key) in ciphers(),
        layout in layouts(),
        sectors in 1usize..20,
        start_units in 0u64..1 << 30,
        fill in any::<u8>(),
    ) {
        let fast = SectorCipher::new(cipher, &key, layout).expect("cipher");
        let portable = SectorCipher::new_portable(cipher, &key, layout).expect("cipher");
        let start = start_units * layout.sector_size.units_of_512();
        let plain: Vec<u8> = (0..sectors * layout.sector_size.bytes())
            .map(|i| fill ^ i.to_le_bytes()[0].rotate_left(3))
            .collect();
        let mut a = plain.clone();
        fast.encrypt(start, &mut a).expect("encrypt");
        let mut b = plain.clone();
        portable.encrypt(start, &mut b).expect("encrypt");
        prop_assert!(a == b, "{} vs {}", fast.implementation(), portable.implementation());
        prop_assert_eq!(fast.implementation(), expected_implementation(cipher, key.len()));
        portable.decrypt(start, &mut a).expect("decrypt");
        prop_assert!(a == plain);
    }
}

/// What `SectorCipher::new` must pick on this CPU.
fn expected_implementation(cipher: BlockCipher, key_len: usize) -> &'static str {
    #[cfg(target_arch = "x86_64")]
    let vaes = std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
        && std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("sse4.1");
    #[cfg(not(target_arch = "x86_64"))]
    let vaes = false;
    match cipher {
        BlockCipher::Aes if vaes => "aes-xts vaes-avx512",
        BlockCipher::Aes => "aes-xts aes-crate (aes-ni when present)",
        BlockCipher::Twofish => {
            let chosen = tosskey_crypto::twofish_calibration(key_len / 2).chosen;
            SectorCipher::with_twofish_path(chosen, &[1; 64], SectorLayout::DEFAULT)
                .expect("the chosen path runs here")
                .implementation()
        }
    }
}

/// Runs big enough to take the multi-threaded path (the property tests above stay
/// under its threshold), ending in a partial work piece, match the sequential result.
#[test]
fn large_parallel_run_equals_sequential() {
    for cipher in [BlockCipher::Aes, BlockCipher::Twofish] {
        for (sector_size, iv_large_sectors) in
            [(SectorSize::S4096, false), (SectorSize::S512, true)]
        {
            let layout = SectorLayout {
                sector_size,
                iv_large_sectors,
                iv_offset: 24,
            };
            let c = SectorCipher::new(cipher, &[0x42; 64], layout).expect("cipher");
            let len = (4 << 20) + 3 * sector_size.bytes();
            let plain: Vec<u8> = (0..len).map(|i| (i % 251).to_le_bytes()[0]).collect();
            let mut seq = plain.clone();
            c.encrypt(8, &mut seq).expect("encrypt");
            let mut par = plain.clone();
            c.encrypt_parallel(8, &mut par).expect("encrypt");
            assert!(seq == par, "{cipher:?} {sector_size:?}");
            c.decrypt_parallel(8, &mut par).expect("decrypt");
            assert!(par == plain, "{cipher:?} {sector_size:?}");
        }
    }
}
