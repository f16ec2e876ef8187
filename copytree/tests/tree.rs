//! The witness of the copy tests: a snapshot of everything `copy_tree` must keep about a
//! tree (per entry: type, mode, owner, size, device number, times, symlink target, extended
//! attributes, data extents, which entries are hard links of each other), taken by walking
//! it with lstat, and a byte-for-byte comparison of two trees' file contents.

use std::collections::BTreeMap;
use std::ffi::CString;
use std::fs::{self, File};
use std::io::Read;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

use std::time::{SystemTime, UNIX_EPOCH};

use nix::errno::Errno;
use nix::fcntl::AT_FDCWD;
use nix::sys::stat::{utimensat, UtimensatFlags};
use nix::sys::time::TimeSpec;
use nix::unistd::{lseek, Whence};
use tosskey_copytree::xattr;

/// What must survive the copy of one entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    pub size: u64,
    pub rdev: u64,
    pub atime: (i64, i64),
    pub mtime: (i64, i64),
    pub symlink_target: Option<Vec<u8>>,
    pub xattrs: BTreeMap<Vec<u8>, Vec<u8>>,
    /// (start of data, start of the next hole) of a regular file.
    pub extents: Vec<(u64, u64)>,
    /// For a non-directory with several links: the first path (in walk order) of its inode.
    pub same_inode_as: Option<Vec<u8>>,
}

/// Entries by path relative to the root (the root itself is the empty path).
pub type Snapshot = BTreeMap<Vec<u8>, Entry>;

/// The snapshot of `root`. Call [`freeze_access_times`] first: listing a directory moves its
/// access time unless the access time is newer than its change and modification times.
pub fn snapshot(root: &Path) -> Snapshot {
    let mut entries = Snapshot::new();
    let mut first_paths = BTreeMap::new();
    walk(root, Vec::new(), &mut entries, &mut first_paths);
    entries
}

fn walk(
    path: &Path,
    relative: Vec<u8>,
    entries: &mut Snapshot,
    first_paths: &mut BTreeMap<(u64, u64), Vec<u8>>,
) {
    let metadata = fs::symlink_metadata(path).unwrap();
    if metadata.is_dir() {
        let mut names: Vec<_> = fs::read_dir(path)
            .unwrap()
            .map(|entry| entry.unwrap().file_name())
            .collect();
        names.sort();
        for name in names {
            let mut child = relative.clone();
            if !child.is_empty() {
                child.push(b'/');
            }
            child.extend_from_slice(name.as_bytes());
            walk(&path.join(&name), child, entries, first_paths);
        }
    }
    let same_inode_as = (!metadata.is_dir() && metadata.nlink() > 1)
        .then(|| {
            let first = first_paths
                .entry((metadata.dev(), metadata.ino()))
                .or_insert_with(|| relative.clone());
            (*first != relative).then(|| first.clone())
        })
        .flatten();
    let entry = Entry {
        mode: metadata.mode(),
        uid: metadata.uid(),
        gid: metadata.gid(),
        size: if metadata.is_dir() {
            0
        } else {
            metadata.size()
        },
        rdev: metadata.rdev(),
        atime: (metadata.atime(), metadata.atime_nsec()),
        mtime: (metadata.mtime(), metadata.mtime_nsec()),
        symlink_target: metadata
            .file_type()
            .is_symlink()
            .then(|| fs::read_link(path).unwrap().as_os_str().as_bytes().to_vec()),
        xattrs: xattrs(path),
        extents: if metadata.is_file() {
            data_extents(path)
        } else {
            Vec::new()
        },
        same_inode_as,
    };
    entries.insert(relative, entry);
}

/// Sets the access time of every entry below and of `root` to an hour from now, with a
/// nanosecond part: later than any change time, so that neither the snapshot's walk nor the
/// copy's (`relatime`) moves it in the source or in the copy, whose change times are new.
pub fn freeze_access_times(root: &Path) {
    let later = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
        + 3600;
    let atime = TimeSpec::new(i64::try_from(later).unwrap(), 123_456_789);
    freeze(root, &atime);
}

