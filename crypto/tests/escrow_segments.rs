//! Escrow format version 2 (one key per key-scope segment, with its range) and hostile
//! metadata: a file sealed to the right public key by someone else's tool, carrying names and
//! paths meant to inject into the commands `escrow decrypt` prints.

use std::path::PathBuf;
use std::time::Instant;

use crate::common::{data, default_crypt, private_a};
use base64ct::{Base64, Encoding as _};
use rsa::oaep::Oaep;
use rsa::pkcs8::DecodePublicKey;
use sha2::Sha256;
use tosskey_crypto::escrow::{
    Assembly, EscrowMember, EscrowPublicKey, KeySegment, Layout, MdLevel, Recipient,
};
use tosskey_crypto::{Error, EscrowFile, EscrowMetadata, KeyArena, KeySize};

fn public_a() -> EscrowPublicKey {
    EscrowPublicKey::from_pem(&crate::common::public_a()).unwrap()
}

const TIB_SECTORS: u64 = (1 << 40) / 512;

/// 8 members of 7.5 TiB in raid0 (as on an i3en.24xlarge), or per-disk.
fn metadata(layout: Layout) -> EscrowMetadata {
    EscrowMetadata {
        name: "ephemeral".into(),
        hostname: "ip-10-0-0-17".into(),
        created_at: "2026-11-27T03:00:00Z".into(),
        crypt: default_crypt(512),
        assembly: Assembly::Md {
            level: MdLevel::Raid0,
            chunk_bytes: 512 * 1024,
        },
        layout,
        members: (0..8)
            .map(|i| EscrowMember {
                identity: format!("AWS2A5E1B6C2D3F4{i}"),
                size_bytes: 15 * (1 << 39),
                path_at_creation: PathBuf::from(format!("/dev/nvme{}n1", i + 1)),
            })
            .collect(),
        key_scope_bytes: None,
    }
}

/// `count` segments of 1 TiB of mapping `name`.
fn segments(name: &str, count: u64) -> Vec<(&str, KeySegment)> {
    (0..count)
        .map(|i| {
            (
                name,
                KeySegment {
                    start_sector: i * TIB_SECTORS,
                    sectors: TIB_SECTORS,
                },
            )
        })
        .collect()
}

fn reparse(file: &EscrowFile) -> Result<EscrowFile, Error> {
    EscrowFile::parse(file.to_json().as_bytes())
}

#[test]
fn sixty_segment_keys_round_trip_through_one_arena() {
    let keys = KeyArena::generate(KeySize::Bits512, 60).unwrap();
    let file = EscrowFile::seal_segments(
        &public_a(),
        &segments("ephemeral", 60),
        &keys,
        metadata(Layout::Shared),
    )
    .unwrap();
    let json = file.to_json();
    let parsed = EscrowFile::parse(json.as_bytes()).unwrap();
    assert_eq!(parsed.version(), 2);
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    assert_eq!(
        v["keys"][59]["segment"]["start_sector"],
        59 * TIB_SECTORS,
        "{}",
        &json[..200]
    );
    assert_eq!(v["keys"][59]["segment"]["sectors"], TIB_SECTORS);
    let opened = parsed.open_segments(&private_a()).unwrap();
    assert_eq!(opened.keys.len(), 60);
    for (index, (original, recovered)) in keys.iter().zip(opened.keys.iter()).enumerate() {
        assert_eq!(original, recovered, "key {index}");
        assert_eq!(opened.segments[index].dm_name, "ephemeral");
        assert_eq!(
            opened.segments[index].segment,
            Some(segments("e", 60)[index].1)
        );
    }
}

/// Sized for 300+ keys: 312 keys (24 disks x 13 segments, per-disk) in one file, sealed and
/// opened, with the file size and the time quoted.
#[test]
fn three_hundred_twelve_keys_fit_one_file() {
    let mut m = metadata(Layout::PerDisk);
    m.members = (0..24)
        .map(|i| EscrowMember {
            identity: format!("ZL2ABC{i:02}"),
            size_bytes: 14_000_000_000_000, // a multiple of 4096
            path_at_creation: PathBuf::from(format!("/dev/sd{}", char::from(b'b' + i))),
        })
        .collect();
    let names: Vec<String> = (0..24).map(|i| format!("ephemeral-{i}")).collect();
    let per_disk = 13u64;
    let sectors = (14_000_000_000_000 / 512 / per_disk) / 8 * 8;
    let list: Vec<(&str, KeySegment)> = names
        .iter()
        .flat_map(|name| {
            (0..per_disk).map(move |i| {
                (
                    name.as_str(),
                    KeySegment {
                        start_sector: i * sectors,
                        sectors,
                    },
                )
            })
        })
        .collect();
    let keys = KeyArena::generate(KeySize::Bits512, list.len()).unwrap();
    let started = Instant::now();
    let file = EscrowFile::seal_segments(&public_a(), &list, &keys, m).unwrap();
    let sealed_in = started.elapsed();
    let json = file.to_json();
    let started = Instant::now();
    let opened = EscrowFile::parse(json.as_bytes())
        .unwrap()
        .open_segments(&private_a())
        .unwrap();
    let opened_in = started.elapsed();
    eprintln!(
        "312 keys, RSA-2048: file {} bytes, sealed in {sealed_in:?}, parsed and opened in {opened_in:?}",
        json.len()
    );
    assert_eq!(opened.keys.len(), 312);
    assert!(keys.iter().eq(opened.keys.iter()));
    assert!(json.len() < tosskey_crypto::escrow::MAX_FILE_BYTES);
}

