//! What the integration-test modules share: running the real `tosskey` binary, the escrow
//! test keys, guest-side checks of volumes, and the fake machines of `fake_tree`.

use std::path::PathBuf;
use std::process::Command;

use tosskey_testkit::{virtio_disks, zero_range};

pub mod fake_tree;
pub mod matrix;

/// The binary under test.
pub const TOSSKEY: &str = env!("CARGO_BIN_EXE_tosskey");

/// The outcome of one `tosskey` invocation.
#[derive(Debug)]
pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl Run {
    #[track_caller]
    pub fn ok(self) -> Run {
        assert_eq!(
            self.code, 0,
            "tosskey failed: {}{}",
            self.stdout, self.stderr
        );
        self
    }

    #[track_caller]
    pub fn fails_with(self, code: i32, message: &str) -> Run {
        assert_eq!(
            self.code, code,
            "exit code (stdout: {} stderr: {})",
            self.stdout, self.stderr
        );
        assert!(
            self.stderr.contains(message),
            "stderr {:?} lacks {message:?}",
            self.stderr
        );
        assert_eq!(
            self.stderr.trim_end().lines().count(),
            1,
            "error is not one line: {:?}",
            self.stderr
        );
        self
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_str(&self.stdout)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.stdout))
    }
}

pub fn tosskey(args: &[&str]) -> Run {
    tosskey_env(args, &[])
}

pub fn tosskey_env(args: &[&str], env: &[(&str, &str)]) -> Run {
    let output = Command::new(env!("CARGO_BIN_EXE_tosskey"))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("run tosskey");
    Run {
        code: output.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&output.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&output.stderr).into_owned(),
    }
}

/// `tosskey escrow decrypt`: writes the raw key file(s) and prints the stock commands.
pub fn escrow_decrypt(escrow: &str, private_key: &std::path::Path, key_out: &str) -> Run {
    tosskey(&[
        "escrow",
        "decrypt",
        "--escrow-file",
        escrow,
        "--private-key",
        private_key.to_str().unwrap(),
        "--key-out",
        key_out,
    ])
}

/// `tosskey recover` of `escrow` with `private_key`, mounting at `mount`.
pub fn recover_and_mount(escrow: &str, private_key: &std::path::Path, mount: &str) -> Run {
    tosskey(&[
        "recover",
        "--escrow-file",
        escrow,
        "--private-key",
        private_key.to_str().unwrap(),
        "--mount",
        mount,
    ])
}

/// Writes an embedded test key to a temp path (the test executable runs in the VM guest,
/// where the source tree does not exist).
fn materialise(name: &str, pem: &str) -> PathBuf {
    // Written aside and renamed into place: tests running in parallel read the file while
    // another one materialises it again, and must never see it empty.
    static NEXT: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
    let path = std::env::temp_dir().join(name);
    let aside = std::env::temp_dir().join(format!(
        "{name}.{}.{}",
        std::process::id(),
        NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    ));
    std::fs::write(&aside, pem).expect("write test key");
    std::fs::rename(&aside, &path).expect("rename test key into place");
    path
}

/// The RSA test key pair committed with the crypto crate (test-only, never a real key):
/// (public SPKI PEM, private PKCS#8 PEM).
pub fn escrow_test_keys() -> (PathBuf, PathBuf) {
    (
        materialise(
            "tosskey-test-a.spki.pem",
            include_str!("../../crypto/tests/data/escrow/test-a-2048.spki.pem"),
        ),
        materialise(
            "tosskey-test-a.pkcs8.pem",
            include_str!("../../crypto/tests/data/escrow/test-a-2048.pkcs8.pem"),
        ),
    )
}

/// A private key that does not match [`escrow_test_keys`].
pub fn other_private_key() -> PathBuf {
    materialise(
        "tosskey-test-b.pkcs8.pem",
        include_str!("../../crypto/tests/data/escrow/test-b-3072.pkcs8.pem"),
    )
}

/// Runs `line` (a printed stock-tool command) with `sh -c`, the system PATH and no udev;
/// fails the test with its output unless it succeeds.
pub fn run_stock(line: &str) {
    let run = Command::new("/bin/sh")
        .args(["-c", line])
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{line}: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

/// The commands of one numbered step of `escrow decrypt`'s recovery script: the lines after
/// `header` (a `render::RECOVERY_*` line) up to the next comment line.
pub fn recovery_step<'a>(script: &'a str, header: &str) -> Vec<&'a str> {
    script
        .lines()
        .skip_while(|line| *line != header)
        .skip(1)
        .take_while(|line| !line.starts_with("# "))
        .collect()
}

