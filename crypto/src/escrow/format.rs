//! The escrow file's format: its JSON types, the OAEP label that binds the metadata to each
//! key, parsing (shape, then every field through `validate`) and serialization.

use std::path::PathBuf;
use std::time::SystemTime;

use serde::{Deserialize, Serialize};

use super::validate::{field_error, truncate_for_message};
use crate::error::{Error, Result};
use crate::key::{KeyArena, VolumeKey};
use crate::spec::CipherSpec;

/// The `format` field of every escrow file.
pub const FORMAT_NAME: &str = "tosskey-escrow";
/// The newest format version: one key per key-scope segment, each with its range
/// ([`EscrowFile::seal_segments`]). This build reads it and [`FORMAT_VERSION_ONE_KEY`].
pub const FORMAT_VERSION: u32 = 2;
/// The first format: one key per crypt mapping, covering all of it ([`EscrowFile::seal`],
/// [`EscrowFile::seal_keys`]).
pub const FORMAT_VERSION_ONE_KEY: u32 = 1;
/// The `recipient.algorithm` field.
pub const ALGORITHM: &str = "RSA-OAEP-SHA-256";
/// No valid escrow file comes near this (1024 keys sealed to 8192-bit RSA take about
/// 1.6 MiB); anything larger is refused before parsing.
pub const MAX_FILE_BYTES: usize = 4 << 20;
/// Most keys one file holds: 336 TB under 1 TiB key scopes is 306 keys (per-disk: 24 disks
/// of 14 TB, 13 segments each, 312).
pub const MAX_KEYS: usize = 1024;

/// What the escrow file records about the volume. The binary fills it; `seal` and `parse`
/// validate it the same way.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowMetadata {
    /// The volume's name (the top-level dm / md device tosskey created).
    pub name: String,
    /// The host that created the volume.
    pub hostname: String,
    /// RFC 3339, UTC, whole seconds: `2026-11-27T03:00:00Z` (see [`rfc3339_utc`]).
    pub created_at: String,
    pub crypt: EscrowCrypt,
    pub assembly: Assembly,
    pub layout: Layout,
    /// The member devices in array order (order matters for raid0, linear and stripes).
    pub members: Vec<EscrowMember>,
    /// The key scope the volume was cut with (`--key-scope`, bytes): no segment is longer.
    /// Absent for `--key-scope none` and in files written before it was recorded (version 1
    /// labels stay byte-identical).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_scope_bytes: Option<u64>,
}

/// The dm-crypt table parameters other than the device and the key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowCrypt {
    pub cipher: CipherSpec,
    pub key_bits: u32,
    /// Encryption sector size in bytes: 512, 1024, 2048 or 4096.
    pub sector_size: u32,
    /// IVs count `sector_size` units instead of 512-byte sectors.
    pub iv_large_sectors: bool,
    /// In 512-byte sectors (the dm table's `<iv_offset>`, cryptsetup's `--skip`).
    pub iv_offset: u64,
    /// Where data starts on the device under the crypt target, in 512-byte sectors (the dm
    /// table's `<offset>`, cryptsetup's `--offset`).
    pub data_offset: u64,
    /// The volume passes discards down (`allow_discards`, cryptsetup's `--allow-discards`):
    /// a reopened volume must too. Absent from the files of volumes without it, which read
    /// as before.
    #[serde(default, skip_serializing_if = "is_false")]
    pub allow_discards: bool,
}

fn is_false(value: &bool) -> bool {
    !*value
}

/// One member device.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct EscrowMember {
    /// Stable identity to find the device again after a reboot renames it: serial, WWN or a
    /// `/dev/disk/by-id/` path.
    pub identity: String,
    pub size_bytes: u64,
    /// The device path when the volume was created (a hint; names change across boots).
    pub path_at_creation: PathBuf,
}

/// How the members become one block device (same shape as the binary's plan).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Assembly {
    /// One device, no RAID.
    Single,
    /// A non-persistent md array.
    Md { level: MdLevel, chunk_bytes: u64 },
    /// A device-mapper `striped` target.
    DmStripe { chunk_bytes: u64 },
    /// None: each member is a volume of its own (`--raid none`, nodeadm's `Mount`
    /// strategy), with the per-disk layout's one crypt mapping per member. Files written
    /// before it existed never name it, so they read as before.
    Separate,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MdLevel {
    Raid0,
    Raid1,
    /// md's near layout with 2 copies (mdadm's `n2`), over `chunk_bytes` chunks.
    Raid10,
    Linear,
}

/// Where the crypt mapping(s) sit relative to the array.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Layout {
    /// One crypt mapping (one key) over the assembled device.
    Shared,
    /// One crypt mapping per member, each with its own key, `keys[i]` for `members[i]`.
    PerDisk,
}

/// Who can open the file.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Recipient {
    /// Always [`ALGORITHM`].
    pub algorithm: String,
    /// RSA modulus length in bits.
    pub rsa_bits: u32,
    /// Lower-case hex SHA-256 of the public key's DER SubjectPublicKeyInfo.
    pub public_key_sha256: String,
}

/// One sealed volume key.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SealedKey {
    /// The dm-crypt mapping this key opens.
    pub dm_name: String,
    /// The part of the mapping this key encrypts (version 2; absent in version 1, where a key
    /// covers its whole mapping).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub segment: Option<KeySegment>,
    /// RSA-OAEP-SHA-256 ciphertext, standard base64 with padding.
    pub ciphertext: String,
}

