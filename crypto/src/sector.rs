//! The dm-crypt sector cipher: XTS with the `plain64` IV, byte-exact with the kernel's
//! `crypt_convert_block_skcipher` (drivers/md/dm-crypt.c):
//!
//! - the kernel keeps `cc_sector = bio sector (relative to the target start) + iv_offset`,
//!   in 512-byte units, and advances it by `sector_size / 512` per crypt sector;
//! - the IV sector is `cc_sector`, or `cc_sector >> log2(sector_size / 512)` with
//!   `iv_large_sectors` (the shift is applied after adding `iv_offset`);
//! - `plain64` puts the IV sector little-endian in the first 8 bytes of a zero block;
//! - XTS splits the key in two halves: the first encrypts data, the second the IV.
//!
//! So with 4096-byte sectors and IVs in 512-byte units, the second 4 KiB sector of the
//! mapping has IV 8, not 1.

use crate::aes_cipher::AesKey;
use crate::dispatch::{TwofishPath, TwofishRunner};
use crate::error::Error;
use crate::spec::BlockCipher;
use crate::twofish::TwofishKey;
use tosskey_sysutil::mlock::MlockGuard;
use tosskey_sysutil::SECTOR_SIZE;
use zeroize::Zeroize;

use crate::xts::{plain64_iv, xts_sector, Block, BlockBatch, BLOCK};

/// The crypt sector size of a dm-crypt mapping (`sector_size:` optional parameter).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SectorSize {
    /// 512 bytes, the kernel default.
    S512,
    /// 4096 bytes.
    S4096,
}

impl SectorSize {
    /// The size in bytes.
    pub const fn bytes(self) -> usize {
        match self {
            Self::S512 => 512,
            Self::S4096 => 4096,
        }
    }

    /// 512-byte units per crypt sector (the kernel's `sector_size >> SECTOR_SHIFT`).
    pub const fn units_of_512(self) -> u64 {
        match self {
            Self::S512 => 1,
            Self::S4096 => 8,
        }
    }

    /// log2 of [`Self::units_of_512`] (the kernel's `sector_shift`).
    const fn shift(self) -> u32 {
        match self {
            Self::S512 => 0,
            Self::S4096 => 3,
        }
    }
}

impl TryFrom<u64> for SectorSize {
    type Error = Error;

    fn try_from(bytes: u64) -> Result<Self, Error> {
        match bytes {
            512 => Ok(Self::S512),
            4096 => Ok(Self::S4096),
            _ => Err(Error::SectorSize { bytes }),
        }
    }
}

/// How a dm-crypt mapping numbers its IVs: the table's sector size, `iv_large_sectors`
/// flag and `<iv_offset>` (in 512-byte units, as in the table line).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct SectorLayout {
    pub sector_size: SectorSize,
    pub iv_large_sectors: bool,
    pub iv_offset: u64,
}

impl SectorLayout {
    /// The kernel's plain-mode defaults: 512-byte sectors, IV in 512-byte units, no
    /// offset.
    pub const DEFAULT: Self = Self {
        sector_size: SectorSize::S512,
        iv_large_sectors: false,
        iv_offset: 0,
    };

    /// The IV sector number of the crypt sector at `position` (512-byte units inside
    /// the mapping), exactly as the kernel computes `dmreq->iv_sector` (u64 wrapping).
    pub fn iv_sector(&self, position: u64) -> u64 {
        let cc_sector = position.wrapping_add(self.iv_offset);
        if self.iv_large_sectors {
            cc_sector >> self.sector_size.shift()
        } else {
            cc_sector
        }
    }
}

impl Default for SectorLayout {
    fn default() -> Self {
        Self::DEFAULT
    }
}

