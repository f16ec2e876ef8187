//! The escrow file: versioned JSON with everything needed to reopen the volume, and the
//! volume key(s) sealed with RSA-OAEP-SHA-256.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64ct::{Base64, Encoding as _};
use rsa::oaep::Oaep;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::rsa_keys::{EscrowPrivateKey, EscrowPublicKey, MIN_RSA_BITS};
use crate::error::{Error, Result};
use crate::key::{KeyArena, KeySize, VolumeKey};
use crate::sector::SectorSize;
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

const MAX_MEMBERS: usize = 256;
const MAX_RSA_BITS: u32 = 8192; // the rsa crate's limit for public keys
const MAX_TEXT_BYTES: usize = 4096;
/// Besides ASCII letters and digits, what a recorded device path may contain: enough for
/// `/dev/nvme1n1`, `/dev/disk/by-id/nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1…` and
/// `/dev/disk/by-path/pci-0000:00:1f.0-nvme-1`, and nothing a shell interprets.
const PATH_PUNCTUATION: &str = "/-_.:+@,=";
/// Besides ASCII letters and digits, what a recorded hostname may contain: a DNS name, or the
/// kernel's `(none)` when nothing set one (an initramfs). Never placed in a printed command.
const HOSTNAME_PUNCTUATION: &str = "-_.()";
/// Besides ASCII letters and digits, what a recorded identity (serial, WWN, by-id link) may
/// contain: SCSI `t10.` WWNs carry spaces; an identity is only compared, never placed in a
/// printed command.
const IDENTITY_PUNCTUATION: &str = " /-_.:+@,=";

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
    format: String,
    version: u32,
    metadata: EscrowMetadata,
    recipient: Recipient,
    keys: Vec<SealedKey>,
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

impl EscrowFile {
    /// Seal one volume key (shared layout) for the mapping named `metadata.name`.
    pub fn seal(
        public_key_pem: &str,
        key: &VolumeKey,
        metadata: EscrowMetadata,
    ) -> Result<EscrowFile> {
        let public_key = EscrowPublicKey::from_pem(public_key_pem)?;
        let name = metadata.name.clone();
        EscrowFile::seal_keys(&public_key, &[(name.as_str(), key)], metadata)
    }

    /// Seal one key per crypt mapping: one for the shared layout, one per member (in member
    /// order) for the per-disk layout. Writes format version 1 (each key covers its mapping).
    pub fn seal_keys(
        public_key: &EscrowPublicKey,
        keys: &[(&str, &VolumeKey)],
        metadata: EscrowMetadata,
    ) -> Result<EscrowFile> {
        let entries = keys
            .iter()
            .map(|(dm_name, _)| ((*dm_name).to_string(), None))
            .collect();
        let secrets: Vec<&[u8]> = keys.iter().map(|(_, key)| key.expose_secret()).collect();
        EscrowFile::seal_secrets(
            public_key,
            FORMAT_VERSION_ONE_KEY,
            entries,
            &secrets,
            metadata,
        )
    }

    /// Seal one key per key-scope segment (format version 2): `keys.key(i)` encrypts segment
    /// `segments[i]` = (mapping name, range). Segments of one mapping are consecutive in
    /// mapping order from sector 0; mappings come in member order for the per-disk layout.
    pub fn seal_segments(
        public_key: &EscrowPublicKey,
        segments: &[(&str, KeySegment)],
        keys: &KeyArena,
        metadata: EscrowMetadata,
    ) -> Result<EscrowFile> {
        EscrowFile::prepare_segments(public_key, segments, metadata)?.seal(keys)
    }

    /// The checks of [`EscrowFile::seal_segments`] without the keys: the metadata, the
    /// segments and the recipient validated as the parser would, so that a caller can
    /// refuse hostile metadata (a hostname, serial or path that could not be written)
    /// before it builds anything; [`UnsealedEscrow::seal`] adds the keys later.
    pub fn prepare_segments(
        public_key: &EscrowPublicKey,
        segments: &[(&str, KeySegment)],
        metadata: EscrowMetadata,
    ) -> Result<UnsealedEscrow> {
        let entries = segments
            .iter()
            .map(|(dm_name, segment)| ((*dm_name).to_string(), Some(*segment)))
            .collect();
        EscrowFile::prepare(public_key, FORMAT_VERSION, entries, metadata)
    }

