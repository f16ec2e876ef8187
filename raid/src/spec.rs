//! What to build: level, chunk, members — validated before any ioctl — and the geometry
//! the kernel will produce from it.

use std::collections::HashSet;
use std::fmt;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::path::{Path, PathBuf};

use crate::error::{RaidError, Result};
use crate::ioctl::LEVEL_LINEAR;
use crate::sysfs::{MdSysfs as _, SystemRoot};

/// A size in bytes: tosskey-sysutil's, shared with every tosskey crate.
pub use tosskey_sysutil::Bytes;

/// A block device number, `MAJOR:MINOR` like sysfs and dm tables: the one type all tosskey
/// crates share.
pub use tosskey_sysutil::DevId;

/// The md personalities tosskey builds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Level {
    /// Striping over all members (the default).
    Raid0,
    /// Mirroring.
    Raid1,
    /// Striped mirrors: md's near layout with [`RAID10_NEAR_COPIES`] copies of every chunk
    /// on consecutive members (mdadm's default `n2`).
    Raid10,
    /// Concatenation.
    Linear,
}

/// Copies of every chunk a raid10 array keeps (md's near layout, mdadm's `n2`).
pub const RAID10_NEAR_COPIES: u64 = 2;

/// `mdu_array_info_t.layout` of raid10 `n2`: near copies in the low byte, far copies (1:
/// none) in the next; the offset and far-set bits stay clear.
pub const RAID10_NEAR2_LAYOUT: i32 = 0x102;

impl Level {
    /// The value of `mdu_array_info_t.level`.
    pub const fn kernel_level(self) -> i32 {
        match self {
            Level::Raid0 => 0,
            Level::Raid1 => 1,
            Level::Raid10 => 10,
            Level::Linear => LEVEL_LINEAR,
        }
    }

    /// The inverse of [`Level::kernel_level`].
    pub fn from_kernel_level(level: i32) -> Option<Level> {
        match level {
            0 => Some(Level::Raid0),
            1 => Some(Level::Raid1),
            10 => Some(Level::Raid10),
            LEVEL_LINEAR => Some(Level::Linear),
            _ => None,
        }
    }

    /// The name sysfs (`md/level`) and `/proc/mdstat` use.
    pub const fn name(self) -> &'static str {
        match self {
            Level::Raid0 => "raid0",
            Level::Raid1 => "raid1",
            Level::Raid10 => "raid10",
            Level::Linear => "linear",
        }
    }

    /// True for the levels that keep every byte on more than one member.
    pub const fn is_redundant(self) -> bool {
        matches!(self, Level::Raid1 | Level::Raid10)
    }

    /// True for the levels that lay data out in chunks (and need a valid one).
    pub const fn is_chunked(self) -> bool {
        matches!(self, Level::Raid0 | Level::Raid10)
    }

    /// The inverse of [`Level::name`].
    pub fn from_name(name: &str) -> Option<Level> {
        [Level::Raid0, Level::Raid1, Level::Raid10, Level::Linear]
            .into_iter()
            .find(|level| level.name() == name)
    }
}

impl fmt::Display for Level {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One member device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Member {
    /// Its node, e.g. `/dev/nvme1n1`.
    pub path: PathBuf,
    /// Its device number (what ADD_NEW_DISK takes).
    pub dev: DevId,
    /// Its size in bytes.
    pub size_bytes: u64,
}

impl Member {
    /// Looks `path` up: it must be a block device; the size comes from sysfs.
    pub fn probe(path: &Path) -> Result<Member> {
        Member::probe_in(&SystemRoot::host(), path)
    }

