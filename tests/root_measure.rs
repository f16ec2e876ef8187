//! Root tests of `provision --measure-pcr` and `measure verify`, run in the VM guest with a
//! software TPM: `scripts/vm-test --tpm -p tosskey -- measure`.
//!
//! Only this file extends PCR 15 in the guest, so the event log holds every extend since
//! boot and its replay must equal the PCR. The tests share the TPM and /dev/tpmrm0, so they
//! run one at a time (`TPM_LOCK`). The missing-TPM case hides the device node by renaming it
//! (restored on drop): it runs in the same guest as the measuring tests, and it exercises
//! the real "no node at /dev/tpmrm0" path rather than a second VM run without --tpm.

use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::common::tosskey;
use tosskey_testkit::{tpm2_pcrread, virtio_disks, zero_range};
use tosskey_tpm::{read_log, replay, HashAlg, PcrValues, Tpm, DEFAULT_DEVICE, DEFAULT_LOG};

const PCR: u32 = 15;
static TPM_LOCK: Mutex<()> = Mutex::new(());

fn disk(index: usize) -> PathBuf {
    let disks = virtio_disks().expect("list virtio disks");
    assert!(
        disks.len() > index,
        "the guest needs {} virtio disks",
        index + 1
    );
    disks[index].path.clone()
}

/// A volume closed (and its disk's head wiped) when the test ends, pass or fail.
struct Volume {
    name: &'static str,
    disk: PathBuf,
}

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tosskey(&["close", self.name]);
        let _ = zero_range(&self.disk, 0, 4 << 20);
    }
}

/// /dev/tpmrm0 renamed away for the guard's lifetime.
struct HiddenTpm;

const HIDDEN: &str = "/dev/tpmrm0.hidden-by-test";

impl HiddenTpm {
    fn new() -> HiddenTpm {
        std::fs::rename(DEFAULT_DEVICE, HIDDEN).expect("hide /dev/tpmrm0 (run with --tpm)");
        HiddenTpm
    }
}

impl Drop for HiddenTpm {
    fn drop(&mut self) {
        std::fs::rename(HIDDEN, DEFAULT_DEVICE).expect("restore /dev/tpmrm0");
    }
}

fn provision_measured(name: &str, disk: &Path, measure: &str) -> crate::common::Run {
    tosskey(&[
        "provision",
        disk.to_str().unwrap(),
        "--name",
        name,
        "--mkfs",
        "none",
        "--measure-pcr",
        measure,
        "--json",
    ])
}

fn tosskey_reading(algs: &[HashAlg]) -> PcrValues {
    let mut tpm = Tpm::open(DEFAULT_DEVICE).unwrap();
    PcrValues::from_readings(&tpm.pcr_read(PCR, algs).unwrap())
}

fn witness_pcrread(algs: &[HashAlg]) -> PcrValues {
    let selection: Vec<String> = algs.iter().map(|alg| format!("{alg}:{PCR}")).collect();
    let output = tpm2_pcrread(DEFAULT_DEVICE, &selection);
    PcrValues::parse_tpm2_pcrread(&output, Path::new("tpm2_pcrread output")).unwrap()
}

