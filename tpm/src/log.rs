//! The measurement event log, in systemd's format, and its replay.
//!
//! systemd keeps a log of its userspace PCR extends in `/run/log/systemd/tpm2-measure.log`
//! (systemd-pcrextend(8)): JSON-SEQ (RFC 7464: each record is an ASCII RS, 0x1E, then one
//! JSON object, then a newline), objects shaped like TCG CEL-JSON records without `recnum`:
//!
//! ```text
//! \x1e{"pcr":15,"digests":[{"hashAlg":"sha256","digest":"<hex>"},...],
//!      "content_type":"systemd","content":{"string":"<what>","eventType":"volume-key"}}\n
//! ```
//!
//! A writer takes `flock(LOCK_EX)` on the log, sets the file's sticky bit before extending
//! and clears it after the record is written, so a reader (systemd-pcrlock) knows a log with
//! the sticky bit set may lack the record of an extend that happened. tosskey writes the same
//! records the same way, so systemd-pcrlock and any CEL-JSON replayer read tosskey's log, and
//! this module reads systemd's (records for NvPCRs, `nv_index`, are skipped in a PCR replay).

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use nix::fcntl::{Flock, FlockArg};
use serde::ser::{SerializeStruct, Serializer};
use serde::Serialize;
use serde_json::Value;

use crate::digest;
use crate::error::{Error, Result};
use crate::proto::{HashAlg, PcrReading, PCR_COUNT};

/// RFC 7464 record separator.
const RS: u8 = 0x1E;
/// The sticky bit marks a log whose writer has extended but not yet logged.
const INCOMPLETE_MARK: u32 = 0o1000;

/// One record: a PCR extend and what it measured.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogRecord {
    pub pcr: u32,
    /// One digest per bank extended, in the order extended.
    pub digests: Vec<(HashAlg, Vec<u8>)>,
    /// `content_type`: "systemd" for systemd's and tosskey's records.
    pub content_type: Option<String>,
    /// `content.string`: the measured (or HMACed) string.
    pub description: Option<String>,
    /// `content.eventType`.
    pub event_type: Option<String>,
}

impl LogRecord {
    /// A record with systemd's content type and content object.
    pub fn systemd(
        pcr: u32,
        digests: Vec<(HashAlg, Vec<u8>)>,
        description: String,
        event_type: &str,
    ) -> LogRecord {
        LogRecord {
            pcr,
            digests,
            content_type: Some("systemd".into()),
            description: Some(description),
            event_type: Some(event_type.into()),
        }
    }

    pub fn digest(&self, alg: HashAlg) -> Option<&[u8]> {
        self.digests
            .iter()
            .find(|(bank, _)| *bank == alg)
            .map(|(_, digest)| digest.as_slice())
    }

    /// The JSON-SEQ bytes of this record: RS, the JSON object, newline.
    pub fn to_json_seq(&self) -> Vec<u8> {
        let mut bytes = vec![RS];
        bytes.extend_from_slice(
            serde_json::to_string(self)
                .expect("a record always serializes")
                .as_bytes(),
        );
        bytes.push(b'\n');
        bytes
    }

    /// Reads one record object; `Ok(None)` for records that extend no PCR (NvPCR records).
    fn from_json(value: &Value) -> std::result::Result<Option<LogRecord>, String> {
        let object = value.as_object().ok_or("not a JSON object")?;
        let Some(pcr) = object.get("pcr") else {
            return if object.contains_key("nv_index") {
                Ok(None)
            } else {
                Err("neither \"pcr\" nor \"nv_index\"".into())
            };
        };
        let pcr = pcr
            .as_u64()
            .and_then(|pcr| u32::try_from(pcr).ok())
            .filter(|pcr| *pcr < PCR_COUNT)
            .ok_or("\"pcr\" is not a PCR number from 0 to 23")?;
        let mut digests = Vec::new();
        for entry in object
            .get("digests")
            .and_then(Value::as_array)
            .ok_or("\"digests\" is not an array")?
        {
            let name = entry
                .get("hashAlg")
                .and_then(Value::as_str)
                .ok_or("a digest lacks \"hashAlg\"")?;
            // Banks this crate cannot hash (sm3_256) are skipped, as systemd-pcrlock does.
            let Some(alg) = HashAlg::from_name(name) else {
                continue;
            };
            let text = entry
                .get("digest")
                .and_then(Value::as_str)
                .ok_or("a digest lacks \"digest\"")?;
            let digest =
                hex::decode(text).map_err(|err| format!("{name} digest is not hex: {err}"))?;
            if digest.len() != alg.digest_len() {
                return Err(format!(
                    "{name} digest has {} bytes, not {}",
                    digest.len(),
                    alg.digest_len()
                ));
            }
            digests.push((alg, digest));
        }
        let content = object.get("content");
        let content_string = |key: &str| {
            content
                .and_then(|content| content.get(key))
                .and_then(Value::as_str)
                .map(String::from)
        };
        Ok(Some(LogRecord {
            pcr,
            digests,
            content_type: object
                .get("content_type")
                .and_then(Value::as_str)
                .map(String::from),
            description: content_string("string"),
            event_type: content_string("eventType"),
        }))
    }
}

