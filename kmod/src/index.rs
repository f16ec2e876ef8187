//! The module tree of one kernel release, `/lib/modules/<release>`, as depmod describes it:
//! `modules.dep` (every loadable module and its hard dependencies), `modules.alias` (the
//! names the kernel requests, `crypto-twofish`, `fs-ext4`, `devname:mapper/control`, ...),
//! `modules.builtin` (modules compiled into the kernel image) and `modules.softdep` (what
//! modprobe loads alongside, e.g. ext4's `crc32c`). Plain-text files only: the `.bin`
//! indexes are an optimisation of the same data.

use std::collections::{HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use crate::Error;

/// A module name as the kernel spells it: `-` folded to `_` (`dm-crypt` → `dm_crypt`).
pub fn normalize(name: &str) -> String {
    name.replace('-', "_")
}

/// An alias or name normalised the way modprobe does: `-` folded to `_` except inside a
/// `[...]` glob class, where `-` is a range.
fn normalize_alias(alias: &str) -> String {
    let mut in_class = false;
    alias
        .chars()
        .map(|c| match c {
            '[' => {
                in_class = true;
                c
            }
            ']' => {
                in_class = false;
                c
            }
            '-' if !in_class => '_',
            _ => c,
        })
        .collect()
}

/// The module name of a `.ko` path: `kernel/drivers/md/dm-crypt.ko.xz` → `dm_crypt`.
pub fn module_name_of(path: &str) -> String {
    let file = path.rsplit('/').next().unwrap_or(path);
    let stem = file.split(".ko").next().unwrap_or(file);
    normalize(stem)
}

/// How a module file is compressed, from its name. The kernel decompresses `.ko.xz`,
/// `.ko.zst` and `.ko.gz` itself when asked (`MODULE_INIT_COMPRESSED_FILE`, Linux 5.17,
/// `CONFIG_MODULE_DECOMPRESS`).
pub fn is_compressed(path: &Path) -> bool {
    path.extension()
        .is_some_and(|ext| ext == "xz" || ext == "zst" || ext == "gz")
}

/// What a name resolves to in the tree.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Resolved {
    /// Compiled into the kernel: nothing to load.
    BuiltIn(String),
    /// Loadable modules, in the order the alias file lists them (an alias may name several
    /// implementations, e.g. `crypto-aes` → `aesni_intel` and `aes_generic`).
    Modules(Vec<String>),
}

/// The parsed index of `/lib/modules/<release>`.
#[derive(Debug, Clone)]
pub struct ModuleIndex {
    dir: PathBuf,
    /// Module name → (file relative to `dir` or absolute, hard dependencies' names).
    modules: HashMap<String, (String, Vec<String>)>,
    /// (normalised glob, module name), in file order.
    aliases: Vec<(String, String)>,
    builtin: HashSet<String>,
    /// Module name → names or aliases to load before it (best effort, as modprobe does).
    softdeps_pre: HashMap<String, Vec<String>>,
}

