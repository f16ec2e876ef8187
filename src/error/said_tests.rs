//! Every refusal and usage error, rendered: the exact line the user sees, with the device
//! or flag and the fix, and the exit code.

use std::collections::BTreeSet;
use std::io;
use std::path::PathBuf;

use tosskey_sysutil::DevId;

use super::*;

fn path(text: &str) -> PathBuf {
    PathBuf::from(text)
}

fn os_error(code: i32) -> io::Error {
    io::Error::from_raw_os_error(code)
}

fn usage_lines() -> Vec<(Usage, &'static str)> {
    vec![
        (
            Usage::NameTooLong { name: "long-name".into(), max: 80 },
            r#"--name "long-name" is longer than 80 bytes; choose a shorter name"#,
        ),
        (
            Usage::BadName { name: "a/b".into(), reason: "contains a slash".into() },
            r#"--name "a/b": contains a slash"#,
        ),
        (
            Usage::BadCipher { reason: "unknown cipher rot13".into() },
            "--cipher: unknown cipher rot13",
        ),
        (Usage::BadKeySize { reason: "100 bits".into() }, "--key-size: 100 bits"),
        (
            Usage::KeySizeForCipher {
                bits: 256,
                cipher: "aes-xts-plain64".into(),
                reason: "too short".into(),
            },
            "--key-size 256 with --cipher aes-xts-plain64: too short",
        ),
        (Usage::BadChunk { kib: 3 }, "--chunk-kib 3 must be a power of two of at least 4 (KiB)"),
        (
            Usage::StripeLevel { level: "raid1" },
            "--raid dm-stripe stripes (raid0) only, not --level raid1; use --raid md for it",
        ),
        (
            Usage::NoDevice,
            "no device given; name the disks to encrypt (e.g. /dev/nvme1n1), or find this cloud's instance-store disks with --discover aws|gcp|azure|any",
        ),
        (Usage::DevicesAndDiscover, "give device paths or --discover, not both"),
        (Usage::MountWithoutFilesystem, "--mount needs a filesystem; drop --mkfs none"),
        (
            Usage::LabelTooLong { label: "a-label-of-17-byt".into() },
            r#"--label "a-label-of-17-byt" is longer than 16 bytes"#,
        ),
        (
            Usage::RelativeMount { dir: path("data") },
            "--mount data is a relative path; give an absolute path",
        ),
        (
            Usage::BadKeyScope { text: "1TB".into() },
            r#"--key-scope "1TB" is not a size; give a size such as 1TiB, 512GiB or 64MiB, or none"#,
        ),
        (
            Usage::KeyScopeTooSmall { text: "1KiB".into() },
            "--key-scope 1KiB: at least 1MiB (one key per stripe chunk at most)",
        ),
        (
            Usage::TooFewDevices { level: "raid10", count: 1 },
            "--level raid10 needs at least 2 devices, got 1; add a device or drop --level",
        ),
        (
            Usage::CloseWithoutName,
            "close needs the volume's name; give it (`tosskey status` lists them), or --all for every tosskey volume of this boot",
        ),
        (
            Usage::Ext4OptionsForXfs,
            "--journal and --inode-ratio are ext4 options; drop them for --type xfs (XFS always has its log and allocates inodes as it needs them)",
        ),
        (
            Usage::BadVolumeName { name: "a/b".into(), reason: "contains a slash".into() },
            r#""a/b" is not a volume name: contains a slash"#,
        ),
        (
            Usage::PrivateKeyNotPem { path: path("/root/k.der") },
            "the private key /root/k.der is not PEM text; pass the PEM file (openssl pkey -in KEY)",
        ),
        (
            Usage::MemberCountDiffers { recorded: 2, given: 1 },
            "the escrow file records 2 member(s) but 1 were given with --devices",
        ),
        (
            Usage::BindWithoutFilesystem { dir: path("/var/lib/kubelet") },
            "--bind /var/lib/kubelet needs a filesystem to copy it onto; drop --mkfs none",
        ),
        (
            Usage::BindWithoutMount { dir: path("/var/lib/kubelet") },
            "--bind /var/lib/kubelet needs the volume mounted; add --mount DIR (e.g. --mount /mnt/ephemeral)",
        ),
        (
            Usage::BindNotAbsolute { dir: path("var/lib") },
            "--bind var/lib is not an absolute path without . or ..; give the directory's absolute path",
        ),
        (
            Usage::BindRoot,
            "--bind / would put the whole system on the volume; bind the directories that hold the data (e.g. --bind /var/lib/containerd)",
        ),
        (
            Usage::BindOverlapsMount { dir: path("/mnt"), mount: path("/mnt/ephemeral") },
            "--bind /mnt overlaps --mount /mnt/ephemeral: one would hold the other; bind a directory outside the mount point, or mount the volume elsewhere",
        ),
        (
            Usage::BindTwice { dir: path("/var/log/pods") },
            "--bind /var/log/pods is given twice; give each directory once",
        ),
        (
            Usage::BindNested { outer: path("/var/lib"), inner: path("/var/lib/kubelet") },
            "--bind /var/lib/kubelet lies inside --bind /var/lib; bind only the outer one (its contents move with it)",
        ),
    ]
}

