//! The public sector cipher against published XTS vectors and the `xts-mode` crate
//! (with the `aes` and `twofish` crates) as an independent oracle, plus the dm-crypt
//! IV arithmetic and argument checks.

use aes::cipher::KeyInit;
use rand::{Rng, SeedableRng};
use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{Error, SectorCipher, SectorLayout, SectorSize};
use xts_mode::Xts128;

fn layout(sector_size: SectorSize, iv_large_sectors: bool, iv_offset: u64) -> SectorLayout {
    SectorLayout {
        sector_size,
        iv_large_sectors,
        iv_offset,
    }
}

/// The IEEE 1619 512-byte plaintext: bytes 00..ff twice.
fn ieee_plaintext() -> Vec<u8> {
    (0..512u32)
        .map(|i| u8::try_from(i % 256).expect("byte"))
        .collect()
}

/// IEEE 1619-2007 annex B vector 4 (XTS-AES-128, data unit 0) and vector 10
/// (XTS-AES-256, data unit 0xff), as one 512-byte dm-crypt sector at that position.
#[test]
fn ieee_1619_vectors_4_and_10() {
    let v4_key = "2718281828459045235360287471352631415926535897932384626433832795";
    let v4_ct = "27a7479befa1d476489f308cd4cfa6e2a96e4bbe3208ff25287dd3819616e89cc78cf7f5e543445f8333d8fa7f56000005279fa5d8b5e4ad40e736ddb4d35412328063fd2aab53e5ea1e0a9f332500a5df9487d07a5c92cc512c8866c7e860ce93fdf166a24912b422976146ae20ce846bb7dc9ba94a767aaef20c0d61ad02655ea92dc4c4e41a8952c651d33174be51a10c421110e6d81588ede82103a252d8a750e8768defffed9122810aaeb99f9172af82b604dc4b8e51bcb08235a6f4341332e4ca60482a4ba1a03b3e65008fc5da76b70bf1690db4eae29c5f1badd03c5ccf2a55d705ddcd86d449511ceb7ec30bf12b1fa35b913f9f747a8afd1b130e94bff94effd01a91735ca1726acd0b197c4e5b03393697e126826fb6bbde8ecc1e08298516e2c9ed03ff3c1b7860f6de76d4cecd94c8119855ef5297ca67e9f3e7ff72b1e99785ca0a7e7720c5b36dc6d72cac9574c8cbbc2f801e23e56fd344b07f22154beba0f08ce8891e643ed995c94d9a69c9f1b5f499027a78572aeebd74d20cc39881c213ee770b1010e4bea718846977ae119f7a023ab58cca0ad752afe656bb3c17256a9f6e9bf19fdd5a38fc82bbe872c5539edb609ef4f79c203ebb140f2e583cb2ad15b4aa5b655016a8449277dbd477ef2c8d6c017db738b18deb4a427d1923ce3ff262735779a418f20a282df920147beabe421ee5319d0568";
    let v10_key = "27182818284590452353602874713526624977572470936999595749669676273141592653589793238462643383279502884197169399375105820974944592";
    let v10_ct = "1c3b3a102f770386e4836c99e370cf9bea00803f5e482357a4ae12d414a3e63b5d31e276f8fe4a8d66b317f9ac683f44680a86ac35adfc3345befecb4bb188fd5776926c49a3095eb108fd1098baec70aaa66999a72a82f27d848b21d4a741b0c5cd4d5fff9dac89aeba122961d03a757123e9870f8acf1000020887891429ca2a3e7a7d7df7b10355165c8b9a6d0a7de8b062c4500dc4cd120c0f7418dae3d0b5781c34803fa75421c790dfe1de1834f280d7667b327f6c8cd7557e12ac3a0f93ec05c52e0493ef31a12d3d9260f79a289d6a379bc70c50841473d1a8cc81ec583e9645e07b8d9670655ba5bbcfecc6dc3966380ad8fecb17b6ba02469a020a84e18e8f84252070c13e9f1f289be54fbc481457778f616015e1327a02b140f1505eb309326d68378f8374595c849d84f4c333ec4423885143cb47bd71c5edae9be69a2ffeceb1bec9de244fbe15992b11b77c040f12bd8f6a975a44a0f90c29a9abc3d4d893927284c58754cce294529f8614dcd2aba991925fedc4ae74ffac6e333b93eb4aff0479da9a410e4450e0dd7ae4c6e2910900575da401fc07059f645e8b7e9bfdef33943054ff84011493c27b3429eaedb4ed5376441a77ed43851ad77f16f541dfd269d50d6a5f14fb0aab1cbb4c1550be97f7ab4066193c4caa773dad38014bd2092fa755c824bb5e54c4f36ffda9fcea70b9c6e693e148c151";
    for (key, position, ciphertext) in [(v4_key, 0u64, v4_ct), (v10_key, 0xff, v10_ct)] {
        let key = hex::decode(key).expect("hex");
        let cipher =
            SectorCipher::new(BlockCipher::Aes, &key, SectorLayout::DEFAULT).expect("cipher");
        let mut data = ieee_plaintext();
        cipher.encrypt(position, &mut data).expect("encrypt");
        assert_eq!(
            hex::encode(&data),
            ciphertext,
            "{}",
            cipher.implementation()
        );
        cipher.decrypt(position, &mut data).expect("decrypt");
        assert_eq!(data, ieee_plaintext());
    }
}

