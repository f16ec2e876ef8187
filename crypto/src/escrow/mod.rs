//! Key escrow: the volume key sealed to an RSA public key with RSA-OAEP-SHA-256, in a
//! versioned JSON file that records everything needed to reopen the volume.
//!
//! # Design
//!
//! - **Padding**: RSA-OAEP with SHA-256 for both the label hash and MGF1 (RFC 8017 §7.1).
//!   The original script used PyCrypto's `key.encrypt(passphrase, None)`: textbook RSA,
//!   deterministic and malleable. Never that.
//! - **Keys**: public keys as PEM SPKI or PKCS#1, private keys as PEM PKCS#8 or PKCS#1;
//!   under 2048 bits refused; the rsa crate caps public keys at 8192 bits.
//! - **Metadata bound to the ciphertext**: the OAEP label is the canonical JSON of every
//!   other field of the file plus the key's index and mapping name. Editing any field
//!   (a member's identity, the cipher, the data offset…) makes decryption fail with
//!   "escrow file was altered after it was sealed" instead of silently reopening the
//!   volume with wrong parameters. The label is not secret and adds no confidentiality.
//! - **Wrong key vs tampering**: the file records the SHA-256 of the recipient's
//!   SubjectPublicKeyInfo, so a private key of another pair is reported as such before any
//!   decryption is attempted.
//! - **Side channels**: `open` runs RSA decryption, which only ever runs offline on an
//!   operator's machine (`escrow decrypt`, `recover`), never as a network-reachable oracle.
//!   RUSTSEC-2023-0071 (Marvin timing attack) lists *no* patched `rsa` version: the
//!   advisory-db entry (last change seen 2026-04-25, still `patched = []` after
//!   rustsec/advisory-db#3208 of 2026-09-12, which names 0.10.0-rc.18 as affected) flags
//!   every version, 0.10.0 included. What 0.10.0 itself does (its CHANGELOG and
//!   `src/private_key.rs`): constant-time `crypto-bigint` modular exponentiation, and
//!   `RsaPrivateKey::decrypt`, which this module calls, blinds with the OS RNG (the default
//!   `getrandom` feature). The attack needs many decryptions of chosen ciphertexts, timed by
//!   the attacker: an operator decrypting one escrow file offline is not such an oracle. The
//!   security model (docs/security.md) says the same.
//! - **Key scope** (format version 2): one key per segment of a mapping, each recorded with
//!   its range (`start_sector`, `sectors`) and sealed with that range in its label; up to
//!   1024 keys per file. Version 1 files (one key per mapping) are still read.
//! - **Metadata is hostile input**: anyone holding the *public* key can seal a file with
//!   metadata of their choosing, and `escrow decrypt` prints commands an operator pastes as
//!   root. Names follow the device-mapper name rules, paths a strict character set, and
//!   only sector sizes the verifier checks (512, 4096) are accepted.
//! - **Files**: written atomically with mode 0400, never over an existing file unless asked
//!   (see `atomic`).

mod atomic;
mod file;
mod format;
mod open;
mod rsa_keys;
mod seal;
mod validate;

pub(crate) use atomic::write_new_file;
pub use format::{
    rfc3339_utc, Assembly, EscrowCrypt, EscrowFile, EscrowMember, EscrowMetadata, KeySegment,
    Layout, MdLevel, OpenedKey, OpenedSegment, OpenedSegments, Recipient, SealedKey, ALGORITHM,
    FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSION_ONE_KEY, MAX_FILE_BYTES, MAX_KEYS,
};
pub use rsa_keys::{EscrowPrivateKey, EscrowPublicKey, MIN_RSA_BITS};
pub use seal::UnsealedEscrow;
