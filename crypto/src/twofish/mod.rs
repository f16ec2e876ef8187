//! Twofish (Schneier et al., 1998) with "full keying": the key-dependent S-boxes are
//! folded with the MDS matrix into four 256-entry u32 tables once per key, so that the
//! g function is four table look-ups and three XORs per word (the published `twofish`
//! crate recomputes the S-boxes on every block, which is ~100x slower).
//!
//! The scalar code here is the portable path and the reference for the SIMD path in
//! `crate::simd_x86`; both are checked against the `twofish` crate and the AES-submission
//! known-answer tables in `tests/`.

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::xts::{Block, BlockBatch};

/// The 4-bit permutations t0..t3 that build q0 and q1 (Twofish paper, section 4.3.5).
pub(crate) const Q0_T: [[u8; 16]; 4] = [
    [8, 1, 7, 13, 6, 15, 3, 2, 0, 11, 5, 9, 14, 12, 10, 4],
    [14, 12, 11, 8, 1, 2, 3, 5, 15, 4, 10, 6, 7, 0, 9, 13],
    [11, 10, 5, 14, 6, 13, 9, 0, 12, 8, 15, 3, 2, 4, 7, 1],
    [13, 7, 15, 4, 1, 2, 6, 14, 9, 11, 3, 0, 8, 5, 12, 10],
];
pub(crate) const Q1_T: [[u8; 16]; 4] = [
    [2, 8, 11, 13, 15, 7, 6, 14, 3, 1, 9, 4, 0, 10, 12, 5],
    [1, 14, 2, 11, 4, 12, 3, 7, 6, 13, 10, 5, 15, 9, 0, 8],
    [4, 12, 7, 5, 1, 6, 9, 10, 0, 14, 13, 8, 2, 11, 3, 15],
    [11, 9, 5, 1, 12, 3, 13, 14, 6, 4, 7, 15, 2, 0, 8, 10],
];

pub(crate) const fn ror4(x: u8, n: u32) -> u8 {
    ((x >> n) | (x << (4 - n))) & 0xf
}

const fn q_byte(t: &[[u8; 16]; 4], x: u8) -> u8 {
    let a0 = x >> 4;
    let b0 = x & 0xf;
    let a1 = a0 ^ b0;
    let b1 = (a0 ^ ror4(b0, 1) ^ (a0 << 3)) & 0xf;
    let a2 = t[0][a1 as usize];
    let b2 = t[1][b1 as usize];
    let a3 = a2 ^ b2;
    let b3 = (a2 ^ ror4(b2, 1) ^ (a2 << 3)) & 0xf;
    let a4 = t[2][a3 as usize];
    let b4 = t[3][b3 as usize];
    (b4 << 4) | a4
}

const fn q_table(t: &[[u8; 16]; 4]) -> [u8; 256] {
    let mut out = [0u8; 256];
    let mut i = 0;
    while i < 256 {
        // i < 256, so the cast is exact.
        #[allow(clippy::cast_possible_truncation)]
        let x = i as u8;
        out[i] = q_byte(t, x);
        i += 1;
    }
    out
}

const Q0: [u8; 256] = q_table(&Q0_T);
const Q1: [u8; 256] = q_table(&Q1_T);

/// Multiplication in GF(2^8) modulo `poly` (given with its x^8 bit).
pub(crate) const fn gf_mul(mut a: u8, mut b: u8, poly: u16) -> u8 {
    let mut acc: u8 = 0;
    while b != 0 {
        if b & 1 != 0 {
            acc ^= a;
        }
        let hi = a & 0x80 != 0;
        a <<= 1;
        if hi {
            // The x^8 bit falls off the u8; xor in the remaining reduction bits.
            a ^= (poly & 0xff) as u8;
        }
        b >>= 1;
    }
    acc
}

/// MDS matrix over GF(2^8)/(x^8+x^6+x^5+x^3+1).
pub(crate) const MDS: [[u8; 4]; 4] = [
    [0x01, 0xEF, 0x5B, 0x5B],
    [0x5B, 0xEF, 0xEF, 0x01],
    [0xEF, 0x5B, 0x01, 0xEF],
    [0xEF, 0x01, 0xEF, 0x5B],
];
pub(crate) const MDS_POLY: u16 = 0x169;

