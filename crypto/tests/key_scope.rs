//! Key scope in userspace: a mapping split into segments (consecutive crypt targets, one key
//! each, as `tosskey_dm::CryptTable` builds them) numbers its IVs exactly as one big plain64
//! mapping would, so that only the key changes at a segment boundary.

use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{KeyArena, KeySize, SectorCipher, SectorLayout, SectorSize};
use tosskey_dm::{Bytes, CryptOptions, CryptTable, CryptTarget, DevId, Sectors};

/// A mapping of 1 MiB + 12 KiB (no multiple of the scope) from sector 2048 of its device,
/// IVs starting at 80, split under a 64 KiB key scope with 16 KiB chunks.
fn table(iv_large_sectors: bool) -> (CryptTarget, CryptTable) {
    let whole = CryptTarget::new("aes-xts-plain64", DevId::new(7, 0), Sectors(2048 + 24))
        .unwrap()
        .with_offset(Sectors(2048))
        .with_iv_offset(Sectors(80))
        .with_options(CryptOptions {
            sector_size: 4096,
            iv_large_sectors,
            ..CryptOptions::default()
        });
    let table = CryptTable::split(&whole, Some(Bytes(64 << 10)), Sectors(32)).unwrap();
    (whole, table)
}

fn layout(iv_offset: Sectors, iv_large_sectors: bool) -> SectorLayout {
    SectorLayout {
        sector_size: SectorSize::S4096,
        iv_large_sectors,
        iv_offset: iv_offset.0,
    }
}

/// Plaintext: byte i = (i * 7 + 3) mod 256 (as in the kernel vectors).
fn pattern(len: usize) -> Vec<u8> {
    (0..len).map(|i| (i * 7 + 3).to_le_bytes()[0]).collect()
}

#[test]
fn every_sector_of_every_segment_gets_the_iv_of_one_plain64_device() {
    for iv_large in [false, true] {
        let (whole, table) = table(iv_large);
        assert_eq!(table.len(), 17, "16 full 64 KiB segments and a 12 KiB one");
        let one_device = layout(whole.iv_offset(), iv_large);
        for segment in table.segments() {
            let in_segment = layout(segment.target.iv_offset(), iv_large);
            for position in (0..segment.target.length().0).step_by(8) {
                assert_eq!(
                    in_segment.iv_sector(position),
                    one_device.iv_sector(segment.start.0 + position),
                    "segment at {} sector {position} (iv_large_sectors {iv_large})",
                    segment.start
                );
            }
        }
    }
}

#[test]
fn data_encrypted_segment_by_segment_re_derives_as_one_device_under_each_key() {
    for iv_large in [false, true] {
        let (whole, table) = table(iv_large);
        let keys = KeyArena::generate(KeySize::Bits512, table.len()).unwrap();
        let total = usize::try_from(table.length().0 * 512).unwrap();
        let plaintext = pattern(total);

        // What the kernel does: each segment's target encrypts its own sectors with its own
        // key, positions relative to the segment, IVs from the segment's iv_offset.
        let mut by_segment = plaintext.clone();
        for (segment, key) in table.segments().iter().zip(keys.iter()) {
            let cipher = SectorCipher::new(
                BlockCipher::Aes,
                key,
                layout(segment.target.iv_offset(), iv_large),
            )
            .unwrap();
            let from = usize::try_from(segment.start.0 * 512).unwrap();
            let to = from + usize::try_from(segment.target.length().0 * 512).unwrap();
            cipher.encrypt(0, &mut by_segment[from..to]).unwrap();
        }

        // One plain64 device over the whole mapping, re-keyed at each boundary: identical.
        for (segment, key) in table.segments().iter().zip(keys.iter()) {
            let cipher =
                SectorCipher::new(BlockCipher::Aes, key, layout(whole.iv_offset(), iv_large))
                    .unwrap();
            let from = usize::try_from(segment.start.0 * 512).unwrap();
            let to = from + usize::try_from(segment.target.length().0 * 512).unwrap();
            let mut expected = plaintext[from..to].to_vec();
            cipher.encrypt(segment.start.0, &mut expected).unwrap();
            assert_eq!(
                by_segment[from..to],
                expected[..],
                "segment at {} (iv_large_sectors {iv_large})",
                segment.start
            );
        }

        // And the keys really differ: the same plaintext sector at the same IV position under
        // the next segment's key would not match.
        let second = &table.segments()[1];
        let wrong = SectorCipher::new(
            BlockCipher::Aes,
            keys.key(0).unwrap(),
            layout(whole.iv_offset(), iv_large),
        )
        .unwrap();
        let from = usize::try_from(second.start.0 * 512).unwrap();
        let mut under_first_key = plaintext[from..from + 4096].to_vec();
        wrong.encrypt(second.start.0, &mut under_first_key).unwrap();
        assert_ne!(under_first_key[..], by_segment[from..from + 4096]);
    }
}
