//! The guest kernel against the stored dm-crypt vectors in crypto/tests/data/kernel/, which
//! tosskey-crypto's host tests hold its userspace XTS to.
//!
//! The root test takes each stored file's own fields (cipher, key, sector size, IV options,
//! plaintext), loads the key as hex into a crypt mapping over a zeroed loop device, writes
//! the plaintext through the mapping with O_DIRECT at 512-byte sector `start`, reads the raw
//! backing bytes with O_DIRECT, and requires them to equal the file's `ciphertext`: a
//! kernel that encrypts differently, or a vector copied wrong, fails it.
//!
//! Making a vector is separate from that check, and only ever a by-product of a failure:
//! for every mismatch the test prints the file this kernel makes for that case to the guest
//! console between `@@tosskey-vector@@ BEGIN <path>` and `@@tosskey-vector@@ END <path>`.
//! To add a vector, add a file with the new case's fields and `ciphertext 00`, add it to
//! [`STORED`], run `scripts/vm-test -p tosskey-dm -- stored_vectors`, and copy the printed
//! file over it.

use std::collections::BTreeMap;
use std::io::Write;

use crate::common::{dev_of, hex, name, read_direct, write_direct, Cleanup};
use tosskey_dm::{
    activate_crypt, CryptOptions, CryptTarget, DmControl, DmUuid, KeyLoading, Sectors,
};
use tosskey_testkit::LoopDevice;

/// `(file name, contents)` of a file in crypto/tests/data/kernel/.
macro_rules! stored {
    ($file:literal) => {
        (
            $file,
            include_str!(concat!("../../crypto/tests/data/kernel/", $file)),
        )
    };
}

/// Every file of crypto/tests/data/kernel/, embedded: the guest has no source tree.
const STORED: [(&str, &str); 8] = [
    stored!("twofish-xts-plain64-512.txt"),
    stored!("twofish-xts-plain64-4096.txt"),
    stored!("aes-xts-plain64-512.txt"),
    stored!("aes-xts-plain64-4096.txt"),
    stored!("twofish-xts-plain64-4096-iv_large_sectors.txt"),
    stored!("aes-xts-plain64-4096-iv_large_sectors.txt"),
    stored!("twofish-xts-plain64-512-iv_offset.txt"),
    stored!("aes-xts-plain64-4096-iv_offset.txt"),
];

/// One stored vector file's fields.
struct Vector {
    cipher: String,
    key: Vec<u8>,
    sector_size: u32,
    iv_offset: u64,
    iv_large_sectors: bool,
    /// 512-byte sector of the mapping where the plaintext starts.
    start: u64,
    plaintext: Vec<u8>,
    ciphertext: String,
}

fn unhex(text: &str) -> Vec<u8> {
    assert!(text.len().is_multiple_of(2), "odd-length hex {text:?}");
    (0..text.len())
        .step_by(2)
        .map(|at| u8::from_str_radix(&text[at..at + 2], 16).unwrap())
        .collect()
}

