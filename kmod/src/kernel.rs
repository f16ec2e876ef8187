//! [`Kernel`]: the running kernel's module state (`/proc/modules`, `/sys/module`) and its
//! module tree, and loading a module with its dependencies by `finit_module(2)`.

use std::cell::OnceCell;
use std::fmt;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};

use nix::errno::Errno;

use crate::index::{is_compressed, normalize, ModuleIndex, Resolved};
use crate::modprobe_d::ModprobeRules;
use crate::{syscall, Error};

/// Puts one module file into the kernel. [`Finit`] is the real one; tests substitute a
/// recorder, since a host test cannot load modules.
pub trait ModuleLoader: fmt::Debug {
    /// Loads `module` from `file`. A module that is already loaded is success.
    fn load(&self, module: &str, file: &Path) -> Result<(), Error>;
}

/// `finit_module(2)` on the file, compressed files decompressed by the kernel.
#[derive(Debug, Clone, Copy, Default)]
pub struct Finit;

impl ModuleLoader for Finit {
    fn load(&self, module: &str, file: &Path) -> Result<(), Error> {
        let opened = File::open(file).map_err(|source| Error::Open {
            path: file.to_owned(),
            source,
        })?;
        let compressed = is_compressed(file);
        match syscall::load_module_file(&opened, compressed) {
            // Someone (the kernel's own helper, a parallel modprobe) was faster.
            Ok(()) | Err(Errno::EEXIST) => Ok(()),
            Err(source @ (Errno::EOPNOTSUPP | Errno::EINVAL)) if compressed => {
                Err(Error::CompressedUnsupported {
                    module: module.to_owned(),
                    path: file.to_owned(),
                    source,
                })
            }
            Err(source) => Err(Error::Load {
                module: module.to_owned(),
                path: file.to_owned(),
                source,
            }),
        }
    }
}

/// One module to load, in order.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Step {
    module: String,
    file: PathBuf,
    /// Pulled in by a soft dependency: its failure does not fail the load (modprobe's rule).
    optional: bool,
}

/// The running kernel as seen under a root directory (`/` on a real system, a fake tree in
/// tests): `proc/`, `sys/` and `lib/modules/<release>/`.
#[derive(Debug)]
pub struct Kernel {
    proc: PathBuf,
    sys: PathBuf,
    release: String,
    module_dir: PathBuf,
    loader: Box<dyn ModuleLoader>,
    index: OnceCell<ModuleIndex>,
    /// Where `etc/modprobe.d` and the other configuration directories are.
    root: PathBuf,
    modprobe_rules: OnceCell<ModprobeRules>,
}

impl Kernel {
    /// The running kernel: `/proc`, `/sys`, `/lib/modules/$(uname -r)`.
    pub fn host() -> Result<Self, Error> {
        Self::at(Path::new("/"))
    }

    /// The kernel whose `proc/`, `sys/` and `lib/modules/` are under `root`; the release
    /// comes from `proc/sys/kernel/osrelease` (what `uname -r` prints).
    pub fn at(root: &Path) -> Result<Self, Error> {
        let proc = root.join("proc");
        let release_file = proc.join("sys/kernel/osrelease");
        let release = fs::read_to_string(&release_file)
            .map_err(|source| Error::Read {
                path: release_file,
                source,
            })?
            .trim()
            .to_owned();
        Ok(Kernel {
            module_dir: root.join("lib/modules").join(&release),
            sys: root.join("sys"),
            proc,
            release,
            loader: Box::new(Finit),
            index: OnceCell::new(),
            root: root.to_owned(),
            modprobe_rules: OnceCell::new(),
        })
    }

    /// Loads modules with `loader` instead of `finit_module(2)`.
    pub fn with_loader(mut self, loader: Box<dyn ModuleLoader>) -> Self {
        self.loader = loader;
        self
    }

    /// `uname -r`.
    pub fn release(&self) -> &str {
        &self.release
    }

    /// `/lib/modules/<release>`.
    pub fn module_dir(&self) -> &Path {
        &self.module_dir
    }

    pub(crate) fn proc(&self) -> &Path {
        &self.proc
    }

    pub(crate) fn sys(&self) -> &Path {
        &self.sys
    }

    /// The module tree's index, read once.
    pub fn index(&self) -> Result<&ModuleIndex, Error> {
        if let Some(index) = self.index.get() {
            return Ok(index);
        }
        let index = ModuleIndex::read(&self.module_dir)?;
        Ok(self.index.get_or_init(|| index))
    }

