//! Twofish-XTS on AVX2 (256-bit registers): 16 blocks per batch as two sets of eight,
//! one 32-bit block word of eight blocks per register, so that the round arithmetic
//! (whitening, rotations, the pseudo-Hadamard transform, subkey additions, XTS tweaks)
//! runs eight blocks per instruction. The key-dependent g function is computed one of
//! three ways:
//!
//! - [`G8Lookup::Shuffle`]: no table reads at all. The 32 g inputs of a round (both
//!   sets, both g calls) are regrouped so that each register holds one byte position
//!   of all 32 words; every q box of the S-box chain then runs on 32 bytes at once as
//!   4-bit table look-ups with `vpshufb` (q0 and q1 are built from 4-bit permutations;
//!   the key bytes are folded into per-key 4-bit tables), and the MDS matrix is folded
//!   into the last q box as 4-bit tables of the products by 01, 5B and EF;
//! - [`G8Lookup::Scalar`]: the full-keying tables read with ordinary loads, the eight
//!   words leaving the register as four 64-bit halves, the way the kernel's
//!   `twofish-avx-x86_64` interleaves scalar loads with vector arithmetic;
//!
//! No gather variant: `vpgatherdd` measured slowest of the three on Zen 3, and under QEMU
//! TCG a gather from the key's tables read 8 GiB below the stack and killed provision
//! (SIGSEGV) in the dist-test systemd boot.
//!
//! Neither is assumed faster: `crate::dispatch` times them on the running CPU.

use core::arch::x86_64::{
    __m256i, _mm256_add_epi32, _mm256_and_si256, _mm256_castsi256_si128, _mm256_extracti128_si256,
    _mm256_loadu_si256, _mm256_or_si256, _mm256_set1_epi32, _mm256_set1_epi8, _mm256_setr_epi32,
    _mm256_setr_epi8, _mm256_shuffle_epi8, _mm256_slli_epi32, _mm256_srli_epi16, _mm256_srli_epi32,
    _mm256_storeu_si256, _mm256_unpackhi_epi32, _mm256_unpackhi_epi64, _mm256_unpacklo_epi32,
    _mm256_unpacklo_epi64, _mm256_xor_si256, _mm_cvtsi128_si64, _mm_extract_epi64,
};

use zeroize::Zeroize;

use crate::twofish::TwofishKey;
use crate::xts::mul_alpha;

/// Blocks per register set and sets per batch.
const SET: usize = 8;
const SETS: usize = 2;
/// Bytes per batch: 16 blocks.
const BATCH: usize = SET * SETS * 16;

/// How the g function reads the key-dependent tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum G8Lookup {
    Shuffle,
    Scalar,
}

/// [`G8Lookup`] as a const generic parameter.
const SHUFFLE: u8 = 0;
const SCALAR: u8 = 1;

/// Whether this CPU runs the AVX2 Twofish-XTS paths.
pub(crate) fn available() -> bool {
    std::is_x86_feature_detected!("avx2") && std::is_x86_feature_detected!("sse4.1")
}

/// The AVX2 Twofish-XTS path; a token that the CPU has the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TwofishAvx2(G8Lookup);

impl TwofishAvx2 {
    pub(crate) fn detect(lookup: G8Lookup) -> Option<Self> {
        available().then_some(Self(lookup))
    }

    pub(crate) fn lookup(self) -> G8Lookup {
        self.0
    }

    /// Encrypts or decrypts one sector (a multiple of 256 bytes) in place; `tweak` is
    /// the already encrypted initial tweak.
    pub(crate) fn crypt_sector(
        self,
        key: &TwofishKey,
        tweak: u128,
        sector: &mut [u8],
        encrypt: bool,
    ) {
        // SAFETY: a TwofishAvx2 token exists only if `available()` was true (see
        // `detect`, its only constructor).
        unsafe {
            match self.0 {
                G8Lookup::Shuffle => {
                    twofish_sector_avx2::<SHUFFLE>(key, tweak, sector, encrypt);
                }
                G8Lookup::Scalar => twofish_sector_avx2::<SCALAR>(key, tweak, sector, encrypt),
            }
        }
    }
}