    /// Validates `secrets` against the file, then seals `secrets[i]` for `entries[i]` =
    /// (mapping name, segment).
    fn seal_secrets(
        public_key: &EscrowPublicKey,
        version: u32,
        entries: Vec<(String, Option<KeySegment>)>,
        secrets: &[&[u8]],
        metadata: EscrowMetadata,
    ) -> Result<EscrowFile> {
        EscrowFile::prepare(public_key, version, entries, metadata)?.seal_secrets(secrets)
    }

    /// The file with placeholder ciphertexts of the right length, validated as the parser
    /// would validate it.
    fn prepare(
        public_key: &EscrowPublicKey,
        version: u32,
        entries: Vec<(String, Option<KeySegment>)>,
        metadata: EscrowMetadata,
    ) -> Result<UnsealedEscrow> {
        let recipient = Recipient {
            algorithm: ALGORITHM.to_string(),
            rsa_bits: public_key.bits(),
            public_key_sha256: public_key.fingerprint().to_string(),
        };
        let placeholder = Base64::encode_string(&vec![0u8; public_key.ciphertext_len()]);
        let file = EscrowFile {
            format: FORMAT_NAME.to_string(),
            version,
            metadata,
            recipient,
            keys: entries
                .into_iter()
                .map(|(dm_name, segment)| SealedKey {
                    dm_name,
                    segment,
                    ciphertext: placeholder.clone(),
                })
                .collect(),
        };
        file.validate()?;
        Ok(UnsealedEscrow {
            public_key: public_key.clone(),
            file,
        })
    }

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

    /// Read and parse an escrow file from disk.
    pub fn read(path: &Path) -> Result<EscrowFile> {
        use std::io::Read;
        let read_error = |source: std::io::Error| Error::ReadFile {
            path: path.to_path_buf(),
            source,
        };
        let file = std::fs::File::open(path).map_err(read_error)?;
        let mut bytes = Vec::new();
        // One byte over the limit is enough to know it is too large.
        file.take(MAX_FILE_BYTES as u64 + 1)
            .read_to_end(&mut bytes)
            .map_err(read_error)?;
        EscrowFile::parse(&bytes)
    }

    /// Pretty JSON with a trailing newline.
    pub fn to_json(&self) -> String {
        // Serializing plain structs of strings, integers and bools cannot fail.
        let mut json = serde_json::to_string_pretty(self).unwrap_or_default();
        json.push('\n');
        json
    }

    /// Write the file atomically with mode 0400. Refuses to replace an existing file unless
    /// `overwrite`.
    pub fn write_atomic(&self, path: &Path, overwrite: bool) -> Result<()> {
        super::write_new_file(path, self.to_json().as_bytes(), overwrite)
    }

    /// Decrypt the only key of a shared-layout file.
    pub fn open(&self, private_key_pem: &str) -> Result<VolumeKey> {
        if self.keys.len() != 1 {
            return Err(Error::EscrowKeyCount {
                count: self.keys.len(),
            });
        }
        let private_key = EscrowPrivateKey::from_pem(private_key_pem)?;
        self.open_key(&private_key, 0)
    }

    /// Decrypt every key, in `keys` order (member order for the per-disk layout).
    pub fn open_all(&self, private_key_pem: &str) -> Result<Vec<OpenedKey>> {
        let private_key = EscrowPrivateKey::from_pem(private_key_pem)?;
        (0..self.keys.len())
            .map(|index| {
                Ok(OpenedKey {
                    dm_name: self.keys[index].dm_name.clone(),
                    key: self.open_key(&private_key, index)?,
                })
            })
            .collect()
    }

