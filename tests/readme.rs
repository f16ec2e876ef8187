//! The README's escrow key pair lines ("Using it"), run as written on the host with
//! openssl (scripts/test installs it): tosskey accepts the public half they make, and an
//! EC key is refused with "tosskey needs RSA ≥ 2048 bits". `tests/root_readme.rs` runs the
//! rest of the block in the guest. The "Recipes" lines run here too, as dry runs, and
//! docs/guide.md is checked to name every flag `--help` lists.

use std::process::Command;

use crate::common::tosskey;

const README: &str = include_str!("../README.md");
const GUIDE: &str = include_str!("../docs/guide.md");

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

/// The README's "Recipes" block: each `tosskey` line, its disks swapped for absent paths (a
/// CI machine may have real `/dev/nvme*` disks), run with `--dry-run`. Every flag and value
/// is checked before any device is looked at, so each line must get as far as the first
/// (absent) disk: a recipe whose flags stop parsing or are refused fails here.
#[test]
fn the_readme_recipes_pass_every_check_made_before_the_disks() {
    let recipes = README.split_once("\n## Recipes\n").unwrap().1;
    let block = recipes
        .split_once("```sh\n")
        .unwrap()
        .1
        .split_once("\n```")
        .unwrap()
        .0;
    let lines: Vec<String> = block
        .lines()
        .filter(|line| line.starts_with("tosskey "))
        .map(|line| line.replace("/dev/nvme", "/nonexistent/nvme"))
        .collect();
    assert!(lines.len() >= 5, "{lines:#?}");
    for line in &lines {
        let mut args: Vec<&str> = line.split_whitespace().skip(1).collect();
        args.push("--dry-run");
        tosskey(&args).fails_with(3, "/nonexistent/nvme1n1: no such file or device");
    }
}

/// The `--flag`s in `text`, each once, in order of appearance.
fn flags_in(text: &str) -> Vec<String> {
    let mut flags: Vec<String> = Vec::new();
    for (start, _) in text.match_indices("--") {
        let name: String = text[start + 2..]
            .chars()
            .take_while(|c| c.is_ascii_lowercase() || *c == '-')
            .collect();
        let name = name.trim_end_matches('-');
        let preceded_by_word = text[..start]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '-');
        if name.len() > 1 && !preceded_by_word && !flags.iter().any(|f| f[2..] == *name) {
            flags.push(format!("--{name}"));
        }
    }
    flags
}

/// docs/guide.md's "Commands and flags" names every flag each command's `--help` lists.
#[test]
fn the_guide_names_every_flag_of_every_command() {
    let section = GUIDE
        .split_once("\n## Commands and flags\n")
        .expect("docs/guide.md has a \"Commands and flags\" section")
        .1
        .split_once("\n## ")
        .unwrap()
        .0;
    let documented = flags_in(section);
    let commands: [&[&str]; 9] = [
        &["provision"],
        &["status"],
        &["close"],
        &["shred"],
        &["recover"],
        &["escrow", "decrypt"],
        &["mkfs"],
        &["bench"],
        &["measure", "verify"],
    ];
    let mut missing = Vec::new();
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let help = tosskey(&args).ok().stdout;
        let listed = flags_in(&help);
        assert!(listed.len() >= 2, "{command:?}: {help}");
        for flag in listed {
            if flag != "--help" && flag != "--version" && !documented.contains(&flag) {
                missing.push(format!("{} {flag}", command.join(" ")));
            }
        }
    }
    assert!(missing.is_empty(), "not in docs/guide.md: {missing:?}");
}