/// The exact field names and order systemd writes.
impl Serialize for LogRecord {
    fn serialize<S: Serializer>(&self, serializer: S) -> std::result::Result<S::Ok, S::Error> {
        #[derive(Serialize)]
        struct DigestJson<'a> {
            #[serde(rename = "hashAlg")]
            hash_alg: &'a str,
            digest: String,
        }
        #[derive(Serialize)]
        struct ContentJson<'a> {
            #[serde(skip_serializing_if = "Option::is_none")]
            string: Option<&'a str>,
            #[serde(rename = "eventType", skip_serializing_if = "Option::is_none")]
            event_type: Option<&'a str>,
        }
        let digests: Vec<DigestJson<'_>> = self
            .digests
            .iter()
            .map(|(alg, digest)| DigestJson {
                hash_alg: alg.name(),
                digest: hex::encode(digest),
            })
            .collect();
        let mut record = serializer.serialize_struct("LogRecord", 4)?;
        record.serialize_field("pcr", &self.pcr)?;
        record.serialize_field("digests", &digests)?;
        record.serialize_field("content_type", &self.content_type)?;
        record.serialize_field(
            "content",
            &ContentJson {
                string: self.description.as_deref(),
                event_type: self.event_type.as_deref(),
            },
        )?;
        record.end()
    }
}

/// Parses a JSON-SEQ log. Text before the first RS is ignored, as RFC 7464 parsers and
/// systemd-pcrlock do; so are records without a PCR (NvPCR records).
pub fn parse_log(bytes: &[u8], path: &Path) -> Result<Vec<LogRecord>> {
    let mut records = Vec::new();
    for (index, chunk) in bytes.split(|byte| *byte == RS).enumerate().skip(1) {
        let record_error = |reason: String| Error::LogRecord {
            path: path.to_path_buf(),
            record: index,
            reason,
        };
        let value: Value = serde_json::from_slice(chunk)
            .map_err(|err| record_error(format!("not JSON: {err}")))?;
        if let Some(record) = LogRecord::from_json(&value).map_err(record_error)? {
            records.push(record);
        }
    }
    Ok(records)
}

/// Reads and parses the log at `path`, under a shared `flock` like systemd-pcrlock.
pub fn read_log(path: &Path) -> Result<Vec<LogRecord>> {
    let log_error = |action, source| Error::Log {
        path: path.to_path_buf(),
        action,
        source,
    };
    let file = File::open(path).map_err(|source| log_error("open", source))?;
    let locked = Flock::lock(file, FlockArg::LockShared)
        .map_err(|(_, errno)| log_error("flock", errno.into()))?;
    let mut bytes = Vec::new();
    (&*locked)
        .read_to_end(&mut bytes)
        .map_err(|source| log_error("read", source))?;
    parse_log(&bytes, path)
}

/// True when the log's writer extended a PCR and has not (yet) logged it: the sticky bit.
pub fn log_is_incomplete(path: &Path) -> Result<bool> {
    let metadata = fs::metadata(path).map_err(|source| Error::Log {
        path: path.to_path_buf(),
        action: "stat",
        source,
    })?;
    Ok(metadata.permissions().mode() & INCOMPLETE_MARK != 0)
}

