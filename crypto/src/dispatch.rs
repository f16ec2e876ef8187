//! Which Twofish-XTS implementation runs: chosen by what each one measures on this CPU,
//! not by feature flags alone. Gathers are fast on some x86 parts and slower than plain
//! loads on others (microcoded on AMD, mitigated against Gather Data Sampling on Intel
//! Skylake through Ice Lake), so a path that only *can* run is never assumed to be the
//! faster one. The first Twofish [`crate::SectorCipher`] of the process for a key size
//! times every path this CPU runs on the same data (a few hundred microseconds) and the
//! fastest is used from then on for that key size; [`twofish_calibration`] shows the
//! measured rates. (The key size matters: 128-bit keys run three q boxes per S-box
//! byte, 256-bit keys five, which changes how the table-free path compares.)

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use crate::twofish::TwofishKey;

#[cfg(target_arch = "x86_64")]
use crate::simd_x86::{G8Lookup, TwofishAvx2, TwofishAvx512};

/// A Twofish-XTS implementation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TwofishPath {
    /// Scalar full-keying code, four blocks in flight; runs on every CPU.
    Portable,
    /// AVX2 rounds on 16 blocks, the S-boxes and MDS computed with 4-bit byte
    /// shuffles (`vpshufb`): no table reads, no gathers.
    Avx2Shuffle,
    /// AVX2 rounds on 16 blocks with ordinary (scalar) table loads, no gathers.
    Avx2Loads,
    /// AVX-512F rounds on 32 blocks with `vpgatherdd` table reads.
    Avx512Gather,
}

impl TwofishPath {
    /// Every implementation, portable first.
    pub const ALL: [Self; 4] = [
        Self::Portable,
        Self::Avx2Shuffle,
        Self::Avx2Loads,
        Self::Avx512Gather,
    ];

    /// Short name, as printed by `tosskey bench`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Portable => "portable",
            Self::Avx2Shuffle => "avx2-shuffle",
            Self::Avx2Loads => "avx2-loads",
            Self::Avx512Gather => "avx512-gather",
        }
    }

    /// The CPU features the path needs.
    pub fn required_features(self) -> &'static str {
        match self {
            Self::Portable => "none",
            Self::Avx2Shuffle | Self::Avx2Loads => "x86-64 AVX2 and SSE4.1",
            Self::Avx512Gather => "x86-64 AVX-512F and SSE4.1",
        }
    }

    /// Whether this CPU runs the path.
    pub fn runs_here(self) -> bool {
        TwofishRunner::for_path(self).is_some()
    }
}

impl core::fmt::Display for TwofishPath {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// What calibration measured on this CPU.
#[derive(Debug, Clone, PartialEq)]
pub struct TwofishCalibration {
    /// The path every [`crate::SectorCipher::new`] Twofish cipher of this process uses.
    pub chosen: TwofishPath,
    /// Encryption MiB/s of each path this CPU runs (best of several short rounds), in
    /// [`TwofishPath::ALL`] order.
    pub rates: Vec<(TwofishPath, f64)>,
}

impl TwofishCalibration {
    /// Why [`Self::chosen`] was chosen, e.g.
    /// `fastest measured: avx2-shuffle 612 MiB/s, portable 401 MiB/s, avx2-gather 188 MiB/s`.
    pub fn reason(&self) -> String {
        let mut by_rate = self.rates.clone();
        by_rate.sort_by(|a, b| b.1.total_cmp(&a.1));
        let listed: Vec<String> = by_rate
            .iter()
            .map(|(path, rate)| format!("{path} {rate:.0} MiB/s"))
            .collect();
        format!("fastest measured: {}", listed.join(", "))
    }
}

/// The calibration of this process for Twofish keys of `key_bytes` (half the XTS key:
/// 16, 24 or 32; other values count as 32), measured on the first call.
pub fn twofish_calibration(key_bytes: usize) -> &'static TwofishCalibration {
    static CALIBRATIONS: [OnceLock<TwofishCalibration>; 3] = [const { OnceLock::new() }; 3];
    let (slot, key_bytes) = match key_bytes {
        16 => (0, 16),
        24 => (1, 24),
        _ => (2, 32),
    };
    CALIBRATIONS[slot].get_or_init(|| calibrate(key_bytes))
}