/// Which implementation runs the sectors (picked at construction from CPU features).
/// It lives in its own locked pages and is never moved, so the size difference between
/// the variants costs nothing.
#[allow(clippy::large_enum_variant)]
enum Engine {
    /// VAES on 512-bit registers; holds its own round keys.
    #[cfg(target_arch = "x86_64")]
    AesVaes(crate::simd_x86::VaesXts),
    /// The `aes` crate (AES-NI when present, bitsliced software otherwise).
    AesPortable { data: AesKey, tweak: AesKey },
    Twofish {
        data: TwofishKey,
        tweak: TwofishKey,
        runner: TwofishRunner,
    },
}

impl Engine {
    /// Overwrites every key schedule in place.
    fn wipe(&mut self) {
        match self {
            #[cfg(target_arch = "x86_64")]
            Self::AesVaes(v) => v.zeroize(),
            Self::AesPortable { data, tweak } => {
                // The aes crate zeroizes a schedule when it is dropped, which the
                // assignment does in place.
                *data = AesKey::placeholder();
                *tweak = AesKey::placeholder();
            }
            Self::Twofish { data, tweak, .. } => {
                data.zeroize();
                tweak.zeroize();
            }
        }
    }
}

/// Page alignment makes the allocation own whole pages, so locking and unlocking it
/// cannot affect any other allocation (mlock does not nest; munlock of a shared page
/// would unlock someone else's key).
#[repr(C, align(4096))]
struct PageAligned<T>(T);

/// An XTS-plain64 sector cipher keyed like a dm-crypt table. Holds only expanded keys,
/// in mlocked pages of their own, zeroized on drop before they are unlocked; its `Debug`
/// shows the cipher and layout, never keys.
pub struct SectorCipher {
    cipher: BlockCipher,
    layout: SectorLayout,
    // Field order is drop order: `Drop` wipes the engine, then the lock guard
    // munlocks, then the pages are freed.
    _lock: MlockGuard,
    engine: Box<PageAligned<Engine>>,
}

impl Drop for SectorCipher {
    fn drop(&mut self) {
        self.engine.0.wipe();
    }
}

impl core::fmt::Debug for SectorCipher {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SectorCipher")
            .field("cipher", &self.cipher)
            .field("layout", &self.layout)
            .field("implementation", &self.implementation())
            .finish_non_exhaustive()
    }
}

impl SectorCipher {
    /// Expands `key` (the whole XTS key as in the dm table: data half then tweak half,
    /// 32 or 64 bytes), picking the fastest implementation this CPU runs.
    pub fn new(cipher: BlockCipher, key: &[u8], layout: SectorLayout) -> Result<Self, Error> {
        Self::build(cipher, key, layout, true, None)
    }

    /// Like [`Self::new`] but never uses SIMD paths: the portable reference the SIMD
    /// paths are cross-checked and benchmarked against.
    pub fn new_portable(
        cipher: BlockCipher,
        key: &[u8],
        layout: SectorLayout,
    ) -> Result<Self, Error> {
        Self::build(cipher, key, layout, false, Some(TwofishRunner::Portable))
    }

