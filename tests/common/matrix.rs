//! The CLI matrix shared by the host test (`cli_matrix.rs`) and the guest test of device
//! commands (`root_cli_matrix.rs`): ways of running the binary (user, limits, capabilities)
//! and the check every run must pass.

use std::process::{Command, Output};

use super::TOSSKEY;

/// The exit codes the README's table documents.
pub const DOCUMENTED: [i32; 6] = [0, 1, 2, 3, 4, 5];
pub const NOBODY: &str = "65534";
/// Well below the usual 8 MiB default: what a tight container gives.
pub const LOW_MEMLOCK: &str = "--memlock=65536";

pub fn is_root() -> bool {
    nix::unistd::geteuid().is_root()
}

/// One way of running the binary: a name for messages and the wrapper command before it.
pub struct Context {
    pub name: &'static str,
    pub wrapper: Vec<&'static str>,
}

pub const AS_NOBODY: [&str; 4] = [
    "setpriv",
    "--reuid=65534",
    "--regid=65534",
    "--clear-groups",
];

pub fn contexts() -> Vec<Context> {
    let mut contexts = vec![
        Context {
            name: "as is",
            wrapper: vec![],
        },
        Context {
            name: "low memlock",
            wrapper: vec!["prlimit", LOW_MEMLOCK],
        },
    ];
    if !is_root() {
        // Root is exempt from RLIMIT_NPROC: as root this runs as nobody below.
        contexts.push(Context {
            name: "one process per user",
            wrapper: vec!["prlimit", "--nproc=1"],
        });
    }
    if is_root() {
        contexts.extend([
            Context {
                name: "nobody",
                wrapper: AS_NOBODY.to_vec(),
            },
            Context {
                name: "nobody, low memlock",
                wrapper: [&["prlimit", LOW_MEMLOCK][..], &AS_NOBODY].concat(),
            },
            Context {
                name: "nobody, one process",
                wrapper: [&["prlimit", "--nproc=1"][..], &AS_NOBODY].concat(),
            },
            Context {
                name: "nobody, 8 MiB memlock",
                wrapper: [&["prlimit", "--memlock=8388608"][..], &AS_NOBODY].concat(),
            },
            Context {
                name: "root without CAP_IPC_LOCK, low memlock",
                wrapper: vec![
                    "prlimit",
                    LOW_MEMLOCK,
                    "setpriv",
                    "--bounding-set=-ipc_lock",
                ],
            },
        ]);
    }
    contexts
}

pub fn command(context: &Context, args: &[&str]) -> Command {
    let mut command = match context.wrapper.split_first() {
        Some((program, rest)) => {
            let mut command = Command::new(program);
            command.args(rest).arg(TOSSKEY);
            command
        }
        None => Command::new(TOSSKEY),
    };
    command.args(args).current_dir("/");
    command
}

/// Statements and fixes of a one-line message, for "no cause said twice".
pub fn parts(line: &str) -> Vec<&str> {
    line.split(": ").flat_map(|part| part.split("; ")).collect()
}

#[track_caller]
pub fn check(context: &Context, args: &[String], allowed: &[i32], output: &Output) {
    let stderr = String::from_utf8_lossy(&output.stderr);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let what = format!(
        "{} [{}]: stdout {stdout:?} stderr {stderr:?}",
        context.name,
        args.join(" ")
    );
    let code = output
        .status
        .code()
        .unwrap_or_else(|| panic!("killed by a signal: {what}"));
    for crash in [
        "panicked",
        "memory allocation of",
        "Aborted",
        "RUST_BACKTRACE",
    ] {
        assert!(!stderr.contains(crash), "{crash}: {what}");
    }
    assert!(
        DOCUMENTED.contains(&code),
        "undocumented exit code {code}: {what}"
    );
    assert!(
        allowed.contains(&code),
        "exit code {code}, expected one of {allowed:?}: {what}"
    );
    if code == 2 {
        // Usage errors of the argument parser: clap's own multi-line format.
        return;
    }
    let messages: Vec<&str> = stderr
        .lines()
        .filter(|line| !line.starts_with("tosskey: warning: "))
        .collect();
    if code == 0 {
        assert!(messages.is_empty(), "a success printed an error: {what}");
        return;
    }
    assert_eq!(messages.len(), 1, "not one line: {what}");
    let line = messages[0];
    assert!(line.starts_with("tosskey: "), "{what}");
    let parts = parts(line);
    for (index, part) in parts.iter().enumerate() {
        assert!(
            !parts[..index].contains(part),
            "{part:?} said twice: {what}"
        );
    }
}