/// The g function on eight words with ordinary loads: four table reads per word.
#[target_feature(enable = "avx2,sse4.1")]
fn g8_scalar(t: &[u32; 1024], x: __m256i) -> __m256i {
    let low = _mm256_castsi256_si128(x);
    let high = _mm256_extracti128_si256::<1>(x);
    let pairs = [
        _mm_cvtsi128_si64(low),
        _mm_extract_epi64::<1>(low),
        _mm_cvtsi128_si64(high),
        _mm_extract_epi64::<1>(high),
    ];
    // Byte j of a word indexes table j (at 256 * j); u8 indices keep every read in
    // bounds without checks.
    let g = |b: &[u8]| {
        (t[usize::from(b[0])]
            ^ t[256 + usize::from(b[1])]
            ^ t[512 + usize::from(b[2])]
            ^ t[768 + usize::from(b[3])])
        .cast_signed()
    };
    let [p0, p1, p2, p3] = pairs.map(|p| p.to_le_bytes());
    _mm256_setr_epi32(
        g(&p0[..4]),
        g(&p0[4..]),
        g(&p1[..4]),
        g(&p1[4..]),
        g(&p2[..4]),
        g(&p2[4..]),
        g(&p3[..4]),
        g(&p3[4..]),
    )
}

/// The 4-bit tables of one q box (Twofish paper, section 4.3.5) for inputs given as
/// nibble pairs (a0 = high, b0 = low): b1 = U[a0] ^ R[b0] with U[v] = v ^ (v << 3)
/// and R[v] = v >>> 1 (4-bit), and the first two permutations with U and R folded in
/// (UT0 = U o t0, RT1 = R o t1), each stored once per 128-bit lane.
struct QNibbles {
    u: [u8; 32],
    r: [u8; 32],
    t0: [u8; 32],
    t1: [u8; 32],
    ut0: [u8; 32],
    rt1: [u8; 32],
}

const fn nibble_u(v: u8) -> u8 {
    (v ^ (v << 3)) & 0xf
}

const fn nibble_r(v: u8) -> u8 {
    crate::twofish::ror4(v, 1)
}

/// The MDS constants, in the order of the products [`sbox_mds_products`] returns.
const MDS_CONSTANTS: [u8; 3] = [0x01, 0x5B, 0xEF];

impl QNibbles {
    const fn new(t: &[[u8; 16]; 4]) -> Self {
        let mut q = Self {
            u: [0; 32],
            r: [0; 32],
            t0: [0; 32],
            t1: [0; 32],
            ut0: [0; 32],
            rt1: [0; 32],
        };
        let mut i = 0;
        while i < 32 {
            let v = i % 16;
            // v < 16: the cast is exact.
            #[allow(clippy::cast_possible_truncation)]
            let nibble = v as u8;
            q.u[i] = nibble_u(nibble);
            q.r[i] = nibble_r(nibble);
            q.t0[i] = t[0][v];
            q.t1[i] = t[1][v];
            q.ut0[i] = nibble_u(t[0][v]);
            q.rt1[i] = nibble_r(t[1][v]);
            i += 1;
        }
        q
    }
}

const Q_NIBBLES: [QNibbles; 2] = [
    QNibbles::new(&crate::twofish::Q0_T),
    QNibbles::new(&crate::twofish::Q1_T),
];

/// The last q box of the chain fused with the MDS matrix: for q box `t` and constant
/// `c`, the low table maps the t2 input to c * t2[v], the high one the t3 input to
/// c * (t3[v] << 4), so that c * q(x) = low[a3] ^ high[b3].
const fn last_stage_products(t: &[[u8; 16]; 4], c: u8) -> [[u8; 32]; 2] {
    let poly = crate::twofish::MDS_POLY;
    let mut out = [[0u8; 32]; 2];
    let mut i = 0;
    while i < 32 {
        let v = i % 16;
        out[0][i] = crate::twofish::gf_mul(c, t[2][v], poly);
        out[1][i] = crate::twofish::gf_mul(c, t[3][v] << 4, poly);
        i += 1;
    }
    out
}