    /// The `blacklist` and `install` rules of the modprobe configuration, read once.
    fn modprobe_rules(&self) -> &ModprobeRules {
        self.modprobe_rules
            .get_or_init(|| ModprobeRules::read(&self.root))
    }

    /// The program the kernel runs to load a module it needs
    /// (`/proc/sys/kernel/modprobe`), or `None` when unset or unreadable.
    pub fn module_helper(&self) -> Option<String> {
        fs::read_to_string(self.proc.join("sys/kernel/modprobe"))
            .ok()
            .map(|helper| helper.trim().to_owned())
            .filter(|helper| !helper.is_empty())
    }

    /// Whether `module` is in `/proc/modules` (loaded, or being loaded by someone else).
    pub fn is_loaded(&self, module: &str) -> Result<bool, Error> {
        let path = self.proc.join("modules");
        let text = match fs::read_to_string(&path) {
            Ok(text) => text,
            // A kernel without CONFIG_MODULES has no /proc/modules: nothing is loaded.
            Err(error) if error.kind() == io::ErrorKind::NotFound => return Ok(false),
            Err(source) => return Err(Error::Read { path, source }),
        };
        let module = normalize(module);
        Ok(text
            .lines()
            .any(|line| line.split_whitespace().next() == Some(module.as_str())))
    }

    /// Whether `module` is in the kernel: loaded, listed in `modules.builtin`, or present
    /// under `/sys/module` (built-ins with parameters appear there even without a tree).
    pub fn module_present(&self, module: &str) -> Result<bool, Error> {
        let module = normalize(module);
        Ok(self.is_loaded(&module)?
            || self.sys.join("module").join(&module).exists()
            || self.index().is_ok_and(|index| index.is_builtin(&module)))
    }

