//! The real binary on the host, every subcommand under the conditions an ordinary user or
//! container gives it: as root, as a non-root user, with a small RLIMIT_MEMLOCK, as root
//! without CAP_IPC_LOCK, with one process allowed per user. Whatever a command cannot do
//! there, it must say in one line with a documented exit code — never a panic or an abort —
//! and say each cause once. Also: every command runs non-dumpable without core files, and a
//! setuid copy refuses to run.
//!
//! Switching user and limits uses util-linux's `setpriv` and `prlimit`; a test needing
//! root to switch to `nobody` runs as the current user when that is not root.

use std::fs;
use std::io::{Read as _, Write as _};
use std::os::unix::fs::{MetadataExt as _, PermissionsExt as _};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::matrix::{check, command, contexts, is_root, Context, AS_NOBODY, NOBODY};
use crate::common::TOSSKEY;
/// A scratch directory every user may write to, removed at the end.
struct Scratch(PathBuf);

impl Scratch {
    fn new(name: &str) -> Scratch {
        let dir = Path::new(env!("CARGO_TARGET_TMPDIR")).join(name);
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).unwrap();
        fs::set_permissions(&dir, fs::Permissions::from_mode(0o1777)).unwrap();
        Scratch(dir)
    }

    fn path(&self, name: &str) -> String {
        self.0.join(name).to_str().unwrap().to_owned()
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = fs::remove_dir_all(&self.0);
    }
}

/// Each case: arguments and the exit codes it may end with on a host without
/// device-mapper access (root and non-root differ only in the OS error they see).
fn cases(scratch: &Scratch) -> Vec<(Vec<String>, &'static [i32])> {
    let image = scratch.path("image");
    let file = fs::File::create(&image).unwrap();
    file.set_len(64 << 20).unwrap();
    fs::set_permissions(&image, fs::Permissions::from_mode(0o666)).unwrap();
    let words = |line: &str| line.split(' ').map(str::to_owned).collect::<Vec<_>>();
    let missing = "/nonexistent/tosskey";
    vec![
        (words("--help"), &[0]),
        (words("bench --millis 5"), &[0]),
        (words("bench --millis 5 --json"), &[0]),
        (words("bench --device --millis 5"), &[1, 3]),
        (words("status"), &[0, 1]),
        (words("status --json"), &[0, 1]),
        (words("status x"), &[1, 3]),
        (words("close"), &[2]),
        (words("close --all"), &[0, 1]),
        (words("close x"), &[3]),
        (words("shred x"), &[3]),
        (words(&format!("provision {missing} --dry-run")), &[3]),
        (words(&format!("provision {image} --dry-run")), &[1, 3]),
        (
            words(&format!("provision {image} --name t-matrix")),
            &[1, 3],
        ),
        (words("provision --cipher rot13 /dev/null"), &[2]),
        (words(&format!("mkfs {missing}")), &[3]),
        (words(&format!("mkfs {image}")), &[0]),
        (
            words(&format!(
                "recover --escrow-file {missing} --private-key {missing}"
            )),
            &[1],
        ),
        (
            words(&format!(
                "escrow decrypt --escrow-file {missing} --private-key {missing} --key-out {}",
                scratch.path("key")
            )),
            &[1],
        ),
        (
            words(&format!(
                "measure verify --log {missing} --pcr-values {missing}"
            )),
            &[1],
        ),
    ]
}

#[test]
fn every_subcommand_ends_in_one_line_and_a_documented_code_as_any_user_and_under_low_limits() {
    let scratch = Scratch::new("cli-matrix");
    for context in contexts() {
        for (args, allowed) in cases(&scratch) {
            let output = command(
                &context,
                &args.iter().map(String::as_str).collect::<Vec<_>>(),
            )
            .stdin(Stdio::null())
            .output()
            .unwrap();
            check(&context, &args, allowed, &output);
        }
    }
}

#[test]
fn bench_prints_its_table_for_nobody_with_8_mib_memlock_and_for_root_without_cap_ipc_lock() {
    let mut contexts = vec![vec!["prlimit", "--memlock=8388608"]];
    if is_root() {
        contexts.push([&["prlimit", "--memlock=8388608"][..], &AS_NOBODY].concat());
        contexts.push(vec![
            "prlimit",
            "--memlock=8388608",
            "setpriv",
            "--bounding-set=-ipc_lock",
        ]);
    }
    for wrapper in contexts {
        let output = Command::new(wrapper[0])
            .args(&wrapper[1..])
            .args([TOSSKEY, "bench", "--millis", "5"])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&output.stdout);
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "{wrapper:?}: {stdout} {stderr}");
        for row in [
            "twofish-xts-plain64   256 encrypt",
            "aes-xts-plain64       512 decrypt",
        ] {
            assert!(stdout.contains(row), "{wrapper:?}: no {row:?} in {stdout}");
        }
    }
}

