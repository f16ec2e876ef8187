//! x86-64 SIMD sector paths, chosen at run time (the binary is static and portable and
//! never built with `-C target-cpu=native`):
//!
//! - AES-XTS with VAES on 512-bit registers (AVX-512F + VAES + VPCLMULQDQ): 32 blocks in
//!   flight, the 32 tweaks advanced together by alpha^32;
//! - Twofish-XTS with AVX-512F gathers: 16 blocks per register set (one 32-bit word of
//!   each block per lane), two sets interleaved, the four key-dependent g tables read
//!   with `vpgatherdd`;
//! - Twofish-XTS on AVX2, with or without gathers ([`twofish_avx2`]).
//!
//! Which Twofish path runs is measured, not assumed (`crate::dispatch`).
//!
//! This module (with its submodule) is the crate's only SIMD code with `unsafe`: calls
//! into `#[target_feature]` functions (guarded by the detection done when the key object
//! was built), unaligned 32- and 64-byte loads/stores inside bounds-checked chunks, and
//! table gathers with indices masked to 0..=255.
#![allow(unsafe_code)]

use core::arch::x86_64::{
    __m128i, __m512i, _mm512_add_epi32, _mm512_aesdec_epi128, _mm512_aesdeclast_epi128,
    _mm512_aesenc_epi128, _mm512_aesenclast_epi128, _mm512_and_si512, _mm512_broadcast_i32x4,
    _mm512_clmulepi64_epi128, _mm512_i32gather_epi32, _mm512_loadu_si512,
    _mm512_maskz_shuffle_epi32, _mm512_rol_epi32, _mm512_ror_epi32, _mm512_set1_epi32,
    _mm512_set1_epi64, _mm512_set_epi64, _mm512_slli_epi64, _mm512_srli_epi32, _mm512_srli_epi64,
    _mm512_storeu_si512, _mm512_ternarylogic_epi64, _mm512_unpackhi_epi32, _mm512_unpackhi_epi64,
    _mm512_unpacklo_epi32, _mm512_unpacklo_epi64, _mm512_xor_si512, _mm_aesenc_si128,
    _mm_aesenclast_si128, _mm_aesimc_si128, _mm_aeskeygenassist_si128, _mm_cvtsi128_si64,
    _mm_extract_epi64, _mm_set_epi64x, _mm_shuffle_epi32, _mm_slli_si128, _mm_xor_si128,
};

use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::twofish::TwofishKey;
use crate::xts::mul_alpha;

mod twofish_avx2;
pub(crate) use twofish_avx2::{G8Lookup, TwofishAvx2};

/// Bytes handled per inner iteration: 8 registers of 4 blocks.
const BATCH: usize = 512;
const REGS: usize = 8;

fn u128_halves(v: u128) -> (i64, i64) {
    let bytes = v.to_le_bytes();
    let mut lo = [0u8; 8];
    let mut hi = [0u8; 8];
    lo.copy_from_slice(&bytes[..8]);
    hi.copy_from_slice(&bytes[8..]);
    (i64::from_le_bytes(hi), i64::from_le_bytes(lo))
}

#[target_feature(enable = "sse2")]
fn xmm_from_u128(v: u128) -> __m128i {
    let (hi, lo) = u128_halves(v);
    _mm_set_epi64x(hi, lo)
}

#[target_feature(enable = "sse4.1")]
fn u128_from_xmm(x: __m128i) -> u128 {
    let lo = u128::from(_mm_cvtsi128_si64(x).cast_unsigned());
    let hi = u128::from(_mm_extract_epi64::<1>(x).cast_unsigned());
    (hi << 64) | lo
}

