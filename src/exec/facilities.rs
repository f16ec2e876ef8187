//! Bringing up the kernel facilities a [`Plan`] lists (`plan.facilities`), before anything
//! is built. The plan names what its nodes use (dm targets, md personalities, the cipher,
//! the filesystem it mounts); this module adds what those imply (device-mapper under every
//! dm target, md under every personality), orders them so each comes up after what it
//! needs, and supplies the kernel request paths that need tosskey's handles (the dm control
//! node, an AF_ALG socket). Which mechanism brings each up (the kernel's own request path,
//! or `finit_module` from `/lib/modules`) is `tosskey_kmod`'s business.
//!
//! `logon` keys are not brought up: the keyring is `CONFIG_KEYS`, never a module.

use std::io;

use tosskey_dm::DmControl;
use tosskey_kmod::{request_filesystem, Facility, Kernel, Outcome};

use crate::error::Result;
use crate::plan::{self, Plan};

/// The running kernel and what this run found present or brought up, in order.
#[derive(Debug)]
pub struct KernelFacilities {
    kernel: Kernel,
    outcomes: Vec<Outcome>,
}

impl KernelFacilities {
    /// The running kernel (`/proc`, `/sys`, `/lib/modules/$(uname -r)`).
    pub fn host() -> Result<Self> {
        Ok(KernelFacilities {
            kernel: Kernel::host()?,
            outcomes: Vec::new(),
        })
    }

    /// The kernel whose `proc/`, `sys/` and `lib/modules/` are under `root`: a fake tree in
    /// host tests, where what it lists as present needs no bringing up.
    #[cfg(test)]
    pub fn at(root: &std::path::Path) -> Result<Self> {
        Ok(KernelFacilities {
            kernel: Kernel::at(root)?,
            outcomes: Vec::new(),
        })
    }

    /// Brings up device-mapper alone: a run looks at existing mappings (a previous run to
    /// converge, a volume already open) before it has a plan.
    pub fn device_mapper(&mut self) -> Result<()> {
        self.bring_up(vec![device_mapper()])
    }

    /// Brings up everything `plan` needs that is not up yet. The first facility that cannot
    /// come up is the error (one line: the facility, its module, its kernel option).
    pub fn ensure(&mut self, plan: &Plan) -> Result<()> {
        self.bring_up(bring_up_order(&plan.facilities))
    }

    /// Brings up `filesystem` before a mount: recovery learns which one the volume holds
    /// only from its superblock, after the plan's facilities came up.
    pub fn filesystem(&mut self, filesystem: plan::Filesystem) -> Result<()> {
        let name = filesystem.name();
        self.bring_up(vec![(
            Facility::filesystem(name),
            Request::Filesystem(name),
        )])
    }

    /// What [`KernelFacilities::ensure`] would do (`--dry-run`), touching nothing.
    pub fn survey(&self, plan: &Plan) -> Result<Vec<Outcome>> {
        bring_up_order(&plan.facilities)
            .iter()
            .map(|(facility, request)| {
                Ok(self
                    .kernel
                    .survey(facility, !matches!(request, Request::None))?)
            })
            .collect()
    }

    /// Found present or brought up so far, in order.
    pub fn outcomes(&self) -> &[Outcome] {
        &self.outcomes
    }

    fn bring_up(&mut self, facilities: Vec<(Facility, Request)>) -> Result<()> {
        for (facility, request) in facilities {
            if self.outcomes.iter().any(|o| o.facility == facility.name()) {
                continue;
            }
            let run = || request.run();
            let request = (!matches!(request, Request::None)).then_some(&run as _);
            let outcome = self.kernel.ensure(&facility, request)?;
            self.outcomes.push(outcome);
        }
        Ok(())
    }
}

