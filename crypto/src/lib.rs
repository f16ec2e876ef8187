//! tosskey-crypto: the volume key, dm-crypt cipher specs, a userspace XTS sector cipher
//! byte-exact with dm-crypt, and RSA-OAEP key escrow. No unsafe outside justified SIMD,
//! no kernel calls.
//!
//! (lib.rs is shared: each module's owner adds only its own `pub mod` / `pub use` lines.)

mod aes_cipher;
mod bulk;
pub mod dispatch;
pub mod error;
pub mod escrow;
pub mod key;
mod locked;
pub mod secret_file;
pub mod sector;
#[cfg(target_arch = "x86_64")]
mod simd_x86;
pub mod spec;
mod twofish;
mod xts;

pub use dispatch::{twofish_calibration, TwofishCalibration, TwofishPath};
pub use error::{Error, Result};
pub use escrow::{EscrowFile, EscrowMetadata};
pub use key::{KeyArena, KeySize, VolumeKey};
pub use sector::{SectorCipher, SectorLayout, SectorSize};
pub use spec::{BlockCipher, CipherSpec};
