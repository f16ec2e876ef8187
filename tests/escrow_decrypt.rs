//! `tosskey escrow decrypt` on the host (no kernel needed): the key files it writes, and
//! what it leaves behind when it fails.

use std::path::{Path, PathBuf};

use crate::common::{escrow_decrypt, escrow_test_keys};
use tosskey_crypto::escrow::{
    Assembly, EscrowCrypt, EscrowMember, EscrowPublicKey, KeySegment, Layout,
};
use tosskey_crypto::{CipherSpec, EscrowFile, EscrowMetadata, KeyArena, KeySize};

const TIB_SECTORS: u64 = (1 << 40) / 512;

/// An escrow file (sealed to the test key) of one 2 TiB disk under two 1 TiB keys.
fn two_key_escrow(dir: &Path) -> (PathBuf, KeyArena) {
    let (public, _) = escrow_test_keys();
    let public = EscrowPublicKey::from_pem(&std::fs::read_to_string(public).unwrap()).unwrap();
    let metadata = EscrowMetadata {
        name: "ephemeral".into(),
        hostname: "host".into(),
        created_at: "2026-12-03T12:00:00Z".into(),
        crypt: EscrowCrypt {
            cipher: CipherSpec::default(),
            key_bits: 512,
            sector_size: 4096,
            iv_large_sectors: false,
            iv_offset: 0,
            data_offset: 0,
            allow_discards: false,
        },
        assembly: Assembly::Single,
        layout: Layout::Shared,
        members: vec![EscrowMember {
            identity: "SERIAL0".into(),
            size_bytes: 2 << 40,
            path_at_creation: PathBuf::from("/dev/nvme1n1"),
        }],
        key_scope_bytes: Some(1 << 40),
    };
    let segments: Vec<(&str, KeySegment)> = (0..2)
        .map(|i| {
            (
                "ephemeral",
                KeySegment {
                    start_sector: i * TIB_SECTORS,
                    sectors: TIB_SECTORS,
                },
            )
        })
        .collect();
    let keys = KeyArena::generate(KeySize::Bits512, 2).unwrap();
    let file = EscrowFile::seal_segments(&public, &segments, &keys, metadata).unwrap();
    let path = dir.join("escrow.json");
    file.write_atomic(&path, false).unwrap();
    (path, keys)
}

#[test]
fn two_keys_are_written_to_two_files_and_a_failure_leaves_none() {
    let dir = tempfile::tempdir().unwrap();
    let (escrow, keys) = two_key_escrow(dir.path());
    let (_, private) = escrow_test_keys();
    let out = dir.path().join("vol.key");
    let out = out.to_str().unwrap();

    // Key file 1 exists already: key file 0 was written first and must go again.
    std::fs::write(format!("{out}.1"), b"not mine").unwrap();
    let run = escrow_decrypt(escrow.to_str().unwrap(), &private, out);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(run.stderr.contains("vol.key.1"), "{}", run.stderr);
    assert!(
        !Path::new(&format!("{out}.0")).exists(),
        "a partial key file was left behind"
    );
    assert_eq!(std::fs::read(format!("{out}.1")).unwrap(), b"not mine");

    std::fs::remove_file(format!("{out}.1")).unwrap();
    let run = escrow_decrypt(escrow.to_str().unwrap(), &private, out).ok();
    for (i, key) in keys.iter().enumerate() {
        assert_eq!(std::fs::read(format!("{out}.{i}")).unwrap(), key);
    }
    assert!(
        run.stdout.contains("| dmsetup create -- ephemeral"),
        "{}",
        run.stdout
    );
}

/// The printed steps end the job: which disk is which by a stable name, the commands that
/// open the volume, deleting the key files, the mount and the teardown.
#[test]
fn decrypt_prints_stable_names_key_removal_mount_and_teardown() {
    let dir = tempfile::tempdir().unwrap();
    let (_, private) = escrow_test_keys();
    let out = dir.path().join("vol.key");
    let out = out.to_str().unwrap();
    let (escrow, _) = two_key_escrow(dir.path());
    let run = escrow_decrypt(escrow.to_str().unwrap(), &private, out).ok();
    let lines: Vec<&str> = run.stdout.lines().collect();
    for expected in [
        "#   /dev/nvme1n1: serial/WWN SERIAL0 (`lsblk -o NAME,SERIAL,WWN` gives its kernel name now)",
        &format!("rm -f -- {out}.0 {out}.1"),
        "mkdir -p -- /mnt/recovered && mount -o noatime,nodev,nosuid -- /dev/mapper/ephemeral /mnt/recovered",
        "umount -- /mnt/recovered",
        "dmsetup remove -- ephemeral",
    ] {
        assert!(lines.contains(&expected), "no {expected:?} in:\n{}", run.stdout);
    }
    let position = |line: &str| lines.iter().position(|l| *l == line).unwrap();
    assert!(
        position("umount -- /mnt/recovered") < position("dmsetup remove -- ephemeral"),
        "{}",
        run.stdout
    );
}

#[test]
fn the_commands_are_headed_for_posix_sh_and_an_unprintable_key_path_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (escrow, _) = two_key_escrow(dir.path());
    let (_, private) = escrow_test_keys();
    // A right-to-left override shows `vol.key` as something else on the operator's screen.
    let hidden = dir.path().join("vol\u{202e}yek.key");
    let run = escrow_decrypt(escrow.to_str().unwrap(), &private, hidden.to_str().unwrap());
    assert_eq!(run.code, 3, "{}", run.stderr);
    assert!(run.stderr.contains("not printable ASCII"), "{}", run.stderr);
    assert_eq!(run.stderr.lines().count(), 1, "{}", run.stderr);
    let left: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(left, ["escrow.json"], "no key file may be written");

    let out = dir.path().join("vol.key");
    let run = escrow_decrypt(escrow.to_str().unwrap(), &private, out.to_str().unwrap()).ok();
    let header = run.stdout.lines().next().unwrap();
    assert!(header.starts_with("# POSIX sh"), "{}", run.stdout);
}
