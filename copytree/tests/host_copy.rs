//! Host tests: trees a user can make in a temporary directory, copied and compared entry by
//! entry with the snapshot of `tree.rs`, and the refusals.

use std::ffi::OsStr;
use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{symlink, FileExt, MetadataExt, PermissionsExt};
use std::os::unix::net::UnixListener;
use std::path::Path;

use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{utimensat, Mode, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{geteuid, mkfifo, setfsuid, Uid};
use tosskey_copytree::{copy_tree, Copied, Error};

use crate::tree::{
    assert_same_contents, assert_same_tree, data_extents, freeze_access_times, set_xattr, snapshot,
};

const KIB: u64 = 1 << 10;
const MIB: u64 = 1 << 20;

/// Deterministic bytes, distinct per `seed` (xorshift).
pub fn pattern(seed: u64, length: u64) -> Vec<u8> {
    let length = usize::try_from(length).unwrap();
    let mut state = seed.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1;
    let mut bytes = Vec::with_capacity(length + 8);
    while bytes.len() < length {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        bytes.extend_from_slice(&state.to_le_bytes());
    }
    bytes.truncate(length);
    bytes
}

/// Sets access and modification time of `path` itself (not a symlink's target).
pub fn set_times(path: &Path, atime: (i64, i64), mtime: (i64, i64)) {
    utimensat(
        AT_FDCWD,
        path,
        &TimeSpec::new(atime.0, atime.1),
        &TimeSpec::new(mtime.0, mtime.1),
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

pub fn chmod(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

/// Writes `data` at `offset` of `path`, creating it, and sets its length to `length`:
/// everything not written is a hole.
pub fn write_sparse(path: &Path, extents: &[(u64, &[u8])], length: u64) {
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(path)
        .unwrap();
    for (offset, data) in extents {
        file.write_all_at(data, *offset).unwrap();
    }
    file.set_len(length).unwrap();
}

/// A tree of every kind of entry an unprivileged user can make (and, when run as root, a
/// directory of mode 0).
fn build_user_tree(root: &Path) {
    fs::create_dir_all(root.join("a/b/c")).unwrap();
    fs::create_dir(root.join("empty")).unwrap();
    fs::write(root.join("a/small"), b"pattern").unwrap();
    fs::write(root.join("a/b/empty-file"), b"").unwrap();
    // Larger than the copy buffer, not a multiple of it.
    fs::write(root.join("a/b/c/large"), pattern(1, 3 * MIB + 5)).unwrap();
    chmod(&root.join("a/small"), 0o640);
    fs::write(root.join("a/b/mode-0"), b"x").unwrap();
    chmod(&root.join("a/b/mode-0"), 0o000);
    fs::write(root.join("setid"), b"#!/bin/sh\n").unwrap();
    chmod(&root.join("setid"), 0o6755);
    // Hard links across directories, and a second group of two.
    fs::write(root.join("a/linked"), pattern(2, 10_000)).unwrap();
    fs::hard_link(root.join("a/linked"), root.join("a/b/c/linked-again")).unwrap();
    fs::hard_link(root.join("a/linked"), root.join("empty-sibling-link")).unwrap();
    fs::write(root.join("pair-1"), b"pair").unwrap();
    fs::hard_link(root.join("pair-1"), root.join("a/b/pair-2")).unwrap();
    symlink("b/c/large", root.join("a/relative-link")).unwrap();
    symlink("/nonexistent/dangling", root.join("dangling")).unwrap();
    symlink(root.join("a"), root.join("absolute-link")).unwrap();
    // A name and a symlink target that are not UTF-8.
    let odd = OsStr::from_bytes(b"name-\xff\xfe-not-utf8");
    fs::write(root.join(odd), b"odd").unwrap();
    symlink(OsStr::from_bytes(b"target-\x80\x81"), root.join("odd-link")).unwrap();
    mkfifo(&root.join("a/fifo"), Mode::from_bits_truncate(0o620)).unwrap();
    drop(UnixListener::bind(root.join("a/socket")).unwrap());
    fs::create_dir(root.join("sticky-setgid")).unwrap();
    chmod(&root.join("sticky-setgid"), 0o7777);
    if geteuid().is_root() {
        fs::create_dir(root.join("mode-0-dir")).unwrap();
        chmod(&root.join("mode-0-dir"), 0o000);
    } else {
        eprintln!("not root: no directory of mode 0 in the tree (nobody else could list it)");
    }
    // Times to the nanosecond on files, a symlink and directories (set last, bottom up).
    set_times(
        &root.join("a/small"),
        (1_000_000_000, 1),
        (1_100_000_000, 999_999_999),
    );
    set_times(
        &root.join("dangling"),
        (1_200_000_000, 5),
        (1_300_000_000, 123_456_789),
    );
    set_times(
        &root.join("a/fifo"),
        (1_400_000_000, 7),
        (1_500_000_000, 42),
    );
    set_times(
        &root.join("a/b/c"),
        (1_600_000_000, 11),
        (1_600_000_001, 22),
    );
    set_times(&root.join("a"), (1_700_000_000, 33), (1_700_000_001, 44));
    set_times(root, (1_710_000_000, 55), (1_710_000_001, 66));
}

#[test]
fn every_kind_of_entry_a_user_can_make_is_copied_exactly() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    build_user_tree(from.path());
    freeze_access_times(from.path());
    let before = snapshot(from.path());

    let copied = copy_tree(from.path(), to.path()).unwrap();

    assert_same_tree(&before, to.path());
    assert_same_contents(from.path(), to.path());
    let entries = before.len() as u64 - 1;
    assert_eq!(copied.entries, entries, "{copied:?}");
    assert_eq!(copied.hard_links, 3, "{copied:?}");
    assert_eq!(
        copied.bytes,
        7 + 3 * MIB + 5 + 1 + 10 + 10_000 + 4 + 3,
        "{copied:?}"
    );
    // The snapshot compares these too; spelled out, they are what the task names.
    let copy = to.path();
    let mtime = fs::symlink_metadata(copy.join("dangling")).unwrap();
    assert_eq!(
        (mtime.mtime(), mtime.mtime_nsec()),
        (1_300_000_000, 123_456_789)
    );
    assert_eq!(
        fs::read_link(copy.join("dangling")).unwrap(),
        Path::new("/nonexistent/dangling")
    );
    let linked = fs::metadata(copy.join("a/linked")).unwrap();
    assert_eq!(linked.nlink(), 3);
    assert_eq!(
        linked.ino(),
        fs::metadata(copy.join("empty-sibling-link")).unwrap().ino()
    );
    assert!(fs::symlink_metadata(copy.join("a/socket"))
        .unwrap()
        .file_type()
        .is_socket_kind());
    assert_eq!(
        fs::metadata(copy.join("sticky-setgid")).unwrap().mode() & 0o7777,
        0o7777
    );
    assert_eq!(
        fs::metadata(copy.join("setid")).unwrap().mode() & 0o7777,
        0o6755
    );
}

trait IsSocketKind {
    fn is_socket_kind(&self) -> bool;
}

impl IsSocketKind for fs::FileType {
    fn is_socket_kind(&self) -> bool {
        std::os::unix::fs::FileTypeExt::is_socket(self)
    }
}

#[test]
fn user_extended_attributes_are_copied() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let probe = from.path().join("probe");
    fs::write(&probe, b"").unwrap();
    if let Err(error) = set_xattr(&probe, "user.probe", b"1") {
        // Honest skip: nothing below would test anything.
        eprintln!(
            "SKIPPED: {} has no user extended attributes ({error})",
            from.path().display()
        );
        return;
    }
    fs::create_dir(from.path().join("dir")).unwrap();
    set_xattr(
        &from.path().join("dir"),
        "user.on-a-directory",
        b"dir value",
    )
    .unwrap();
    // A value and a list of names larger than the copy's first buffer, and an empty value.
    set_xattr(&probe, "user.large", &pattern(3, 2000)).unwrap();
    set_xattr(&probe, "user.empty", b"").unwrap();
    for index in 0..40 {
        set_xattr(&probe, &format!("user.many-names-{index:03}"), b"v").unwrap();
    }
    // Writing a user attribute needs write permission: a read-only file must still get it.
    fs::write(from.path().join("read-only"), b"r").unwrap();
    set_xattr(&from.path().join("read-only"), "user.kept", b"yes").unwrap();
    chmod(&from.path().join("read-only"), 0o400);
    freeze_access_times(from.path());
    let before = snapshot(from.path());

    copy_tree(from.path(), to.path()).unwrap();

    assert_same_tree(&before, to.path());
    let copied = crate::tree::xattrs(&to.path().join("probe"));
    assert_eq!(copied[&b"user.large"[..]], pattern(3, 2000));
    assert_eq!(copied[&b"user.empty"[..]], b"");
    assert_eq!(copied.len(), 43);
    assert_eq!(
        crate::tree::xattrs(&to.path().join("read-only"))[&b"user.kept"[..]],
        b"yes"
    );
}

#[test]
fn sparse_files_keep_their_holes() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    let data = pattern(4, 64 * KIB);
    write_sparse(
        &from.path().join("leading-hole"),
        &[(MIB, &data)],
        MIB + 64 * KIB,
    );
    write_sparse(&from.path().join("trailing-hole"), &[(0, &data)], 4 * MIB);
    write_sparse(
        &from.path().join("holes-between"),
        &[(0, &data), (2 * MIB, &data), (5 * MIB, &data)],
        6 * MIB,
    );
    write_sparse(&from.path().join("only-a-hole"), &[], 8 * MIB);
    let all_holes = fs::metadata(from.path().join("only-a-hole"))
        .unwrap()
        .blocks();
    if all_holes != 0 {
        eprintln!("SKIPPED: {} does not keep holes", from.path().display());
        return;
    }
    freeze_access_times(from.path());
    let before = snapshot(from.path());

    let copied = copy_tree(from.path(), to.path()).unwrap();

    assert_same_tree(&before, to.path());
    assert_same_contents(from.path(), to.path());
    assert_eq!(
        copied.bytes,
        5 * 64 * KIB,
        "only the data extents are written"
    );
    for name in [
        "leading-hole",
        "trailing-hole",
        "holes-between",
        "only-a-hole",
    ] {
        let original = fs::metadata(from.path().join(name)).unwrap();
        let copy = fs::metadata(to.path().join(name)).unwrap();
        assert_eq!(copy.len(), original.len(), "{name}");
        assert_eq!(
            copy.blocks(),
            original.blocks(),
            "{name}: allocated 512-byte blocks"
        );
    }
    assert_eq!(
        data_extents(&to.path().join("leading-hole")),
        [(MIB, MIB + 64 * KIB)]
    );
    assert_eq!(
        data_extents(&to.path().join("trailing-hole")),
        [(0, 64 * KIB)]
    );
    assert_eq!(data_extents(&to.path().join("only-a-hole")), []);
}

#[test]
fn an_unreadable_file_fails_the_copy_naming_it() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    fs::write(from.path().join("readable"), b"r").unwrap();
    fs::write(from.path().join("secret"), b"s").unwrap();
    chmod(&from.path().join("secret"), 0o000);
    chmod(from.path(), 0o755);
    chmod(to.path(), 0o777);
    let (from_path, to_path) = (from.path().to_path_buf(), to.path().to_path_buf());
    // As root, a mode-0 file is readable: the copy runs in a thread whose filesystem user is
    // nobody (setfsuid is per thread and drops the filesystem capabilities with it).
    let result = std::thread::spawn(move || {
        if geteuid().is_root() {
            setfsuid(Uid::from_raw(65534));
        }
        copy_tree(&from_path, &to_path)
    })
    .join()
    .unwrap();

    let error = result.unwrap_err();
    assert!(matches!(error, Error::ReadData { .. }), "{error:?}");
    let secret = from.path().join("secret");
    assert_eq!(
        error.to_string(),
        format!("cannot read the data of {}", secret.display())
    );
}

