//! The provisioning journal: what a run of `tosskey provision` has built so far.
//!
//! It lives in `/run/tosskey/<name>.json` — tmpfs, so it disappears with the boot just like
//! the key does. It never holds key material. A rerun reads it to tell "already provisioned
//! with the same devices" (nothing to do) from "a previous run died half-way" (tear down
//! what it recorded, then start over), and `close` uses it to know which array belongs to a
//! mapping. Every update is written atomically (temp file + rename), so a SIGKILL at any
//! point leaves either the old or the new journal.

use std::fs;
use std::io::Write as _;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::{Deserialize, Serialize};

use crate::measure::VolumeMeasurement;

pub const DEFAULT_STATE_DIR: &str = "/run/tosskey";

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Stage {
    /// Building: anything recorded below may exist and must be torn down by a rerun.
    Building,
    /// Everything was built, verified and (if asked) formatted and mounted.
    Complete,
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
    /// What `--measure-pcr` extended, per crypt node.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub measurements: Vec<VolumeMeasurement>,
    /// Why `--key-loading auto` loaded hex keys (no keyring support for dm-crypt), for
    /// `status`; `None` when it did not fall back.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub key_loading_fallback: Option<String>,
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
            measurements: Vec::new(),
            key_loading_fallback: None,
        }
    }
}

/// One kernel object of the stack.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "kebab-case", deny_unknown_fields)]
pub enum Component {
    /// A non-persistent md array, by kernel name (`md_tk_data`).
    Md { name: String },
    /// A device-mapper mapping, by name.
    Dm { name: String },
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

    fn path(&self, name: &str) -> PathBuf {
        self.0.join(format!("{name}.json"))
    }

    pub fn load(&self, name: &str) -> Result<Option<Journal>> {
        let path = self.path(name);
        match fs::read(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .with_context(|| {
                    format!(
                        "{} is corrupt: remove it and run `tosskey close {name}`",
                        path.display()
                    )
                })
                .map(Some),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e).with_context(|| format!("reading {}", path.display())),
        }
    }

    /// Write atomically: temp file, fsync, rename.
    pub fn save(&self, journal: &Journal) -> Result<()> {
        fs::create_dir_all(&self.0).with_context(|| format!("creating {}", self.0.display()))?;
        let path = self.path(&journal.name);
        let tmp = path.with_extension("json.tmp");
        let mut file =
            fs::File::create(&tmp).with_context(|| format!("creating {}", tmp.display()))?;
        file.write_all(&serde_json::to_vec_pretty(journal)?)?;
        file.sync_all()?;
        fs::rename(&tmp, &path).with_context(|| format!("renaming {} into place", tmp.display()))
    }

    pub fn remove(&self, name: &str) -> Result<()> {
        match fs::remove_file(self.path(name)) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
            _ => Ok(()),
        }
    }

    pub fn list(&self) -> Result<Vec<Journal>> {
        let entries = match fs::read_dir(&self.0) {
            Ok(entries) => entries,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
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
    fn corrupt_journal_names_the_file_and_the_fix() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("vol.json"), b"{not json").unwrap();
        let err = JournalDir::new(dir.path()).load("vol").unwrap_err();
        let msg = format!("{err:#}");
        assert!(msg.contains("vol.json is corrupt"), "{msg}");
        assert!(msg.contains("tosskey close vol"), "{msg}");
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