/// [`last_stage_products`] for every byte position (its last q box) and constant.
const LAST_STAGE: [[[[u8; 32]; 2]; 3]; 4] = {
    let mut out = [[[[0u8; 32]; 2]; 3]; 4];
    let mut position = 0;
    while position < 4 {
        let t = if crate::twofish::Q_LAST[position] {
            &crate::twofish::Q1_T
        } else {
            &crate::twofish::Q0_T
        };
        let mut c = 0;
        while c < 3 {
            out[position][c] = last_stage_products(t, MDS_CONSTANTS[c]);
            c += 1;
        }
        position += 1;
    }
    out
};

/// Which of [`MDS_CONSTANTS`] each MDS entry is.
const MDS_PRODUCT: [[usize; 4]; 4] = {
    let mut out = [[0usize; 4]; 4];
    let mut i = 0;
    while i < 4 {
        let mut j = 0;
        while j < 4 {
            let mut c = 0;
            while MDS_CONSTANTS[c] != crate::twofish::MDS[i][j] {
                c += 1;
            }
            out[i][j] = c;
            j += 1;
        }
        i += 1;
    }
    out
};

/// A 32-byte table in a register.
#[target_feature(enable = "avx2")]
fn table(t: &[u8; 32]) -> __m256i {
    // SAFETY: `t` is 32 readable bytes; vmovdqu has no alignment requirement.
    unsafe { _mm256_loadu_si256(t.as_ptr().cast()) }
}

#[target_feature(enable = "avx2")]
fn lookup(t: &[u8; 32], nibbles: __m256i) -> __m256i {
    _mm256_shuffle_epi8(table(t), nibbles)
}

/// The first two stages of a q box on nibble pairs (a0 high, b0 low): the t2 and t3
/// inputs (a3, b3) of its last stage.
#[target_feature(enable = "avx2")]
fn q_front(q: &QNibbles, a0: __m256i, b0: __m256i) -> (__m256i, __m256i) {
    let a1 = _mm256_xor_si256(a0, b0);
    let b1 = _mm256_xor_si256(lookup(&q.u, a0), lookup(&q.r, b0));
    let a3 = _mm256_xor_si256(lookup(&q.t0, a1), lookup(&q.t1, b1));
    let b3 = _mm256_xor_si256(lookup(&q.ut0, a1), lookup(&q.rt1, b1));
    (a3, b3)
}

/// The key-dependent S-box of byte position `position` on 32 bytes, times 01, 5B and
/// EF (the MDS matrix's entries).
#[target_feature(enable = "avx2")]
fn sbox_mds_products(key: &TwofishKey, position: usize, x: __m256i) -> [__m256i; 3] {
    let low_nibbles = _mm256_set1_epi8(0x0f);
    let mut a0 = _mm256_and_si256(_mm256_srli_epi16::<4>(x), low_nibbles);
    let mut b0 = _mm256_and_si256(x, low_nibbles);
    let steps = key.sbox_steps;
    for step in 0..steps {
        let word = steps - 1 - step;
        let q = &Q_NIBBLES[usize::from(crate::twofish::Q_BEFORE_KEY_WORD[word][position])];
        let (a3, b3) = q_front(q, a0, b0);
        let index = 2 * (4 * position + step);
        // The output's high nibble is the next box's a0, its low nibble b0.
        a0 = lookup(&key.nibble_tables[index + 1], b3);
        b0 = lookup(&key.nibble_tables[index], a3);
    }
    let q = &Q_NIBBLES[usize::from(crate::twofish::Q_LAST[position])];
    let (a3, b3) = q_front(q, a0, b0);
    let products = &LAST_STAGE[position];
    core::array::from_fn(|c| {
        _mm256_xor_si256(lookup(&products[c][0], a3), lookup(&products[c][1], b3))
    })
}

