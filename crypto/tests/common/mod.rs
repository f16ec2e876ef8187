//! Fixtures shared by the test modules: the escrow test keys and crypt parameters, and the
//! process's mapping table (`smaps`).

use std::path::Path;

pub mod smaps;

/// A file of `tests/data/escrow/`.
pub fn data(name: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("tests/data/escrow")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The 2048-bit test key pair A: public SPKI PEM.
pub fn public_a() -> String {
    data("test-a-2048.spki.pem")
}

/// The 2048-bit test key pair A: private PKCS#8 PEM.
pub fn private_a() -> String {
    data("test-a-2048.pkcs8.pem")
}

/// twofish-xts-plain64, 4096-byte sectors, no offsets: what tosskey writes by default.
pub fn default_crypt(key_bits: u32) -> tosskey_crypto::escrow::EscrowCrypt {
    tosskey_crypto::escrow::EscrowCrypt {
        cipher: tosskey_crypto::CipherSpec::default(),
        key_bits,
        sector_size: 4096,
        iv_large_sectors: false,
        iv_offset: 0,
        data_offset: 0,
        allow_discards: false,
    }
}