#[test]
fn segment_ranges_must_tile_each_mapping() {
    let keys = |n| KeyArena::generate(KeySize::Bits512, n).unwrap();
    let seal = |list: &[(&str, KeySegment)], layout| {
        EscrowFile::seal_segments(&public_a(), list, &keys(list.len()), metadata(layout))
            .unwrap_err()
            .to_string()
    };
    let segment = |start_sector, sectors| KeySegment {
        start_sector,
        sectors,
    };
    let gap = [("v", segment(0, 8)), ("v", segment(16, 8))];
    assert!(seal(&gap, Layout::Shared).contains("gap or overlap"));
    let overlap = [("v", segment(0, 16)), ("v", segment(8, 8))];
    assert!(seal(&overlap, Layout::Shared).contains("keys[1].segment.start_sector"));
    let late_start = [("v", segment(8, 8))];
    assert!(seal(&late_start, Layout::Shared).contains("gap or overlap"));
    let misaligned = [("v", segment(0, 12))];
    assert!(seal(&misaligned, Layout::Shared).contains("keys[0].segment.sectors"));
    let empty = [("v", segment(0, 0))];
    assert!(seal(&empty, Layout::Shared).contains("positive multiple of 8"));
    let two_mappings = [("v", segment(0, 8)), ("w", segment(0, 8))];
    assert!(seal(&two_mappings, Layout::Shared).contains("keys for 2 mappings"));
    let beyond = [("v", segment(0, 8 * 15 * (1 << 39) / 512 + 8))];
    assert!(seal(&beyond, Layout::Shared).contains("beyond"));
    // Per-disk: each mapping is bounded by its own member.
    let mut per_disk: Vec<(&str, KeySegment)> = Vec::new();
    let names = ["d0", "d1", "d2", "d3", "d4", "d5", "d6", "d7"];
    for name in names {
        per_disk.push((name, segment(0, 8 * TIB_SECTORS)));
    }
    assert!(seal(&per_disk, Layout::PerDisk).contains("keys[0].segment"));
    for (i, name) in names.iter().enumerate() {
        per_disk[i] = (name, segment(0, 8));
    }
    per_disk.swap(1, 7);
    per_disk.push(("d0", segment(8, 8)));
    assert!(seal(&per_disk, Layout::PerDisk).contains("must be adjacent"));
    assert!(EscrowFile::seal_segments(
        &public_a(),
        &[("v", segment(0, 8))],
        &keys(2),
        metadata(Layout::Shared)
    )
    .unwrap_err()
    .to_string()
    .contains("2 keys for 1 segments"));
}

#[test]
fn a_changed_segment_range_never_opens() {
    let keys = KeyArena::generate(KeySize::Bits512, 2).unwrap();
    let list = segments("ephemeral", 2);
    let file =
        EscrowFile::seal_segments(&public_a(), &list, &keys, metadata(Layout::Shared)).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    // Still a valid tiling, but not the one sealed: key 0 then covers 8 sectors less.
    v["keys"][0]["segment"]["sectors"] = (TIB_SECTORS - 8).into();
    v["keys"][1]["segment"]["start_sector"] = (TIB_SECTORS - 8).into();
    let edited = EscrowFile::parse(v.to_string().as_bytes()).unwrap();
    let err = edited.open_segments(&private_a()).unwrap_err();
    assert!(matches!(err, Error::EscrowTampered { .. }), "{err}");
    // A version 2 key without its segment, or a version 1 key with one, does not parse.
    let mut v: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    v["keys"][1].as_object_mut().unwrap().remove("segment");
    let err = EscrowFile::parse(v.to_string().as_bytes()).unwrap_err();
    assert!(err.to_string().contains("keys[1].segment"), "{err}");
    let mut v: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    v["version"] = 1.into();
    assert!(EscrowFile::parse(v.to_string().as_bytes()).is_err());
    assert!(reparse(&file).is_ok());
}

