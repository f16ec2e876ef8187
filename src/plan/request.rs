//! The request: what a command was asked to build, checked. [`crate::cli`] makes it from the
//! command line; [`derive`](super::derive) turns it and the checked members into a plan.

use std::path::PathBuf;
use std::str::FromStr;

use tosskey_crypto::key::KeySize;
use tosskey_crypto::spec::CipherSpec;
use tosskey_dm::DmName;
use tosskey_tpm::DEFAULT_DEVICE;

use crate::host::discover::DiskMatcher;
use crate::plan::{EscrowSettings, Ext4Settings, KeyLoading, Layout, MdLevel};

/// Where the members come from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MemberSource {
    Explicit(Vec<PathBuf>),
    Discover(DiskMatcher),
}

/// How several members are combined (a single member is never assembled).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AssemblyChoice {
    Md(MdLevel),
    DmStripe,
}

#[derive(Debug, Clone)]
pub struct ProvisionConfig {
    pub source: MemberSource,
    pub name: DmName,
    pub cipher: CipherSpec,
    pub key_size: KeySize,
    /// `None`: 4096 when every member allows it.
    pub sector_size: Option<u32>,
    /// Most bytes under one key; `None`: one key per crypt mapping.
    pub key_scope: Option<u64>,
    pub assembly: AssemblyChoice,
    pub chunk_bytes: u64,
    pub layout: Layout,
    pub allow_discards: bool,
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
    pub key_loading: KeyLoading,
    pub mkfs: Option<Ext4Settings>,
    pub mount: Option<PathBuf>,
    /// Directories whose contents move onto the volume and are bind-mounted from there
    /// (`--bind`, checked: absolute, distinct, none inside another or the mount point).
    pub binds: Vec<PathBuf>,
    pub escrow: Option<EscrowSettings>,
    pub force: bool,
    pub dry_run: bool,
    pub json: bool,
    pub measure_pcr: Option<MeasurePcr>,
    /// Where the run writes the volume's Prometheus metrics (`--metrics-file`).
    pub metrics_file: Option<PathBuf>,
}

/// The PCR `auto` measures into: "system identity", where systemd measures volumes too.
pub const AUTO_PCR: u32 = 15;

/// The `--measure-pcr` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MeasurePcr {
    /// This PCR; no TPM is an error.
    Pcr(u32),
    /// [`AUTO_PCR`] when the TPM device exists, else nothing.
    Auto,
}

impl FromStr for MeasurePcr {
    type Err = String;

    fn from_str(value: &str) -> std::result::Result<Self, String> {
        if value == "auto" {
            return Ok(MeasurePcr::Auto);
        }
        match value.parse::<u32>() {
            Ok(pcr) if pcr <= 23 => Ok(MeasurePcr::Pcr(pcr)),
            _ => Err(format!(
                "{value:?} is not a PCR: give 0 to 23, or auto ({AUTO_PCR} when {DEFAULT_DEVICE} exists)"
            )),
        }
    }
}
