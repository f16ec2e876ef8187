//! tosskey-crypto: the volume key, dm-crypt cipher specs, a userspace XTS sector cipher
//! byte-exact with dm-crypt, and RSA-OAEP key escrow. No unsafe outside justified SIMD,
//! no kernel calls.
//!
//! (lib.rs is shared: each module's owner adds only its own `pub mod` / `pub use` lines.)

pub mod spec;
pub mod error;
pub mod sector;
mod aes_cipher;
mod bulk;
#[cfg(target_arch = "x86_64")]
mod simd_x86;
mod twofish;
mod xts;
pub mod escrow;
pub mod key;

pub use error::{Error, Result};
pub use escrow::{EscrowFile, EscrowMetadata};
pub use key::{KeySize, VolumeKey};
pub use spec::{BlockCipher, CipherSpec};
pub use sector::{SectorCipher, SectorLayout, SectorSize};
