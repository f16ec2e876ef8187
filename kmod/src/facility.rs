//! [`Facility`]: one piece of the kernel tosskey uses, how to tell it is there, and what
//! brings it up; [`Kernel::ensure`] and [`Kernel::survey`] act on it.

use std::fs;
use std::io;

use serde::Serialize;

use crate::{Error, Kernel};

/// How to tell, without side effects, that a facility is in the kernel.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Probe {
    /// `/proc/misc` lists the misc device (device-mapper registers `device-mapper`).
    Misc(&'static str),
    /// A path under `/sys` exists.
    Sysfs(&'static str),
    /// `/proc/mdstat`'s `Personalities :` line has `[level]`.
    MdPersonality(String),
    /// `/proc/filesystems` lists the type.
    Filesystem(String),
    /// The module is loaded or built in.
    Module(String),
    /// `/proc/crypto` has the instance (`xts(twofish)`), or has the cipher while every
    /// template module it needs (`ecb`, `xts`) is in.
    Cipher {
        instance: String,
        cipher: String,
        templates: Vec<String>,
    },
}

/// A kernel facility: its name for humans, the modules (names or aliases) that provide it,
/// the kernel configuration option(s) that build it, and how to see it is present.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Facility {
    name: String,
    modules: Vec<String>,
    config: String,
    probe: Probe,
}

impl Facility {
    /// device-mapper itself: `/dev/mapper/control` and the `linear`/`striped` targets,
    /// which are part of `dm_mod`.
    pub fn device_mapper() -> Self {
        Facility {
            name: "device-mapper".into(),
            modules: vec!["dm_mod".into()],
            config: "CONFIG_BLK_DEV_DM".into(),
            probe: Probe::Misc("device-mapper"),
        }
    }

    /// A device-mapper target type (`crypt`, `striped`, `linear`, ...).
    pub fn dm_target(target: &str) -> Self {
        if matches!(target, "striped" | "linear") {
            return Facility {
                name: format!("dm-{target} target"),
                ..Self::device_mapper()
            };
        }
        let module = format!("dm_{target}");
        Facility {
            name: format!("dm-{target} target"),
            modules: vec![module.clone()],
            config: format!("CONFIG_DM_{}", target.to_uppercase()),
            probe: Probe::Module(module),
        }
    }

    /// md (software RAID) itself: `md_mod` and its `new_array` parameter.
    pub fn md() -> Self {
        Facility {
            name: "md".into(),
            modules: vec!["md_mod".into()],
            config: "CONFIG_BLK_DEV_MD".into(),
            probe: Probe::Sysfs("module/md_mod/parameters/new_array"),
        }
    }

    /// An md personality (`raid0`, `raid1`, `linear`, `raid10`); the module has the
    /// level's name.
    pub fn md_personality(level: &str) -> Self {
        Facility {
            name: format!("md {level} personality"),
            modules: vec![level.to_owned()],
            config: format!("CONFIG_MD_{}", level.to_uppercase()),
            probe: Probe::MdPersonality(level.to_owned()),
        }
    }

    /// A block cipher in a mode, as dm-crypt asks the crypto API for it: `xts(twofish)`
    /// from `mode` = `xts`, `cipher` = `twofish`. The aliases `twofish`, `xts` name the
    /// implementing modules (every crypto module carries its algorithm's name as an alias).
    /// The generic `xts` template runs over `ecb(<cipher>)`, so `ecb` comes along unless an
    /// accelerated driver (aesni's `xts(aes)`) provides the whole mode.
    pub fn cipher(mode: &str, cipher: &str) -> Self {
        let mut templates = Vec::new();
        if mode == "xts" {
            templates.push("ecb".to_owned());
        }
        templates.push(mode.to_owned());
        let options: Vec<String> = std::iter::once(cipher)
            .chain(templates.iter().map(String::as_str))
            .map(|name| format!("CONFIG_CRYPTO_{}", name.to_uppercase()))
            .collect();
        Facility {
            name: format!("cipher {mode}({cipher})"),
            modules: std::iter::once(cipher.to_owned())
                .chain(templates.iter().cloned())
                .collect(),
            config: options.join(" and "),
            probe: Probe::Cipher {
                instance: format!("{mode}({cipher})"),
                cipher: cipher.to_owned(),
                templates,
            },
        }
    }