    /// Decrypt every key into one locked arena, with the segment each one opens (version 1
    /// files: one whole-mapping key per mapping). For hundreds of key-scope segments this
    /// locks a few pages where [`EscrowFile::open_all`] would lock one per key.
    pub fn open_segments(&self, private_key_pem: &str) -> Result<OpenedSegments> {
        let private_key = EscrowPrivateKey::from_pem(private_key_pem)?;
        let size = KeySize::from_bits(self.metadata.crypt.key_bits)?;
        let keys = KeyArena::from_fn(size, self.keys.len(), |index, slot| {
            let secret = self.decrypt_key(&private_key, index)?;
            slot.copy_from_slice(&secret);
            Ok(())
        })?;
        let segments = self
            .keys
            .iter()
            .map(|sealed| OpenedSegment {
                dm_name: sealed.dm_name.clone(),
                segment: sealed.segment,
            })
            .collect();
        Ok(OpenedSegments { keys, segments })
    }

    fn open_key(&self, private_key: &EscrowPrivateKey, index: usize) -> Result<VolumeKey> {
        VolumeKey::from_secret_bytes(self.decrypt_key(private_key, index)?)
    }

    /// Key `index`, decrypted and checked to be `crypt.key_bits` long.
    fn decrypt_key(
        &self,
        private_key: &EscrowPrivateKey,
        index: usize,
    ) -> Result<Zeroizing<Vec<u8>>> {
        if private_key.fingerprint() != self.recipient.public_key_sha256 {
            return Err(Error::EscrowWrongPrivateKey {
                sealed_to: self.recipient.public_key_sha256.clone(),
                given: private_key.fingerprint().to_string(),
            });
        }
        let sealed = &self.keys[index];
        let ciphertext = Base64::decode_vec(&sealed.ciphertext)
            .map_err(|e| field_error(format!("keys[{index}].ciphertext"), e.to_string()))?;
        let tampered = || Error::EscrowTampered {
            dm_name: sealed.dm_name.clone(),
        };
        let secret = Zeroizing::new(
            private_key
                .rsa()
                .decrypt(
                    Oaep::<Sha256>::new_with_label(self.label(index)?),
                    &ciphertext,
                )
                .map_err(|_| tampered())?,
        );
        // The label authenticates the metadata, so a length mismatch means the sealer
        // itself wrote inconsistent data; still refuse it rather than open with a short key.
        if secret.len() * 8 != self.metadata.crypt.key_bits as usize {
            return Err(tampered());
        }
        Ok(secret)
    }