/// The 32 tweaks of a 512-byte batch: register j holds T * alpha^(4j..4j+4).
#[target_feature(enable = "avx512f")]
fn initial_tweaks(tweak: u128) -> [__m512i; REGS] {
    let mut t = tweak;
    core::array::from_fn(|_| {
        let mut lanes = [(0i64, 0i64); 4];
        for lane in &mut lanes {
            *lane = u128_halves(t);
            t = mul_alpha(t);
        }
        _mm512_set_epi64(
            lanes[3].0, lanes[3].1, lanes[2].0, lanes[2].1, lanes[1].0, lanes[1].1, lanes[0].0,
            lanes[0].1,
        )
    })
}

/// Dword masks selecting the high / low qword of every 128-bit lane.
const HIGH_QWORDS: u16 = 0xCCCC;
const LOW_QWORDS: u16 = 0x3333;

/// Multiplies each 128-bit lane by alpha^32 (the next batch's tweaks), reducing the
/// 32 carried-out bits with x^7 + x^2 + x + 1 by shifts (no carry-less multiply).
#[target_feature(enable = "avx512f")]
fn times_alpha32(t: __m512i) -> __m512i {
    let shifted = _mm512_slli_epi64::<32>(t);
    let carries = _mm512_srli_epi64::<32>(t);
    // Low qword's carry goes to the high qword; high qword's carry wraps around. The
    // dword shuffle 0x4E swaps the qwords of each lane; the masks keep one of them.
    let into_high = _mm512_maskz_shuffle_epi32::<0x4E>(HIGH_QWORDS, carries);
    let wrapped = _mm512_maskz_shuffle_epi32::<0x4E>(LOW_QWORDS, carries);
    let reduced = _mm512_ternarylogic_epi64::<0x96>(
        wrapped,
        _mm512_slli_epi64::<1>(wrapped),
        _mm512_slli_epi64::<2>(wrapped),
    );
    let reduced = _mm512_xor_si512(reduced, _mm512_slli_epi64::<7>(wrapped));
    _mm512_ternarylogic_epi64::<0x96>(shifted, into_high, reduced)
}

/// Same as [`times_alpha32`] with one carry-less multiply for the reduction.
#[target_feature(enable = "avx512f,vpclmulqdq")]
fn times_alpha32_clmul(t: __m512i) -> __m512i {
    let shifted = _mm512_slli_epi64::<32>(t);
    let carries = _mm512_srli_epi64::<32>(t);
    let into_high = _mm512_maskz_shuffle_epi32::<0x4E>(HIGH_QWORDS, carries);
    // High qword of each lane's carries times 0x87 lands in the low qword.
    let reduced = _mm512_clmulepi64_epi128::<0x01>(carries, _mm512_set1_epi64(0x87));
    _mm512_ternarylogic_epi64::<0x96>(shifted, into_high, reduced)
}

#[target_feature(enable = "avx512f")]
fn load_batch(batch: &[u8]) -> [__m512i; REGS] {
    assert_eq!(batch.len(), BATCH);
    core::array::from_fn(|j| {
        // SAFETY: j < 8 and batch.len() == 512, so bytes 64j..64j+64 are in bounds;
        // vmovdqu64 has no alignment requirement.
        unsafe { _mm512_loadu_si512(batch.as_ptr().add(64 * j).cast()) }
    })
}

#[target_feature(enable = "avx512f")]
fn store_batch(batch: &mut [u8], regs: &[__m512i; REGS]) {
    assert_eq!(batch.len(), BATCH);
    for (j, reg) in regs.iter().enumerate() {
        // SAFETY: j < 8 and batch.len() == 512, so bytes 64j..64j+64 are in bounds and
        // exclusively borrowed; vmovdqu64 has no alignment requirement.
        unsafe { _mm512_storeu_si512(batch.as_mut_ptr().add(64 * j).cast(), *reg) }
    }
}

/// Whether this CPU runs the VAES AES-XTS path.
pub(crate) fn vaes_available() -> bool {
    std::is_x86_feature_detected!("avx512f")
        && std::is_x86_feature_detected!("vaes")
        && std::is_x86_feature_detected!("vpclmulqdq")
        && std::is_x86_feature_detected!("aes")
        && std::is_x86_feature_detected!("sse4.1")
}