    /// A Twofish cipher on the given implementation instead of the calibrated fastest
    /// (tests and benchmarks compare them); an error when this CPU does not run it.
    pub fn with_twofish_path(
        path: TwofishPath,
        key: &[u8],
        layout: SectorLayout,
    ) -> Result<Self, Error> {
        let runner = TwofishRunner::for_path(path).ok_or(Error::PathUnavailable {
            path: path.name(),
            needs: path.required_features(),
        })?;
        Self::build(BlockCipher::Twofish, key, layout, true, Some(runner))
    }

    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn build(
        cipher: BlockCipher,
        key: &[u8],
        layout: SectorLayout,
        use_simd: bool,
        twofish: Option<TwofishRunner>,
    ) -> Result<Self, Error> {
        let length_error = || Error::XtsKeyLength {
            cipher,
            len: key.len(),
        };
        if !matches!(key.len(), 32 | 64) {
            return Err(length_error());
        }
        let (data_key, tweak_key) = key.split_at(key.len() / 2);
        // Allocate and lock the pages first, then expand the keys into them.
        let twofish = match (cipher, twofish) {
            (BlockCipher::Twofish, None) => TwofishRunner::fastest(data_key.len()),
            (_, forced) => forced.unwrap_or(TwofishRunner::Portable),
        };
        let mut engine = Box::new(PageAligned(Self::unkeyed_engine(cipher, use_simd, twofish)));
        let lock = MlockGuard::lock(&*engine).map_err(Error::LockMemory)?;
        match &mut engine.0 {
            #[cfg(target_arch = "x86_64")]
            Engine::AesVaes(vaes) => {
                if !vaes.expand(data_key, tweak_key) {
                    return Err(length_error());
                }
            }
            Engine::AesPortable { data, tweak } => {
                let expanded = expand_aes_into(data, data_key) && expand_aes_into(tweak, tweak_key);
                // The aes crate built each schedule by value in `expand_aes_into`'s frame
                // before it was moved into the locked engine: overwrite that stack now.
                wipe_stack_below();
                if !expanded {
                    return Err(length_error());
                }
            }
            Engine::Twofish { data, tweak, .. } => {
                data.expand(data_key);
                tweak.expand(tweak_key);
            }
        }
        Ok(Self {
            cipher,
            layout,
            _lock: lock,
            engine,
        })
    }

    /// The engine for `cipher` with all-zero (or placeholder) schedules; Twofish runs
    /// on `twofish`.
    #[cfg_attr(not(target_arch = "x86_64"), allow(unused_variables))]
    fn unkeyed_engine(cipher: BlockCipher, use_simd: bool, twofish: TwofishRunner) -> Engine {
        match cipher {
            BlockCipher::Aes => {
                #[cfg(target_arch = "x86_64")]
                if let Some(vaes) = use_simd
                    .then(crate::simd_x86::VaesXts::zeroed_if_available)
                    .flatten()
                {
                    return Engine::AesVaes(vaes);
                }
                Engine::AesPortable {
                    data: AesKey::placeholder(),
                    tweak: AesKey::placeholder(),
                }
            }
            BlockCipher::Twofish => Engine::Twofish {
                data: TwofishKey::zeroed(),
                tweak: TwofishKey::zeroed(),
                runner: twofish,
            },
        }
    }

    /// The block cipher under XTS.
    pub fn cipher(&self) -> BlockCipher {
        self.cipher
    }

    /// The IV layout this cipher was built for.
    pub fn layout(&self) -> SectorLayout {
        self.layout
    }

