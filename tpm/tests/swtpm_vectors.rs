//! The encoder and decoder against exchanges captured from swtpm 0.7.1 (libtpms), Debian
//! bookworm's software TPM. How they were captured: tests/vectors/capture-swtpm.py (which
//! builds its commands independently of the Rust encoder, from the Part 2/3 structures).

use tosskey_tpm::digest;
use tosskey_tpm::proto::{self, DecodeError, HashAlg, PcrBank};

struct Exchange {
    name: String,
    command: Vec<u8>,
    response: Vec<u8>,
}

fn exchanges() -> Vec<Exchange> {
    include_str!("vectors/swtpm.txt")
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            let fields: Vec<&str> = line.split(' ').collect();
            assert_eq!(fields.len(), 3, "{line}");
            Exchange {
                name: fields[0].into(),
                command: hex::decode(fields[1]).unwrap(),
                response: hex::decode(fields[2]).unwrap(),
            }
        })
        .collect()
}

fn exchange(name: &str) -> Exchange {
    exchanges()
        .into_iter()
        .find(|exchange| exchange.name == name)
        .unwrap()
}

/// sha-n("tosskey") per bank: what the capture script extended PCR 16 with.
fn measured() -> Vec<(HashAlg, Vec<u8>)> {
    HashAlg::ALL
        .into_iter()
        .map(|alg| (alg, digest::digest(alg, b"tosskey")))
        .collect()
}

#[test]
fn get_capability_pcrs_matches_swtpm() {
    let captured = exchange("get_capability_pcrs");
    assert_eq!(proto::encode_get_capability_pcrs(), captured.command);
    let banks = proto::decode_get_capability_pcrs(&captured.response).unwrap();
    let all_24 = 0x00ff_ffff;
    assert_eq!(
        banks,
        [0x0004, 0x000b, 0x000c, 0x000d]
            .map(|alg_id| PcrBank {
                alg_id,
                pcrs: all_24
            })
            .to_vec()
    );
}

#[test]
fn pcr_read_of_a_fresh_pcr_matches_swtpm_and_is_zero() {
    let captured = exchange("pcr_read_16_all_banks_fresh");
    assert_eq!(proto::encode_pcr_read(16, &HashAlg::ALL), captured.command);
    let (_, readings) = proto::decode_pcr_read(&captured.response).unwrap();
    assert_eq!(readings.len(), 4);
    for (reading, alg) in readings.iter().zip(HashAlg::ALL) {
        assert_eq!((reading.alg, reading.pcr), (alg, 16));
        assert_eq!(reading.digest, vec![0; alg.digest_len()]);
    }
}

#[test]
fn pcr_extend_matches_swtpm_and_the_tpm_computes_what_replay_computes() {
    let measured = measured();
    let digests: Vec<(HashAlg, &[u8])> = measured
        .iter()
        .map(|(alg, digest)| (*alg, digest.as_slice()))
        .collect();
    let captured = exchange("pcr_extend_16_all_banks");
    assert_eq!(proto::encode_pcr_extend(16, &digests), captured.command);
    assert_eq!(proto::decode_pcr_extend(&captured.response), Ok(()));

    let read = exchange("pcr_read_16_all_banks_extended");
    let (_, readings) = proto::decode_pcr_read(&read.response).unwrap();
    for ((alg, digest), reading) in measured.iter().zip(&readings) {
        assert_eq!(reading.alg, *alg);
        assert_eq!(
            reading.digest,
            digest::extend(*alg, &vec![0; alg.digest_len()], digest),
            "{alg}"
        );
    }
}

#[test]
fn swtpm_errors_decode_to_named_response_codes() {
    let bad_handle = exchange("pcr_extend_24_bad_handle");
    match proto::decode_pcr_extend(&bad_handle.response) {
        Err(DecodeError::Tpm(code)) => {
            assert_eq!(code.0, 0x184);
            assert!(code.to_string().starts_with("TPM_RC_VALUE"), "{code}");
            assert!(code.to_string().ends_with("in handle 1"), "{code}");
        }
        other => panic!("{other:?}"),
    }
    let short = exchange("pcr_extend_16_short_digest");
    match proto::decode_pcr_extend(&short.response) {
        Err(DecodeError::Tpm(code)) => assert!(
            code.to_string().starts_with("TPM_RC_INSUFFICIENT"),
            "{code}"
        ),
        other => panic!("{other:?}"),
    }
}
