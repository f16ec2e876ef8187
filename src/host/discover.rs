//! Finding a machine's instance-store (ephemeral, host-local) disks from sysfs alone.
//!
//! No udev, nvme-cli or cloud metadata service is needed: the identities below are the
//! NVMe controller model strings (`/sys/class/block/<ns>/device/model`, the controller's
//! `model` attribute) and SCSI vendor/model (`device/vendor`, `device/model`) the clouds
//! expose, plus the udev `/dev/disk/by-id` names when udev made them.
//!
//! - **AWS**: instance-store NVMe controllers report the model
//!   `Amazon EC2 NVMe Instance Storage`; EBS volumes report `Amazon Elastic Block Store`
//!   and are never picked (the EBS root is usually, but not always, `nvme0n1`). udev names
//!   them `/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_<serial>`, which the EKS AMI's
//!   `setup-local-disks` globs as `*NVMe_Instance_Storage_*`
//!   (awslabs/amazon-eks-ami, templates/shared/runtime/bin/setup-local-disks).
//! - **GCP, NVMe local SSD**: controller model `nvme_card`, or `nvme_card<N>` when each
//!   local SSD has its own controller; NVMe persistent disks (boot included) report
//!   `nvme_card-pd` and are never picked (GoogleCloudPlatform/cloud-image-tests,
//!   test_suites/lssd/lssd_test.go; GoogleCloudPlatform/guest-configs,
//!   src/lib/udev/rules.d/65-gce-disk-naming.rules, which links them as
//!   `/dev/disk/by-id/google-local-nvme-ssd-<N>` and sets ID_SERIAL `Google_EphemeralDisk_…`).
//! - **GCP, SCSI local SSD**: vendor `Google`, model `EphemeralDisk` (persistent disks are
//!   `PersistentDisk`); udev links `/dev/disk/by-id/google-local-ssd-<N>`
//!   (PerfKitBenchmarker's GCE `DiskDriveIsLocal` matches the model
//!   `Google EphemeralDisk`, vendor and model joined, and `nvme_card`).
//! - **Azure**: local NVMe disks report `Microsoft NVMe Direct Disk` or
//!   `Microsoft NVMe Direct Disk v2`; remote (managed) disks on NVMe report
//!   `MSFT NVMe Accelerator v1.0` and are never picked (Azure/azure-vm-utils,
//!   udev/80-azure-disk.rules).
//!   The SCSI *temporary resource disk* (vendor `Msft`, model `Virtual Disk`, linked as
//!   `/dev/disk/azure/resource`) is deliberately **not** discovered: the Azure Linux agent
//!   or cloud-init formats and mounts it (ext4, or NTFS as it arrives) at boot, its identity
//!   is the same as every managed data disk's on SCSI VMs, and telling them apart needs the
//!   VMBus `device_id` GUID rather than a model string. Name it explicitly to use it.
//!
//! Not discovered: instance store on Xen-era AWS types (`xvdb`…, no identity in sysfs) and
//! any SCSI instance store without a cloud-specific model — name those devices explicitly.
//!
//! Discovery never picks a disk that is mounted (itself or a partition), active swap,
//! held by another device, carrying partitions, read-only, or holding `/` or `/boot`
//! (through any dm/md stack): those are reported as skipped, with the reason.

use std::fmt;
use std::path::{Path, PathBuf};

use serde::Serialize;

use crate::host::safety::{usage_refusal, SafetyError};
use crate::host::sysfs::{BlockDevice, DevId, SystemRoot, SystemState};

const AWS_INSTANCE_STORE_MODEL: &str = "Amazon EC2 NVMe Instance Storage";
const GCP_LOCAL_NVME_MODEL: &str = "nvme_card";
const GCP_SCSI_VENDOR: &str = "Google";
const GCP_SCSI_LOCAL_MODEL: &str = "EphemeralDisk";
const AZURE_LOCAL_NVME_MODELS: [&str; 2] = [
    "Microsoft NVMe Direct Disk",
    "Microsoft NVMe Direct Disk v2",
];