/// Expected bytes from the `xts-mode` crate: each crypt sector encrypted with the
/// plain64 IV this test computes from first principles.
fn oracle(cipher: BlockCipher, key: &[u8], layout: SectorLayout, start: u64, data: &mut [u8]) {
    let (k1, k2) = key.split_at(key.len() / 2);
    let size = layout.sector_size.bytes();
    let units = u64::try_from(size / 512).expect("units");
    let shift = units.trailing_zeros();
    for (i, sector) in data.chunks_mut(size).enumerate() {
        // u64 wrapping, as the kernel's `cc_sector`.
        let position =
            (start + units * u64::try_from(i).expect("index")).wrapping_add(layout.iv_offset);
        let iv_sector = if layout.iv_large_sectors {
            position >> shift
        } else {
            position
        };
        let mut iv = [0u8; 16];
        iv[..8].copy_from_slice(&iv_sector.to_le_bytes());
        match (cipher, k1.len()) {
            (BlockCipher::Aes, 16) => Xts128::new(
                aes::Aes128::new_from_slice(k1).expect("k"),
                aes::Aes128::new_from_slice(k2).expect("k"),
            )
            .encrypt_sector(sector, iv.into()),
            (BlockCipher::Aes, 32) => Xts128::new(
                aes::Aes256::new_from_slice(k1).expect("k"),
                aes::Aes256::new_from_slice(k2).expect("k"),
            )
            .encrypt_sector(sector, iv.into()),
            (BlockCipher::Twofish, _) => Xts128::new(
                twofish::Twofish::new_from_slice(k1).expect("k"),
                twofish::Twofish::new_from_slice(k2).expect("k"),
            )
            .encrypt_sector(sector, iv.into()),
            other => panic!("unexpected {other:?}"),
        }
    }
}

#[test]
fn matches_xts_mode_oracle_for_every_layout() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x1619);
    for cipher in [BlockCipher::Aes, BlockCipher::Twofish] {
        for key_len in [32usize, 64] {
            for sector_size in [SectorSize::S512, SectorSize::S4096] {
                for iv_large_sectors in [false, true] {
                    for iv_offset in [0u64, 8, 1000, u64::MAX - 7] {
                        let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
                        let l = layout(sector_size, iv_large_sectors, iv_offset);
                        let units = sector_size.units_of_512();
                        let start = units * rng.gen_range(0..1000u64);
                        let plain: Vec<u8> =
                            (0..sector_size.bytes() * 3).map(|_| rng.gen()).collect();
                        let mut expected = plain.clone();
                        oracle(cipher, &key, l, start, &mut expected);
                        let ours = SectorCipher::new(cipher, &key, l).expect("cipher");
                        let mut data = plain.clone();
                        ours.encrypt(start, &mut data).expect("encrypt");
                        assert!(
                            data == expected,
                            "{cipher:?} key {key_len} {l:?} start {start} ({})",
                            ours.implementation()
                        );
                        ours.decrypt(start, &mut data).expect("decrypt");
                        assert!(data == plain);
                    }
                }
            }
        }
    }
}

