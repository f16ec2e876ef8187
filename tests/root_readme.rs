//! Root test (VM guest): the README's "Using it" block, run top to bottom as written, line
//! by line through `sh`, each line to exit 0. A README example that stops working fails
//! this test (and so `scripts/test`).
//!
//! What differs from a cloud machine is substituted, and only that:
//! - the disk names: `/dev/nvme1n1` is the guest's `/dev/vda`, `/dev/nvme2n1` its `/dev/vdb`;
//! - `--discover aws` also gets the hidden `--discover-serial-prefix tosskey-disk-`: the
//!   guest's virtio disks have no cloud identity, only these serials;
//! - the two `openssl` lines copy the test key pair to the files they would make (an RSA
//!   4096 key takes minutes under TCG); `tests/readme.rs` runs them as written on the host.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::common::escrow_test_keys;
use tosskey_testkit::{virtio_disks, zero_range};

const README: &str = include_str!("../README.md");

/// The shell lines of the "Using it" block: comments and blank lines dropped, a trailing
/// `# comment` cut off.
fn using_it_lines() -> Vec<String> {
    let section = README
        .split_once("\n## Using it\n")
        .expect("README has a \"Using it\" section")
        .1;
    let block = section
        .split_once("```sh\n")
        .expect("\"Using it\" has a sh block")
        .1
        .split_once("\n```")
        .expect("the sh block ends")
        .0;
    block
        .lines()
        .map(|line| match line.find("  #") {
            Some(comment) => line[..comment].trim_end(),
            None => line.trim_end(),
        })
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::to_owned)
        .collect()
}

fn substitute(line: &str) -> String {
    line.replace("/dev/nvme1n1", "/dev/vda")
        .replace("/dev/nvme2n1", "/dev/vdb")
        .replace(
            "--discover aws",
            "--discover aws --discover-serial-prefix tosskey-disk-",
        )
}

fn remove_escrow_files() {
    for file in [
        "/root/.ephemeral_escrowed_key",
        "/root/.ephemeral_escrowed_key.previous",
    ] {
        let _ = std::fs::remove_file(file);
    }
}

#[test]
fn readme_using_it_lines_are_all_found() {
    let lines = using_it_lines();
    let tosskey = lines.iter().filter(|l| l.starts_with("tosskey ")).count();
    assert!(tosskey >= 12, "only {tosskey} tosskey lines in: {lines:#?}");
    assert_eq!(
        lines.iter().filter(|l| l.starts_with("openssl ")).count(),
        2,
        "{lines:#?}"
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn readme_using_it_runs_top_to_bottom() {
    let disks = virtio_disks().unwrap();
    assert!(disks.len() >= 2, "the walk needs /dev/vda and /dev/vdb");
    let scratch = tempfile::tempdir().unwrap();
    remove_escrow_files();
    let (public, private) = escrow_test_keys();
    let bin_dir = Path::new(env!("CARGO_BIN_EXE_tosskey")).parent().unwrap();
    let path = format!("{}:/usr/sbin:/usr/bin:/sbin:/bin", bin_dir.display());
    for line in using_it_lines() {
        if let Some(rest) = line.strip_prefix("openssl ") {
            // `-out FILE`: the file this line makes.
            let out = rest
                .split_once("-out ")
                .map(|(_, file)| file.split(' ').next().unwrap())
                .unwrap_or_else(|| panic!("openssl line without -out: {line}"));
            let source: &PathBuf = if rest.contains("-pubout") {
                &public
            } else {
                &private
            };
            std::fs::copy(source, scratch.path().join(out)).unwrap();
            continue;
        }
        let line = substitute(&line);
        let run = Command::new("/bin/sh")
            .args(["-c", &line])
            .current_dir(scratch.path())
            .env("PATH", &path)
            .output()
            .unwrap();
        assert!(
            run.status.success(),
            "README line `{line}` failed ({}): {}{}",
            run.status,
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
    }
    // The walk ends with nothing open; leave the disks blank for the next test.
    let status = crate::common::tosskey(&["status"]).ok();
    assert_eq!(status.stdout, "no tosskey volumes in this boot\n");
    remove_escrow_files();
    for disk in &disks {
        zero_range(&disk.path, 0, 4 << 20).unwrap();
    }
}
