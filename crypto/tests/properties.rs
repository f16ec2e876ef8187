//! Property tests: decrypt(encrypt(x)) = x, and one call over a run of sectors gives
//! the same bytes as one call per sector and as the all-cores path.

use proptest::prelude::*;
use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{SectorCipher, SectorLayout, SectorSize, TwofishPath};

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

/// XTS keys of both sizes (two 128-bit or two 256-bit halves).
fn xts_keys() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        prop::collection::vec(any::<u8>(), 32),
        prop::collection::vec(any::<u8>(), 64)
    ]
}

fn ciphers() -> impl Strategy<Value = (BlockCipher, Vec<u8>)> {
    (
        prop_oneof![Just(BlockCipher::Aes), Just(BlockCipher::Twofish)],
        xts_keys(),
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

/// Encrypts the same run with `fast` and `portable`: the bytes must agree, and `portable`
/// must decrypt what `fast` wrote.
fn same_bytes(
    fast: &SectorCipher,
    portable: &SectorCipher,
    layout: SectorLayout,
    sectors: usize,
    start_units: u64,
    fill: u8,
) -> Result<(), TestCaseError> {
    let start = start_units * layout.sector_size.units_of_512();
    let plain: Vec<u8> = (0..sectors * layout.sector_size.bytes())
        .map(|i| fill ^ i.to_le_bytes()[0].rotate_left(3))
        .collect();
    let mut a = plain.clone();
    fast.encrypt(start, &mut a).expect("encrypt");
    let mut b = plain.clone();
    portable.encrypt(start, &mut b).expect("encrypt");
    prop_assert!(
        a == b,
        "{} vs {}",
        fast.implementation(),
        portable.implementation()
    );
    portable.decrypt(start, &mut a).expect("decrypt");
    prop_assert!(a == plain);
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(24))]

    /// Where the CPU has VAES and AVX-512, `new` picks the VAES AES path, and it gives the
    /// portable path's bytes. Elsewhere `new` and `new_portable` are the same AES code, so
    /// the comparison would prove nothing: the test is ignored there.
    #[test]
    #[cfg_attr(not(tosskey_host_vaes512), ignore = "this CPU lacks VAES with AVX-512")]
    fn cpu_feature_vaes_aes_equals_portable(
        key in xts_keys(),
        layout in layouts(),
        sectors in 1usize..20,
        start_units in 0u64..1 << 30,
        fill in any::<u8>(),
    ) {
        let fast = SectorCipher::new(BlockCipher::Aes, &key, layout).expect("cipher");
        prop_assert_eq!(fast.implementation(), "aes-xts vaes-avx512");
        let portable = SectorCipher::new_portable(BlockCipher::Aes, &key, layout).expect("cipher");
        same_bytes(&fast, &portable, layout, sectors, start_units, fill)?;
    }

    /// Where the CPU has AVX2, every SIMD Twofish path it runs gives the portable path's
    /// bytes on random runs. The calibration, not a rule, decides which path `new` takes
    /// (it may measure the portable one fastest: twofish_paths.rs checks that choice), so
    /// each SIMD path is forced here. Ignored without AVX2, where there is none to compare.
    #[test]
    #[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
    fn cpu_feature_simd_twofish_paths_equal_portable(
        key in xts_keys(),
        layout in layouts(),
        sectors in 1usize..20,
        start_units in 0u64..1 << 30,
        fill in any::<u8>(),
    ) {
        let simd: Vec<TwofishPath> = TwofishPath::ALL
            .into_iter()
            .filter(|path| *path != TwofishPath::Portable && path.runs_here())
            .collect();
        prop_assert!(simd.contains(&TwofishPath::Avx2Shuffle), "{:?}", simd);
        let portable =
            SectorCipher::new_portable(BlockCipher::Twofish, &key, layout).expect("cipher");
        for path in simd {
            let forced = SectorCipher::with_twofish_path(path, &key, layout).expect("cipher");
            prop_assert_eq!(forced.twofish_path(), Some(path));
            same_bytes(&forced, &portable, layout, sectors, start_units, fill)?;
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
