//! Root test, run inside the VM guest by `scripts/vm-test`: `tosskey provision` striped
//! over every virtio disk the guest has, a file written, unmounted, mounted again and read
//! back, then `e2fsck -fn` on the unmounted volume.
//!
//! With the default guest (4 x 256 MiB) it is a 1 GiB volume. Instance-store scale is the
//! same test on more, larger, sparse disks, e.g. d3en.12xlarge's 24 x 14 TB (336 TiB,
//! past the 256 TiB where the descriptors need `meta_bg`):
//!
//! ```sh
//! scripts/vm-test -p tosskey --disks 24 --disk-size 14T --timeout 7200 -- every_disk
//! ```

use std::io::Write;
use std::path::PathBuf;
use std::time::Instant;

use crate::common::tosskey;
use nix::mount::{mount, umount, MsFlags};
use tosskey_testkit::{assert_e2fsck_clean, block_device_size, virtio_disks, zero_range};

const NAME: &str = "tk-every-disk";

/// Closes the volume (unmounting it) and wipes the disks' heads when the test ends.
struct Volume {
    disks: Vec<PathBuf>,
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tosskey(&["close", "--unmount", NAME]);
        for disk in &self.disks {
            let _ = zero_range(disk, 0, 4 << 20);
        }
    }
}

/// A progress line on the guest console (libtest shows a test's output only on failure;
/// at 336 TiB the steps take minutes under emulation).
fn progress(started: Instant, message: &str) {
    let line = format!(
        "<4>every_disk {:.0}s: {message}\n",
        started.elapsed().as_secs_f64()
    );
    let _ = std::fs::OpenOptions::new()
        .write(true)
        .open("/dev/kmsg")
        .and_then(|mut kmsg| kmsg.write_all(line.as_bytes()));
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn every_disk_striped_provisions_mounts_keeps_a_file_and_is_fsck_clean() {
    let disks: Vec<PathBuf> = virtio_disks()
        .expect("list virtio disks")
        .into_iter()
        .map(|disk| disk.path)
        .collect();
    assert!(disks.len() >= 2, "the guest needs at least 2 virtio disks");
    let started = Instant::now();
    let total: u64 = disks.iter().map(|d| block_device_size(d).unwrap()).sum();
    progress(
        started,
        &format!(
            "{} disks, {total} bytes ({:.1} TiB)",
            disks.len(),
            total as f64 / (1u64 << 40) as f64
        ),
    );
    let volume = Volume {
        disks: disks.clone(),
    };
    let point = std::env::temp_dir().join("tosskey-every-disk");
    std::fs::create_dir_all(&point).unwrap();
    let mut args = vec![
        "provision",
        "--name",
        NAME,
        "--mount",
        point.to_str().unwrap(),
        // Earlier tests leave ext4 signatures on these scratch disks.
        "--force",
    ];
    args.extend(volume.disks.iter().map(|d| d.to_str().unwrap()));
    tosskey(&args).ok();
    let mapping = PathBuf::from(format!("/dev/mapper/{NAME}"));
    let size = block_device_size(&mapping).unwrap();
    assert!(
        size > total / 2,
        "the volume stripes every disk: {size} of {total}"
    );
    progress(started, &format!("provisioned and mounted {size} bytes"));

    let payload: Vec<u8> = (0..1u32 << 20)
        .map(|i| i.wrapping_mul(2_654_435_761).to_le_bytes()[3])
        .collect();
    std::fs::write(point.join("kept"), &payload).unwrap();
    umount(&point).unwrap();
    mount(
        Some(&mapping),
        &point,
        Some("ext4"),
        MsFlags::MS_NOATIME,
        None::<&str>,
    )
    .unwrap();
    assert_eq!(std::fs::read(point.join("kept")).unwrap(), payload);
    umount(&point).unwrap();
    progress(started, "the file survived umount and mount; e2fsck -fn");
    assert_e2fsck_clean(&mapping);
    progress(started, "e2fsck -fn clean");
    drop(volume);
    std::fs::remove_dir(&point).ok();
}
