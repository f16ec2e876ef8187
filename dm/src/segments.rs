//! Key scope: one crypt mapping made of consecutive `crypt` targets (segments), each with its
//! own key, so that no key encrypts more than a chosen amount of data (IEEE 1619's key scope).
//!
//! Segment `i` covers sectors `start_i..start_i + length_i` of the mapping. Its `offset` into
//! the backing device is `offset + start_i` and its `iv_offset` is `iv_offset + start_i`, and
//! dm-crypt computes a target's IV sector as (position in the target + `iv_offset`): so every
//! sector gets exactly the IV it would get in one big `plain64` mapping — only the key changes
//! at a boundary. (With `iv_large_sectors` the shift applies to that same sum, and boundaries
//! are multiples of the crypt sector, so the IVs continue as well.) Boundaries are multiples of
//! the crypt sector size and of the array's chunk size, and segments are as equal as those
//! multiples allow: the largest segment is at most the key scope.

use crate::control::{DmControl, TableEntry};
use crate::error::Error;
use crate::target::{CryptTarget, KeyRef, TargetLine};
use crate::types::{Bytes, DmName, Sectors, SECTOR_SIZE};

/// Most segments one mapping may have: 336 TB under 1 TiB keys needs 306; a bad key scope
/// fails here rather than building an absurd table.
pub const MAX_SEGMENTS: usize = 4096;

/// One segment: a crypt target placed at `start` of the mapping.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptSegment {
    /// First sector of the segment in the mapping.
    pub start: Sectors,
    /// The segment's target (its `offset` and `iv_offset` already continue the numbering).
    pub target: CryptTarget,
}

/// The crypt table of one mapping: one segment per key, in mapping order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CryptTable {
    segments: Vec<CryptSegment>,
}

impl CryptTable {
    /// One segment: `whole` with one key (no key scope).
    pub fn single(whole: CryptTarget) -> Self {
        Self {
            segments: vec![CryptSegment {
                start: Sectors(0),
                target: whole,
            }],
        }
    }

    /// Splits `whole` (the crypt target over the whole device) into segments of at most
    /// `key_scope` bytes each, boundaries aligned to the crypt sector size and to `chunk`
    /// (the array's chunk size in sectors; `Sectors(0)` when there is none). `None` is one
    /// segment.
    pub fn split(
        whole: &CryptTarget,
        key_scope: Option<Bytes>,
        chunk: Sectors,
    ) -> Result<Self, Error> {
        let Some(scope) = key_scope else {
            return Self::from_lengths(whole, &[whole.length()]);
        };
        let crypt_sector = u64::from(whole.options().sector_size) / SECTOR_SIZE;
        let align = lcm(crypt_sector.max(1), chunk.0.max(1));
        let max = scope.0 / SECTOR_SIZE / align * align;
        if max == 0 {
            return Err(invalid(format!(
                "key scope {scope} bytes is smaller than one aligned unit ({} bytes: crypt \
                 sector and chunk); use a larger key scope",
                align * SECTOR_SIZE
            )));
        }
        let total = whole.length().0;
        let count = total.div_ceil(max);
        if count > MAX_SEGMENTS as u64 {
            return Err(invalid(format!(
                "a key scope of {scope} bytes makes {count} segments of {total} sectors, more \
                 than {MAX_SEGMENTS}; use a larger key scope"
            )));
        }
        // Equal aligned segments, the last one shorter: base <= max because
        // ceil(total / count) <= max, and (count - 1) * base <= (count - 1) * max < total.
        let base = total.div_ceil(count.max(1)).next_multiple_of(align);
        let mut lengths = vec![Sectors(base); usize::try_from(count - 1).unwrap_or(0)];
        lengths.push(Sectors(total - base * (count - 1)));
        Self::from_lengths(whole, &lengths)
    }