    /// A filesystem type for mount(2) (`ext4`).
    pub fn filesystem(fstype: &str) -> Self {
        Facility {
            name: format!("filesystem {fstype}"),
            modules: vec![fstype.to_owned()],
            config: format!("CONFIG_{}_FS", fstype.to_uppercase()),
            probe: Probe::Filesystem(fstype.to_owned()),
        }
    }

    /// The facility's name: `device-mapper`, `dm-crypt target`, `cipher xts(twofish)`.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The modules (or aliases) that provide it, in load order.
    pub fn modules(&self) -> &[String] {
        &self.modules
    }

    /// The kernel configuration option(s) that build it.
    pub fn config(&self) -> &str {
        &self.config
    }
}

/// Where a facility stands after [`Kernel::ensure`] (or, for `would-*`, [`Kernel::survey`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum State {
    /// It was already there (loaded earlier or built in): nothing done.
    Present,
    /// The kernel loaded it through its own module helper when asked by its request path.
    Requested,
    /// This crate loaded it with `finit_module(2)` from the module tree.
    Loaded,
    /// Survey: not present; the kernel's request path will be tried first.
    WouldRequest,
    /// Survey: not present; the listed modules would be loaded from the tree.
    WouldLoad,
    /// Survey: not present and not in the module tree; only the kernel's request path
    /// (its helper) could still bring it up.
    Missing,
}

/// What happened to one facility (a line of `--dry-run` and of the JSON report).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Outcome {
    pub facility: String,
    pub state: State,
    /// Modules that appeared in `/proc/modules` (`requested`, `loaded`) or would be loaded
    /// from the tree (`would-*`), dependencies first.
    pub modules: Vec<String>,
}

/// A side-effect-free trigger of the kernel's own module loading for a facility, e.g.
/// opening `/dev/mapper/control` (the kernel requests `char-major-10-236`). `Ok` means the
/// facility is usable now.
pub type KernelRequest<'a> = &'a dyn Fn() -> io::Result<()>;

impl Kernel {
    /// Whether `facility` is in the kernel now. Reads only `/proc` and `/sys`.
    pub fn is_present(&self, facility: &Facility) -> Result<bool, Error> {
        let read = |relative: &str| -> Result<String, Error> {
            let path = self.proc().join(relative);
            match fs::read_to_string(&path) {
                Ok(text) => Ok(text),
                // /proc/mdstat appears with md_mod; /proc/crypto with the crypto API.
                Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(String::new()),
                Err(source) => Err(Error::Read { path, source }),
            }
        };
        Ok(match &facility.probe {
            Probe::Misc(device) => read("misc")?
                .lines()
                .any(|line| line.split_whitespace().nth(1) == Some(device)),
            Probe::Sysfs(path) => self.sys().join(path).exists(),
            Probe::MdPersonality(level) => read("mdstat")?
                .lines()
                .find(|line| line.starts_with("Personalities"))
                .is_some_and(|line| line.split_whitespace().any(|w| w == format!("[{level}]"))),
            Probe::Filesystem(fstype) => read("filesystems")?
                .lines()
                .any(|line| line.split_whitespace().last() == Some(fstype.as_str())),
            Probe::Module(module) => self.module_present(module)?,
            Probe::Cipher {
                instance,
                cipher,
                templates,
            } => {
                let crypto = read("crypto")?;
                let names: Vec<&str> = crypto
                    .lines()
                    .filter_map(|line| line.strip_prefix("name"))
                    .filter_map(|rest| rest.split_once(':'))
                    .map(|(_, name)| name.trim())
                    .collect();
                let mut templates_present = true;
                for template in templates {
                    templates_present &= self.module_present(template)?;
                }
                names.contains(&instance.as_str())
                    || (names.contains(&cipher.as_str()) && templates_present)
            }
        })
    }