/// The log opened for a series of extends: locked, marked incomplete until [`finish`].
///
/// [`finish`]: MeasurementLog::finish
#[derive(Debug)]
pub struct MeasurementLog {
    file: Flock<File>,
    path: PathBuf,
}

impl MeasurementLog {
    /// Creates (0600, with missing parent directories) or opens the log for appending, takes
    /// the exclusive lock and sets the incomplete mark. A symlink at `path` is refused.
    pub fn open_for_append(path: &Path) -> Result<MeasurementLog> {
        let log_error = |action, source| Error::Log {
            path: path.to_path_buf(),
            action,
            source,
        };
        if let Some(parent) = path
            .parent()
            .filter(|parent| !parent.as_os_str().is_empty())
        {
            fs::create_dir_all(parent)
                .map_err(|source| log_error("create its directory", source))?;
        }
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .custom_flags(nix::libc::O_NOFOLLOW)
            .open(path)
            .map_err(|source| log_error("open", source))?;
        let file = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, errno)| log_error("flock", errno.into()))?;
        let log = MeasurementLog {
            file,
            path: path.to_path_buf(),
        };
        log.set_incomplete(true)?;
        Ok(log)
    }

    /// Appends one record (one write(2) of the whole record, O_APPEND).
    pub fn append(&mut self, record: &LogRecord) -> Result<()> {
        (&*self.file)
            .write_all(&record.to_json_seq())
            .map_err(|source| Error::Log {
                path: self.path.clone(),
                action: "append",
                source,
            })
    }

    /// Clears the incomplete mark and releases the lock.
    pub fn finish(self) -> Result<()> {
        self.set_incomplete(false)
    }

    fn set_incomplete(&self, incomplete: bool) -> Result<()> {
        let log_error = |source| Error::Log {
            path: self.path.clone(),
            action: "mark",
            source,
        };
        let mut permissions = self.file.metadata().map_err(log_error)?.permissions();
        let mode = permissions.mode() & 0o7777;
        permissions.set_mode(if incomplete {
            mode | INCOMPLETE_MARK
        } else {
            mode & !INCOMPLETE_MARK
        });
        self.file.set_permissions(permissions).map_err(log_error)
    }
}

/// PCR values by bank and index.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PcrValues(BTreeMap<(HashAlg, u32), Vec<u8>>);

impl PcrValues {
    pub fn get(&self, alg: HashAlg, pcr: u32) -> Option<&[u8]> {
        self.0.get(&(alg, pcr)).map(Vec::as_slice)
    }

    pub fn insert(&mut self, alg: HashAlg, pcr: u32, value: Vec<u8>) {
        self.0.insert((alg, pcr), value);
    }

    pub fn iter(&self) -> impl Iterator<Item = (HashAlg, u32, &[u8])> {
        self.0
            .iter()
            .map(|((alg, pcr), value)| (*alg, *pcr, value.as_slice()))
    }

    pub fn from_readings(readings: &[PcrReading]) -> PcrValues {
        let mut values = PcrValues::default();
        for reading in readings {
            values.insert(reading.alg, reading.pcr, reading.digest.clone());
        }
        values
    }

    /// Parses `tpm2_pcrread`'s output (tpm2-tools 4 and 5): a bank name line (`  sha256:`),
    /// then one `    15: 0x<HEX>` line per PCR. Banks this crate cannot hash are skipped.
    pub fn parse_tpm2_pcrread(text: &str, path: &Path) -> Result<PcrValues> {
        let mut values = PcrValues::default();
        // None before the first bank line; Some(None) inside an unsupported bank.
        let mut bank: Option<Option<HashAlg>> = None;
        for (index, line) in text.lines().enumerate() {
            let line_error = |reason: String| Error::PcrValues {
                path: path.to_path_buf(),
                line: index + 1,
                reason,
            };
            let line = line.trim();
            if line.is_empty() {
                continue;
            }
            let (key, value) = line
                .split_once(':')
                .ok_or_else(|| line_error("no ':'".into()))?;
            let (key, value) = (key.trim(), value.trim());
            if value.is_empty() {
                bank = Some(HashAlg::from_name(key));
                continue;
            }
            let alg = match bank {
                None => return Err(line_error("a PCR value before any bank name".into())),
                Some(None) => continue,
                Some(Some(alg)) => alg,
            };
            let pcr: u32 = key
                .parse()
                .ok()
                .filter(|pcr| *pcr < PCR_COUNT)
                .ok_or_else(|| line_error(format!("{key:?} is not a PCR number")))?;
            let hex_value = value
                .strip_prefix("0x")
                .or_else(|| value.strip_prefix("0X"))
                .unwrap_or(value);
            let digest = hex::decode(hex_value)
                .map_err(|err| line_error(format!("PCR {pcr} value is not hex: {err}")))?;
            if digest.len() != alg.digest_len() {
                return Err(line_error(format!(
                    "{alg} PCR {pcr} value has {} bytes",
                    digest.len()
                )));
            }
            values.insert(alg, pcr, digest);
        }
        Ok(values)
    }