fn refusal_lines() -> Vec<(Refusal, &'static str)> {
    vec![
        (
            Refusal::SetId { real_uid: 65534, effective_uid: 0, real_gid: 65534, effective_gid: 65534 },
            "refusing to run setuid or setgid (real user 65534, effective user 0, real group 65534, effective group 65534); remove the set-id bit (chmod u-s,g-s) and run tosskey as root",
        ),
        (
            Refusal::SecureExec,
            "refusing to run with raised privileges (the kernel set AT_SECURE: file capabilities or a set-id bit); remove them (setcap -r, chmod u-s,g-s) and run tosskey as root",
        ),
        (
            Refusal::Unprintable { word: "a\tb".into(), bad: '\t' },
            r"cannot print a\tb in a shell command: it contains \u{9}, which is not printable ASCII; use names and paths of printable ASCII characters",
        ),
        (
            Refusal::MdadmRelativeDevice { device: "vdb".into() },
            "cannot print an mdadm command for the device vdb: it is not an absolute path, so mdadm could read it as an option; give the members as /dev/… paths",
        ),
        (
            Refusal::MountNotDirectory { dir: path("/srv/data/x"), existing: path("/srv/data") },
            "--mount /srv/data/x: /srv/data is not a directory; give a directory (a missing one is created)",
        ),
        (
            Refusal::MountUnusable { dir: path("/srv/x"), existing: path("/srv"), source: os_error(libc::EACCES) },
            "--mount /srv/x: cannot use /srv: Permission denied (os error 13); give a directory (a missing one is created)",
        ),
        (
            Refusal::TooFewMembers { level: "raid1", count: 1 },
            "--level raid1 needs at least 2 devices, got 1",
        ),
        (
            Refusal::SectorBelowBlock { size: 512, block: 4096 },
            "--sector-size 512 is smaller than the 4096-byte logical blocks of a member; use --sector-size 4096",
        ),
        (
            Refusal::BlockOverSectorMax { block: 8192 },
            "members have 8192-byte logical blocks, more than dm-crypt's 4096-byte maximum sector",
        ),
        (
            Refusal::TooSmallForSector { sector_size: 4096 },
            "the members are too small for one 4096-byte encryption sector",
        ),
        (
            Refusal::KeyScopeSplit { mapping: "v".into(), reason: "too many keys".into() },
            "--key-scope over v: too many keys",
        ),
        (
            Refusal::EscrowKeysOutOfOrder { mapping: "v".into() },
            "the escrow file's keys for v do not cover it in order from sector 0: it is damaged",
        ),
        (
            Refusal::EscrowSegmentsDoNotFit { mapping: "v".into(), reason: "8 sectors, not 16".into() },
            "the escrow file's key segments for v do not fit the members: 8 sectors, not 16",
        ),
        (
            Refusal::UnevenMembers {
                small: path("/dev/vdb"),
                small_bytes: 1000,
                large: path("/dev/vdc"),
                large_bytes: 3000,
            },
            "member sizes differ too much: /dev/vdb has 1000 bytes but /dev/vdc has 3000, so striping would waste over half of it; leave out /dev/vdb, or use --level linear",
        ),
        (Refusal::NotBlockDevice { path: path("/tmp/image") }, "/tmp/image is not a block device"),
        (
            Refusal::Shredded { name: "v".into() },
            "v was shredded in this boot and its mappings are still there, failing every I/O; run `tosskey close v` once nothing uses them, then provision again",
        ),
        (
            Refusal::ProvisionedElsewhere { name: "v".into(), members: "/dev/vdb, /dev/vdc".into() },
            "v is already provisioned on /dev/vdb, /dev/vdc; run `tosskey close v` first, or choose another --name",
        ),
        (
            Refusal::UnrecordedMapping { name: "v".into() },
            "dm mapping v exists but tosskey has no record of it in this boot; run `tosskey close v` first",
        ),
        (
            Refusal::ForeignMapping { name: "v".into() },
            "dm mapping v exists and was not made by tosskey; choose another --name",
        ),
        (
            Refusal::NotTheBuiltVolume { name: "v".into(), what: "its dm mapping v does not exist".into() },
            "v is recorded as provisioned, but its dm mapping v does not exist: it is not the volume tosskey built; run `tosskey close v`, then provision again",
        ),
        (
            Refusal::MountedElsewhere { name: "v".into(), recorded: path("/mnt/a"), asked: path("/mnt/b") },
            "v is already provisioned and mounted at /mnt/a, not at /mnt/b: a new mount point applies to a new volume (after a reboot, or after `tosskey close --unmount v`, which destroys its data); until then rerun with --mount /mnt/a",
        ),
        (
            Refusal::MountPointHeld(Box::new(HeldMountPoint {
                name: "v".into(),
                dir: path("/mnt/v"),
                source: "/dev/sdb1".into(),
                fs_type: "ext4".into(),
                dev: DevId::new(8, 17),
                volume_dev: DevId::new(253, 0),
            })),
            "/mnt/v holds /dev/sdb1 (ext4, 8:17), not v (253:0): data written there would not be encrypted; unmount it (umount /mnt/v) and rerun",
        ),
        (
            Refusal::EscrowKeyUnreadable { key: path("/etc/k.pem"), source: os_error(libc::ENOENT) },
            "cannot read the escrow public key /etc/k.pem: No such file or directory (os error 2); check --escrow-key",
        ),
        (
            Refusal::EscrowKeyUnusable { key: path("/etc/k.pem"), reason: "not a PEM public key".into() },
            "the escrow public key /etc/k.pem is unusable: not a PEM public key; check --escrow-key",
        ),
        (
            Refusal::EscrowFileNotAFile { file: path("/") },
            "the escrow file / does not name a file; check --escrow-file",
        ),
        (
            Refusal::EscrowDirUnusable { dir: path("/var/x"), why: "is not a directory".into() },
            "the escrow file's directory /var/x is not a directory; create it or choose another --escrow-file",
        ),
        (
            Refusal::EscrowFileNotRegular { path: path("/var/e.json") },
            "the escrow file /var/e.json exists and is not a regular file (tosskey moves only a regular file aside); remove it or choose another --escrow-file",
        ),
        (
            Refusal::EscrowFileUncheckable { path: path("/var/e.json"), source: os_error(libc::EACCES) },
            "cannot check the escrow file /var/e.json: Permission denied (os error 13); choose another --escrow-file",
        ),
        (
            Refusal::EscrowCannotRecord { reason: "the hostname has a newline".into() },
            "the escrow file cannot record this volume: the hostname has a newline; nothing was built: fix that value on this machine (hostname, disk serial) or provision without --escrow-key",
        ),
        (
            Refusal::NoSuchVolume { name: "x".into() },
            "no tosskey volume named x in this boot; `tosskey status` lists them",
        ),
        (
            Refusal::VolumeMounted { name: "t-close".into(), mounts: "/mnt/t-close".into() },
            "t-close is mounted at /mnt/t-close; unmount it first or pass --unmount",
        ),
        (
            Refusal::NotMadeByTosskey {
                volume: "v".into(),
                what: r#"dm device v with UUID "LVM-x" (tosskey's begin TOSSKEY-)"#.into(),
            },
            r#"the journal of v names dm device v with UUID "LVM-x" (tosskey's begin TOSSKEY-): tosskey did not create that, so it removes nothing of v"#,
        ),
        (
            Refusal::NoTpm { pcr: 15, reason: "cannot open the TPM /dev/tpmrm0: No such file or directory (os error 2)".into() },
            "--measure-pcr 15: cannot open the TPM /dev/tpmrm0: No such file or directory (os error 2); nothing was built",
        ),
        (
            Refusal::NotRamDisk {
                path: path("/dev/vdb"),
                what: "not a brd RAM disk (block device 253:16; brd's major is 1)".into(),
            },
            "/dev/vdb: not a brd RAM disk (block device 253:16; brd's major is 1): device mode only runs on a brd RAM disk /dev/ramN (it overwrites the device); load brd (modprobe brd rd_nr=1 rd_size=65536)",
        ),
        (
            Refusal::RamDiskBusy { path: path("/dev/ram0") },
            "/dev/ram0 is in use (mounted or held: the exclusive open failed with EBUSY): refusing to overwrite it; unmount it or pick another RAM disk",
        ),
        (
            Refusal::RamDiskTooSmall { path: path("/dev/ram0"), bytes: 4096 },
            "/dev/ram0 is too small for the bench (4096 bytes)",
        ),
        (
            Refusal::NoDiskWithIdentity { identity: "nvme-Amazon_1".into(), was: path("/dev/nvme1n1") },
            r#"no disk with identity "nvme-Amazon_1" (was /dev/nvme1n1 when the escrow was made); pass the members in order with --devices"#,
        ),
        (
            Refusal::MemberSizeDiffers { device: "vdb".into(), identity: "S1".into(), bytes: 1000, recorded: 2000 },
            r#"/dev/vdb has identity "S1" but 1000 bytes, not the recorded 2000; pass the members with --devices"#,
        ),
        (
            Refusal::EscrowKeysMismatch { keys: 2, segments: 3 },
            "the escrow file's 2 key(s) do not match its volume's 3 crypt segment(s) mapping by mapping: it is damaged",
        ),
        (
            Refusal::AlreadyOpen { name: "v".into() },
            "v is already open in this boot; `tosskey status v` shows it",
        ),
        (
            Refusal::WrongEscrowFile { node: path("/dev/mapper/v"), escrow_file: path("/root/e.json") },
            "/dev/mapper/v does not decrypt to an ext4 filesystem: the key in /root/e.json does not fit these disks (the file is probably from an earlier volume on the same disks); use the escrow file of the volume these disks hold now (provision moves an earlier volume's file to <file>.previous)",
        ),
        (
            Refusal::BindIsMountPoint { dir: path("/var/lib/kubelet"), what: "tmpfs (tmpfs, 0:50)".into() },
            "--bind /var/lib/kubelet: tmpfs (tmpfs, 0:50) is mounted there already; unmount it first (umount /var/lib/kubelet), or drop this --bind",
        ),
        (
            Refusal::BindHidesMount { dir: path("/var/lib/kubelet"), below: path("/var/lib/kubelet/pods/x/volumes/y") },
            "--bind /var/lib/kubelet: /var/lib/kubelet/pods/x/volumes/y is a mount point below it, which the bind would hide; unmount it first, or bind directories beside it instead",
        ),
        (
            Refusal::BindNotDirectory { dir: path("/var/lib/x/y"), existing: path("/var/lib/x") },
            "--bind /var/lib/x/y: /var/lib/x is not a directory; give a directory (a missing one is created)",
        ),
        (
            Refusal::BindThroughSymlink { dir: path("/var/lib/docker"), resolved: path("/data/docker") },
            "--bind /var/lib/docker goes through a symbolic link to /data/docker; give the real path: --bind /data/docker",
        ),
        (
            Refusal::BindHeld { name: "v".into(), dir: path("/var/lib/kubelet"), what: "tmpfs (tmpfs, 0:50)".into() },
            "/var/lib/kubelet holds tmpfs (tmpfs, 0:50), not v's bind: data written there would not be encrypted; unmount it (umount /var/lib/kubelet) and rerun",
        ),
    ]
}

