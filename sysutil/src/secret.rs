//! Memory that holds key material outside tosskey-crypto's locked arenas: ioctl buffers and
//! table strings that carry a hex key. [`lock_in_memory`] pins their pages (best effort,
//! counted, through [`crate::mlock`]) and [`hex_encode_secret`] writes a key's hex once into
//! such memory.

use std::sync::atomic::{AtomicUsize, Ordering};

use zeroize::Zeroizing;

/// Bytes of key-carrying buffers whose `mlock` failed in this process: see
/// [`unlocked_bytes`].
static UNLOCKED_BYTES: AtomicUsize = AtomicUsize::new(0);

/// Best-effort `mlock` of the pages under `len` bytes from `start`, never unlocked: used for
/// buffers that will hold key material (a hex key, a secure ioctl buffer) so they cannot be
/// swapped out. Never calling `munlock` matters: a page may be shared with other locked data,
/// and unlocking it would undo that lock. The cost is a few locked pages until the
/// short-lived process exits. A failure (RLIMIT_MEMLOCK too small without CAP_IPC_LOCK) does
/// not stop the operation — the kernel wipes its copies and ours are zeroized either way — but
/// is counted, so the binary can say once that these bytes may have reached swap.
pub fn lock_in_memory(start: *const u8, len: usize) {
    if len == 0 {
        return;
    }
    if crate::mlock::lock_for_life(start, len).is_err() {
        UNLOCKED_BYTES.fetch_add(len, Ordering::Relaxed);
    }
}

/// How many bytes [`lock_in_memory`] could not lock in this process. Those buffers are still
/// zeroized after use, but may have been written to swap meanwhile.
pub fn unlocked_bytes() -> usize {
    UNLOCKED_BYTES.load(Ordering::Relaxed)
}

/// Lower-case hex of key material, written once into locked, zeroizing memory of exactly the
/// right capacity (no reallocation leaves a stray copy). The digits are computed without a
/// table lookup or branch indexed by secret nibbles, so cache timing says nothing about the
/// key. The one hex encoder of tosskey: tosskey-dm's hex key field and tosskey-crypto's
/// `VolumeKey::to_hex` both use it.
pub fn hex_encode_secret(bytes: &[u8]) -> Zeroizing<String> {
    let mut hex = Zeroizing::new(String::with_capacity(bytes.len() * 2));
    lock_in_memory(hex.as_ptr(), hex.capacity());
    for &byte in bytes {
        hex.push(char::from(hex_digit(byte >> 4)));
        hex.push(char::from(hex_digit(byte & 0x0f)));
    }
    hex
}

/// `nibble` (0..=15) as a lower-case hex digit, branch- and table-free.
fn hex_digit(nibble: u8) -> u8 {
    // 9 - nibble wraps to >= 0xf6 exactly when nibble >= 10; its top bit selects the
    // distance from '0'+10 to 'a' (39).
    let above_nine = (9u8.wrapping_sub(nibble) >> 7).wrapping_neg();
    b'0' + nibble + (above_nine & 39)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_digits_match_the_table() {
        for nibble in 0u8..16 {
            assert_eq!(hex_digit(nibble), b"0123456789abcdef"[usize::from(nibble)]);
        }
        let all: Vec<u8> = (0..=255).collect();
        let expected: String = all.iter().map(|b| format!("{b:02x}")).collect();
        let hex = hex_encode_secret(&all);
        assert_eq!(hex.as_str(), expected);
        assert_eq!(hex.capacity(), 512);
    }
}
