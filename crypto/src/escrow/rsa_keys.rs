//! RSA escrow keys from PEM: public keys as SPKI (`BEGIN PUBLIC KEY`) or PKCS#1
//! (`BEGIN RSA PUBLIC KEY`), private keys as PKCS#8 (`BEGIN PRIVATE KEY`) or PKCS#1
//! (`BEGIN RSA PRIVATE KEY`). Keys under 2048 bits are refused.

use std::fmt;

use rsa::pkcs1::{DecodeRsaPrivateKey, DecodeRsaPublicKey};
use rsa::pkcs8::{DecodePrivateKey, DecodePublicKey, EncodePublicKey};
use rsa::traits::PublicKeyParts;
use sha2::{Digest, Sha256};

use crate::error::{Error, Result};

/// What an EC, Ed25519 or other non-RSA key gets told (rather than its algorithm's OID).
const NOT_RSA: &str = "not an RSA key (EC, Ed25519 and other key types are refused): tosskey needs RSA ≥ 2048 bits (openssl genpkey -algorithm RSA -pkeyopt rsa_keygen_bits:4096 -out escrow.pem)";

/// Smallest RSA modulus accepted for escrow (NIST SP 800-57: 2048 bits ~ 112-bit security).
pub const MIN_RSA_BITS: u32 = 2048;

/// An RSA public key that escrow files are sealed to.
#[derive(Clone)]
pub struct EscrowPublicKey {
    key: rsa::PublicKey,
    fingerprint: String,
}

impl EscrowPublicKey {
    /// Parse a PEM public key (SPKI or PKCS#1) of at least 2048 bits.
    pub fn from_pem(pem: &str) -> Result<EscrowPublicKey> {
        let public_error = |reason: String| Error::EscrowPublicKey { reason };
        let (label, block) = first_pem_block(pem).ok_or_else(|| {
            public_error("no PEM block found (expected -----BEGIN PUBLIC KEY-----)".into())
        })?;
        let key = match label {
            "PUBLIC KEY" => rsa::PublicKey::from_public_key_pem(block).map_err(|e| match e {
                rsa::pkcs8::spki::Error::OidUnknown { .. } => public_error(NOT_RSA.into()),
                e => public_error(format!("not an RSA SubjectPublicKeyInfo: {e}")),
            })?,
            "RSA PUBLIC KEY" => rsa::PublicKey::from_pkcs1_pem(block)
                .map_err(|e| public_error(format!("not a PKCS#1 RSA public key: {e}")))?,
            "PRIVATE KEY" | "RSA PRIVATE KEY" | "ENCRYPTED PRIVATE KEY" => {
                return Err(public_error(
                    "this is a private key: give only the public half to the machine (openssl pkey -in KEY -pubout)"
                        .into(),
                ))
            }
            "CERTIFICATE" => {
                return Err(public_error(
                    "this is a certificate: extract its public key (openssl x509 -in CERT -pubkey -noout)".into(),
                ))
            }
            other => {
                return Err(public_error(format!(
                    "PEM type \"{}\" is not an RSA public key (expected PUBLIC KEY or RSA PUBLIC KEY)",
                    other.escape_debug()
                )))
            }
        };
        check_bits(key.n().bit_width())?;
        let fingerprint = spki_sha256(&key).map_err(public_error)?;
        Ok(EscrowPublicKey { key, fingerprint })
    }

    /// Modulus length in bits.
    pub fn bits(&self) -> u32 {
        self.key.n().bit_width()
    }

    /// Lower-case hex SHA-256 of the DER SubjectPublicKeyInfo, the same as
    /// `openssl pkey -pubin -in PUB.pem -outform DER | sha256sum`.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    /// Ciphertext length in bytes (`k` in RFC 8017).
    pub fn ciphertext_len(&self) -> usize {
        self.key.size()
    }

    pub(crate) fn rsa(&self) -> &rsa::PublicKey {
        &self.key
    }
}

impl fmt::Debug for EscrowPublicKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowPublicKey")
            .field("bits", &self.bits())
            .field("sha256", &self.fingerprint)
            .finish()
    }
}

/// An RSA private key that opens escrow files. The rsa crate zeroizes it on drop.
pub struct EscrowPrivateKey {
    key: rsa::PrivateKey,
    fingerprint: String,
}

impl EscrowPrivateKey {
    /// Parse a PEM private key (PKCS#8 or PKCS#1, unencrypted). Pass the PEM text in a
    /// zeroizing buffer.
    pub fn from_pem(pem: &str) -> Result<EscrowPrivateKey> {
        let private_error = |reason: String| Error::EscrowPrivateKey { reason };
        // The parsers' error values describe the structure that failed, never the key's
        // contents; they are safe to show.
        let (label, block) = first_pem_block(pem).ok_or_else(|| {
            private_error("no PEM block found (expected -----BEGIN PRIVATE KEY-----)".into())
        })?;
        let key = match label {
            "PRIVATE KEY" => rsa::PrivateKey::from_pkcs8_pem(block).map_err(|e| match e {
                rsa::pkcs8::Error::PublicKey(rsa::pkcs8::spki::Error::OidUnknown { .. }) => {
                    private_error(NOT_RSA.into())
                }
                e => private_error(format!("not an RSA PKCS#8 private key: {e}")),
            })?,
            "EC PRIVATE KEY" => return Err(private_error(NOT_RSA.into())),
            "RSA PRIVATE KEY" => rsa::PrivateKey::from_pkcs1_pem(block)
                .map_err(|e| private_error(format!("not a PKCS#1 RSA private key: {e}")))?,
            "ENCRYPTED PRIVATE KEY" => {
                return Err(private_error(
                    "the private key is passphrase-protected: hand tosskey the decrypted key through a pipe, never a plaintext file (--private-key <(openssl pkey -in KEY))".into(),
                ))
            }
            "OPENSSH PRIVATE KEY" => {
                return Err(private_error(
                    "OpenSSH key format: convert it to PEM first (ssh-keygen -p -m PEM -f KEY)".into(),
                ))
            }
            "PUBLIC KEY" | "RSA PUBLIC KEY" => {
                return Err(private_error(
                    "this is a public key: opening an escrow file needs the private key".into(),
                ))
            }
            other => {
                return Err(private_error(format!(
                    "PEM type \"{}\" is not an RSA private key (expected PRIVATE KEY or RSA PRIVATE KEY)",
                    other.escape_debug()
                )))
            }
        };
        check_bits(key.n().bit_width())?;
        let fingerprint = spki_sha256(key.as_public_key()).map_err(private_error)?;
        Ok(EscrowPrivateKey { key, fingerprint })
    }