    /// [`Member::probe`] with sysfs under `system`'s root.
    pub fn probe_in(system: &SystemRoot, path: &Path) -> Result<Member> {
        let metadata = std::fs::metadata(path).map_err(|source| RaidError::Io {
            action: "stat",
            path: path.to_path_buf(),
            source,
        })?;
        if !metadata.file_type().is_block_device() {
            return Err(RaidError::InvalidSpec {
                problem: format!(
                    "{} is not a block device; give whole disks or partitions",
                    path.display()
                ),
            });
        }
        let dev = DevId::from_dev_t(metadata.rdev());
        Ok(Member {
            path: path.to_path_buf(),
            dev,
            size_bytes: system.device_size_bytes(dev)?,
        })
    }
}

/// The default chunk: 512 KiB, mdadm's default since 3.1.
pub const DEFAULT_CHUNK: Bytes = Bytes::kib(512);
/// The smallest chunk accepted (a page; md requires at least that for raid0).
pub const MIN_CHUNK: Bytes = Bytes::kib(4);
/// The largest chunk accepted (`chunk_size` is a C int in bytes).
pub const MAX_CHUNK: Bytes = Bytes::mib(1024);
/// Members smaller than this are refused: nothing useful fits, and it catches a wrong
/// device (an empty loop device, a tiny partition) before it is claimed.
pub const MIN_MEMBER_BYTES: u64 = 1 << 20;
/// Longest name hint: `md_` + name must fit the kernel's 32-byte disk name with its NUL.
pub const MAX_NAME_HINT_LEN: usize = 28;

/// Everything needed to build a non-persistent array.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArraySpec {
    /// The personality.
    pub level: Level,
    /// Stripe chunk, raid0 and raid10 only (ignored for raid1 and linear).
    pub chunk: Bytes,
    /// Members in slot order (slot 0 first); the order defines the data layout.
    pub members: Vec<Member>,
    /// `Some(name)`: create the named array `md_<name>` (`/dev/md_<name>`, listed as such
    /// in `/proc/mdstat`) instead of the first free `mdN` from 127 down. The name lives
    /// only in the kernel, nothing is written to disk, and it is how a later run
    /// recognises the array as its own (see the crate docs).
    pub name_hint: Option<String>,
}

impl ArraySpec {
    /// An array of `level` over `members` with the default chunk and no name.
    pub fn new(level: Level, members: Vec<Member>) -> ArraySpec {
        ArraySpec {
            level,
            chunk: DEFAULT_CHUNK,
            members,
            name_hint: None,
        }
    }

    /// Checks everything that can be checked without touching the system.
    pub fn validate(&self) -> Result<()> {
        let invalid = |problem: String| Err(RaidError::InvalidSpec { problem });
        if self.members.len() < 2 {
            let advice = if self.level.is_redundant() {
                format!("a {} mirror needs at least 2 members; add a device or use a single device without RAID", self.level)
            } else {
                "an array needs at least 2 members; use a single device without RAID".to_owned()
            };
            return invalid(format!("{} member(s) given: {advice}", self.members.len()));
        }
        if i32::try_from(self.members.len()).is_err() {
            return invalid(format!("{} members are too many", self.members.len()));
        }
        if self.level.is_chunked()
            && (!self.chunk.0.is_power_of_two() || self.chunk < MIN_CHUNK || self.chunk > MAX_CHUNK)
        {
            return invalid(format!(
                "chunk {} is not a power of two between {} and {}; use e.g. 512 KiB",
                self.chunk.human(),
                MIN_CHUNK.human(),
                MAX_CHUNK.human()
            ));
        }
        let mut paths = HashSet::new();
        let mut devs = HashSet::new();
        for member in &self.members {
            if !paths.insert(&member.path) || !devs.insert(member.dev) {
                return invalid(format!(
                    "{} ({}) is given twice; list each device once",
                    member.path.display(),
                    member.dev
                ));
            }
            let minimum = match self.level {
                Level::Raid0 | Level::Raid10 => MIN_MEMBER_BYTES.max(self.chunk.0),
                Level::Raid1 | Level::Linear => MIN_MEMBER_BYTES,
            };
            if member.size_bytes < minimum {
                return invalid(format!(
                    "{} has {} bytes, less than the minimum {}; choose a bigger device",
                    member.path.display(),
                    member.size_bytes,
                    Bytes(minimum).human()
                ));
            }
        }
        if let Some(name) = &self.name_hint {
            validate_name_hint(name)?;
        }
        Ok(())
    }

    /// Bytes of each member the array uses: for raid0 the smallest member rounded down to
    /// the chunk (every member is cut to it, see the crate docs), for raid1 the smallest
    /// member, for raid10 the smallest member rounded down to the chunk, and to an even
    /// number of chunks over an odd number of members (so the copies fill whole rows and
    /// a dm `raid` table of the same length describes the same array); `None` for linear,
    /// which uses every member whole.
    pub fn used_bytes_per_member(&self) -> Option<u64> {
        let smallest = self
            .members
            .iter()
            .map(|m| whole_sectors(m.size_bytes))
            .min()?;
        match self.level {
            Level::Raid0 => Some(smallest / self.chunk.0 * self.chunk.0),
            Level::Raid1 => Some(smallest),
            Level::Raid10 => Some(raid10_used_bytes(
                self.chunk.0,
                self.members.len(),
                smallest,
            )),
            Level::Linear => None,
        }
    }

