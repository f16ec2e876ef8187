//! Sealing: each volume key encrypted with RSA-OAEP-SHA-256 to the recipient, under a label
//! that binds it to the metadata and its segment.

use base64ct::{Base64, Encoding as _};
use rsa::oaep::Oaep;
use sha2::Sha256;

use super::format::{
    EscrowFile, EscrowMetadata, KeySegment, Recipient, SealedKey, ALGORITHM, FORMAT_NAME,
    FORMAT_VERSION, FORMAT_VERSION_ONE_KEY,
};
use super::rsa_keys::EscrowPublicKey;
use super::validate::field_error;
use crate::error::{Error, Result};
use crate::key::{KeyArena, VolumeKey};

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
