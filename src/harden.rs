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

use crate::error::Error;

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
    let auxv = std::fs::read("/proc/self/auxv").map_err(|e| {
        Error::Failed(anyhow::anyhow!(
            "cannot read /proc/self/auxv to check for raised privileges: {e}"
        ))
    })?;
    refuse_secure_exec(auxv_entry(&auxv, AT_SECURE))?;
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
        return Err(Error::Refused(format!(
            "refusing to run setuid or setgid (real user {real_uid}, effective user {effective_uid}, real group {real_gid}, effective group {effective_gid}); remove the set-id bit (chmod u-s,g-s) and run tosskey as root"
        )));
    }
    Ok(())
}

/// `AT_SECURE` (`<linux/auxvec.h>`): non-zero when the kernel started this program with
/// privileges its caller lacks (set-id bits, file capabilities, an LSM transition).
const AT_SECURE: usize = 23;

/// The value of `key` in an auxiliary vector as `/proc/self/auxv` holds it: native-endian
/// (type, value) word pairs up to `AT_NULL`.
fn auxv_entry(auxv: &[u8], key: usize) -> Option<usize> {
    const WORD: usize = std::mem::size_of::<usize>();
    auxv.chunks_exact(2 * WORD)
        .map(|pair| {
            let word = |at: usize| {
                usize::from_ne_bytes(pair[at..at + WORD].try_into().expect("a whole word"))
            };
            (word(0), word(WORD))
        })
        .take_while(|&(kind, _)| kind != 0)
        .find(|&(kind, _)| kind == key)
        .map(|(_, value)| value)
}

/// Refuses a run the kernel marked secure (`AT_SECURE` non-zero, or missing: every Linux
/// since 2.6 sets it): set-id bits the id check above missed, or file capabilities.
fn refuse_secure_exec(at_secure: Option<usize>) -> Result<(), Error> {
    match at_secure {
        Some(0) => Ok(()),
        Some(_) => Err(Error::Refused(
            "refusing to run with raised privileges (the kernel set AT_SECURE: file capabilities or a set-id bit); remove them (setcap -r, chmod u-s,g-s) and run tosskey as root".to_owned(),
        )),
        None => Err(Error::Refused(
            "refusing to run: /proc/self/auxv has no AT_SECURE entry, so raised privileges cannot be ruled out; run tosskey as root on a Linux kernel with a mounted /proc".to_owned(),
        )),
    }
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

    /// An auxiliary vector as the kernel lays it out: (type, value) words, AT_NULL last.
    fn auxv(entries: &[(usize, usize)]) -> Vec<u8> {
        entries
            .iter()
            .chain([&(0, 0)])
            .flat_map(|&(kind, value)| [kind.to_ne_bytes(), value.to_ne_bytes()])
            .flatten()
            .collect()
    }

    #[test]
    fn at_secure_is_read_from_the_auxiliary_vector() {
        // AT_PAGESZ, AT_UID, AT_SECURE, AT_RANDOM, in the kernel's order.
        let vector = auxv(&[(6, 4096), (11, 1000), (AT_SECURE, 1), (25, 0x7ffd_0000)]);
        assert_eq!(auxv_entry(&vector, AT_SECURE), Some(1));
        assert_eq!(auxv_entry(&vector, 6), Some(4096));
        // Nothing after AT_NULL counts; a vector without the entry says so.
        let mut cut = auxv(&[(6, 4096)]);
        cut.extend(auxv(&[(AT_SECURE, 1)]));
        assert_eq!(auxv_entry(&cut, AT_SECURE), None);
        // This test process was started by an unprivileged exec: AT_SECURE is 0.
        let own = std::fs::read("/proc/self/auxv").unwrap();
        assert_eq!(auxv_entry(&own, AT_SECURE), Some(0));
    }

    #[test]
    fn a_secure_exec_is_refused_in_one_line() {
        assert!(refuse_secure_exec(Some(0)).is_ok());
        for at_secure in [Some(1), None] {
            let error = refuse_secure_exec(at_secure).unwrap_err();
            assert_eq!(error.exit_code(), crate::error::REFUSED);
            let text = crate::error::render(&error);
            assert!(text.starts_with("refusing to run"), "{text}");
            assert_eq!(text.lines().count(), 1, "{text}");
        }
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