/// Reed-Solomon matrix over GF(2^8)/(x^8+x^6+x^3+x^2+1) deriving the S-box key words.
const RS: [[u8; 8]; 4] = [
    [0x01, 0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E],
    [0xA4, 0x56, 0x82, 0xF3, 0x1E, 0xC6, 0x68, 0xE5],
    [0x02, 0xA1, 0xFC, 0xC1, 0x47, 0xAE, 0x3D, 0x19],
    [0xA4, 0x55, 0x87, 0x5A, 0x58, 0xDB, 0x9E, 0x03],
];
const RS_POLY: u16 = 0x14D;

/// Column `column` of the MDS matrix times `y`, as a little-endian word.
fn mds_column(column: usize, y: u8) -> u32 {
    u32::from_le_bytes([
        gf_mul(MDS[0][column], y, MDS_POLY),
        gf_mul(MDS[1][column], y, MDS_POLY),
        gf_mul(MDS[2][column], y, MDS_POLY),
        gf_mul(MDS[3][column], y, MDS_POLY),
    ])
}

/// The q box applied before xoring key word `w` (index 0..4) at each byte position,
/// true meaning q1 (paper, section 4.3.2, figure 2).
pub(crate) const Q_BEFORE_KEY_WORD: [[bool; 4]; 4] = [
    [false, false, true, true],
    [false, true, false, true],
    [true, true, false, false],
    [true, false, false, true],
];
/// The last q box of the chain, after key word 0.
pub(crate) const Q_LAST: [bool; 4] = [true, false, true, false];

fn q(is_q1: bool, v: u8) -> u8 {
    if is_q1 {
        Q1[usize::from(v)]
    } else {
        Q0[usize::from(v)]
    }
}

/// The S-box chain of the h function at byte `position`, keyed by `words` (k = 2, 3 or
/// 4 words; the highest word is applied first).
fn h_sbox(position: usize, x: u8, words: &[u32]) -> u8 {
    let mut y = x;
    for (w, word) in words.iter().enumerate().rev() {
        y = q(Q_BEFORE_KEY_WORD[w][position], y) ^ word.to_le_bytes()[position];
    }
    q(Q_LAST[position], y)
}

/// h(X, L): the S-box chain on each byte of `x`, then the MDS matrix.
fn h(x: u32, words: &[u32]) -> u32 {
    x.to_le_bytes()
        .iter()
        .enumerate()
        .fold(0, |acc, (position, &byte)| {
            acc ^ mds_column(position, h_sbox(position, byte, words))
        })
}

/// The Twofish key: 40 round subkeys and the four key-dependent g tables
/// (`g_tables[256 * j + b]` = MDS column j times s_j(b)), stored inline so that the
/// whole schedule lives wherever its owner put it (the sector cipher keeps it in
/// locked pages). Zeroized on drop.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct TwofishKey {
    pub(crate) subkeys: [u32; 40],
    /// Four tables of 256 words, table j at `[256 * j..256 * (j + 1)]`.
    pub(crate) g_tables: [u32; 1024],
    /// Key words in the S-box chain (2, 3 or 4).
    pub(crate) sbox_steps: usize,
    /// The S-box chain as 4-bit tables for byte shuffles: for byte position p and
    /// chain step i, entry `2 * (4 * p + i)` maps the low nibble of the q box's last
    /// stage (its t2 input) to the output's low nibble xor the key byte's low nibble,
    /// entry `+ 1` the same for the high nibble (t3). Each 16-byte table is stored
    /// twice, once per 128-bit lane.
    pub(crate) nibble_tables: [[u8; 32]; 32],
}

impl core::fmt::Debug for TwofishKey {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("TwofishKey(..)")
    }
}

impl TwofishKey {
    /// An all-zero schedule to be filled in place by [`Self::expand`].
    pub(crate) const fn zeroed() -> Self {
        Self {
            subkeys: [0; 40],
            g_tables: [0; 1024],
            sbox_steps: 0,
            nibble_tables: [[0; 32]; 32],
        }
    }

    /// Expands a 16-, 24- or 32-byte key into a new value (tests; the sector cipher
    /// expands in place).
    #[cfg(test)]
    pub(crate) fn new(key: &[u8]) -> Self {
        let mut k = Self::zeroed();
        k.expand(key);
        k
    }