/// Whether this CPU runs the AVX-512 gather Twofish-XTS path.
pub(crate) fn twofish_avx512_available() -> bool {
    std::is_x86_feature_detected!("avx512f") && std::is_x86_feature_detected!("sse4.1")
}

/// AES round keys for the VAES path: data key (encryption and equivalent-inverse
/// decryption schedules) and tweak key. Only built when [`vaes_available`] is true,
/// which is what makes calling the `#[target_feature]` functions sound.
#[derive(Zeroize, ZeroizeOnDrop)]
pub(crate) struct VaesXts {
    rounds: usize,
    enc: [u128; 15],
    dec: [u128; 15],
    tweak: [u128; 15],
}

impl core::fmt::Debug for VaesXts {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("VaesXts(..)")
    }
}

macro_rules! aes128_step {
    ($rk:ident, $i:literal, $rcon:literal) => {{
        let prev = $rk[$i - 1];
        let assist = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>(prev));
        $rk[$i] = _mm_xor_si128(prefix_xor(prev), assist);
    }};
}

macro_rules! aes256_step {
    ($rk:ident, $i:literal, $rcon:literal) => {{
        let assist = _mm_shuffle_epi32::<0xff>(_mm_aeskeygenassist_si128::<$rcon>($rk[$i - 1]));
        $rk[$i] = _mm_xor_si128(prefix_xor($rk[$i - 2]), assist);
        if $i + 1 < 15 {
            let assist = _mm_shuffle_epi32::<0xaa>(_mm_aeskeygenassist_si128::<0>($rk[$i]));
            $rk[$i + 1] = _mm_xor_si128(prefix_xor($rk[$i - 1]), assist);
        }
    }};
}

/// w ^ (w << 32) ^ (w << 64) ^ (w << 96): the running XOR of the key schedule words.
#[target_feature(enable = "sse2")]
fn prefix_xor(w: __m128i) -> __m128i {
    let w = _mm_xor_si128(w, _mm_slli_si128::<4>(w));
    let w = _mm_xor_si128(w, _mm_slli_si128::<4>(w));
    _mm_xor_si128(w, _mm_slli_si128::<4>(w))
}

/// FIPS-197 key expansion with AESKEYGENASSIST; returns the round count.
#[target_feature(enable = "aes,sse4.1")]
fn expand_aes_key(key: &[u8], out: &mut [u128; 15]) -> Option<usize> {
    let word = |i: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&key[16 * i..16 * i + 16]);
        u128::from_le_bytes(b)
    };
    let mut rk = [xmm_from_u128(0); 15];
    let rounds = match key.len() {
        16 => {
            rk[0] = xmm_from_u128(word(0));
            aes128_step!(rk, 1, 0x01);
            aes128_step!(rk, 2, 0x02);
            aes128_step!(rk, 3, 0x04);
            aes128_step!(rk, 4, 0x08);
            aes128_step!(rk, 5, 0x10);
            aes128_step!(rk, 6, 0x20);
            aes128_step!(rk, 7, 0x40);
            aes128_step!(rk, 8, 0x80);
            aes128_step!(rk, 9, 0x1b);
            aes128_step!(rk, 10, 0x36);
            10
        }
        32 => {
            rk[0] = xmm_from_u128(word(0));
            rk[1] = xmm_from_u128(word(1));
            aes256_step!(rk, 2, 0x01);
            aes256_step!(rk, 4, 0x02);
            aes256_step!(rk, 6, 0x04);
            aes256_step!(rk, 8, 0x08);
            aes256_step!(rk, 10, 0x10);
            aes256_step!(rk, 12, 0x20);
            aes256_step!(rk, 14, 0x40);
            14
        }
        _ => return None,
    };
    for (o, r) in out.iter_mut().zip(rk.iter()).take(rounds + 1) {
        *o = u128_from_xmm(*r);
    }
    rk.zeroize();
    Some(rounds)
}