impl ModuleIndex {
    /// Reads the index files of `dir` (e.g. `/lib/modules/6.1.0-28-amd64`). `modules.dep`
    /// must exist; the others are optional (a tree without loadable aliases, a kernel
    /// without built-ins).
    pub fn read(dir: &Path) -> Result<Self, Error> {
        let read = |file: &str, required: bool| -> Result<String, Error> {
            let path = dir.join(file);
            match fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                Err(error) if !required && error.kind() == io::ErrorKind::NotFound => {
                    Ok(String::new())
                }
                Err(source) => Err(Error::ModuleTree { path, source }),
            }
        };
        Ok(Self::parse(
            dir,
            &read("modules.dep", true)?,
            &read("modules.alias", false)?,
            &read("modules.builtin", false)?,
            &read("modules.softdep", false)?,
        ))
    }

    /// Builds the index from the files' contents (`dir` only anchors relative paths).
    pub fn parse(dir: &Path, dep: &str, alias: &str, builtin: &str, softdep: &str) -> Self {
        let modules = dep
            .lines()
            .filter_map(|line| {
                let (file, deps) = line.split_once(':')?;
                let file = file.trim();
                (!file.is_empty()).then(|| {
                    (
                        module_name_of(file),
                        (
                            file.to_owned(),
                            deps.split_whitespace().map(module_name_of).collect(),
                        ),
                    )
                })
            })
            .collect();
        let aliases = alias
            .lines()
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                match (words.next(), words.next(), words.next()) {
                    (Some("alias"), Some(pattern), Some(module)) => {
                        Some((normalize_alias(pattern), normalize(module)))
                    }
                    _ => None,
                }
            })
            .collect();
        let builtin = builtin
            .lines()
            .map(str::trim)
            .filter(|line| !line.is_empty())
            .map(module_name_of)
            .collect();
        let mut softdeps_pre: HashMap<String, Vec<String>> = HashMap::new();
        for line in softdep.lines() {
            let mut words = line.split_whitespace();
            let (Some("softdep"), Some(module)) = (words.next(), words.next()) else {
                continue;
            };
            let mut pre = false;
            for word in words {
                match word {
                    "pre:" => pre = true,
                    "post:" => pre = false,
                    name if pre => softdeps_pre
                        .entry(normalize(module))
                        .or_default()
                        .push(name.to_owned()),
                    _ => {}
                }
            }
        }
        ModuleIndex {
            dir: dir.to_owned(),
            modules,
            aliases,
            builtin,
            softdeps_pre,
        }
    }

    /// The directory this index describes.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// What `name` (a module name or an alias) stands for, modprobe's way: a module of that
    /// name, else a built-in of that name, else every module whose alias pattern matches.
    pub fn resolve(&self, name: &str) -> Option<Resolved> {
        let module = normalize(name);
        if self.modules.contains_key(&module) {
            return Some(Resolved::Modules(vec![module]));
        }
        if self.builtin.contains(&module) {
            return Some(Resolved::BuiltIn(module));
        }
        let wanted = normalize_alias(name);
        let mut matches: Vec<String> = Vec::new();
        for (pattern, target) in &self.aliases {
            if glob_matches(pattern, &wanted) && !matches.contains(target) {
                matches.push(target.clone());
            }
        }
        // An alias may point at a built-in (depmod lists those in modules.alias too when
        // modules.builtin.modinfo is available): nothing to load then.
        if let Some(builtin) = matches.iter().find(|m| self.builtin.contains(*m)) {
            return Some(Resolved::BuiltIn(builtin.clone()));
        }
        matches.retain(|m| self.modules.contains_key(m));
        (!matches.is_empty()).then_some(Resolved::Modules(matches))
    }

    /// Whether `module` is compiled into the kernel.
    pub fn is_builtin(&self, module: &str) -> bool {
        self.builtin.contains(&normalize(module))
    }

    /// The file of a loadable module (absolute).
    pub fn file(&self, module: &str) -> Option<PathBuf> {
        self.modules
            .get(&normalize(module))
            .map(|(file, _)| self.dir.join(file))
    }

    /// The hard dependencies of a loadable module, as modules.dep lists them.
    pub fn dependencies(&self, module: &str) -> &[String] {
        self.modules
            .get(&normalize(module))
            .map_or(&[], |(_, deps)| deps.as_slice())
    }

    /// What modprobe loads before `module` when present (`softdep <module> pre: ...`).
    pub fn soft_dependencies(&self, module: &str) -> &[String] {
        self.softdeps_pre
            .get(&normalize(module))
            .map_or(&[], Vec::as_slice)
    }
}

/// fnmatch(3) without flags, as libkmod matches modules.alias patterns: `*`, `?` and
/// `[...]` classes (ranges, `!`/`^` negation).
fn glob_matches(pattern: &str, text: &str) -> bool {
    let pattern: Vec<char> = pattern.chars().collect();
    let text: Vec<char> = text.chars().collect();
    glob_at(&pattern, &text)
}

fn glob_at(pattern: &[char], text: &[char]) -> bool {
    match pattern.first() {
        None => text.is_empty(),
        Some('*') => (0..=text.len()).any(|skip| glob_at(&pattern[1..], &text[skip..])),
        Some('?') => !text.is_empty() && glob_at(&pattern[1..], &text[1..]),
        Some('[') => {
            let Some((&first, rest)) = text.split_first() else {
                return false;
            };
            match class_matches(&pattern[1..], first) {
                Some((matched, after)) => matched && glob_at(after, rest),
                // An unclosed '[' is a literal.
                None => first == '[' && glob_at(&pattern[1..], rest),
            }
        }
        Some(&literal) => text.first() == Some(&literal) && glob_at(&pattern[1..], &text[1..]),
    }
}