    /// Segments of the given lengths, in order from sector 0, that must add up to the length
    /// of `whole` (recovery rebuilds the recorded segments with this).
    pub fn from_lengths(whole: &CryptTarget, lengths: &[Sectors]) -> Result<Self, Error> {
        if lengths.is_empty() || lengths.len() > MAX_SEGMENTS {
            return Err(invalid(format!(
                "{} segments; a crypt table has 1 to {MAX_SEGMENTS}",
                lengths.len()
            )));
        }
        let mut start = 0u64;
        let mut segments = Vec::with_capacity(lengths.len());
        for length in lengths {
            let shifted = |base: Sectors| {
                base.0
                    .checked_add(start)
                    .map(Sectors)
                    .ok_or_else(|| invalid("a segment lies beyond 2^64 sectors".into()))
            };
            let target = CryptTarget::new(whole.cipher(), whole.device(), *length)?
                .with_offset(shifted(whole.offset())?)
                .with_iv_offset(shifted(whole.iv_offset())?)
                .with_options(whole.options());
            // Checks length and alignment now rather than at load time.
            target.line_elided()?;
            segments.push(CryptSegment {
                start: Sectors(start),
                target,
            });
            start = start
                .checked_add(length.0)
                .ok_or_else(|| invalid("segments add up to more than 2^64 sectors".into()))?;
        }
        if start != whole.length().0 {
            return Err(invalid(format!(
                "segments add up to {start} sectors, the mapping has {}",
                whole.length()
            )));
        }
        Ok(Self { segments })
    }

    pub fn segments(&self) -> &[CryptSegment] {
        &self.segments
    }

    /// Number of segments, which is the number of keys (at least 1).
    #[allow(
        clippy::len_without_is_empty,
        reason = "a crypt table has at least one segment"
    )]
    pub fn len(&self) -> usize {
        self.segments.len()
    }

    /// Length of the whole mapping.
    pub fn length(&self) -> Sectors {
        Sectors(self.segments.iter().map(|s| s.target.length().0).sum())
    }

    /// The largest amount of data under one key.
    pub fn largest_segment(&self) -> Sectors {
        self.segments
            .iter()
            .map(|s| s.target.length())
            .max()
            .unwrap_or_default()
    }

    /// The table lines, segment `i` keyed with `keys[i]`.
    pub fn lines(&self, keys: &[KeyRef]) -> Result<Vec<TargetLine>, Error> {
        if keys.len() != self.segments.len() {
            return Err(invalid(format!(
                "{} keys for {} segments",
                keys.len(),
                self.segments.len()
            )));
        }
        self.segments
            .iter()
            .zip(keys)
            .map(|(segment, key)| segment.target.line_at(segment.start, key))
            .collect()
    }

    /// The table lines with keys shown as [`crate::ELIDED_KEY`], for plans and dry runs.
    pub fn lines_elided(&self) -> Result<Vec<String>, Error> {
        self.segments
            .iter()
            .map(|segment| segment.target.line_elided_at(segment.start))
            .collect()
    }
}

/// Sends `key wipe` to every crypt target of suspended device `name` (the message goes to the
/// target at the given sector, so a segmented mapping needs one per segment). Returns how many
/// keys were wiped. Stops at the first failure: the caller removes the device either way.
pub fn wipe_crypt_keys(dm: &DmControl, name: &DmName) -> Result<usize, Error> {
    let crypt_starts: Vec<Sectors> = dm
        .table(name)?
        .iter()
        .filter(|entry: &&TableEntry| entry.target_type == "crypt")
        .map(|entry| entry.start)
        .collect();
    for start in &crypt_starts {
        dm.message(name, *start, b"key wipe")?;
    }
    Ok(crypt_starts.len())
}

fn invalid(reason: String) -> Error {
    Error::InvalidTarget {
        target: "crypt",
        reason,
    }
}

