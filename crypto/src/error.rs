//! The crate's one error type. Messages never contain key bytes.

use crate::spec::BlockCipher;

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong in tosskey-crypto.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An XTS key must be two equal halves of a valid block-cipher key.
    #[error("{cipher}-xts key is {len} bytes; use 32 (2 x 128-bit) or 64 (2 x 256-bit) bytes")]
    XtsKeyLength { cipher: BlockCipher, len: usize },

    /// A run of sectors must start on a sector boundary of the mapping.
    #[error(
        "start sector {start} (512-byte units) is not aligned to the {sector_size}-byte \
         crypt sector size; start at a multiple of {} 512-byte sectors",
        u64::try_from(*sector_size).unwrap_or(u64::MAX) / tosskey_sysutil::SECTOR_SIZE
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

    /// A forced implementation this CPU cannot run.
    #[error(
        "the {path} twofish path does not run on this CPU (it needs {needs}); use the default path"
    )]
    PathUnavailable {
        path: &'static str,
        needs: &'static str,
    },

    /// A sector size the kernel's dm-crypt does not accept for our use.
    #[error("crypt sector size {bytes} is not supported; use 512 or 4096")]
    SectorSize { bytes: u64 },

    // ---- key.rs (key-and-escrow engineer) ----
    /// `--key-size` other than 256 or 512.
    #[error("unsupported key size {bits} bits: use --key-size 256 or 512 (XTS splits the key into two halves)")]
    UnsupportedKeySize { bits: u32 },

    /// Recovered key material of a length no volume key has.
    #[error("a volume key is 32 or 64 bytes long, this one is {len} bytes")]
    KeyLength { len: usize },

    /// getrandom(2) failed.
    #[error("the operating system's random number generator failed")]
    Random(#[source] getrandom::Error),

    /// mlock(2) failed: the key would be swappable.
    #[error("could not lock the volume key in memory (mlock); raise the locked-memory limit (ulimit -l / RLIMIT_MEMLOCK) or run with CAP_IPC_LOCK")]
    LockMemory(#[source] std::io::Error),

    /// mlock(2) or madvise(2) of key memory failed: the keys would be swappable or dumpable.
    #[error("could not lock {bytes} bytes of key memory (mlock/madvise); raise the locked-memory limit (ulimit -l / RLIMIT_MEMLOCK) or run with CAP_IPC_LOCK")]
    LockKeys {
        bytes: usize,
        #[source]
        source: std::io::Error,
    },

    /// A key arena must hold between one and `max` keys.
    #[error("{count} keys requested; a key arena holds 1 to {max} (use a larger --key-scope)")]
    KeyCount { count: usize, max: usize },

    // ---- spec.rs ----
    /// A dm-crypt cipher string this crate cannot verify.
    #[error("unsupported cipher \"{spec}\": supported: {supported}", supported = crate::spec::SUPPORTED_CIPHER_NAMES)]
    UnsupportedCipher { spec: String },

    /// A key size the cipher spec cannot use.
    #[error(
        "{spec} needs a 256- or 512-bit key (XTS uses two keys of half that size), not {bits} bits"
    )]
    KeyBitsForCipher { spec: String, bits: u32 },

    // ---- escrow/ ----
    /// The escrow public key could not be used.
    #[error("escrow public key: {reason}")]
    EscrowPublicKey { reason: String },

    /// The escrow private key could not be used.
    #[error("escrow private key: {reason}")]
    EscrowPrivateKey { reason: String },

    /// RSA modulus below 2048 bits.
    #[error("the RSA key has {bits} bits; escrow needs at least 2048 (make one with: openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096)")]
    EscrowKeyTooSmall { bits: u32 },

    /// RSA-OAEP encryption failed (RNG failure or a malformed key).
    #[error("RSA-OAEP encryption of the volume key failed")]
    EscrowSeal(#[source] rsa::Error),

    /// The private key is not the one the file was sealed to.
    #[error("the private key does not match this escrow file (sealed to public key sha256:{sealed_to}, this private key's public key is sha256:{given})")]
    EscrowWrongPrivateKey { sealed_to: String, given: String },

    /// OAEP decryption failed with the right key: ciphertext or metadata changed after sealing.
    #[error("escrow file was altered after it was sealed: the key for {dm_name} does not decrypt with this file's metadata (a field or the ciphertext was changed)")]
    EscrowTampered { dm_name: String },

    /// Not JSON, truncated JSON, wrong types or unknown fields.
    #[error("escrow file is not a valid tosskey escrow file (truncated or edited?)")]
    EscrowJson(#[source] serde_json::Error),

    /// Valid JSON, but not a tosskey escrow file.
    #[error("not a tosskey escrow file (format is {found}, expected \"tosskey-escrow\")")]
    EscrowFormat { found: String },

    /// A format version this build does not read.
    #[error("escrow file format version {found} is not supported (this tosskey reads versions 1 to {supported}): use the tosskey release that wrote it")]
    EscrowVersion { found: u64, supported: u32 },

    /// A field that parses but has an impossible value.
    #[error("escrow file field `{field}` is invalid: {reason}")]
    EscrowField { field: String, reason: String },

    /// Larger than any escrow file could be.
    #[error(
        "escrow file is {len} bytes, larger than any tosskey escrow file ({max} bytes at most)"
    )]
    EscrowTooLarge { len: usize, max: usize },

    /// `open` on a file that holds one key per member.
    #[error("this escrow file holds {count} keys (per-disk layout): open them with open_all")]
    EscrowKeyCount { count: usize },

    /// The target file exists and overwriting was not asked for.
    #[error("{path} already exists: refusing to overwrite it (move it away first)")]
    FileExists { path: std::path::PathBuf },

    /// Reading the escrow file failed.
    #[error("could not read {path}")]
    ReadFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// Writing the escrow or key file failed.
    #[error("could not write {path}")]
    WriteFile {
        path: std::path::PathBuf,
        #[source]
        source: std::io::Error,
    },
}