/// The measured volumes of a provision's JSON report.
fn measured_volumes(report: &serde_json::Value) -> Vec<serde_json::Value> {
    let measurement = &report["measurement"];
    assert_eq!(measurement["outcome"], "measured", "{measurement}");
    measurement["volumes"].as_array().unwrap().clone()
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn provision_measures_pcr_15_and_the_log_replays_to_the_tpm_and_tpm2_pcrread() {
    let _tpm = TPM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let disk = disk(0);
    let mut key_digests = Vec::new();
    for round in 0..2 {
        let volume = Volume {
            name: "t-measure",
            disk: disk.clone(),
        };
        let report = provision_measured(volume.name, &volume.disk, "15")
            .ok()
            .json();
        let volumes = measured_volumes(&report);
        assert_eq!(volumes.len(), 1, "one crypt node");
        let events = volumes[0]["events"].as_array().unwrap();
        assert_eq!(events.len(), 2, "identity + one key: {events:?}");
        assert_eq!(events[0]["event_type"], "tosskey-volume");
        let identity = events[0]["string"].as_str().unwrap();
        assert!(
            identity.starts_with("tosskey-volume:v1:name=t-measure:uuid=TOSSKEY-")
                && identity.ends_with(":verification=passed"),
            "{identity}"
        );
        key_digests.push(events[1]["digests"]["sha256"].as_str().unwrap().to_owned());

        // status --json shows the journal's measurement.
        let status = tosskey(&["status", "t-measure", "--json"]).ok().json();
        assert_eq!(status[0]["measurements"][0], volumes[0], "round {round}");

        // The log's replay is what the TPM holds, read by tosskey and by the witness.
        let records = read_log(Path::new(DEFAULT_LOG)).unwrap();
        let replayed = replay(&records);
        let algs: Vec<HashAlg> = replayed.iter().map(|(alg, _, _)| alg).collect();
        assert!(algs.contains(&HashAlg::Sha256), "{algs:?}");
        let ours = tosskey_reading(&algs);
        let witness = witness_pcrread(&algs);
        for alg in &algs {
            let expected = replayed.get(*alg, PCR).unwrap();
            assert_eq!(ours.get(*alg, PCR), Some(expected), "{alg} by tosskey");
            assert_eq!(
                witness.get(*alg, PCR),
                Some(expected),
                "{alg} by tpm2_pcrread"
            );
        }
        let sha256 = hex(replayed.get(HashAlg::Sha256, PCR).unwrap());
        assert_eq!(volumes[0]["pcr_after"]["sha256"], sha256.as_str());
        eprintln!(
            "round {round}: {} records replay to PCR {PCR} sha256 {sha256} = tosskey = tpm2_pcrread",
            records.len()
        );
    }
    assert_ne!(
        key_digests[0], key_digests[1],
        "two provisions, two measurements"
    );
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn measure_pcr_15_without_a_tpm_fails_cleanly_and_auto_measures_nothing() {
    let _tpm = TPM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let disk = disk(1);
    let log_before = std::fs::read(DEFAULT_LOG).ok();
    let hidden = HiddenTpm::new();

    provision_measured("t-notpm", &disk, "15").fails_with(3, "no TPM at /dev/tpmrm0");
    // The dry run refuses it alike: a dry run that passes gets the real run past it.
    tosskey(&[
        "provision",
        disk.to_str().unwrap(),
        "--name",
        "t-notpm",
        "--measure-pcr",
        "15",
        "--dry-run",
    ])
    .fails_with(3, "no TPM at /dev/tpmrm0");
    assert!(
        !Path::new("/run/tosskey/t-notpm.json").exists(),
        "no journal"
    );
    assert!(!Path::new("/dev/mapper/t-notpm").exists(), "no mapping");

    let volume = Volume {
        name: "t-notpm",
        disk: disk.clone(),
    };
    let run = provision_measured(volume.name, &volume.disk, "auto").ok();
    assert_eq!(run.json()["measurement"]["outcome"], "no-tpm");
    assert!(
        run.stderr.contains("nothing will be measured"),
        "{}",
        run.stderr
    );
    drop(volume);
    drop(hidden);
    assert_eq!(
        std::fs::read(DEFAULT_LOG).ok(),
        log_before,
        "nothing logged"
    );
}

/// The dry run's plan lists the measurement step the real run takes.
#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn the_dry_run_plan_shows_the_measurement_step() {
    let _tpm = TPM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let disk = disk(3);
    let dry_run = |json: bool| {
        let mut args = vec![
            "provision",
            disk.to_str().unwrap(),
            "--name",
            "t-dry-measure",
            "--measure-pcr",
            "15",
            "--dry-run",
        ];
        if json {
            args.push("--json");
        }
        tosskey(&args).ok()
    };
    let run = dry_run(false);
    assert!(
        run.stdout.contains(&format!(
            "measure each crypt mapping and its keys into TPM PCR 15 and log it to {DEFAULT_LOG}"
        )),
        "{}",
        run.stdout
    );
    let json = dry_run(true).json();
    assert_eq!(json["plan"]["measure_pcr"], 15);
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn measure_verify_accepts_the_quoted_values_and_rejects_wrong_ones() {
    let _tpm = TPM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let disk = disk(2);
    let volume = Volume {
        name: "t-verify",
        disk,
    };
    provision_measured(volume.name, &volume.disk, "15").ok();
    let dir = tempfile::tempdir().unwrap();
    let right = dir.path().join("right.txt");
    let witness = witness_pcrread(&[HashAlg::Sha256]);
    std::fs::write(&right, witness.to_tpm2_pcrread()).unwrap();
    let run = tosskey(&[
        "measure",
        "verify",
        "--log",
        DEFAULT_LOG,
        "--pcr-values",
        right.to_str().unwrap(),
    ])
    .ok();
    assert!(
        run.stdout.contains("PCR 15 sha256: matches"),
        "{}",
        run.stdout
    );

    let mut wrong_values = PcrValues::default();
    let mut value = witness.get(HashAlg::Sha256, PCR).unwrap().to_vec();
    value[0] ^= 1;
    wrong_values.insert(HashAlg::Sha256, PCR, value);
    let wrong = dir.path().join("wrong.txt");
    std::fs::write(&wrong, wrong_values.to_tpm2_pcrread()).unwrap();
    tosskey(&[
        "measure",
        "verify",
        "--log",
        DEFAULT_LOG,
        "--pcr-values",
        wrong.to_str().unwrap(),
    ])
    .fails_with(1, "replays to");
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// The log path taken by a directory for the guard's lifetime (the real log set aside), so
/// the measurement fails after the volume is built and verified, before any extend.
struct BlockedLog {
    set_aside: Option<PathBuf>,
}

impl BlockedLog {
    fn new() -> BlockedLog {
        let log = Path::new(DEFAULT_LOG);
        let set_aside = log.exists().then(|| {
            let aside = log.with_extension("log.set-aside-by-test");
            std::fs::rename(log, &aside).unwrap();
            aside
        });
        std::fs::create_dir_all(log).unwrap();
        BlockedLog { set_aside }
    }
}

impl Drop for BlockedLog {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(DEFAULT_LOG);
        if let Some(aside) = &self.set_aside {
            std::fs::rename(aside, DEFAULT_LOG).expect("restore the measurement log");
        }
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn a_failed_measurement_fails_the_run_and_rolls_it_back() {
    let _tpm = TPM_LOCK.lock().unwrap_or_else(|e| e.into_inner());
    let volume = Volume {
        name: "t-measure-fails",
        disk: disk(3),
    };
    let blocked = BlockedLog::new();
    provision_measured(volume.name, &volume.disk, "15")
        .fails_with(1, "measuring t-measure-fails into PCR 15");
    drop(blocked);
    assert!(
        !Path::new("/dev/mapper/t-measure-fails").exists(),
        "the mapping was rolled back"
    );
    assert!(
        !Path::new("/run/tosskey/t-measure-fails.json").exists(),
        "the journal was rolled back"
    );
}
