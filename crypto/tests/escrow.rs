//! RSA-OAEP escrow: seal → write → read → open, keys in every PEM form, wrong and weak
//! keys, tampering with every field, truncation, versions, file mode and overwrite.

use std::os::unix::fs::PermissionsExt;
use std::path::PathBuf;

use crate::common::{data, default_crypt, private_a, public_a};
use base64ct::{Base64, Encoding as _};
use tosskey_crypto::escrow::{
    rfc3339_utc, Assembly, EscrowMember, EscrowPrivateKey, EscrowPublicKey, Layout, MdLevel,
};
use tosskey_crypto::{Error, EscrowFile, EscrowMetadata, KeySize, VolumeKey};

fn member(i: usize) -> EscrowMember {
    EscrowMember {
        identity: format!("nvme-Amazon_EC2_NVMe_Instance_Storage_AWS1234567890ABCDE{i}"),
        size_bytes: 1_900_000_000_000 + 512 * i as u64,
        path_at_creation: PathBuf::from(format!("/dev/nvme{}n1", i + 1)),
    }
}

fn metadata(layout: Layout, members: usize, key_bits: u32) -> EscrowMetadata {
    EscrowMetadata {
        name: "ephemeral".into(),
        hostname: "ip-10-0-0-17".into(),
        created_at: "2026-11-27T03:00:00Z".into(),
        crypt: default_crypt(key_bits),
        assembly: if members == 1 {
            Assembly::Single
        } else {
            Assembly::Md {
                level: MdLevel::Raid0,
                chunk_bytes: 512 * 1024,
            }
        },
        layout,
        members: (0..members).map(member).collect(),
        key_scope_bytes: None,
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Every textual form the key could leak in.
fn leak_forms(key: &VolumeKey) -> Vec<String> {
    let bytes = key.expose_secret();
    vec![
        hex(bytes),
        hex(bytes).to_uppercase(),
        Base64::encode_string(bytes),
        hex(&bytes[..16]),
        Base64::encode_string(&bytes[..15]),
        format!("{:?}", bytes),
        String::from_utf8_lossy(bytes).into_owned(),
    ]
}

fn sealed(key: &VolumeKey) -> EscrowFile {
    EscrowFile::seal(&public_a(), key, metadata(Layout::Shared, 2, key.bits())).unwrap()
}

#[test]
fn seal_write_read_open_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("escrowed_key");
    for size in [KeySize::Bits256, KeySize::Bits512] {
        let key = VolumeKey::generate(size).unwrap();
        let file = sealed(&key);
        let path = path.with_extension(size.bits().to_string());
        file.write_atomic(&path, false).unwrap();
        let back = EscrowFile::read(&path).unwrap();
        assert_eq!(back, file);
        assert_eq!(back.metadata(), &metadata(Layout::Shared, 2, key.bits()));
        assert_eq!(back.keys().len(), 1);
        assert_eq!(back.keys()[0].dm_name, "ephemeral");
        let opened = back.open(&private_a()).unwrap();
        assert_eq!(opened.expose_secret(), key.expose_secret());
        assert_eq!(opened.bits(), size.bits());
    }
}

#[test]
fn all_pem_forms_work() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let meta = metadata(Layout::Shared, 1, 512);
    for public in [
        data("test-a-2048.spki.pem"),
        data("test-a-2048.pkcs1.pub.pem"),
    ] {
        let file = EscrowFile::seal(&public, &key, meta.clone()).unwrap();
        for private in [data("test-a-2048.pkcs8.pem"), data("test-a-2048.pkcs1.pem")] {
            assert_eq!(
                file.open(&private).unwrap().expose_secret(),
                key.expose_secret()
            );
        }
    }
    // 3072-bit key: longer ciphertext, same format.
    let file = EscrowFile::seal(&data("test-b-3072.spki.pem"), &key, meta).unwrap();
    assert_eq!(file.recipient().rsa_bits, 3072);
    let reparsed = EscrowFile::parse(file.to_json().as_bytes()).unwrap();
    let opened = reparsed.open(&data("test-b-3072.pkcs8.pem")).unwrap();
    assert_eq!(opened.expose_secret(), key.expose_secret());
}