    fn label(&self, key_index: usize) -> Result<Vec<u8>> {
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

    /// Every check `parse` makes after the JSON shape is right.
    fn validate(&self) -> Result<()> {
        if self.format != FORMAT_NAME {
            return Err(Error::EscrowFormat {
                found: truncate_for_message(&self.format),
            });
        }
        if self.version != FORMAT_VERSION && self.version != FORMAT_VERSION_ONE_KEY {
            return Err(Error::EscrowVersion {
                found: u64::from(self.version),
                supported: FORMAT_VERSION,
            });
        }
        let m = &self.metadata;
        check_dm_name("metadata.name", &m.name)?;
        check_text("metadata.hostname", &m.hostname, 255, true)?;
        check_charset("metadata.hostname", &m.hostname, HOSTNAME_PUNCTUATION)?;
        if m.created_at.len() > 64 || humantime::parse_rfc3339(&m.created_at).is_err() {
            return Err(field_error(
                "metadata.created_at".into(),
                "not an RFC 3339 UTC time like 2026-11-27T03:00:00Z".into(),
            ));
        }
        validate_crypt(&m.crypt)?;
        validate_members(&m.members, m.crypt.sector_size)?;
        validate_assembly(m.assembly, m.members.len())?;

        let r = &self.recipient;
        if r.algorithm != ALGORITHM {
            return Err(field_error(
                "recipient.algorithm".into(),
                format!("only {ALGORITHM} is supported"),
            ));
        }
        if !(MIN_RSA_BITS..=MAX_RSA_BITS).contains(&r.rsa_bits) {
            return Err(field_error(
                "recipient.rsa_bits".into(),
                format!("{} is outside {MIN_RSA_BITS}..={MAX_RSA_BITS}", r.rsa_bits),
            ));
        }
        if r.public_key_sha256.len() != 64
            || !r
                .public_key_sha256
                .bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
        {
            return Err(field_error(
                "recipient.public_key_sha256".into(),
                "not 64 lower-case hex digits".into(),
            ));
        }

        if m.key_scope_bytes
            .is_some_and(|limit| limit < u64::from(m.crypt.sector_size))
        {
            return Err(field_error(
                "metadata.key_scope_bytes".into(),
                "smaller than one encryption sector".into(),
            ));
        }
        if self.version == FORMAT_VERSION_ONE_KEY {
            self.validate_one_key_per_mapping()?;
        } else {
            self.validate_segments()?;
        }
        let ciphertext_len = (r.rsa_bits as usize).div_ceil(8);
        for (index, sealed) in self.keys.iter().enumerate() {
            // Cheap length check before decoding: base64 of k bytes is 4*ceil(k/3) chars.
            let field = format!("keys[{index}].ciphertext");
            if sealed.ciphertext.len() != ciphertext_len.div_ceil(3) * 4 {
                return Err(field_error(
                    field,
                    format!(
                        "{} base64 characters; a {}-bit RSA ciphertext has {}",
                        sealed.ciphertext.len(),
                        r.rsa_bits,
                        ciphertext_len.div_ceil(3) * 4
                    ),
                ));
            }
            let decoded = Base64::decode_vec(&sealed.ciphertext)
                .map_err(|e| field_error(field.clone(), format!("not standard base64: {e}")))?;
            if decoded.len() != ciphertext_len {
                return Err(field_error(
                    field,
                    format!(
                        "{} bytes; a {}-bit RSA ciphertext has {ciphertext_len}",
                        decoded.len(),
                        r.rsa_bits
                    ),
                ));
            }
        }
        Ok(())
    }

    /// Version 1: one key per mapping (shared: 1, per-disk: one per member), no segments,
    /// every mapping name once.
    fn validate_one_key_per_mapping(&self) -> Result<()> {
        let m = &self.metadata;
        let expected_keys = match m.layout {
            Layout::Shared => 1,
            Layout::PerDisk => m.members.len(),
        };
        if self.keys.len() != expected_keys {
            return Err(field_error(
                "keys".into(),
                format!(
                    "{} keys for the {} layout with {} members (expected {expected_keys})",
                    self.keys.len(),
                    layout_name(m.layout),
                    m.members.len()
                ),
            ));
        }
        let mut dm_names = HashSet::new();
        for (index, sealed) in self.keys.iter().enumerate() {
            let field = format!("keys[{index}]");
            check_dm_name(&format!("{field}.dm_name"), &sealed.dm_name)?;
            if !dm_names.insert(sealed.dm_name.as_str()) {
                return Err(field_error(
                    format!("{field}.dm_name"),
                    "the same mapping name appears twice".into(),
                ));
            }
            if sealed.segment.is_some() {
                return Err(field_error(
                    format!("{field}.segment"),
                    format!("version {FORMAT_VERSION_ONE_KEY} files have no segments"),
                ));
            }
        }
        if m.key_scope_bytes.is_some() {
            return Err(field_error(
                "metadata.key_scope_bytes".into(),
                format!("version {FORMAT_VERSION_ONE_KEY} files have no key scope"),
            ));
        }
        Ok(())
    }

    /// Version 2: 1 to [`MAX_KEYS`] keys, each with a segment. The keys of one mapping are
    /// adjacent and their segments tile the mapping from sector 0 without gap or overlap, on
    /// crypt-sector boundaries; there is one mapping (shared) or one per member (per-disk),
    /// and no mapping is longer than the members under it.
    fn validate_segments(&self) -> Result<()> {
        let m = &self.metadata;
        if self.keys.is_empty() || self.keys.len() > MAX_KEYS {
            return Err(field_error(
                "keys".into(),
                format!("{} keys; 1..={MAX_KEYS} expected", self.keys.len()),
            ));
        }
        let crypt_sector = u64::from(m.crypt.sector_size / 512);
        let member_sectors: Vec<u64> = m.members.iter().map(|x| x.size_bytes / 512).collect();
        let mut mappings: Vec<&str> = Vec::new();
        let mut next_start = 0u64;
        for (index, sealed) in self.keys.iter().enumerate() {
            let field = format!("keys[{index}]");
            check_dm_name(&format!("{field}.dm_name"), &sealed.dm_name)?;
            let Some(segment) = sealed.segment else {
                return Err(field_error(
                    format!("{field}.segment"),
                    format!("missing: version {FORMAT_VERSION} records each key's segment"),
                ));
            };
            if mappings.last() != Some(&sealed.dm_name.as_str()) {
                if mappings.contains(&sealed.dm_name.as_str()) {
                    return Err(field_error(
                        format!("{field}.dm_name"),
                        "the keys of one mapping must be adjacent".into(),
                    ));
                }
                mappings.push(&sealed.dm_name);
                next_start = 0;
            }
            if segment.start_sector != next_start {
                return Err(field_error(
                    format!("{field}.segment.start_sector"),
                    format!(
                        "{} leaves a gap or overlap: the previous segment of {} ends at {next_start}",
                        segment.start_sector, sealed.dm_name
                    ),
                ));
            }
            if segment.sectors == 0 || !segment.sectors.is_multiple_of(crypt_sector) {
                return Err(field_error(
                    format!("{field}.segment.sectors"),
                    format!(
                        "{} is not a positive multiple of {crypt_sector} (the crypt sector in 512-byte sectors)",
                        segment.sectors
                    ),
                ));
            }
            if m.key_scope_bytes
                .is_some_and(|limit| segment.sectors.saturating_mul(512) > limit)
            {
                return Err(field_error(
                    format!("{field}.segment.sectors"),
                    format!(
                        "{} sectors under one key exceed the recorded key scope of {} bytes",
                        segment.sectors,
                        m.key_scope_bytes.unwrap_or_default()
                    ),
                ));
            }
            next_start = next_start.saturating_add(segment.sectors);
            let room = match m.layout {
                Layout::Shared => member_sectors.iter().sum::<u64>(),
                Layout::PerDisk => member_sectors.get(mappings.len() - 1).copied().unwrap_or(0),
            };
            if next_start.saturating_add(m.crypt.data_offset) > room {
                return Err(field_error(
                    format!("{field}.segment"),
                    format!(
                        "{} ends at sector {next_start}, beyond the {room} sectors of its members",
                        sealed.dm_name
                    ),
                ));
            }
        }
        let expected_mappings = match m.layout {
            Layout::Shared => 1,
            Layout::PerDisk => m.members.len(),
        };
        if mappings.len() != expected_mappings {
            return Err(field_error(
                "keys".into(),
                format!(
                    "keys for {} mappings in the {} layout with {} members (expected {expected_mappings})",
                    mappings.len(),
                    layout_name(m.layout),
                    m.members.len()
                ),
            ));
        }
        Ok(())
    }
}

fn layout_name(layout: Layout) -> &'static str {
    match layout {
        Layout::Shared => "shared",
        Layout::PerDisk => "per-disk",
    }
}

