//! The md and dm part of the signature corpus (`scripts/signature-corpus` builds the
//! file-based formats on the host): mdadm writes each kind of md superblock and
//! integritysetup a dm-integrity superblock on loop devices, `blkid -p` says what each is,
//! and the member check without `--force` must refuse every one blkid identifies. Root tests: `scripts/vm-test -p tosskey -- signature_corpus`; they print the
//! table (format, blkid's TYPE, refused).

use std::fs::OpenOptions;
use std::io::Write as _;
use std::path::Path;
use std::process::{Command, Output};

use tosskey::host::safety::{check_member, CheckOptions, SafetyError};
use tosskey::host::sysfs::SystemRoot;
use tosskey_testkit::LoopDevice;

const ARRAY: &str = "/dev/md/tk_corpus";

fn run(program: &str, args: &[&str]) -> Output {
    Command::new(program)
        .args(args)
        .env("PATH", "/usr/sbin:/usr/bin:/sbin:/bin")
        .env("IMSM_NO_PLATFORM", "1")
        .env("DM_DISABLE_UDEV", "1")
        .output()
        .unwrap_or_else(|e| panic!("{program}: {e} (is it in TOSSKEY_VM_TOOLS?)"))
}

fn text(output: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    )
}

/// `blkid -p`'s TYPE for `path`, empty when it identifies nothing.
fn blkid_type(path: &Path) -> String {
    let output = run(
        "blkid",
        &["-p", "-o", "value", "-s", "TYPE", path.to_str().unwrap()],
    );
    String::from_utf8_lossy(&output.stdout).trim().to_string()
}

/// Whether the member check without `--force` refuses `path` for what it carries, and
/// what it named.
fn refusal(path: &Path) -> Option<String> {
    match check_member(&SystemRoot::host(), path, &CheckOptions::default()) {
        Err(SafetyError::Signature { signature, .. }) => Some(signature.to_string()),
        Err(other) => panic!("{}: refused for another reason: {other}", path.display()),
        Ok(_) => None,
    }
}

/// The table goes to the guest console, which scripts/vm-test echoes (a passing test's
/// own output is not shown).
fn to_console(text: &str) {
    eprintln!("{text}");
    if let Ok(mut console) = OpenOptions::new().write(true).open("/dev/console") {
        for line in text.lines() {
            let _ = writeln!(console, "signature corpus: {line}");
        }
    }
}

/// The table's "refused" column: yes and what was named, or NO.
fn refused_column(refused: Option<&str>) -> String {
    refused.map_or_else(|| "NO".to_string(), |s| format!("yes   {s}"))
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn signature_corpus_md_superblocks_made_by_mdadm_are_refused() {
    let cases: [(&str, &[&str]); 6] = [
        (
            "md 0.90",
            &["--metadata=0.90", "--level=1", "--raid-devices=2"],
        ),
        (
            "md 1.0",
            &["--metadata=1.0", "--level=1", "--raid-devices=2"],
        ),
        (
            "md 1.1",
            &["--metadata=1.1", "--level=1", "--raid-devices=2"],
        ),
        (
            "md 1.2",
            &["--metadata=1.2", "--level=1", "--raid-devices=2"],
        ),
        ("DDF container", &["--metadata=ddf", "--raid-devices=2"]),
        ("IMSM container", &["--metadata=imsm", "--raid-devices=2"]),
    ];
    let mut table = vec![format!("{:<16} {:<22} refused", "format", "blkid TYPE")];
    let mut not_refused = Vec::new();
    for (format, args) in cases {
        let members = [
            LoopDevice::new(64 << 20).unwrap(),
            LoopDevice::new(64 << 20).unwrap(),
        ];
        let mut create = vec!["--create", ARRAY, "--run", "--quiet"];
        create.extend_from_slice(args);
        create.extend(members.iter().map(|m| m.path().to_str().unwrap()));
        let made = run("mdadm", &create);
        // Stopped (or never started): the superblocks stay, nothing holds the members.
        run("mdadm", &["--stop", ARRAY]);
        if !made.status.success() {
            // mdadm decides what it can make on loop devices (IMSM wants a real
            // controller's disk serials): say so in the table, never as a pass.
            table.push(format!(
                "{format:<16} {:<22} NOT MADE: mdadm: {}",
                "-",
                text(&made).lines().next().unwrap_or("")
            ));
            assert!(
                format == "IMSM container",
                "mdadm could not make {format}: {}",
                text(&made)
            );
            continue;
        }
        let member = members[0].path();
        let blkid = blkid_type(member);
        assert!(!blkid.is_empty(), "{format}: blkid -p identifies nothing");
        let refused = refusal(member);
        table.push(format!(
            "{format:<16} {blkid:<22} {}",
            refused_column(refused.as_deref())
        ));
        if refused.is_none() {
            not_refused.push(format);
        }
    }
    to_console(&table.join("\n"));
    assert!(not_refused.is_empty(), "not refused: {not_refused:?}");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn signature_corpus_dm_integrity_superblock_is_refused() {
    let device = LoopDevice::new(64 << 20).unwrap();
    let path = device.path().to_str().unwrap();
    let made = run(
        "integritysetup",
        &["format", "--batch-mode", "--no-wipe", path],
    );
    assert!(
        made.status.success(),
        "integritysetup format: {}",
        text(&made)
    );
    let blkid = blkid_type(device.path());
    assert_eq!(blkid, "DM_integrity", "blkid -p");
    let refused = refusal(device.path());
    to_console(&format!(
        "{:<16} {blkid:<22} {}",
        "dm-integrity",
        refused_column(refused.as_deref())
    ));
    assert!(refused.is_some(), "dm-integrity superblock not refused");
}