#[test]
fn fingerprint_matches_openssl_spki_sha256() {
    let expected = data("test-a-2048.spki.sha256");
    let public = EscrowPublicKey::from_pem(&public_a()).unwrap();
    assert_eq!(public.fingerprint(), expected.trim());
    assert_eq!(public.bits(), 2048);
    let pkcs1 = EscrowPublicKey::from_pem(&data("test-a-2048.pkcs1.pub.pem")).unwrap();
    assert_eq!(pkcs1.fingerprint(), expected.trim());
    let private = EscrowPrivateKey::from_pem(&data("test-a-2048.pkcs1.pem")).unwrap();
    assert_eq!(private.fingerprint(), expected.trim());
    let key = VolumeKey::generate(KeySize::Bits256).unwrap();
    let file = EscrowFile::seal(&public_a(), &key, metadata(Layout::Shared, 1, 256)).unwrap();
    assert_eq!(file.recipient().public_key_sha256, expected.trim());
}

#[test]
fn wrong_private_key_is_named_as_such() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let file = sealed(&key);
    let err = file.open(&data("test-b-3072.pkcs8.pem")).unwrap_err();
    assert!(matches!(err, Error::EscrowWrongPrivateKey { .. }), "{err}");
    assert!(
        err.to_string()
            .starts_with("the private key does not match this escrow file"),
        "{err}"
    );
}

#[test]
fn weak_keys_are_refused_both_ways() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let err = EscrowFile::seal(
        &data("test-weak-1024.spki.pem"),
        &key,
        metadata(Layout::Shared, 1, 512),
    )
    .unwrap_err();
    assert!(
        matches!(err, Error::EscrowKeyTooSmall { bits: 1024 }),
        "{err}"
    );
    assert!(err.to_string().contains("at least 2048"), "{err}");
    let err = EscrowPrivateKey::from_pem(&data("test-weak-1024.pkcs8.pem")).unwrap_err();
    assert!(
        matches!(err, Error::EscrowKeyTooSmall { bits: 1024 }),
        "{err}"
    );
}

#[test]
fn wrong_kinds_of_pem_get_a_fix() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let meta = metadata(Layout::Shared, 1, 512);
    let cases = [
        (private_a(), "private key: give only the public half"),
        (
            data("test-a-2048.pkcs1.pem"),
            "private key: give only the public half",
        ),
        ("not a key".to_string(), "no PEM block"),
        (
            "-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n".to_string(),
            "openssl x509",
        ),
        (
            "-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n".to_string(),
            "not an RSA SubjectPublicKeyInfo",
        ),
    ];
    for (pem, expected) in cases {
        let err = EscrowFile::seal(&pem, &key, meta.clone()).unwrap_err();
        assert!(matches!(err, Error::EscrowPublicKey { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
    let file = EscrowFile::seal(&public_a(), &key, meta).unwrap();
    for (pem, expected) in [
        (data("test-a-2048.encrypted.pem"), "passphrase-protected"),
        (public_a(), "this is a public key"),
        ("".to_string(), "no PEM block"),
        (
            "-----BEGIN OPENSSH PRIVATE KEY-----\nAAAA\n-----END OPENSSH PRIVATE KEY-----".into(),
            "ssh-keygen",
        ),
    ] {
        let err = file.open(&pem).unwrap_err();
        assert!(matches!(err, Error::EscrowPrivateKey { .. }), "{err}");
        assert!(err.to_string().contains(expected), "{err}");
    }
}

#[test]
fn a_passphrase_protected_key_is_decrypted_through_a_pipe_not_to_a_file() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let file = sealed(&key);
    let err = file
        .open(&data("test-a-2048.encrypted.pem"))
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("--private-key <(openssl pkey -in KEY)"),
        "{err}"
    );
    assert!(!err.contains("-out"), "no plaintext key file: {err}");
}

#[test]
fn key_appears_nowhere_but_in_the_ciphertext() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let file = sealed(&key);
    let json = file.to_json();
    let debug = format!("{file:?} {:?}", file.metadata());
    let wrong = file.open(&data("test-b-3072.pkcs8.pem")).unwrap_err();
    let errors = format!("{wrong} {wrong:?}");
    for form in leak_forms(&key) {
        assert!(!json.contains(&form), "key leaked into JSON");
        assert!(!debug.contains(&form), "key leaked into Debug");
        assert!(!errors.contains(&form), "key leaked into an error");
    }
    let opened = file.open(&private_a()).unwrap();
    assert_eq!(format!("{opened:?}"), "VolumeKey(<512 bits>)");
}

