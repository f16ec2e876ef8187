//! The process's auxiliary vector, as the C library saved it at start-up: no `/proc`
//! needed, so the check works in an empty root or an initramfs before `/proc` is mounted.
#![allow(unsafe_code)]

/// Whether the kernel started this program "secure" (`AT_SECURE` non-zero): with
/// privileges its caller lacks, through set-id bits, file capabilities or an LSM
/// transition. Every Linux since 2.6 passes the entry; a missing one reads as 0.
pub fn secure_exec() -> bool {
    // SAFETY: getauxval takes an integer and returns one; it reads only the C library's
    // own copy of the auxiliary vector and touches no memory of ours.
    unsafe { libc::getauxval(libc::AT_SECURE) != 0 }
}

#[cfg(test)]
mod tests {
    #[test]
    fn an_ordinary_exec_is_not_secure() {
        // The test runner was started by an unprivileged exec (no set-id, no capabilities).
        assert!(!super::secure_exec());
    }
}
