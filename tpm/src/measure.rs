//! What tosskey measures for a volume, and the measuring itself.
//!
//! # The measurement
//!
//! Per volume, into one PCR, in every allocated bank this crate supports (SHA-256 required;
//! SHA-1, SHA-384, SHA-512 when allocated), one extend per record:
//!
//! 1. **identity** (`eventType` `tosskey-volume`): the bank's plain hash of the identity
//!    string below. Anyone holding the log can check that this string is what was extended.
//! 2. **one per key** (`eventType` `volume-key`): HMAC(key, identity + ":key=" + index) in the
//!    bank's hash, keyed with the volume key. This is systemd-cryptsetup's construction for
//!    `tpm2-measure-pcr=yes` (HMAC keyed with the volume key over a public string naming the
//!    volume; systemd's string is `cryptsetup:<name>:<LUKS UUID>`): the digest proves which
//!    key was set up without revealing anything about it, and a fresh random key makes every
//!    boot's measurement different.
//!
//! The identity string (version 1) is ASCII, colon-separated `field=value` pairs in this fixed
//! order:
//!
//! ```text
//! tosskey-volume:v1:name=<dm name>:uuid=<dm uuid>:cipher=<dm-crypt cipher>:key-bits=<bits>:
//!   sector-size=<bytes>:keys=<n>:ranges=<start>+<sectors>,...:verification=<passed|skipped>
//! ```
//!
//! (one line, no spaces). `ranges` lists the key-scope segments in key order, in 512-byte
//! sectors of the mapping (dm table units); a single-key volume has one range covering the
//! whole mapping. In `name`, `uuid` and `cipher`, every byte that is not printable ASCII, and
//! `:`, `,`, `=`, `\`, is written `\xNN` (lower-case hex), so the string parses unambiguously.
//! Each record's `content.string` in the log holds the string that was hashed (identity) or
//! HMACed (key records).
//!
//! # The event log
//!
//! Each extend is logged as systemd logs its own (see [`crate::log`]): the log is locked
//! (`flock`), marked incomplete with the sticky bit while the extends run, and unmarked when
//! every record is written, so a crash between an extend and its record is visible.

use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::device::{check_pcr, Tpm};
use crate::digest;
use crate::error::{Error, Result};
use crate::log::{LogRecord, MeasurementLog};
use crate::proto::{HashAlg, PcrReading};

/// `eventType` of the identity record.
pub const EVENT_TYPE_IDENTITY: &str = "tosskey-volume";
/// `eventType` of a key record: systemd's name for its volume-key measurement.
pub const EVENT_TYPE_KEY: &str = "volume-key";
/// Where tosskey appends its measurement log.
pub const DEFAULT_LOG: &str = "/run/tosskey/tpm2-measure.log";

/// A key-scope segment: the sectors of the mapping one key encrypts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyRange {
    /// First sector, in 512-byte units of the mapping.
    pub start: u64,
    /// Length in 512-byte sectors.
    pub sectors: u64,
}

/// What the volume's post-setup verification found. A failed verification rolls the run
/// back, so it is never measured.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Verification {
    Passed,
    Skipped,
}

impl Verification {
    fn as_str(self) -> &'static str {
        match self {
            Verification::Passed => "passed",
            Verification::Skipped => "skipped",
        }
    }
}

/// The public facts measured about a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VolumeIdentity {
    /// The device-mapper name.
    pub name: String,
    /// The device-mapper UUID.
    pub dm_uuid: String,
    /// The dm-crypt cipher specification, e.g. `aes-xts-plain64`.
    pub cipher: String,
    /// Bits per key.
    pub key_bits: u32,
    /// Encryption sector size in bytes.
    pub sector_size: u32,
    /// One range per key, in key order.
    pub key_ranges: Vec<KeyRange>,
    pub verification: Verification,
}

impl VolumeIdentity {
    /// The identity string (format in the module documentation).
    pub fn measured_string(&self) -> Result<String> {
        if self.key_ranges.is_empty() {
            return Err(self.invalid("a volume has at least one key range".into()));
        }
        let ranges: Vec<String> = self
            .key_ranges
            .iter()
            .map(|range| format!("{}+{}", range.start, range.sectors))
            .collect();
        Ok(format!(
            "tosskey-volume:v1:name={}:uuid={}:cipher={}:key-bits={}:sector-size={}:keys={}:ranges={}:verification={}",
            escape(&self.name),
            escape(&self.dm_uuid),
            escape(&self.cipher),
            self.key_bits,
            self.sector_size,
            self.key_ranges.len(),
            ranges.join(","),
            self.verification.as_str()
        ))
    }

    /// The string HMACed with key `index`.
    pub fn key_string(identity: &str, index: usize) -> String {
        format!("{identity}:key={index}")
    }

