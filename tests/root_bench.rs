//! Root tests of `tosskey bench`, run inside the VM guest by `scripts/vm-test`: the kernel
//! side through AF_ALG (the guest loads af_alg, algif_skcipher, xts, twofish, aesni) and
//! device mode over the guest's brd RAM disk (/dev/ram0, 64 MiB). Short cells: these check
//! that every number is measured, not how fast the emulated CPU is.

use crate::common::tosskey;
// Links the root-test gate: outside the VM guest this executable refuses --ignored runs.

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn cipher_bench_measures_kernel_and_userspace_for_every_cipher() {
    let run = tosskey(&["bench", "--json", "--millis", "100"]).ok();
    let report = run.json();
    let rows = report["rows"].as_array().expect("rows");
    let listed: Vec<(String, u64)> = rows
        .iter()
        .map(|r| {
            (
                r["cipher"].as_str().unwrap().to_owned(),
                r["key_bits"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        listed,
        [
            ("twofish-xts-plain64".to_owned(), 256),
            ("twofish-xts-plain64".to_owned(), 512),
            ("aes-xts-plain64".to_owned(), 256),
            ("aes-xts-plain64".to_owned(), 512),
        ]
    );
    for row in rows {
        let kernel = &row["kernel"];
        assert_eq!(kernel["status"], "measured", "{row}");
        let driver = kernel["driver"].as_str().unwrap();
        assert!(
            driver.contains("twofish") || driver.contains("aes"),
            "driver {driver} in {row}"
        );
        for side in [
            &kernel["encrypt"],
            &kernel["decrypt"],
            &row["userspace_encrypt"],
            &row["userspace_decrypt"],
        ] {
            for cores in ["single_core", "all_cores"] {
                let speed = side[cores].as_f64().unwrap();
                assert!(speed > 0.0 && speed.is_finite(), "{cores} in {row}");
            }
        }
        assert!(
            row["kernel_over_userspace"]["encrypt_single_core"]
                .as_f64()
                .unwrap()
                > 0.0
        );
    }
    // The text table shows every row's driver and no n/a.
    let table = tosskey(&["bench", "--millis", "50"]).ok().stdout;
    assert!(!table.contains("n/a"), "{table}");
    assert_eq!(table.matches("kernel xts(").count(), 4, "{table}");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn device_bench_measures_every_table_option_and_cleans_up() {
    let run = tosskey(&["bench", "--device", "--json", "--millis", "100"]).ok();
    let report = run.json();
    assert_eq!(report["device"], "/dev/ram0");
    let rows = report["rows"].as_array().expect("rows");
    // Bare disk + 2 ciphers x 2 sector sizes x workqueues used/bypassed.
    assert_eq!(rows.len(), 9, "{report}");
    for row in rows {
        for direction in ["write_mib_s", "read_mib_s"] {
            let speed = row[direction].as_f64().unwrap();
            assert!(speed > 0.0 && speed.is_finite(), "{direction} in {row}");
        }
    }
    let chosen = report["chosen"].as_array().expect("chosen");
    assert_eq!(chosen.len(), 2, "{report}");
    for choice in chosen {
        let size = choice["sector_size"].as_u64().unwrap();
        assert!(size == 512 || size == 4096, "{choice}");
    }
    // Every bench mapping was removed.
    let left: Vec<String> = std::fs::read_dir("/sys/block")
        .unwrap()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            let dm_name = std::fs::read_to_string(format!("/sys/block/{name}/dm/name")).ok()?;
            dm_name.starts_with("tosskey-bench").then_some(dm_name)
        })
        .collect();
    assert!(left.is_empty(), "left behind: {left:?}");
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn device_bench_refuses_a_real_disk() {
    let run = tosskey(&[
        "bench",
        "--device",
        "--ramdisk",
        "/dev/vda",
        "--millis",
        "10",
    ]);
    assert_ne!(run.code, 0, "{}", run.stdout);
    assert!(
        run.stderr.contains("only runs on a brd RAM disk"),
        "{}",
        run.stderr
    );
}

/// First bytes of `path`, the range a short device bench overwrites first.
fn head_digest(path: &std::path::Path) -> [u8; 32] {
    tosskey_testkit::sha256_of_range(path, 0, 4 << 20).unwrap()
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn device_bench_refuses_a_node_named_like_a_ram_disk_that_is_not_brd() {
    use std::os::unix::fs::MetadataExt as _;
    // A node called ram0 for a real disk: the name says RAM disk, the device number does not.
    let disk = tosskey_testkit::virtio_disks().unwrap().pop().unwrap();
    let before = head_digest(&disk.path);
    let dir = tempfile::tempdir().unwrap();
    let alias = dir.path().join("ram0");
    nix::sys::stat::mknod(
        &alias,
        nix::sys::stat::SFlag::S_IFBLK,
        nix::sys::stat::Mode::from_bits_truncate(0o600),
        std::fs::metadata(&disk.path).unwrap().rdev(),
    )
    .unwrap();
    let run = tosskey(&[
        "bench",
        "--device",
        "--ramdisk",
        alias.to_str().unwrap(),
        "--millis",
        "10",
    ]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("not a brd RAM disk"), "{}", run.stderr);
    assert_eq!(
        head_digest(&disk.path),
        before,
        "{} was written",
        disk.path.display()
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn device_bench_refuses_a_ram_disk_that_is_in_use() {
    use std::io::Write as _;
    use std::os::unix::fs::OpenOptionsExt as _;
    let ramdisk = std::path::Path::new("/dev/ram1");
    // Something of someone's on the RAM disk, held open exclusively as a mount would hold it.
    let mut holder = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_EXCL)
        .open(ramdisk)
        .unwrap();
    holder.write_all(&[0x5a; 1 << 20]).unwrap();
    holder.sync_all().unwrap();
    let before = head_digest(ramdisk);
    let run = tosskey(&[
        "bench",
        "--device",
        "--ramdisk",
        "/dev/ram1",
        "--millis",
        "10",
    ]);
    assert_eq!(run.code, 3, "{}{}", run.stdout, run.stderr);
    assert!(run.stderr.contains("is in use"), "{}", run.stderr);
    assert_eq!(
        head_digest(ramdisk),
        before,
        "the held RAM disk was written"
    );
    drop(holder);
}