/// A key-scope segment: sectors `start_sector..start_sector + sectors` of its mapping, in
/// 512-byte sectors. Its crypt target's `offset` is `data_offset + start_sector` and its
/// `iv_offset` is `crypt.iv_offset + start_sector`, so IVs continue across segments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeySegment {
    pub start_sector: u64,
    pub sectors: u64,
}

/// A key opened from an escrow file, with the mapping it belongs to.
#[derive(Debug)]
pub struct OpenedKey {
    pub dm_name: String,
    pub key: VolumeKey,
}

/// Every key of an escrow file, opened into one locked arena ([`EscrowFile::open_segments`]).
#[derive(Debug)]
pub struct OpenedSegments {
    /// `keys.key(i)` opens `segments[i]`.
    pub keys: KeyArena,
    pub segments: Vec<OpenedSegment>,
}

/// Where an opened key goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OpenedSegment {
    pub dm_name: String,
    /// `None` for a version 1 file: the key covers the whole mapping.
    pub segment: Option<KeySegment>,
}

/// A parsed, validated escrow file. Only [`EscrowFile::parse`] and the `seal` functions make
/// one (it is deliberately not `Deserialize`, so no path skips validation).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct EscrowFile {
    pub(super) format: String,
    pub(super) version: u32,
    pub(super) metadata: EscrowMetadata,
    pub(super) recipient: Recipient,
    pub(super) keys: Vec<SealedKey>,
}

/// The JSON shape of [`EscrowFile`], before validation.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct UncheckedEscrowFile {
    format: String,
    version: u32,
    metadata: EscrowMetadata,
    recipient: Recipient,
    keys: Vec<SealedKey>,
}

/// The OAEP label input: everything in the file except the ciphertexts, plus which key this
/// is. Serialized canonically (struct field order, compact JSON) and used as the OAEP
/// label, so the ciphertext decrypts only together with the exact metadata it was sealed
/// with: changing any field (a member, the cipher, the offset…) makes `open` fail instead
/// of reopening the volume with wrong parameters.
#[derive(Serialize)]
struct LabelInput<'a> {
    purpose: &'static str,
    format: &'a str,
    version: u32,
    metadata: &'a EscrowMetadata,
    recipient: &'a Recipient,
    key_index: usize,
    dm_name: &'a str,
    /// Absent in version 1 labels, which therefore stay byte-identical.
    #[serde(skip_serializing_if = "Option::is_none")]
    segment: Option<&'a KeySegment>,
}

const LABEL_PURPOSE: &str = "tosskey escrow: OAEP label binding the metadata to the key";

/// `SystemTime` as RFC 3339 UTC with whole seconds, the form `created_at` takes.
pub fn rfc3339_utc(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time).to_string()
}

pub(super) fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Shared => "shared",
        Layout::PerDisk => "per-disk",
    }
}

impl EscrowFile {
    /// Parse and validate an escrow file. Strict: unknown fields, a different format or
    /// version, malformed base64 and impossible values are errors. Never panics.
    pub fn parse(bytes: &[u8]) -> Result<EscrowFile> {
        if bytes.len() > MAX_FILE_BYTES {
            return Err(Error::EscrowTooLarge {
                len: bytes.len(),
                max: MAX_FILE_BYTES,
            });
        }
        // Format and version first, so a file from another version gets a version error
        // rather than complaints about fields this version does not know.
        #[derive(Deserialize)]
        struct Header {
            format: serde_json::Value,
            version: serde_json::Value,
        }
        let header: Header = serde_json::from_slice(bytes).map_err(Error::EscrowJson)?;
        if header.format.as_str() != Some(FORMAT_NAME) {
            return Err(Error::EscrowFormat {
                found: truncate_for_message(&header.format.to_string()),
            });
        }
        match header.version.as_u64() {
            Some(v) if v == u64::from(FORMAT_VERSION) || v == u64::from(FORMAT_VERSION_ONE_KEY) => {
            }
            Some(found) => {
                return Err(Error::EscrowVersion {
                    found,
                    supported: FORMAT_VERSION,
                })
            }
            None => {
                return Err(field_error(
                    "version".into(),
                    "not a non-negative integer".into(),
                ))
            }
        }
        let unchecked: UncheckedEscrowFile =
            serde_json::from_slice(bytes).map_err(Error::EscrowJson)?;
        let file = EscrowFile {
            format: unchecked.format,
            version: unchecked.version,
            metadata: unchecked.metadata,
            recipient: unchecked.recipient,
            keys: unchecked.keys,
        };
        file.validate()?;
        Ok(file)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings, integers and bools cannot fail.
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    pub(super) fn label(&self, key_index: usize) -> Result<Vec<u8>> {
        let input = LabelInput {
            purpose: LABEL_PURPOSE,
            format: &self.format,
            version: self.version,
            metadata: &self.metadata,
            recipient: &self.recipient,
            key_index,
            dm_name: &self.keys[key_index].dm_name,
            segment: self.keys[key_index].segment.as_ref(),
        };
        // Only fails for a path that is not UTF-8, which validate() has refused already.
        serde_json::to_vec(&input).map_err(|e| {
            field_error(
                "metadata".into(),
                format!("cannot be serialized canonically: {e}"),
            )
        })
    }

    pub fn metadata(&self) -> &EscrowMetadata {
        &self.metadata
    }

    pub fn recipient(&self) -> &Recipient {
        &self.recipient
    }

    pub fn keys(&self) -> &[SealedKey] {
        &self.keys
    }

    pub fn version(&self) -> u32 {
        self.version
    }
}