/// What discovery matches for `cloud`, in words: `--help` and the "none found" message say
/// it, so a user can predict discovery before the first boot on that cloud.
pub fn identities(cloud: Cloud) -> String {
    let quoted = |models: &[&str]| {
        models
            .iter()
            .map(|m| format!("{m:?}"))
            .collect::<Vec<_>>()
            .join(" or ")
    };
    match cloud {
        Cloud::Aws => format!(
            "NVMe model {AWS_INSTANCE_STORE_MODEL:?} (EBS volumes never)"
        ),
        Cloud::Gcp => format!(
            "NVMe model {GCP_LOCAL_NVME_MODEL:?} or \"{GCP_LOCAL_NVME_MODEL}N\", SCSI vendor {GCP_SCSI_VENDOR:?} with model {GCP_SCSI_LOCAL_MODEL:?}, or a /dev/disk/by-id/google-local-ssd-* or google-local-nvme-ssd-* link (persistent disks never)"
        ),
        Cloud::Azure => format!(
            "NVMe model {} (managed disks and the temporary resource disk never)",
            quoted(&AZURE_LOCAL_NVME_MODELS)
        ),
        Cloud::Any => [Cloud::Aws, Cloud::Gcp, Cloud::Azure]
            .map(|c| format!("{c}: {}", identities(c)))
            .join(", "),
    }
}

/// `provision --help` on `--discover`.
pub fn discover_help() -> String {
    format!(
        "Find the instance-store disks of this cloud instead of naming devices, from sysfs alone (no udev or metadata service). {}; any: all of these. A matching disk that is mounted, held, partitioned, read-only or holds / or /boot is skipped, with the reason.",
        [Cloud::Aws, Cloud::Gcp, Cloud::Azure]
            .map(|c| format!("{c}: {}", identities(c)))
            .join("; ")
    )
}

/// Which cloud's instance-store identities to look for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Cloud {
    Aws,
    Gcp,
    Azure,
    /// Any of the above.
    Any,
}

impl fmt::Display for Cloud {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Cloud::Aws => "aws",
            Cloud::Gcp => "gcp",
            Cloud::Azure => "azure",
            Cloud::Any => "any cloud",
        })
    }
}

/// What makes a disk an instance-store disk.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DiskMatcher {
    /// The cloud identities documented in this module.
    Cloud(Cloud),
    /// Disks whose serial starts with this prefix. For tests in the VM, whose virtio disks
    /// carry the serials `tosskey-disk-N`; not a cloud identity.
    SerialPrefix(String),
}

impl fmt::Display for DiskMatcher {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DiskMatcher::Cloud(cloud) => cloud.fmt(f),
            DiskMatcher::SerialPrefix(prefix) => write!(f, "serial prefix {prefix:?}"),
        }
    }
}

/// An instance-store disk that is free to use.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct DiscoveredDisk {
    /// `/dev/<name>` under the [`SystemRoot`]'s dev directory.
    pub path: PathBuf,
    pub name: String,
    pub dev: DevId,
    pub size_bytes: u64,
    /// Which identity matched, e.g. `AWS instance store`.
    pub identity: &'static str,
    pub model: Option<String>,
    pub serial: Option<String>,
}

/// An instance-store disk discovery did not pick, and why.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct SkippedDisk {
    pub name: String,
    pub identity: &'static str,
    /// One line, e.g. `/dev/nvme1n1 is mounted at /data: …`.
    pub reason: String,
}

/// The result of a discovery: disks to use (natural name order) and disks passed over.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Discovery {
    pub disks: Vec<DiscoveredDisk>,
    pub skipped: Vec<SkippedDisk>,
}

/// Find `cloud`'s free instance-store disks; an error when there is none.
pub fn discover(root: &SystemRoot, cloud: Cloud) -> Result<Discovery, SafetyError> {
    discover_matching(root, &DiskMatcher::Cloud(cloud))
}

/// Find free disks matching `matcher`; an error naming what was seen when none is free.
pub fn discover_matching(
    root: &SystemRoot,
    matcher: &DiskMatcher,
) -> Result<Discovery, SafetyError> {
    let state = SystemState::read(root).map_err(|source| SafetyError::Inventory {
        sys: root.sys.clone(),
        proc: root.proc.clone(),
        source,
    })?;
    let discovery = discover_in(&state, matcher);
    if discovery.disks.is_empty() {
        return Err(SafetyError::NoDisksFound {
            cloud: matcher.to_string(),
            detail: explain_empty(&state, &discovery, matcher),
        });
    }
    Ok(discovery)
}