    /// Loads `name` (a module name or an alias) and everything it depends on, from the
    /// module tree. An alias naming several modules (`crypto-aes`) loads each; it is enough
    /// that one of them loads (others may need CPU features this machine lacks). Returns
    /// the modules this call loaded, dependencies first; empty when all were present.
    pub fn load(&self, name: &str) -> Result<Vec<String>, Error> {
        let mut loaded = Vec::new();
        let mut first_error = None;
        let mut any_ok = false;
        for candidate in self.candidates(name)? {
            match self
                .steps(&candidate)
                .and_then(|steps| self.load_steps(&steps, &mut loaded))
            {
                Ok(()) => any_ok = true,
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !any_ok => Err(error),
            _ => Ok(loaded),
        }
    }

    /// What [`Kernel::load`] would load, without loading anything: the modules of every
    /// candidate that could be loaded (an error only when none could).
    pub fn would_load(&self, name: &str) -> Result<Vec<String>, Error> {
        let mut modules: Vec<String> = Vec::new();
        let mut first_error = None;
        let mut any_ok = false;
        for candidate in self.candidates(name)? {
            match self.steps(&candidate) {
                Ok(steps) => {
                    any_ok = true;
                    for step in steps {
                        if !modules.contains(&step.module) {
                            modules.push(step.module);
                        }
                    }
                }
                Err(error) => {
                    first_error.get_or_insert(error);
                }
            }
        }
        match first_error {
            Some(error) if !any_ok => Err(error),
            _ => Ok(modules),
        }
    }

    /// The modules `name` stands for (empty when built in).
    fn candidates(&self, name: &str) -> Result<Vec<String>, Error> {
        let index = self.index()?;
        match index.resolve(name) {
            Some(Resolved::BuiltIn(_)) => Ok(Vec::new()),
            Some(Resolved::Modules(modules)) => Ok(modules),
            None => Err(Error::NotInTree {
                module: name.to_owned(),
                dir: index.dir().to_owned(),
            }),
        }
    }

    /// The load order for `module`: soft dependencies, then hard dependencies (each
    /// after its own), then the module; modules already present are left out.
    fn steps(&self, module: &str) -> Result<Vec<Step>, Error> {
        let mut steps = Vec::new();
        let mut visiting = Vec::new();
        self.collect_steps(module, false, &mut steps, &mut visiting)?;
        Ok(steps)
    }

    fn collect_steps(
        &self,
        module: &str,
        optional: bool,
        steps: &mut Vec<Step>,
        visiting: &mut Vec<String>,
    ) -> Result<(), Error> {
        let index = self.index()?;
        if steps.iter().any(|s| s.module == module)
            || visiting.iter().any(|m| m == module)
            || self.module_present(module)?
        {
            return Ok(());
        }
        let Some(file) = index.file(module) else {
            return Err(Error::NotInTree {
                module: module.to_owned(),
                dir: index.dir().to_owned(),
            });
        };
        if let Some(rule) = self.modprobe_rules().forbidding(module) {
            return Err(Error::Forbidden {
                module: module.to_owned(),
                rule: rule.text.clone(),
                at: rule.source.to_string(),
            });
        }
        visiting.push(module.to_owned());
        for soft in index.soft_dependencies(module) {
            if let Some(Resolved::Modules(modules)) = index.resolve(soft) {
                for soft_module in modules {
                    // A soft dependency that cannot be resolved is skipped, as modprobe does.
                    let _ = self.collect_steps(&soft_module, true, steps, visiting);
                }
            }
        }
        for dependency in index.dependencies(module) {
            self.collect_steps(dependency, optional, steps, visiting)?;
        }
        visiting.pop();
        steps.push(Step {
            module: module.to_owned(),
            file,
            optional,
        });
        Ok(())
    }

    fn load_steps(&self, steps: &[Step], loaded: &mut Vec<String>) -> Result<(), Error> {
        for step in steps {
            if loaded.contains(&step.module) || self.is_loaded(&step.module)? {
                continue;
            }
            match self.loader.load(&step.module, &step.file) {
                Ok(()) => loaded.push(step.module.clone()),
                Err(_) if step.optional => {}
                Err(error) => return Err(error),
            }
        }
        Ok(())
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use std::cell::RefCell;
    use std::rc::Rc;

    use super::*;

    /// A fake root: `proc/`, `sys/`, `lib/modules/6.1.0-test/` with index files.
    pub(crate) struct FakeRoot {
        pub dir: tempfile::TempDir,
    }

    pub(crate) const RELEASE: &str = "6.1.0-test";

    impl FakeRoot {
        pub fn new() -> Self {
            let dir = tempfile::tempdir().unwrap();
            fs::create_dir_all(dir.path().join("proc/sys/kernel")).unwrap();
            fs::create_dir_all(dir.path().join("sys/module")).unwrap();
            fs::write(dir.path().join("proc/sys/kernel/osrelease"), RELEASE).unwrap();
            fs::write(dir.path().join("proc/modules"), "").unwrap();
            FakeRoot { dir }
        }

        pub fn path(&self, relative: &str) -> PathBuf {
            self.dir.path().join(relative)
        }

        pub fn write(&self, relative: &str, text: &str) {
            let path = self.path(relative);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(path, text).unwrap();
        }

        pub fn tree(&self, file: &str, text: &str) {
            self.write(&format!("lib/modules/{RELEASE}/{file}"), text);
        }

        pub fn loaded(&self, module: &str) {
            let path = self.path("proc/modules");
            let mut text = fs::read_to_string(&path).unwrap();
            text.push_str(&format!("{module} 16384 0 - Live 0x0000000000000000\n"));
            fs::write(path, text).unwrap();
        }

        /// A kernel over this root whose loads are recorded and appear in /proc/modules;
        /// modules named in `refuse` fail with ENODEV.
        pub fn kernel(&self, refuse: &[&str]) -> (Kernel, Rc<RefCell<Vec<String>>>) {
            let recorder = Recorder {
                proc_modules: self.path("proc/modules"),
                refuse: refuse.iter().map(|m| (*m).to_owned()).collect(),
                loads: Rc::default(),
            };
            let loads = Rc::clone(&recorder.loads);
            (
                Kernel::at(self.dir.path())
                    .unwrap()
                    .with_loader(Box::new(recorder)),
                loads,
            )
        }
    }

    #[derive(Debug)]
    struct Recorder {
        proc_modules: PathBuf,
        refuse: Vec<String>,
        loads: Rc<RefCell<Vec<String>>>,
    }

    impl ModuleLoader for Recorder {
        fn load(&self, module: &str, file: &Path) -> Result<(), Error> {
            assert!(file.is_absolute(), "{}", file.display());
            if self.refuse.iter().any(|m| m == module) {
                return Err(Error::Load {
                    module: module.to_owned(),
                    path: file.to_owned(),
                    source: Errno::ENODEV,
                });
            }
            self.loads.borrow_mut().push(module.to_owned());
            let mut text = fs::read_to_string(&self.proc_modules).unwrap();
            text.push_str(&format!("{module} 16384 0 - Live 0x0\n"));
            fs::write(&self.proc_modules, text).unwrap();
            Ok(())
        }
    }

    pub(crate) const DEP: &str = "\
kernel/drivers/md/dm-mod.ko:
kernel/drivers/md/dm-crypt.ko: kernel/drivers/md/dm-mod.ko
kernel/drivers/md/md-mod.ko:
kernel/drivers/md/raid0.ko: kernel/drivers/md/md-mod.ko
kernel/drivers/md/raid1.ko: kernel/drivers/md/md-mod.ko
kernel/crypto/twofish_common.ko:
kernel/crypto/twofish_generic.ko: kernel/crypto/twofish_common.ko
kernel/arch/x86/crypto/twofish-avx-x86_64.ko: kernel/crypto/twofish_common.ko
kernel/crypto/xts.ko:
kernel/crypto/ecb.ko:
kernel/fs/ext4/ext4.ko: kernel/fs/jbd2/jbd2.ko kernel/fs/mbcache.ko
kernel/fs/jbd2/jbd2.ko:
kernel/fs/mbcache.ko:
kernel/crypto/crc32c_generic.ko:
";
    pub(crate) const ALIAS: &str = "\
alias devname:mapper/control dm_mod
alias crypto-twofish twofish_generic
alias twofish twofish_generic
alias crypto-twofish twofish-avx-x86_64
alias twofish twofish-avx-x86_64
alias crypto-xts xts
alias xts xts
alias crypto-crc32c crc32c_generic
alias crc32c crc32c_generic
alias fs-ext4 ext4
alias md-level-0 raid0
";

    pub(crate) fn debian_like() -> FakeRoot {
        let root = FakeRoot::new();
        root.tree("modules.dep", DEP);
        root.tree("modules.alias", ALIAS);
        root.tree("modules.builtin", "kernel/crypto/aes_generic.ko\n");
        root.tree("modules.softdep", "softdep ext4 pre: crc32c\n");
        root
    }

    #[test]
    fn the_release_and_tree_come_from_the_root() {
        let root = debian_like();
        let (kernel, _) = root.kernel(&[]);
        assert_eq!(kernel.release(), RELEASE);
        assert_eq!(
            kernel.module_dir(),
            root.path(&format!("lib/modules/{RELEASE}"))
        );
    }

    #[test]
    fn a_module_with_a_modprobe_rule_is_not_loaded_and_the_rule_is_named() {
        let root = debian_like();
        root.write(
            "etc/modprobe.d/no-crypt.conf",
            "install dm_crypt /bin/false\nblacklist twofish-avx-x86_64\n",
        );
        let (kernel, loads) = root.kernel(&[]);
        let error = kernel.load("dm-crypt").unwrap_err();
        let text = error.to_string();
        assert!(matches!(error, Error::Forbidden { .. }), "{text}");
        assert!(text.contains("`install dm_crypt /bin/false`"), "{text}");
        assert!(text.contains("no-crypt.conf:1"), "{text}");
        assert!(kernel.would_load("dm_crypt").is_err());
        // Not even its dependency was loaded: the refusal comes before any step.
        assert!(loads.borrow().is_empty(), "{:?}", loads.borrow());
        // Of an alias's modules, the blacklisted one is left out and another one loads.
        assert_eq!(
            kernel.load("crypto-twofish").unwrap(),
            ["twofish_common", "twofish_generic"]
        );
        assert!(!loads.borrow().iter().any(|m| m == "twofish_avx_x86_64"));
    }

    #[test]
    fn dependencies_load_first_and_each_once() {
        let root = debian_like();
        let (kernel, loads) = root.kernel(&[]);
        assert_eq!(kernel.load("dm-crypt").unwrap(), ["dm_mod", "dm_crypt"]);
        assert_eq!(kernel.load("raid0").unwrap(), ["md_mod", "raid0"]);
        assert_eq!(kernel.load("raid1").unwrap(), ["raid1"]);
        assert_eq!(
            *loads.borrow(),
            ["dm_mod", "dm_crypt", "md_mod", "raid0", "raid1"]
        );
    }

    #[test]
    fn present_modules_are_not_loaded_again() {
        let root = debian_like();
        root.loaded("dm_mod");
        let (kernel, loads) = root.kernel(&[]);
        assert_eq!(kernel.load("dm_crypt").unwrap(), ["dm_crypt"]);
        assert!(kernel.load("dm-crypt").unwrap().is_empty());
        assert!(kernel.load("aes_generic").unwrap().is_empty(), "built in");
        assert_eq!(*loads.borrow(), ["dm_crypt"]);
    }

    #[test]
    fn soft_dependencies_load_before_and_may_fail() {
        let root = debian_like();
        let (kernel, loads) = root.kernel(&[]);
        assert_eq!(
            kernel.load("fs-ext4").unwrap(),
            ["crc32c_generic", "jbd2", "mbcache", "ext4"]
        );
        let root = debian_like();
        let (kernel, loads_refused) = root.kernel(&["crc32c_generic"]);
        assert_eq!(kernel.load("ext4").unwrap(), ["jbd2", "mbcache", "ext4"]);
        assert_eq!(loads.borrow().len(), 4);
        assert_eq!(loads_refused.borrow().len(), 3);
    }

    #[test]
    fn an_alias_with_several_modules_needs_one_to_load() {
        let root = debian_like();
        let (kernel, _) = root.kernel(&["twofish_avx_x86_64"]);
        assert_eq!(
            kernel.load("crypto-twofish").unwrap(),
            ["twofish_common", "twofish_generic"]
        );
        let root = debian_like();
        let (kernel, _) = root.kernel(&["twofish_avx_x86_64", "twofish_generic"]);
        let error = kernel.load("crypto-twofish").unwrap_err();
        assert!(matches!(error, Error::Load { ref module, .. } if module == "twofish_generic"));
    }

    #[test]
    fn a_failed_hard_dependency_fails_the_load() {
        let root = debian_like();
        let (kernel, loads) = root.kernel(&["dm_mod"]);
        let error = kernel.load("dm_crypt").unwrap_err();
        assert!(
            matches!(error, Error::Load { ref module, source: Errno::ENODEV, .. } if module == "dm_mod")
        );
        assert!(loads.borrow().is_empty());
    }

    #[test]
    fn would_load_lists_without_loading() {
        let root = debian_like();
        root.loaded("md_mod");
        let (kernel, loads) = root.kernel(&[]);
        assert_eq!(kernel.would_load("md-level-0").unwrap(), ["raid0"]);
        assert_eq!(
            kernel.would_load("crypto-twofish").unwrap(),
            ["twofish_common", "twofish_generic", "twofish_avx_x86_64"]
        );
        assert!(loads.borrow().is_empty());
        assert!(!kernel.is_loaded("raid0").unwrap());
    }

    #[test]
    fn unknown_names_and_missing_trees_are_errors() {
        let root = debian_like();
        let (kernel, _) = root.kernel(&[]);
        assert!(matches!(
            kernel.load("dm-integrity").unwrap_err(),
            Error::NotInTree { ref module, .. } if module == "dm-integrity"
        ));
        let bare = FakeRoot::new();
        let (kernel, _) = bare.kernel(&[]);
        assert!(matches!(
            kernel.load("dm_mod").unwrap_err(),
            Error::ModuleTree { ref path, .. } if path.ends_with("modules.dep")
        ));
    }

    #[test]
    fn sysfs_presence_counts_without_a_tree() {
        let root = FakeRoot::new();
        fs::create_dir_all(root.path("sys/module/md_mod/parameters")).unwrap();
        let (kernel, _) = root.kernel(&[]);
        assert!(kernel.module_present("md-mod").unwrap());
        assert!(!kernel.module_present("dm_mod").unwrap());
    }

    #[test]
    fn the_module_helper_is_read_from_proc() {
        let root = FakeRoot::new();
        let (kernel, _) = root.kernel(&[]);
        assert_eq!(kernel.module_helper(), None);
        root.write("proc/sys/kernel/modprobe", "/sbin/modprobe\n");
        assert_eq!(kernel.module_helper().as_deref(), Some("/sbin/modprobe"));
    }

    #[test]
    fn finit_reports_a_missing_file_by_path() {
        let error = Finit
            .load("dm_mod", Path::new("/nonexistent/dm-mod.ko"))
            .unwrap_err();
        assert!(matches!(error, Error::Open { ref path, .. } if path.ends_with("dm-mod.ko")));
    }
}