    /// Fingerprint of the matching public key (see [`EscrowPublicKey::fingerprint`]).
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }

    pub fn bits(&self) -> u32 {
        self.key.n().bit_width()
    }

    pub(crate) fn rsa(&self) -> &rsa::PrivateKey {
        &self.key
    }
}

impl fmt::Debug for EscrowPrivateKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EscrowPrivateKey")
            .field("bits", &self.bits())
            .field("public_sha256", &self.fingerprint)
            .finish_non_exhaustive()
    }
}

fn check_bits(bits: u32) -> Result<()> {
    if bits < MIN_RSA_BITS {
        return Err(Error::EscrowKeyTooSmall { bits });
    }
    Ok(())
}

fn spki_sha256(key: &rsa::PublicKey) -> std::result::Result<String, String> {
    let der = key
        .to_public_key_der()
        .map_err(|e| format!("cannot encode the public key: {e}"))?;
    Ok(lower_hex(&Sha256::digest(der.as_bytes())))
}

pub(crate) fn lower_hex(bytes: &[u8]) -> String {
    use std::fmt::Write;
    bytes
        .iter()
        .fold(String::with_capacity(2 * bytes.len()), |mut out, b| {
            let _ = write!(out, "{b:02x}");
            out
        })
}

/// The first `-----BEGIN X-----` … `-----END X-----` block: its label and its text. Text
/// around it (openssl's "Bag Attributes", comments) is ignored.
fn first_pem_block(text: &str) -> Option<(&str, &str)> {
    let begin = text.find("-----BEGIN ")?;
    let rest = &text[begin..];
    let label_end = rest["-----BEGIN ".len()..].find("-----")? + "-----BEGIN ".len();
    let label = &rest["-----BEGIN ".len()..label_end];
    let end_marker = format!("-----END {label}-----");
    let end = rest.find(&end_marker)? + end_marker.len();
    Some((label, &rest[..end]))
}

#[cfg(test)]
mod tests {
    use super::first_pem_block;

    #[test]
    fn pem_block_is_cut_out_of_surrounding_text() {
        let text =
            "Bag Attributes\n-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\ntrailer";
        let (label, block) = first_pem_block(text).expect("block");
        assert_eq!(label, "PUBLIC KEY");
        assert_eq!(
            block,
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----"
        );
    }

    /// An EC key pair (P-256, `openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256`)
    /// and an Ed25519 public key: refused as "not RSA", not by their algorithm's OID.
    #[test]
    fn ec_and_ed25519_keys_are_refused_as_not_rsa() {
        const EC_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MFkwEwYHKoZIzj0CAQYIKoZIzj0DAQcDQgAERD6kgB4o+lFA30cop8q6ZG9MUOGL
ljXj0iW04Jhw85QhyPEt4bUGE9Dzoo7/KTfGT8b11i+DrfQbFjQzfdK9/A==
-----END PUBLIC KEY-----
";
        const EC_PRIVATE: &str = "-----BEGIN PRIVATE KEY-----
MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgjAypa/2luWV+ICfJ
7z3nl2zZSudaCwd2fy+1c0UgkX6hRANCAAREPqSAHij6UUDfRyinyrpkb0xQ4YuW
NePSJbTgmHDzlCHI8S3htQYT0POijv8pN8ZPxvXWL4Ot9BsWNDN90r38
-----END PRIVATE KEY-----
";
        const ED25519_PUBLIC: &str = "-----BEGIN PUBLIC KEY-----
MCowBQYDK2VwAyEAr90bssYhsZFHhFca11loQTAO4Rv+S0DoSFG1Xox3A0o=
-----END PUBLIC KEY-----
";
        for pem in [EC_PUBLIC, ED25519_PUBLIC] {
            let err = super::EscrowPublicKey::from_pem(pem)
                .unwrap_err()
                .to_string();
            assert!(err.contains("tosskey needs RSA ≥ 2048 bits"), "{err}");
            assert!(!err.contains("OID"), "{err}");
        }
        for pem in [
            EC_PRIVATE,
            "-----BEGIN EC PRIVATE KEY-----\nAA==\n-----END EC PRIVATE KEY-----\n",
        ] {
            let err = super::EscrowPrivateKey::from_pem(pem)
                .unwrap_err()
                .to_string();
            assert!(err.contains("tosskey needs RSA ≥ 2048 bits"), "{err}");
            assert!(!err.contains("OID"), "{err}");
        }
    }

    #[test]
    fn missing_end_marker_is_no_block() {
        assert!(first_pem_block("-----BEGIN PUBLIC KEY-----\nAAAA\n").is_none());
        assert!(first_pem_block("-----BEGIN ").is_none());
        assert!(first_pem_block("").is_none());
    }
}