#[test]
fn sealing_twice_gives_different_ciphertexts() {
    // OAEP is randomized: the same key sealed twice must not be recognisable.
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let (a, b) = (sealed(&key), sealed(&key));
    assert_ne!(a.keys()[0].ciphertext, b.keys()[0].ciphertext);
}

#[test]
fn per_disk_layout_seals_one_key_per_member() {
    let keys: Vec<VolumeKey> = (0..3)
        .map(|_| VolumeKey::generate(KeySize::Bits512).unwrap())
        .collect();
    let names: Vec<String> = (0..3).map(|i| format!("ephemeral-{i}")).collect();
    let pairs: Vec<(&str, &VolumeKey)> = names.iter().map(String::as_str).zip(&keys).collect();
    let public = EscrowPublicKey::from_pem(&public_a()).unwrap();
    let file = EscrowFile::seal_keys(&public, &pairs, metadata(Layout::PerDisk, 3, 512)).unwrap();
    let file = EscrowFile::parse(file.to_json().as_bytes()).unwrap();
    let err = file.open(&private_a()).unwrap_err();
    assert!(matches!(err, Error::EscrowKeyCount { count: 3 }), "{err}");
    let opened = file.open_all(&private_a()).unwrap();
    assert_eq!(opened.len(), 3);
    for (i, o) in opened.iter().enumerate() {
        assert_eq!(o.dm_name, names[i]);
        assert_eq!(o.key.expose_secret(), keys[i].expose_secret());
    }
    // Swapping two ciphertexts (a key moved to another member) is caught.
    let mut value: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    let keys_json = value["keys"].as_array_mut().unwrap();
    let c0 = keys_json[0]["ciphertext"].clone();
    keys_json[0]["ciphertext"] = keys_json[1]["ciphertext"].clone();
    keys_json[1]["ciphertext"] = c0;
    let swapped = EscrowFile::parse(value.to_string().as_bytes()).unwrap();
    let err = swapped.open_all(&private_a()).unwrap_err();
    assert!(matches!(err, Error::EscrowTampered { .. }), "{err}");
}

