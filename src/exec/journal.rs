//! The provisioning journal: what a run of `tosskey provision` has built so far.
//!
//! It lives in `/run/tosskey/<name>.json` — tmpfs, so it disappears with the boot just like
//! the key does. It never holds key material. A rerun reads it to tell "already provisioned
//! with the same devices" (nothing to do) from "a previous run died half-way" (tear down
//! what it recorded, then start over), and `close` uses it to know which array belongs to a
//! mapping. Every update is written atomically (temp file + rename), so a SIGKILL at any
//! point leaves either the old or the new journal. The directory is 0700 and a journal is
//! only read under a valid volume name that it records itself.

use std::fs;
use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt as _, OpenOptionsExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};
use tosskey_dm::DmName;

use crate::exec::measure::VolumeMeasurement;
use crate::names::{self, DEFAULT_STATE_DIR};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Building: anything recorded below may exist and must be torn down by a rerun.
    Building,
    /// Everything was built, verified and (if asked) formatted and mounted.
    Complete,
    /// `shred` wiped the keys (recorded before the first wipe): the mappings, while they
    /// last, answer every I/O with an error. `provision` refuses the name until `close`
    /// has removed them.
    Shredded,
}

/// Everything a run built, in build order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Journal {
    pub name: String,
    pub boot_id: String,
    pub stage: Stage,
    /// Member devices as given/discovered, canonical paths.
    pub members: Vec<PathBuf>,
    /// What this run built (or was about to build), bottom first. An entry is recorded
    /// *before* the kernel object is created, so a SIGKILL between the two leaves an entry
    /// for something that may not exist: teardown skips those.
    pub built: Vec<Component>,
    /// Where this run mounted the volume.
    pub mount: Option<PathBuf>,
    /// The `--bind` directories, each recorded once its contents were copied and right
    /// before it is bind-mounted, in bind order.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub binds: Vec<RecordedBind>,
    /// What `--measure-pcr` extended, per crypt node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<VolumeMeasurement>,
    /// Why `--key-loading auto` loaded hex keys (no keyring support for dm-crypt), for
    /// `status`; `None` when it did not fall back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_loading_fallback: Option<String>,
    /// The options the volume was provisioned with, so that a rerun can name those it
    /// asks differently (empty for a volume `recover` reopened).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub options: Vec<RecordedOption>,
    /// What the run that finished recorded for `status` and its metrics.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ready: Option<Readiness>,
}

/// When and how a provision run made its volume ready: what `status` and the Prometheus
/// metrics show of the run after it has ended. No key material.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Readiness {
    /// Unix time in milliseconds when the run started.
    pub started_unix_ms: u64,
    /// Unix time in milliseconds when everything was built, verified, formatted and mounted.
    pub ready_unix_ms: u64,
    /// Sectors the run decrypted in userspace and compared with the mapping.
    pub verified_sectors: usize,
    /// Of those, how many differed (a run with any fails and is rolled back: 0 here).
    pub mismatched_sectors: usize,
    /// The escrow file the run wrote.
    pub escrow_file: Option<PathBuf>,
    /// The filesystem the run created (`ext4`); `None` for `--mkfs none`.
    pub filesystem: Option<String>,
    /// Its label.
    pub label: Option<String>,
}

impl Journal {
    pub fn new(name: &str, boot_id: &str, members: Vec<PathBuf>) -> Self {
        Journal {
            name: name.to_owned(),
            boot_id: boot_id.to_owned(),
            stage: Stage::Building,
            members,
            built: Vec::new(),
            mount: None,
            binds: Vec::new(),
            measurements: Vec::new(),
            key_loading_fallback: None,
            options: Vec::new(),
            ready: None,
        }
    }
}

/// A directory bind-mounted from the volume (`--bind`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedBind {
    pub dir: PathBuf,
    /// Its copy on the mounted volume (`MOUNT/bind/DIR`).
    pub source: PathBuf,
}

/// One provision option as the run had it: the flag and its value as the command line
/// spells them (`--cipher`, `aes-xts-plain64`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RecordedOption {
    pub flag: String,
    pub value: String,
}

/// One kernel object of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Component {
    /// A non-persistent md array, by kernel name (`md_tk_data`).
    Md { name: String },
    /// A device-mapper mapping, by name, and the target type its table was built of
    /// (`None` in a journal written before tosskey recorded it).
    Dm {
        name: String,
        #[serde(default, skip_serializing_if = "Option::is_none")]
        target: Option<MappingTarget>,
    },
}

/// The dm target types tosskey builds mappings of.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum MappingTarget {
    Crypt,
    Striped,
    Linear,
}

impl MappingTarget {
    /// The kernel's name of the target type, as a table shows it.
    pub fn as_str(self) -> &'static str {
        match self {
            MappingTarget::Crypt => "crypt",
            MappingTarget::Striped => "striped",
            MappingTarget::Linear => "linear",
        }
    }

    /// Which of them `target_type` is.
    pub fn from_kernel(target_type: &str) -> Option<Self> {
        [
            MappingTarget::Crypt,
            MappingTarget::Striped,
            MappingTarget::Linear,
        ]
        .into_iter()
        .find(|t| t.as_str() == target_type)
    }
}