fn parse(file: &str, text: &str) -> Vector {
    let fields: BTreeMap<&str, &str> = text
        .lines()
        .filter(|line| !line.starts_with('#'))
        .map(|line| {
            line.split_once(' ')
                .unwrap_or_else(|| panic!("{file}: {line:?}"))
        })
        .collect();
    let field = |key: &str| {
        *fields
            .get(key)
            .unwrap_or_else(|| panic!("{file} has no {key}"))
    };
    Vector {
        cipher: field("cipher").to_owned(),
        key: unhex(field("key")),
        sector_size: field("sector_size").parse().unwrap(),
        iv_offset: field("iv_offset").parse().unwrap(),
        iv_large_sectors: field("iv_large_sectors") == "1",
        start: field("start").parse().unwrap(),
        plaintext: unhex(field("plaintext")),
        ciphertext: field("ciphertext").to_owned(),
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

/// What the kernel writes to the backing device for `vector`'s plaintext, and the table
/// line of the mapping it used (key included: it is the public test key).
fn kernel_ciphertext(dm: &DmControl, vector: &Vector) -> (Vec<u8>, String) {
    let backing = LoopDevice::new(1 << 20).unwrap();
    let n = name("tkdm-vector");
    let _cleanup = Cleanup(vec![n.clone()]);
    let options = CryptOptions {
        sector_size: vector.sector_size,
        iv_large_sectors: vector.iv_large_sectors,
        ..CryptOptions::default()
    };
    let target = CryptTarget::new(
        &vector.cipher,
        dev_of(&backing),
        Sectors(backing.size_sectors()),
    )
    .unwrap()
    .with_iv_offset(Sectors(vector.iv_offset))
    .with_options(options);
    let mapping = activate_crypt(
        dm,
        &n,
        &DmUuid::new("TOSSKEY-TEST-vector").unwrap(),
        &target,
        &vector.key,
        KeyLoading::Hex,
    )
    .unwrap();
    let table_line = format!(
        "0 {} crypt {}",
        backing.size_sectors(),
        dm.table_with_keys(&n).unwrap()[0].params.as_str()
    );
    let offset = vector.start * 512;
    let len = vector.plaintext.len();
    write_direct(&mapping.node, offset, &vector.plaintext);
    assert_eq!(read_direct(&mapping.node, offset, len), vector.plaintext);
    dm.remove(&n).unwrap();
    // The bytes before the plaintext were never written: still zero.
    let before = usize::try_from(offset).unwrap();
    assert!(read_direct(backing.path(), 0, before)
        .iter()
        .all(|&b| b == 0));
    (read_direct(backing.path(), offset, len), table_line)
}

/// The vector file this kernel makes for `vector` (only printed when the stored one differs).
fn vector_file(vector: &Vector, kernel: &str, table_line: &str, ciphertext: &[u8]) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    format!(
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
         start {}\n\
         plaintext {}\n\
         ciphertext {}\n",
        civil_date(now),
        vector.cipher,
        hex(&vector.key),
        vector.sector_size,
        vector.iv_offset,
        u8::from(vector.iv_large_sectors),
        vector.start,
        hex(&vector.plaintext),
        hex(ciphertext),
    )
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn kernel_reproduces_the_stored_vectors() {
    let dm = DmControl::open().unwrap();
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap();
    let kernel = kernel.trim();
    let mut mismatches = Vec::new();
    for (file, text) in STORED {
        let vector = parse(file, text);
        let (ciphertext, table_line) = kernel_ciphertext(&dm, &vector);
        if hex(&ciphertext) == vector.ciphertext {
            continue;
        }
        let path = format!("crypto/tests/data/kernel/{file}");
        let made = vector_file(&vector, kernel, &table_line, &ciphertext);
        let mut out = console();
        write!(
            out,
            "\n@@tosskey-vector@@ BEGIN {path}\n{made}@@tosskey-vector@@ END {path}\n"
        )
        .unwrap();
        out.flush().unwrap();
        mismatches.push(path);
    }
    assert!(
        mismatches.is_empty(),
        "kernel {kernel} encrypts differently from the stored vectors {mismatches:?} (the files it \
         makes are printed above)"
    );
}

/// Every file in crypto/tests/data/kernel/ is in [`STORED`], so none is left unchecked by
/// the root test.
#[test]
fn every_stored_vector_is_checked_against_the_kernel() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../crypto/tests/data/kernel");
    let mut on_disk: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    on_disk.sort();
    let mut embedded: Vec<String> = STORED.iter().map(|(file, _)| (*file).to_owned()).collect();
    embedded.sort();
    assert_eq!(on_disk, embedded);
    for (file, text) in STORED {
        let vector = parse(file, text);
        assert_eq!(
            vector.plaintext.len(),
            4 * vector.sector_size as usize,
            "{file}"
        );
        assert_eq!(
            vector.ciphertext.len(),
            2 * vector.plaintext.len(),
            "{file}"
        );
    }
}

#[test]
fn civil_date_matches_known_days() {
    assert_eq!(civil_date(0), "1970-01-01");
    assert_eq!(civil_date(951_782_400), "2000-02-29");
    assert_eq!(civil_date(1_795_737_600), "2026-11-27");
}
