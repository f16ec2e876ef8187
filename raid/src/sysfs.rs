//! What the kernel says about md arrays and block devices, read from sysfs and procfs
//! under a configurable root (so host tests can use fake trees).

use std::io;
use std::path::Path;

use crate::error::{RaidError, Result};
use crate::spec::DevId;
pub use tosskey_sysutil::SystemRoot;
use tosskey_sysutil::SECTOR_SIZE;

/// The highest minor mdadm (and tosskey) hands out; it counts down from here.
pub const HIGHEST_AUTO_MINOR: u32 = 127;

/// md's view of sysfs and procfs under a [`SystemRoot`] (the real system, or a fake tree in
/// host tests).
pub trait MdSysfs {
    /// The kernel name of block device `dev` (`vdb`, `loop3`, `nvme0n1p1`).
    fn device_name(&self, dev: DevId) -> Result<String>;

    /// Size in bytes of block device `dev` (sysfs `size` counts 512-byte sectors).
    fn device_size_bytes(&self, dev: DevId) -> Result<u64>;

    /// Kernel names of what holds block device `dev` (md arrays, dm devices, …).
    fn holders(&self, dev: DevId) -> Result<Vec<String>>;

    /// The md arrays the kernel knows (every `/sys/block/md*` with an `md/` directory),
    /// sorted by name, including inactive ones.
    fn list_arrays(&self) -> Result<Vec<ArrayStatus>>;

    /// The state of md array `name` (kernel name, e.g. `md127` or `md_tosskey`).
    fn array_status(&self, name: &str) -> Result<ArrayStatus>;

    /// The md array that has `dev` as a member, if any.
    fn array_holding(&self, dev: DevId) -> Result<Option<String>>;

    /// `/proc/mdstat`, parsed; empty when md is not loaded.
    fn mdstat(&self) -> Result<Vec<MdstatEntry>>;

    /// The md personalities the kernel has loaded (`Personalities :` line of
    /// `/proc/mdstat`), e.g. `["raid0", "raid1"]`; empty when md is not loaded.
    fn personalities(&self) -> Result<Vec<String>>;

    /// md minors nobody uses, from [`HIGHEST_AUTO_MINOR`] down to 0 (mdadm's order):
    /// a minor is taken if `/sys/block/mdN` or `/sys/dev/block/9:N` exists or
    /// `/proc/mdstat` lists `mdN`.
    fn free_md_minors(&self) -> Result<Vec<u32>>;

    /// The dm UUID of block device `name` (`/sys/block/<name>/dm/uuid`), if it is a dm
    /// device with one. tosskey's mappings carry `TOSSKEY-…`: an array whose holder has
    /// such a UUID belongs to tosskey.
    fn dm_uuid(&self, name: &str) -> Result<Option<String>>;
}

impl MdSysfs for SystemRoot {
    fn device_name(&self, dev: DevId) -> Result<String> {
        let link = self.block_dir(dev);
        let target = std::fs::read_link(&link).map_err(io_error("resolve", &link))?;
        file_name(&target).ok_or_else(|| RaidError::Parse {
            path: link,
            found: target.display().to_string(),
            expected: "a link to a block device directory",
        })
    }

    fn device_size_bytes(&self, dev: DevId) -> Result<u64> {
        Ok(read_u64(&self.block_dir(dev).join("size"))? * SECTOR_SIZE)
    }

    fn holders(&self, dev: DevId) -> Result<Vec<String>> {
        list_names(&self.block_dir(dev).join("holders"))
    }

    fn list_arrays(&self) -> Result<Vec<ArrayStatus>> {
        let mut arrays = Vec::new();
        for name in list_names(&self.sys.join("block"))? {
            if name.starts_with("md") && self.sys.join("block").join(&name).join("md").is_dir() {
                arrays.push(self.array_status(&name)?);
            }
        }
        Ok(arrays)
    }

    fn array_status(&self, name: &str) -> Result<ArrayStatus> {
        let dir = self.sys.join("block").join(name);
        let md = dir.join("md");
        if !md.is_dir() {
            return Err(RaidError::NoSuchArray {
                name: name.to_owned(),
            });
        }
        let mut members = Vec::new();
        for entry in list_names(&md)? {
            let Some(member_name) = entry.strip_prefix("dev-") else {
                continue;
            };
            let member_dir = md.join(&entry);
            let slot_text = read_trimmed(&member_dir.join("slot"))?;
            members.push(ArrayMemberStatus {
                name: member_name.to_owned(),
                dev: parse_dev(&member_dir.join("block").join("dev"))?,
                slot: slot_text.parse().ok(),
                state: read_trimmed(&member_dir.join("state"))?,
            });
        }
        members.sort_by_key(|member| (member.slot.unwrap_or(u32::MAX), member.name.clone()));
        Ok(ArrayStatus {
            name: name.to_owned(),
            dev: parse_dev(&dir.join("dev"))?,
            level: read_trimmed(&md.join("level"))?,
            array_state: read_trimmed(&md.join("array_state"))?,
            metadata_version: read_trimmed(&md.join("metadata_version"))?,
            size_bytes: read_u64(&dir.join("size"))? * SECTOR_SIZE,
            members,
            holders: list_names(&dir.join("holders"))?,
        })
    }

