//! The crate's one error type. Messages never contain key bytes.

use crate::spec::BlockCipher;

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in tosskey-crypto.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An XTS key must be two equal halves of a valid block-cipher key.
    #[error(
        "{cipher:?}-xts key is {len} bytes; use 32 (2 x 128-bit) or 64 (2 x 256-bit) bytes"
    )]
    XtsKeyLength { cipher: BlockCipher, len: usize },

    /// A run of sectors must start on a sector boundary of the mapping.
    #[error(
        "start sector {start} (512-byte units) is not aligned to the {sector_size}-byte \
         crypt sector size; start at a multiple of {} 512-byte sectors",
        sector_size / 512
    )]
    UnalignedStart { start: u64, sector_size: usize },

    /// A buffer handed to the sector cipher must hold whole sectors.
    #[error(
        "buffer of {len} bytes is not a whole number of {sector_size}-byte crypt sectors; \
         pass a multiple of {sector_size} bytes"
    )]
    PartialSector { len: usize, sector_size: usize },

    /// The sector range runs past the end of a 64-bit sector number.
    #[error(
        "sector range starting at {start} with {len} bytes overflows the 64-bit sector \
         number; use a smaller start or buffer"
    )]
    SectorOverflow { start: u64, len: usize },

    /// A sector size the kernel's dm-crypt does not accept for our use.
    #[error("crypt sector size {bytes} is not supported; use 512 or 4096")]
    SectorSize { bytes: u64 },
}