/// The key scope the volume was cut with is recorded (so `recover` reports the same limit),
/// bound to the keys by the OAEP label like all metadata, and bounds every segment.
#[test]
fn the_key_scope_is_recorded_bound_to_the_keys_and_bounds_every_segment() {
    let mut m = metadata(Layout::Shared);
    m.key_scope_bytes = Some(1 << 40);
    let keys = KeyArena::generate(KeySize::Bits512, 60).unwrap();
    let file = EscrowFile::seal_segments(&public_a(), &segments("ephemeral", 60), &keys, m.clone())
        .unwrap();
    let parsed = reparse(&file).unwrap();
    assert_eq!(parsed.metadata().key_scope_bytes, Some(1 << 40));
    assert!(parsed.open_segments(&private_a()).is_ok());

    // A larger limit written in afterwards no longer opens the keys.
    let mut v: serde_json::Value = serde_json::from_str(&file.to_json()).unwrap();
    v["metadata"]["key_scope_bytes"] = (1u64 << 41).into();
    let edited = EscrowFile::parse(v.to_string().as_bytes()).unwrap();
    let err = edited.open_segments(&private_a()).unwrap_err();
    assert!(matches!(err, Error::EscrowTampered { .. }), "{err}");

    // No segment may be longer than the recorded scope.
    let two_tib = [(
        "ephemeral",
        KeySegment {
            start_sector: 0,
            sectors: 2 * TIB_SECTORS,
        },
    )];
    let err = EscrowFile::seal_segments(
        &public_a(),
        &two_tib,
        &KeyArena::generate(KeySize::Bits512, 1).unwrap(),
        m.clone(),
    )
    .unwrap_err()
    .to_string();
    assert!(err.contains("exceed the recorded key scope"), "{err}");
    m.key_scope_bytes = Some(100);
    let err = EscrowFile::seal_segments(&public_a(), &segments("ephemeral", 60), &keys, m)
        .unwrap_err()
        .to_string();
    assert!(err.contains("metadata.key_scope_bytes"), "{err}");
}

/// Seals `metadata` with one key the way any RSA-OAEP tool can, following the documented
/// label rule (compact JSON, struct field order), without tosskey's validation: what someone
/// holding only the public key can produce.
fn seal_like_an_attacker(metadata: &EscrowMetadata, dm_name: &str) -> String {
    let pem = data("test-a-2048.spki.pem");
    let public = rsa::PublicKey::from_public_key_pem(&pem).unwrap();
    let escrow_public = public_a();
    let recipient = Recipient {
        algorithm: "RSA-OAEP-SHA-256".into(),
        rsa_bits: escrow_public.bits(),
        public_key_sha256: escrow_public.fingerprint().to_owned(),
    };
    let label = format!(
        "{{\"purpose\":\"tosskey escrow: OAEP label binding the metadata to the key\",\
         \"format\":\"tosskey-escrow\",\"version\":1,\"metadata\":{},\"recipient\":{},\
         \"key_index\":0,\"dm_name\":{}}}",
        serde_json::to_string(metadata).unwrap(),
        serde_json::to_string(&recipient).unwrap(),
        serde_json::to_string(dm_name).unwrap()
    );
    let ciphertext = public
        .encrypt(
            &mut getrandom::SysRng,
            Oaep::<Sha256>::new_with_label(label.into_bytes()),
            &[0x5a; 64],
        )
        .unwrap();
    serde_json::json!({
        "format": "tosskey-escrow",
        "version": 1,
        "metadata": metadata,
        "recipient": recipient,
        "keys": [{
            "dm_name": dm_name,
            "ciphertext": Base64::encode_string(&ciphertext),
        }],
    })
    .to_string()
}

fn single_disk() -> EscrowMetadata {
    let mut m = metadata(Layout::Shared);
    m.members.truncate(1);
    m.assembly = Assembly::Single;
    m
}

