//! Opening: the private key checked against the recorded recipient, then each key decrypted
//! under its label (a wrong label means the file was altered after it was sealed).

use base64ct::{Base64, Encoding as _};
use rsa::oaep::Oaep;
use sha2::Sha256;
use zeroize::Zeroizing;

use super::format::{EscrowFile, OpenedKey, OpenedSegment, OpenedSegments};
use super::rsa_keys::EscrowPrivateKey;
use super::validate::field_error;
use crate::error::{Error, Result};
use crate::key::{KeyArena, KeySize, VolumeKey};

impl EscrowFile {
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
}