    fn invalid(&self, reason: String) -> Error {
        Error::InvalidIdentity {
            volume: self.name.clone(),
            reason,
        }
    }
}

/// `\xNN` for everything but printable ASCII other than the separators and the backslash.
fn escape(value: &str) -> String {
    let mut escaped = String::with_capacity(value.len());
    for byte in value.bytes() {
        if byte.is_ascii_graphic() && !matches!(byte, b':' | b',' | b'=' | b'\\') {
            escaped.push(char::from(byte));
        } else {
            escaped.push_str(&format!("\\x{byte:02x}"));
        }
    }
    escaped
}

/// The log records (with their digests) measuring `identity` and its keys into `pcr` in
/// `banks`. Pure: no TPM, no file. `keys[i]` is the key of `identity.key_ranges[i]`; the key
/// bytes are only read, through the locked HMAC pads of [`crate::digest::hmac`].
pub fn measurement_records(
    pcr: u32,
    banks: &[HashAlg],
    identity: &VolumeIdentity,
    keys: &[&[u8]],
) -> Result<Vec<LogRecord>> {
    check_pcr(pcr)?;
    let identity_string = identity.measured_string()?;
    if keys.len() != identity.key_ranges.len() {
        return Err(identity.invalid(format!(
            "{} keys given for {} key ranges",
            keys.len(),
            identity.key_ranges.len()
        )));
    }
    if let Some(index) = keys.iter().position(|key| key.is_empty()) {
        return Err(identity.invalid(format!("key {index} is empty")));
    }
    let mut records = vec![LogRecord::systemd(
        pcr,
        banks
            .iter()
            .map(|alg| (*alg, digest::digest(*alg, identity_string.as_bytes())))
            .collect(),
        identity_string.clone(),
        EVENT_TYPE_IDENTITY,
    )];
    for (index, key) in keys.iter().enumerate() {
        let key_string = VolumeIdentity::key_string(&identity_string, index);
        let digests = banks
            .iter()
            .map(|alg| Ok((*alg, digest::hmac(*alg, key, key_string.as_bytes())?)))
            .collect::<Result<Vec<_>>>()?;
        records.push(LogRecord::systemd(pcr, digests, key_string, EVENT_TYPE_KEY));
    }
    Ok(records)
}

/// What [`measure_volume`] did, for the run's report (`status --json`).
#[derive(Debug, Clone, Serialize)]
pub struct Measurement {
    /// The TPM device.
    pub device: PathBuf,
    pub pcr: u32,
    /// The banks extended.
    pub banks: Vec<HashAlg>,
    /// The log appended to.
    pub log: PathBuf,
    /// The records extended and logged, in order.
    pub records: Vec<LogRecord>,
    /// The PCR's value in each bank right after the last extend.
    #[serde(serialize_with = "serialize_readings")]
    pub values: Vec<PcrReading>,
}

fn serialize_readings<S: serde::Serializer>(
    readings: &[PcrReading],
    serializer: S,
) -> std::result::Result<S::Ok, S::Error> {
    use serde::ser::SerializeMap;
    let mut map = serializer.serialize_map(Some(readings.len()))?;
    for reading in readings {
        map.serialize_entry(reading.alg.name(), &hex::encode(&reading.digest))?;
    }
    map.end()
}