/// The 4x4 byte transpose inside every 32-bit word group of a 128-bit lane.
#[target_feature(enable = "avx2")]
fn transpose_bytes(x: __m256i) -> __m256i {
    let order = _mm256_setr_epi8(
        0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15, 0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10,
        14, 3, 7, 11, 15,
    );
    _mm256_shuffle_epi8(x, order)
}

/// The g function on 32 words (four registers) without table reads: the words are
/// regrouped so that register p holds byte p of all 32 (byte transpose, then the word
/// transpose across registers; both are their own inverses), each position runs its
/// S-box chain, and the MDS products are summed back per output byte.
#[target_feature(enable = "avx2")]
fn g32_shuffle(key: &TwofishKey, x: [__m256i; 4]) -> [__m256i; 4] {
    let positions = transpose(x.map(|r| transpose_bytes(r)));
    let products: [[__m256i; 3]; 4] =
        core::array::from_fn(|p| sbox_mds_products(key, p, positions[p]));
    // Output byte i = XOR over input positions j of MDS[i][j] * s_j(byte j).
    let column: [__m256i; 4] = core::array::from_fn(|i| {
        let term = |j: usize| products[j][MDS_PRODUCT[i][j]];
        _mm256_xor_si256(
            _mm256_xor_si256(term(0), term(1)),
            _mm256_xor_si256(term(2), term(3)),
        )
    });
    transpose(column).map(|r| transpose_bytes(r))
}

/// g of both sets' `x` and of both sets' `y <<< 8`.
#[target_feature(enable = "avx2,sse4.1")]
fn g_pair<const LOOKUP: u8>(
    key: &TwofishKey,
    x: [__m256i; SETS],
    y: [__m256i; SETS],
) -> ([__m256i; SETS], [__m256i; SETS]) {
    let y = y.map(|r| rotl8(r));
    match LOOKUP {
        SHUFFLE => {
            let [t0a, t0b, t1a, t1b] = g32_shuffle(key, [x[0], x[1], y[0], y[1]]);
            ([t0a, t0b], [t1a, t1b])
        }
        _ => (
            x.map(|r| g8_scalar(&key.g_tables, r)),
            y.map(|r| g8_scalar(&key.g_tables, r)),
        ),
    }
}

#[target_feature(enable = "avx2")]
fn rotl1(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_slli_epi32::<1>(x), _mm256_srli_epi32::<31>(x))
}

#[target_feature(enable = "avx2")]
fn rotr1(x: __m256i) -> __m256i {
    _mm256_or_si256(_mm256_srli_epi32::<1>(x), _mm256_slli_epi32::<31>(x))
}

/// Rotates every word left by 8 bits with one byte shuffle.
#[target_feature(enable = "avx2")]
fn rotl8(x: __m256i) -> __m256i {
    let order = _mm256_setr_epi8(
        3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10, 15, 12, 13, 14, 3, 0, 1, 2, 7, 4, 5, 6, 11, 8, 9, 10,
        15, 12, 13, 14,
    );
    _mm256_shuffle_epi8(x, order)
}

/// Subkey `i` broadcast to all lanes.
#[target_feature(enable = "avx2")]
fn subkey(key: &TwofishKey, i: usize) -> __m256i {
    _mm256_set1_epi32(key.subkeys[i].cast_signed())
}

/// The round outputs F0 = T0 + T1 + K and F1 = T0 + 2 T1 + K' of T0 = g(x) and
/// T1 = g(y <<< 8), for both sets, with subkeys `k0` and `k0 + 1`.
#[target_feature(enable = "avx2,sse4.1")]
fn round_f<const LOOKUP: u8>(
    key: &TwofishKey,
    x: [__m256i; SETS],
    y: [__m256i; SETS],
    k0: usize,
) -> ([__m256i; SETS], [__m256i; SETS]) {
    let (t0, t1) = g_pair::<LOOKUP>(key, x, y);
    let (k0, k1) = (subkey(key, k0), subkey(key, k0 + 1));
    let f0 = core::array::from_fn(|s| _mm256_add_epi32(_mm256_add_epi32(t0[s], t1[s]), k0));
    let f1 = core::array::from_fn(|s| {
        _mm256_add_epi32(_mm256_add_epi32(t0[s], _mm256_add_epi32(t1[s], t1[s])), k1)
    });
    (f0, f1)
}