/// Discovery over an already-read snapshot: never fails, may find nothing.
pub fn discover_in(state: &SystemState, matcher: &DiskMatcher) -> Discovery {
    let mut disks = Vec::new();
    let mut skipped = Vec::new();
    // `state.devices` is in natural name order already.
    for device in state
        .devices
        .iter()
        .filter(|d| !d.is_partition() && !d.hidden && !d.is_virtual)
    {
        let Some(identity) = identify(device, matcher) else {
            continue;
        };
        let path = state.root.dev.join(&device.name);
        let shown = Path::new("/dev").join(&device.name);
        let refusal = usage_refusal(state, device, &shown).or_else(|| {
            (!device.partitions.is_empty()).then(|| SafetyError::HasPartitions {
                path: shown.clone(),
                partitions: device.partitions.join(", "),
            })
        });
        match refusal {
            Some(reason) => skipped.push(SkippedDisk {
                name: device.name.clone(),
                identity,
                reason: reason.to_string(),
            }),
            None => disks.push(DiscoveredDisk {
                path,
                name: device.name.clone(),
                dev: device.dev,
                size_bytes: device.size_bytes,
                identity,
                model: device.model.clone(),
                serial: device.serial.clone(),
            }),
        }
    }
    Discovery { disks, skipped }
}

/// The identity `device` matches under `matcher`, if any.
fn identify(device: &BlockDevice, matcher: &DiskMatcher) -> Option<&'static str> {
    match matcher {
        DiskMatcher::SerialPrefix(prefix) => device
            .serial
            .as_deref()
            .is_some_and(|serial| serial.starts_with(prefix.as_str()))
            .then_some("serial prefix"),
        DiskMatcher::Cloud(cloud) => {
            let clouds: &[Cloud] = match cloud {
                Cloud::Any => &[Cloud::Aws, Cloud::Gcp, Cloud::Azure],
                one => std::slice::from_ref(one),
            };
            clouds.iter().find_map(|&c| cloud_identity(device, c))
        }
    }
}

fn cloud_identity(device: &BlockDevice, cloud: Cloud) -> Option<&'static str> {
    let model = device.model.as_deref().unwrap_or("");
    let has_link = |prefix: &str| device.by_id.iter().any(|link| link.starts_with(prefix));
    match cloud {
        Cloud::Aws => (model == AWS_INSTANCE_STORE_MODEL).then_some("AWS instance store"),
        Cloud::Gcp => {
            let nvme_local = model
                .strip_prefix(GCP_LOCAL_NVME_MODEL)
                .is_some_and(|rest| rest.bytes().all(|c| c.is_ascii_digit()));
            let scsi_local =
                device.vendor.as_deref() == Some(GCP_SCSI_VENDOR) && model == GCP_SCSI_LOCAL_MODEL;
            if nvme_local || has_link("google-local-nvme-ssd-") {
                Some("GCP local NVMe SSD")
            } else if scsi_local || has_link("google-local-ssd-") {
                Some("GCP local SCSI SSD")
            } else {
                None
            }
        }
        Cloud::Azure => AZURE_LOCAL_NVME_MODELS
            .contains(&model)
            .then_some("Azure local NVMe disk"),
        Cloud::Any => None,
    }
}

/// One line on what discovery saw: the skipped disks with reasons, or the disk models.
fn explain_empty(state: &SystemState, discovery: &Discovery, matcher: &DiskMatcher) -> String {
    if !discovery.skipped.is_empty() {
        let reasons: Vec<String> = discovery
            .skipped
            .iter()
            .map(|s| format!("skipped {}", s.reason))
            .collect();
        return reasons.join("; ");
    }
    let seen: Vec<String> = state
        .devices
        .iter()
        .filter(|d| !d.is_partition() && !d.hidden && !d.is_virtual)
        .map(|d| match (&d.model, &d.serial) {
            (Some(model), _) => format!("{} ({model})", d.name),
            (None, Some(serial)) => format!("{} (serial {serial})", d.name),
            (None, None) => d.name.clone(),
        })
        .collect();
    let (wanted, matches) = match matcher {
        DiskMatcher::Cloud(cloud) => (
            "an instance-store identity",
            format!("; {cloud} matches {}", identities(*cloud)),
        ),
        DiskMatcher::SerialPrefix(_) => ("a matching serial", String::new()),
    };
    if seen.is_empty() {
        format!("no block devices at all{matches}")
    } else {
        format!("none of {} has {wanted}{matches}", seen.join(", "))
    }
}