/// The line, its code, and its parts: one line, the statement first, the fix (when the
/// variant has one) last after `"; "`.
fn assert_line(error: &Error, said: Said, expected: &str, code: u8) {
    let line = render(error);
    assert_eq!(line, expected);
    assert_eq!(error.to_string(), expected, "Display and render agree");
    assert_eq!(error.exit_code(), code, "{line}");
    assert_eq!(line.lines().count(), 1, "{line}");
    assert!(line.starts_with(&said.what), "{line}");
    if let Some(fix) = &said.fix {
        assert!(line.ends_with(&format!("; {fix}")), "{line}");
    }
}

#[test]
fn every_usage_error_says_its_flag_and_fix_in_one_line_and_exits_2() {
    for (usage, expected) in usage_lines() {
        let said = usage.said();
        assert_line(&Error::Usage(usage), said, expected, USAGE);
    }
}

#[test]
fn every_refusal_says_its_device_and_fix_in_one_line_and_exits_3() {
    for (refusal, expected) in refusal_lines() {
        let said = refusal.said();
        assert_line(&Error::Refused(refusal), said, expected, REFUSED);
    }
}

/// Which variant a usage error is: the match has no wildcard, so a new variant does not
/// compile until it has a number here, and the table test below wants a line for it.
fn usage_variant(usage: &Usage) -> usize {
    match usage {
        Usage::NameTooLong { .. } => 0,
        Usage::BadName { .. } => 1,
        Usage::BadCipher { .. } => 2,
        Usage::BadKeySize { .. } => 3,
        Usage::KeySizeForCipher { .. } => 4,
        Usage::BadChunk { .. } => 5,
        Usage::StripeLevel { .. } => 6,
        Usage::NoDevice => 7,
        Usage::DevicesAndDiscover => 8,
        Usage::MountWithoutFilesystem => 9,
        Usage::LabelTooLong { .. } => 10,
        Usage::RelativeMount { .. } => 11,
        Usage::BadKeyScope { .. } => 12,
        Usage::KeyScopeTooSmall { .. } => 13,
        Usage::TooFewDevices { .. } => 14,
        Usage::CloseWithoutName => 15,
        Usage::Ext4OptionsForXfs => 16,
        Usage::BadVolumeName { .. } => 17,
        Usage::PrivateKeyNotPem { .. } => 18,
        Usage::MemberCountDiffers { .. } => 19,
        Usage::BindWithoutFilesystem { .. } => 20,
        Usage::BindWithoutMount { .. } => 21,
        Usage::BindNotAbsolute { .. } => 22,
        Usage::BindRoot => 23,
        Usage::BindOverlapsMount { .. } => 24,
        Usage::BindTwice { .. } => 25,
        Usage::BindNested { .. } => 26,
    }
}