    fn array_holding(&self, dev: DevId) -> Result<Option<String>> {
        Ok(self
            .list_arrays()?
            .into_iter()
            .find(|array| array.members.iter().any(|member| member.dev == dev))
            .map(|array| array.name))
    }

    fn mdstat(&self) -> Result<Vec<MdstatEntry>> {
        let path = self.proc.join("mdstat");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(parse_mdstat(&text)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(RaidError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn personalities(&self) -> Result<Vec<String>> {
        let path = self.proc.join("mdstat");
        match std::fs::read_to_string(&path) {
            Ok(text) => Ok(parse_personalities(&text)),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(RaidError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }

    fn free_md_minors(&self) -> Result<Vec<u32>> {
        let listed: Vec<String> = self.mdstat()?.into_iter().map(|entry| entry.name).collect();
        Ok((0..=HIGHEST_AUTO_MINOR)
            .rev()
            .filter(|minor| {
                let name = format!("md{minor}");
                !self.sys.join("block").join(&name).exists()
                    && !self
                        .block_dir(DevId {
                            major: crate::ioctl::MD_MAJOR,
                            minor: *minor,
                        })
                        .exists()
                    && !listed.contains(&name)
            })
            .collect())
    }

    fn dm_uuid(&self, name: &str) -> Result<Option<String>> {
        let path = self.sys.join("block").join(name).join("dm").join("uuid");
        match std::fs::read_to_string(&path) {
            Ok(text) => {
                let uuid = text.trim_end();
                Ok((!uuid.is_empty()).then(|| uuid.to_owned()))
            }
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(source) => Err(RaidError::Io {
                action: "read",
                path,
                source,
            }),
        }
    }
}

/// Writes `value` to a sysfs attribute.
pub(crate) fn write_attribute(path: &Path, value: &str) -> Result<()> {
    std::fs::write(path, value).map_err(io_error("write", path))
}

/// One md array as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayStatus {
    /// Kernel name: `md127`, `md_tosskey`.
    pub name: String,
    /// Device number, `9:127` (named arrays get minors from 512 up).
    pub dev: DevId,
    /// `md/level`: `raid0`, `raid1`, `linear`; empty while unconfigured.
    pub level: String,
    /// `md/array_state`: `clean`, `active`, `inactive`, `clear`, …
    pub array_state: String,
    /// `md/metadata_version`: `none` for the non-persistent arrays tosskey builds.
    pub metadata_version: String,
    /// Array size in bytes (0 while not running).
    pub size_bytes: u64,
    /// Members, in slot order.
    pub members: Vec<ArrayMemberStatus>,
    /// Kernel names of what holds the array (e.g. `dm-0` for a crypt mapping on top).
    pub holders: Vec<String>,
}

/// One member of an md array as sysfs shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArrayMemberStatus {
    /// Kernel name of the member device: `vdb`, `loop3`.
    pub name: String,
    /// Its device number.
    pub dev: DevId,
    /// Its slot (`None` for spares or `none`).
    pub slot: Option<u32>,
    /// `dev-*/state`: `in_sync`, `faulty`, …
    pub state: String,
}

/// One array line (and the line after it) of `/proc/mdstat`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdstatEntry {
    /// Kernel name.
    pub name: String,
    /// `active` (true) or `inactive`.
    pub active: bool,
    /// `(read-only)` or `(auto-read-only)` follows `active`.
    pub read_only: bool,
    /// Personality, when active.
    pub level: Option<String>,
    /// Members in the order listed (md lists the last added first).
    pub members: Vec<MdstatMember>,
    /// Size in KiB from the `N blocks` line, when present.
    pub blocks_kib: Option<u64>,
    /// True when the second line says `super non-persistent`.
    pub non_persistent: bool,
}

/// A member token such as `vdb[1]` or `loop0[0](F)`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MdstatMember {
    /// Kernel name.
    pub name: String,
    /// Descriptor number in brackets.
    pub number: u32,
    /// Flags in parentheses: `F` faulty, `S` spare, `W` write-mostly, …
    pub flags: String,
}

/// Parses `/proc/mdstat`. Lines that do not look like md's output are skipped.
pub fn parse_mdstat(text: &str) -> Vec<MdstatEntry> {
    let mut entries: Vec<MdstatEntry> = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.starts_with(char::is_whitespace)
            || line.starts_with("Personalities")
            || line.starts_with("unused devices")
        {
            continue;
        }
        let Some((name, rest)) = line.split_once(" : ") else {
            continue;
        };
        let mut words = rest.split_whitespace().peekable();
        let active = match words.next() {
            Some("active") => true,
            Some("inactive") => false,
            _ => continue,
        };
        let read_only = words
            .next_if(|word| word.starts_with('(') && word.ends_with("read-only)"))
            .is_some();
        let level = if active {
            words.next_if(|word| !word.contains('[')).map(str::to_owned)
        } else {
            None
        };
        let members = words.filter_map(parse_mdstat_member).collect();
        let mut entry = MdstatEntry {
            name: name.trim().to_owned(),
            active,
            read_only,
            level,
            members,
            blocks_kib: None,
            non_persistent: false,
        };
        if let Some(detail) = lines.next_if(|next| next.starts_with(char::is_whitespace)) {
            let mut detail_words = detail.split_whitespace();
            if let (Some(count), Some("blocks")) = (detail_words.next(), detail_words.next()) {
                entry.blocks_kib = count.parse().ok();
            }
            entry.non_persistent = detail.contains("super non-persistent");
        }
        entries.push(entry);
    }
    entries
}

