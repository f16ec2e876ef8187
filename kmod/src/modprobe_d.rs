//! The administrator's modprobe configuration, as far as it forbids something: `blacklist`
//! and `install` rules in `modprobe.d` and `modprobe.blacklist=` on the kernel command line.
//!
//! The kernel's own request path (step 2 of [`crate::Kernel::ensure`]) runs modprobe, which
//! honours them; the `finit_module` fallback must not load behind their back. So a module
//! with such a rule is refused, naming the rule, and the administrator decides. Both rules
//! are applied to every module tosskey would load (modprobe itself skips `blacklist` for a
//! dependency or a module named directly, but a module the administrator blacklisted or
//! replaced with a command is one tosskey should not load by itself). Options, aliases and
//! softdeps of `modprobe.d` are not read: they do not forbid anything.
//!
//! Directories and order as kmod's `modprobe.d(5)`: `/etc/modprobe.d`, `/run/modprobe.d`,
//! `/usr/local/lib/modprobe.d`, `/lib/modprobe.d`, `/usr/lib/modprobe.d`; only `*.conf`
//! files; a file name seen in an earlier directory hides the same name in later ones.

use std::collections::BTreeMap;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};

use crate::index::normalize;

/// The configuration directories under a root, most important first.
const DIRECTORIES: [&str; 5] = [
    "etc/modprobe.d",
    "run/modprobe.d",
    "usr/local/lib/modprobe.d",
    "lib/modprobe.d",
    "usr/lib/modprobe.d",
];

/// Where a rule was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RuleSource {
    /// A `modprobe.d` file and its line number (1-based).
    File { path: PathBuf, line: usize },
    /// `modprobe.blacklist=` in `/proc/cmdline`.
    KernelCommandLine,
}

impl fmt::Display for RuleSource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            RuleSource::File { path, line } => write!(f, "{}:{line}", path.display()),
            RuleSource::KernelCommandLine => f.write_str("the kernel command line"),
        }
    }
}

/// A rule that forbids loading a module directly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The rule as written (`blacklist dm_crypt`, `install raid1 /bin/false`,
    /// `modprobe.blacklist=dm_crypt`).
    pub text: String,
    pub source: RuleSource,
}

/// Every forbidding rule, by normalised module name (the first one found wins).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ModprobeRules {
    rules: BTreeMap<String, Rule>,
}

impl ModprobeRules {
    /// The rules under `root` (`/` on a real system): the `modprobe.d` directories and
    /// `proc/cmdline`. Unreadable directories and files are skipped, as modprobe does.
    pub fn read(root: &Path) -> Self {
        let mut rules = ModprobeRules::default();
        if let Ok(cmdline) = fs::read_to_string(root.join("proc/cmdline")) {
            rules.add_command_line(&cmdline);
        }
        for path in config_files(root) {
            if let Ok(text) = fs::read_to_string(&path) {
                rules.add_file(&path, &text);
            }
        }
        rules
    }

    /// The rule that forbids loading `module`, if any.
    pub fn forbidding(&self, module: &str) -> Option<&Rule> {
        self.rules.get(&normalize(module))
    }

    fn add(&mut self, module: &str, rule: Rule) {
        self.rules.entry(normalize(module)).or_insert(rule);
    }

    fn add_command_line(&mut self, cmdline: &str) {
        for word in cmdline.split_whitespace() {
            if let Some(modules) = word.strip_prefix("modprobe.blacklist=") {
                for module in modules.split(',').filter(|m| !m.is_empty()) {
                    self.add(
                        module,
                        Rule {
                            text: word.to_owned(),
                            source: RuleSource::KernelCommandLine,
                        },
                    );
                }
            }
        }
    }

    /// One file: `#` comments, `\` continues a line, `blacklist MODULE` and
    /// `install MODULE COMMAND...`.
    fn add_file(&mut self, path: &Path, text: &str) {
        let mut pending = String::new();
        let mut first_line = 0;
        for (index, raw) in text.lines().enumerate() {
            if pending.is_empty() {
                first_line = index + 1;
            }
            if let Some(continued) = raw.strip_suffix('\\') {
                pending.push_str(continued);
                pending.push(' ');
                continue;
            }
            pending.push_str(raw);
            let line = std::mem::take(&mut pending);
            let mut words = line.split_whitespace();
            let (Some(command), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            if matches!(command, "blacklist" | "install") {
                self.add(
                    module,
                    Rule {
                        text: line.split_whitespace().collect::<Vec<_>>().join(" "),
                        source: RuleSource::File {
                            path: path.to_owned(),
                            line: first_line,
                        },
                    },
                );
            }
        }
    }
}

/// The `*.conf` files of the configuration directories, in the order modprobe reads them:
/// sorted by file name, each name taken from the most important directory that has it.
fn config_files(root: &Path) -> Vec<PathBuf> {
    let mut by_name: BTreeMap<String, PathBuf> = BTreeMap::new();
    for directory in DIRECTORIES {
        let Ok(entries) = fs::read_dir(root.join(directory)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            if name.ends_with(".conf") {
                by_name.entry(name).or_insert_with(|| entry.path());
            }
        }
    }
    by_name.into_values().collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blacklist_and_install_rules_are_found_with_their_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let write = |relative: &str, text: &str| {
            let path = dir.path().join(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        };
        write(
            "etc/modprobe.d/local.conf",
            "# no dm-crypt here\noptions dm_mod major=0\nblacklist dm-crypt\ninstall raid1 \\\n  /bin/false\n",
        );
        // Hidden by /etc's file of the same name; other names in /lib count.
        write("lib/modprobe.d/local.conf", "blacklist ext4\n");
        write("lib/modprobe.d/other.conf", "blacklist xts\n");
        write("etc/modprobe.d/ignored.txt", "blacklist twofish_common\n");
        write(
            "proc/cmdline",
            "root=/dev/vda1 modprobe.blacklist=raid0,aesni_intel quiet\n",
        );
        let rules = ModprobeRules::read(dir.path());

        let rule = rules.forbidding("dm_crypt").unwrap();
        assert_eq!(rule.text, "blacklist dm-crypt");
        assert_eq!(
            rule.source.to_string(),
            format!(
                "{}:3",
                dir.path().join("etc/modprobe.d/local.conf").display()
            )
        );
        let rule = rules.forbidding("raid1").unwrap();
        assert_eq!(rule.text, "install raid1 /bin/false");
        assert!(
            rule.source.to_string().ends_with("local.conf:4"),
            "{rule:?}"
        );
        assert_eq!(rules.forbidding("xts").unwrap().text, "blacklist xts");
        let rule = rules.forbidding("aesni-intel").unwrap();
        assert_eq!(rule.source, RuleSource::KernelCommandLine);
        assert_eq!(rule.text, "modprobe.blacklist=raid0,aesni_intel");
        assert!(rules.forbidding("raid0").is_some());
        for allowed in ["ext4", "twofish_common", "dm_mod"] {
            assert!(rules.forbidding(allowed).is_none(), "{allowed}");
        }
    }
}