#[target_feature(enable = "aes,sse4.1")]
fn inverse_schedule(enc: &[u128; 15], rounds: usize, dec: &mut [u128; 15]) {
    dec[0] = enc[rounds];
    for i in 1..rounds {
        dec[i] = u128_from_xmm(_mm_aesimc_si128(xmm_from_u128(enc[rounds - i])));
    }
    dec[rounds] = enc[0];
}

impl VaesXts {
    /// An all-zero schedule to be filled in place by [`Self::expand`], or `None` when
    /// the CPU lacks the features.
    pub(crate) fn zeroed_if_available() -> Option<Self> {
        vaes_available().then_some(Self {
            rounds: 0,
            enc: [0; 15],
            dec: [0; 15],
            tweak: [0; 15],
        })
    }

    /// Builds the schedules from the two XTS key halves into `self`; false (and `self`
    /// left zeroed) when the half length is not 16 or 32.
    pub(crate) fn expand(&mut self, data_key: &[u8], tweak_key: &[u8]) -> bool {
        // SAFETY: a VaesXts exists only if vaes_available() confirmed AES-NI and SSE4.1.
        let rounds = unsafe { expand_aes_key(data_key, &mut self.enc) };
        // SAFETY: as above.
        let tweak_rounds = unsafe { expand_aes_key(tweak_key, &mut self.tweak) };
        match (rounds, tweak_rounds) {
            (Some(r), Some(t)) if r == t => {
                self.rounds = r;
                // SAFETY: as above.
                unsafe { inverse_schedule(&self.enc, r, &mut self.dec) };
                true
            }
            _ => {
                self.zeroize();
                false
            }
        }
    }

    /// Builds a new value (tests; the sector cipher expands in place).
    #[cfg(test)]
    pub(crate) fn new(data_key: &[u8], tweak_key: &[u8]) -> Option<Self> {
        let mut v = Self::zeroed_if_available()?;
        v.expand(data_key, tweak_key).then_some(v)
    }

    /// Encrypts or decrypts one sector (a multiple of 512 bytes) in place.
    pub(crate) fn crypt_sector(&self, iv: u128, sector: &mut [u8], encrypt: bool) {
        // SAFETY: a VaesXts exists only if vaes_available() was true (see
        // `zeroed_if_available`, its only constructor).
        unsafe { self.crypt_sector_vaes(iv, sector, encrypt) }
    }

    #[target_feature(enable = "avx512f,vaes,vpclmulqdq,aes,sse4.1")]
    fn crypt_sector_vaes(&self, iv: u128, sector: &mut [u8], encrypt: bool) {
        assert!(
            sector.len().is_multiple_of(BATCH),
            "sector sizes are 512 or 4096"
        );
        let rounds = self.rounds;
        // The tweak: E_K2(IV), one block with AES-NI.
        let mut t = _mm_xor_si128(xmm_from_u128(iv), xmm_from_u128(self.tweak[0]));
        for key in &self.tweak[1..rounds] {
            t = _mm_aesenc_si128(t, xmm_from_u128(*key));
        }
        t = _mm_aesenclast_si128(t, xmm_from_u128(self.tweak[rounds]));
        let mut tweaks = initial_tweaks(u128_from_xmm(t));

        let schedule = if encrypt { &self.enc } else { &self.dec };
        let mut keys: [__m512i; 15] =
            core::array::from_fn(|i| _mm512_broadcast_i32x4(xmm_from_u128(schedule[i])));
        for batch in sector.chunks_exact_mut(BATCH) {
            let mut x = load_batch(batch);
            for (xj, tj) in x.iter_mut().zip(tweaks.iter()) {
                *xj = _mm512_ternarylogic_epi64::<0x96>(*xj, *tj, keys[0]);
            }
            if encrypt {
                for key in &keys[1..rounds] {
                    for xj in &mut x {
                        *xj = _mm512_aesenc_epi128(*xj, *key);
                    }
                }
                for xj in &mut x {
                    *xj = _mm512_aesenclast_epi128(*xj, keys[rounds]);
                }
            } else {
                for key in &keys[1..rounds] {
                    for xj in &mut x {
                        *xj = _mm512_aesdec_epi128(*xj, *key);
                    }
                }
                for xj in &mut x {
                    *xj = _mm512_aesdeclast_epi128(*xj, keys[rounds]);
                }
            }
            for (xj, tj) in x.iter_mut().zip(tweaks.iter_mut()) {
                *xj = _mm512_xor_si512(*xj, *tj);
                *tj = times_alpha32_clmul(*tj);
            }
            store_batch(batch, &x);
        }
        // The round keys were spilled to the stack: clear them (and the tweaks).
        keys.zeroize();
        tweaks.zeroize();
    }
}