/// Removes the escrow file `escrow` and every key file `escrow decrypt` wrote beside
/// `key_out` (`key_out`, `key_out.0`, …).
pub fn remove_escrow_and_keys(escrow: &str, key_out: &str) {
    for file in std::fs::read_dir("/tmp").unwrap() {
        let path = file.unwrap().path();
        if path.to_str().unwrap().starts_with(key_out) {
            std::fs::remove_file(path).unwrap();
        }
    }
    std::fs::remove_file(escrow).unwrap();
}

/// Fails unless every file of `files` still has its SHA-256 (`when` says at which point).
pub fn check_files(files: &std::collections::BTreeMap<PathBuf, [u8; 32]>, when: &str) {
    use sha2::{Digest as _, Sha256};
    use std::io::Read as _;
    for (path, hash) in files {
        let mut data = Vec::new();
        std::fs::File::open(path)
            .unwrap()
            .read_to_end(&mut data)
            .unwrap();
        assert_eq!(
            <[u8; 32]>::from(Sha256::digest(&data)),
            *hash,
            "{} differs {when}",
            path.display()
        );
    }
}

/// Fails unless `status` lists no volume and no tosskey md array is left.
pub fn assert_no_volume_left() {
    let status = tosskey(&["status"]).ok().stdout;
    assert!(status.contains("no tosskey volumes"), "{status}");
    let mdstat = std::fs::read_to_string("/proc/mdstat").unwrap();
    assert!(!mdstat.contains("md_tk_"), "{mdstat}");
}

/// Whether `needle` occurs in `haystack` (memchr's SIMD search: whole disks are scanned).
pub fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    memchr::memmem::find(haystack, needle).is_some()
}

/// Closes the volume (unmounting it) and wipes the members' first 4 MiB when the test ends.
pub struct Cleanup {
    pub name: &'static str,
    pub disks: Vec<PathBuf>,
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "--unmount", self.name]);
        for disk in &self.disks {
            let _ = zero_range(disk, 0, 4 << 20);
        }
    }
}

/// The lines of `dmsetup table NAME` (keys elided, as dmsetup prints them): the kernel's
/// own account of a mapping, read by a tool other than tosskey.
pub fn dmsetup_table(name: &str) -> Vec<String> {
    let table = Command::new("dmsetup")
        .args(["table", name])
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .expect("dmsetup in the guest (scripts/vm-test carries it)");
    assert!(table.status.success(), "{table:?}");
    String::from_utf8(table.stdout)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

/// Fails unless every target of mapping `name` is an `error` target (no key left in the
/// kernel's table), and there are `count` of them.
#[track_caller]
pub fn assert_error_targets(name: &str, count: usize) {
    let lines = dmsetup_table(name);
    assert_eq!(lines.len(), count, "{lines:#?}");
    assert!(
        lines
            .iter()
            .all(|l| l.split_whitespace().nth(2) == Some("error")),
        "{lines:#?}"
    );
}

/// Fails unless a 4 KiB O_DIRECT read at `offset` of `path` (past the page cache, so the
/// device itself answers) fails with EIO.
#[track_caller]
pub fn assert_direct_read_fails_with_eio(path: &std::path::Path, offset: u64) {
    use std::os::unix::fs::{FileExt as _, OpenOptionsExt as _};
    let direct = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
        .unwrap();
    let mut back = tosskey_sysutil::AlignedBuf::new(4096);
    let err = direct
        .read_exact_at(back.as_mut_slice(), offset)
        .expect_err("the read after the shred succeeded");
    assert_eq!(err.raw_os_error(), Some(libc::EIO), "{err}");
}

/// Fails unless `report` (provision's `--json` output) lists `count` crypt mappings, each
/// verified by at least three checks against the userspace cipher, every one matched: an
/// `all()` over an empty list would pass on a volume that was never verified.
#[track_caller]
pub fn assert_verified_mappings(report: &serde_json::Value, count: usize) {
    let crypt = report["stack"]["crypt"].as_array().expect("stack.crypt");
    assert_eq!(crypt.len(), count, "crypt mappings: {crypt:#?}");
    for mapping in crypt {
        let checks = mapping["verification"]["checks"]
            .as_array()
            .expect("verification.checks");
        assert!(checks.len() >= 3, "{} checks: {mapping:#}", checks.len());
        assert!(
            checks.iter().all(|c| c["matched"] == true),
            "a check did not match: {mapping:#}"
        );
    }
}

/// The first `count` virtio disks of the guest.
pub fn disks(count: usize) -> Vec<PathBuf> {
    let disks = virtio_disks().expect("list virtio disks");
    assert!(disks.len() >= count, "the guest needs {count} virtio disks");
    disks.into_iter().take(count).map(|d| d.path).collect()
}