/// A path this CPU runs; for SIMD paths, the token proving the features were detected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum TwofishRunner {
    Portable,
    #[cfg(target_arch = "x86_64")]
    Avx2(TwofishAvx2),
    #[cfg(target_arch = "x86_64")]
    Avx512(TwofishAvx512),
}

impl TwofishRunner {
    /// The runner for `path`, or `None` when this CPU lacks its features.
    pub(crate) fn for_path(path: TwofishPath) -> Option<Self> {
        match path {
            TwofishPath::Portable => Some(Self::Portable),
            #[cfg(target_arch = "x86_64")]
            TwofishPath::Avx2Shuffle => TwofishAvx2::detect(G8Lookup::Shuffle).map(Self::Avx2),
            #[cfg(target_arch = "x86_64")]
            TwofishPath::Avx2Loads => TwofishAvx2::detect(G8Lookup::Scalar).map(Self::Avx2),
            #[cfg(target_arch = "x86_64")]
            TwofishPath::Avx512Gather => TwofishAvx512::detect().map(Self::Avx512),
            #[cfg(not(target_arch = "x86_64"))]
            _ => None,
        }
    }

    /// The runner of the calibrated fastest path for Twofish keys of `key_bytes`.
    pub(crate) fn fastest(key_bytes: usize) -> Self {
        Self::for_path(twofish_calibration(key_bytes).chosen).unwrap_or(Self::Portable)
    }

    pub(crate) fn path(self) -> TwofishPath {
        match self {
            Self::Portable => TwofishPath::Portable,
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => match avx2.lookup() {
                G8Lookup::Shuffle => TwofishPath::Avx2Shuffle,
                G8Lookup::Scalar => TwofishPath::Avx2Loads,
            },
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(_) => TwofishPath::Avx512Gather,
        }
    }

    /// Encrypts or decrypts one sector in place with the data key and the already
    /// encrypted initial tweak.
    pub(crate) fn crypt_sector(
        self,
        key: &TwofishKey,
        tweak: u128,
        sector: &mut [u8],
        encrypt: bool,
    ) {
        match self {
            Self::Portable => crate::xts::xts_sector(key, tweak, sector, encrypt),
            #[cfg(target_arch = "x86_64")]
            Self::Avx2(avx2) => avx2.crypt_sector(key, tweak, sector, encrypt),
            #[cfg(target_arch = "x86_64")]
            Self::Avx512(avx512) => avx512.crypt_sector(key, tweak, sector, encrypt),
        }
    }
}

/// Bytes each path encrypts per timed round: one 4 KiB crypt sector.
const ROUND_BYTES: usize = 4096;
/// Timed rounds per path, taken in turns so that a burst of load elsewhere on the
/// machine hits every path alike; each path keeps its best round.
const ROUNDS: usize = 5;

fn calibrate(key_bytes: usize) -> TwofishCalibration {
    // A fixed, public key of the right size: the timing does not depend on its bytes,
    // and no secret is used for measuring.
    let mut key = TwofishKey::zeroed();
    key.expand(&[0x5a; 32][..key_bytes]);
    let runners: Vec<TwofishRunner> = TwofishPath::ALL
        .into_iter()
        .filter_map(TwofishRunner::for_path)
        .collect();
    let mut data = vec![0u8; ROUND_BYTES];
    let mut best = vec![Duration::MAX; runners.len()];
    // One untimed round each first: page faults, cold caches, frequency ramp.
    for round in 0..=ROUNDS {
        for (runner, best) in runners.iter().zip(best.iter_mut()) {
            let started = Instant::now();
            runner.crypt_sector(&key, 1, &mut data, true);
            let elapsed = started.elapsed();
            if round > 0 {
                *best = (*best).min(elapsed);
            }
        }
    }
    let rates: Vec<(TwofishPath, f64)> = runners
        .iter()
        .zip(best)
        .map(|(runner, time)| (runner.path(), mib_per_second(ROUND_BYTES, time)))
        .collect();
    let chosen = rates
        .iter()
        .max_by(|a, b| a.1.total_cmp(&b.1))
        .map_or(TwofishPath::Portable, |(path, _)| *path);
    TwofishCalibration { chosen, rates }
}

/// A few KiB over a positive duration; the f64 conversions are exact at these sizes.
#[allow(clippy::cast_precision_loss)]
fn mib_per_second(bytes: usize, time: Duration) -> f64 {
    bytes as f64 / f64::from(1u32 << 20) / time.as_secs_f64().max(1e-9)
}