/// Sets of eight blocks, as words a, b, c, d of each block.
type Words = [[__m256i; SETS]; 4];

#[target_feature(enable = "avx2,sse4.1")]
fn encrypt16<const LOOKUP: u8>(key: &TwofishKey, w: &mut Words) {
    let [a, b, c, d] = w;
    for r in 0..8 {
        let (f0, f1) = round_f::<LOOKUP>(key, *a, *b, 8 + 4 * r);
        for s in 0..SETS {
            c[s] = rotr1(_mm256_xor_si256(c[s], f0[s]));
            d[s] = _mm256_xor_si256(rotl1(d[s]), f1[s]);
        }
        let (f0, f1) = round_f::<LOOKUP>(key, *c, *d, 10 + 4 * r);
        for s in 0..SETS {
            a[s] = rotr1(_mm256_xor_si256(a[s], f0[s]));
            b[s] = _mm256_xor_si256(rotl1(b[s]), f1[s]);
        }
    }
}

#[target_feature(enable = "avx2,sse4.1")]
fn decrypt16<const LOOKUP: u8>(key: &TwofishKey, w: &mut Words) {
    let [a, b, c, d] = w;
    for r in (0..8).rev() {
        let (f0, f1) = round_f::<LOOKUP>(key, *c, *d, 10 + 4 * r);
        for s in 0..SETS {
            a[s] = _mm256_xor_si256(rotl1(a[s]), f0[s]);
            b[s] = rotr1(_mm256_xor_si256(b[s], f1[s]));
        }
        let (f0, f1) = round_f::<LOOKUP>(key, *a, *b, 8 + 4 * r);
        for s in 0..SETS {
            c[s] = _mm256_xor_si256(rotl1(c[s]), f0[s]);
            d[s] = rotr1(_mm256_xor_si256(d[s], f1[s]));
        }
    }
}

/// 4x4 transpose of 32-bit words inside each 128-bit lane of four registers (its own
/// inverse): four registers of two blocks each become one register per block word.
#[target_feature(enable = "avx2")]
fn transpose(x: [__m256i; 4]) -> [__m256i; 4] {
    let t0 = _mm256_unpacklo_epi32(x[0], x[1]);
    let t1 = _mm256_unpackhi_epi32(x[0], x[1]);
    let t2 = _mm256_unpacklo_epi32(x[2], x[3]);
    let t3 = _mm256_unpackhi_epi32(x[2], x[3]);
    [
        _mm256_unpacklo_epi64(t0, t2),
        _mm256_unpackhi_epi64(t0, t2),
        _mm256_unpacklo_epi64(t1, t3),
        _mm256_unpackhi_epi64(t1, t3),
    ]
}

/// (block or state word, whitening subkey) for each of the four words.
type WordOrder = [(usize, usize); 4];

/// Registers per batch: two blocks each.
const REGS: usize = BATCH / 32;

#[target_feature(enable = "avx2")]
fn load(bytes: &[u8]) -> [__m256i; REGS] {
    assert_eq!(bytes.len(), BATCH);
    core::array::from_fn(|j| {
        // SAFETY: j < REGS and bytes.len() == 32 * REGS, so bytes 32j..32j+32 are in
        // bounds; vmovdqu has no alignment requirement.
        unsafe { _mm256_loadu_si256(bytes.as_ptr().add(32 * j).cast()) }
    })
}

#[target_feature(enable = "avx2")]
fn store(bytes: &mut [u8], regs: &[__m256i; REGS]) {
    assert_eq!(bytes.len(), BATCH);
    for (j, reg) in regs.iter().enumerate() {
        // SAFETY: j < REGS and bytes.len() == 32 * REGS, so bytes 32j..32j+32 are in
        // bounds and exclusively borrowed; vmovdqu has no alignment requirement.
        unsafe { _mm256_storeu_si256(bytes.as_mut_ptr().add(32 * j).cast(), *reg) }
    }
}