/// The directory holding journals (a parameter so host tests use a temp dir).
#[derive(Debug, Clone)]
pub struct JournalDir(PathBuf);

impl Default for JournalDir {
    fn default() -> Self {
        JournalDir(PathBuf::from(DEFAULT_STATE_DIR))
    }
}

impl JournalDir {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        JournalDir(dir.into())
    }

    /// `<dir>/<name>.json`, for a `name` that is a valid dm name (so `../x` or `a/b` cannot
    /// lead out of the directory).
    fn path(&self, name: &str) -> Result<PathBuf> {
        let name = DmName::new(name).map_err(|e| anyhow::anyhow!("not a volume name: {e}"))?;
        Ok(names::journal_file(&self.0, name.as_str()))
    }

    /// The journal of volume `name`, if there is one. A journal that records another name
    /// than its file's was not written by tosskey: refused rather than trusted.
    pub fn load(&self, name: &str) -> Result<Option<Journal>> {
        let path = self.path(name)?;
        let journal: Journal = match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes).with_context(|| {
                format!(
                    "{} is corrupt: remove it and run `tosskey close {name}`",
                    path.display()
                )
            })?,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                let what = reading_failed(&path, e.kind());
                return Err(e).context(what);
            }
        };
        if journal.name != name {
            anyhow::bail!(
                "{} records volume {:?}: a journal names its own file, so tosskey did not write this one; remove it",
                path.display(),
                journal.name
            );
        }
        Ok(Some(journal))
    }

    /// The directory, created 0700 (the journals say which devices make up a volume: for
    /// root only). One that exists is made 0700 if it is wider; a link or a file there is
    /// refused.
    fn private_dir(&self) -> Result<()> {
        let dir = &self.0;
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
        let metadata =
            fs::symlink_metadata(dir).with_context(|| format!("inspecting {}", dir.display()))?;
        if !metadata.is_dir() {
            anyhow::bail!("{} is not a directory: remove it", dir.display());
        }
        if metadata.permissions().mode() & 0o077 != 0 {
            fs::set_permissions(dir, fs::Permissions::from_mode(0o700))
                .with_context(|| format!("making {} private (0700)", dir.display()))?;
        }
        Ok(())
    }

    /// Write atomically: a new temp file of a unique name (`O_EXCL`: nothing planted there
    /// is followed or reused), fsync, rename over the journal.
    pub fn save(&self, journal: &Journal) -> Result<()> {
        self.private_dir()?;
        let path = self.path(&journal.name)?;
        let mut suffix = [0u8; 8];
        getrandom::fill(&mut suffix).map_err(|e| anyhow::anyhow!("getrandom: {e}"))?;
        let tmp = self.0.join(format!(
            ".{}.json.{}.{:016x}.tmp",
            journal.name,
            std::process::id(),
            u64::from_ne_bytes(suffix)
        ));
        let written = (|| {
            let mut file = fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .mode(0o600)
                .open(&tmp)
                .with_context(|| format!("creating {}", tmp.display()))?;
            file.write_all(&serde_json::to_vec_pretty(journal)?)?;
            file.sync_all()?;
            fs::rename(&tmp, &path)
                .with_context(|| format!("renaming {} into place", tmp.display()))
        })();
        if written.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        written
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.path(name)?) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Result<Vec<Journal>> {
        let entries = match fs::read_dir(&self.0) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => {
                let what = reading_failed(&self.0, e.kind());
                return Err(e).context(what);
            }
        };
        let mut journals = Vec::new();
        for entry in entries {
            let path = entry?.path();
            if path.extension().is_some_and(|e| e == "json") {
                if let Some(name) = path.file_stem().and_then(|s| s.to_str()) {
                    journals.extend(self.load(name)?);
                }
            }
        }
        journals.sort_by(|a, b| a.name.cmp(&b.name));
        Ok(journals)
    }
}

/// The kernel's id of this boot (`/proc/sys/kernel/random/boot_id`), without dashes.
pub fn boot_id(proc_root: &Path) -> Result<String> {
    let path = proc_root.join("sys/kernel/random/boot_id");
    let raw = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    Ok(raw.trim().replace('-', ""))
}

