//! Vectors made by the Linux kernel's dm-crypt (see the comment header of each file in
//! tests/data/kernel/, written by dm/tests/kernel_vectors.rs inside the VM guest): the
//! userspace sector cipher must reproduce the kernel's ciphertext byte for byte and
//! decrypt it back.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use tosskey_crypto::spec::BlockCipher;
use tosskey_crypto::{SectorCipher, SectorLayout, SectorSize, TwofishPath};

struct KernelVector {
    file: PathBuf,
    cipher: BlockCipher,
    cipher_name: String,
    key: Vec<u8>,
    layout: SectorLayout,
    start: u64,
    plaintext: Vec<u8>,
    ciphertext: Vec<u8>,
}

fn parse(file: &Path) -> KernelVector {
    let text = std::fs::read_to_string(file).unwrap_or_else(|e| panic!("{}: {e}", file.display()));
    let mut fields = std::collections::BTreeMap::new();
    for line in text.lines() {
        let line = line.split('#').next().unwrap_or_default().trim();
        if line.is_empty() {
            continue;
        }
        let (name, value) = line
            .split_once(char::is_whitespace)
            .unwrap_or_else(|| panic!("{}: line without value: {line}", file.display()));
        let previous = fields.insert(name.to_owned(), value.trim().to_owned());
        assert!(previous.is_none(), "{}: field {name} twice", file.display());
    }
    let mut take = |name: &str| {
        fields
            .remove(name)
            .unwrap_or_else(|| panic!("{}: missing field {name}", file.display()))
    };
    let cipher_name = take("cipher");
    let cipher = match cipher_name.as_str() {
        "twofish-xts-plain64" => BlockCipher::Twofish,
        "aes-xts-plain64" => BlockCipher::Aes,
        other => panic!("{}: unexpected cipher {other}", file.display()),
    };
    let number = |v: String| {
        v.parse::<u64>()
            .unwrap_or_else(|e| panic!("{}: {v}: {e}", file.display()))
    };
    let flag = |v: String| match v.as_str() {
        "0" => false,
        "1" => true,
        _ => panic!("{}: flag must be 0 or 1, got {v}", file.display()),
    };
    let bytes =
        |v: String| hex::decode(&v).unwrap_or_else(|e| panic!("{}: bad hex: {e}", file.display()));
    let key = bytes(take("key"));
    let sector_size = SectorSize::try_from(number(take("sector_size"))).expect("sector size");
    let iv_offset = number(take("iv_offset"));
    let iv_large_sectors = flag(take("iv_large_sectors"));
    let start = number(take("start"));
    let plaintext = bytes(take("plaintext"));
    let ciphertext = bytes(take("ciphertext"));
    assert!(
        fields.is_empty(),
        "{}: unknown fields {:?}",
        file.display(),
        fields.keys()
    );
    assert_eq!(plaintext.len(), ciphertext.len(), "{}", file.display());
    assert!(!plaintext.is_empty(), "{}: empty plaintext", file.display());
    KernelVector {
        file: file.to_owned(),
        cipher,
        cipher_name,
        key,
        layout: SectorLayout {
            sector_size,
            iv_large_sectors,
            iv_offset,
        },
        start,
        plaintext,
        ciphertext,
    }
}

