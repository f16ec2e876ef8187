//! Produces dm-crypt test vectors with the guest kernel for tosskey-crypto's host tests.
//!
//! Each case loads a fixed, public test key (hex) into a crypt mapping over a zeroed loop
//! device, writes a known plaintext through the mapping with O_DIRECT at 512-byte sector 8 of
//! the mapping, reads the raw backing bytes with O_DIRECT, checks the mapping reads the
//! plaintext back, and prints the vector file to the guest console between the lines
//! `@@tosskey-vector@@ BEGIN <path>` and `@@tosskey-vector@@ END <path>`; the files under
//! crypto/tests/data/kernel/ were copied out of that log.

mod common;

use std::io::Write;

use common::{dev_of, hex, name, pattern, read_direct, test_key, write_direct, Cleanup};
use tosskey_dm::{
    activate_crypt, CryptOptions, CryptTarget, DmControl, DmUuid, KeyLoading, Sectors,
};
use tosskey_testkit::LoopDevice;

/// 512-byte sector of the mapping where the plaintext starts.
const START: u64 = 8;
/// The same, in bytes.
const START_BYTES: usize = 8 * 512;
/// Plaintext length: this many sectors of the case's sector size.
const SECTORS: usize = 4;

struct Case {
    cipher: &'static str,
    sector_size: u32,
    iv_offset: u64,
    iv_large_sectors: bool,
    variant: &'static str,
}

const CASES: [Case; 8] = [
    case("twofish-xts-plain64", 512, 0, false, ""),
    case("twofish-xts-plain64", 4096, 0, false, ""),
    case("aes-xts-plain64", 512, 0, false, ""),
    case("aes-xts-plain64", 4096, 0, false, ""),
    case("twofish-xts-plain64", 4096, 0, true, "-iv_large_sectors"),
    case("aes-xts-plain64", 4096, 0, true, "-iv_large_sectors"),
    case("twofish-xts-plain64", 512, 1000, false, "-iv_offset"),
    case("aes-xts-plain64", 4096, 2048, false, "-iv_offset"),
];

const fn case(
    cipher: &'static str,
    sector_size: u32,
    iv_offset: u64,
    iv_large_sectors: bool,
    variant: &'static str,
) -> Case {
    Case {
        cipher,
        sector_size,
        iv_offset,
        iv_large_sectors,
        variant,
    }
}

/// Days since 1970-01-01 to a civil date (Howard Hinnant's algorithm).
fn civil_date(unix_seconds: u64) -> String {
    let days = (unix_seconds / 86_400) as i64 + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let month_index = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * month_index + 2) / 5 + 1;
    let month = if month_index < 10 {
        month_index + 3
    } else {
        month_index - 9
    };
    let year = year_of_era + era * 400 + i64::from(month <= 2);
    format!("{year:04}-{month:02}-{day:02}")
}

fn console() -> Box<dyn Write> {
    match std::fs::OpenOptions::new().write(true).open("/dev/console") {
        Ok(console) => Box::new(console),
        Err(_) => Box::new(std::io::stdout()),
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn kernel_made_xts_vectors() {
    let dm = DmControl::open().unwrap();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let kernel = kernel.trim();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let key = test_key();
    let mut out = console();
    for case in &CASES {
        let backing = LoopDevice::new(1 << 20).unwrap();
        let n = name("tkdm-vector");
        let _cleanup = Cleanup(vec![n.clone()]);
        let options = CryptOptions {
            sector_size: case.sector_size,
            iv_large_sectors: case.iv_large_sectors,
            ..CryptOptions::default()
        };
        let target = CryptTarget::new(
            case.cipher,
            dev_of(&backing),
            Sectors(backing.size_sectors()),
        )
        .unwrap()
        .with_iv_offset(Sectors(case.iv_offset))
        .with_options(options);
        let mapping = activate_crypt(
            &dm,
            &n,
            &DmUuid::new("TOSSKEY-TEST-vector").unwrap(),
            &target,
            &key,
            KeyLoading::Hex,
        )
        .unwrap();
        let table_line = format!(
            "0 {} crypt {}",
            backing.size_sectors(),
            dm.table_with_keys(&n).unwrap()[0].params.as_str()
        );
        let len = SECTORS * case.sector_size as usize;
        let plaintext = pattern(len);
        write_direct(&mapping.node, START * 512, &plaintext);
        assert_eq!(read_direct(&mapping.node, START * 512, len), plaintext);
        dm.remove(&n).unwrap();
        let ciphertext = read_direct(backing.path(), START * 512, len);
        assert_ne!(ciphertext, plaintext);
        assert!(
            ciphertext.iter().any(|&b| b != 0),
            "nothing reached the disk"
        );
        // The bytes before the plaintext were never written: still zero.
        assert!(read_direct(backing.path(), 0, START_BYTES)
            .iter()
            .all(|&b| b == 0));

        let path = format!(
            "crypto/tests/data/kernel/{}-{}{}.txt",
            case.cipher, case.sector_size, case.variant
        );
        let file = format!(
            "# dm-crypt vector made by the Linux kernel {kernel} (guest of scripts/vm-test) on {}\n\
             # by dm/tests/kernel_vectors.rs: a crypt mapping over a zeroed loop device with the\n\
             # public test key key[i] = (i*37+11) mod 256, loaded as hex with the table line\n\
             # {table_line}\n\
             # plaintext[i] = (i*7+3) mod 256 written through the mapping with O_DIRECT at\n\
             # 512-byte sector `start`; ciphertext read raw from the backing device at the same\n\
             # offset (the mapping's data offset is 0).\n\
             cipher {}\n\
             key {}\n\
             sector_size {}\n\
             iv_offset {}\n\
             iv_large_sectors {}\n\
             start {START}\n\
             plaintext {}\n\
             ciphertext {}\n",
            civil_date(now),
            case.cipher,
            hex(&key),
            case.sector_size,
            case.iv_offset,
            u8::from(case.iv_large_sectors),
            hex(&plaintext),
            hex(&ciphertext),
        );
        write!(
            out,
            "\n@@tosskey-vector@@ BEGIN {path}\n{file}@@tosskey-vector@@ END {path}\n"
        )
        .unwrap();
        out.flush().unwrap();
    }
}

#[test]
fn civil_date_matches_known_days() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(951_782_400), "2000-02-29");
    assert_eq!(civil_date(1_795_737_600), "2026-11-27");
}