fn lcm(a: u64, b: u64) -> u64 {
    let (mut x, mut y) = (a, b);
    while y != 0 {
        (x, y) = (y, x % y);
    }
    a / x * b
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::CryptOptions;
    use crate::types::DevId;

    const TIB: u64 = 1 << 40;

    fn whole(length: u64) -> CryptTarget {
        CryptTarget::new("twofish-xts-plain64", DevId::new(9, 0), Sectors(length))
            .unwrap()
            .with_offset(Sectors(2048))
            .with_iv_offset(Sectors(16))
            .with_options(CryptOptions {
                sector_size: 4096,
                ..CryptOptions::default()
            })
    }

    #[test]
    fn sixty_tib_under_one_tib_keys_is_sixty_segments_continuing_offsets_and_ivs() {
        // 8 x 7.5 TiB in raid0 with 512 KiB chunks.
        let total = 60 * TIB / 512;
        let table = CryptTable::split(&whole(total), Some(Bytes(TIB)), Sectors(1024)).unwrap();
        assert_eq!(table.len(), 60);
        assert_eq!(table.length(), Sectors(total));
        assert_eq!(table.largest_segment(), Sectors(TIB / 512));
        let mut expected_start = 0;
        for segment in table.segments() {
            assert_eq!(segment.start, Sectors(expected_start));
            assert_eq!(segment.target.offset(), Sectors(2048 + expected_start));
            assert_eq!(segment.target.iv_offset(), Sectors(16 + expected_start));
            assert_eq!(segment.start.0 % 1024, 0);
            expected_start += segment.target.length().0;
        }
        let t = TIB / 512;
        assert_eq!(
            table.lines_elided().unwrap()[1],
            format!(
                "{t} {t} crypt twofish-xts-plain64 <key-elided> {} 9:0 {} 1 sector_size:4096",
                16 + t,
                2048 + t
            )
        );
    }

    #[test]
    fn segments_are_balanced_aligned_and_never_above_the_scope() {
        // A size that is no multiple of anything: 3 TiB + 7 x 4 KiB.
        let total = 3 * TIB / 512 + 7 * 8;
        let table = CryptTable::split(&whole(total), Some(Bytes(TIB)), Sectors(1024)).unwrap();
        assert_eq!(table.len(), 4);
        assert!(table.largest_segment().0 <= TIB / 512);
        let lengths: Vec<u64> = table
            .segments()
            .iter()
            .map(|s| s.target.length().0)
            .collect();
        assert_eq!(lengths.iter().sum::<u64>(), total);
        for length in &lengths[..3] {
            assert_eq!(length % 1024, 0);
            assert_eq!(*length, lengths[0]);
        }
        assert!(lengths[3] > 0 && lengths[3] <= lengths[0]);
        // A chunk that is not a power of two (12 KiB) still bounds every segment.
        let odd = CryptTable::split(&whole(total), Some(Bytes(TIB)), Sectors(24)).unwrap();
        assert!(odd.segments()[1..].iter().all(|s| s.start.0 % 24 == 0));
    }

    #[test]
    fn no_scope_or_a_large_one_is_one_segment_identical_to_the_whole_target() {
        let target = whole(1 << 20);
        let none = CryptTable::split(&target, None, Sectors(1024)).unwrap();
        assert_eq!(none, CryptTable::single(target.clone()));
        let large = CryptTable::split(&target, Some(Bytes(TIB)), Sectors(1024)).unwrap();
        assert_eq!(large.segments()[0].target, target);
        assert_eq!(
            large.lines_elided().unwrap(),
            [target.line_elided().unwrap()]
        );
    }

    #[test]
    fn impossible_scopes_and_lengths_are_refused() {
        let err = CryptTable::split(&whole(1 << 20), Some(Bytes(100_000)), Sectors(1024))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("smaller than one aligned unit (524288 bytes"),
            "{err}"
        );
        let err = CryptTable::split(&whole(1 << 30), Some(Bytes(1 << 20)), Sectors(0))
            .unwrap_err()
            .to_string();
        assert!(err.contains("more than 4096"), "{err}");
        assert!(CryptTable::from_lengths(&whole(64), &[Sectors(32), Sectors(16)]).is_err());
        // A boundary inside a 4 KiB crypt sector.
        assert!(CryptTable::from_lengths(&whole(64), &[Sectors(36), Sectors(28)]).is_err());
        assert!(CryptTable::from_lengths(&whole(64), &[]).is_err());
    }

    #[test]
    fn keyed_lines_need_one_key_per_segment() {
        let table = CryptTable::split(&whole(64), Some(Bytes(16 * 512)), Sectors(0)).unwrap();
        assert_eq!(table.len(), 4);
        let keyring = |i: usize| KeyRef::Keyring {
            bytes: 64,
            description: format!("tosskey:t#{i}"),
        };
        let keys: Vec<KeyRef> = (0..4).map(keyring).collect();
        let lines = table.lines(&keys).unwrap();
        assert_eq!(
            lines[3].display_elided(),
            "48 16 crypt twofish-xts-plain64 :64:logon:tosskey:t#3 64 9:0 2096 1 sector_size:4096"
        );
        assert!(table.lines(&keys[..3]).is_err());
    }

    #[test]
    fn lcm_of_powers_of_two_and_odd_sizes() {
        assert_eq!(lcm(8, 1024), 1024);
        assert_eq!(lcm(8, 24), 24);
        assert_eq!(lcm(8, 12), 24);
        assert_eq!(lcm(1, 1), 1);
    }
}
