//! Digests and HMACs in every bank's algorithm.
//!
//! A PCR bank is extended with a digest of its own algorithm, so a measurement is computed
//! once per allocated bank: SHA-1 for the sha1 bank, SHA-256 for sha256, and so on — as
//! systemd does for its volume-key measurement (an HMAC in the bank's hash).
//!
//! # Key hygiene of the HMAC
//!
//! HMAC(K, m) = H((K0 ^ opad) || H((K0 ^ ipad) || m)) (RFC 2104), K0 being K padded with zeros
//! to the hash's block size. The two padded blocks are as secret as the key (XOR with a
//! constant is no protection), so they are built in one locked page that is zeroized before it
//! is unlocked, not in the `hmac` crate's stack temporaries (which it does not wipe). The
//! hash state that absorbs them is as secret as they are: it lives in a locked page of its
//! own (`LockedHasher`) and is only ever updated in place (`update`, `finalize_reset` take
//! `&mut self`), never moved by value through stack temporaries as `chain_update` would;
//! it is wiped there before the page is unlocked (the `zeroize` feature of `sha1`/`sha2`,
//! required by the bound). The blocks are a whole number of hash blocks, so the hasher
//! compresses them straight from their page instead of buffering a copy. The inner digest
//! is wiped after use. What remains outside this crate's control is the compression
//! function's own stack frame, which is wiped by nothing and locked by nothing (the binary
//! locks the pages that hold secrets, not its stack).

use sha1::Sha1;
use sha2::digest::FixedOutputReset;
use sha2::{Digest, Sha256, Sha384, Sha512};
use tosskey_sysutil::mlock::{page_size, MlockGuard};
use zeroize::{Zeroize, ZeroizeOnDrop};

use crate::error::{Error, Result};
use crate::proto::HashAlg;

/// The largest hash block size among the supported algorithms (SHA-384/512: 128 bytes).
const MAX_BLOCK: usize = 128;

/// Block size in bytes of `alg`'s compression function (FIPS 180-4).
fn block_len(alg: HashAlg) -> usize {
    match alg {
        HashAlg::Sha1 | HashAlg::Sha256 => 64,
        HashAlg::Sha384 | HashAlg::Sha512 => 128,
    }
}

/// The plain digest of `data` in `alg`.
pub fn digest(alg: HashAlg, data: &[u8]) -> Vec<u8> {
    match alg {
        HashAlg::Sha1 => Sha1::digest(data).to_vec(),
        HashAlg::Sha256 => Sha256::digest(data).to_vec(),
        HashAlg::Sha384 => Sha384::digest(data).to_vec(),
        HashAlg::Sha512 => Sha512::digest(data).to_vec(),
    }
}

/// A PCR extend in software: `H(old || digest)` (Part 1 §17.5: PCR_Extend).
pub fn extend(alg: HashAlg, old: &[u8], digest: &[u8]) -> Vec<u8> {
    let mut data = Vec::with_capacity(old.len() + digest.len());
    data.extend_from_slice(old);
    data.extend_from_slice(digest);
    self::digest(alg, &data)
}

/// HMAC of `message` keyed with `key` in `alg`. Keys up to the block size only (volume keys
/// are 32 or 64 bytes): a longer key would be hashed first into an unlocked digest buffer.
pub fn hmac(alg: HashAlg, key: &[u8], message: &[u8]) -> Result<Vec<u8>> {
    let block = block_len(alg);
    if key.len() > block {
        return Err(Error::KeyTooLong {
            len: key.len(),
            alg,
            max: block,
        });
    }
    let mut pads = LockedPads::new()?;
    let (inner_pad, outer_pad) = pads.fill(key, block);
    match alg {
        HashAlg::Sha1 => hmac_with(
            &mut LockedHasher::<Sha1>::new()?,
            inner_pad,
            outer_pad,
            message,
        ),
        HashAlg::Sha256 => hmac_with(
            &mut LockedHasher::<Sha256>::new()?,
            inner_pad,
            outer_pad,
            message,
        ),
        HashAlg::Sha384 => hmac_with(
            &mut LockedHasher::<Sha384>::new()?,
            inner_pad,
            outer_pad,
            message,
        ),
        HashAlg::Sha512 => hmac_with(
            &mut LockedHasher::<Sha512>::new()?,
            inner_pad,
            outer_pad,
            message,
        ),
    }
}

