//! What `status` reads back about a volume, shared by the status text, its health and its
//! metrics: the plan's own types ([`Node`], [`PlannedKey`], [`CryptSettings`]) with the
//! kernel's state beside them. Never carries key material.

use std::path::PathBuf;

use serde::Serialize;

use crate::exec::journal::{Readiness, Stage};
use crate::exec::measure::VolumeMeasurement;
use crate::plan::{CryptSettings, KeyScope, Node, PlannedKey, PlannedMember};

/// A volume as the kernel has it now, in the plan's terms. Never carries key material.
#[derive(Debug, Serialize)]
pub struct VolumeStatus {
    pub name: String,
    /// The journal's stage (`None`: a tosskey mapping without a journal).
    pub stage: Option<Stage>,
    /// Member devices as the journal recorded them.
    pub members: Vec<PathBuf>,
    /// The devices under the stack, read back from sysfs: what a node's `member` refers to.
    pub devices: Vec<PlannedMember>,
    /// The md arrays and dm mappings of the volume that exist, bottom first, as plan nodes
    /// (a node's `node` refers to an earlier one here).
    pub mappings: Vec<LiveNode>,
    /// Mappings whose table is none tosskey builds (after `shred`: `error` targets).
    pub other_mappings: Vec<OtherMapping>,
    /// One per crypt segment, as the tables show them.
    pub keys: Vec<PlannedKey>,
    pub key_scope: KeyScope,
    /// What `provision --measure-pcr` extended (empty when not asked).
    pub measurements: Vec<VolumeMeasurement>,
    /// Why `--key-loading auto` put hex keys in the tables (from the journal).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub key_loading_fallback: Option<String>,
    /// Where the run mounted the volume (from the journal).
    pub mount: Option<PathBuf>,
    /// The `--bind` directories the journal records, each checked against mountinfo.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<BindState>,
    /// When and how the run made the volume ready, with the escrow file it wrote.
    pub ready: Option<Readiness>,
    /// Whether it serves its data, and which member failed.
    pub health: Health,
}

/// A `--bind` directory of the volume and whether its bind is in place: the topmost mount
/// at `dir` is the volume's `/bind/DIR`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct BindState {
    pub dir: PathBuf,
    pub source: PathBuf,
    pub in_place: bool,
}

/// A node that exists: the plan's [`Node`], read back, and its state in the kernel.
#[derive(Debug, Serialize)]
pub struct LiveNode {
    #[serde(flatten)]
    pub node: Node,
    /// A crypt mapping's settings as its table shows them.
    #[serde(flatten)]
    pub crypt: Option<CryptSettings>,
    /// `MAJ:MIN`.
    pub dev: String,
    pub mount_points: Vec<String>,
    /// The same mounts with their filesystem and options.
    pub mounts: Vec<LiveMount>,
    pub suspended: bool,
}

/// A mount of a node, from mountinfo.
#[derive(Debug, Serialize)]
pub struct LiveMount {
    pub mount_point: String,
    pub fs_type: String,
    pub options: String,
}

/// A tosskey mapping whose table does not read back as a plan node.
#[derive(Debug, Serialize)]
pub struct OtherMapping {
    pub name: String,
    pub path: PathBuf,
    pub uuid: Option<String>,
    pub dev: String,
    pub size_bytes: u64,
    /// The live table, key elided.
    pub table: String,
    pub mount_points: Vec<String>,
}

/// A volume's health, worst last (so the worst of several is their maximum).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum HealthState {
    Healthy,
    /// Serving, with less redundancy than built: a member of a redundant array failed.
    Degraded,
    /// Not serving all of its data (or not known to): see the findings.
    Failed,
}

impl HealthState {
    pub fn word(self) -> &'static str {
        match self {
            HealthState::Healthy => "healthy",
            HealthState::Degraded => "degraded",
            HealthState::Failed => "failed",
        }
    }
}

/// What `status` found wrong with a volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Health {
    pub state: HealthState,
    /// The members (disks) that failed, with why.
    pub failed_members: Vec<FailedMember>,
    /// One sentence per problem, the failed members' included.
    pub findings: Vec<String>,
}

impl Health {
    pub fn healthy() -> Self {
        Health {
            state: HealthState::Healthy,
            failed_members: Vec::new(),
            findings: Vec::new(),
        }
    }
}

/// A member device that failed.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FailedMember {
    /// The disk (for per-disk volumes, the disk under the crypt mapping md failed).
    pub device: PathBuf,
    /// What says it failed.
    pub reason: String,
}