/// What failed reading a journal path, with the fix when it is the directory's privacy
/// (0700, root's): only root reads the journals.
fn reading_failed(path: &Path, kind: std::io::ErrorKind) -> String {
    if kind == std::io::ErrorKind::PermissionDenied {
        format!(
            "reading {}; run as root (tosskey's journals are private to root)",
            path.display()
        )
    } else {
        format!("reading {}", path.display())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn journal_round_trips_and_lists() {
        let dir = tempfile::tempdir().unwrap();
        let journals = JournalDir::new(dir.path().join("run/tosskey"));
        assert_eq!(journals.load("vol").unwrap(), None);
        let mut journal = Journal::new("vol", "abc", vec![PathBuf::from("/dev/vdb")]);
        journal.built.push(Component::Md {
            name: "md_tk_vol".into(),
        });
        journals.save(&journal).unwrap();
        journal.stage = Stage::Complete;
        journals.save(&journal).unwrap();
        assert_eq!(journals.load("vol").unwrap(), Some(journal.clone()));
        assert_eq!(journals.list().unwrap(), vec![journal]);
        journals.remove("vol").unwrap();
        assert!(journals.list().unwrap().is_empty());
        journals.remove("vol").unwrap();
    }

    #[test]
    fn binds_round_trip_in_order_and_a_journal_without_them_still_reads() {
        let dir = tempfile::tempdir().unwrap();
        let journals = JournalDir::new(dir.path());
        let mut journal = Journal::new("vol", "abc", vec![PathBuf::from("/dev/vdb")]);
        journals.save(&journal).unwrap();
        let text = std::fs::read_to_string(dir.path().join("vol.json")).unwrap();
        assert!(!text.contains("binds"), "{text}");
        journal.mount = Some(PathBuf::from("/mnt/e"));
        journal.binds = ["/var/lib/kubelet", "/var/log/pods"]
            .iter()
            .map(|dir| RecordedBind {
                dir: PathBuf::from(dir),
                source: PathBuf::from(format!("/mnt/e/bind{dir}")),
            })
            .collect();
        journals.save(&journal).unwrap();
        let loaded = journals.load("vol").unwrap().unwrap();
        assert_eq!(loaded.binds, journal.binds);
        let text = std::fs::read_to_string(dir.path().join("vol.json")).unwrap();
        let json: serde_json::Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            json["binds"][0],
            serde_json::json!({"dir": "/var/lib/kubelet", "source": "/mnt/e/bind/var/lib/kubelet"})
        );
    }

    #[test]
    fn corrupt_journal_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vol.json"), b"{not json").unwrap();
        let err = JournalDir::new(dir.path()).load("vol").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("vol.json is corrupt"), "{msg}");
        assert!(msg.contains("tosskey close vol"), "{msg}");
    }

    #[test]
    fn names_that_leave_the_journal_directory_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let journals = JournalDir::new(dir.path().join("run/tosskey"));
        // A journal one level up: `close ../x` must not reach it.
        std::fs::create_dir_all(dir.path().join("run/tosskey")).unwrap();
        let outside = Journal::new("x", "abc", vec![PathBuf::from("/dev/vdb")]);
        std::fs::write(
            dir.path().join("run/x.json"),
            serde_json::to_vec(&outside).unwrap(),
        )
        .unwrap();
        for name in ["../x", "a/b", "", ".."] {
            let err = journals.load(name).unwrap_err();
            assert!(
                format!("{err:#}").contains("not a volume name"),
                "{name}: {err:#}"
            );
        }
    }

    #[test]
    fn a_journal_must_record_the_name_of_its_file() {
        let dir = tempfile::tempdir().unwrap();
        let journals = JournalDir::new(dir.path());
        let other = Journal::new("other", "abc", vec![PathBuf::from("/dev/vdb")]);
        std::fs::write(
            dir.path().join("vol.json"),
            serde_json::to_vec(&other).unwrap(),
        )
        .unwrap();
        let err = journals.load("vol").unwrap_err();
        assert!(
            format!("{err:#}").contains("records volume \"other\""),
            "{err:#}"
        );
        assert!(journals.list().is_err());
    }

    #[test]
    fn the_journal_directory_is_private_and_temp_files_are_exclusive() {
        use std::os::unix::fs::PermissionsExt as _;
        let dir = tempfile::tempdir().unwrap();
        let state = dir.path().join("run/tosskey");
        let journals = JournalDir::new(&state);
        let journal = Journal::new("vol", "abc", vec![PathBuf::from("/dev/vdb")]);
        journals.save(&journal).unwrap();
        let mode = |path: &Path| std::fs::metadata(path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&state), 0o700);
        assert_eq!(mode(&state.join("vol.json")), 0o600);
        // A directory left world-readable (an older tosskey, an admin) is made private.
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o755)).unwrap();
        // A planted file (or link) at the old fixed temp name is neither followed nor used.
        let victim = dir.path().join("victim");
        std::fs::write(&victim, b"keep").unwrap();
        std::os::unix::fs::symlink(&victim, state.join("vol.json.tmp")).unwrap();
        journals.save(&journal).unwrap();
        assert_eq!(mode(&state), 0o700);
        assert_eq!(std::fs::read(&victim).unwrap(), b"keep");
        assert_eq!(journals.load("vol").unwrap(), Some(journal));
        // Only the journal and the planted link: no temp file is left behind.
        let mut names: Vec<String> = std::fs::read_dir(&state)
            .unwrap()
            .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
            .collect();
        names.sort();
        assert_eq!(names, ["vol.json", "vol.json.tmp"]);
    }

    #[test]
    fn boot_id_drops_dashes() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("sys/kernel/random")).unwrap();
        std::fs::write(
            dir.path().join("sys/kernel/random/boot_id"),
            "0f1e2d3c-4b5a-6978-8796-a5b4c3d2e1f0\n",
        )
        .unwrap();
        assert_eq!(
            boot_id(dir.path()).unwrap(),
            "0f1e2d3c4b5a69788796a5b4c3d2e1f0"
        );
    }
}