/// With 4096-byte sectors and IVs in 512-byte units, the second sector of the mapping
/// uses IV 8 (not 1); with iv_large_sectors it uses 1.
#[test]
fn second_4k_sector_uses_iv_8_or_1() {
    let key: Vec<u8> = (0..64u8).collect();
    let sector = vec![0x5au8; 4096];
    let single = |iv_sector: u64| {
        let mut d = sector.clone();
        let l = layout(SectorSize::S512, false, 0);
        SectorCipher::new(BlockCipher::Twofish, &key, l)
            .expect("cipher")
            .encrypt(iv_sector, &mut d[..512])
            .expect("encrypt");
        d[..512].to_vec()
    };
    for (large, expected_iv, wrong_iv) in [(false, 8u64, 1u64), (true, 1, 8)] {
        let l = layout(SectorSize::S4096, large, 0);
        let cipher = SectorCipher::new(BlockCipher::Twofish, &key, l).expect("cipher");
        let mut data = [sector.clone(), sector.clone()].concat();
        cipher.encrypt(0, &mut data).expect("encrypt");
        // The first 512 bytes of a 4 KiB XTS sector depend only on its IV.
        assert_eq!(
            &data[4096..4608],
            single(expected_iv).as_slice(),
            "iv_large_sectors={large}"
        );
        assert_ne!(&data[4096..4608], single(wrong_iv).as_slice());
    }
}

#[test]
fn iv_sector_follows_the_kernel() {
    let l = layout(SectorSize::S4096, false, 24);
    assert_eq!(l.iv_sector(16), 40);
    let l = layout(SectorSize::S4096, true, 24);
    assert_eq!(l.iv_sector(16), 5);
    let l = layout(SectorSize::S512, false, u64::MAX);
    assert_eq!(l.iv_sector(2), 1, "the kernel's u64 arithmetic wraps");
}

#[test]
fn rejects_bad_arguments_with_clear_errors() {
    let key = [7u8; 64];
    assert!(matches!(
        SectorCipher::new(BlockCipher::Aes, &key[..48], SectorLayout::DEFAULT),
        Err(Error::XtsKeyLength { len: 48, .. })
    ));
    assert!(matches!(
        SectorCipher::new(BlockCipher::Twofish, &key[..16], SectorLayout::DEFAULT),
        Err(Error::XtsKeyLength { len: 16, .. })
    ));
    let cipher = SectorCipher::new(BlockCipher::Aes, &key, layout(SectorSize::S4096, false, 0))
        .expect("cipher");
    let mut data = vec![0u8; 8192];
    let err = cipher.encrypt(4, &mut data).expect_err("unaligned start");
    assert!(matches!(
        err,
        Error::UnalignedStart {
            start: 4,
            sector_size: 4096
        }
    ));
    assert!(err.to_string().contains("multiple of 8"), "{err}");
    assert!(matches!(
        cipher.decrypt_parallel(0, &mut data[..4608]),
        Err(Error::PartialSector {
            len: 4608,
            sector_size: 4096
        })
    ));
    assert!(matches!(
        cipher.encrypt(u64::MAX - 7, &mut data),
        Err(Error::SectorOverflow { .. })
    ));
    assert!(matches!(
        SectorSize::try_from(1024u64),
        Err(Error::SectorSize { bytes: 1024 })
    ));
    // Rejected calls leave the data alone.
    assert!(data.iter().all(|&b| b == 0));
}

#[test]
fn debug_output_shows_no_key_material() {
    let key = [0xabu8; 64];
    for c in [BlockCipher::Aes, BlockCipher::Twofish] {
        let cipher = SectorCipher::new(c, &key, SectorLayout::DEFAULT).expect("cipher");
        let text = format!("{cipher:?} {cipher:#?}").to_lowercase();
        assert!(
            !text.contains("ab, ") && !text.contains("abab") && !text.contains("171"),
            "{text}"
        );
        assert!(text.contains("sectorcipher"), "{text}");
    }
}
