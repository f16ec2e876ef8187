//! The escrow file: versioned JSON with everything needed to reopen the volume, and the
//! volume key(s) sealed with RSA-OAEP-SHA-256.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use base64::engine::general_purpose::STANDARD as BASE64;
use base64::Engine as _;
use rsa::oaep::Oaep;
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use zeroize::Zeroizing;

use super::rsa_keys::{EscrowPrivateKey, EscrowPublicKey, MIN_RSA_BITS};
use crate::error::{Error, Result};
use crate::key::VolumeKey;
use crate::spec::CipherSpec;

/// The `format` field of every escrow file.
pub const FORMAT_NAME: &str = "tosskey-escrow";
/// The only format version this build writes and reads.
pub const FORMAT_VERSION: u32 = 1;
/// The `recipient.algorithm` field.
pub const ALGORITHM: &str = "RSA-OAEP-SHA-256";
/// No valid escrow file comes near this (a 256-member per-disk file with 8192-bit RSA is
/// about 400 KiB); anything larger is refused before parsing.
pub const MAX_FILE_BYTES: usize = 1 << 20;

const MAX_MEMBERS: usize = 256;
const MAX_RSA_BITS: u32 = 8192; // the rsa crate's limit for public keys
const MAX_TEXT_BYTES: usize = 4096;
/// DM_NAME_LEN (128) includes the terminating NUL.
const MAX_DM_NAME_BYTES: usize = 127;

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
    /// RSA-OAEP-SHA-256 ciphertext, standard base64 with padding.
    pub ciphertext: String,
}

/// A key opened from an escrow file, with the mapping it belongs to.
#[derive(Debug)]
pub struct OpenedKey {
    pub dm_name: String,
    pub key: VolumeKey,
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
    /// order) for the per-disk layout.
    pub fn seal_keys(
        public_key: &EscrowPublicKey,
        keys: &[(&str, &VolumeKey)],
        metadata: EscrowMetadata,
    ) -> Result<EscrowFile> {
        let recipient = Recipient {
            algorithm: ALGORITHM.to_string(),
            rsa_bits: public_key.bits(),
            public_key_sha256: public_key.fingerprint().to_string(),
        };
        let mut file = EscrowFile {
            format: FORMAT_NAME.to_string(),
            version: FORMAT_VERSION,
            metadata,
            recipient,
            keys: keys
                .iter()
                .map(|(dm_name, _)| SealedKey {
                    dm_name: (*dm_name).to_string(),
                    ciphertext: String::new(),
                })
                .collect(),
        };
        for (index, (_, key)) in keys.iter().enumerate() {
            if key.bits() != file.metadata.crypt.key_bits {
                return Err(field_error(
                    format!("keys[{index}]"),
                    format!(
                        "the key has {} bits but crypt.key_bits is {}",
                        key.bits(),
                        file.metadata.crypt.key_bits
                    ),
                ));
            }
        }
        // Validate with placeholder ciphertexts of the right length so the checks are the
        // parser's, then encrypt.
        let placeholder = BASE64.encode(vec![0u8; public_key.ciphertext_len()]);
        for sealed in &mut file.keys {
            sealed.ciphertext.clone_from(&placeholder);
        }
        file.validate()?;
        for (index, (_, key)) in keys.iter().enumerate() {
            let label = file.label(index)?;
            let ciphertext = public_key
                .rsa()
                .encrypt(
                    &mut getrandom::SysRng,
                    Oaep::<Sha256>::new_with_label(label),
                    key.expose_secret(),
                )
                .map_err(Error::EscrowSeal)?;
            file.keys[index].ciphertext = BASE64.encode(ciphertext);
        }
        Ok(file)
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
            Some(v) if v == u64::from(FORMAT_VERSION) => {}
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

    fn open_key(&self, private_key: &EscrowPrivateKey, index: usize) -> Result<VolumeKey> {
        if private_key.fingerprint() != self.recipient.public_key_sha256 {
            return Err(Error::EscrowWrongPrivateKey {
                sealed_to: self.recipient.public_key_sha256.clone(),
                given: private_key.fingerprint().to_string(),
            });
        }
        let sealed = &self.keys[index];
        let ciphertext = BASE64
            .decode(&sealed.ciphertext)
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
        VolumeKey::from_secret_bytes(secret)
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
        if self.version != FORMAT_VERSION {
            return Err(Error::EscrowVersion {
                found: u64::from(self.version),
                supported: FORMAT_VERSION,
            });
        }
        let m = &self.metadata;
        check_dm_name("metadata.name", &m.name)?;
        check_text("metadata.hostname", &m.hostname, 255, true)?;
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
                    match m.layout {
                        Layout::Shared => "shared",
                        Layout::PerDisk => "per-disk",
                    },
                    m.members.len()
                ),
            ));
        }
        let ciphertext_len = (r.rsa_bits as usize).div_ceil(8);
        let mut dm_names = HashSet::new();
        for (index, sealed) in self.keys.iter().enumerate() {
            check_dm_name(&format!("keys[{index}].dm_name"), &sealed.dm_name)?;
            if !dm_names.insert(sealed.dm_name.as_str()) {
                return Err(field_error(
                    format!("keys[{index}].dm_name"),
                    "the same mapping name appears twice".into(),
                ));
            }
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
            let decoded = BASE64
                .decode(&sealed.ciphertext)
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
}

fn validate_crypt(c: &EscrowCrypt) -> Result<()> {
    if !c.cipher.supported_key_bits().contains(&c.key_bits) {
        return Err(field_error(
            "metadata.crypt.key_bits".into(),
            format!(
                "{} bits; {} takes {:?}",
                c.key_bits,
                c.cipher,
                c.cipher.supported_key_bits()
            ),
        ));
    }
    if !matches!(c.sector_size, 512 | 1024 | 2048 | 4096) {
        return Err(field_error(
            "metadata.crypt.sector_size".into(),
            format!(
                "{} bytes; dm-crypt takes 512, 1024, 2048 or 4096",
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
        check_text(&field("path_at_creation"), path, MAX_TEXT_BYTES, false)?;
        if !member.path_at_creation.is_absolute() {
            return Err(field_error(
                field("path_at_creation"),
                "not an absolute path".into(),
            ));
        }
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

fn check_dm_name(field: &str, name: &str) -> Result<()> {
    check_text(field, name, MAX_DM_NAME_BYTES, false)?;
    if name == "." || name == ".." || name.contains('/') {
        return Err(field_error(
            field.into(),
            "not a valid device-mapper name (no '/', not '.' or '..')".into(),
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
