//! Process hardening, applied by `main` to every command before the command line is parsed.
//!
//! Any command may hold key material: `provision`, `recover` and `escrow decrypt` make or
//! unseal keys, and `status`, `shred` and `close` read dm tables that, with hex key loading,
//! contain the key. So every run is made non-dumpable (which also keeps other non-root
//! processes out of `/proc/<pid>/mem`) with core files disabled, and refuses to run setuid,
//! setgid or with file capabilities that raised its privileges: a caller who is not root
//! could otherwise steer a privileged process. The kernel says so in the `AT_SECURE`
//! auxiliary vector entry, which also covers file capabilities (`setcap`), where the user
//! and group ids do not change.
//!
//! Memory is locked where the secrets are, not process-wide: key pages and expanded key
//! schedules are locked by `tosskey-crypto` (a failed lock is a one-line error, not a
//! swappable key), the ioctl buffers that carry key material by `tosskey-dm` (best effort,
//! reported once by [`warn_if_key_buffers_unlocked`]). A process-wide
//! `mlockall(MCL_FUTURE)` is deliberately absent: it makes every later allocation and thread
//! stack count against RLIMIT_MEMLOCK, so an ordinary 8 MiB limit aborted the program on its
//! next large allocation.

use nix::sys::prctl;
use nix::sys::resource::{setrlimit, Resource};
use nix::unistd::{getegid, geteuid, getgid, getuid};

use crate::error::{Error, Refusal};

/// What hardening achieved; part of the JSON report.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Hardening {
    pub non_dumpable: bool,
    pub core_disabled: bool,
}

/// Harden the current process. Each step is required: continuing without one would risk
/// the key in a core dump, or let a non-root caller drive a setuid-root tosskey.
pub fn harden_process() -> Result<Hardening, Error> {
    refuse_set_id(
        (getuid().as_raw(), geteuid().as_raw()),
        (getgid().as_raw(), getegid().as_raw()),
    )?;
    refuse_secure_exec(tosskey_sysutil::auxv::secure_exec())?;
    prctl::set_dumpable(false).map_err(|errno| {
        Error::Failed(anyhow::anyhow!(
            "cannot make the process non-dumpable (prctl PR_SET_DUMPABLE): {errno}"
        ))
    })?;
    setrlimit(Resource::RLIMIT_CORE, 0, 0).map_err(|errno| {
        Error::Failed(anyhow::anyhow!(
            "cannot disable core files (setrlimit RLIMIT_CORE): {errno}"
        ))
    })?;
    Ok(Hardening {
        non_dumpable: !prctl::get_dumpable().unwrap_or(true),
        core_disabled: true,
    })
}

/// Refuses a run whose real and effective user or group differ (a setuid or setgid
/// binary): tosskey is run by root directly, never on behalf of another user.
fn refuse_set_id(uid: (u32, u32), gid: (u32, u32)) -> Result<(), Error> {
    let (real_uid, effective_uid) = uid;
    let (real_gid, effective_gid) = gid;
    if real_uid != effective_uid || real_gid != effective_gid {
        return Err(Error::Refused(Refusal::SetId {
            real_uid,
            effective_uid,
            real_gid,
            effective_gid,
        }));
    }
    Ok(())
}

/// Refuses a run the kernel marked secure (`AT_SECURE`): set-id bits the id check above
/// missed, or file capabilities.
fn refuse_secure_exec(secure: bool) -> Result<(), Error> {
    if secure {
        return Err(Error::Refused(Refusal::SecureExec));
    }
    Ok(())
}

/// Says once, on stderr, if an ioctl buffer that carried key material could not be locked
/// in memory (RLIMIT_MEMLOCK too small without CAP_IPC_LOCK): those bytes may have reached
/// swap. Called once, when the command has finished.
pub fn warn_if_key_buffers_unlocked() {
    let unlocked = tosskey_dm::unlocked_buffer_bytes();
    if unlocked > 0 {
        eprintln!(
            "tosskey: warning: {unlocked} bytes of ioctl buffers that carried key material could not be locked in memory (RLIMIT_MEMLOCK too small, no CAP_IPC_LOCK), so they may have reached swap; raise the limit (ulimit -l) or run with CAP_IPC_LOCK"
        );
    }
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

    #[test]
    fn a_secure_exec_is_refused_in_one_line() {
        assert!(refuse_secure_exec(false).is_ok());
        let error = refuse_secure_exec(true).unwrap_err();
        assert_eq!(error.exit_code(), crate::error::REFUSED);
        let text = crate::error::render(&error);
        assert!(text.starts_with("refusing to run"), "{text}");
        assert_eq!(text.lines().count(), 1, "{text}");
    }

    #[test]
    fn a_set_id_run_is_refused_in_one_line_naming_the_ids() {
        assert!(refuse_set_id((0, 0), (0, 0)).is_ok());
        assert!(refuse_set_id((1000, 1000), (1000, 1000)).is_ok());
        for (uid, gid) in [((1000, 0), (1000, 1000)), ((0, 0), (1000, 0))] {
            let error = refuse_set_id(uid, gid).unwrap_err();
            assert_eq!(error.exit_code(), crate::error::REFUSED);
            let text = crate::error::render(&error);
            assert!(
                text.starts_with("refusing to run setuid or setgid"),
                "{text}"
            );
            assert_eq!(text.lines().count(), 1, "{text}");
        }
    }
}