fn load_all() -> Vec<KernelVector> {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/data/kernel");
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| {
            panic!(
                "{}: {e} (the dm engineer's kernel vectors are missing)",
                dir.display()
            )
        })
        .map(|entry| entry.expect("directory entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "txt"))
        .collect();
    files.sort();
    files.iter().map(|f| parse(f)).collect()
}

/// There must be kernel vectors for every cipher and sector size the tool uses; an
/// empty or partial directory fails instead of passing vacuously.
#[test]
fn kernel_vectors_cover_both_ciphers_and_sector_sizes() {
    let vectors = load_all();
    assert!(
        vectors.len() >= 4,
        "need at least 4 kernel vector files, found {}",
        vectors.len()
    );
    let covered: BTreeSet<(String, usize)> = vectors
        .iter()
        .map(|v| (v.cipher_name.clone(), v.layout.sector_size.bytes()))
        .collect();
    for cipher in ["aes-xts-plain64", "twofish-xts-plain64"] {
        for size in [512, 4096] {
            assert!(
                covered.contains(&(cipher.to_owned(), size)),
                "no kernel vector for {cipher} {size}"
            );
        }
    }
}

#[test]
fn userspace_cipher_reproduces_kernel_ciphertext() {
    let vectors = load_all();
    assert!(!vectors.is_empty(), "no kernel vectors");
    for v in &vectors {
        let name = v.file.display();
        let cipher = SectorCipher::new(v.cipher, &v.key, v.layout).expect("cipher");
        let mut data = v.plaintext.clone();
        cipher.encrypt(v.start, &mut data).expect("encrypt");
        assert!(
            data == v.ciphertext,
            "{name}: encryption differs from the kernel ({})",
            cipher.implementation()
        );
        cipher.decrypt(v.start, &mut data).expect("decrypt");
        assert!(data == v.plaintext, "{name}: decryption differs");

        let mut data = v.plaintext.clone();
        cipher
            .encrypt_parallel(v.start, &mut data)
            .expect("encrypt");
        assert!(
            data == v.ciphertext,
            "{name}: parallel encryption differs from the kernel"
        );
        cipher
            .decrypt_parallel(v.start, &mut data)
            .expect("decrypt");
        assert!(data == v.plaintext, "{name}: parallel decryption differs");
    }
}

/// The vectors are not trivially satisfied: moving the start by one crypt sector or
/// dropping the IV offset changes the ciphertext.
#[test]
fn kernel_vectors_pin_the_iv_arithmetic() {
    for v in load_all() {
        let units = v.layout.sector_size.units_of_512();
        let cipher = SectorCipher::new(v.cipher, &v.key, v.layout).expect("cipher");
        let mut shifted = v.plaintext.clone();
        cipher
            .encrypt(v.start + units, &mut shifted)
            .expect("encrypt");
        assert!(
            shifted != v.ciphertext,
            "{}: start does not matter?",
            v.file.display()
        );
        if v.layout.iv_offset != 0 {
            let layout = SectorLayout {
                iv_offset: 0,
                ..v.layout
            };
            let no_offset = SectorCipher::new(v.cipher, &v.key, layout).expect("cipher");
            let mut data = v.plaintext.clone();
            no_offset.encrypt(v.start, &mut data).expect("encrypt");
            assert!(
                data != v.ciphertext,
                "{}: iv_offset does not matter?",
                v.file.display()
            );
        }
    }
}

/// `path`, forced, reproduces every Twofish kernel vector and decrypts it back.
fn twofish_path_reproduces_kernel_ciphertext(path: TwofishPath) {
    let vectors: Vec<KernelVector> = load_all()
        .into_iter()
        .filter(|v| v.cipher == BlockCipher::Twofish)
        .collect();
    assert!(vectors.len() >= 2, "no twofish kernel vectors");
    for v in &vectors {
        let name = v.file.display();
        let cipher = SectorCipher::with_twofish_path(path, &v.key, v.layout).expect("cipher");
        let mut data = v.plaintext.clone();
        cipher.encrypt(v.start, &mut data).expect("encrypt");
        assert!(
            data == v.ciphertext,
            "{name}: {path} differs from the kernel"
        );
        cipher.decrypt(v.start, &mut data).expect("decrypt");
        assert!(data == v.plaintext, "{name}: {path} decryption differs");
    }
}

#[test]
fn portable_twofish_reproduces_kernel_ciphertext() {
    twofish_path_reproduces_kernel_ciphertext(TwofishPath::Portable);
}

#[test]
#[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
fn cpu_feature_avx2_shuffle_twofish_reproduces_kernel_ciphertext() {
    twofish_path_reproduces_kernel_ciphertext(TwofishPath::Avx2Shuffle);
}

#[test]
#[cfg_attr(not(tosskey_host_avx2), ignore = "this CPU lacks AVX2")]
fn cpu_feature_avx2_loads_twofish_reproduces_kernel_ciphertext() {
    twofish_path_reproduces_kernel_ciphertext(TwofishPath::Avx2Loads);
}

#[test]
#[cfg_attr(not(tosskey_host_avx512f), ignore = "this CPU lacks AVX-512F")]
fn cpu_feature_avx512_gather_twofish_reproduces_kernel_ciphertext() {
    twofish_path_reproduces_kernel_ciphertext(TwofishPath::Avx512Gather);
}
