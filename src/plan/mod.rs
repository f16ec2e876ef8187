//! The plan: plain data describing everything a volume consists of — members, every md/dm
//! node bottom-up with its name, UUID, size and table (key elided), the keys and what each
//! covers, the kernel facilities it needs, filesystem and mount.
//!
//! [`derive`](mod@derive) is the only place that turns a checked config (provision) or an
//! escrow file (recover, escrow decrypt) into a plan: every naming and sizing rule lives
//! there.
//! [`crate::exec`] builds a plan's nodes in order; [`render`] prints it (`--dry-run`, the
//! stock-tool commands of `escrow decrypt`). So what is printed is what is built.

pub mod derive;
pub mod render;
pub mod request;
pub mod shell;

use std::path::PathBuf;
use tosskey_sysutil::SECTOR_SIZE;

use serde::Serialize;
use tosskey_dm::{
    CryptOptions, CryptTable, CryptTarget, DevId, DmName, KeyRef, LinearTarget, Sectors,
    StripeMember, StripedTarget,
};

/// A member device that passed the safety checks.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMember {
    pub path: PathBuf,
    /// `MAJ:MIN`.
    pub dev: String,
    pub major: u32,
    pub minor: u32,
    pub size_bytes: u64,
    pub logical_block_size: u32,
    /// Stable identity (serial, WWN or by-id link) recorded in the escrow file.
    pub identity: Option<String>,
}

// The assembly and layout vocabulary is the escrow file's: a plan is what an escrow file
// records, so both use one definition.
pub use tosskey_crypto::escrow::{Assembly, EscrowCrypt, Layout, MdLevel};

/// The md personality's name as the kernel and mdadm spell it.
pub fn md_level_name(level: MdLevel) -> &'static str {
    match level {
        MdLevel::Raid0 => "raid0",
        MdLevel::Raid1 => "raid1",
        MdLevel::Raid10 => "raid10",
        MdLevel::Linear => "linear",
    }
}

/// How a crypt node's key reaches dm-crypt. `Auto` tries the keyring and falls back to hex.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum KeyLoading {
    Auto,
    Keyring,
    Hex,
}

/// dm-crypt's read and write workqueues are bypassed unless asked for: `tosskey bench
/// --device` measured both bypasses faster (see the README), and recovery reopens volumes
/// with the same table options.
pub const BYPASS_WORKQUEUES: bool = true;

/// Everything that goes into a crypt table line except the device and the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct CryptSettings {
    /// What decides the ciphertext (cipher, key size, sector size, IVs, data offset): exactly
    /// what an escrow file records. IVs count 512-byte sectors, as `cryptsetup open --type
    /// plain` does.
    #[serde(flatten)]
    pub format: EscrowCrypt,
    pub allow_discards: bool,
    pub no_read_workqueue: bool,
    pub no_write_workqueue: bool,
    pub key_loading: KeyLoading,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Ext4Settings {
    pub inode_ratio: u64,
    pub journal: bool,
    pub label: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscrowSettings {
    pub public_key: PathBuf,
    pub file: PathBuf,
}

/// A device a node is built on: a member, or a node built before it (by index).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum DeviceRef {
    Member(usize),
    Node(usize),
}

/// A range of a crypt node, in 512-byte sectors from its start.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct SectorRange {
    pub start: u64,
    pub length: u64,
}

/// One key of the volume: generated (provision) or taken from the escrow file (recover), in
/// escrow order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedKey {
    /// The crypt node (dm name) the key is loaded into; the escrow file records keys by it.
    pub mapping: String,
    pub bits: u32,
    /// What of that node this key encrypts.
    pub covers: SectorRange,
}

/// One segment of a crypt node's table: a key over a range of the device below.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct CryptSegment {
    /// Index into [`Plan::keys`].
    pub key: usize,
    pub range: SectorRange,
}

/// How much data each key encrypts (IEEE 1619's key scope).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct KeyScope {
    /// The most bytes one key may encrypt (`--key-scope`); `None`: one key per crypt node
    /// (`--key-scope none`, or an escrow file that records no limit).
    pub limit_bytes: Option<u64>,
    /// How many keys the volume has.
    pub keys: usize,
    /// The most bytes one key encrypts.
    pub largest_key_bytes: u64,
}

/// How a node is made.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum NodeKind {
    /// A non-persistent md array over `members`, in slot order.
    Md {
        level: MdLevel,
        chunk_bytes: u64,
        members: Vec<DeviceRef>,
    },
    /// A dm `striped` mapping.
    Striped {
        chunk_bytes: u64,
        devices: Vec<DeviceRef>,
    },
    /// A dm `linear` mapping over the whole of `device` (gives an md array its
    /// `/dev/mapper/<name>` volume node).
    Linear { device: DeviceRef },
    /// A dm `crypt` mapping over `device`.
    Crypt {
        device: DeviceRef,
        segments: Vec<CryptSegment>,
    },
}