    /// Expands a 16-, 24- or 32-byte key into `self`. Other lengths are a caller bug
    /// (the sector cipher validates lengths first).
    pub(crate) fn expand(&mut self, key: &[u8]) {
        assert!(
            matches!(key.len(), 16 | 24 | 32),
            "twofish key length checked by caller"
        );
        let k = key.len() / 8;
        let mut even = [0u32; 4];
        let mut odd = [0u32; 4];
        let mut sbox_words = [0u32; 4];
        for i in 0..k {
            let chunk = &key[8 * i..8 * i + 8];
            even[i] = u32::from_le_bytes([chunk[0], chunk[1], chunk[2], chunk[3]]);
            odd[i] = u32::from_le_bytes([chunk[4], chunk[5], chunk[6], chunk[7]]);
            let mut s = [0u8; 4];
            for (row, out) in RS.iter().zip(s.iter_mut()) {
                *out = row
                    .iter()
                    .zip(chunk)
                    .fold(0, |acc, (&r, &m)| acc ^ gf_mul(r, m, RS_POLY));
            }
            // S is used in reverse order: S_{k-1}, ..., S_0.
            sbox_words[k - 1 - i] = u32::from_le_bytes(s);
        }
        const RHO: u32 = 0x0101_0101;
        for (i, pair) in (0u32..).zip(self.subkeys.chunks_exact_mut(2)) {
            let a = h(2 * i * RHO, &even[..k]);
            let b = h((2 * i + 1) * RHO, &odd[..k]).rotate_left(8);
            pair[0] = a.wrapping_add(b);
            pair[1] = a.wrapping_add(b.wrapping_mul(2)).rotate_left(9);
        }
        for (position, table) in self.g_tables.chunks_exact_mut(256).enumerate() {
            for (byte, entry) in (0..=255u8).zip(table.iter_mut()) {
                *entry = mds_column(position, h_sbox(position, byte, &sbox_words[..k]));
            }
        }
        self.sbox_steps = k;
        // The chain applies the highest key word first.
        for (step, word) in (0..k).rev().enumerate() {
            let mut key_bytes = sbox_words[word].to_le_bytes();
            for (position, (&is_q1, key_byte)) in
                Q_BEFORE_KEY_WORD[word].iter().zip(key_bytes).enumerate()
            {
                let t = if is_q1 { &Q1_T } else { &Q0_T };
                let index = 2 * (4 * position + step);
                for (v, (&t2, &t3)) in t[2].iter().zip(&t[3]).enumerate() {
                    for lane in [v, v + 16] {
                        self.nibble_tables[index][lane] = t2 ^ (key_byte & 0xf);
                        self.nibble_tables[index + 1][lane] = t3 ^ (key_byte >> 4);
                    }
                }
            }
            key_bytes.zeroize();
        }
        even.zeroize();
        odd.zeroize();
        sbox_words.zeroize();
    }

    #[inline(always)]
    fn g(&self, x: u32) -> u32 {
        let t = &self.g_tables;
        let [b0, b1, b2, b3] = x.to_le_bytes();
        t[usize::from(b0)]
            ^ t[256 + usize::from(b1)]
            ^ t[512 + usize::from(b2)]
            ^ t[768 + usize::from(b3)]
    }

    /// Encrypts `N` independent blocks with their rounds interleaved, so that the
    /// table look-ups of different blocks overlap.
    #[inline(always)]
    fn encrypt_lanes<const N: usize>(&self, blocks: &mut [Block]) {
        let k = &self.subkeys;
        let mut a = [0u32; N];
        let mut b = [0u32; N];
        let mut c = [0u32; N];
        let mut d = [0u32; N];
        for (lane, block) in blocks.iter().enumerate().take(N) {
            let [w0, w1, w2, w3] = words(block);
            a[lane] = w0 ^ k[0];
            b[lane] = w1 ^ k[1];
            c[lane] = w2 ^ k[2];
            d[lane] = w3 ^ k[3];
        }
        for r in 0..8 {
            for lane in 0..N {
                let t0 = self.g(a[lane]);
                let t1 = self.g(b[lane].rotate_left(8));
                c[lane] =
                    (c[lane] ^ t0.wrapping_add(t1).wrapping_add(k[8 + 4 * r])).rotate_right(1);
                d[lane] = d[lane].rotate_left(1)
                    ^ t0.wrapping_add(t1.wrapping_mul(2))
                        .wrapping_add(k[9 + 4 * r]);
            }
            for lane in 0..N {
                let t0 = self.g(c[lane]);
                let t1 = self.g(d[lane].rotate_left(8));
                a[lane] =
                    (a[lane] ^ t0.wrapping_add(t1).wrapping_add(k[10 + 4 * r])).rotate_right(1);
                b[lane] = b[lane].rotate_left(1)
                    ^ t0.wrapping_add(t1.wrapping_mul(2))
                        .wrapping_add(k[11 + 4 * r]);
            }
        }
        for (lane, block) in blocks.iter_mut().enumerate().take(N) {
            store_words(
                block,
                [
                    c[lane] ^ k[4],
                    d[lane] ^ k[5],
                    a[lane] ^ k[6],
                    b[lane] ^ k[7],
                ],
            );
        }
    }

