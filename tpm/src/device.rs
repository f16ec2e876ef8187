//! The transport: one command written to `/dev/tpmrm0`, one response read back.
//!
//! The kernel's TPM character devices take a whole command in a single write(2) and hand
//! out the whole response in the next read(2) (drivers/char/tpm/tpm-dev-common.c). The
//! resource-managed node `/dev/tpmrm0` virtualizes handles and sessions, so tosskey never
//! disturbs another TPM user (systemd, tpm2-abrmd) and needs no TSS library.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::thread;
use std::time::Duration;

use crate::error::{Error, Result};
use crate::proto::{self, DecodeError, HashAlg, PcrBank, PcrReading, MAX_RESPONSE, PCR_COUNT};

/// The kernel's resource-managed TPM 2.0 node.
pub const DEFAULT_DEVICE: &str = "/dev/tpmrm0";

/// How often a command answered with `TPM_RC_RETRY`/`YIELDED`/`TESTING` is sent again.
const RETRIES: u32 = 20;
const RETRY_PAUSE: Duration = Duration::from_millis(50);

/// An open TPM 2.0 device.
#[derive(Debug)]
pub struct Tpm {
    file: File,
    path: PathBuf,
}

impl Tpm {
    /// Opens `path` (normally [`DEFAULT_DEVICE`]). A missing node is [`Error::NoDevice`], so a
    /// caller can tell "no TPM" from "TPM broken".
    pub fn open(path: impl AsRef<Path>) -> Result<Tpm> {
        let path = path.as_ref().to_path_buf();
        match OpenOptions::new().read(true).write(true).open(&path) {
            Ok(file) => Ok(Tpm { file, path }),
            Err(source) if source.kind() == io::ErrorKind::NotFound => Err(Error::NoDevice {
                device: path,
                source,
            }),
            Err(source) => Err(Error::Open {
                device: path,
                source,
            }),
        }
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The PCR banks and the PCRs allocated in each (`TPM2_GetCapability(TPM_CAP_PCRS)`).
    pub fn pcr_banks(&mut self) -> Result<Vec<PcrBank>> {
        const COMMAND: &str = "TPM2_GetCapability(TPM_CAP_PCRS)";
        let response = self.transmit(COMMAND, &proto::encode_get_capability_pcrs())?;
        proto::decode_get_capability_pcrs(&response).map_err(|err| self.decode_error(COMMAND, err))
    }

    /// The banks of `pcr` this crate can extend: every allocated bank with a supported hash,
    /// in [`HashAlg::ALL`] order. SHA-256 must be among them.
    pub fn measurable_banks(&mut self, pcr: u32) -> Result<Vec<HashAlg>> {
        check_pcr(pcr)?;
        let banks = self.pcr_banks()?;
        let measurable: Vec<HashAlg> = HashAlg::ALL
            .into_iter()
            .filter(|alg| {
                banks
                    .iter()
                    .any(|bank| bank.alg() == Some(*alg) && bank.has_pcr(pcr))
            })
            .collect();
        if !measurable.contains(&HashAlg::Sha256) {
            let allocated = banks
                .iter()
                .filter(|bank| bank.has_pcr(pcr))
                .map(|bank| {
                    bank.alg()
                        .map_or_else(|| format!("{:#06x}", bank.alg_id), |alg| alg.to_string())
                })
                .collect::<Vec<_>>();
            return Err(Error::BankNotAllocated {
                device: self.path.clone(),
                pcr,
                required: HashAlg::Sha256,
                allocated: if allocated.is_empty() {
                    "none".into()
                } else {
                    allocated.join(", ")
                },
            });
        }
        Ok(measurable)
    }

    /// The value of `pcr` in each of `algs` (`TPM2_PCR_Read`), in the order of `algs`.
    pub fn pcr_read(&mut self, pcr: u32, algs: &[HashAlg]) -> Result<Vec<PcrReading>> {
        const COMMAND: &str = "TPM2_PCR_Read";
        check_pcr(pcr)?;
        let mut readings = Vec::new();
        let mut missing: Vec<HashAlg> = algs.to_vec();
        // A TPM answers at most 8 digests per read and may answer fewer than asked; ask again
        // for what is missing, as long as every round makes progress.
        while !missing.is_empty() {
            let response = self.transmit(COMMAND, &proto::encode_pcr_read(pcr, &missing))?;
            let (_counter, answered) =
                proto::decode_pcr_read(&response).map_err(|err| self.decode_error(COMMAND, err))?;
            let before = missing.len();
            for reading in answered {
                if reading.pcr == pcr && missing.contains(&reading.alg) {
                    missing.retain(|alg| *alg != reading.alg);
                    readings.push(reading);
                }
            }
            if missing.len() == before {
                return Err(self.decode_error(
                    COMMAND,
                    DecodeError::Malformed(format!(
                        "PCR {pcr} of bank(s) {} not returned",
                        missing
                            .iter()
                            .map(|alg| alg.name())
                            .collect::<Vec<_>>()
                            .join(", ")
                    )),
                ));
            }
        }
        readings.sort_by_key(|reading| algs.iter().position(|alg| *alg == reading.alg));
        Ok(readings)
    }

    /// Extends `pcr` with one digest per bank (`TPM2_PCR_Extend`, password session with the
    /// empty auth value of PCRs 0-15 and 16/23).
    pub fn pcr_extend(&mut self, pcr: u32, digests: &[(HashAlg, &[u8])]) -> Result<()> {
        const COMMAND: &str = "TPM2_PCR_Extend";
        check_pcr(pcr)?;
        if let Some((alg, digest)) = digests
            .iter()
            .find(|(alg, digest)| digest.len() != alg.digest_len())
        {
            return Err(Error::DigestLength {
                alg: *alg,
                len: digest.len(),
            });
        }
        let response = self.transmit(COMMAND, &proto::encode_pcr_extend(pcr, digests))?;
        proto::decode_pcr_extend(&response).map_err(|err| self.decode_error(COMMAND, err))
    }

    /// Sends one command and returns its response, resending while the TPM asks for it.
    fn transmit(&mut self, command: &'static str, bytes: &[u8]) -> Result<Vec<u8>> {
        let mut attempt = 0;
        loop {
            let response = self.exchange(command, bytes)?;
            match proto::response_code(&response) {
                Some(code) if code.is_retry() && attempt < RETRIES => {
                    attempt += 1;
                    thread::sleep(RETRY_PAUSE);
                }
                _ => return Ok(response),
            }
        }
    }

    fn exchange(&mut self, command: &'static str, bytes: &[u8]) -> Result<Vec<u8>> {
        let transport = |source| Error::Transport {
            device: self.path.clone(),
            command,
            source,
        };
        let written = self.file.write(bytes).map_err(transport)?;
        if written != bytes.len() {
            return Err(transport(io::Error::new(
                io::ErrorKind::WriteZero,
                format!("the driver took {written} of {} command bytes", bytes.len()),
            )));
        }
        let mut response = vec![0; MAX_RESPONSE];
        let read = self.file.read(&mut response).map_err(transport)?;
        response.truncate(read);
        Ok(response)
    }

    fn decode_error(&self, command: &'static str, err: DecodeError) -> Error {
        match err {
            DecodeError::Tpm(code) => Error::Tpm {
                device: self.path.clone(),
                command,
                code,
            },
            DecodeError::Malformed(reason) => Error::Malformed {
                device: self.path.clone(),
                command,
                reason,
            },
        }
    }
}

pub(crate) fn check_pcr(pcr: u32) -> Result<()> {
    if pcr < PCR_COUNT {
        Ok(())
    } else {
        Err(Error::InvalidPcr { pcr })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_node_is_no_device_in_one_line() {
        let err = Tpm::open("/nonexistent/tpmrm0").unwrap_err();
        assert!(matches!(err, Error::NoDevice { .. }), "{err:?}");
        let message = err.to_string();
        assert!(
            message.starts_with("no TPM at /nonexistent/tpmrm0: "),
            "{message}"
        );
        assert!(!message.contains('\n'));
    }

    // A regular file stands in for a device that answers nothing: the error names the device
    // and the command, and says what is wrong with the answer.
    #[test]
    fn a_device_that_does_not_answer_is_named_with_the_command() {
        let file = tempfile::NamedTempFile::new().unwrap();
        let mut tpm = Tpm::open(file.path()).unwrap();
        let err = tpm.pcr_banks().unwrap_err();
        match &err {
            Error::Malformed {
                device, command, ..
            } => {
                assert_eq!(device, file.path());
                assert_eq!(*command, "TPM2_GetCapability(TPM_CAP_PCRS)");
            }
            other => panic!("{other:?}"),
        }
        assert!(err.to_string().contains("ends early"), "{err}");
        assert!(matches!(
            tpm.pcr_extend(24, &[]),
            Err(Error::InvalidPcr { pcr: 24 })
        ));
        assert!(matches!(
            tpm.pcr_extend(15, &[(HashAlg::Sha256, &[0; 20])]),
            Err(Error::DigestLength {
                alg: HashAlg::Sha256,
                len: 20
            })
        ));
        assert!(matches!(
            tpm.measurable_banks(99),
            Err(Error::InvalidPcr { pcr: 99 })
        ));
    }
}