fn hmac_with<D: Digest + FixedOutputReset + ZeroizeOnDrop>(
    hasher: &mut LockedHasher<D>,
    inner_pad: &[u8],
    outer_pad: &[u8],
    message: &[u8],
) -> Result<Vec<u8>> {
    let state = hasher.state();
    Digest::update(state, inner_pad);
    Digest::update(state, message);
    let mut inner = Digest::finalize_reset(state);
    Digest::update(state, outer_pad);
    Digest::update(state, &inner);
    let mac = Digest::finalize_reset(state).to_vec();
    let inner_bytes: &mut [u8] = &mut inner;
    inner_bytes.zeroize();
    Ok(mac)
}

/// Page alignment makes the allocation own whole pages, so locking and unlocking it cannot
/// affect any other allocation (munlock of a shared page would unlock someone else's key).
#[repr(C, align(4096))]
struct PageAligned<T>(T);

/// A hash state in a locked page of its own, wiped in place before the page is unlocked.
struct LockedHasher<D: ZeroizeOnDrop> {
    // Field order is drop order: `Drop` wipes the state, then the guard unlocks, then the
    // page is freed.
    _lock: MlockGuard,
    hasher: Box<PageAligned<Option<D>>>,
}

impl<D: Digest + ZeroizeOnDrop> LockedHasher<D> {
    fn new() -> Result<Self> {
        // Locked before the state absorbs anything: a fresh state holds only the
        // algorithm's public initial values.
        let hasher = Box::new(PageAligned(Some(D::new())));
        let lock = MlockGuard::lock(&*hasher).map_err(|source| Error::LockMemory { source })?;
        Ok(LockedHasher {
            _lock: lock,
            hasher,
        })
    }

    fn state(&mut self) -> &mut D {
        self.hasher.0.as_mut().expect("the state lives until drop")
    }
}

impl<D: ZeroizeOnDrop> Drop for LockedHasher<D> {
    fn drop(&mut self) {
        // Dropped in place, inside the locked page: ZeroizeOnDrop wipes it there.
        self.hasher.0 = None;
    }
}

/// `K0 ^ ipad` and `K0 ^ opad`, side by side in one locked page.
struct LockedPads {
    // Drop order is declaration order, after `Drop::drop` has zeroized `storage`: unlock
    // first, then free.
    _lock: MlockGuard,
    /// Two pages; the pads live at the start of the page-aligned page inside, which no other
    /// allocation shares (munlock works on whole pages).
    storage: Vec<u8>,
    offset: usize,
}

impl LockedPads {
    fn new() -> Result<LockedPads> {
        let page = page_size();
        let storage = vec![0u8; 2 * page];
        let offset = (page - storage.as_ptr().addr() % page) % page;
        let lock = MlockGuard::lock(&storage[offset..offset + page])
            .map_err(|source| Error::LockMemory { source })?;
        Ok(LockedPads {
            _lock: lock,
            storage,
            offset,
        })
    }

    /// Writes the key, zero-padded to `block` bytes, XORed with 0x36 (ipad) and 0x5c (opad).
    fn fill(&mut self, key: &[u8], block: usize) -> (&[u8], &[u8]) {
        let pads = &mut self.storage[self.offset..self.offset + 2 * MAX_BLOCK];
        let (inner, outer) = pads.split_at_mut(MAX_BLOCK);
        for index in 0..block {
            let byte = key.get(index).copied().unwrap_or(0);
            inner[index] = byte ^ 0x36;
            outer[index] = byte ^ 0x5c;
        }
        (&inner[..block], &outer[..block])
    }
}