/// A facility's kernel request path, where one exists that builds nothing.
#[derive(Debug)]
enum Request {
    /// mknod + open `/dev/mapper/control`: the kernel requests `char-major-10-236`.
    DmControl,
    /// DM_GET_TARGET_VERSION: the kernel requests `dm-<target>`.
    DmTarget(&'static str),
    /// Bind an AF_ALG skcipher: the crypto API requests `crypto-<name>` and its parts.
    Skcipher(&'static str),
    /// fsopen: the kernel requests `fs-<type>`.
    Filesystem(&'static str),
    /// No request path that builds nothing: `finit_module` only.
    None,
}

impl Request {
    /// The dm requests open the control node themselves rather than going through the
    /// `StackKernel` seam: they are probes that make the kernel load a module (opening
    /// `/dev/mapper/control`, asking a target's version), they run before a seam can exist
    /// (the seam's host kernel opens the control node that this brings up), and they build
    /// nothing a run would undo.
    fn run(&self) -> io::Result<()> {
        match self {
            Request::DmControl => DmControl::open().map(drop).map_err(root_cause),
            Request::DmTarget(target) => DmControl::open()
                .and_then(|dm| dm.target_version(target))
                .map(drop)
                .map_err(root_cause),
            Request::Skcipher(name) => crate::exec::af_alg::bind_transform(name)
                .map(drop)
                .map_err(root_cause),
            Request::Filesystem(fstype) => request_filesystem(fstype),
            Request::None => Err(io::Error::other("no request path")),
        }
    }
}

/// The innermost cause (the errno): the outer messages' advice ("modprobe dm_mod") is what
/// the facility error gives anyway.
fn root_cause(error: impl std::error::Error + 'static) -> io::Error {
    let mut cause: &(dyn std::error::Error + 'static) = &error;
    while let Some(next) = cause.source() {
        cause = next;
    }
    io::Error::other(cause.to_string())
}

fn device_mapper() -> (Facility, Request) {
    (Facility::device_mapper(), Request::DmControl)
}

/// A plan's facilities as kmod facilities, each after what it needs: device-mapper before
/// the first dm target, md before the first personality.
fn bring_up_order(needs: &[plan::Facility]) -> Vec<(Facility, Request)> {
    let mut dm = vec![device_mapper()];
    let mut md = Vec::new();
    let mut rest = Vec::new();
    for needed in needs {
        match needed {
            plan::Facility::DmTarget(target) => {
                dm.push((Facility::dm_target(target), Request::DmTarget(target)));
            }
            plan::Facility::MdPersonality(level) => {
                if md.is_empty() {
                    md.push((Facility::md(), Request::None));
                }
                md.push((Facility::md_personality(level), Request::None));
            }
            plan::Facility::Cipher(name) => {
                let (mode, cipher) = mode_and_cipher(name);
                rest.push((Facility::cipher(mode, cipher), Request::Skcipher(name)));
            }
            plan::Facility::Filesystem(fstype) => {
                rest.push((Facility::filesystem(fstype), Request::Filesystem(fstype)));
            }
            plan::Facility::LogonKeys => {}
        }
    }
    dm.into_iter().chain(md).chain(rest).collect()
}

/// `xts(twofish)` → (`xts`, `twofish`).
fn mode_and_cipher(skcipher: &str) -> (&str, &str) {
    skcipher
        .strip_suffix(')')
        .and_then(|inner| inner.split_once('('))
        .unwrap_or(("", skcipher))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::Facility as Needed;

    fn order(needed: Vec<Needed>) -> Vec<String> {
        bring_up_order(&needed)
            .iter()
            .map(|(facility, _)| facility.name().to_owned())
            .collect()
    }

    #[test]
    fn a_single_disk_needs_dm_crypt_and_the_cipher() {
        assert_eq!(
            order(vec![
                Needed::DmTarget("crypt"),
                Needed::Cipher("xts(twofish)"),
                Needed::LogonKeys
            ]),
            ["device-mapper", "dm-crypt target", "cipher xts(twofish)"]
        );
    }

    #[test]
    fn md_comes_before_its_personality_and_dm_before_its_targets() {
        assert_eq!(
            order(vec![
                Needed::DmTarget("crypt"),
                Needed::MdPersonality("raid1"),
                Needed::Cipher("xts(aes)"),
                Needed::Filesystem("ext4"),
            ]),
            [
                "device-mapper",
                "dm-crypt target",
                "md",
                "md raid1 personality",
                "cipher xts(aes)",
                "filesystem ext4"
            ]
        );
    }

    #[test]
    fn the_skcipher_name_splits_into_mode_and_cipher() {
        assert_eq!(mode_and_cipher("xts(twofish)"), ("xts", "twofish"));
    }
}
