//! Host check of the kernel-made vector files in crypto/tests/data/kernel/ (produced by the
//! root test in kernel_vectors.rs): every file has the agreed fields, the plaintext is the
//! documented pattern, and the ciphertext has the plaintext's length and differs from it.

use std::collections::BTreeMap;
use std::path::Path;

#[test]
fn kernel_vector_files_are_well_formed() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../crypto/tests/data/kernel");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|entry| entry.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.ends_with(".txt"))
        .collect();
    names.sort();
    for wanted in [
        "twofish-xts-plain64-512.txt",
        "twofish-xts-plain64-4096.txt",
        "aes-xts-plain64-512.txt",
        "aes-xts-plain64-4096.txt",
    ] {
        assert!(
            names.iter().any(|n| n == wanted),
            "{wanted} missing from {names:?}"
        );
    }
    for name in &names {
        let text = std::fs::read_to_string(dir.join(name)).unwrap();
        let fields: BTreeMap<&str, &str> = text
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| line.split_once(' ').unwrap())
            .collect();
        let keys: Vec<&str> = fields.keys().copied().collect();
        assert_eq!(
            keys,
            [
                "cipher",
                "ciphertext",
                "iv_large_sectors",
                "iv_offset",
                "key",
                "plaintext",
                "sector_size",
                "start"
            ],
            "{name}"
        );
        let sector_size: usize = fields["sector_size"].parse().unwrap();
        assert!(
            name.starts_with(&format!("{}-{sector_size}", fields["cipher"])),
            "{name}"
        );
        assert_eq!(fields["key"].len(), 128, "{name}");
        assert_eq!(
            fields["key"],
            crate::common::hex(&crate::common::test_key()),
            "{name}"
        );
        assert_eq!(
            fields["plaintext"],
            crate::common::hex(&crate::common::pattern(4 * sector_size)),
            "{name}"
        );
        assert_eq!(
            fields["ciphertext"].len(),
            fields["plaintext"].len(),
            "{name}"
        );
        assert_ne!(fields["ciphertext"], fields["plaintext"], "{name}");
        assert!(
            fields["ciphertext"].bytes().all(|b| b.is_ascii_hexdigit()),
            "{name}"
        );
        assert_eq!(fields["start"], "8", "{name}");
    }
}