    #[inline(always)]
    fn decrypt_lanes<const N: usize>(&self, blocks: &mut [Block]) {
        let k = &self.subkeys;
        let mut a = [0u32; N];
        let mut b = [0u32; N];
        let mut c = [0u32; N];
        let mut d = [0u32; N];
        for (lane, block) in blocks.iter().enumerate().take(N) {
            let [w0, w1, w2, w3] = words(block);
            c[lane] = w0 ^ k[4];
            d[lane] = w1 ^ k[5];
            a[lane] = w2 ^ k[6];
            b[lane] = w3 ^ k[7];
        }
        for r in (0..8).rev() {
            for lane in 0..N {
                let t0 = self.g(c[lane]);
                let t1 = self.g(d[lane].rotate_left(8));
                a[lane] = a[lane].rotate_left(1) ^ t0.wrapping_add(t1).wrapping_add(k[10 + 4 * r]);
                b[lane] = (b[lane]
                    ^ t0.wrapping_add(t1.wrapping_mul(2))
                        .wrapping_add(k[11 + 4 * r]))
                .rotate_right(1);
            }
            for lane in 0..N {
                let t0 = self.g(a[lane]);
                let t1 = self.g(b[lane].rotate_left(8));
                c[lane] = c[lane].rotate_left(1) ^ t0.wrapping_add(t1).wrapping_add(k[8 + 4 * r]);
                d[lane] = (d[lane]
                    ^ t0.wrapping_add(t1.wrapping_mul(2))
                        .wrapping_add(k[9 + 4 * r]))
                .rotate_right(1);
            }
        }
        for (lane, block) in blocks.iter_mut().enumerate().take(N) {
            store_words(
                block,
                [
                    a[lane] ^ k[0],
                    b[lane] ^ k[1],
                    c[lane] ^ k[2],
                    d[lane] ^ k[3],
                ],
            );
        }
    }

    /// Encrypts any number of blocks, four at a time where possible.
    pub(crate) fn encrypt_blocks(&self, blocks: &mut [Block]) {
        let mut chunks = blocks.chunks_exact_mut(INTERLEAVE);
        for chunk in &mut chunks {
            self.encrypt_lanes::<INTERLEAVE>(chunk);
        }
        for block in chunks.into_remainder().chunks_mut(1) {
            self.encrypt_lanes::<1>(block);
        }
    }

    /// Decrypts any number of blocks, four at a time where possible.
    pub(crate) fn decrypt_blocks(&self, blocks: &mut [Block]) {
        let mut chunks = blocks.chunks_exact_mut(INTERLEAVE);
        for chunk in &mut chunks {
            self.decrypt_lanes::<INTERLEAVE>(chunk);
        }
        for block in chunks.into_remainder().chunks_mut(1) {
            self.decrypt_lanes::<1>(block);
        }
    }
}

impl BlockBatch for TwofishKey {
    fn encrypt_blocks(&self, blocks: &mut [Block]) {
        TwofishKey::encrypt_blocks(self, blocks);
    }

    fn decrypt_blocks(&self, blocks: &mut [Block]) {
        TwofishKey::decrypt_blocks(self, blocks);
    }
}

/// Blocks in flight in the scalar path (measured: 4 beats 2 and 8 on x86-64).
const INTERLEAVE: usize = 4;

fn words(block: &[u8]) -> [u32; 4] {
    core::array::from_fn(|i| {
        u32::from_le_bytes([
            block[4 * i],
            block[4 * i + 1],
            block[4 * i + 2],
            block[4 * i + 3],
        ])
    })
}

fn store_words(block: &mut [u8], w: [u32; 4]) {
    for (out, word) in block.chunks_exact_mut(4).zip(w) {
        out.copy_from_slice(&word.to_le_bytes());
    }
}

#[cfg(test)]
mod tests;