/// An escrow file whose metadata, segments and recipient passed every check, waiting for
/// its keys ([`EscrowFile::prepare_segments`]).
#[derive(Debug)]
pub struct UnsealedEscrow {
    public_key: EscrowPublicKey,
    file: EscrowFile,
}

impl UnsealedEscrow {
    /// Seal `keys.key(i)` for segment `i`.
    pub fn seal(self, keys: &KeyArena) -> Result<EscrowFile> {
        if self.file.keys.len() != keys.len() {
            return Err(field_error(
                "keys".into(),
                format!("{} keys for {} segments", keys.len(), self.file.keys.len()),
            ));
        }
        let secrets: Vec<&[u8]> = keys.iter().collect();
        self.seal_secrets(&secrets)
    }

    fn seal_secrets(self, secrets: &[&[u8]]) -> Result<EscrowFile> {
        let UnsealedEscrow {
            public_key,
            mut file,
        } = self;
        for (index, secret) in secrets.iter().enumerate() {
            if secret.len() * 8 != file.metadata.crypt.key_bits as usize {
                return Err(field_error(
                    format!("keys[{index}]"),
                    format!(
                        "the key has {} bits but crypt.key_bits is {}",
                        secret.len() * 8,
                        file.metadata.crypt.key_bits
                    ),
                ));
            }
        }
        for (index, secret) in secrets.iter().enumerate() {
            let label = file.label(index)?;
            let ciphertext = public_key
                .rsa()
                .encrypt(
                    &mut getrandom::SysRng,
                    Oaep::<Sha256>::new_with_label(label),
                    secret,
                )
                .map_err(Error::EscrowSeal)?;
            file.keys[index].ciphertext = Base64::encode_string(&ciphertext);
        }
        Ok(file)
    }
}

