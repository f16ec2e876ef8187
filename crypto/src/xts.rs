//! XTS (IEEE 1619-2007) over one data unit (a crypt sector), the way Linux's
//! `crypto/xts.c` runs it for dm-crypt: the tweak is E_K2(IV), then multiplied by the
//! primitive element alpha of GF(2^128) (polynomial x^128 + x^7 + x^2 + x + 1, blocks
//! read as little-endian 128-bit numbers) from one 16-byte block to the next.
//! Sector sizes are multiples of 16, so ciphertext stealing never happens.

/// Bytes in a cipher block (AES and Twofish).
pub(crate) const BLOCK: usize = 16;

/// One cipher block, as the RustCrypto block-cipher traits take it.
pub(crate) type Block = aes::Block;

/// A 128-bit block cipher that can work on many blocks at once.
pub(crate) trait BlockBatch {
    fn encrypt_blocks(&self, blocks: &mut [Block]);
    fn decrypt_blocks(&self, blocks: &mut [Block]);
}

/// The `plain64` IV: the 64-bit sector number little-endian, zero-padded to 16 bytes.
pub(crate) fn plain64_iv(iv_sector: u64) -> [u8; BLOCK] {
    let mut iv = [0u8; BLOCK];
    iv[..8].copy_from_slice(&iv_sector.to_le_bytes());
    iv
}

/// Multiplies a tweak by alpha (a one-bit left shift of the little-endian number,
/// reducing the carry with 0x87).
#[inline(always)]
pub(crate) fn mul_alpha(t: u128) -> u128 {
    let carry = t >> 127;
    (t << 1) ^ (carry * 0x87)
}

/// Blocks handled per pass: enough for the batch ciphers to pipeline.
const PASS: usize = 32;

/// Encrypts (`encrypt = true`) or decrypts one sector in place with the data cipher
/// `data` and the already encrypted initial tweak `tweak`.
pub(crate) fn xts_sector<C: BlockBatch + ?Sized>(
    data: &C,
    mut tweak: u128,
    sector: &mut [u8],
    encrypt: bool,
) {
    debug_assert_eq!(sector.len() % BLOCK, 0);
    let mut blocks = [Block::default(); PASS];
    let mut tweaks = [0u128; PASS];
    for pass in sector.chunks_mut(PASS * BLOCK) {
        let n = pass.len() / BLOCK;
        for ((block, t), bytes) in blocks
            .iter_mut()
            .zip(tweaks.iter_mut())
            .zip(pass.chunks_exact(BLOCK))
        {
            *t = tweak;
            tweak = mul_alpha(tweak);
            let x = u128::from_le_bytes(bytes.try_into().unwrap_or([0; BLOCK])) ^ *t;
            block.copy_from_slice(&x.to_le_bytes());
        }
        if encrypt {
            data.encrypt_blocks(&mut blocks[..n]);
        } else {
            data.decrypt_blocks(&mut blocks[..n]);
        }
        for ((block, t), bytes) in blocks
            .iter()
            .zip(tweaks.iter())
            .zip(pass.chunks_exact_mut(BLOCK))
        {
            let y = u128::from_le_bytes(block.as_slice().try_into().unwrap_or([0; BLOCK])) ^ *t;
            bytes.copy_from_slice(&y.to_le_bytes());
        }
    }
    // Whatever plaintext/ciphertext went through the scratch buffers is not secret
    // beyond the caller's own buffer, but the tweaks are key-derived: clear them.
    zeroize::Zeroize::zeroize(&mut tweaks);
    for block in &mut blocks {
        zeroize::Zeroize::zeroize(block.as_mut_slice());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alpha_shifts_and_reduces() {
        assert_eq!(mul_alpha(1), 2);
        assert_eq!(mul_alpha(1 << 127), 0x87);
        assert_eq!(mul_alpha((1 << 127) | 1), 0x87 ^ 2);
    }

    use crate::aes_cipher::AesKey;

    /// XTS over a whole buffer with an arbitrary 16-byte IV, the way the crypto API
    /// is driven by test vectors (dm-crypt only ever passes plain64 IVs).
    fn xts_with_iv(key: &[u8], iv: &[u8], data: &mut [u8], encrypt: bool) {
        let (k1, k2) = key.split_at(key.len() / 2);
        let data_key = AesKey::new(k1).expect("key");
        let tweak_key = AesKey::new(k2).expect("key");
        let mut t = [Block::try_from(iv).expect("a 16-byte IV")];
        tweak_key.encrypt_blocks(&mut t);
        let tweak = u128::from_le_bytes(t[0].into());
        xts_sector(&data_key, tweak, data, encrypt);
    }

    fn check(key: &str, iv: &str, plain: &str, cipher: &str) {
        let key = hex::decode(key).expect("hex");
        let iv = hex::decode(iv).expect("hex");
        let mut data = hex::decode(plain).expect("hex");
        xts_with_iv(&key, &iv, &mut data, true);
        assert_eq!(hex::encode(&data), cipher);
        xts_with_iv(&key, &iv, &mut data, false);
        assert_eq!(hex::encode(&data), plain);
    }

    /// IEEE 1619-2007 annex B, vectors 1 and 2 (32-byte data units).
    #[test]
    fn ieee_1619_vectors_1_and_2() {
        check(
            &"00".repeat(32),
            &"00".repeat(16),
            &"00".repeat(32),
            "917cf69ebd68b2ec9b9fe9a3eadda692cd43d2f59598ed858c02c2652fbf922e",
        );
        check(
            &format!("{}{}", "11".repeat(16), "22".repeat(16)),
            "33333333330000000000000000000000",
            &"44".repeat(32),
            "c454185e6a16936e39334038acef838bfb186fff7480adc4289382ecd6d394f0",
        );
    }

    /// NIST CAVS XTSGenAES256 #101 as used by cryptsetup's tests/crypto-vectors.c: a
    /// 64-byte key and a full 16-byte IV.
    #[test]
    fn cavs_xtsgenaes256_101() {
        check(
            "266c336b3b01489f3267f52835fd92f674374b88b4e1ebd2d36a5f457581d9d0\
             42c3eef7b0b7e5137b086496b4d9e6ac658d7196a23f23f036172fdb8faee527",
            "06b209a7a22f486ecbfadb0f3137ba42",
            "ca7d65ef8d3dfad345b61ccddca1ad81de830b9e86c7b426d76cb7db766852d9\
             81c6b21409399d78f42cc0b33a7bbb06",
            "c73256870cc2f4dd57acc74b5456dbd776912a128bc1f77d72cdebbf270044b7\
             a43ceed29025e1e8be211fa3c3ed002d",
        );
    }

    #[test]
    fn plain64_is_little_endian_zero_padded() {
        let iv = plain64_iv(0x0102_0304_0506_0708);
        assert_eq!(iv, [8, 7, 6, 5, 4, 3, 2, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
    }
}