#[test]
fn seal_refuses_inconsistent_metadata() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let public = public_a();
    let mut wrong_bits = metadata(Layout::Shared, 2, 256);
    let err = EscrowFile::seal(&public, &key, wrong_bits.clone()).unwrap_err();
    assert!(err.to_string().contains("crypt.key_bits"), "{err}");
    wrong_bits.crypt.key_bits = 512;
    EscrowFile::seal(&public, &key, wrong_bits).unwrap();

    let mut cases: Vec<(EscrowMetadata, &str)> = Vec::new();
    let mut m = metadata(Layout::Shared, 2, 512);
    m.crypt.sector_size = 8192;
    cases.push((m, "sector_size"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.crypt.iv_offset = 3;
    cases.push((m, "iv_offset"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.members[1].identity = m.members[0].identity.clone();
    cases.push((m, "members[1].identity"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.members.clear();
    cases.push((m, "members"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.assembly = Assembly::Single;
    cases.push((m, "assembly"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.assembly = Assembly::DmStripe { chunk_bytes: 1000 };
    cases.push((m, "chunk_bytes"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.created_at = "yesterday".into();
    cases.push((m, "created_at"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.name = "a/b".into();
    cases.push((m, "name"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.members[0].path_at_creation = PathBuf::from("nvme0n1");
    cases.push((m, "path_at_creation"));
    let mut m = metadata(Layout::Shared, 2, 512);
    m.members[0].size_bytes = 100;
    cases.push((m, "size_bytes"));
    let mut m = metadata(Layout::PerDisk, 2, 512);
    m.hostname = "host\nname".into();
    cases.push((m, "hostname"));
    for (m, field) in cases {
        let err = EscrowFile::seal(&public, &key, m).unwrap_err();
        assert!(matches!(err, Error::EscrowField { .. }), "{field}: {err}");
        assert!(err.to_string().contains(field), "{field}: {err}");
    }
}

/// Every leaf of the JSON, changed: the file must either fail to parse or fail to open;
/// never open to a key.
#[test]
fn tampering_with_any_field_never_opens() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let file = sealed(&key);
    let original: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    let mut pointers = Vec::new();
    collect_leaves(&original, String::new(), &mut pointers);
    assert!(pointers.len() >= 20, "{pointers:?}");
    let mut parse_errors = 0;
    let mut open_errors = 0;
    for pointer in &pointers {
        for variant in 0..2 {
            let mut value = original.clone();
            let leaf = value.pointer_mut(pointer).unwrap();
            *leaf = mutate(leaf, variant);
            match EscrowFile::parse(value.to_string().as_bytes()) {
                Err(_) => parse_errors += 1,
                Ok(parsed) => {
                    let err = parsed
                        .open(&private_a())
                        .expect_err(&format!("{pointer} changed, still opened"));
                    assert!(
                        matches!(
                            err,
                            Error::EscrowTampered { .. } | Error::EscrowWrongPrivateKey { .. }
                        ),
                        "{pointer}: {err}"
                    );
                    open_errors += 1;
                }
            }
        }
    }
    // Both defences are exercised: validation and the OAEP label.
    assert!(
        parse_errors > 0 && open_errors > 0,
        "{parse_errors} {open_errors}"
    );
    // And the untouched file still opens.
    let opened = EscrowFile::parse(original.to_string().as_bytes())
        .unwrap()
        .open(&private_a())
        .unwrap();
    assert_eq!(opened.expose_secret(), key.expose_secret());
}

fn collect_leaves(value: &serde_json::Value, pointer: String, out: &mut Vec<String>) {
    match value {
        serde_json::Value::Object(map) => {
            for (k, v) in map {
                collect_leaves(v, format!("{pointer}/{k}"), out);
            }
        }
        serde_json::Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                collect_leaves(v, format!("{pointer}/{i}"), out);
            }
        }
        _ => out.push(pointer),
    }
}

fn mutate(leaf: &serde_json::Value, variant: u32) -> serde_json::Value {
    use serde_json::Value;
    match leaf {
        Value::Bool(b) => Value::Bool(!b),
        Value::Number(n) => {
            let n = n.as_u64().unwrap();
            // A nearby value and one that stays "valid-looking" (a power-of-two change).
            Value::from(if variant == 0 {
                n + 1
            } else {
                n * 2 + 4096 * u64::from(n == 0)
            })
        }
        Value::String(s) => {
            if variant == 0 {
                // Change one character in the middle, keeping the alphabet.
                let mut chars: Vec<char> = s.chars().collect();
                if chars.is_empty() {
                    return Value::String("x".into());
                }
                let i = chars.len() / 2;
                chars[i] = match chars[i] {
                    'A' => 'B',
                    '0' => '1',
                    'a' => 'b',
                    _ => 'A',
                };
                Value::String(chars.into_iter().collect())
            } else {
                // Plausible replacements for the enum-like strings, else a suffix.
                Value::String(match s.as_str() {
                    "twofish-xts-plain64" => "aes-xts-plain64".into(),
                    "raid0" => "raid1".into(),
                    "md" => "dm-stripe".into(),
                    "shared" => "per-disk".into(),
                    "2026-11-27T03:00:00Z" => "2026-11-27T03:00:01Z".into(),
                    _ => format!("{s}x"),
                })
            }
        }
        Value::Null | Value::Array(_) | Value::Object(_) => Value::Null,
    }
}

#[test]
fn every_truncation_is_an_error() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let json = sealed(&key).to_json();
    let bytes = json.as_bytes();
    let trimmed = json.trim_end().len();
    for len in 0..trimmed {
        let err = EscrowFile::parse(&bytes[..len]).expect_err(&format!("prefix {len} parsed"));
        assert!(matches!(err, Error::EscrowJson(_)), "prefix {len}: {err}");
    }
    EscrowFile::parse(&bytes[..trimmed]).unwrap();
}

#[test]
fn versions_formats_and_unknown_fields() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let original: serde_json::Value = serde_json::from_str(&sealed(&key).to_json()).unwrap();

    let mut v = original.clone();
    v["version"] = 3.into();
    // A future version may have other fields: the version error must win.
    v["new_field_of_v3"] = true.into();
    let err = EscrowFile::parse(v.to_string().as_bytes()).unwrap_err();
    assert!(
        matches!(
            err,
            Error::EscrowVersion {
                found: 3,
                supported: 2
            }
        ),
        "{err}"
    );
    assert!(
        err.to_string()
            .contains("version 3 is not supported (this tosskey reads versions 1 to 2)"),
        "{err}"
    );

    let mut v = original.clone();
    v["version"] = "1".into();
    assert!(EscrowFile::parse(v.to_string().as_bytes()).is_err());

    let mut v = original.clone();
    v["format"] = "something-else".into();
    let err = EscrowFile::parse(v.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, Error::EscrowFormat { .. }), "{err}");

    let mut v = original.clone();
    v["metadata"]["crypt"]["extra"] = 1.into();
    let err = EscrowFile::parse(v.to_string().as_bytes()).unwrap_err();
    assert!(matches!(err, Error::EscrowJson(_)), "{err}");

    let mut v = original.clone();
    v.as_object_mut().unwrap().remove("recipient");
    assert!(matches!(
        EscrowFile::parse(v.to_string().as_bytes()).unwrap_err(),
        Error::EscrowJson(_)
    ));

    let mut v = original.clone();
    v["keys"][0]["ciphertext"] = "!!!!".repeat(86).into();
    let err = EscrowFile::parse(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("keys[0].ciphertext"), "{err}");

    for junk in [
        &b""[..],
        b"null",
        b"[]",
        b"{}",
        b"\xff\xfe",
        b"{\"format\":1}",
    ] {
        assert!(EscrowFile::parse(junk).is_err());
    }
    let huge = vec![b' '; tosskey_crypto::escrow::MAX_FILE_BYTES + 1];
    assert!(matches!(
        EscrowFile::parse(&huge).unwrap_err(),
        Error::EscrowTooLarge { .. }
    ));
}

#[test]
fn written_file_is_0400_and_not_overwritten_unless_asked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".ephemeral_escrowed_key");
    let first = VolumeKey::generate(KeySize::Bits512).unwrap();
    let second = VolumeKey::generate(KeySize::Bits512).unwrap();
    sealed(&first).write_atomic(&path, false).unwrap();
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o7777, 0o400);

    let err = sealed(&second).write_atomic(&path, false).unwrap_err();
    assert!(matches!(err, Error::FileExists { .. }), "{err}");
    assert!(err.to_string().contains("refusing to overwrite"), "{err}");
    let kept = EscrowFile::read(&path).unwrap().open(&private_a()).unwrap();
    assert_eq!(kept.expose_secret(), first.expose_secret());

    // A dangling symlink at the path also counts as existing.
    let link = dir.path().join("link");
    std::os::unix::fs::symlink(dir.path().join("nowhere"), &link).unwrap();
    assert!(matches!(
        sealed(&second).write_atomic(&link, false).unwrap_err(),
        Error::FileExists { .. }
    ));
    assert!(!dir.path().join("nowhere").exists());

    sealed(&second).write_atomic(&path, true).unwrap();
    let replaced = EscrowFile::read(&path).unwrap().open(&private_a()).unwrap();
    assert_eq!(replaced.expose_secret(), second.expose_secret());
    assert_eq!(
        std::fs::metadata(&path).unwrap().permissions().mode() & 0o7777,
        0o400
    );
    // Only the escrow file and the symlink: no temp files left.
    let names: Vec<_> = std::fs::read_dir(dir.path())
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    assert_eq!(names.len(), 2, "{names:?}");

    let err = sealed(&second)
        .write_atomic(&dir.path().join("missing-dir/file"), false)
        .unwrap_err();
    assert!(matches!(err, Error::WriteFile { .. }), "{err}");
}

#[test]
fn created_at_helper_is_rfc3339_utc_seconds() {
    let now = rfc3339_utc(std::time::SystemTime::UNIX_EPOCH);
    assert_eq!(now, "1970-01-01T00:00:00Z");
    let mut m = metadata(Layout::Shared, 1, 512);
    m.created_at = rfc3339_utc(std::time::SystemTime::now());
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    EscrowFile::seal(&public_a(), &key, m).unwrap();
}

/// The format as the binary will see it: field names are part of the contract.
#[test]
fn json_layout_is_stable() {
    let key = VolumeKey::generate(KeySize::Bits256).unwrap();
    let mut m = metadata(Layout::Shared, 2, 256);
    m.assembly = Assembly::DmStripe {
        chunk_bytes: 262_144,
    };
    let file = EscrowFile::seal(&public_a(), &key, m).unwrap();
    let v: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    assert_eq!(v["format"], "tosskey-escrow");
    assert_eq!(v["version"], 1);
    assert_eq!(v["metadata"]["crypt"]["cipher"], "twofish-xts-plain64");
    assert_eq!(v["metadata"]["crypt"]["key_bits"], 256);
    assert_eq!(v["metadata"]["crypt"]["sector_size"], 4096);
    assert_eq!(v["metadata"]["crypt"]["iv_large_sectors"], false);
    assert_eq!(v["metadata"]["assembly"]["kind"], "dm-stripe");
    assert_eq!(v["metadata"]["assembly"]["chunk_bytes"], 262_144);
    assert_eq!(v["metadata"]["layout"], "shared");
    assert_eq!(
        v["metadata"]["members"][1]["path_at_creation"],
        "/dev/nvme2n1"
    );
    assert_eq!(v["recipient"]["algorithm"], "RSA-OAEP-SHA-256");
    assert_eq!(v["recipient"]["rsa_bits"], 2048);
    let ct = v["keys"][0]["ciphertext"].as_str().unwrap();
    assert_eq!(Base64::decode_vec(ct).unwrap().len(), 256);
}

/// OpenSSL made this ciphertext (`tests/data/escrow/make-openssl-fixture.py seal`), with the
/// label re-derived in Python from the documented rule: tosskey's RSA-OAEP-SHA-256 and its
/// label are the standard ones, so the key can be recovered with stock tools too.
#[test]
fn opens_a_file_sealed_by_openssl() {
    let file = EscrowFile::parse(data("openssl-sealed.json").as_bytes()).unwrap();
    let key = file.open(&private_a()).unwrap();
    assert_eq!(
        hex(key.expose_secret()),
        data("openssl-sealed.key.hex").trim()
    );
}

#[test]
fn discards_are_recorded_only_when_the_volume_passes_them() {
    let key = VolumeKey::generate(KeySize::Bits512).unwrap();
    let plain = sealed(&key);
    // A volume without discards writes the file as before: older readers still read it.
    assert!(!plain.to_json().contains("allow_discards"));
    assert!(
        !EscrowFile::parse(plain.to_json().as_bytes())
            .unwrap()
            .metadata()
            .crypt
            .allow_discards
    );
    let mut meta = metadata(Layout::Shared, 2, key.bits());
    meta.crypt.allow_discards = true;
    let with_discards = EscrowFile::seal(&public_a(), &key, meta).unwrap();
    let json = with_discards.to_json();
    assert!(
        json.contains("\"allow_discards\": true") || json.contains("\"allow_discards\":true"),
        "{json}"
    );
    assert!(
        EscrowFile::parse(json.as_bytes())
            .unwrap()
            .metadata()
            .crypt
            .allow_discards
    );
}