    /// Makes sure `facility` is in the kernel: present already → nothing; else the
    /// kernel's own `request` path, when the facility has one; else `finit_module(2)` of
    /// its modules (with dependencies) from the module tree. Fails with
    /// [`Error::Unavailable`], naming the facility, its modules and kernel option.
    pub fn ensure(
        &self,
        facility: &Facility,
        request: Option<KernelRequest<'_>>,
    ) -> Result<Outcome, Error> {
        let outcome = |state, modules| Outcome {
            facility: facility.name.clone(),
            state,
            modules,
        };
        if self.is_present(facility)? {
            return Ok(outcome(State::Present, Vec::new()));
        }
        let before = self.loaded_modules()?;
        let mut request_failure = String::new();
        if let Some(request) = request {
            match request() {
                Ok(()) => {
                    let appeared = self.loaded_modules()?;
                    let modules = appeared.into_iter().filter(|m| !before.contains(m));
                    return Ok(outcome(State::Requested, modules.collect()));
                }
                Err(error) => {
                    request_failure = match self.module_helper() {
                        Some(helper) => {
                            format!(
                                " (the kernel's module request through {helper} failed: {error})"
                            )
                        }
                        None => format!(
                        " (the kernel has no module helper in /proc/sys/kernel/modprobe: {error})"
                    ),
                    }
                }
            }
        }
        let mut loaded = Vec::new();
        let mut load_error = None;
        for module in &facility.modules {
            match self.load(module) {
                Ok(modules) => loaded.extend(modules),
                Err(error) => {
                    load_error.get_or_insert(error);
                }
            }
        }
        let load_error = match load_error {
            None if self.is_present(facility)? || request.is_some_and(|r| r().is_ok()) => {
                return Ok(outcome(State::Loaded, loaded));
            }
            None => Error::NoEffect {
                modules: loaded.join(", "),
            },
            Some(error) => error,
        };
        Err(Error::Unavailable {
            facility: facility.name.clone(),
            module: facility.modules.join(" "),
            config: facility.config.clone(),
            request: request_failure,
            load: Box::new(load_error),
        })
    }

    /// What [`Kernel::ensure`] would do, doing nothing (`--dry-run`). `has_request`: the
    /// caller would pass a kernel request path.
    pub fn survey(&self, facility: &Facility, has_request: bool) -> Result<Outcome, Error> {
        let (state, modules) = if self.is_present(facility)? {
            (State::Present, Vec::new())
        } else {
            let mut modules: Vec<String> = Vec::new();
            let mut resolvable = true;
            for module in &facility.modules {
                match self.would_load(module) {
                    Ok(more) => {
                        for module in more {
                            if !modules.contains(&module) {
                                modules.push(module);
                            }
                        }
                    }
                    Err(_) => resolvable = false,
                }
            }
            let state = if has_request {
                State::WouldRequest
            } else if resolvable {
                State::WouldLoad
            } else {
                State::Missing
            };
            (state, modules)
        };
        Ok(Outcome {
            facility: facility.name.clone(),
            state,
            modules,
        })
    }