impl Drop for LockedPads {
    fn drop(&mut self) {
        self.storage.zeroize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hex(bytes: &[u8]) -> String {
        hex::encode(bytes)
    }

    // RFC 4231 test case 2 ("Jefe"), and the RFC 2202 SHA-1 case 2 with the same inputs.
    #[test]
    fn hmac_matches_rfc_4231_and_2202() {
        let message = b"what do ya want for nothing?";
        assert_eq!(
            hex(&hmac(HashAlg::Sha256, b"Jefe", message).unwrap()),
            "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843"
        );
        assert_eq!(
            hex(&hmac(HashAlg::Sha384, b"Jefe", message).unwrap()),
            "af45d2e376484031617f78d2b58a6b1b9c7ef464f5a01b47e42ec3736322445e\
             8e2240ca5e69e2c78b3239ecfab21649"
        );
        assert_eq!(
            hex(&hmac(HashAlg::Sha512, b"Jefe", message).unwrap()),
            "164b7a7bfcf819e2e395fbe73b56e0a387bd64222e831fd610270cd7ea250554\
             9758bf75c05a994a6d034f65f8f0e6fdcaeab1a34d4a6b4b636e070a38bce737"
        );
        assert_eq!(
            hex(&hmac(HashAlg::Sha1, b"Jefe", message).unwrap()),
            "effcdf6ae5eb2fa2d27416d5f184df9c259a7c79"
        );
    }

    // RFC 4231 test case 1: a 20-byte key of 0x0b, and case 6's 131-byte key is refused.
    #[test]
    fn hmac_handles_binary_keys_and_refuses_keys_longer_than_a_block() {
        assert_eq!(
            hex(&hmac(HashAlg::Sha256, &[0x0b; 20], b"Hi There").unwrap()),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let err = hmac(HashAlg::Sha256, &[0xaa; 131], b"x").unwrap_err();
        assert!(
            matches!(
                err,
                Error::KeyTooLong {
                    len: 131,
                    max: 64,
                    ..
                }
            ),
            "{err}"
        );
        // A 64-byte volume key fits SHA-1's and SHA-256's 64-byte block exactly.
        assert_eq!(hmac(HashAlg::Sha1, &[7; 64], b"x").unwrap().len(), 20);
    }

    /// The `Locked:` size of the mapping of this process that holds `address`, in KiB
    /// (`/proc/self/smaps`).
    fn locked_kib_of_mapping(address: usize) -> usize {
        let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
        let mut inside = false;
        for line in smaps.lines() {
            let first = line.split_whitespace().next().unwrap_or_default();
            if let Some((start, end)) = first.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    inside = (start..end).contains(&address);
                    continue;
                }
            }
            if inside {
                if let Some(kib) = line.strip_prefix("Locked:") {
                    return kib.trim().trim_end_matches("kB").trim().parse().unwrap();
                }
            }
        }
        panic!("no mapping holds {address:#x}")
    }

    /// What a test can see of the hash state's hygiene: every bank's hasher is a type that
    /// wipes itself on drop (this does not compile otherwise), and it sits in a locked page.
    #[test]
    fn every_hmac_state_is_locked_and_wiped_on_drop() {
        fn locked<D: Digest + ZeroizeOnDrop>() {
            let mut hasher = LockedHasher::<D>::new().unwrap();
            let page = page_size();
            let address = std::ptr::from_ref(&*hasher.hasher).addr();
            assert_eq!(address % page, 0, "the state shares its page");
            assert!(
                locked_kib_of_mapping(address) >= page / 1024,
                "the state's page is not locked"
            );
            Digest::update(hasher.state(), b"key-derived");
        }
        locked::<Sha1>();
        locked::<Sha256>();
        locked::<Sha384>();
        locked::<Sha512>();
    }

    #[test]
    fn extend_is_hash_of_old_value_and_digest() {
        // sha256(32 zero bytes || sha256("")), the value PCR n holds after one extend of the
        // empty-string digest, as tpm2_pcrextend and every event-log replayer compute it.
        // python3 -c 'import hashlib; e=hashlib.sha256(b"").digest();
        //             print(hashlib.sha256(bytes(32)+e).hexdigest())'
        let empty = digest(HashAlg::Sha256, b"");
        assert_eq!(
            hex(&empty),
            "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"
        );
        assert_eq!(
            hex(&extend(HashAlg::Sha256, &[0; 32], &empty)),
            "1c9ecec90e28d2461650418635878a5c91e49f47586ecf75f2b0cbb94e897112"
        );
    }
}
