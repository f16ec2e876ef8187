//! Root tests against a real TPM 2.0 device: run in the VM guest by `scripts/vm-test --tpm`,
//! which attaches swtpm through QEMU's tpm-tis device and copies `tpm2_pcrread` (tpm2-tools)
//! into the guest as a witness that tosskey's own commands read and extend the real PCR.
//!
//! Only `measure_volume_twice_then_replay_matches_the_tpm_and_tpm2_pcrread` extends a PCR,
//! and it uses PCR 16 (the debug PCR) because the binary's root tests measure into PCR 15 in
//! the same guest boot with a log of their own: its log holds every extend of PCR 16 since
//! the guest booted.

use std::fs::File;
use std::io::Read;
use std::path::Path;

// Links the guest gate: this executable refuses to run root tests outside the guest.
use tosskey_testkit::tpm2_pcrread;
use tosskey_tpm::{
    measure_volume, read_log, verify, Error, HashAlg, KeyRange, PcrValues, Tpm, Verification,
    VolumeIdentity, DEFAULT_DEVICE,
};

const PCR: u32 = 16;

fn open_tpm() -> Tpm {
    Tpm::open(DEFAULT_DEVICE).unwrap_or_else(|err| panic!("{err} (run scripts/vm-test --tpm)"))
}

fn random_key() -> Vec<u8> {
    let mut key = vec![0; 64];
    File::open("/dev/urandom")
        .unwrap()
        .read_exact(&mut key)
        .unwrap();
    key
}

fn volume(name: &str, ranges: Vec<KeyRange>) -> VolumeIdentity {
    VolumeIdentity {
        name: name.into(),
        dm_uuid: format!("TOSSKEY-roottest-{name}"),
        cipher: "aes-xts-plain64".into(),
        key_bits: 512,
        sector_size: 4096,
        key_ranges: ranges,
        verification: Verification::Passed,
    }
}

/// `tpm2_pcrread` as the witness: its reading of `pcr` in `algs`, through the kernel's
/// resource manager like ours.
fn witness_pcrread(pcr: u32, algs: &[HashAlg]) -> PcrValues {
    let selection: Vec<String> = algs.iter().map(|alg| format!("{alg}:{pcr}")).collect();
    let output = tpm2_pcrread(DEFAULT_DEVICE, &selection);
    PcrValues::parse_tpm2_pcrread(&output, Path::new("tpm2_pcrread output")).unwrap()
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn reads_the_allocated_banks() {
    let mut tpm = open_tpm();
    let banks = tpm.pcr_banks().unwrap();
    eprintln!("banks: {banks:?}");
    let sha256 = banks
        .iter()
        .find(|bank| bank.alg() == Some(HashAlg::Sha256))
        .expect("a sha256 bank");
    assert_eq!(
        sha256.pcrs & 0x00ff_ffff,
        0x00ff_ffff,
        "all 24 PCRs allocated in sha256"
    );
    let measurable = tpm.measurable_banks(PCR).unwrap();
    assert!(measurable.contains(&HashAlg::Sha256), "{measurable:?}");
    // The witness agrees on which banks have the PCR: every bank we would extend reads back.
    let witness = witness_pcrread(PCR, &measurable);
    for alg in &measurable {
        assert!(
            witness.get(*alg, PCR).is_some(),
            "tpm2_pcrread has no {alg}:{PCR}"
        );
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn measure_volume_twice_then_replay_matches_the_tpm_and_tpm2_pcrread() {
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("run/tosskey/tpm2-measure.log");
    let mut tpm = open_tpm();

    // Two provisions: a single-key volume, then a two-key (key-scope) volume.
    let first_key = random_key();
    let first = measure_volume(
        &mut tpm,
        PCR,
        &volume(
            "scratch",
            vec![KeyRange {
                start: 0,
                sectors: 1 << 20,
            }],
        ),
        &[&first_key],
        &log,
    )
    .unwrap();
    let keys = [random_key(), random_key()];
    let second = measure_volume(
        &mut tpm,
        PCR,
        &volume(
            "scratch",
            vec![
                KeyRange {
                    start: 0,
                    sectors: 4096,
                },
                KeyRange {
                    start: 4096,
                    sectors: 8192,
                },
            ],
        ),
        &[&keys[0], &keys[1]],
        &log,
    )
    .unwrap();
    assert_eq!(first.records.len(), 2);
    assert_eq!(second.records.len(), 3);
    // Fresh keys: no key measurement repeats, even for the same volume name.
    let key_digests: Vec<_> = first.records[1..]
        .iter()
        .chain(&second.records[1..])
        .map(|record| &record.digests)
        .collect();
    for (index, digests) in key_digests.iter().enumerate() {
        assert!(
            !key_digests[index + 1..].contains(digests),
            "key measurement {index} repeats"
        );
    }
    assert_ne!(first.values, second.values);

    // Our own read, the witness's read and the replay of the log all agree.
    let banks = second.banks.clone();
    let ours = PcrValues::from_readings(&tpm.pcr_read(PCR, &banks).unwrap());
    let witness = witness_pcrread(PCR, &banks);
    assert_eq!(
        ours, witness,
        "tosskey's TPM2_PCR_Read differs from tpm2_pcrread"
    );
    assert_eq!(ours, PcrValues::from_readings(&second.values));
    let records = read_log(&log).unwrap();
    assert_eq!(records.len(), 5);
    let verified = verify(&records, &witness).unwrap();
    assert_eq!(verified.matched.len(), banks.len());
    assert!(verified.unchecked.is_empty());
    assert!(!tosskey_tpm::log::log_is_incomplete(&log).unwrap());
    eprintln!(
        "PCR {PCR} after two measurements:\n{}",
        witness.to_tpm2_pcrread()
    );

    // A log missing the last record does not replay to the quoted value.
    assert!(matches!(
        verify(&records[..4], &witness),
        Err(Error::Mismatch { pcr: PCR, .. })
    ));
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn a_missing_tpm_is_a_clean_error_naming_the_device() {
    let err = Tpm::open("/dev/tpmrm9").unwrap_err();
    assert!(matches!(err, Error::NoDevice { .. }), "{err:?}");
    let message = err.to_string();
    assert!(message.starts_with("no TPM at /dev/tpmrm9: "), "{message}");
    assert!(!message.contains('\n'), "{message}");
}
