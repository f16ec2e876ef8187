//! The crate's one error type. Messages name the TPM device (or log file) and the command;
//! none can contain key material (only digests and public identity strings are measured).

use std::io;
use std::path::PathBuf;

use crate::proto::{HashAlg, ResponseCode};

/// Result alias for the crate.
pub type Result<T> = std::result::Result<T, Error>;

/// Everything that can go wrong measuring into a TPM or replaying a measurement log.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The TPM device node does not exist: no TPM, or its driver is not loaded.
    #[error(
        "no TPM at {device}: this machine has no TPM 2.0 or its driver (tpm_tis, tpm_crb) is not \
         loaded; enable the vTPM of the instance, or do not ask for a PCR measurement"
    )]
    NoDevice {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    /// The TPM device node exists but cannot be opened.
    #[error("cannot open the TPM {device}: {source}; run as root (the node is root:tss 0660)")]
    Open {
        device: PathBuf,
        #[source]
        source: io::Error,
    },
    /// Writing the command or reading the response failed.
    #[error("{command} on the TPM {device} failed: {source}")]
    Transport {
        device: PathBuf,
        command: &'static str,
        #[source]
        source: io::Error,
    },
    /// The TPM refused the command.
    #[error("{command} on the TPM {device} failed: {code}")]
    Tpm {
        device: PathBuf,
        command: &'static str,
        code: ResponseCode,
    },
    /// The response does not follow the command's response structure.
    #[error("{command} on the TPM {device}: malformed response ({reason}); is this a TPM 2.0?")]
    Malformed {
        device: PathBuf,
        command: &'static str,
        reason: String,
    },
    /// No bank this crate can compute digests for has the PCR allocated, or SHA-256 lacks it.
    #[error(
        "the TPM {device} has no {required} bank with PCR {pcr} allocated (allocated banks: \
         {allocated}); allocate it (tpm2_pcrallocate) or choose another PCR"
    )]
    BankNotAllocated {
        device: PathBuf,
        pcr: u32,
        required: HashAlg,
        allocated: String,
    },
    /// A digest handed to an extend is not the size of its bank's hash.
    #[error("a {len}-byte digest cannot extend the {alg} bank (it takes {} bytes)", alg.digest_len())]
    DigestLength { alg: HashAlg, len: usize },
    /// A PCR index outside 0..=23.
    #[error("PCR {pcr} does not exist; use a PCR from 0 to 23 (15 is the system-identity PCR)")]
    InvalidPcr { pcr: u32 },
    /// The volume identity cannot be measured as given.
    #[error("cannot measure volume {volume:?}: {reason}")]
    InvalidIdentity { volume: String, reason: String },
    /// An HMAC key longer than the hash block size.
    #[error("a {len}-byte key cannot be measured with HMAC-{alg} (at most {max} bytes)")]
    KeyTooLong {
        len: usize,
        alg: HashAlg,
        max: usize,
    },
    /// mlock of the HMAC scratch page failed.
    #[error(
        "cannot lock memory for the HMAC key blocks: {source}; raise RLIMIT_MEMLOCK or run as root"
    )]
    LockMemory {
        #[source]
        source: std::io::Error,
    },
    /// Reading, locking or appending to the event log failed.
    #[error("measurement log {path}: {action} failed: {source}")]
    Log {
        path: PathBuf,
        action: &'static str,
        #[source]
        source: io::Error,
    },
    /// A record of the event log is not a measurement record.
    #[error("measurement log {path}, record {record}: {reason}")]
    LogRecord {
        path: PathBuf,
        record: usize,
        reason: String,
    },
    /// A PCR values file line cannot be parsed.
    #[error("PCR values {path}, line {line}: {reason}; give tpm2_pcrread's output format")]
    PcrValues {
        path: PathBuf,
        line: usize,
        reason: String,
    },
    /// The replayed log does not produce the given PCR value.
    #[error(
        "PCR {pcr} in the {alg} bank is {actual} but the measurement log replays to {expected}: \
         the log is incomplete, or something else was measured into PCR {pcr}"
    )]
    Mismatch {
        alg: HashAlg,
        pcr: u32,
        expected: String,
        actual: String,
    },
    /// Nothing could be compared: no PCR value given for any PCR and bank the log extends.
    #[error("none of the given PCR values is for a PCR and bank the measurement log extends; nothing was verified")]
    NothingVerified,
}