    /// The size of the array the kernel will build from this spec.
    pub fn expected_size_bytes(&self) -> u64 {
        let count = self.members.len() as u64;
        match (self.level, self.used_bytes_per_member()) {
            (Level::Raid0, Some(used)) => used * count,
            (Level::Raid1, Some(used)) => used,
            (Level::Raid10, Some(used)) => used * count / RAID10_NEAR_COPIES,
            _ => self
                .members
                .iter()
                .map(|m| whole_sectors(m.size_bytes))
                .sum(),
        }
    }

    /// True when the members must be cut to a common size before RUN_ARRAY: raid0 over
    /// members whose chunk-rounded sizes differ (the kernel would make it multi-zone), and
    /// raid10 over an odd number of members holding an odd number of chunks each (the
    /// kernel would use half a row).
    pub fn needs_truncation(&self) -> bool {
        match (self.level, self.used_bytes_per_member()) {
            (Level::Raid0, _) => {
                self.members
                    .iter()
                    .map(|m| m.size_bytes / self.chunk.0)
                    .collect::<HashSet<_>>()
                    .len()
                    > 1
            }
            (Level::Raid10, Some(used)) => self
                .members
                .iter()
                .map(|m| m.size_bytes / self.chunk.0 * self.chunk.0)
                .min()
                .is_some_and(|smallest| smallest > used),
            _ => false,
        }
    }

    /// Where the copies of array byte `offset` lie: `(member index, byte offset on that
    /// member)` for every copy, in md's order. `None` for the levels without copies
    /// (raid0, linear). Verification uses it to read each mirror directly, since md may
    /// serve a read of a never-written sector from either.
    pub fn copies_of(&self, offset: u64) -> Option<Vec<(usize, u64)>> {
        let count = self.members.len() as u64;
        match self.level {
            Level::Raid1 => Some((0..self.members.len()).map(|m| (m, offset)).collect()),
            Level::Raid10 => {
                // md's near layout: chunk c takes the consecutive slots c·copies…, slot s
                // being member s mod n at row s / n.
                let chunk = self.chunk.0;
                let first_slot = offset / chunk * RAID10_NEAR_COPIES;
                Some(
                    (first_slot..first_slot + RAID10_NEAR_COPIES)
                        .map(|slot| {
                            let member = usize::try_from(slot % count).expect("slot < members");
                            (member, slot / count * chunk + offset % chunk)
                        })
                        .collect(),
                )
            }
            Level::Raid0 | Level::Linear => None,
        }
    }

    /// The chunk written to `mdu_array_info_t.chunk_size`: 0 for raid1 and linear (so
    /// linear does not round its members down to a chunk multiple).
    pub fn kernel_chunk_bytes(&self) -> u64 {
        match self.level {
            Level::Raid0 | Level::Raid10 => self.chunk.0,
            Level::Raid1 | Level::Linear => 0,
        }
    }

    /// The value written to `mdu_array_info_t.layout`: [`RAID10_NEAR2_LAYOUT`] for raid10,
    /// 0 (md's only layout, or ignored) for the others.
    pub fn kernel_layout(&self) -> i32 {
        match self.level {
            Level::Raid10 => RAID10_NEAR2_LAYOUT,
            Level::Raid0 | Level::Raid1 | Level::Linear => 0,
        }
    }

    /// The kernel name the array will get when it is named: `md_<name>`.
    pub fn kernel_name_from_hint(&self) -> Option<String> {
        self.name_hint.as_ref().map(|name| format!("md_{name}"))
    }
}

/// Bytes of each member a raid10 array over `count` members uses when the smallest has
/// `smallest` bytes: whole chunks, an even number of them over an odd member count.
fn raid10_used_bytes(chunk: u64, count: usize, smallest: u64) -> u64 {
    let mut chunks = smallest / chunk;
    if count % 2 == 1 {
        chunks -= chunks % RAID10_NEAR_COPIES;
    }
    chunks * chunk
}

/// The size of a raid10 array of `chunk` over members of `member_bytes` (what
/// [`ArraySpec::expected_size_bytes`] says for it), for planning without probed members.
pub fn raid10_array_bytes(chunk: u64, member_bytes: &[u64]) -> u64 {
    let smallest = member_bytes
        .iter()
        .map(|b| whole_sectors(*b))
        .min()
        .unwrap_or(0);
    let count = member_bytes.len();
    raid10_used_bytes(chunk, count, smallest) * count as u64 / RAID10_NEAR_COPIES
}

fn whole_sectors(bytes: u64) -> u64 {
    bytes / 512 * 512
}

