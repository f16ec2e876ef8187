//! tosskey-tpm: measures tosskey volumes into a TPM 2.0 PCR, with no TSS library and no
//! tpm2-tools — three raw commands written to `/dev/tpmrm0` — and keeps the event log in
//! systemd's format so a verifier holding a quote can replay it.
//!
//! ```no_run
//! use std::path::Path;
//! use tosskey_tpm::{measure_volume, KeyRange, Tpm, Verification, VolumeIdentity, DEFAULT_DEVICE, DEFAULT_LOG};
//! # fn main() -> Result<(), tosskey_tpm::Error> {
//! # let key = [0u8; 64];
//! let identity = VolumeIdentity {
//!     name: "ephemeral".into(),
//!     dm_uuid: "TOSSKEY-<boot id>-ephemeral".into(),
//!     cipher: "aes-xts-plain64".into(),
//!     key_bits: 512,
//!     sector_size: 4096,
//!     key_ranges: vec![KeyRange { start: 0, sectors: 1 << 30 }],
//!     verification: Verification::Passed,
//! };
//! let mut tpm = Tpm::open(DEFAULT_DEVICE)?; // Error::NoDevice when there is no TPM
//! // After verification, before the key is wiped; the key is only borrowed.
//! let measurement = measure_volume(&mut tpm, 15, &identity, &[&key[..]], Path::new(DEFAULT_LOG))?;
//! println!("{}", serde_json::to_string(&measurement).unwrap());
//! # Ok(()) }
//! ```
//!
//! Modules: [`proto`] encodes and decodes `TPM2_GetCapability(TPM_CAP_PCRS)`,
//! `TPM2_PCR_Read` and `TPM2_PCR_Extend` and names response codes; [`device`] is the
//! transport; [`digest`] hashes and HMACs in each bank's algorithm with the key pads in
//! locked memory; [`measure`] defines what is measured; [`log`] writes, reads, replays and
//! verifies the event log.

pub mod device;
pub mod digest;
pub mod error;
pub mod log;
pub mod measure;
pub mod proto;

pub use device::{Tpm, DEFAULT_DEVICE};
pub use error::{Error, Result};
pub use log::{
    read_log, replay, verify, verify_files, LogRecord, MeasurementLog, PcrValues, VerifiedPcrs,
};
pub use measure::{
    measure_volume, measurement_records, KeyRange, Measurement, Verification, VolumeIdentity,
    DEFAULT_LOG,
};
pub use proto::{HashAlg, PcrBank, PcrReading, ResponseCode};