impl NodeKind {
    /// The devices a node of this kind is built on.
    pub fn devices(&self) -> &[DeviceRef] {
        match self {
            NodeKind::Md { members, .. } => members,
            NodeKind::Striped { devices, .. } => devices,
            NodeKind::Linear { device } | NodeKind::Crypt { device, .. } => {
                std::slice::from_ref(device)
            }
        }
    }
}

/// One kernel object of the volume.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Node {
    /// The dm name, or the md array's kernel name (`md_tk_<name>`).
    pub name: String,
    pub path: PathBuf,
    /// The dm UUID (md arrays have none: they are non-persistent).
    pub uuid: Option<String>,
    pub size_bytes: u64,
    #[serde(flatten)]
    pub kind: NodeKind,
    /// The dm table, key elided, devices as `MAJ:MIN` for members and paths for nodes not
    /// built yet (see [`render::table`]). `None` for md arrays.
    pub table: Option<String>,
}

/// Something the running kernel must provide for the plan to work.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(tag = "kind", content = "name", rename_all = "kebab-case")]
pub enum Facility {
    /// A device-mapper target type (`crypt`, `striped`, `linear`).
    DmTarget(&'static str),
    /// An md personality (`raid0`, `raid1`, `linear`).
    MdPersonality(&'static str),
    /// A kernel skcipher (`xts(twofish)`).
    Cipher(&'static str),
    /// `logon` keys in the kernel keyring (dm-crypt's keyring key loading).
    LogonKeys,
    /// A filesystem type the run mounts (`ext4`).
    Filesystem(&'static str),
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub name: String,
    pub members: Vec<PlannedMember>,
    pub assembly: Assembly,
    pub layout: Layout,
    pub crypt: CryptSettings,
    pub keys: Vec<PlannedKey>,
    pub key_scope: KeyScope,
    /// Bottom first: each node is built on members and nodes before it. The last one is the
    /// volume.
    pub nodes: Vec<Node>,
    /// Size of the finished volume (what the filesystem gets).
    pub volume_bytes: u64,
    pub facilities: Vec<Facility>,
    pub mkfs: Option<Ext4Settings>,
    pub mount: Option<PathBuf>,
    /// The `--bind` directories, in the order they are bound (after the mount).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<PlannedBind>,
    pub escrow: Option<EscrowSettings>,
    /// The TPM PCR the keys are measured into (`--measure-pcr`, resolved against the TPM
    /// the run opened); `None`: no measurement.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub measure_pcr: Option<u32>,
}

/// A `--bind` directory: its contents are copied to `source` on the mounted volume, then
/// `source` is bind-mounted over `dir`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedBind {
    pub dir: PathBuf,
    /// `MOUNT/bind/DIR` ([`crate::names::bind_source`]).
    pub source: PathBuf,
}

/// A dm target of a node, ready to render or load once its devices are known.
#[derive(Debug)]
pub enum DmTarget {
    /// One crypt target per key segment, offsets and IVs continuing.
    Crypt(CryptTable),
    Striped(StripedTarget),
    Linear(LinearTarget),
}

impl Plan {
    /// The volume node: `/dev/mapper/<name>`.
    pub fn volume(&self) -> &Node {
        self.nodes.last().expect("a plan has at least one node")
    }

    /// The crypt nodes, in key order.
    pub fn crypt_nodes(&self) -> impl Iterator<Item = &Node> {
        self.nodes
            .iter()
            .filter(|n| matches!(n.kind, NodeKind::Crypt { .. }))
    }

    /// Size in bytes of what `device` refers to.
    pub fn device_bytes(&self, device: DeviceRef) -> u64 {
        match device {
            DeviceRef::Member(i) => self.members[i].size_bytes,
            DeviceRef::Node(i) => self.nodes[i].size_bytes,
        }
    }

    /// The path of what `device` refers to.
    pub fn device_path(&self, device: DeviceRef) -> &std::path::Path {
        match device {
            DeviceRef::Member(i) => &self.members[i].path,
            DeviceRef::Node(i) => &self.nodes[i].path,
        }
    }

    /// The dm target of node `index` (`None` for md arrays), with `dev` giving each
    /// device's number.
    pub fn dm_target(
        &self,
        index: usize,
        dev: impl Fn(DeviceRef) -> DevId,
    ) -> Result<Option<DmTarget>, tosskey_dm::Error> {
        let node = &self.nodes[index];
        Ok(Some(match &node.kind {
            NodeKind::Md { .. } => return Ok(None),
            NodeKind::Linear { device } => DmTarget::Linear(LinearTarget {
                device: dev(*device),
                offset: Sectors(0),
                length: Sectors(node.size_bytes / SECTOR_SIZE),
            }),
            NodeKind::Striped {
                chunk_bytes,
                devices,
            } => DmTarget::Striped(StripedTarget::new(
                Sectors(chunk_bytes / SECTOR_SIZE),
                devices
                    .iter()
                    .map(|d| StripeMember {
                        device: dev(*d),
                        offset: Sectors(0),
                        size: Sectors(self.device_bytes(*d) / SECTOR_SIZE),
                    })
                    .collect(),
            )?),
            NodeKind::Crypt { device, segments } => {
                let crypt = &self.crypt;
                let whole = CryptTarget::new(
                    &crypt.format.cipher.to_string(),
                    dev(*device),
                    Sectors(node.size_bytes / SECTOR_SIZE),
                )?
                .with_offset(Sectors(crypt.format.data_offset))
                .with_iv_offset(Sectors(crypt.format.iv_offset))
                .with_options(crypt.options());
                let lengths: Vec<Sectors> =
                    segments.iter().map(|s| Sectors(s.range.length)).collect();
                DmTarget::Crypt(CryptTable::from_lengths(&whole, &lengths)?)
            }
        }))
    }

    /// How the key of segment `index` of `count` of crypt node `name` appears in its table:
    /// the keyring reference (keyring and auto loading: what the kernel shows) or nothing
    /// (hex, elided).
    pub fn key_ref(
        &self,
        name: &str,
        key_bits: u32,
        index: usize,
        count: usize,
    ) -> Result<Option<KeyRef>, tosskey_dm::Error> {
        Ok(match self.crypt.key_loading {
            KeyLoading::Hex => None,
            KeyLoading::Auto | KeyLoading::Keyring => Some(KeyRef::Keyring {
                bytes: usize::try_from(key_bits / 8).expect("key bytes fit usize"),
                description: tosskey_dm::segment_keyring_description(
                    &DmName::new(name)?,
                    index,
                    count,
                ),
            }),
        })
    }

    /// The device number of `device`, given those of the nodes built so far.
    pub fn dev_id(&self, device: DeviceRef, built: &[DevId]) -> DevId {
        match device {
            DeviceRef::Member(i) => DevId::new(self.members[i].major, self.members[i].minor),
            DeviceRef::Node(i) => built[i],
        }
    }
}

impl CryptSettings {
    /// The dm-crypt optional parameters.
    pub fn options(&self) -> CryptOptions {
        CryptOptions {
            allow_discards: self.allow_discards,
            no_read_workqueue: self.no_read_workqueue,
            no_write_workqueue: self.no_write_workqueue,
            iv_large_sectors: self.format.iv_large_sectors,
            sector_size: self.format.sector_size,
            ..CryptOptions::default()
        }
    }
}

/// Round `bytes` down to whole encryption sectors and express it in 512-byte sectors.
pub fn crypt_length_sectors(bytes: u64, sector_size: u32) -> u64 {
    let sector = u64::from(sector_size);
    bytes / sector * sector / SECTOR_SIZE
}

/// Size in bytes of the assembled device, before it exists: what md and dm-stripe make of
/// `member_bytes` (the executor stops if the kernel's md array comes out otherwise).
pub fn assembled_bytes(assembly: Assembly, member_bytes: &[u64]) -> u64 {
    let min = member_bytes.iter().copied().min().unwrap_or(0);
    let count = u64::try_from(member_bytes.len()).expect("member count fits u64");
    match assembly {
        Assembly::Single => min,
        Assembly::Md {
            level: MdLevel::Raid1,
            ..
        } => min,
        Assembly::Md {
            level: MdLevel::Linear,
            ..
        } => member_bytes.iter().sum(),
        Assembly::Md {
            level: MdLevel::Raid10,
            chunk_bytes,
        } => tosskey_raid::raid10_array_bytes(chunk_bytes, member_bytes),
        Assembly::Md {
            level: MdLevel::Raid0,
            chunk_bytes,
        }
        | Assembly::DmStripe { chunk_bytes } => count * (min / chunk_bytes * chunk_bytes),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn crypt_length_rounds_down_to_whole_encryption_sectors() {
        assert_eq!(crypt_length_sectors(256 << 20, 4096), (256 << 20) / 512);
        assert_eq!(
            crypt_length_sectors((256 << 20) + 4095, 4096),
            (256 << 20) / 512
        );
        assert_eq!(crypt_length_sectors(4096 + 512, 512), 9);
        assert_eq!(crypt_length_sectors(4096 + 512, 4096), 8);
    }

    #[test]
    fn assembled_sizes_follow_the_raid_level() {
        let chunk = 512 << 10;
        let sizes = [(100 << 20) + 4096, 200 << 20];
        assert_eq!(
            assembled_bytes(Assembly::Single, &sizes[..1]),
            (100 << 20) + 4096
        );
        let raid0 = Assembly::Md {
            level: MdLevel::Raid0,
            chunk_bytes: chunk,
        };
        assert_eq!(assembled_bytes(raid0, &sizes), 2 * (100 << 20));
        let raid1 = Assembly::Md {
            level: MdLevel::Raid1,
            chunk_bytes: chunk,
        };
        assert_eq!(assembled_bytes(raid1, &sizes), (100 << 20) + 4096);
        let linear = Assembly::Md {
            level: MdLevel::Linear,
            chunk_bytes: chunk,
        };
        assert_eq!(assembled_bytes(linear, &sizes), (300 << 20) + 4096);
        assert_eq!(
            assembled_bytes(Assembly::DmStripe { chunk_bytes: chunk }, &sizes),
            2 * (100 << 20)
        );
    }
}