/// The AVX-512 Twofish-XTS path; a token that the CPU has the features.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TwofishAvx512(());

impl TwofishAvx512 {
    pub(crate) fn detect() -> Option<Self> {
        twofish_avx512_available().then_some(Self(()))
    }

    /// Encrypts or decrypts one sector (a multiple of 512 bytes) in place; `tweak` is
    /// the already encrypted initial tweak.
    pub(crate) fn crypt_sector(
        self,
        key: &TwofishKey,
        tweak: u128,
        sector: &mut [u8],
        encrypt: bool,
    ) {
        // SAFETY: a TwofishAvx512 token exists only if twofish_avx512_available() was
        // true (see `detect`).
        unsafe { twofish_sector_avx512(key, tweak, sector, encrypt) }
    }
}

/// 4x4 transpose of 32-bit words inside each 128-bit lane of four registers: turns four
/// registers of whole blocks into one register per block word (and back: it is its own
/// inverse).
#[target_feature(enable = "avx512f")]
fn transpose(x: [__m512i; 4]) -> [__m512i; 4] {
    let t0 = _mm512_unpacklo_epi32(x[0], x[1]);
    let t1 = _mm512_unpackhi_epi32(x[0], x[1]);
    let t2 = _mm512_unpacklo_epi32(x[2], x[3]);
    let t3 = _mm512_unpackhi_epi32(x[2], x[3]);
    [
        _mm512_unpacklo_epi64(t0, t2),
        _mm512_unpackhi_epi64(t0, t2),
        _mm512_unpacklo_epi64(t1, t3),
        _mm512_unpackhi_epi64(t1, t3),
    ]
}

/// The Twofish g function on 16 words: four gathers from the full-keying tables.
#[target_feature(enable = "avx512f")]
fn g16(tables: &[u32; 1024], x: __m512i) -> __m512i {
    let byte = _mm512_set1_epi32(0xff);
    let i0 = _mm512_and_si512(x, byte);
    let i1 = _mm512_and_si512(_mm512_srli_epi32::<8>(x), byte);
    let i2 = _mm512_and_si512(_mm512_srli_epi32::<16>(x), byte);
    let i3 = _mm512_srli_epi32::<24>(x);
    let base = tables.as_ptr().cast::<i32>();
    // SAFETY: every index is masked/shifted into 0..=255, and table j starts at
    // 256 * j of a 1024-entry array, so each gathered address is inside `tables`.
    let (g0, g1, g2, g3) = unsafe {
        (
            _mm512_i32gather_epi32::<4>(i0, base),
            _mm512_i32gather_epi32::<4>(i1, base.add(256)),
            _mm512_i32gather_epi32::<4>(i2, base.add(512)),
            _mm512_i32gather_epi32::<4>(i3, base.add(768)),
        )
    };
    _mm512_ternarylogic_epi64::<0x96>(g0, g1, _mm512_xor_si512(g2, g3))
}