    /// Which implementation was picked for this CPU (for benchmarks and logs).
    pub fn implementation(&self) -> &'static str {
        match &self.engine.0 {
            #[cfg(target_arch = "x86_64")]
            Engine::AesVaes(_) => "aes-xts vaes-avx512",
            Engine::AesPortable { .. } => "aes-xts aes-crate (aes-ni when present)",
            Engine::Twofish { runner, .. } => match runner.path() {
                TwofishPath::Portable => "twofish-xts scalar full-keying",
                TwofishPath::Avx2Shuffle => "twofish-xts avx2-shuffle (no table reads)",
                TwofishPath::Avx2Loads => "twofish-xts avx2 (scalar table loads)",
                TwofishPath::Avx512Gather => "twofish-xts avx512-gather",
            },
        }
    }

    /// The Twofish implementation this cipher runs (`None` for AES).
    pub fn twofish_path(&self) -> Option<TwofishPath> {
        match &self.engine.0 {
            Engine::Twofish { runner, .. } => Some(runner.path()),
            _ => None,
        }
    }

    /// Encrypts whole crypt sectors in place. `start` is the position of `data` inside
    /// the mapping in 512-byte sectors (the bio sector relative to the target start);
    /// it must be a multiple of the sector size, and `data.len()` a multiple of it.
    pub fn encrypt(&self, start: u64, data: &mut [u8]) -> Result<(), Error> {
        self.check(start, data.len())?;
        self.run(start, data, true);
        Ok(())
    }

    /// Decrypts whole crypt sectors in place; arguments as for [`Self::encrypt`].
    pub fn decrypt(&self, start: u64, data: &mut [u8]) -> Result<(), Error> {
        self.check(start, data.len())?;
        self.run(start, data, false);
        Ok(())
    }

    /// Validates a run: aligned start, whole sectors, no sector-number overflow.
    pub(crate) fn check(&self, start: u64, len: usize) -> Result<(), Error> {
        let sector_size = self.layout.sector_size.bytes();
        if !start.is_multiple_of(self.layout.sector_size.units_of_512()) {
            return Err(Error::UnalignedStart { start, sector_size });
        }
        if !len.is_multiple_of(sector_size) {
            return Err(Error::PartialSector { len, sector_size });
        }
        let units =
            u64::try_from(len).map_err(|_| Error::SectorOverflow { start, len })? / SECTOR_SIZE;
        start
            .checked_add(units)
            .ok_or(Error::SectorOverflow { start, len })?;
        Ok(())
    }

    /// Runs already validated sectors.
    pub(crate) fn run(&self, start: u64, data: &mut [u8], encrypt: bool) {
        let size = self.layout.sector_size;
        let mut position = start;
        for sector in data.chunks_exact_mut(size.bytes()) {
            let iv = plain64_iv(self.layout.iv_sector(position));
            self.crypt_sector(iv, sector, encrypt);
            position += size.units_of_512();
        }
    }

    fn crypt_sector(&self, iv: [u8; BLOCK], sector: &mut [u8], encrypt: bool) {
        match &self.engine.0 {
            #[cfg(target_arch = "x86_64")]
            Engine::AesVaes(vaes) => vaes.crypt_sector(u128::from_le_bytes(iv), sector, encrypt),
            Engine::AesPortable { data, tweak } => {
                xts_sector(data, encrypted_tweak(tweak, iv), sector, encrypt);
            }
            Engine::Twofish {
                data,
                tweak,
                runner,
            } => runner.crypt_sector(data, encrypted_tweak(tweak, iv), sector, encrypt),
        }
    }
}

/// How much stack [`wipe_stack_below`] overwrites: several times what the aes crate's key
/// expansion uses (an `Aes256` with both its AES-NI and software schedules is under 2 KiB).
const STACK_WIPE_BYTES: usize = 16 << 10;

/// Expands `key` (16 or 32 bytes) into `slot`, which lives in the locked engine; false for
/// any other length. The aes crate returns its schedule by value, so a copy exists in this
/// function's frame (and its callees') until the caller runs [`wipe_stack_below`]. Never
/// inlined: the copy stays in a frame below the caller's, where the wipe reaches.
#[inline(never)]
fn expand_aes_into(slot: &mut AesKey, key: &[u8]) -> bool {
    match AesKey::new(key) {
        Some(schedule) => {
            *slot = schedule;
            true
        }
        None => false,
    }
}

/// Overwrites [`STACK_WIPE_BYTES`] of stack below the caller's frame, where the frames of
/// the functions it just called were, with volatile writes the compiler keeps.
#[inline(never)]
fn wipe_stack_below() {
    let mut scratch = [0u8; STACK_WIPE_BYTES];
    scratch.zeroize();
    core::hint::black_box(&scratch);
}

/// E_K2(IV) as a little-endian 128-bit number.
fn encrypted_tweak<C: BlockBatch>(tweak_key: &C, iv: [u8; BLOCK]) -> u128 {
    let mut block = [Block::from(iv)];
    tweak_key.encrypt_blocks(&mut block);
    let mut bytes = [0u8; BLOCK];
    bytes.copy_from_slice(&block[0]);
    u128::from_le_bytes(bytes)
}