    /// Reads a `tpm2_pcrread` output file.
    pub fn read_tpm2_pcrread(path: &Path) -> Result<PcrValues> {
        let text = fs::read_to_string(path).map_err(|source| Error::Log {
            path: path.to_path_buf(),
            action: "read",
            source,
        })?;
        PcrValues::parse_tpm2_pcrread(&text, path)
    }

    /// The values in `tpm2_pcrread`'s output format (upper-case hex, as it prints).
    pub fn to_tpm2_pcrread(&self) -> String {
        let mut text = String::new();
        let mut current = None;
        for (alg, pcr, value) in self.iter() {
            if current != Some(alg) {
                text.push_str(&format!("  {alg}:\n"));
                current = Some(alg);
            }
            text.push_str(&format!("    {pcr:<2}: 0x{}\n", hex::encode_upper(value)));
        }
        text
    }
}

/// The value a PCR holds after reset (TCG PC Client Platform Firmware Profile §3.3.2): zeros,
/// except the dynamic-launch PCRs 17-22, which reset to all ones. (PCR 0's locality byte is
/// the firmware log's business; tosskey never measures into PCR 0.)
fn reset_value(alg: HashAlg, pcr: u32) -> Vec<u8> {
    let fill = if (17..=22).contains(&pcr) { 0xFF } else { 0 };
    vec![fill; alg.digest_len()]
}

/// Recomputes, from reset, the value of every PCR and bank the records extend.
pub fn replay(records: &[LogRecord]) -> PcrValues {
    let mut values = PcrValues::default();
    for record in records {
        for (alg, digest) in &record.digests {
            let old = values
                .0
                .remove(&(*alg, record.pcr))
                .unwrap_or_else(|| reset_value(*alg, record.pcr));
            values.insert(*alg, record.pcr, digest::extend(*alg, &old, digest));
        }
    }
    values
}

/// What [`verify`] compared.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct VerifiedPcrs {
    /// (bank, PCR) pairs whose given value equals the replay.
    pub matched: Vec<(HashAlg, u32)>,
    /// (bank, PCR) pairs the log extends but no value was given for.
    pub unchecked: Vec<(HashAlg, u32)>,
}

/// Replays `records` and compares with `actual` (from a quote, or read from the TPM). Every
/// given value of a (bank, PCR) the log extends must match, and at least one must be given.
pub fn verify(records: &[LogRecord], actual: &PcrValues) -> Result<VerifiedPcrs> {
    let expected = replay(records);
    let mut verified = VerifiedPcrs {
        matched: Vec::new(),
        unchecked: Vec::new(),
    };
    for (alg, pcr, expected_value) in expected.iter() {
        match actual.get(alg, pcr) {
            None => verified.unchecked.push((alg, pcr)),
            Some(actual_value) if actual_value == expected_value => {
                verified.matched.push((alg, pcr))
            }
            Some(actual_value) => {
                return Err(Error::Mismatch {
                    alg,
                    pcr,
                    expected: hex::encode(expected_value),
                    actual: hex::encode(actual_value),
                })
            }
        }
    }
    if verified.matched.is_empty() {
        return Err(Error::NothingVerified);
    }
    Ok(verified)
}