/// Measures a volume: extends `pcr` of every measurable bank of `tpm` with the records of
/// [`measurement_records`] and appends each to the log at `log_path` (created with its parent
/// directory if missing). Call it after verification and before the keys are wiped.
///
/// On error the run must fail: a PCR cannot be un-extended, but the log then stays marked
/// incomplete (sticky bit), and the error names the device and command.
pub fn measure_volume(
    tpm: &mut Tpm,
    pcr: u32,
    identity: &VolumeIdentity,
    keys: &[&[u8]],
    log_path: &Path,
) -> Result<Measurement> {
    let banks = tpm.measurable_banks(pcr)?;
    let records = measurement_records(pcr, &banks, identity, keys)?;
    let mut log = MeasurementLog::open_for_append(log_path)?;
    for record in &records {
        let digests: Vec<(HashAlg, &[u8])> = record
            .digests
            .iter()
            .map(|(alg, digest)| (*alg, digest.as_slice()))
            .collect();
        tpm.pcr_extend(pcr, &digests)?;
        log.append(record)?;
    }
    log.finish()?;
    let values = tpm.pcr_read(pcr, &banks)?;
    Ok(Measurement {
        device: tpm.path().to_path_buf(),
        pcr,
        banks,
        log: log_path.to_path_buf(),
        records,
        values,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn two_key_volume() -> VolumeIdentity {
        VolumeIdentity {
            name: "ephemeral:0".into(),
            dm_uuid: "TOSSKEY-2b6f0cc9-ephemeral".into(),
            cipher: "aes-xts-plain64".into(),
            key_bits: 512,
            sector_size: 4096,
            key_ranges: vec![
                KeyRange {
                    start: 0,
                    sectors: 2048,
                },
                KeyRange {
                    start: 2048,
                    sectors: 4096,
                },
            ],
            verification: Verification::Passed,
        }
    }

    #[test]
    fn identity_string_is_the_documented_format_with_separators_escaped() {
        assert_eq!(
            two_key_volume().measured_string().unwrap(),
            "tosskey-volume:v1:name=ephemeral\\x3a0:uuid=TOSSKEY-2b6f0cc9-ephemeral:cipher=aes-xts-plain64:\
             key-bits=512:sector-size=4096:keys=2:ranges=0+2048,2048+4096:verification=passed"
        );
        assert_eq!(escape("a b\\c=d,é"), "a\\x20b\\x5cc\\x3dd\\x2c\\xc3\\xa9");
    }

    #[test]
    fn records_hash_the_identity_and_hmac_each_key_in_every_bank() {
        let volume = two_key_volume();
        let keys: [&[u8]; 2] = [&[0x11; 64], &[0x22; 64]];
        let records =
            measurement_records(15, &[HashAlg::Sha1, HashAlg::Sha256], &volume, &keys).unwrap();
        assert_eq!(records.len(), 3);
        let identity = volume.measured_string().unwrap();
        assert_eq!(records[0].description.as_deref(), Some(identity.as_str()));
        assert_eq!(records[0].event_type.as_deref(), Some(EVENT_TYPE_IDENTITY));
        assert_eq!(
            records[0].digests,
            vec![
                (
                    HashAlg::Sha1,
                    digest::digest(HashAlg::Sha1, identity.as_bytes())
                ),
                (
                    HashAlg::Sha256,
                    digest::digest(HashAlg::Sha256, identity.as_bytes())
                ),
            ]
        );
        for (index, key) in keys.iter().enumerate() {
            let record = &records[index + 1];
            let message = format!("{identity}:key={index}");
            assert_eq!(record.pcr, 15);
            assert_eq!(record.event_type.as_deref(), Some(EVENT_TYPE_KEY));
            assert_eq!(record.description.as_deref(), Some(message.as_str()));
            assert_eq!(
                record.digests[1],
                (
                    HashAlg::Sha256,
                    digest::hmac(HashAlg::Sha256, key, message.as_bytes()).unwrap()
                )
            );
            assert_eq!(record.digests[0].1.len(), 20);
        }
        // Different keys, different measurements: two boots never extend the same value.
        assert_ne!(records[1].digests, records[2].digests);
    }

    // The key record's SHA-256 digest is systemd's formula with tosskey's string: a verifier
    // that holds the key (a test, an escrow holder) recomputes it with any HMAC tool.
    #[test]
    fn key_record_digest_is_a_known_hmac_sha256() {
        let volume = VolumeIdentity {
            name: "scratch".into(),
            dm_uuid: "TOSSKEY-test".into(),
            cipher: "aes-xts-plain64".into(),
            key_bits: 256,
            sector_size: 512,
            key_ranges: vec![KeyRange {
                start: 0,
                sectors: 8,
            }],
            verification: Verification::Skipped,
        };
        let key: Vec<u8> = (0u8..32).collect();
        let records = measurement_records(16, &[HashAlg::Sha256], &volume, &[&key]).unwrap();
        // python3 -c 'import hmac,hashlib; print(hmac.new(bytes(range(32)), b"tosskey-volume:v1:name=scratch:uuid=TOSSKEY-test:cipher=aes-xts-plain64:key-bits=256:sector-size=512:keys=1:ranges=0+8:verification=skipped:key=0", hashlib.sha256).hexdigest())'
        assert_eq!(
            hex::encode(&records[1].digests[0].1),
            "cc4f4d632b48838b14066994a329556e3eb8b258bd16ce3faaa0c8f64d7868bd"
        );
    }

    #[test]
    fn mismatched_keys_bad_pcrs_and_empty_keys_are_refused() {
        let volume = two_key_volume();
        let one: [&[u8]; 1] = [&[1; 32]];
        assert!(matches!(
            measurement_records(15, &[HashAlg::Sha256], &volume, &one),
            Err(Error::InvalidIdentity { .. })
        ));
        let empty: [&[u8]; 2] = [&[1; 32], &[]];
        assert!(matches!(
            measurement_records(15, &[HashAlg::Sha256], &volume, &empty),
            Err(Error::InvalidIdentity { .. })
        ));
        let two: [&[u8]; 2] = [&[1; 32], &[2; 32]];
        assert!(matches!(
            measurement_records(24, &[HashAlg::Sha256], &volume, &two),
            Err(Error::InvalidPcr { pcr: 24 })
        ));
    }
}