/// A pipe already full: a child writing to it blocks on its first output, so its
/// `/proc/<pid>` can be read at the moment it has done its work.
fn full_pipe() -> (std::io::PipeReader, std::io::PipeWriter) {
    let (reader, mut writer) = std::io::pipe().unwrap();
    let capacity = nix::fcntl::fcntl(&writer, nix::fcntl::FcntlArg::F_GETPIPE_SZ).unwrap();
    writer
        .write_all(&vec![0u8; usize::try_from(capacity).unwrap()])
        .unwrap();
    (reader, writer)
}

fn wchan(pid: u32) -> String {
    fs::read_to_string(format!("/proc/{pid}/wchan")).unwrap_or_default()
}

/// Every command — those that read tables holding the key (`status`, `shred`, `close`)
/// included — is non-dumpable with core files off by the time it answers. The files of a
/// non-dumpable process's `/proc/<pid>` belong to root whoever runs it, so the test runs each command
/// as a non-root user (as `nobody` when it is root) and looks at that owner.
#[test]
fn every_command_runs_non_dumpable_without_core_files() {
    let scratch = Scratch::new("cli-dumpable");
    let wrapper = if is_root() {
        AS_NOBODY.to_vec()
    } else {
        Vec::new()
    };
    let runner = Context {
        name: "non-root",
        wrapper,
    };
    let user: u32 = if is_root() {
        NOBODY.parse().unwrap()
    } else {
        nix::unistd::getuid().as_raw()
    };
    for (args, _) in cases(&scratch) {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        if args == ["close", "--all"] {
            // Prints nothing when there is nothing to close; `close x` stands in for it.
            continue;
        }
        let (mut reader, writer) = full_pipe();
        let mut child = command(&runner, &args)
            .stdin(Stdio::null())
            .stdout(writer.try_clone().unwrap())
            .stderr(writer)
            .spawn()
            .unwrap();
        let pid = child.id();
        let started = Instant::now();
        while !wchan(pid).contains("pipe_write") {
            assert!(
                started.elapsed() < Duration::from_secs(60),
                "{args:?} never wrote its answer"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
        let owner = fs::metadata(format!("/proc/{pid}/mem")).unwrap().uid();
        let limits = fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
        let core = limits
            .lines()
            .find(|line| line.starts_with("Max core file size"))
            .unwrap()
            .to_owned();
        // Let it finish: drain the pipe until every writer has gone.
        let mut sink = Vec::new();
        reader.read_to_end(&mut sink).unwrap();
        child.wait().unwrap();
        if user != 0 {
            assert_eq!(
                owner, 0,
                "{args:?} is dumpable (its /proc/PID/mem belongs to {owner})"
            );
        }
        assert!(
            core.split_whitespace()
                .skip(4)
                .take(2)
                .all(|limit| limit == "0"),
            "{args:?}: {core}"
        );
    }
}

/// A setuid-root copy run by another user must refuse in one line, exit code 3.
#[test]
fn a_setuid_copy_refuses_to_run() {
    if !is_root() {
        eprintln!("skipped: making a setuid-root copy needs root");
        return;
    }
    let scratch = Scratch::new("cli-setuid");
    let copy = scratch.0.join("tosskey");
    fs::copy(TOSSKEY, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o4755)).unwrap();
    refuses_as_nobody(
        &copy,
        "tosskey: refusing to run setuid or setgid (real user 65534, effective user 0",
    );
}

/// Runs `copy status` as nobody: it must refuse in one line, exit code 3, starting with
/// `refusal`.
fn refuses_as_nobody(copy: &std::path::Path, refusal: &str) {
    let output = Command::new("setpriv")
        .args(&AS_NOBODY[1..])
        .arg(copy)
        .arg("status")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(3), "{stderr}");
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(stderr.starts_with(refusal), "{stderr}");
}

/// A copy with file capabilities (no set-id bit: user and group ids stay those of the
/// caller) run by another user must refuse in one line, exit code 3: the kernel marks the
/// exec secure (AT_SECURE).
#[test]
fn a_copy_with_file_capabilities_refuses_to_run() {
    if !is_root() {
        eprintln!("skipped: giving a copy file capabilities needs root");
        return;
    }
    let scratch = Scratch::new("cli-filecaps");
    let copy = scratch.0.join("tosskey");
    fs::copy(TOSSKEY, &copy).unwrap();
    fs::set_permissions(&copy, fs::Permissions::from_mode(0o755)).unwrap();
    let setcap = Command::new("setcap")
        .arg("cap_ipc_lock+ep")
        .arg(&copy)
        .output()
        .expect("setcap (libcap2-bin) is installed by scripts/test");
    assert!(setcap.status.success(), "{setcap:?}");
    refuses_as_nobody(
        &copy,
        "tosskey: refusing to run with raised privileges (the kernel set AT_SECURE",
    );
}
