//! Root tests (VM guest) of the redundant levels, md raid1 and raid10, in both layouts:
//!
//! - `mirrors_verify_over_members_holding_different_data_*` (raid1 and raid10,
//!   shared and per-disk): members filled with different random data (as disks look after
//!   a reboot into another layout, or any reuse) provision 20 times in a row: verification
//!   must not depend on which mirror md reads a never-written sector from.
//! - `mirrors_stock_dm_raid_rebuilds_raid10_with_the_same_bytes`: the commands
//!   `escrow decrypt` prints for a raid10 volume (a dm `raid` table through dmsetup, since
//!   `mdadm --build` makes no raid10) rebuild the same crypt tables and the same plaintext.
//! - `mirrors_lose_no_data_when_a_member_fails_*` (raid1, raid10 shared and per-disk): a
//!   member of the mounted volume starts failing every I/O (a dm `error` table swapped
//!   under it); reads and writes go on, and every file written before and after is intact.
//! - `mirrors_raid10_status_names_the_level_and_shred_takes_it_down`.

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::io::Write;
use std::os::unix::fs::FileExt as _;
use std::path::{Path, PathBuf};

use crate::common::{
    assert_no_volume_left, check_files, escrow_decrypt, escrow_test_keys, recovery_step,
    remove_escrow_and_keys, run_stock, tosskey,
};
use sha2::{Digest, Sha256};
use tosskey::plan::render;
use tosskey_dm::{DevId, DmControl, DmName, DmUuid, Sectors, TargetLine};
use tosskey_testkit::{virtio_disks, zero_range, VirtioDisk};
use zeroize::Zeroizing;

/// A redundant level and layout under test, over `disks` members.
struct Case {
    level: &'static str,
    layout: &'static str,
    disks: usize,
}

const CASES: [Case; 4] = [
    Case {
        level: "raid1",
        layout: "shared",
        disks: 2,
    },
    Case {
        level: "raid1",
        layout: "per-disk",
        disks: 2,
    },
    Case {
        level: "raid10",
        layout: "shared",
        disks: 4,
    },
    Case {
        level: "raid10",
        layout: "per-disk",
        disks: 4,
    },
];

fn paths(disks: &[VirtioDisk]) -> Vec<&str> {
    disks.iter().map(|d| d.path.to_str().unwrap()).collect()
}

fn provision_args<'a>(name: &'a str, case: &'a Case, members: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["provision"];
    args.extend(members);
    args.extend([
        "--name",
        name,
        "--level",
        case.level,
        "--layout",
        case.layout,
    ]);
    args
}

/// Fills `disk` whole with a 4 MiB block of pseudo-random bytes from `seed`, repeated
/// (xorshift64*: a different seed gives every member different contents at every offset,
/// which is all that matters here).
fn fill_random(disk: &Path, seed: u64) {
    let mut state = seed | 1;
    let mut file = OpenOptions::new().write(true).open(disk).unwrap();
    let size = tosskey_testkit::block_device_size(disk).unwrap();
    let mut block = vec![0u8; 4 << 20];
    for word in block.chunks_exact_mut(8) {
        state ^= state >> 12;
        state ^= state << 25;
        state ^= state >> 27;
        word.copy_from_slice(&state.wrapping_mul(0x2545_f491_4f6c_dd1d).to_le_bytes());
    }
    let mut written = 0;
    while written < size {
        let take = usize::try_from((size - written).min(block.len() as u64)).unwrap();
        file.write_all(&block[..take]).unwrap();
        written += take as u64;
    }
    file.sync_all().unwrap();
}

/// Closes the volume (unmounting it) when the test ends, pass or fail.
struct Closing(&'static str);

impl Drop for Closing {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "--unmount", self.0]);
    }
}