/// [`usage_variant`] for refusals.
fn refusal_variant(refusal: &Refusal) -> usize {
    match refusal {
        Refusal::SetId { .. } => 0,
        Refusal::SecureExec => 1,
        Refusal::Unprintable { .. } => 2,
        Refusal::MdadmRelativeDevice { .. } => 3,
        Refusal::MountNotDirectory { .. } => 4,
        Refusal::MountUnusable { .. } => 5,
        Refusal::TooFewMembers { .. } => 6,
        Refusal::SectorBelowBlock { .. } => 7,
        Refusal::BlockOverSectorMax { .. } => 8,
        Refusal::TooSmallForSector { .. } => 9,
        Refusal::KeyScopeSplit { .. } => 10,
        Refusal::EscrowKeysOutOfOrder { .. } => 11,
        Refusal::EscrowSegmentsDoNotFit { .. } => 12,
        Refusal::UnevenMembers { .. } => 13,
        Refusal::NotBlockDevice { .. } => 14,
        Refusal::Shredded { .. } => 15,
        Refusal::ProvisionedElsewhere { .. } => 16,
        Refusal::UnrecordedMapping { .. } => 17,
        Refusal::ForeignMapping { .. } => 18,
        Refusal::NotTheBuiltVolume { .. } => 19,
        Refusal::MountedElsewhere { .. } => 20,
        Refusal::MountPointHeld(_) => 21,
        Refusal::EscrowKeyUnreadable { .. } => 22,
        Refusal::EscrowKeyUnusable { .. } => 23,
        Refusal::EscrowFileNotAFile { .. } => 24,
        Refusal::EscrowDirUnusable { .. } => 25,
        Refusal::EscrowFileNotRegular { .. } => 26,
        Refusal::EscrowFileUncheckable { .. } => 27,
        Refusal::EscrowCannotRecord { .. } => 28,
        Refusal::NoSuchVolume { .. } => 29,
        Refusal::VolumeMounted { .. } => 30,
        Refusal::NotMadeByTosskey { .. } => 31,
        Refusal::NoTpm { .. } => 32,
        Refusal::NotRamDisk { .. } => 33,
        Refusal::RamDiskBusy { .. } => 34,
        Refusal::RamDiskTooSmall { .. } => 35,
        Refusal::NoDiskWithIdentity { .. } => 36,
        Refusal::MemberSizeDiffers { .. } => 37,
        Refusal::EscrowKeysMismatch { .. } => 38,
        Refusal::AlreadyOpen { .. } => 39,
        Refusal::WrongEscrowFile { .. } => 40,
        Refusal::BindIsMountPoint { .. } => 41,
        Refusal::BindHidesMount { .. } => 42,
        Refusal::BindNotDirectory { .. } => 43,
        Refusal::BindThroughSymlink { .. } => 44,
        Refusal::BindHeld { .. } => 45,
    }
}