fn validate_name_hint(name: &str) -> Result<()> {
    let valid_chars = name
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-');
    if name.is_empty() || name.len() > MAX_NAME_HINT_LEN || !valid_chars {
        return Err(RaidError::InvalidSpec {
            problem: format!(
                "array name {name:?} must be 1-{MAX_NAME_HINT_LEN} letters, digits, '_' or '-'"
            ),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(index: u32, size_bytes: u64) -> Member {
        Member {
            path: PathBuf::from(format!("/dev/loop{index}")),
            dev: DevId {
                major: 7,
                minor: index,
            },
            size_bytes,
        }
    }

    fn problem(spec: &ArraySpec) -> String {
        match spec.validate() {
            Err(RaidError::InvalidSpec { problem }) => problem,
            other => panic!("expected InvalidSpec, got {other:?}"),
        }
    }

    #[test]
    fn raid1_with_one_member_is_refused_with_advice() {
        let spec = ArraySpec::new(Level::Raid1, vec![member(0, 64 << 20)]);
        assert!(problem(&spec).contains("raid1 mirror needs at least 2"));
        let spec = ArraySpec::new(Level::Raid10, vec![member(0, 64 << 20)]);
        assert!(problem(&spec).contains("raid10 mirror needs at least 2"));
        let spec = ArraySpec::new(Level::Raid0, vec![member(0, 64 << 20)]);
        assert!(problem(&spec).contains("at least 2 members"));
    }

    #[test]
    fn duplicate_members_are_refused() {
        let spec = ArraySpec::new(Level::Raid0, vec![member(0, 64 << 20), member(0, 64 << 20)]);
        assert!(problem(&spec).contains("given twice"));
        // Same device number behind two different paths.
        let mut alias = member(1, 64 << 20);
        alias.path = PathBuf::from("/dev/disk/by-id/alias");
        let spec = ArraySpec::new(Level::Raid0, vec![member(1, 64 << 20), alias]);
        assert!(problem(&spec).contains("given twice"));
    }

    #[test]
    fn small_members_and_bad_chunks_are_refused() {
        let spec = ArraySpec::new(
            Level::Linear,
            vec![member(0, 64 << 20), member(1, 512 << 10)],
        );
        assert!(problem(&spec).contains("less than the minimum"));
        let mut spec = ArraySpec::new(Level::Raid0, vec![member(0, 64 << 20), member(1, 64 << 20)]);
        spec.chunk = Bytes(3 << 10);
        assert!(problem(&spec).contains("power of two"));
        spec.chunk = Bytes(2 << 10);
        assert!(problem(&spec).contains("power of two"));
        spec.chunk = Bytes::mib(2048);
        assert!(problem(&spec).contains("power of two"));
        // A raid0 member must hold at least one chunk.
        spec.chunk = Bytes::mib(64);
        spec.members[1].size_bytes = 32 << 20;
        assert!(problem(&spec).contains("less than the minimum 64 MiB"));
        // raid1 ignores the chunk entirely.
        spec.level = Level::Raid1;
        spec.chunk = Bytes(3);
        spec.validate().unwrap();
    }

    #[test]
    fn name_hints_must_fit_the_kernel_disk_name() {
        let mut spec = ArraySpec::new(Level::Raid0, vec![member(0, 64 << 20), member(1, 64 << 20)]);
        spec.name_hint = Some("tosskey_data".to_owned());
        spec.validate().unwrap();
        assert_eq!(
            spec.kernel_name_from_hint().as_deref(),
            Some("md_tosskey_data")
        );
        spec.name_hint = Some("x".repeat(MAX_NAME_HINT_LEN));
        spec.validate().unwrap();
        for bad in [
            "",
            "has space",
            "slash/",
            &"x".repeat(MAX_NAME_HINT_LEN + 1),
        ] {
            spec.name_hint = Some(bad.to_owned());
            assert!(problem(&spec).contains("array name"), "{bad:?}");
        }
    }

    #[test]
    fn geometry_follows_the_level() {
        let chunk = 512 << 10;
        let small = (100 << 20) + 4096;
        let big = 200 << 20;
        let members = vec![member(0, small), member(1, big)];
        let raid0 = ArraySpec::new(Level::Raid0, members.clone());
        assert_eq!(raid0.used_bytes_per_member(), Some(100 << 20));
        assert_eq!(raid0.expected_size_bytes(), 2 * (100 << 20));
        assert!(raid0.needs_truncation());
        assert_eq!(raid0.kernel_chunk_bytes(), chunk);
        let raid1 = ArraySpec::new(Level::Raid1, members.clone());
        assert_eq!(raid1.expected_size_bytes(), small);
        assert!(!raid1.needs_truncation());
        assert_eq!(raid1.kernel_chunk_bytes(), 0);
        let linear = ArraySpec::new(Level::Linear, members);
        assert_eq!(linear.used_bytes_per_member(), None);
        assert_eq!(linear.expected_size_bytes(), small + big);
        assert_eq!(linear.kernel_chunk_bytes(), 0);
    }

    #[test]
    fn raid10_keeps_two_copies_of_every_chunk() {
        let chunk = 64 << 10;
        let mut four = ArraySpec::new(Level::Raid10, (0..4).map(|i| member(i, 4 << 20)).collect());
        four.chunk = Bytes(chunk);
        assert_eq!(four.kernel_layout(), RAID10_NEAR2_LAYOUT);
        assert_eq!(four.kernel_chunk_bytes(), chunk);
        assert_eq!(four.expected_size_bytes(), 2 * (4 << 20));
        assert!(!four.needs_truncation());
        // Chunk 0 on members 0 and 1, chunk 1 on 2 and 3, chunk 2 one row down on 0 and 1.
        assert_eq!(four.copies_of(100), Some(vec![(0, 100), (1, 100)]));
        assert_eq!(four.copies_of(chunk + 5), Some(vec![(2, 5), (3, 5)]));
        assert_eq!(
            four.copies_of(2 * chunk + 7),
            Some(vec![(0, chunk + 7), (1, chunk + 7)])
        );
        // Three members: chunk 1 wraps from the last member to the first of the next row.
        let mut three = ArraySpec::new(
            Level::Raid10,
            (0..3).map(|i| member(i, 5 * chunk + 4096)).collect(),
        );
        three.chunk = Bytes(chunk);
        assert_eq!(three.copies_of(chunk), Some(vec![(2, 0), (0, chunk)]));
        // 5 chunks each over an odd member count: cut to 4, 6 chunks of array.
        assert_eq!(three.used_bytes_per_member(), Some(4 * chunk));
        assert_eq!(three.expected_size_bytes(), 6 * chunk);
        assert!(three.needs_truncation());
        let raid1 = ArraySpec::new(Level::Raid1, vec![member(0, 4 << 20), member(1, 4 << 20)]);
        assert_eq!(raid1.copies_of(4096), Some(vec![(0, 4096), (1, 4096)]));
        assert_eq!(
            ArraySpec::new(Level::Raid0, raid1.members.clone()).copies_of(0),
            None
        );
        four.chunk = Bytes(3000);
        assert!(problem(&four).contains("chunk"));
    }

    #[test]
    fn equal_members_within_one_chunk_need_no_truncation() {
        // Sizes differ by less than a chunk: the kernel rounds both down to the same
        // number of chunks, so raid0 stays single-zone without help.
        let spec = ArraySpec::new(
            Level::Raid0,
            vec![member(0, 64 << 20), member(1, (64 << 20) + 4096)],
        );
        assert!(!spec.needs_truncation());
        assert_eq!(spec.expected_size_bytes(), 2 * (64 << 20));
    }

    #[test]
    fn levels_round_trip_through_kernel_values_and_names() {
        for level in [Level::Raid0, Level::Raid1, Level::Raid10, Level::Linear] {
            assert_eq!(Level::from_kernel_level(level.kernel_level()), Some(level));
            assert_eq!(Level::from_name(level.name()), Some(level));
        }
        assert_eq!(Level::Linear.kernel_level(), -1);
        assert_eq!(Level::from_kernel_level(5), None);
        assert_eq!(Level::from_name("raid5"), None);
    }

    #[test]
    fn dev_numbers_parse_and_display_like_sysfs() {
        let dev = "259:12\n".parse::<DevId>().ok().unwrap();
        assert_eq!(
            dev,
            DevId {
                major: 259,
                minor: 12
            }
        );
        assert_eq!(dev.to_string(), "259:12");
        assert_eq!("259".parse::<DevId>().ok(), None);
        assert_eq!("a:1".parse::<DevId>().ok(), None);
        assert_eq!(
            DevId::from_dev_t(libc::makedev(9, 127)),
            DevId {
                major: 9,
                minor: 127
            }
        );
        assert_eq!(Bytes::kib(512).human().to_string(), "512 KiB");
        assert_eq!(Bytes::mib(3).human().to_string(), "3 MiB");
        assert_eq!(Bytes(1000).human().to_string(), "1000 bytes");
    }
}