/// `tosskey measure verify`: replays the log at `log` against a `tpm2_pcrread` output file.
pub fn verify_files(log: &Path, pcr_values: &Path) -> Result<VerifiedPcrs> {
    verify(&read_log(log)?, &PcrValues::read_tpm2_pcrread(pcr_values)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(pcr: u32, seed: u8) -> LogRecord {
        LogRecord::systemd(
            pcr,
            vec![
                (HashAlg::Sha1, vec![seed; 20]),
                (HashAlg::Sha256, vec![seed; 32]),
            ],
            format!("event {seed}"),
            "volume-key",
        )
    }

    #[test]
    fn records_serialize_exactly_as_systemd_writes_them() {
        let record = LogRecord::systemd(
            15,
            vec![(HashAlg::Sha256, vec![0xab; 32])],
            "cryptsetup:x".into(),
            "volume-key",
        );
        let expected = format!(
            "\x1e{{\"pcr\":15,\"digests\":[{{\"hashAlg\":\"sha256\",\"digest\":\"{}\"}}],\
             \"content_type\":\"systemd\",\"content\":{{\"string\":\"cryptsetup:x\",\"eventType\":\"volume-key\"}}}}\n",
            "ab".repeat(32)
        );
        assert_eq!(String::from_utf8(record.to_json_seq()).unwrap(), expected);
    }

    #[test]
    fn parsing_round_trips_and_accepts_systemds_other_records() {
        let mut bytes = Vec::new();
        bytes.extend_from_slice(&record(15, 1).to_json_seq());
        // An NvPCR record, an sm3_256 digest next to a sha256 one, pretty-printed JSON.
        bytes.extend_from_slice(
            b"\x1e{\"nv_index\":30474752,\"digests\":[],\"content_type\":\"systemd\"}\n",
        );
        bytes.extend_from_slice(
            format!(
                "\x1e{{\n \"pcr\": 11,\n \"digests\": [{{\"hashAlg\":\"sm3_256\",\"digest\":\"{0}\"}},\
                 {{\"hashAlg\":\"sha256\",\"digest\":\"{0}\"}}],\n \"content_type\":\"systemd\",\
                 \"content\":{{\"string\":\"enter-initrd\",\"eventType\":\"phase\"}}}}\n",
                "CD".repeat(32)
            )
            .as_bytes(),
        );
        let records = parse_log(&bytes, Path::new("test.log")).unwrap();
        assert_eq!(records.len(), 2);
        assert_eq!(records[0], record(15, 1));
        assert_eq!(records[1].pcr, 11);
        assert_eq!(records[1].digests, vec![(HashAlg::Sha256, vec![0xcd; 32])]);
        assert_eq!(records[1].description.as_deref(), Some("enter-initrd"));
    }

    #[test]
    fn bad_records_are_named_by_number() {
        let bad = b"\x1e{\"pcr\":15,\"digests\":[]}\n\x1e{\"pcr\":99,\"digests\":[]}\n";
        let err = parse_log(bad, Path::new("/run/x.log")).unwrap_err();
        assert!(matches!(err, Error::LogRecord { record: 2, .. }), "{err}");
        let err = parse_log(b"\x1enot json\n", Path::new("/run/x.log")).unwrap_err();
        assert!(matches!(err, Error::LogRecord { record: 1, .. }), "{err}");
        let short = format!(
            "\x1e{{\"pcr\":1,\"digests\":[{{\"hashAlg\":\"sha256\",\"digest\":\"{}\"}}]}}",
            "00".repeat(31)
        );
        assert!(parse_log(short.as_bytes(), Path::new("x")).is_err());
    }

    #[test]
    fn replay_chains_extends_per_pcr_and_bank_from_reset() {
        let records = [record(15, 1), record(16, 2), record(15, 3), record(17, 4)];
        let values = replay(&records);
        let sha256 = |old: &[u8], seed: u8| digest::extend(HashAlg::Sha256, old, &[seed; 32]);
        assert_eq!(
            values.get(HashAlg::Sha256, 15).unwrap(),
            sha256(&sha256(&[0; 32], 1), 3)
        );
        assert_eq!(
            values.get(HashAlg::Sha256, 16).unwrap(),
            sha256(&[0; 32], 2)
        );
        // PCR 17 resets to all ones.
        assert_eq!(
            values.get(HashAlg::Sha256, 17).unwrap(),
            sha256(&[0xff; 32], 4)
        );
        assert_eq!(values.get(HashAlg::Sha1, 15).unwrap().len(), 20);
        assert_eq!(values.get(HashAlg::Sha384, 15), None);
    }

    #[test]
    fn verify_matches_reports_unchecked_and_refuses_mismatches_and_nothing() {
        let records = [record(15, 1), record(15, 2)];
        let replayed = replay(&records);
        let mut quoted = PcrValues::default();
        quoted.insert(
            HashAlg::Sha256,
            15,
            replayed.get(HashAlg::Sha256, 15).unwrap().to_vec(),
        );
        quoted.insert(HashAlg::Sha256, 7, vec![9; 32]); // a PCR the log does not touch
        let verified = verify(&records, &quoted).unwrap();
        assert_eq!(verified.matched, vec![(HashAlg::Sha256, 15)]);
        assert_eq!(verified.unchecked, vec![(HashAlg::Sha1, 15)]);

        // The log without its last record no longer replays to the quoted value.
        let err = verify(&records[..1], &quoted).unwrap_err();
        assert!(
            matches!(
                err,
                Error::Mismatch {
                    alg: HashAlg::Sha256,
                    pcr: 15,
                    ..
                }
            ),
            "{err}"
        );

        let mut unrelated = PcrValues::default();
        unrelated.insert(HashAlg::Sha256, 7, vec![9; 32]);
        assert!(matches!(
            verify(&records, &unrelated),
            Err(Error::NothingVerified)
        ));
    }

    // tpm2_pcrread (tpm2-tools 5.4) prints this for `tpm2_pcrread sha1:15+sha256:15`.
    #[test]
    fn tpm2_pcrread_output_parses_and_round_trips() {
        let text = format!(
            "  sha1:\n    15: 0x{}\n  sha256:\n    15: 0x{}\n    16: 0x{}\n  sm3_256:\n    15: 0x{}\n",
            "AB".repeat(20),
            "CD".repeat(32),
            "00".repeat(32),
            "EF".repeat(32)
        );
        let values = PcrValues::parse_tpm2_pcrread(&text, Path::new("pcrs")).unwrap();
        assert_eq!(values.get(HashAlg::Sha1, 15).unwrap(), [0xab; 20]);
        assert_eq!(values.get(HashAlg::Sha256, 15).unwrap(), [0xcd; 32]);
        assert_eq!(values.iter().count(), 3);
        assert_eq!(
            PcrValues::parse_tpm2_pcrread(&values.to_tpm2_pcrread(), Path::new("x")).unwrap(),
            values
        );

        let err = PcrValues::parse_tpm2_pcrread("    15: 0x00\n", Path::new("pcrs")).unwrap_err();
        assert!(matches!(err, Error::PcrValues { line: 1, .. }), "{err}");
        let err = PcrValues::parse_tpm2_pcrread("  sha256:\n    15: 0x0011\n", Path::new("pcrs"))
            .unwrap_err();
        assert!(matches!(err, Error::PcrValues { line: 2, .. }), "{err}");
    }

    #[test]
    fn the_log_is_marked_incomplete_until_finished_and_appends() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("run/tosskey/tpm2-measure.log");
        let mut log = MeasurementLog::open_for_append(&path).unwrap();
        assert!(log_is_incomplete(&path).unwrap());
        log.append(&record(15, 1)).unwrap();
        log.finish().unwrap();
        assert!(!log_is_incomplete(&path).unwrap());
        assert_eq!(
            fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
            0o600
        );

        let mut log = MeasurementLog::open_for_append(&path).unwrap();
        log.append(&record(15, 2)).unwrap();
        drop(log); // a writer that died mid-way leaves the mark
        assert!(log_is_incomplete(&path).unwrap());
        assert_eq!(read_log(&path).unwrap(), vec![record(15, 1), record(15, 2)]);
    }

    #[test]
    fn a_symlinked_log_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let target = dir.path().join("elsewhere");
        fs::write(&target, b"").unwrap();
        let link = dir.path().join("tpm2-measure.log");
        std::os::unix::fs::symlink(&target, &link).unwrap();
        let err = MeasurementLog::open_for_append(&link).unwrap_err();
        assert!(matches!(err, Error::Log { action: "open", .. }), "{err}");
        assert_eq!(fs::read(&target).unwrap(), b"");
    }
}