#[test]
fn the_tables_have_a_line_for_every_variant() {
    let usages: BTreeSet<usize> = usage_lines()
        .iter()
        .map(|(u, _)| usage_variant(u))
        .collect();
    assert_eq!(usages, (0..27).collect(), "a usage error without its line");
    let refusals: BTreeSet<usize> = refusal_lines()
        .iter()
        .map(|(r, _)| refusal_variant(r))
        .collect();
    assert_eq!(refusals, (0..46).collect(), "a refusal without its line");
}

/// A refusal's parts are its fields, never found again in its text: a statement holding
/// `"; "` (here the brd major in the cause) stays whole, and the fix comes last after a
/// rollback, as through `anyhow` with a context.
#[test]
fn a_refusal_keeps_its_statement_whole_and_its_fix_last_wherever_it_travels() {
    let not_brd = || Refusal::NotRamDisk {
        path: path("/dev/vdb"),
        what: "not a brd RAM disk (block device 253:16; brd's major is 1)".into(),
    };
    let rolled_back = Error::RolledBack {
        failure: Box::new(Error::Refused(not_brd())),
    };
    assert_eq!(rolled_back.exit_code(), REFUSED);
    assert_eq!(
        render(&rolled_back),
        "/dev/vdb: not a brd RAM disk (block device 253:16; brd's major is 1): device mode only runs on a brd RAM disk /dev/ramN (it overwrites the device); the run was rolled back and nothing it built is left; load brd (modprobe brd rd_nr=1 rd_size=65536)"
    );
    let chained = anyhow::Error::new(Error::Refused(not_brd())).context("bench --device /dev/vdb");
    assert_eq!(
        render_chain(&chained),
        "bench --device /dev/vdb: /dev/vdb: not a brd RAM disk (block device 253:16; brd's major is 1): device mode only runs on a brd RAM disk /dev/ramN (it overwrites the device); load brd (modprobe brd rd_nr=1 rd_size=65536)"
    );
}

