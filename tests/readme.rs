//! The README's escrow key pair lines ("Using it"), run as written on the host with
//! openssl (scripts/test installs it): tosskey accepts the public half they make, and an
//! EC key is refused with "tosskey needs RSA ≥ 2048 bits". `tests/root_readme.rs` runs the
//! rest of the block in the guest.

use std::process::Command;

use crate::common::tosskey;

const README: &str = include_str!("../README.md");

fn sh(dir: &std::path::Path, line: &str) {
    let run = Command::new("/bin/sh")
        .args(["-c", line])
        .current_dir(dir)
        .output()
        .expect("run sh (is openssl installed? scripts/test installs it)");
    assert!(
        run.status.success(),
        "`{line}`: {}{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}

#[test]
fn the_readme_key_pair_lines_make_a_key_tosskey_accepts_and_ec_is_refused_in_words() {
    let using_it = README.split_once("\n## Using it\n").unwrap().1;
    let openssl: Vec<&str> = using_it
        .split_once("\n```\n")
        .unwrap()
        .0
        .lines()
        .filter(|line| line.starts_with("openssl "))
        .collect();
    assert_eq!(openssl.len(), 2, "{openssl:?}");
    let dir = tempfile::tempdir().unwrap();
    for line in &openssl {
        sh(dir.path(), line);
    }
    let public = dir.path().join("escrow.pub.pem");
    // The key is checked before any device: the refusal is about the (missing) device.
    let run = tosskey(&[
        "provision",
        "/nonexistent/disk",
        "--escrow-key",
        public.to_str().unwrap(),
        "--dry-run",
    ]);
    run.fails_with(3, "/nonexistent/disk: no such file or device");

    sh(
        dir.path(),
        "openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out ec.pem && openssl pkey -in ec.pem -pubout -out ec.pub.pem",
    );
    let ec = dir.path().join("ec.pub.pem");
    let run = tosskey(&[
        "provision",
        "/nonexistent/disk",
        "--escrow-key",
        ec.to_str().unwrap(),
        "--dry-run",
    ]);
    let run = run.fails_with(3, "tosskey needs RSA ≥ 2048 bits");
    assert!(!run.stderr.contains("OID"), "{}", run.stderr);
}
