//! The provisioning plan: plain data describing what `tosskey provision` will build — devices,
//! layout, tables (key elided) and steps. `--dry-run` prints it and stops; execution walks
//! the same data, so what is printed is what is done.

use std::path::PathBuf;

use serde::Serialize;

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
pub use tosskey_crypto::escrow::{Assembly, Layout, MdLevel};

/// The md personality's name as the kernel and mdadm spell it.
pub fn md_level_name(level: MdLevel) -> &'static str {
    match level {
        MdLevel::Raid0 => "raid0",
        MdLevel::Raid1 => "raid1",
        MdLevel::Linear => "linear",
    }
}

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
    pub cipher: String,
    pub key_bits: u32,
    pub sector_size: u32,
    /// Always false: IVs count 512-byte sectors, as `cryptsetup open --type plain` does.
    pub iv_large_sectors: bool,
    /// In 512-byte sectors.
    pub iv_offset: u64,
    /// Where data starts on the device under the target, in 512-byte sectors.
    pub data_offset: u64,
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

/// One dm mapping the plan creates, bottom first.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct PlannedMapping {
    pub name: String,
    pub uuid: String,
    /// The table line with the key shown as `<key>` (dry run) or the keyring reference.
    pub table: String,
}

/// The whole plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Plan {
    pub name: String,
    pub members: Vec<PlannedMember>,
    pub assembly: Assembly,
    pub layout: Layout,
    pub crypt: CryptSettings,
    /// Size of the finished volume (what the filesystem gets).
    pub volume_bytes: u64,
    pub mkfs: Option<Ext4Settings>,
    pub mount: Option<PathBuf>,
    pub escrow: Option<EscrowSettings>,
    /// Human-readable steps, in execution order.
    pub steps: Vec<String>,
}

/// Sectors of 512 bytes.
pub const SECTOR: u64 = 512;

/// Round `bytes` down to whole encryption sectors and express it in 512-byte sectors.
pub fn crypt_length_sectors(bytes: u64, sector_size: u32) -> u64 {
    let sector = u64::from(sector_size);
    bytes / sector * sector / SECTOR
}

/// Expected size in bytes of the assembled device, before it exists (the plan's estimate;
/// execution always uses the size the kernel reports).
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
            level: MdLevel::Raid0,
            chunk_bytes,
        }
        | Assembly::DmStripe { chunk_bytes } => count * (min / chunk_bytes * chunk_bytes),
    }
}

impl Plan {
    /// Render the plan for humans (`--dry-run`).
    pub fn render_text(&self, mappings: &[PlannedMapping]) -> String {
        use std::fmt::Write as _;
        let mut out = String::new();
        let _ = writeln!(out, "tosskey plan for /dev/mapper/{}", self.name);
        let _ = writeln!(out, "members:");
        for m in &self.members {
            let _ = writeln!(
                out,
                "  {} ({}, {} bytes{})",
                m.path.display(),
                m.dev,
                m.size_bytes,
                m.identity
                    .as_deref()
                    .map(|i| format!(", {i}"))
                    .unwrap_or_default()
            );
        }
        let _ = writeln!(out, "tables (key elided):");
        for t in mappings {
            let _ = writeln!(out, "  {}: {}", t.name, t.table);
        }
        let _ = writeln!(out, "steps:");
        for (i, step) in self.steps.iter().enumerate() {
            let _ = writeln!(out, "  {}. {step}", i + 1);
        }
        out
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