/// The other kinds with words of their own: a mismatch's fix comes after a rollback's
/// phrase, an unhealthy volume's findings (joined by `"; "`) are said as they are.
#[test]
fn a_verify_mismatch_and_an_unhealthy_volume_say_their_own_lines() {
    let mismatch = || Error::VerifyMismatch {
        mapping: "fw".into(),
        mismatched: 1,
        checked: 8,
    };
    let line = "verification failed on fw: 1 of 8 sectors differ from the userspace decryption; the mapping was removed (wrong key, cipher or sector size in the kernel?)";
    assert_eq!(render(&mismatch()), line);
    assert_eq!(mismatch().to_string(), line);
    let rolled_back = Error::RolledBack {
        failure: Box::new(mismatch()),
    };
    assert_eq!(rolled_back.exit_code(), VERIFY_MISMATCH);
    assert_eq!(
        render(&rolled_back),
        "verification failed on fw: 1 of 8 sectors differ from the userspace decryption; the run was rolled back and nothing it built is left; the mapping was removed (wrong key, cipher or sector size in the kernel?)"
    );
    let findings = "v: failed: member /dev/vdb failed: gone from sysfs; member /dev/vdc failed: gone from sysfs";
    let unhealthy = Error::Unhealthy {
        state: UnhealthyState::Failed,
        message: findings.into(),
    };
    assert_eq!(render(&unhealthy), findings);
    assert_eq!(unhealthy.exit_code(), VOLUME_FAILED);
}