/// Matches `c` against the class body starting after `[`; returns whether it matched and
/// the pattern after the closing `]`, or `None` when the class is not closed.
fn class_matches(body: &[char], c: char) -> Option<(bool, &[char])> {
    let (negated, mut at) = match body.first() {
        Some('!' | '^') => (true, 1),
        _ => (false, 0),
    };
    let mut matched = false;
    let mut first = true;
    while at < body.len() {
        if body[at] == ']' && !first {
            return Some((matched != negated, &body[at + 1..]));
        }
        first = false;
        if at + 2 < body.len() && body[at + 1] == '-' && body[at + 2] != ']' {
            matched |= (body[at]..=body[at + 2]).contains(&c);
            at += 3;
        } else {
            matched |= body[at] == c;
            at += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    const DEP: &str = "\
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-crypt.ko.xz: kernel/drivers/md/dm-mod.ko
kernel/crypto/twofish_generic.ko: kernel/crypto/twofish_common.ko
kernel/crypto/twofish_common.ko:
kernel/arch/x86/crypto/twofish-avx-x86_64.ko: kernel/crypto/twofish_common.ko
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/drivers/virtio/virtio_pci.ko:
";
    const ALIAS: &str = "\
# Aliases extracted from modules themselves.
alias devname:mapper/control dm_mod
alias char-major-10-236 dm_mod
alias crypto-twofish twofish_generic
alias crypto-twofish twofish-avx-x86_64
alias fs-ext4 ext4
alias crypto-xts xts
alias pci:v00001AF4d*sv*sd*bc*sc*i* virtio_pci
alias md-level-[0-1] raid_any
";
    const BUILTIN: &str = "kernel/crypto/xts.ko\nkernel/drivers/md/md-mod.ko\n";
    const SOFTDEP: &str = "softdep ext4 pre: crc16 crc32c post: something\n";

    fn index() -> ModuleIndex {
        ModuleIndex::parse(Path::new("/lib/modules/r"), DEP, ALIAS, BUILTIN, SOFTDEP)
    }

    #[test]
    fn names_are_normalised_and_compression_suffixes_dropped() {
        assert_eq!(
            module_name_of("kernel/drivers/md/dm-crypt.ko.xz"),
            "dm_crypt"
        );
        assert_eq!(module_name_of("/abs/raid0.ko"), "raid0");
        assert!(is_compressed(Path::new("a/dm-crypt.ko.zst")));
        assert!(!is_compressed(Path::new("a/dm-crypt.ko")));
    }

    #[test]
    fn a_module_name_resolves_to_itself_with_either_spelling() {
        let index = index();
        let want = Some(Resolved::Modules(vec!["dm_crypt".into()]));
        assert_eq!(index.resolve("dm-crypt"), want);
        assert_eq!(index.resolve("dm_crypt"), want);
        assert_eq!(
            index.file("dm-crypt").unwrap(),
            Path::new("/lib/modules/r/kernel/drivers/md/dm-crypt.ko.xz")
        );
        assert_eq!(index.dependencies("dm_crypt"), ["dm_mod"]);
    }

    #[test]
    fn an_alias_resolves_to_every_matching_module_in_file_order() {
        let index = index();
        assert_eq!(
            index.resolve("crypto-twofish"),
            Some(Resolved::Modules(vec![
                "twofish_generic".into(),
                "twofish_avx_x86_64".into()
            ]))
        );
        assert_eq!(
            index.resolve("devname:mapper/control"),
            Some(Resolved::Modules(vec!["dm_mod".into()]))
        );
        assert_eq!(
            index.resolve("pci:v00001AF4d00001001sv00001AF4sd00000002bc01sc00i00"),
            Some(Resolved::Modules(vec!["virtio_pci".into()]))
        );
    }

    #[test]
    fn builtins_resolve_to_nothing_to_load() {
        let index = index();
        assert_eq!(
            index.resolve("md_mod"),
            Some(Resolved::BuiltIn("md_mod".into()))
        );
        assert_eq!(
            index.resolve("md-mod"),
            Some(Resolved::BuiltIn("md_mod".into()))
        );
        // The alias names a module that is built in.
        assert_eq!(
            index.resolve("crypto-xts"),
            Some(Resolved::BuiltIn("xts".into()))
        );
        assert!(index.is_builtin("xts"));
        assert!(!index.is_builtin("dm_mod"));
    }

    #[test]
    fn unknown_names_and_aliases_to_missing_modules_resolve_to_none() {
        let index = index();
        assert_eq!(index.resolve("raid0"), None);
        // "raid_any" is named by an alias but has no modules.dep entry.
        assert_eq!(index.resolve("md-level-0"), None);
    }

    #[test]
    fn soft_dependencies_are_the_pre_list_only() {
        let index = index();
        assert_eq!(index.soft_dependencies("ext4"), ["crc16", "crc32c"]);
        assert!(index.soft_dependencies("dm_mod").is_empty());
    }

    #[test]
    fn globs_match_like_fnmatch() {
        assert!(glob_matches("md_level_[0-1]", "md_level_1"));
        assert!(!glob_matches("md_level_[0-1]", "md_level_5"));
        assert!(glob_matches("a[!x]c", "abc"));
        assert!(!glob_matches("a[!x]c", "axc"));
        assert!(glob_matches("a?c*", "abcdef"));
        assert!(!glob_matches("a?c", "ac"));
        assert!(glob_matches("[]]x", "]x"));
        assert!(glob_matches("a[b", "a[b"));
        assert!(glob_matches("*", ""));
    }

    #[test]
    fn alias_normalisation_keeps_ranges_inside_classes() {
        assert_eq!(normalize_alias("md-level-[0-9]"), "md_level_[0-9]");
    }

    #[test]
    fn a_tree_without_modules_dep_is_an_error_naming_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let error = ModuleIndex::read(dir.path()).unwrap_err();
        assert!(error.to_string().contains("modules.dep"), "{error}");
    }
}
