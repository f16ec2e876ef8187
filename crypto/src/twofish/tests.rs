//! Twofish known answers and the `twofish` crate as an oracle.

use super::*;
use rand::{Rng, SeedableRng};
use twofish::cipher::{BlockCipherDecrypt as _, BlockCipherEncrypt as _, KeyInit as _};

fn encrypt_one(key: &TwofishKey, block: [u8; 16]) -> [u8; 16] {
    let mut blocks = [Block::from(block)];
    key.encrypt_blocks(&mut blocks);
    blocks[0].into()
}

fn decrypt_one(key: &TwofishKey, block: [u8; 16]) -> [u8; 16] {
    let mut blocks = [Block::from(block)];
    key.decrypt_blocks(&mut blocks);
    blocks[0].into()
}

fn oracle_encrypt(key: &[u8], block: [u8; 16]) -> [u8; 16] {
    let cipher = twofish::Twofish::new_from_slice(key).expect("valid twofish key length");
    let mut b = Block::from(block);
    cipher.encrypt_block(&mut b);
    b.into()
}

fn unhex<const N: usize>(s: &str) -> [u8; N] {
    hex::decode(s).expect("hex").try_into().expect("length")
}

/// The q0/q1 tables start as printed in the Twofish reference code.
#[test]
fn q_tables_match_reference_prefix() {
    assert_eq!(&Q0[..8], &[0xA9, 0x67, 0xB3, 0xE8, 0x04, 0xFD, 0xA3, 0x76]);
    assert_eq!(&Q1[..8], &[0x75, 0xF3, 0xC6, 0xF4, 0xDB, 0x7B, 0xFB, 0xC8]);
}

/// ECB_TBL.TXT of the Twofish AES submission: a chain starting from an all-zero key and
/// block, where each key is the previous plaintext followed by the start of the previous
/// key and each plaintext is the previous ciphertext. Entries I=1..5 and I=49 as
/// published (Schneier, "Twofish test vectors", ecb_tbl.txt; I=49 also in strongSwan's
/// twofish_cbc.c, which quotes ecb_ival.txt).
#[test]
fn ecb_tbl_chain() {
    let cases: [(usize, [&str; 5], &str, &str); 3] = [
        (
            16,
            [
                "9F589F5CF6122C32B6BFEC2F2AE8C35A",
                "D491DB16E7B1C39E86CB086B789F5419",
                "019F9809DE1711858FAAC3A3BA20FBC3",
                "6363977DE839486297E661C6C9D668EB",
                "816D5BD0FAE35342BF2A7412C246F752",
            ],
            "BCA724A54533C6987E14AA827952F921",
            "5D9D4EEFFA9151575524F115815A12E0",
        ),
        (
            24,
            [
                "EFA71F788965BD4453F860178FC19101",
                "88B2B2706B105E36B446BB6D731A1E88",
                "39DA69D6BA4997D585B6DC073CA341B2",
                "182B02D81497EA45F9DAACDC29193A65",
                "7AFF7A70CA2FF28AC31DD8AE5DAAAB63",
            ],
            "FB66522C332FCC4C042ABE32FA9E902FDEA4F3DA75EC7A8E",
            "E75449212BEEF9F4A390BD860A640941",
        ),
        (
            32,
            [
                "57FF739D4DC92C1BD7FC01700CC8216F",
                "D43BB7556EA32E46F2A282B7D45B4E0D",
                "90AFE91BB288544F2C32DC239B2635E6",
                "6CB4561C40BF0A9705931CB6D408E7FA",
                "3059D6D61753B958D92F4781C8640E58",
            ],
            "248A7F3528B168ACFDD1386E3F51E30C2E2158BC3E5FC714C1EEECA0EA696D48",
            "37FE26FF1CF66175F5DDF4C33B97A205",
        ),
    ];
    for (key_len, first_five, key_49, ct_49) in cases {
        let mut key = vec![0u8; key_len];
        let mut plain = [0u8; 16];
        for i in 1..=49 {
            let expanded = TwofishKey::new(&key);
            let cipher = encrypt_one(&expanded, plain);
            assert_eq!(decrypt_one(&expanded, cipher), plain, "I={i} round trip");
            if i <= 5 {
                assert_eq!(
                    cipher,
                    unhex::<16>(first_five[i - 1]),
                    "{key_len}-byte key, I={i}"
                );
            }
            if i == 49 {
                assert_eq!(
                    hex::encode_upper(&key),
                    key_49,
                    "{key_len}-byte key, I=49 key"
                );
                assert_eq!(cipher, unhex::<16>(ct_49), "{key_len}-byte key, I=49");
            }
            let mut next = plain.to_vec();
            next.extend_from_slice(&key[..key_len - 16]);
            key = next;
            plain = cipher;
        }
    }
}

/// ECB_VK (one key bit set, zero block) and ECB_VT (zero key, one block bit set), every
/// entry for 128-, 192- and 256-bit keys, against the `twofish` crate.
#[test]
fn ecb_vk_vt_against_oracle() {
    for key_len in [16usize, 24, 32] {
        for bit in 0..key_len * 8 {
            let mut key = vec![0u8; key_len];
            key[bit / 8] = 0x80 >> (bit % 8);
            let ours = encrypt_one(&TwofishKey::new(&key), [0; 16]);
            assert_eq!(
                ours,
                oracle_encrypt(&key, [0; 16]),
                "VK {key_len} bit {bit}"
            );
        }
        let zero_key = TwofishKey::new(&vec![0u8; key_len]);
        for bit in 0..128 {
            let mut block = [0u8; 16];
            block[bit / 8] = 0x80 >> (bit % 8);
            let ours = encrypt_one(&zero_key, block);
            assert_eq!(
                ours,
                oracle_encrypt(&vec![0u8; key_len], block),
                "VT {key_len} bit {bit}"
            );
        }
    }
}

/// Random keys and blocks, every batch size the interleaved path can see.
#[test]
fn random_keys_and_batches_against_oracle() {
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x7f15);
    for round in 0..64 {
        let key_len = [16usize, 24, 32][round % 3];
        let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
        let ours = TwofishKey::new(&key);
        let oracle = twofish::Twofish::new_from_slice(&key).expect("key");
        let n = round % 11 + 1;
        let mut blocks: Vec<Block> = (0..n)
            .map(|_| {
                let b: [u8; 16] = rng.gen();
                Block::from(b)
            })
            .collect();
        let original = blocks.clone();
        let mut expected = blocks.clone();
        for b in &mut expected {
            oracle.encrypt_block(b);
        }
        ours.encrypt_blocks(&mut blocks);
        assert_eq!(blocks, expected, "encrypt, key {key_len} bytes, {n} blocks");
        let mut check = expected.clone();
        for b in &mut check {
            oracle.decrypt_block(b);
        }
        assert_eq!(check, original);
        ours.decrypt_blocks(&mut blocks);
        assert_eq!(blocks, original, "decrypt, key {key_len} bytes, {n} blocks");
    }
}
