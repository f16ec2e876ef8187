//! Root tests of `provision --bind DIR`, run inside the VM guest by `scripts/vm-test`: the
//! directories' contents move onto the encrypted volume and are served from it through a
//! bind mount, reruns keep (or restore) the binds, `close --unmount` and `shred` undo them,
//! and a copy that does not fit rolls everything back.

use std::collections::BTreeMap;
use std::fs;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use tosskey_sysutil::{parse_mountinfo, DevId, MountEntry};

use crate::common::{contains, disks, tosskey, Cleanup};

/// A directory of the guest's root filesystem filled with `files` (relative path →
/// contents), emptied first.
fn fill_dir(dir: &Path, files: &[(&str, Vec<u8>)]) -> BTreeMap<PathBuf, Vec<u8>> {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    files
        .iter()
        .map(|(name, data)| {
            let path = dir.join(name);
            fs::create_dir_all(path.parent().unwrap()).unwrap();
            fs::write(&path, data).unwrap();
            (path, data.clone())
        })
        .collect()
}

/// What `dir` holds now: every regular file below it with its contents.
fn read_tree(dir: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    let mut files = BTreeMap::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let meta = fs::symlink_metadata(&path).unwrap();
        if meta.is_dir() {
            files.extend(read_tree(&path));
        } else if meta.is_file() {
            files.insert(path.clone(), fs::read(&path).unwrap());
        }
    }
    files
}

fn random_bytes(len: usize) -> Vec<u8> {
    let mut bytes = vec![0u8; len];
    getrandom::fill(&mut bytes).unwrap();
    bytes
}

fn mounts() -> Vec<MountEntry> {
    parse_mountinfo(&fs::read_to_string("/proc/self/mountinfo").unwrap())
}

/// The topmost mount at `dir`, if any.
fn top_mount(dir: &Path) -> Option<MountEntry> {
    mounts()
        .into_iter()
        .rfind(|m| Path::new(&m.mount_point) == dir)
}

/// The device number of the volume `/dev/mapper/NAME`.
fn volume_dev(name: &str) -> DevId {
    let rdev = fs::metadata(format!("/dev/mapper/{name}")).unwrap().rdev();
    DevId::new(
        u32::try_from(nix::sys::stat::major(rdev)).unwrap(),
        u32::try_from(nix::sys::stat::minor(rdev)).unwrap(),
    )
}

/// Fails unless `dir` is served from volume `name` at its `/bind/DIR`.
#[track_caller]
fn assert_bound(dir: &Path, name: &str) {
    let top = top_mount(dir).unwrap_or_else(|| panic!("{} is not a mount point", dir.display()));
    assert_eq!(top.dev, volume_dev(name), "{top:?}");
    assert_eq!(
        Path::new(&top.root),
        Path::new("/bind").join(dir.strip_prefix("/").unwrap())
    );
}

