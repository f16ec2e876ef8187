//! Every check of a parsed escrow file's fields. The metadata is hostile input (anyone with
//! the public key can seal a file, and `escrow decrypt` prints commands an operator runs as
//! root): names follow the device-mapper rules, paths and text a strict character set, and
//! every number is bounded.

use std::collections::HashSet;

use base64ct::{Base64, Encoding as _};
use tosskey_sysutil::SECTOR_SIZE;

use super::format::{
    layout_name, Assembly, EscrowCrypt, EscrowFile, EscrowMember, EscrowMetadata, KeySegment,
    Layout, Recipient, ALGORITHM, FORMAT_NAME, FORMAT_VERSION, FORMAT_VERSION_ONE_KEY, MAX_KEYS,
};
use super::rsa_keys::MIN_RSA_BITS;
use crate::error::{Error, Result};
use crate::sector::SectorSize;

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

impl EscrowFile {
    /// Every check `parse` makes after the JSON shape is right.
    pub(super) fn validate(&self) -> Result<()> {
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
        validate_metadata(&self.metadata)?;
        validate_recipient(&self.recipient)?;
        if self.version == FORMAT_VERSION_ONE_KEY {
            self.validate_one_key_per_mapping()?;
        } else {
            self.validate_segments()?;
        }
        self.validate_ciphertexts()
    }

    /// Every ciphertext is standard base64 of exactly one RSA block of the recipient's size.
    fn validate_ciphertexts(&self) -> Result<()> {
        let r = &self.recipient;
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
        let crypt_sector = u64::from(m.crypt.sector_size) / SECTOR_SIZE;
        let member_sectors: Vec<u64> = m
            .members
            .iter()
            .map(|x| x.size_bytes / SECTOR_SIZE)
            .collect();
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
            check_segment(
                &field,
                &sealed.dm_name,
                segment,
                next_start,
                crypt_sector,
                m.key_scope_bytes,
            )?;
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

/// One segment of key `field` of mapping `dm_name`: it starts where the previous one ended
/// (`next_start`), spans whole crypt sectors (`crypt_sector`, in 512-byte sectors), and no
/// more than the key scope.
fn check_segment(
    field: &str,
    dm_name: &str,
    segment: KeySegment,
    next_start: u64,
    crypt_sector: u64,
    key_scope_bytes: Option<u64>,
) -> Result<()> {
    if segment.start_sector != next_start {
        return Err(field_error(
            format!("{field}.segment.start_sector"),
            format!(
                "{} leaves a gap or overlap: the previous segment of {} ends at {next_start}",
                segment.start_sector, dm_name
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
    if key_scope_bytes.is_some_and(|limit| segment.sectors.saturating_mul(SECTOR_SIZE) > limit) {
        return Err(field_error(
            format!("{field}.segment.sectors"),
            format!(
                "{} sectors under one key exceed the recorded key scope of {} bytes",
                segment.sectors,
                key_scope_bytes.unwrap_or_default()
            ),
        ));
    }
    Ok(())
}

/// The metadata's own fields: name, hostname, time, crypt, members, assembly, key scope.
fn validate_metadata(m: &EscrowMetadata) -> Result<()> {
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
    validate_assembly(m.assembly, m.layout, m.members.len())?;
    if m.key_scope_bytes
        .is_some_and(|limit| limit < u64::from(m.crypt.sector_size))
    {
        return Err(field_error(
            "metadata.key_scope_bytes".into(),
            "smaller than one encryption sector".into(),
        ));
    }
    Ok(())
}

/// The recipient: the one algorithm, a key size the rsa crate takes, a SHA-256 in hex.
fn validate_recipient(r: &Recipient) -> Result<()> {
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
    Ok(())
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
    let sectors_per_block = u64::from(c.sector_size) / SECTOR_SIZE;
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

fn validate_assembly(assembly: Assembly, layout: Layout, members: usize) -> Result<()> {
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
        Assembly::Separate => {
            if layout != Layout::PerDisk {
                return Err(field_error(
                    "metadata.layout".into(),
                    format!(
                        "{} with kind separate (each member its own mapping: per-disk)",
                        layout_name(layout)
                    ),
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

/// The rules of a device-mapper name as tosskey creates them
/// ([`tosskey_sysutil::check_dm_name`]): 1 to 127 bytes of ASCII letters, digits and `-_.+:@`,
/// not `.` or `..`. No space, quote, `$`, `;`, backtick or non-ASCII (bidi, format) character
/// can reach a printed command this way.
fn check_dm_name(field: &str, name: &str) -> Result<()> {
    tosskey_sysutil::check_dm_name(name).map_err(|invalid| {
        field_error(
            field.into(),
            format!(
                "{} is not a valid device-mapper name: {}; names have 1-127 bytes of letters, digits and -_.+:@",
                truncate_for_message(name),
                invalid.reason
            ),
        )
    })
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

pub(super) fn field_error(field: String, reason: String) -> Error {
    Error::EscrowField { field, reason }
}

/// Keep attacker-sized strings out of one-line messages.
pub(super) fn truncate_for_message(text: &str) -> String {
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