/// Subkey `i` broadcast to all lanes.
#[target_feature(enable = "avx512f")]
fn subkey(key: &TwofishKey, i: usize) -> __m512i {
    _mm512_set1_epi32(key.subkeys[i].cast_signed())
}

/// Two interleaved sets of 16 blocks, as words a, b, c, d of each block.
type Words = [[__m512i; 2]; 4];

#[target_feature(enable = "avx512f")]
fn twofish_encrypt32(key: &TwofishKey, w: &mut Words) {
    let t = &key.g_tables;
    let [a, b, c, d] = w;
    for r in 0..8 {
        let (k0, k1) = (subkey(key, 8 + 4 * r), subkey(key, 9 + 4 * r));
        for s in 0..2 {
            let t0 = g16(t, a[s]);
            let t1 = g16(t, _mm512_rol_epi32::<8>(b[s]));
            let f0 = _mm512_add_epi32(_mm512_add_epi32(t0, t1), k0);
            let f1 = _mm512_add_epi32(_mm512_add_epi32(t0, _mm512_add_epi32(t1, t1)), k1);
            c[s] = _mm512_ror_epi32::<1>(_mm512_xor_si512(c[s], f0));
            d[s] = _mm512_xor_si512(_mm512_rol_epi32::<1>(d[s]), f1);
        }
        let (k2, k3) = (subkey(key, 10 + 4 * r), subkey(key, 11 + 4 * r));
        for s in 0..2 {
            let t0 = g16(t, c[s]);
            let t1 = g16(t, _mm512_rol_epi32::<8>(d[s]));
            let f0 = _mm512_add_epi32(_mm512_add_epi32(t0, t1), k2);
            let f1 = _mm512_add_epi32(_mm512_add_epi32(t0, _mm512_add_epi32(t1, t1)), k3);
            a[s] = _mm512_ror_epi32::<1>(_mm512_xor_si512(a[s], f0));
            b[s] = _mm512_xor_si512(_mm512_rol_epi32::<1>(b[s]), f1);
        }
    }
}

#[target_feature(enable = "avx512f")]
fn twofish_decrypt32(key: &TwofishKey, w: &mut Words) {
    let t = &key.g_tables;
    let [a, b, c, d] = w;
    for r in (0..8).rev() {
        let (k2, k3) = (subkey(key, 10 + 4 * r), subkey(key, 11 + 4 * r));
        for s in 0..2 {
            let t0 = g16(t, c[s]);
            let t1 = g16(t, _mm512_rol_epi32::<8>(d[s]));
            let f0 = _mm512_add_epi32(_mm512_add_epi32(t0, t1), k2);
            let f1 = _mm512_add_epi32(_mm512_add_epi32(t0, _mm512_add_epi32(t1, t1)), k3);
            a[s] = _mm512_xor_si512(_mm512_rol_epi32::<1>(a[s]), f0);
            b[s] = _mm512_ror_epi32::<1>(_mm512_xor_si512(b[s], f1));
        }
        let (k0, k1) = (subkey(key, 8 + 4 * r), subkey(key, 9 + 4 * r));
        for s in 0..2 {
            let t0 = g16(t, a[s]);
            let t1 = g16(t, _mm512_rol_epi32::<8>(b[s]));
            let f0 = _mm512_add_epi32(_mm512_add_epi32(t0, t1), k0);
            let f1 = _mm512_add_epi32(_mm512_add_epi32(t0, _mm512_add_epi32(t1, t1)), k1);
            c[s] = _mm512_xor_si512(_mm512_rol_epi32::<1>(c[s]), f0);
            d[s] = _mm512_ror_epi32::<1>(_mm512_xor_si512(d[s], f1));
        }
    }
}