#[track_caller]
fn assert_not_mounted(dir: &Path) {
    assert_eq!(
        top_mount(dir),
        None,
        "{} is still a mount point",
        dir.display()
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn bind_serves_two_directories_from_the_volume_and_close_puts_them_back() {
    let disk = disks(1);
    let cleanup = Cleanup {
        name: "t-bind",
        disks: disk.clone(),
    };
    let (a, b) = (
        Path::new("/var/lib/t-bind-a"),
        Path::new("/var/log/t-bind-b"),
    );
    let before_a = fill_dir(
        a,
        &[
            ("state.db", random_bytes(200 << 10)),
            ("sub/dir/file", b"deep".to_vec()),
        ],
    );
    std::os::unix::fs::symlink("state.db", a.join("link")).unwrap();
    let before_b = fill_dir(b, &[("pod/0.log", b"log line\n".to_vec())]);
    let args = [
        "provision",
        disk[0].to_str().unwrap(),
        "--name",
        cleanup.name,
        "--mount",
        "/mnt/t-bind",
        "--bind",
        a.to_str().unwrap(),
        "--bind",
        b.to_str().unwrap(),
        "--json",
    ];
    let report = tosskey(&args).ok().json();
    assert_eq!(report["outcome"], "provisioned", "{report}");
    assert_eq!(report["binds"][0]["dir"], "/var/lib/t-bind-a", "{report}");
    assert_eq!(
        report["binds"][1]["source"],
        "/mnt/t-bind/bind/var/log/t-bind-b"
    );

    // Each directory shows what it held, served from the volume.
    for (dir, before) in [(a, &before_a), (b, &before_b)] {
        assert_bound(dir, cleanup.name);
        assert_eq!(&read_tree(dir), before);
    }
    assert_eq!(
        fs::read_link(a.join("link")).unwrap(),
        Path::new("state.db")
    );
    assert_eq!(
        fs::read("/mnt/t-bind/bind/var/lib/t-bind-a/sub/dir/file").unwrap(),
        b"deep"
    );

    // A file written through the directory lands on the volume, never in plaintext on disk.
    let pattern = random_bytes(1 << 20);
    fs::write(a.join("written"), &pattern).unwrap();
    fs::File::open(a.join("written"))
        .unwrap()
        .sync_all()
        .unwrap();
    assert_eq!(
        fs::read("/mnt/t-bind/bind/var/lib/t-bind-a/written").unwrap(),
        pattern
    );
    let raw = fs::read(&disk[0]).unwrap();
    for window in pattern.chunks(4096).step_by(31) {
        assert!(!contains(&raw, &window[..32]), "plaintext on the raw disk");
    }

    let status = tosskey(&["status", cleanup.name, "--json"]).ok().json();
    assert_eq!(status[0]["binds"][0]["in_place"], true, "{status}");
    assert_eq!(
        status[0]["binds"][1]["dir"], "/var/log/t-bind-b",
        "{status}"
    );
    let text = tosskey(&["status", cleanup.name]).ok().stdout;
    assert!(
        text.contains("  bind: /var/lib/t-bind-a from /mnt/t-bind/bind/var/lib/t-bind-a\n"),
        "{text}"
    );

    // A rerun changes nothing; one after a bind went binds it again, copying nothing.
    let rerun = tosskey(&args).ok().json();
    assert_eq!(rerun["outcome"], "already-provisioned", "{rerun}");
    assert!(rerun.get("rebound").is_none(), "{rerun}");
    nix::mount::umount(b).unwrap();
    assert_eq!(read_tree(b), before_b);
    let rerun = tosskey(&args).ok().json();
    assert_eq!(
        rerun["rebound"],
        serde_json::json!(["/var/log/t-bind-b"]),
        "{rerun}"
    );
    assert_bound(b, cleanup.name);
    assert_eq!(read_tree(a).get(&a.join("written")), Some(&pattern));

    // close --unmount takes the binds down first, then the volume: each directory shows
    // what it held before (the file written through the bind is on the volume, now gone).
    tosskey(&["close", cleanup.name, "--unmount"]).ok();
    for (dir, before) in [(a, &before_a), (b, &before_b)] {
        assert_not_mounted(dir);
        assert_eq!(&read_tree(dir), before);
    }
    assert_not_mounted(Path::new("/mnt/t-bind"));
    assert!(!Path::new("/dev/mapper/t-bind").exists());
    drop(cleanup);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn shred_detaches_the_binds_before_the_volume() {
    let disk = disks(1);
    let cleanup = Cleanup {
        name: "t-bind-shred",
        disks: disk.clone(),
    };
    let dir = Path::new("/var/lib/t-bind-shred");
    let before = fill_dir(dir, &[("data", b"before".to_vec())]);
    tosskey(&[
        "provision",
        disk[0].to_str().unwrap(),
        "--name",
        cleanup.name,
        "--mount",
        "/mnt/t-bind-shred",
        "--bind",
        dir.to_str().unwrap(),
    ])
    .ok();
    assert_bound(dir, cleanup.name);
    let shred = tosskey(&["shred", cleanup.name]).ok().stdout;
    assert!(shred.contains("the stack removed"), "{shred}");
    assert_not_mounted(dir);
    assert_not_mounted(Path::new("/mnt/t-bind-shred"));
    assert_eq!(read_tree(dir), before);
    assert!(!Path::new("/dev/mapper/t-bind-shred").exists());
    drop(cleanup);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn a_copy_that_does_not_fit_rolls_everything_back_and_names_the_file() {
    let disks = disks(2);
    let cleanup = Cleanup {
        name: "t-bind-full",
        disks: disks.clone(),
    };
    let created = Path::new("/var/lib/t-bind-new");
    let _ = fs::remove_dir_all(created);
    let small = Path::new("/var/lib/t-bind-small");
    let before_small = fill_dir(small, &[("kept", b"small".to_vec())]);
    // ext4 largefile4 gives the 512 MiB volume one inode per 4 MiB: 5000 files do not fit.
    let full = Path::new("/var/lib/t-bind-full");
    let names: Vec<String> = (0..5000).map(|i| format!("f{i:04}")).collect();
    let files: Vec<(&str, Vec<u8>)> = names.iter().map(|n| (n.as_str(), Vec::new())).collect();
    let before_full = fill_dir(full, &files);
    let run = tosskey(&[
        "provision",
        disks[0].to_str().unwrap(),
        disks[1].to_str().unwrap(),
        "--name",
        cleanup.name,
        "--mount",
        "/mnt/t-bind-full",
        "--bind",
        created.to_str().unwrap(),
        "--bind",
        small.to_str().unwrap(),
        "--bind",
        full.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 1, "{run:?}");
    assert!(
        run.stderr
            .contains("copying /var/lib/t-bind-full onto the volume (/mnt/t-bind-full/bind/var/lib/t-bind-full)"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr
            .contains("cannot write /mnt/t-bind-full/bind/var/lib/t-bind-full/f"),
        "{}",
        run.stderr
    );
    assert!(
        run.stderr.contains("No space left on device"),
        "{}",
        run.stderr
    );

    // Nothing is left: no bind, no mount, no mapping, no array, no journal; the directory
    // that was created is gone again, the others hold what they held.
    for dir in [small, full, Path::new("/mnt/t-bind-full")] {
        assert_not_mounted(dir);
    }
    assert!(!created.exists());
    assert_eq!(read_tree(small), before_small);
    assert_eq!(read_tree(full), before_full);
    assert!(!Path::new("/dev/mapper/t-bind-full").exists());
    let mdstat = fs::read_to_string("/proc/mdstat").unwrap();
    assert!(!mdstat.contains("md_tk_t-bind-full"), "{mdstat}");
    let status = tosskey(&["status"]).ok().stdout;
    assert!(!status.contains("t-bind-full"), "{status}");
    drop(cleanup);
}