fn validate_crypt(c: &EscrowCrypt) -> Result<()> {
    if !c.cipher.supported_key_bits().contains(&c.key_bits) {
        return Err(field_error(
            "metadata.crypt.key_bits".into(),
            format!(
                "{} bits; {} takes {} bits",
                c.key_bits,
                c.cipher,
                c.cipher
                    .supported_key_bits()
                    .iter()
                    .map(u32::to_string)
                    .collect::<Vec<_>>()
                    .join(" or ")
            ),
        ));
    }
    // dm-crypt also takes 1024 and 2048, but tosskey's verifier cannot check them, so no
    // tosskey volume has them.
    if SectorSize::try_from(u64::from(c.sector_size)).is_err() {
        return Err(field_error(
            "metadata.crypt.sector_size".into(),
            format!(
                "{} bytes; tosskey volumes use 512 or 4096 (the sizes its verifier checks)",
                c.sector_size
            ),
        ));
    }
    let sectors_per_block = u64::from(c.sector_size / 512);
    if !c.iv_offset.is_multiple_of(sectors_per_block) {
        return Err(field_error(
            "metadata.crypt.iv_offset".into(),
            format!(
                "{} is not a multiple of {sectors_per_block} (the sector size in 512-byte units)",
                c.iv_offset
            ),
        ));
    }
    Ok(())
}

fn validate_members(members: &[EscrowMember], sector_size: u32) -> Result<()> {
    if members.is_empty() || members.len() > MAX_MEMBERS {
        return Err(field_error(
            "metadata.members".into(),
            format!("{} members; 1..={MAX_MEMBERS} expected", members.len()),
        ));
    }
    let mut identities = HashSet::new();
    for (index, member) in members.iter().enumerate() {
        let field = |name: &str| format!("metadata.members[{index}].{name}");
        check_text(&field("identity"), &member.identity, MAX_TEXT_BYTES, false)?;
        check_charset(&field("identity"), &member.identity, IDENTITY_PUNCTUATION)?;
        if !identities.insert(member.identity.as_str()) {
            return Err(field_error(
                field("identity"),
                "the same device appears twice".into(),
            ));
        }
        if member.size_bytes < u64::from(sector_size) || !member.size_bytes.is_multiple_of(512) {
            return Err(field_error(
                field("size_bytes"),
                format!(
                    "{} is not a positive multiple of 512 holding at least one {sector_size}-byte sector",
                    member.size_bytes
                ),
            ));
        }
        let path = member
            .path_at_creation
            .to_str()
            .ok_or_else(|| field_error(field("path_at_creation"), "not UTF-8".into()))?;
        check_path(&field("path_at_creation"), path)?;
    }
    Ok(())
}