    /// The names in `/proc/modules`.
    fn loaded_modules(&self) -> Result<Vec<String>, Error> {
        let path = self.proc().join("modules");
        match fs::read_to_string(&path) {
            Ok(text) => Ok(text
                .lines()
                .filter_map(|line| line.split_whitespace().next())
                .map(str::to_owned)
                .collect()),
            Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(Vec::new()),
            Err(source) => Err(Error::Read { path, source }),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::kernel::tests::{debian_like, FakeRoot};

    #[test]
    fn present_facilities_are_seen_in_proc_and_sys() {
        let root = FakeRoot::new();
        root.write("proc/misc", "237 loop-control\n236 device-mapper\n");
        root.write(
            "proc/mdstat",
            "Personalities : [raid0] [raid1] \nunused devices: <none>\n",
        );
        root.write("proc/filesystems", "nodev\tsysfs\n\text4\n");
        root.write(
            "proc/crypto",
            "name         : xts(aes)\ndriver       : xts-aes-aesni\n\nname         : twofish\n",
        );
        root.write("sys/module/md_mod/parameters/new_array", "");
        root.loaded("dm_crypt");
        let (kernel, _) = root.kernel(&[]);
        for facility in [
            Facility::device_mapper(),
            Facility::dm_target("striped"),
            Facility::dm_target("crypt"),
            Facility::md(),
            Facility::md_personality("raid1"),
            Facility::filesystem("ext4"),
            Facility::cipher("xts", "aes"),
        ] {
            assert!(kernel.is_present(&facility).unwrap(), "{facility:?}");
        }
        for facility in [
            Facility::md_personality("linear"),
            Facility::filesystem("xfs"),
            // twofish is there but xts is neither loaded nor known to be built in.
            Facility::cipher("xts", "twofish"),
            Facility::dm_target("integrity"),
        ] {
            assert!(!kernel.is_present(&facility).unwrap(), "{facility:?}");
        }
    }

    #[test]
    fn a_present_facility_needs_nothing() {
        let root = debian_like();
        root.write("proc/filesystems", "\text4\n");
        let (kernel, loads) = root.kernel(&[]);
        let request = || -> io::Result<()> { panic!("must not be asked") };
        let outcome = kernel
            .ensure(&Facility::filesystem("ext4"), Some(&request))
            .unwrap();
        assert_eq!(outcome.state, State::Present);
        assert!(loads.borrow().is_empty());
    }

    #[test]
    fn the_kernel_request_comes_first_and_reports_what_appeared() {
        let root = debian_like();
        let (kernel, loads) = root.kernel(&[]);
        let request = || -> io::Result<()> {
            // What the kernel's helper does on "devname:mapper/control".
            root.loaded("dm_mod");
            Ok(())
        };
        let outcome = kernel
            .ensure(&Facility::device_mapper(), Some(&request))
            .unwrap();
        assert_eq!(outcome.state, State::Requested);
        assert_eq!(outcome.modules, ["dm_mod"]);
        assert!(loads.borrow().is_empty(), "nothing loaded by finit");
    }

    #[test]
    fn a_failed_request_falls_back_to_the_tree() {
        let root = debian_like();
        let (kernel, loads) = root.kernel(&[]);
        let asked = Cell::new(0);
        let request = || -> io::Result<()> {
            asked.set(asked.get() + 1);
            // After finit, dm_mod is in /proc/modules: the node opens.
            if kernel.is_loaded("dm_mod").unwrap() {
                Ok(())
            } else {
                Err(io::Error::from_raw_os_error(libc::ENODEV))
            }
        };
        let outcome = kernel
            .ensure(&Facility::dm_target("linear"), Some(&request))
            .unwrap();
        assert_eq!(outcome.state, State::Loaded);
        assert_eq!(outcome.modules, ["dm_mod"]);
        assert_eq!(*loads.borrow(), ["dm_mod"]);
        assert_eq!(asked.get(), 2, "asked, then confirmed after loading");
    }

    #[test]
    fn md_and_its_personality_load_from_the_tree() {
        let root = debian_like();
        let (kernel, _) = root.kernel(&[]);
        let md = kernel.ensure(&Facility::md(), None);
        // The fake loader does not create sysfs: the load "had no effect".
        assert!(matches!(
            md.unwrap_err(),
            Error::Unavailable { ref load, .. } if matches!(**load, Error::NoEffect { .. })
        ));
        root.write("sys/module/md_mod/parameters/new_array", "");
        root.write("proc/mdstat", "Personalities : \n");
        let personality = kernel.ensure(&Facility::md_personality("raid1"), None);
        assert!(personality.is_err(), "mdstat does not list raid1");
        root.write("proc/mdstat", "Personalities : [raid1] \n");
        assert_eq!(
            kernel
                .ensure(&Facility::md_personality("raid1"), None)
                .unwrap()
                .state,
            State::Present
        );
    }

    #[test]
    fn ciphers_load_by_their_algorithm_aliases() {
        let root = debian_like();
        root.write("proc/crypto", "name         : twofish\n");
        let (kernel, loads) = root.kernel(&["twofish_avx_x86_64"]);
        let outcome = kernel
            .ensure(&Facility::cipher("xts", "twofish"), None)
            .unwrap();
        assert_eq!(outcome.state, State::Loaded);
        assert_eq!(
            outcome.modules,
            ["twofish_common", "twofish_generic", "ecb", "xts"]
        );
        assert_eq!(*loads.borrow(), outcome.modules);
    }

    #[test]
    fn an_unavailable_facility_is_one_line_naming_it_the_module_and_the_option() {
        let root = FakeRoot::new();
        root.write("proc/sys/kernel/modprobe", "/sbin/modprobe\n");
        let (kernel, _) = root.kernel(&[]);
        let request = || -> io::Result<()> { Err(io::Error::from_raw_os_error(libc::ENODEV)) };
        let error = kernel
            .ensure(&Facility::dm_target("crypt"), Some(&request))
            .unwrap_err();
        let mut line = error.to_string();
        let mut source = std::error::Error::source(&error);
        while let Some(cause) = source {
            line.push_str(&format!(": {cause}"));
            source = cause.source();
        }
        assert!(!line.contains('\n'), "{line}");
        for part in [
            "dm-crypt target",
            "dm_crypt",
            "CONFIG_DM_CRYPT",
            "/sbin/modprobe failed",
            "modules.dep",
        ] {
            assert!(line.contains(part), "{part} missing from: {line}");
        }
    }

    #[test]
    fn survey_does_nothing_and_says_what_would_happen() {
        let root = debian_like();
        root.loaded("md_mod");
        root.write("sys/module/md_mod/parameters/new_array", "");
        let (kernel, loads) = root.kernel(&[]);
        let survey = |facility, request| kernel.survey(&facility, request).unwrap();
        assert_eq!(survey(Facility::md(), false).state, State::Present);
        let raid0 = survey(Facility::md_personality("raid0"), false);
        assert_eq!(
            (raid0.state, raid0.modules),
            (State::WouldLoad, vec!["raid0".into()])
        );
        let crypt = survey(Facility::dm_target("crypt"), true);
        assert_eq!(crypt.state, State::WouldRequest);
        assert_eq!(crypt.modules, ["dm_mod", "dm_crypt"]);
        let missing = survey(Facility::md_personality("raid10"), false);
        assert_eq!(missing.state, State::Missing);
        assert!(loads.borrow().is_empty());
    }

    #[test]
    fn config_options_follow_the_kernel_names() {
        assert_eq!(Facility::dm_target("crypt").config(), "CONFIG_DM_CRYPT");
        assert_eq!(Facility::dm_target("striped").config(), "CONFIG_BLK_DEV_DM");
        assert_eq!(
            Facility::md_personality("raid0").config(),
            "CONFIG_MD_RAID0"
        );
        assert_eq!(Facility::filesystem("ext4").config(), "CONFIG_EXT4_FS");
        assert_eq!(
            Facility::cipher("xts", "twofish").config(),
            "CONFIG_CRYPTO_TWOFISH and CONFIG_CRYPTO_ECB and CONFIG_CRYPTO_XTS"
        );
        assert_eq!(
            Facility::cipher("xts", "aes").modules(),
            ["aes", "ecb", "xts"]
        );
    }
}
