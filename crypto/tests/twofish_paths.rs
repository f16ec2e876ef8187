//! Every Twofish-XTS implementation, forced instead of calibrated, gives the portable
//! path's bytes; the calibration measures every path this CPU runs and picks the one
//! that measured fastest. A path this CPU lacks is reported as ignored (the build
//! script tells the tests which features the building CPU has), never as a pass.
//! The same paths are also checked against the kernel's ciphertext in kernel_vectors.rs.

use rand::{Rng, SeedableRng};
use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{twofish_calibration, SectorCipher, SectorLayout, SectorSize, TwofishPath};

fn layouts() -> [SectorLayout; 4] {
    [
        SectorLayout::DEFAULT,
        SectorLayout {
            sector_size: SectorSize::S4096,
            iv_large_sectors: false,
            iv_offset: 0,
        },
        SectorLayout {
            sector_size: SectorSize::S4096,
            iv_large_sectors: true,
            iv_offset: 8 * 12_345,
        },
        SectorLayout {
            sector_size: SectorSize::S512,
            iv_large_sectors: false,
            iv_offset: u64::MAX - 7,
        },
    ]
}

/// Encrypts and decrypts random runs with `path` and with the portable path, for both
/// key sizes and every layout, sequentially and on all cores.
fn agrees_with_portable(path: TwofishPath) {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x2f15);
    for key_len in [32usize, 64] {
        for layout in layouts() {
            let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
            let forced = SectorCipher::with_twofish_path(path, &key, layout).expect("cipher");
            assert_eq!(forced.twofish_path(), Some(path));
            let portable =
                SectorCipher::new_portable(BlockCipher::Twofish, &key, layout).expect("cipher");
            let size = layout.sector_size.bytes();
            let units = layout.sector_size.units_of_512();
            // A few sectors, and a run big enough for the all-cores path.
            for sectors in [1usize, 3, (1 << 20) / size + 1] {
                let start = units * rng.gen_range(0u64..1 << 30);
                let plain: Vec<u8> = (0..sectors * size).map(|_| rng.gen()).collect();
                let mut expected = plain.clone();
                portable.encrypt(start, &mut expected).expect("encrypt");
                let mut data = plain.clone();
                forced.encrypt(start, &mut data).expect("encrypt");
                assert!(
                    data == expected,
                    "{path}: {key_len}-byte key, {layout:?}, {sectors} sectors at {start}"
                );
                let mut parallel = plain.clone();
                forced
                    .encrypt_parallel(start, &mut parallel)
                    .expect("encrypt");
                assert!(parallel == expected, "{path}: all-cores encryption");
                forced.decrypt(start, &mut data).expect("decrypt");
                assert!(data == plain, "{path}: decryption");
                forced
                    .decrypt_parallel(start, &mut parallel)
                    .expect("decrypt");
                assert!(parallel == plain, "{path}: all-cores decryption");
            }
        }
    }
}

#[test]
fn portable_path_forced_agrees_with_portable() {
    agrees_with_portable(TwofishPath::Portable);
}

#[test]
#[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
fn cpu_feature_avx2_shuffle_path_agrees_with_portable() {
    agrees_with_portable(TwofishPath::Avx2Shuffle);
}

#[test]
#[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
fn cpu_feature_avx2_loads_path_agrees_with_portable() {
    agrees_with_portable(TwofishPath::Avx2Loads);
}

#[test]
#[cfg_attr(not(tosskey_host_avx512f), ignore = "this CPU lacks AVX-512F")]
fn cpu_feature_avx512_gather_path_agrees_with_portable() {
    agrees_with_portable(TwofishPath::Avx512Gather);
}

/// Forcing a path the CPU cannot run is a clear error, not a fallback.
#[test]
#[cfg_attr(tosskey_host_avx512f, ignore = "this CPU runs every twofish path")]
fn forcing_a_path_this_cpu_lacks_is_refused() {
    let error =
        SectorCipher::with_twofish_path(TwofishPath::Avx512Gather, &[7; 64], SectorLayout::DEFAULT)
            .expect_err("this CPU has no AVX-512F");
    assert_eq!(
        error.to_string(),
        "the avx512-gather twofish path does not run on this CPU (it needs x86-64 AVX-512F \
         and SSE4.1); use the default path"
    );
}

/// For each XTS key size, the calibration timed exactly the paths this CPU runs, chose
/// the fastest of them, and `SectorCipher::new` uses the choice.
#[test]
fn calibration_measures_every_runnable_path_and_new_uses_the_fastest() {
    for xts_key_len in [32, 64] {
        check_calibration(xts_key_len);
    }
}

fn check_calibration(xts_key_len: usize) {
    let calibration = twofish_calibration(xts_key_len / 2);
    let measured: Vec<TwofishPath> = calibration.rates.iter().map(|(p, _)| *p).collect();
    let runnable: Vec<TwofishPath> = TwofishPath::ALL
        .into_iter()
        .filter(|p| p.runs_here())
        .collect();
    assert_eq!(measured, runnable);
    for (path, rate) in &calibration.rates {
        assert!(rate.is_finite() && *rate > 0.0, "{path}: {rate} MiB/s");
    }
    let fastest = calibration
        .rates
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .expect("portable always runs");
    assert_eq!(calibration.chosen, fastest.0, "{}", calibration.reason());
    let cipher = SectorCipher::new(
        BlockCipher::Twofish,
        &vec![9; xts_key_len],
        SectorLayout::DEFAULT,
    )
    .expect("cipher");
    assert_eq!(cipher.twofish_path(), Some(calibration.chosen));
    assert!(calibration
        .reason()
        .starts_with(&format!("fastest measured: {} ", calibration.chosen)));
}

/// Where the CPU has AVX2, both AVX2 paths take part in the calibration.
#[test]
#[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
fn cpu_feature_calibration_includes_the_avx2_paths() {
    let measured: Vec<TwofishPath> = twofish_calibration(32)
        .rates
        .iter()
        .map(|(p, _)| *p)
        .collect();
    assert!(measured.contains(&TwofishPath::Avx2Shuffle), "{measured:?}");
    assert!(measured.contains(&TwofishPath::Avx2Loads), "{measured:?}");
}
