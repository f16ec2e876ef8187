//! The root-test gate: root tests format, stripe and encrypt block devices, so they run
//! only in the throwaway QEMU guest that `scripts/vm-test` boots, never on a real machine
//! (where `sudo cargo test -- --ignored` would otherwise find `/dev/vd*` or `/dev/nvme*`).
//!
//! The guest is recognised by two things only its boot produces, never by an environment
//! variable a user might set: the kernel command-line word `tosskey.guest=TOKEN`, a random
//! token `scripts/vm/run-qemu.py` draws for each boot (a machine gets it only by being
//! booted with it), and the file `/run/tosskey-guest` into which `scripts/vm/init` copies
//! that token. Both must be present and agree.
//!
//! Two layers use it:
//! - every test executable that links this crate checks at start-up (before `main`) whether
//!   it was asked to run ignored tests (`--ignored`, `--include-ignored`, not `--list`); outside
//!   the guest it prints [`OUTSIDE_THE_GUEST`] and exits with status 101 before any test runs;
//! - each fixture that touches a device calls [`require_guest`] itself, so a root test that
//!   is run some other way still stops before writing.
#![allow(unsafe_code)]

use std::io::Write;
use std::path::Path;

/// The kernel command-line word that carries the boot's token.
const CMDLINE_WORD: &str = "tosskey.guest=";
/// Where the guest init writes the token.
const TOKEN_FILE: &str = "/run/tosskey-guest";

/// What a root test says outside the guest.
pub const OUTSIDE_THE_GUEST: &str = "tosskey root tests run only inside the QEMU guest: \
     use scripts/vm-test [-p PACKAGE] [-- FILTER] (this machine has no tosskey.guest= word \
     on /proc/cmdline, so it is not that guest; no test ran and no device was opened)";

/// True inside the guest booted by `scripts/vm-test` (or `scripts/demo`): the kernel
/// command line carries `tosskey.guest=TOKEN` and `/run/tosskey-guest` holds the same token.
pub fn in_vm() -> bool {
    let Ok(cmdline) = std::fs::read_to_string("/proc/cmdline") else {
        return false;
    };
    let Ok(written) = std::fs::read_to_string(TOKEN_FILE) else {
        return false;
    };
    token_matches(&cmdline, &written)
}

/// Whether `cmdline` (the kernel command line) names a non-empty token equal to `written`
/// (the token file's content).
fn token_matches(cmdline: &str, written: &str) -> bool {
    cmdline
        .split_ascii_whitespace()
        .find_map(|word| word.strip_prefix(CMDLINE_WORD))
        .is_some_and(|token| !token.is_empty() && token == written.trim_end())
}

/// Panics with [`OUTSIDE_THE_GUEST`] unless this process runs in the guest. Every fixture
/// that opens a block device for writing, or creates one, calls it first.
#[track_caller]
pub fn require_guest() {
    assert!(in_vm(), "{OUTSIDE_THE_GUEST}");
}

/// Whether libtest was asked to run ignored (root) tests: `--ignored` or
/// `--include-ignored`, unless only listing them (`--list`, which `scripts/vm-test` does on
/// the host to choose the executables it packs into the guest).
fn runs_ignored_tests<'a>(args: impl IntoIterator<Item = &'a [u8]>) -> bool {
    let mut ignored = false;
    for arg in args {
        match arg {
            b"--list" => return false,
            b"--ignored" | b"--include-ignored" => ignored = true,
            _ => {}
        }
    }
    ignored
}

/// Run by the C runtime before `main` in every executable that links this crate.
extern "C" fn refuse_root_tests_outside_the_guest() {
    // /proc/self/cmdline, not std::env::args(): std fills its argument list from another
    // .init_array entry whose order relative to this one is not specified.
    let asked = match std::fs::read("/proc/self/cmdline") {
        Ok(cmdline) => runs_ignored_tests(cmdline.split(|&byte| byte == 0)),
        // Cannot tell what was asked for: refuse unless this is the guest.
        Err(_) => true,
    };
    if asked && !in_vm() {
        // A failed write to stderr cannot be reported anywhere; the exit status still is.
        let _ = writeln!(std::io::stderr(), "{OUTSIDE_THE_GUEST}");
        std::process::exit(101);
    }
}

