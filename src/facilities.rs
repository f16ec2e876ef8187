//! The kernel facilities a run needs, brought up before anything is built: device-mapper
//! and its `crypt` target always; md and the level's personality, or the dm `striped`
//! target, for an array; the cipher; ext4 when mounting. Which mechanism brings each up
//! (the kernel's own request path, or `finit_module` from `/lib/modules`) is
//! `tosskey_kmod`'s business; this module supplies the request paths that need tosskey's
//! handles (the dm control node, an AF_ALG socket) and renders the outcome.

use std::io;

use anyhow::Result;
use tosskey_crypto::spec::CipherSpec;
use tosskey_dm::DmControl;
use tosskey_kmod::{request_filesystem, Facility, Kernel, Outcome, State};

use crate::plan::{md_level_name, Assembly};

/// What a volume needs from the kernel.
#[derive(Debug, Clone, Copy)]
pub struct Needs {
    pub assembly: Assembly,
    pub cipher: CipherSpec,
    /// Mounted by this run (ext4 in the kernel); formatting alone needs nothing.
    pub mount: bool,
}

/// A facility and the kernel request path tosskey has for it.
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
    fn run(&self) -> io::Result<()> {
        match self {
            Request::DmControl => DmControl::open().map(drop).map_err(root_cause),
            Request::DmTarget(target) => DmControl::open()
                .and_then(|dm| dm.target_version(target))
                .map(drop)
                .map_err(root_cause),
            Request::Skcipher(name) => crate::af_alg::bind_transform(name)
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

/// Everything `needs` asks of the kernel, in the order it must come up (device-mapper
/// before its targets, md before its personality).
fn facilities(needs: &Needs) -> Vec<(Facility, Request)> {
    let mut list = vec![
        device_mapper(),
        (Facility::dm_target("crypt"), Request::DmTarget("crypt")),
    ];
    match needs.assembly {
        Assembly::Single => {}
        Assembly::Md { level, .. } => {
            list.push((Facility::md(), Request::None));
            list.push((
                Facility::md_personality(md_level_name(level)),
                Request::None,
            ));
        }
        Assembly::DmStripe { .. } => {
            list.push((Facility::dm_target("striped"), Request::DmTarget("striped")));
        }
    }
    list.push((
        Facility::cipher(
            needs.cipher.mode().name(),
            needs.cipher.block_cipher().name(),
        ),
        Request::Skcipher(needs.cipher.kernel_skcipher_name()),
    ));
    if needs.mount {
        list.push((Facility::filesystem("ext4"), Request::Filesystem("ext4")));
    }
    list
}

/// Brings up device-mapper alone: a run looks at existing mappings before it knows the
/// rest of what it needs.
pub fn ensure_device_mapper(kernel: &Kernel) -> Result<Outcome> {
    let (facility, request) = device_mapper();
    Ok(kernel.ensure(&facility, Some(&|| request.run()))?)
}

/// Brings up everything `needs` asks for that `done` (outcomes of earlier calls) does not
/// cover, and returns `done` followed by the new outcomes. The first facility that cannot
/// come up is the error (one line: the facility, its module, its kernel option).
pub fn ensure(kernel: &Kernel, needs: &Needs, mut done: Vec<Outcome>) -> Result<Vec<Outcome>> {
    for (facility, request) in facilities(needs) {
        if done
            .iter()
            .any(|outcome| outcome.facility == facility.name())
        {
            continue;
        }
        let run = || request.run();
        let request = (!matches!(request, Request::None)).then_some(&run as _);
        done.push(kernel.ensure(&facility, request)?);
    }
    Ok(done)
}

/// What [`ensure`] would do (`--dry-run`), touching nothing.
pub fn survey(kernel: &Kernel, needs: &Needs) -> Result<Vec<Outcome>> {
    facilities(needs)
        .iter()
        .map(|(facility, request)| Ok(kernel.survey(facility, !matches!(request, Request::None))?))
        .collect()
}

/// Text lines for `--dry-run`: `  dm-crypt target: would-request (else load dm_crypt)`.
pub fn render_text(outcomes: &[Outcome]) -> String {
    let mut out = String::from("kernel facilities:\n");
    for outcome in outcomes {
        let modules = outcome.modules.join(", ");
        let line = match outcome.state {
            State::Present => "present".to_owned(),
            State::Requested | State::Loaded if modules.is_empty() => "brought up".to_owned(),
            State::Requested => format!("requested from the kernel, which loaded {modules}"),
            State::Loaded => format!("loaded {modules}"),
            State::WouldRequest if modules.is_empty() => {
                "would be requested from the kernel (not in the module tree)".to_owned()
            }
            State::WouldRequest => {
                format!("would be requested from the kernel, else load {modules}")
            }
            State::WouldLoad => format!("would load {modules}"),
            State::Missing => "MISSING: neither present nor in the module tree".to_owned(),
        };
        out.push_str(&format!("  {}: {line}\n", outcome.facility));
    }
    out
}

#[cfg(test)]
mod tests {
    use tosskey_crypto::escrow::MdLevel;

    use super::*;

    fn names(needs: &Needs) -> Vec<String> {
        facilities(needs)
            .iter()
            .map(|(facility, _)| facility.name().to_owned())
            .collect()
    }

    #[test]
    fn a_single_disk_needs_dm_crypt_and_the_cipher() {
        let needs = Needs {
            assembly: Assembly::Single,
            cipher: CipherSpec::TWOFISH_XTS_PLAIN64,
            mount: false,
        };
        assert_eq!(
            names(&needs),
            ["device-mapper", "dm-crypt target", "cipher xts(twofish)"]
        );
    }

    #[test]
    fn md_needs_md_then_the_personality_and_mounting_needs_ext4() {
        let needs = Needs {
            assembly: Assembly::Md {
                level: MdLevel::Raid1,
                chunk_bytes: 0,
            },
            cipher: CipherSpec::AES_XTS_PLAIN64,
            mount: true,
        };
        assert_eq!(
            names(&needs),
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
    fn dm_stripe_needs_the_striped_target() {
        let needs = Needs {
            assembly: Assembly::DmStripe { chunk_bytes: 4096 },
            cipher: CipherSpec::TWOFISH_XTS_PLAIN64,
            mount: false,
        };
        assert!(names(&needs).contains(&"dm-striped target".to_owned()));
    }

    #[test]
    fn the_dry_run_text_says_what_would_happen() {
        let text = render_text(&[
            Outcome {
                facility: "md".into(),
                state: State::WouldLoad,
                modules: vec!["md_mod".into()],
            },
            Outcome {
                facility: "dm-crypt target".into(),
                state: State::Present,
                modules: vec![],
            },
        ]);
        assert_eq!(
            text,
            "kernel facilities:\n  md: would load md_mod\n  dm-crypt target: present\n"
        );
    }
}
