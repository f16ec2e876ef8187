//! `--measure-pcr`: extend a TPM PCR with a measurement of every crypt node of the volume
//! (through `tosskey-tpm`, whose README says what is measured and what it proves), and
//! `tosskey measure verify`.
//!
//! With an explicit PCR the TPM is opened before anything is built: no TPM refuses the run
//! with nothing touched. `auto` measures into PCR 15 when `/dev/tpmrm0` exists and otherwise
//! measures nothing and says so. Measuring happens after verification and before the keys are
//! wiped; a failure fails the run, which is rolled back (a PCR cannot be un-extended: the
//! event log then stays marked incomplete).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::Context as _;
use serde::{Deserialize, Serialize};
use tosskey_crypto::key::KeyArena;
use tosskey_tpm::{KeyRange, Tpm, Verification, VolumeIdentity, DEFAULT_DEVICE, DEFAULT_LOG};

use crate::error::{Error, Refusal, Result};
use crate::plan::request::{MeasurePcr, AUTO_PCR};
use crate::plan::{NodeKind, Plan};

/// The TPM a run measures into, opened before anything is built.
#[derive(Debug)]
pub struct Measurer {
    tpm: Tpm,
    pcr: u32,
    log: PathBuf,
}

/// What a run's measurement did (report and `status --json`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "outcome", rename_all = "kebab-case")]
pub enum MeasurementOutcome {
    /// No `--measure-pcr`.
    NotRequested,
    /// `--measure-pcr auto` on a machine without a TPM device.
    NoTpm { device: PathBuf },
    /// One measurement per crypt node, in build order.
    Measured { volumes: Vec<VolumeMeasurement> },
}

/// One crypt node's measurement, as kept in the journal (no key material: digests and the
/// public strings that were hashed or HMACed).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct VolumeMeasurement {
    /// The crypt node (dm name).
    pub mapping: String,
    pub device: PathBuf,
    pub pcr: u32,
    pub log: PathBuf,
    /// The extends, in order.
    pub events: Vec<MeasuredEvent>,
    /// The PCR in each bank right after this node's last extend (hash name → hex).
    pub pcr_after: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct MeasuredEvent {
    pub event_type: String,
    /// The identity string hashed, or the string HMACed with a key.
    pub string: String,
    /// hash name → hex digest extended.
    pub digests: BTreeMap<String, String>,
}

/// Open the TPM a run will measure into, before anything is built. `Ok(None)`: nothing to
/// measure (not asked, or `auto` without a TPM: said on stderr).
pub fn open(request: Option<MeasurePcr>) -> Result<Option<Measurer>> {
    let pcr = match request {
        None => return Ok(None),
        Some(MeasurePcr::Auto) if !Path::new(DEFAULT_DEVICE).exists() => {
            eprintln!(
                "tosskey: --measure-pcr auto: no TPM at {DEFAULT_DEVICE}, nothing will be measured"
            );
            return Ok(None);
        }
        Some(MeasurePcr::Auto) => AUTO_PCR,
        Some(MeasurePcr::Pcr(pcr)) => pcr,
    };
    let tpm = Tpm::open(DEFAULT_DEVICE).map_err(|e| {
        Error::Refused(Refusal::NoTpm {
            pcr,
            reason: e.to_string(),
        })
    })?;
    Ok(Some(Measurer {
        tpm,
        pcr,
        log: PathBuf::from(DEFAULT_LOG),
    }))
}

/// The outcome to report when [`open`] gave no TPM.
pub fn not_measured(request: Option<MeasurePcr>) -> MeasurementOutcome {
    match request {
        None => MeasurementOutcome::NotRequested,
        Some(_) => MeasurementOutcome::NoTpm {
            device: PathBuf::from(DEFAULT_DEVICE),
        },
    }
}

impl Measurer {
    /// The PCR this run extends.
    pub fn pcr(&self) -> u32 {
        self.pcr
    }

