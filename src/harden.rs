//! Process hardening for every command that touches key material.
//!
//! The key must never reach swap or a core file: the process is made non-dumpable (which
//! also keeps other non-root processes out of `/proc/<pid>/mem`), core files are disabled,
//! and all current and future memory is locked. `VolumeKey` locks its own pages as well, so
//! a failing `mlockall` (for example a container without CAP_IPC_LOCK and a small
//! RLIMIT_MEMLOCK) is reported but not fatal.

use nix::sys::mman::{mlockall, MlockAllFlags};
use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};

/// What hardening achieved; printed in verbose output and the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Hardening {
    pub non_dumpable: bool,
    pub core_disabled: bool,
    pub memory_locked: bool,
}

/// Harden the current process. Non-dumpable and no-core are required: failing either is an
/// error, because continuing would risk the key in a core dump.
pub fn harden_process() -> anyhow::Result<Hardening> {
    use anyhow::Context as _;
    prctl::set_dumpable(false)
        .context("cannot make the process non-dumpable (prctl PR_SET_DUMPABLE)")?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0)
        .context("cannot disable core files (setrlimit RLIMIT_CORE)")?;
    let memory_locked = mlockall(MlockAllFlags::MCL_CURRENT | MlockAllFlags::MCL_FUTURE).is_ok();
    if !memory_locked {
        eprintln!("tosskey: warning: mlockall failed; only the key's own pages are locked");
    }
    Ok(Hardening {
        non_dumpable: !prctl::get_dumpable()?,
        core_disabled: true,
        memory_locked,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use nix::sys::resource::getrlimit;

    #[test]
    fn hardening_makes_the_process_non_dumpable_without_cores() {
        // Runs in its own test binary process; the effects are process-wide and harmless here.
        let hardening = harden_process().unwrap();
        assert!(hardening.non_dumpable);
        assert!(!prctl::get_dumpable().unwrap());
        assert_eq!(getrlimit(Resource::RLIMIT_CORE).unwrap(), (0, 0));
    }
}
