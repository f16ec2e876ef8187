//! CipherSpec: parsing, printing, key sizes and errors.

use tosskey_crypto::spec::{ChainMode, IvGenerator};
use tosskey_crypto::{BlockCipher, CipherSpec};

#[test]
fn default_is_twofish_xts_plain64() {
    let spec = CipherSpec::default();
    assert_eq!(spec.to_string(), "twofish-xts-plain64");
    assert_eq!(spec.block_cipher(), BlockCipher::Twofish);
    assert_eq!(spec.mode(), ChainMode::Xts);
    assert_eq!(spec.iv_generator(), IvGenerator::Plain64);
}

#[test]
fn supported_specs_round_trip_through_display() {
    for (text, cipher, kernel) in [
        ("twofish-xts-plain64", BlockCipher::Twofish, "xts(twofish)"),
        ("aes-xts-plain64", BlockCipher::Aes, "xts(aes)"),
    ] {
        let spec: CipherSpec = text.parse().expect(text);
        assert_eq!(spec.to_string(), text);
        assert_eq!(spec.block_cipher(), cipher);
        assert_eq!(spec.kernel_skcipher_name(), kernel);
    }
    assert_eq!(CipherSpec::SUPPORTED[0], CipherSpec::default());
}

#[test]
fn kernel_api_form_parses_to_the_same_spec() {
    let spec: CipherSpec = "capi:xts(twofish)-plain64".parse().unwrap();
    assert_eq!(spec, CipherSpec::TWOFISH_XTS_PLAIN64);
    assert_eq!(spec.to_string(), "twofish-xts-plain64");
    let spec: CipherSpec = "capi:xts(aes)-plain64".parse().unwrap();
    assert_eq!(spec, CipherSpec::AES_XTS_PLAIN64);
}

#[test]
fn unsupported_and_malformed_specs_list_what_is_supported() {
    for bad in [
        "serpent-cbc-essiv",
        "serpent-xts-plain64",
        "aes-cbc-essiv:sha256",
        "aes-xts-plain",
        "aes-xts-benbi",
        "aes-xts",
        "aes",
        "",
        "-",
        "--",
        "aes-xts-plain64-",
        "aes-xts-plain64-extra",
        "AES-XTS-PLAIN64",
        " aes-xts-plain64",
        "capi:xts(aes)",
        "capi:xts(aes-plain64",
        "capi:cbc(aes)-plain64",
        "capi:",
    ] {
        let err = bad.parse::<CipherSpec>().expect_err(bad).to_string();
        assert!(
            err.contains("supported: twofish-xts-plain64, aes-xts-plain64"),
            "{bad:?}: {err}"
        );
        assert!(err.starts_with("unsupported cipher \""), "{err}");
    }
    let err = "serpent-cbc-essiv".parse::<CipherSpec>().unwrap_err();
    assert_eq!(
        err.to_string(),
        "unsupported cipher \"serpent-cbc-essiv\": supported: twofish-xts-plain64, aes-xts-plain64"
    );
}

#[test]
fn control_characters_in_a_bad_spec_are_escaped_in_the_error() {
    let err = "aes\n-xts".parse::<CipherSpec>().unwrap_err().to_string();
    assert!(!err.contains('\n'), "{err:?}");
}

#[test]
fn xts_takes_256_or_512_bit_keys() {
    for spec in CipherSpec::SUPPORTED {
        spec.validate_key_bits(256).unwrap();
        spec.validate_key_bits(512).unwrap();
        for bits in [0, 128, 192, 384, 1024] {
            let err = spec.validate_key_bits(bits).unwrap_err().to_string();
            assert!(err.contains("256- or 512-bit"), "{err}");
            assert!(err.contains(&spec.to_string()), "{err}");
        }
    }
}

#[test]
fn serde_uses_the_canonical_string_only() {
    let json = serde_json::to_string(&CipherSpec::AES_XTS_PLAIN64).unwrap();
    assert_eq!(json, "\"aes-xts-plain64\"");
    let back: CipherSpec = serde_json::from_str(&json).unwrap();
    assert_eq!(back, CipherSpec::AES_XTS_PLAIN64);
    assert!(serde_json::from_str::<CipherSpec>("\"capi:xts(aes)-plain64\"").is_err());
    assert!(serde_json::from_str::<CipherSpec>("\"des-cbc-plain\"").is_err());
    assert!(serde_json::from_str::<CipherSpec>("42").is_err());
}