#[target_feature(enable = "avx512f,sse4.1")]
fn twofish_sector_avx512(key: &TwofishKey, tweak: u128, sector: &mut [u8], encrypt: bool) {
    assert!(
        sector.len().is_multiple_of(BATCH),
        "sector sizes are 512 or 4096"
    );
    let mut tweaks = initial_tweaks(tweak);
    let whiten = |i: usize| subkey(key, i);
    for batch in sector.chunks_exact_mut(BATCH) {
        let mut x = load_batch(batch);
        for (xj, tj) in x.iter_mut().zip(tweaks.iter()) {
            *xj = _mm512_xor_si512(*xj, *tj);
        }
        let set0 = transpose([x[0], x[1], x[2], x[3]]);
        let set1 = transpose([x[4], x[5], x[6], x[7]]);
        // Input whitening: encryption takes K0..K3 into (a, b, c, d); decryption
        // takes words 0..4 with K4..K7 into (c, d, a, b).
        // (input word, subkey) feeding a, b, c, d.
        let in_order: [(usize, usize); 4] = if encrypt {
            [(0, 0), (1, 1), (2, 2), (3, 3)]
        } else {
            [(2, 6), (3, 7), (0, 4), (1, 5)]
        };
        let mut w: Words = core::array::from_fn(|i| {
            let (word, k) = in_order[i];
            let k = whiten(k);
            [
                _mm512_xor_si512(set0[word], k),
                _mm512_xor_si512(set1[word], k),
            ]
        });
        let out_order: [(usize, usize); 4] = if encrypt {
            twofish_encrypt32(key, &mut w);
            // Output words: (c ^ K4, d ^ K5, a ^ K6, b ^ K7).
            [(2, 4), (3, 5), (0, 6), (1, 7)]
        } else {
            twofish_decrypt32(key, &mut w);
            // Output words: (a ^ K0, b ^ K1, c ^ K2, d ^ K3).
            [(0, 0), (1, 1), (2, 2), (3, 3)]
        };
        let out: [[__m512i; 2]; 4] = core::array::from_fn(|i| {
            let (word, k) = out_order[i];
            let k = whiten(k);
            [
                _mm512_xor_si512(w[word][0], k),
                _mm512_xor_si512(w[word][1], k),
            ]
        });
        let blocks0 = transpose([out[0][0], out[1][0], out[2][0], out[3][0]]);
        let blocks1 = transpose([out[0][1], out[1][1], out[2][1], out[3][1]]);
        for (j, xj) in blocks0.iter().chain(blocks1.iter()).enumerate() {
            x[j] = _mm512_xor_si512(*xj, tweaks[j]);
        }
        for tj in &mut tweaks {
            *tj = times_alpha32(*tj);
        }
        store_batch(batch, &x);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::aes_cipher::AesKey;
    use crate::xts::{xts_sector, Block, BlockBatch};
    use rand::{Rng, SeedableRng};

    /// Why a test that the build machine's CPU enabled finds the features missing.
    pub(super) const BUILT_ELSEWHERE: &str =
        "the build machine's CPU had these features and this one does not: \
         run the tests where they were built";

    fn portable_aes(key: &[u8], iv: u128, data: &mut [u8], encrypt: bool) {
        let (k1, k2) = key.split_at(key.len() / 2);
        let data_key = AesKey::new(k1).expect("key");
        let tweak_key = AesKey::new(k2).expect("key");
        let mut t = [Block::from(iv.to_le_bytes())];
        tweak_key.encrypt_blocks(&mut t);
        xts_sector(&data_key, u128::from_le_bytes(t[0].into()), data, encrypt);
    }

    /// The VAES path gives the same bytes as the portable path (which the IEEE
    /// vectors pin down) for both key sizes, several sector sizes and IVs.
    #[test]
    #[cfg_attr(
        not(tosskey_host_vaes512),
        ignore = "this CPU lacks AVX-512F/VAES/VPCLMULQDQ"
    )]
    fn cpu_feature_vaes_matches_portable() {
        assert!(vaes_available(), "{BUILT_ELSEWHERE}");
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xae5);
        for round in 0..24 {
            let key_len = if round % 2 == 0 { 32 } else { 64 };
            let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
            let len = [512usize, 1024, 4096][round % 3];
            let iv: u128 = if round % 5 == 0 {
                u128::from(u64::MAX)
            } else {
                u128::from(rng.gen::<u64>())
            };
            let plain: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut expected = plain.clone();
            portable_aes(&key, iv, &mut expected, true);
            let vaes = VaesXts::new(&key[..key_len / 2], &key[key_len / 2..]).expect("vaes");
            let mut data = plain.clone();
            vaes.crypt_sector(iv, &mut data, true);
            assert_eq!(data, expected, "encrypt round {round}");
            vaes.crypt_sector(iv, &mut data, false);
            assert_eq!(data, plain, "decrypt round {round}");
        }
    }

    /// The AVX-512 gather Twofish path gives the same bytes as the scalar path.
    #[test]
    #[cfg_attr(not(tosskey_host_avx512f), ignore = "this CPU lacks AVX-512F")]
    fn cpu_feature_twofish_avx512_matches_scalar() {
        let simd = TwofishAvx512::detect().expect(BUILT_ELSEWHERE);
        twofish_matches_scalar(|key, tweak, data, encrypt| {
            simd.crypt_sector(key, tweak, data, encrypt);
        });
    }

    /// `crypt` (a SIMD Twofish-XTS sector function) gives the same bytes as the scalar
    /// path for random 128- and 256-bit keys, tweaks and sector lengths.
    pub(super) fn twofish_matches_scalar(crypt: impl Fn(&TwofishKey, u128, &mut [u8], bool)) {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x2f1);
        for round in 0..24 {
            let key_len = if round % 2 == 0 { 16 } else { 32 };
            let key: Vec<u8> = (0..key_len).map(|_| rng.gen()).collect();
            let twofish = TwofishKey::new(&key);
            let len = [512usize, 1024, 4096][round % 3];
            let tweak: u128 = rng.gen();
            let plain: Vec<u8> = (0..len).map(|_| rng.gen()).collect();
            let mut expected = plain.clone();
            xts_sector(&twofish, tweak, &mut expected, true);
            let mut data = plain.clone();
            crypt(&twofish, tweak, &mut data, true);
            assert_eq!(data, expected, "encrypt round {round}");
            crypt(&twofish, tweak, &mut data, false);
            assert_eq!(data, plain, "decrypt round {round}");
        }
    }

    /// alpha^32 by shifts and by carry-less multiply agree with 32 scalar doublings.
    #[test]
    #[cfg_attr(
        not(tosskey_host_vaes512),
        ignore = "this CPU lacks AVX-512F/VPCLMULQDQ"
    )]
    fn cpu_feature_alpha32_matches_scalar() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0xa1f);
        assert!(
            std::is_x86_feature_detected!("avx512f")
                && std::is_x86_feature_detected!("vpclmulqdq")
                && std::is_x86_feature_detected!("sse4.1"),
            "{BUILT_ELSEWHERE}"
        );
        for _ in 0..100 {
            let t: u128 = rng.gen();
            let mut expected = t;
            for _ in 0..32 {
                expected = mul_alpha(expected);
            }
            // SAFETY: AVX-512F, VPCLMULQDQ and SSE4.1 were detected above.
            let (by_shift, by_clmul) = unsafe { alpha32_both(t) };
            assert_eq!(by_shift, expected);
            assert_eq!(by_clmul, expected);
        }
    }

    #[target_feature(enable = "avx512f,vpclmulqdq,sse4.1")]
    fn alpha32_both(t: u128) -> (u128, u128) {
        let regs = initial_tweaks(t);
        let lane0 = |r: __m512i| u128_from_xmm(core::arch::x86_64::_mm512_castsi512_si128(r));
        (
            lane0(times_alpha32(regs[0])),
            lane0(times_alpha32_clmul(regs[0])),
        )
    }
}