fn freeze(path: &Path, atime: &TimeSpec) {
    let metadata = fs::symlink_metadata(path).unwrap();
    if metadata.is_dir() {
        for entry in fs::read_dir(path).unwrap() {
            freeze(&entry.unwrap().path(), atime);
        }
    }
    let mtime = TimeSpec::new(metadata.mtime(), metadata.mtime_nsec());
    utimensat(
        AT_FDCWD,
        path,
        atime,
        &mtime,
        UtimensatFlags::NoFollowSymlink,
    )
    .unwrap();
}

/// Every extended attribute of `path` the process can list.
pub fn xattrs(path: &Path) -> BTreeMap<Vec<u8>, Vec<u8>> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    let mut names = Vec::new();
    xattr::list(&path, &mut names).unwrap();
    names
        .split(|&byte| byte == 0)
        .filter(|name| !name.is_empty())
        .map(|name| {
            let mut value = Vec::new();
            xattr::get(&path, &CString::new(name).unwrap(), &mut value).unwrap();
            (name.to_vec(), value)
        })
        .collect()
}

/// Sets extended attribute `name` of `path` (not following a symlink).
pub fn set_xattr(path: &Path, name: &str, value: &[u8]) -> std::io::Result<()> {
    let path = CString::new(path.as_os_str().as_bytes()).unwrap();
    xattr::set(&path, &CString::new(name).unwrap(), value)
}

/// The data extents of a regular file as `SEEK_DATA`/`SEEK_HOLE` report them.
pub fn data_extents(path: &Path) -> Vec<(u64, u64)> {
    let file = File::open(path).unwrap();
    let length = i64::try_from(file.metadata().unwrap().len()).unwrap();
    let mut extents = Vec::new();
    let mut offset = 0;
    while offset < length {
        let data = match lseek(&file, offset, Whence::SeekData) {
            Ok(data) => data,
            Err(Errno::ENXIO) => break,
            Err(errno) => panic!("SEEK_DATA {}: {errno}", path.display()),
        };
        let hole = lseek(&file, data, Whence::SeekHole).unwrap();
        extents.push((data.unsigned_abs(), hole.unsigned_abs()));
        offset = hole;
    }
    extents
}

/// Fails, naming the first entry and field that differ, unless `copy` is what `before`
/// recorded. The root's mode and owner are compared too: copy_tree gives them to `to`.
pub fn assert_same_tree(before: &Snapshot, copy: &Path) {
    let after = snapshot(copy);
    let names = |snapshot: &Snapshot| snapshot.keys().cloned().collect::<Vec<_>>();
    assert_eq!(
        names(before)
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect::<Vec<_>>(),
        names(&after)
            .iter()
            .map(|name| String::from_utf8_lossy(name).into_owned())
            .collect::<Vec<_>>(),
        "the copy has other entries"
    );
    for (name, expected) in before {
        assert_eq!(
            expected,
            &after[name],
            "entry {:?} differs in the copy",
            String::from_utf8_lossy(name)
        );
    }
}

/// Fails unless every regular file below `original` has the same bytes as its copy.
pub fn assert_same_contents(original: &Path, copy: &Path) {
    for entry in fs::read_dir(original).unwrap() {
        let entry = entry.unwrap();
        let kind = entry.file_type().unwrap();
        let copied = copy.join(entry.file_name());
        if kind.is_dir() {
            assert_same_contents(&entry.path(), &copied);
        } else if kind.is_file() {
            assert_same_bytes(&entry.path(), &copied);
        }
    }
}

fn assert_same_bytes(original: &Path, copy: &Path) {
    let (mut left, mut right) = (File::open(original).unwrap(), File::open(copy).unwrap());
    let (mut left_buffer, mut right_buffer) = (vec![0; 1 << 16], vec![0; 1 << 16]);
    let mut offset = 0;
    loop {
        let read = left.read(&mut left_buffer).unwrap();
        right.read_exact(&mut right_buffer[..read]).unwrap();
        assert!(
            left_buffer[..read] == right_buffer[..read],
            "{} differs from {} in the 64 KiB at {offset}",
            copy.display(),
            original.display()
        );
        if read == 0 {
            assert_eq!(
                right.read(&mut right_buffer).unwrap(),
                0,
                "{} is longer",
                copy.display()
            );
            return;
        }
        offset += read;
    }
}