/// Fills the members of `case` with different random data, then provisions and closes 20
/// times in a row: every run must pass verification.
fn provisions_over_different_data(case: &Case) {
    const RUNS: usize = 20;
    let disks = virtio_disks().unwrap();
    assert!(
        disks.len() >= case.disks,
        "the guest needs {} virtio disks",
        case.disks
    );
    let disks = &disks[..case.disks];
    for (index, disk) in disks.iter().enumerate() {
        fill_random(
            &disk.path,
            0x9e37_79b9_7f4a_7c15_u64.wrapping_mul(index as u64 + 1),
        );
    }
    let name = "t-mirrors";
    let _closing = Closing(name);
    let members = paths(disks);
    // --mkfs none writes nothing: the members keep their different data for every run.
    let mut args = provision_args(name, case, &members);
    args.extend(["--mkfs", "none"]);
    for run in 1..=RUNS {
        let provisioned = tosskey(&args);
        assert_eq!(
            provisioned.code, 0,
            "{} {}: run {run} of {RUNS} failed: {}",
            case.level, case.layout, provisioned.stderr
        );
        tosskey(&["close", name]).ok();
    }
    for disk in disks {
        zero_range(&disk.path, 0, 4 << 20).unwrap();
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_verify_over_members_holding_different_data_raid1_shared() {
    provisions_over_different_data(&CASES[0]);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_verify_over_members_holding_different_data_raid1_per_disk() {
    provisions_over_different_data(&CASES[1]);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_verify_over_members_holding_different_data_raid10_shared() {
    provisions_over_different_data(&CASES[2]);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_verify_over_members_holding_different_data_raid10_per_disk() {
    provisions_over_different_data(&CASES[3]);
}

/// The dm table of `name` with its keys, its devices as `dm:<name>` / `md` / kernel name
/// with `array` for the device a raid10 volume's mapping sits on (tosskey's md array or the
/// stock dm `raid` mapping).
fn table_of(name: &str, array: &[&str]) -> String {
    let dm = DmControl::open().unwrap();
    let entries = dm.table_with_keys(&DmName::new(name).unwrap()).unwrap();
    entries
        .iter()
        .map(|e| {
            let line = format!(
                "{} {} {} {}",
                e.start,
                e.length,
                e.target_type,
                e.params.as_str()
            );
            line.split(' ')
                .map(|word| identify(word, array))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect::<Vec<_>>()
        .join("; ")
}

/// A table word: device numbers become `array` (for `array`'s dm names or any md array)
/// or the device's kernel name; other words stay.
fn identify(word: &str, array: &[&str]) -> String {
    let Ok(dev) = word.parse::<DevId>() else {
        return word.to_owned();
    };
    let sys = PathBuf::from(format!("/sys/dev/block/{dev}"));
    if !sys.exists() {
        return word.to_owned();
    }
    if sys.join("md").is_dir() {
        return "array".to_owned();
    }
    if let Ok(name) = std::fs::read_to_string(sys.join("dm/name")) {
        let name = name.trim();
        return if array.contains(&name) {
            "array".to_owned()
        } else {
            format!("dm:{name}")
        };
    }
    std::fs::canonicalize(&sys)
        .unwrap()
        .file_name()
        .unwrap()
        .to_str()
        .unwrap()
        .to_owned()
}

/// Hashes of 4 MiB stretches at the start, middle and end of `volume`.
fn sample_hashes(volume: &Path) -> Vec<[u8; 32]> {
    let size = tosskey_testkit::block_device_size(volume).unwrap();
    let stretch = 4 << 20;
    [0, size / 2 / 4096 * 4096, size - stretch]
        .into_iter()
        .map(|at| tosskey_testkit::sha256_of_range(volume, at, stretch).unwrap())
        .collect()
}

/// Writes a pattern over the sampled stretches of `volume`.
fn write_samples(volume: &Path) {
    let size = tosskey_testkit::block_device_size(volume).unwrap();
    let stretch: u64 = 4 << 20;
    let file = OpenOptions::new().write(true).open(volume).unwrap();
    for (index, at) in [0, size / 2 / 4096 * 4096, size - stretch]
        .into_iter()
        .enumerate()
    {
        let mut data = Vec::with_capacity(usize::try_from(stretch).unwrap());
        let mut seed = [u8::try_from(index).unwrap(); 32];
        while (data.len() as u64) < stretch {
            seed = Sha256::digest(seed).into();
            data.extend_from_slice(&seed);
        }
        file.write_all_at(&data, at).unwrap();
    }
    file.sync_all().unwrap();
}

/// Provision raid10 in `layout` with escrow, write samples, record tables and plaintext;
/// close; run the stock commands; the tables (keys included) and plaintext are the same,
/// and the members are unchanged by the stock stack coming up and down.
fn stock_recipe_matches(name: &'static str, layout: &'static str) {
    let disks = virtio_disks().unwrap();
    let case = Case {
        level: "raid10",
        layout,
        disks: 4,
    };
    let members = paths(&disks[..case.disks]);
    let (public, private) = escrow_test_keys();
    let escrow = format!("/tmp/{name}.escrow");
    let key_out = format!("/tmp/{name}.key");
    let _ = std::fs::remove_file(&escrow);
    let closing = Closing(name);
    let mut args = provision_args(name, &case, &members);
    args.extend([
        "--mkfs",
        "none",
        "--key-loading",
        "hex",
        "--escrow-key",
        public.to_str().unwrap(),
        "--escrow-file",
        &escrow,
        "--json",
    ]);
    let report = tosskey(&args).ok().json();
    let crypt_names: Vec<String> = report["stack"]["crypt"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["name"].as_str().unwrap().to_owned())
        .collect();
    let volume = PathBuf::from(format!("/dev/mapper/{name}"));
    write_samples(&volume);
    let stock_raid = format!("{name}-raid10");
    let tables = |array: &str| -> Vec<String> {
        let mut names = crypt_names.clone();
        if !names.iter().any(|n| n == name) {
            names.push(name.to_owned());
        }
        names
            .iter()
            .map(|n| format!("{n}: {}", table_of(n, &[array])))
            .collect()
    };
    let by_tosskey = tables("-");
    let tosskey_bytes = sample_hashes(&volume);
    let md = format!("/sys/block/md_tk_{name}/size");
    let md_sectors = std::fs::read_to_string(&md).unwrap();
    tosskey(&["close", name]).ok();
    drop(closing);
    let members_before: Vec<[u8; 32]> = members
        .iter()
        .map(|m| tosskey_testkit::sha256_of_range(Path::new(m), 0, 16 << 20).unwrap())
        .collect();

    let decrypt = escrow_decrypt(&escrow, &private, &key_out).ok();
    // Only the opening step: the volume was made with --mkfs none, so the script's mount
    // step has nothing to mount, and this test takes the stock stack down itself.
    let commands = recovery_step(&decrypt.stdout, render::RECOVERY_OPEN);
    let raid = commands
        .iter()
        .find(|line| line.contains(&format!(" -- {stock_raid}   # md raid10")))
        .unwrap_or_else(|| panic!("no dm raid command: {}", decrypt.stdout));
    assert!(
        raid.contains(&format!(
            " raid raid10 6 1024 nosync raid10_copies 2 raid10_format near 4 /dev/mapper/{stock_raid}-meta0 /dev/"
        )),
        "{raid}"
    );
    for line in &commands {
        run_stock(line);
    }
    let dm = DmControl::open().unwrap();
    let raid_size = dm
        .table(&DmName::new(&stock_raid).unwrap())
        .unwrap()
        .iter()
        .map(|e| e.length.0)
        .sum::<u64>();
    let by_stock = tables(&stock_raid);
    let stock_bytes = sample_hashes(&volume);
    // Top first: the volume, the raid mapping and its metadata devices, then the per-disk
    // crypt mappings under it.
    let mut stack = vec![name.to_owned(), stock_raid.clone()];
    stack.extend((0..case.disks).map(|slot| format!("{stock_raid}-meta{slot}")));
    stack.extend(crypt_names.iter().filter(|n| *n != name).cloned());
    for node in &stack {
        run_stock(&format!("dmsetup remove {node}"));
    }
    assert_eq!(raid_size.to_string(), md_sectors.trim(), "array sizes");
    assert_eq!(
        by_stock, by_tosskey,
        "{layout}: stock tools built other tables"
    );
    assert!(
        stock_bytes == tosskey_bytes,
        "{layout}: the stock volume reads other bytes"
    );
    let members_after: Vec<[u8; 32]> = members
        .iter()
        .map(|m| tosskey_testkit::sha256_of_range(Path::new(m), 0, 16 << 20).unwrap())
        .collect();
    assert!(
        members_after == members_before,
        "the stock stack wrote to a member"
    );
    remove_escrow_and_keys(&escrow, &key_out);
    for member in &members {
        zero_range(Path::new(member), 0, 4 << 20).unwrap();
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_stock_dm_raid_rebuilds_raid10_with_the_same_bytes() {
    assert!(
        Path::new("/usr/sbin/dmsetup").exists(),
        "dmsetup is not in the guest: run scripts/vm-test with TOSSKEY_VM_TOOLS including dmsetup"
    );
    stock_recipe_matches("t-r10stock", "shared");
    stock_recipe_matches("t-r10stockpd", "per-disk");
}

/// Members as dm `linear` mappings over the virtio disks, so a test can swap an `error`
/// table under one while the volume is in use. Removed when dropped.
struct Legs {
    dm: DmControl,
    names: Vec<DmName>,
    disks: Vec<VirtioDisk>,
}

impl Legs {
    fn over(disks: Vec<VirtioDisk>) -> Legs {
        let dm = DmControl::open().unwrap();
        let names = (0..disks.len())
            .map(|i| DmName::new(&format!("t-leg{i}")).unwrap())
            .collect::<Vec<_>>();
        for (name, disk) in names.iter().zip(&disks) {
            let _ = dm.remove(name);
            dm.create(name, &DmUuid::new(&format!("TEST-{name}")).unwrap())
                .unwrap();
            dm.load_table(name, &[Self::line(disk, "linear")]).unwrap();
            dm.resume(name).unwrap();
        }
        Legs { dm, names, disks }
    }

    fn line(disk: &VirtioDisk, target: &str) -> TargetLine {
        let params = match target {
            "linear" => format!("{} 0", disk.dev),
            _ => String::new(),
        };
        TargetLine::new(
            Sectors(0),
            Sectors(disk.size_bytes / 512),
            target,
            Zeroizing::new(params),
            false,
        )
        .unwrap()
    }

    fn paths(&self) -> Vec<String> {
        self.names
            .iter()
            .map(|n| DmControl::node_path(n).display().to_string())
            .collect()
    }

    /// From now on every I/O to leg `index` fails with EIO.
    fn fail(&self, index: usize) {
        let name = &self.names[index];
        self.dm
            .load_table(name, &[Self::line(&self.disks[index], "error")])
            .unwrap();
        self.dm.resume(name).unwrap();
    }
}

impl Drop for Legs {
    fn drop(&mut self) {
        for name in &self.names {
            let _ = self.dm.remove(name);
        }
    }
}

/// Writes `count` files of different sizes named `<prefix><i>` under `dir` and returns
/// their hashes.
fn write_files(dir: &Path, prefix: &str, count: usize) -> BTreeMap<PathBuf, [u8; 32]> {
    let mut files = BTreeMap::new();
    let mut seed: [u8; 32] = Sha256::digest(prefix.as_bytes()).into();
    for i in 0..count {
        let len = 4096 * (i % 7) + 100 * i + 1;
        let mut data = Vec::with_capacity(len);
        while data.len() < len {
            seed = Sha256::digest(seed).into();
            data.extend_from_slice(&seed);
        }
        data.truncate(len);
        let path = dir.join(format!("{prefix}{i}"));
        let mut file = File::create(&path).unwrap();
        file.write_all(&data).unwrap();
        file.sync_all().unwrap();
        files.insert(path, Sha256::digest(&data).into());
    }
    // One large file spanning many chunks of every member.
    let large = dir.join(format!("{prefix}large"));
    let mut data = Vec::with_capacity(8 << 20);
    while data.len() < 8 << 20 {
        seed = Sha256::digest(seed).into();
        data.extend_from_slice(&seed);
    }
    std::fs::write(&large, &data).unwrap();
    File::open(&large).unwrap().sync_all().unwrap();
    files.insert(large, Sha256::digest(&data).into());
    files
}

/// Drops the page cache, so reads go to the disks.
fn drop_caches() {
    std::fs::write("/proc/sys/vm/drop_caches", "3").unwrap();
}

fn degraded_member_keeps_data(name: &'static str, level: &'static str, layout: &'static str) {
    let disks: Vec<VirtioDisk> = virtio_disks().unwrap().into_iter().take(4).collect();
    let legs = Legs::over(disks);
    let leg_paths = legs.paths();
    let members: Vec<&str> = leg_paths.iter().map(String::as_str).collect();
    let case = Case {
        level,
        layout,
        disks: 4,
    };
    let mount = format!("/mnt/{name}");
    let closing = Closing(name);
    let mut args = provision_args(name, &case, &members);
    args.extend(["--mount", &mount, "--inode-ratio", "65536"]);
    tosskey(&args).ok();
    let mount_dir = Path::new(&mount);
    let mut files = write_files(mount_dir, "before-", 40);
    drop_caches();
    check_files(&files, "before the failure");
    let healthy = tosskey(&["status", "--check", name]);
    assert_eq!(healthy.code, 0, "{healthy:?}");

    // Member 1 fails; for raid10 near-2 over 4 members it holds the second copy of
    // every other chunk.
    legs.fail(1);
    drop_caches();
    check_files(&files, "right after member 1 failed");
    files.extend(write_files(mount_dir, "after-", 40));
    let md_degraded = PathBuf::from(format!("/sys/block/md_tk_{name}/md/degraded"));
    let degraded = std::fs::read_to_string(&md_degraded).unwrap();
    assert_eq!(degraded.trim(), "1", "md counts the failed member");
    // The health probe sees it: degraded (exit 6), the failed member named as it was given
    // (per disk: the disk under the crypt mapping md marked faulty).
    let check = tosskey(&["status", "--check", name]);
    assert_eq!(check.code, 6, "{check:?}");
    assert!(
        check.stderr.contains("degraded") && check.stderr.contains(&leg_paths[1]),
        "{check:?}"
    );
    drop_caches();
    check_files(&files, "after writing on the degraded array");
    // The filesystem is consistent on the degraded array.
    nix::mount::umount(mount.as_str()).unwrap();
    tosskey_testkit::assert_e2fsck_clean(Path::new(&format!("/dev/mapper/{name}")));
    tosskey(&["close", name]).ok();
    drop(closing);
    let disks = legs.disks.clone();
    drop(legs);
    for disk in &disks {
        zero_range(&disk.path, 0, 4 << 20).unwrap();
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_lose_no_data_when_a_member_fails_raid1() {
    degraded_member_keeps_data("t-deg1", "raid1", "shared");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_lose_no_data_when_a_member_fails_raid10_shared() {
    degraded_member_keeps_data("t-deg10", "raid10", "shared");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_lose_no_data_when_a_member_fails_raid10_per_disk() {
    degraded_member_keeps_data("t-deg10pd", "raid10", "per-disk");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn mirrors_raid10_status_names_the_level_and_shred_takes_it_down() {
    let disks = virtio_disks().unwrap();
    let name = "t-r10shred";
    for layout in ["shared", "per-disk"] {
        let case = Case {
            level: "raid10",
            layout,
            disks: 4,
        };
        let _closing = Closing(name);
        let mut args = provision_args(name, &case, &paths(&disks[..4]));
        args.extend(["--mkfs", "none"]);
        tosskey(&args).ok();
        let status = tosskey(&["status", name]).ok().stdout;
        assert!(
            status.contains(&format!("md_tk_{name}: md raid10 chunk 512 KiB over ")),
            "{layout}: {status}"
        );
        let shred = tosskey(&["shred", name]).ok().stdout;
        assert!(shred.contains("and the stack removed"), "{layout}: {shred}");
        assert_no_volume_left();
    }
}