#[test]
fn a_destination_that_is_not_empty_is_refused() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    fs::write(from.path().join("file"), b"new").unwrap();
    fs::write(to.path().join("file"), b"existing").unwrap();

    let error = copy_tree(from.path(), to.path()).unwrap_err();

    assert!(
        matches!(error, Error::DestinationNotEmpty { .. }),
        "{error:?}"
    );
    assert!(error.to_string().contains(&to.path().display().to_string()));
    assert_eq!(fs::read(to.path().join("file")).unwrap(), b"existing");
}

#[test]
fn a_source_that_is_not_a_directory_is_refused() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    fs::create_dir(from.path().join("real")).unwrap();
    symlink("real", from.path().join("link")).unwrap();

    let error = copy_tree(&from.path().join("link"), to.path()).unwrap_err();

    assert!(matches!(error, Error::NotADirectory { .. }), "{error:?}");
}

#[test]
fn an_empty_directory_copies_nothing_but_its_attributes() {
    let from = tempfile::tempdir().unwrap();
    let to = tempfile::tempdir().unwrap();
    chmod(from.path(), 0o1751);
    set_times(from.path(), (1_000_000_000, 1), (1_000_000_000, 2));
    freeze_access_times(from.path());
    let before = snapshot(from.path());

    let copied = copy_tree(from.path(), to.path()).unwrap();

    assert_eq!(copied, Copied::default());
    assert_same_tree(&before, to.path());
    File::open(to.path()).unwrap().flush().unwrap();
}