/// The names in brackets on the `Personalities :` line of `/proc/mdstat`.
pub fn parse_personalities(text: &str) -> Vec<String> {
    text.lines()
        .find_map(|line| line.strip_prefix("Personalities :"))
        .map(|rest| {
            rest.split_whitespace()
                .filter_map(|word| word.strip_prefix('[')?.strip_suffix(']'))
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn parse_mdstat_member(word: &str) -> Option<MdstatMember> {
    let (name, rest) = word.split_once('[')?;
    let (number, flags) = rest.split_once(']')?;
    Some(MdstatMember {
        name: name.to_owned(),
        number: number.parse().ok()?,
        flags: flags
            .trim_start_matches('(')
            .trim_end_matches(')')
            .to_owned(),
    })
}

fn io_error<'a>(action: &'static str, path: &'a Path) -> impl FnOnce(io::Error) -> RaidError + 'a {
    move |source| RaidError::Io {
        action,
        path: path.to_path_buf(),
        source,
    }
}

fn file_name(path: &Path) -> Option<String> {
    path.file_name()?.to_str().map(str::to_owned)
}

fn read_trimmed(path: &Path) -> Result<String> {
    tosskey_sysutil::read_attr(path).map_err(io_error("read", path))
}

fn read_u64(path: &Path) -> Result<u64> {
    let text = read_trimmed(path)?;
    text.parse().map_err(|_| RaidError::Parse {
        path: path.to_path_buf(),
        found: text,
        expected: "a decimal number",
    })
}

fn parse_dev(path: &Path) -> Result<DevId> {
    let text = read_trimmed(path)?;
    text.parse::<DevId>().map_err(|_| RaidError::Parse {
        path: path.to_path_buf(),
        found: text.clone(),
        expected: "MAJOR:MINOR",
    })
}

/// Names in a directory, sorted; a missing directory is empty.
fn list_names(dir: &Path) -> Result<Vec<String>> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(source) => {
            return Err(RaidError::Io {
                action: "list",
                path: dir.to_path_buf(),
                source,
            })
        }
    };
    let mut names = Vec::new();
    for entry in entries {
        let entry = entry.map_err(io_error("list", dir))?;
        names.push(entry.file_name().to_string_lossy().into_owned());
    }
    names.sort();
    Ok(names)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::symlink;
    use tosskey_sysutil::fake::FakeTree;

    const MDSTAT: &str = "\
Personalities : [raid0] [raid1] [linear]
md_tosskey : active raid1 vdb[1] vda[0]
      262080 blocks super non-persistent [2/2] [UU]
      
md127 : active (auto-read-only) raid0 loop1[1] loop0[0](F)
      65536 blocks super non-persistent 512k chunks
      
md126 : inactive loop3[1](S) loop2[0](S)
      131072 blocks super 1.2
       
unused devices: <none>
";

    #[test]
    fn mdstat_parses_active_inactive_and_named_arrays() {
        let entries = parse_mdstat(MDSTAT);
        assert_eq!(entries.len(), 3);
        let named = &entries[0];
        assert_eq!(named.name, "md_tosskey");
        assert!(named.active && !named.read_only);
        assert_eq!(named.level.as_deref(), Some("raid1"));
        assert_eq!(
            named.members,
            vec![
                MdstatMember {
                    name: "vdb".into(),
                    number: 1,
                    flags: String::new()
                },
                MdstatMember {
                    name: "vda".into(),
                    number: 0,
                    flags: String::new()
                },
            ]
        );
        assert_eq!(named.blocks_kib, Some(262_080));
        assert!(named.non_persistent);

        let striped = &entries[1];
        assert_eq!(striped.name, "md127");
        assert!(striped.active && striped.read_only);
        assert_eq!(striped.level.as_deref(), Some("raid0"));
        assert_eq!(striped.members[1].flags, "F");
        assert_eq!(striped.blocks_kib, Some(65_536));

        let inactive = &entries[2];
        assert!(!inactive.active);
        assert_eq!(inactive.level, None);
        assert_eq!(inactive.members.len(), 2);
        assert_eq!(inactive.members[0].flags, "S");
        assert!(!inactive.non_persistent);
    }

    #[test]
    fn personalities_are_read_from_the_first_line() {
        assert_eq!(parse_personalities(MDSTAT), ["raid0", "raid1", "linear"]);
        assert!(parse_personalities("Personalities : \n").is_empty());
        assert!(parse_personalities("").is_empty());
    }

    #[test]
    fn mdstat_without_arrays_is_empty() {
        let text = "Personalities : \nunused devices: <none>\n";
        assert!(parse_mdstat(text).is_empty());
        assert!(parse_mdstat("").is_empty());
    }

    #[test]
    fn free_minors_count_down_from_127_skipping_used_ones() {
        let mut fake = FakeTree::new();
        assert_eq!(fake.root.free_md_minors().unwrap().first(), Some(&127));
        fake.md_array("md127", 127, "raid0", &[], 4096 * 512);
        // An empty md126 left by an earlier probe shows only in /sys/dev/block.
        std::fs::create_dir_all(fake.path().join("sys/devices/virtual/block/md126")).unwrap();
        symlink(
            fake.path().join("sys/devices/virtual/block/md126"),
            fake.path().join("sys/dev/block/9:126"),
        )
        .unwrap();
        // md125 is only in /proc/mdstat (sysfs not yet updated).
        fake.file(
            "proc/mdstat",
            "md125 : active raid0 loop0[0]\n      1 blocks\n",
        );
        let free = fake.root.free_md_minors().unwrap();
        assert_eq!(free.first(), Some(&124));
        assert_eq!(free.last(), Some(&0));
        assert_eq!(free.len(), 125);
    }

    #[test]
    fn arrays_and_their_members_are_listed_from_sysfs() {
        let mut fake = FakeTree::new();
        fake.virtual_disk("loop0", (7, 0), 131_072 * 512);
        fake.virtual_disk("loop1", (7, 1), 262_144 * 512);
        fake.virtual_disk("loop2", (7, 2), 262_144 * 512);
        fake.md_array(
            "md_tosskey",
            512,
            "raid0",
            &[("loop1", 1), ("loop0", 0)],
            4096 * 512,
        );
        fake.virtual_disk("sda", (8, 0), 100 * 512);

        let arrays = fake.root.list_arrays().unwrap();
        assert_eq!(arrays.len(), 1, "sda is not an md array: {arrays:?}");
        let array = &arrays[0];
        assert_eq!(array.name, "md_tosskey");
        assert_eq!(
            array.dev,
            DevId {
                major: 9,
                minor: 512
            }
        );
        assert_eq!(array.level, "raid0");
        assert_eq!(array.metadata_version, "none");
        assert_eq!(array.size_bytes, 4096 * 512);
        let names: Vec<&str> = array.members.iter().map(|m| m.name.as_str()).collect();
        assert_eq!(names, ["loop0", "loop1"], "sorted by slot");
        assert_eq!(array.members[1].dev, DevId { major: 7, minor: 1 });
        assert_eq!(array.members[1].slot, Some(1));

        let loop1 = DevId { major: 7, minor: 1 };
        let loop2 = DevId { major: 7, minor: 2 };
        assert_eq!(
            fake.root.array_holding(loop1).unwrap().as_deref(),
            Some("md_tosskey")
        );
        assert_eq!(fake.root.array_holding(loop2).unwrap(), None);
        assert_eq!(fake.root.holders(loop1).unwrap(), ["md_tosskey"]);
        assert!(fake.root.holders(loop2).unwrap().is_empty());
        assert_eq!(fake.root.device_name(loop2).unwrap(), "loop2");
        assert_eq!(fake.root.device_size_bytes(loop2).unwrap(), 262_144 * 512);
        assert!(matches!(
            fake.root.array_status("md9"),
            Err(RaidError::NoSuchArray { .. })
        ));
    }

    #[test]
    fn dm_uuid_is_read_for_dm_holders_only() {
        let mut fake = FakeTree::new();
        fake.file("sys/block/dm-0/dm/uuid", "TOSSKEY-abc-data");
        fake.virtual_disk("loop0", (7, 0), 8 * 512);
        assert_eq!(
            fake.root.dm_uuid("dm-0").unwrap().as_deref(),
            Some("TOSSKEY-abc-data")
        );
        assert_eq!(fake.root.dm_uuid("loop0").unwrap(), None);
    }
}