#[test]
fn hostile_metadata_sealed_to_the_right_key_is_refused_before_decryption() {
    // The attacker's tool is sound: with benign metadata its file opens to its key.
    let benign = seal_like_an_attacker(&single_disk(), "ephemeral");
    let opened = EscrowFile::parse(benign.as_bytes())
        .unwrap()
        .open(&private_a())
        .unwrap();
    assert_eq!(opened.expose_secret(), &[0x5a; 64][..]);

    let names = [
        "x; reboot",
        "$(reboot)",
        "`id`",
        "a b",
        "it's",
        "\"q\"",
        "vol\u{202e}lmth.exe",
        "vol\u{200b}",
        "vol\u{2066}",
        "évol",
        "a|b",
        "a&b",
        "..",
    ];
    for name in names {
        let mut m = single_disk();
        m.name = name.into();
        let err =
            EscrowFile::parse(seal_like_an_attacker(&m, "ephemeral").as_bytes()).expect_err(name);
        assert!(err.to_string().contains("metadata.name"), "{name:?}: {err}");
        let err = EscrowFile::parse(seal_like_an_attacker(&single_disk(), name).as_bytes())
            .expect_err(name);
        assert!(
            err.to_string().contains("keys[0].dm_name"),
            "{name:?}: {err}"
        );
        assert!(!err.to_string().contains('\u{202e}'), "{err}");
    }
    let paths = [
        "/dev/sda; reboot",
        "/dev/$(id)",
        "/dev/`id`",
        "/dev/my disk",
        "/dev/a'b",
        "/dev/a\"b",
        "/dev/nvme1n1\u{202e}",
        "/dev/../etc/shadow",
        "/dev/a\\b",
        "/dev/a*",
        "dev/sda",
    ];
    for path in paths {
        let mut m = single_disk();
        m.members[0].path_at_creation = PathBuf::from(path);
        let err =
            EscrowFile::parse(seal_like_an_attacker(&m, "ephemeral").as_bytes()).expect_err(path);
        assert!(
            err.to_string().contains("members[0].path_at_creation"),
            "{path:?}: {err}"
        );
    }
    for identity in ["AWS1;reboot", "AWS1$(id)", "AWS1\u{2067}", "AWS1`id`"] {
        let mut m = single_disk();
        m.members[0].identity = identity.into();
        let err = EscrowFile::parse(seal_like_an_attacker(&m, "ephemeral").as_bytes())
            .expect_err(identity);
        assert!(err.to_string().contains("identity"), "{identity:?}: {err}");
    }
    let mut m = single_disk();
    m.hostname = "host$(id)".into();
    let err = EscrowFile::parse(seal_like_an_attacker(&m, "ephemeral").as_bytes()).unwrap_err();
    assert!(err.to_string().contains("metadata.hostname"), "{err}");
    // Sector sizes dm-crypt takes but the verifier cannot check.
    for size in [1024, 2048] {
        let mut m = single_disk();
        m.crypt.sector_size = size;
        let err = EscrowFile::parse(seal_like_an_attacker(&m, "ephemeral").as_bytes()).unwrap_err();
        assert!(err.to_string().contains("sector_size"), "{size}: {err}");
    }
    // What real devices and hosts look like still passes (`(none)`: no hostname was set).
    let mut m = single_disk();
    m.hostname = "(none)".into();
    m.members[0].path_at_creation = PathBuf::from("/dev/disk/by-path/pci-0000:00:1f.0-nvme-1");
    m.members[0].identity = "t10.ATA     QEMU HARDDISK   QM00005".into();
    EscrowFile::parse(seal_like_an_attacker(&m, "ephemeral-encrypted").as_bytes()).unwrap();
}

/// `--raid none`: three volumes of their own, each mapping with two segment keys, in one
/// file; each key opens for its own mapping, and the separate kind needs the per-disk
/// layout (one mapping per member).
#[test]
fn separate_volumes_round_trip_in_one_file() {
    let mut m = metadata(Layout::PerDisk);
    m.assembly = Assembly::Separate;
    m.members.truncate(3);
    m.key_scope_bytes = Some(1 << 40);
    let list: Vec<(&str, KeySegment)> = ["ephemeral-0", "ephemeral-1", "ephemeral-2"]
        .iter()
        .flat_map(|name| segments(name, 2))
        .collect();
    let keys = KeyArena::generate(KeySize::Bits512, list.len()).unwrap();
    let file = EscrowFile::seal_segments(&public_a(), &list, &keys, m.clone()).unwrap();
    let json = file.to_json();
    assert!(json.contains(r#""kind": "separate""#), "{json}");
    let parsed = reparse(&file).unwrap();
    assert_eq!(parsed.metadata(), &m);
    let opened = parsed.open_segments(&private_a()).unwrap();
    assert_eq!(opened.keys.len(), 6);
    for (index, (original, recovered)) in keys.iter().zip(opened.keys.iter()).enumerate() {
        assert_eq!(original, recovered, "key {index}");
        assert_eq!(opened.segments[index].dm_name, list[index].0);
    }
    let mut shared = m.clone();
    shared.layout = Layout::Shared;
    let err = EscrowFile::seal_segments(&public_a(), &list, &keys, shared).unwrap_err();
    assert!(err.to_string().contains("metadata.layout"), "{err}");
    // A mapping missing: three members need three mappings.
    let four = KeyArena::generate(KeySize::Bits512, 4).unwrap();
    let err = EscrowFile::seal_segments(&public_a(), &list[..4], &four, m).unwrap_err();
    assert!(err.to_string().contains("3 members"), "{err}");
}