#[target_feature(enable = "avx2,sse4.1")]
fn twofish_sector_avx2<const LOOKUP: u8>(
    key: &TwofishKey,
    mut tweak: u128,
    sector: &mut [u8],
    encrypt: bool,
) {
    assert!(
        sector.len().is_multiple_of(BATCH),
        "sector sizes are 512 or 4096"
    );
    // The batch's tweaks, laid out like the data: a doubling per block is a few
    // scalar instructions next to a Twofish block.
    let mut tweak_bytes = [0u8; BATCH];
    let whiten = |i: usize| subkey(key, i);
    // (input word, whitening subkey) feeding a, b, c, d, and (state word, subkey)
    // giving output words 0..4: encryption whitens with K0..K3 and outputs
    // (c ^ K4, d ^ K5, a ^ K6, b ^ K7); decryption is the mirror image.
    let (in_order, out_order): (WordOrder, WordOrder) = if encrypt {
        (
            [(0, 0), (1, 1), (2, 2), (3, 3)],
            [(2, 4), (3, 5), (0, 6), (1, 7)],
        )
    } else {
        (
            [(2, 6), (3, 7), (0, 4), (1, 5)],
            [(0, 0), (1, 1), (2, 2), (3, 3)],
        )
    };
    for batch in sector.chunks_exact_mut(BATCH) {
        for block_tweak in tweak_bytes.chunks_exact_mut(16) {
            block_tweak.copy_from_slice(&tweak.to_le_bytes());
            tweak = mul_alpha(tweak);
        }
        let tweaks = load(&tweak_bytes);
        let mut x = load(batch);
        for (xj, tj) in x.iter_mut().zip(tweaks.iter()) {
            *xj = _mm256_xor_si256(*xj, *tj);
        }
        let sets: [[__m256i; 4]; SETS] = core::array::from_fn(|s| {
            transpose([x[4 * s], x[4 * s + 1], x[4 * s + 2], x[4 * s + 3]])
        });
        let mut w: Words = core::array::from_fn(|i| {
            let (word, k) = in_order[i];
            let k = whiten(k);
            core::array::from_fn(|s| _mm256_xor_si256(sets[s][word], k))
        });
        if encrypt {
            encrypt16::<LOOKUP>(key, &mut w);
        } else {
            decrypt16::<LOOKUP>(key, &mut w);
        }
        let out: Words = core::array::from_fn(|i| {
            let (word, k) = out_order[i];
            let k = whiten(k);
            core::array::from_fn(|s| _mm256_xor_si256(w[word][s], k))
        });
        for s in 0..SETS {
            let blocks = transpose([out[0][s], out[1][s], out[2][s], out[3][s]]);
            for (j, block) in blocks.iter().enumerate() {
                x[4 * s + j] = _mm256_xor_si256(*block, tweaks[4 * s + j]);
            }
        }
        store(batch, &x);
    }
    // The tweaks are key-derived: clear the copy on the stack.
    tweak_bytes.zeroize();
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::simd_x86::tests::{twofish_matches_scalar, BUILT_ELSEWHERE};

    /// The AVX2 path without table reads gives the scalar path's bytes.
    #[test]
    #[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
    fn cpu_feature_avx2_shuffles_match_scalar() {
        let simd = TwofishAvx2::detect(G8Lookup::Shuffle).expect(BUILT_ELSEWHERE);
        twofish_matches_scalar(|key, tweak, data, encrypt| {
            simd.crypt_sector(key, tweak, data, encrypt);
        });
    }

    /// The AVX2 path with scalar table loads gives the scalar path's bytes.
    #[test]
    #[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
    fn cpu_feature_avx2_scalar_loads_match_scalar() {
        let simd = TwofishAvx2::detect(G8Lookup::Scalar).expect(BUILT_ELSEWHERE);
        twofish_matches_scalar(|key, tweak, data, encrypt| {
            simd.crypt_sector(key, tweak, data, encrypt);
        });
    }
}