fn validate_assembly(assembly: Assembly, members: usize) -> Result<()> {
    let chunk = match assembly {
        Assembly::Single => {
            if members != 1 {
                return Err(field_error(
                    "metadata.assembly".into(),
                    format!("kind single with {members} members"),
                ));
            }
            return Ok(());
        }
        Assembly::Md { chunk_bytes, .. } | Assembly::DmStripe { chunk_bytes } => chunk_bytes,
    };
    if members < 2 {
        return Err(field_error(
            "metadata.assembly".into(),
            "an array needs at least 2 members".into(),
        ));
    }
    if chunk == 0 || !chunk.is_multiple_of(4096) || chunk > 1 << 30 {
        return Err(field_error(
            "metadata.assembly.chunk_bytes".into(),
            format!("{chunk} is not a multiple of 4096 between 4 KiB and 1 GiB"),
        ));
    }
    Ok(())
}

/// The rules of a device-mapper name as tosskey creates them (`tosskey_dm::DmName`): 1 to 127
/// bytes of ASCII letters, digits and `-_.+:@`, not `.` or `..`. No space, quote, `$`, `;`,
/// backtick or non-ASCII (bidi, format) character can reach a printed command this way.
fn check_dm_name(field: &str, name: &str) -> Result<()> {
    match tosskey_dm::DmName::new(name) {
        Ok(_) => Ok(()),
        Err(tosskey_dm::Error::InvalidName { reason, .. }) => Err(field_error(
            field.into(),
            format!(
                "{} is not a valid device-mapper name: {reason}; names have 1-127 bytes of letters, digits and -_.+:@",
                truncate_for_message(name)
            ),
        )),
        Err(_) => Err(field_error(
            field.into(),
            "not a valid device-mapper name".into(),
        )),
    }
}

/// Only ASCII letters, digits and the characters of `punctuation`.
fn check_charset(field: &str, text: &str, punctuation: &str) -> Result<()> {
    match text
        .chars()
        .find(|&c| !(c.is_ascii_alphanumeric() || punctuation.contains(c)))
    {
        None => Ok(()),
        Some(bad) => Err(field_error(
            field.into(),
            format!(
                "contains {:?}; only ASCII letters, digits and {punctuation:?} are allowed",
                bad.escape_unicode().to_string()
            ),
        )),
    }
}

/// An absolute path of ASCII letters, digits and [`PATH_PUNCTUATION`], without `.` or `..`
/// components.
fn check_path(field: &str, path: &str) -> Result<()> {
    check_text(field, path, MAX_TEXT_BYTES, false)?;
    check_charset(field, path, PATH_PUNCTUATION)?;
    if !path.starts_with('/') {
        return Err(field_error(field.into(), "not an absolute path".into()));
    }
    if path.split('/').any(|part| part == "." || part == "..") {
        return Err(field_error(
            field.into(),
            "has a '.' or '..' component".into(),
        ));
    }
    Ok(())
}

/// Non-empty (unless `may_be_empty`), at most `max` bytes, no control characters.
fn check_text(field: &str, text: &str, max: usize, may_be_empty: bool) -> Result<()> {
    if text.is_empty() && !may_be_empty {
        return Err(field_error(field.into(), "empty".into()));
    }
    if text.len() > max {
        return Err(field_error(
            field.into(),
            format!("{} bytes, more than {max}", text.len()),
        ));
    }
    if text.chars().any(char::is_control) {
        return Err(field_error(
            field.into(),
            "contains control characters".into(),
        ));
    }
    Ok(())
}

fn field_error(field: String, reason: String) -> Error {
    Error::EscrowField { field, reason }
}

/// Keep attacker-sized strings out of one-line messages.
fn truncate_for_message(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(40)
        .collect::<String>()
        .escape_debug()
        .to_string();
    if text.chars().count() > 40 {
        out.push('…');
    }
    out
}