/// The `.init_array` entry that makes the C runtime call the check above before `main`.
// SAFETY: `.init_array` holds pointers to `extern "C" fn()` that the C runtime calls once
// before `main`; this entry is exactly that, and the function it names only reads two
// files and may exit. `#[used]` keeps the entry in every executable that links the crate.
#[used]
#[link_section = ".init_array"]
static REFUSE_ROOT_TESTS_OUTSIDE_THE_GUEST: extern "C" fn() = refuse_root_tests_outside_the_guest;

/// A libtest filter that selects no test: the gate's probe asks for ignored tests by it, so
/// that an executable without the gate runs nothing and exits 0 instead of 101.
const PROBE_FILTER: &str = "tosskey-testkit gate probe: no test has this name";

/// Runs this test executable again, asking for its ignored (root) tests with a filter that
/// selects none, and fails unless the start-up gate refused: status 101 with
/// [`OUTSIDE_THE_GUEST`] on stderr and nothing from libtest on stdout. Each crate's
/// integration-test executable calls it from a host test, so every executable that holds
/// root tests proves it carries the gate (testkit's gate_coverage test checks that they do).
#[track_caller]
pub fn assert_this_executable_refuses_root_tests() {
    assert!(
        !in_vm(),
        "the gate probe runs on the host; the guest runs only ignored tests"
    );
    let executable = std::env::current_exe().expect("the test executable's path");
    let output = std::process::Command::new(&executable)
        .args(["--ignored", "--exact", PROBE_FILTER])
        .output()
        .expect("run the test executable again");
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(
        output.status.code(),
        Some(101),
        "{} --ignored ran outside the guest (stdout: {stdout}; stderr: {stderr})",
        executable.display()
    );
    assert!(stderr.contains(OUTSIDE_THE_GUEST), "{stderr}");
    assert!(stdout.is_empty(), "libtest started: {stdout}");
}

/// Whether `path` names a block device (regular files may be written anywhere).
pub(crate) fn is_block_device(path: &Path) -> bool {
    use std::os::unix::fs::FileTypeExt;
    std::fs::metadata(path).is_ok_and(|metadata| metadata.file_type().is_block_device())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(list: &[&'static str]) -> Vec<&'static [u8]> {
        list.iter().map(|arg| arg.as_bytes()).collect()
    }

    #[test]
    fn ignored_runs_are_recognised_and_listing_is_not_one() {
        assert!(runs_ignored_tests(args(&["t", "--ignored"])));
        assert!(runs_ignored_tests(args(&[
            "t",
            "crypt",
            "--include-ignored",
            "--exact"
        ])));
        assert!(!runs_ignored_tests(args(&["t"])));
        assert!(!runs_ignored_tests(args(&["t", "ignored"])));
        assert!(!runs_ignored_tests(args(&[
            "t",
            "--list",
            "--format",
            "terse",
            "--ignored"
        ])));
        assert!(!runs_ignored_tests(args(&["t", "--ignored", "--list"])));
    }

    #[test]
    fn the_token_must_be_on_the_command_line_and_in_the_file() {
        let cmdline = "console=ttyS0 panic=-1 tosskey.guest=5f3a9c rdinit=/init\n";
        assert!(token_matches(cmdline, "5f3a9c\n"));
        assert!(!token_matches(cmdline, "5f3a9d\n"));
        assert!(!token_matches(cmdline, ""));
        assert!(!token_matches(
            "console=ttyS0 tosskey.guest= rdinit=/init",
            ""
        ));
        assert!(!token_matches(
            "BOOT_IMAGE=/vmlinuz root=/dev/vda1",
            "5f3a9c"
        ));
        assert!(!token_matches("xtosskey.guest=5f3a9c", "5f3a9c"));
    }

    #[test]
    fn the_host_running_these_tests_is_not_the_guest() {
        // Host tests never run in the guest (scripts/vm/run-tests passes --ignored, which
        // runs ignored tests only), so this process must not pass for the guest.
        assert!(!in_vm());
        let panic = std::panic::catch_unwind(require_guest).unwrap_err();
        let message = panic.downcast_ref::<String>().unwrap();
        assert!(message.contains("use scripts/vm-test"), "{message}");
    }
}