    /// Measure every crypt node of `plan`, built and verified, with all of its keys (`keys`
    /// in `plan.keys` order, each with the range it covers).
    pub fn measure(&mut self, plan: &Plan, keys: &KeyArena) -> Result<Vec<VolumeMeasurement>> {
        let mut measured = Vec::new();
        for node in &plan.nodes {
            let NodeKind::Crypt { segments, .. } = &node.kind else {
                continue;
            };
            let identity = VolumeIdentity {
                name: node.name.clone(),
                dm_uuid: node.uuid.clone().unwrap_or_default(),
                cipher: plan.crypt.format.cipher.to_string(),
                key_bits: plan.crypt.format.key_bits,
                sector_size: plan.crypt.format.sector_size,
                key_ranges: segments
                    .iter()
                    .map(|segment| {
                        let covers = plan.keys[segment.key].covers;
                        KeyRange {
                            start: covers.start,
                            sectors: covers.length,
                        }
                    })
                    .collect(),
                // Executor::build fails the run on any mismatch: a built node was verified.
                verification: Verification::Passed,
            };
            let node_keys = segments
                .iter()
                .map(|segment| {
                    keys.key(segment.key).ok_or_else(|| {
                        anyhow::anyhow!("{} has no key {} for its segment", node.name, segment.key)
                    })
                })
                .collect::<anyhow::Result<Vec<&[u8]>>>()?;
            let measurement = tosskey_tpm::measure_volume(
                &mut self.tpm,
                self.pcr,
                &identity,
                &node_keys,
                &self.log,
            )
            .with_context(|| format!("measuring {} into PCR {}", node.name, self.pcr))?;
            measured.push(VolumeMeasurement {
                mapping: node.name.clone(),
                device: measurement.device,
                pcr: measurement.pcr,
                log: measurement.log,
                events: measurement
                    .records
                    .iter()
                    .map(|record| MeasuredEvent {
                        event_type: record.event_type.clone().unwrap_or_default(),
                        string: record.description.clone().unwrap_or_default(),
                        digests: record
                            .digests
                            .iter()
                            .map(|(alg, digest)| (alg.name().to_owned(), hex(digest)))
                            .collect(),
                    })
                    .collect(),
                pcr_after: measurement
                    .values
                    .iter()
                    .map(|reading| (reading.alg.name().to_owned(), hex(&reading.digest)))
                    .collect(),
            });
        }
        Ok(measured)
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// `tosskey measure verify`: replay `log` and compare it with `pcr_values` (tpm2_pcrread's
/// text format). One line per PCR and bank compared.
pub fn verify(log: &Path, pcr_values: &Path) -> Result<String> {
    let verified = tosskey_tpm::verify_files(log, pcr_values).with_context(|| {
        format!(
            "verifying {} against {}",
            log.display(),
            pcr_values.display()
        )
    })?;
    let mut text = String::new();
    for (alg, pcr) in &verified.matched {
        text.push_str(&format!(
            "PCR {pcr} {}: matches the replay of {}\n",
            alg.name(),
            log.display()
        ));
    }
    for (alg, pcr) in &verified.unchecked {
        text.push_str(&format!(
            "PCR {pcr} {}: no value given, not checked\n",
            alg.name()
        ));
    }
    Ok(text)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn measure_pcr_takes_auto_or_a_pcr_index() {
        assert_eq!("auto".parse(), Ok(MeasurePcr::Auto));
        assert_eq!("15".parse(), Ok(MeasurePcr::Pcr(15)));
        assert_eq!("0".parse(), Ok(MeasurePcr::Pcr(0)));
        let error = "24".parse::<MeasurePcr>().unwrap_err();
        assert!(error.contains("0 to 23"), "{error}");
        assert!("fifteen".parse::<MeasurePcr>().is_err());
    }

    #[test]
    fn not_measured_says_why() {
        assert_eq!(not_measured(None), MeasurementOutcome::NotRequested);
        assert_eq!(
            not_measured(Some(MeasurePcr::Auto)),
            MeasurementOutcome::NoTpm {
                device: PathBuf::from(DEFAULT_DEVICE)
            }
        );
    }
}
