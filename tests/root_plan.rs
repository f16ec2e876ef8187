//! Root tests (VM guest): the plan is what gets built, and what the stock tools rebuild.
//!
//! - `dry_run_equals_reality`: for every layout, the nodes `provision --dry-run --json`
//!   prints (name, UUID, size, table with the key elided) are exactly the nodes the same
//!   provision then leaves in the kernel, no more and no fewer.
//! - `stock_tools_rebuild_identical_tables`: the commands `escrow decrypt` prints, run with
//!   stock mdadm, dmsetup and cryptsetup, rebuild the very tables (keys included) and md
//!   arrays tosskey built, for every layout. The guest gets the host's tools through
//!   scripts/vm-test's TOSSKEY_VM_TOOLS (`mdadm dmsetup cryptsetup`).

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};

use crate::common::{escrow_decrypt, escrow_test_keys, recovery_step, run_stock, tosskey};
use serde_json::Value;
use tosskey::plan::render;
use tosskey_dm::{DmControl, DmName};
use tosskey_testkit::{virtio_disks, zero_range};

/// A provision layout under test: volume name, member count, extra flags.
struct Case {
    name: &'static str,
    disks: usize,
    args: &'static [&'static str],
}

const CASES: &[Case] = &[
    Case {
        name: "t-p-single",
        disks: 1,
        args: &[],
    },
    Case {
        name: "t-p-r0",
        disks: 2,
        args: &[],
    },
    Case {
        name: "t-p-r1",
        disks: 2,
        args: &["--level", "raid1"],
    },
    Case {
        name: "t-p-lin",
        disks: 2,
        args: &["--level", "linear"],
    },
    Case {
        name: "t-p-ds",
        disks: 3,
        args: &["--raid", "dm-stripe"],
    },
    Case {
        name: "t-p-pd",
        disks: 2,
        args: &["--layout", "per-disk"],
    },
    Case {
        name: "t-p-pdds",
        disks: 2,
        args: &["--layout", "per-disk", "--raid", "dm-stripe"],
    },
    Case {
        name: "t-p-hex",
        disks: 2,
        args: &["--key-loading", "hex"],
    },
];

/// raid10 in both layouts: dry runs like the others; its stock recipe is a dm `raid` table
/// rather than mdadm, proved in root_mirrors.rs.
const RAID10_CASES: &[Case] = &[
    Case {
        name: "t-p-r10",
        disks: 4,
        args: &["--level", "raid10"],
    },
    Case {
        name: "t-p-r10pd",
        disks: 4,
        args: &["--level", "raid10", "--layout", "per-disk"],
    },
];

/// Closes the volume even when an assertion fails half-way.
struct Volume(&'static str);

impl Drop for Volume {
    fn drop(&mut self) {
        let _ = tosskey(&["close", self.0]);
    }
}

fn disks(count: usize) -> Vec<String> {
    let disks = virtio_disks().expect("list virtio disks");
    assert!(disks.len() >= count, "the guest needs {count} virtio disks");
    disks
        .into_iter()
        .take(count)
        .map(|d| d.path.display().to_string())
        .collect()
}

fn provision_args<'a>(case: &'a Case, members: &'a [String], extra: &[&'a str]) -> Vec<&'a str> {
    let mut args = vec!["provision"];
    args.extend(members.iter().map(String::as_str));
    args.extend(["--name", case.name, "--mkfs", "none"]);
    args.extend(case.args);
    args.extend(extra);
    args
}

fn index(value: &Value) -> usize {
    usize::try_from(value.as_u64().unwrap()).unwrap()
}

/// `MAJ:MIN` of a block device node.
fn dev_of(path: &Path) -> String {
    let rdev = std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .rdev();
    format!("{}:{}", libc::major(rdev), libc::minor(rdev))
}

fn sys_block(dev: &str) -> PathBuf {
    std::fs::canonicalize(format!("/sys/dev/block/{dev}")).unwrap()
}

fn read_sys(path: &Path) -> String {
    std::fs::read_to_string(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .trim()
        .to_owned()
}

/// The live table of `name`, lines joined by "; ", key elided (keyring references kept).
fn live_table(dm: &DmControl, name: &str) -> String {
    dm.table(&DmName::new(name).unwrap())
        .unwrap()
        .iter()
        .map(|e| format!("{} {} {} {}", e.start, e.length, e.target_type, e.params))
        .collect::<Vec<_>>()
        .join("; ")
}

/// The node's table as planned, with every node path the plan refers to replaced by the
/// device number the kernel gave that node.
fn planned_table(plan: &Value, node: &Value) -> String {
    let mut words: Vec<String> = node["table"]
        .as_str()
        .unwrap()
        .split(' ')
        .map(str::to_owned)
        .collect();
    for other in plan["nodes"].as_array().unwrap() {
        let path = other["path"].as_str().unwrap();
        for word in &mut words {
            if word == path {
                *word = dev_of(Path::new(path));
            }
        }
    }
    words.join(" ")
}

fn dry_run_matches_the_kernel(case: &Case) {
    let members = disks(case.disks);
    let dry = tosskey(&provision_args(case, &members, &["--dry-run", "--json"]))
        .ok()
        .json();
    assert_eq!(dry["outcome"], "dry-run");
    let plan = &dry["plan"];
    let nodes = plan["nodes"].as_array().unwrap();
    assert!(!nodes.is_empty(), "{plan}");
    assert!(
        !Path::new(&format!("/dev/mapper/{}", case.name)).exists(),
        "the dry run built something"
    );

    let _volume = Volume(case.name);
    tosskey(&provision_args(case, &members, &[])).ok();
    let dm = DmControl::open().unwrap();
    let mut planned_dm = BTreeSet::new();
    for node in nodes {
        let name = node["name"].as_str().unwrap();
        let path = Path::new(node["path"].as_str().unwrap());
        let size = node["size_bytes"].as_u64().unwrap();
        let sys = sys_block(&dev_of(path));
        assert_eq!(
            read_sys(&sys.join("size")).parse::<u64>().unwrap() * 512,
            size,
            "{}: size of {name}",
            case.name
        );
        if node["kind"] == "md" {
            assert_eq!(node["table"], Value::Null);
            assert_eq!(sys.file_name().unwrap().to_str().unwrap(), name);
            assert_eq!(
                read_sys(&sys.join("md/level")),
                node["level"].as_str().unwrap()
            );
            for (slot, member) in node["members"].as_array().unwrap().iter().enumerate() {
                let expected = match (member.get("member"), member.get("node")) {
                    (Some(i), None) => &plan["members"][index(i)]["path"],
                    (None, Some(i)) => &nodes[index(i)]["path"],
                    _ => panic!("bad device reference {member}"),
                };
                let rd = std::fs::read_link(sys.join(format!("md/rd{slot}"))).unwrap();
                let kernel_name = rd.to_str().unwrap().trim_start_matches("dev-").to_owned();
                assert_eq!(
                    dev_of(Path::new(&format!("/dev/{kernel_name}"))),
                    dev_of(Path::new(expected.as_str().unwrap())),
                    "{}: slot {slot} of {name}",
                    case.name
                );
            }
            continue;
        }
        planned_dm.insert(name.to_owned());
        let info = dm.info(&DmName::new(name).unwrap()).unwrap();
        assert_eq!(info.uuid.as_deref(), node["uuid"].as_str(), "{}", case.name);
        assert_eq!(
            live_table(&dm, name),
            planned_table(plan, node),
            "{}: table of {name}",
            case.name
        );
    }
    let live_dm: BTreeSet<String> = dm
        .devices_with_uuid_prefix("TOSSKEY-")
        .unwrap()
        .into_iter()
        .map(|info| info.name.to_string())
        .collect();
    assert_eq!(
        live_dm, planned_dm,
        "{}: dm nodes built vs planned",
        case.name
    );
    assert_eq!(
        read_sys(
            &sys_block(&dev_of(Path::new(
                plan["nodes"].as_array().unwrap().last().unwrap()["path"]
                    .as_str()
                    .unwrap()
            )))
            .join("size")
        )
        .parse::<u64>()
        .unwrap()
            * 512,
        plan["volume_bytes"].as_u64().unwrap()
    );
    tosskey(&["close", case.name]).ok();
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn dry_run_equals_reality() {
    for case in CASES.iter().chain(RAID10_CASES) {
        dry_run_matches_the_kernel(case);
    }
}

/// How a device looks independent of its number: a member by kernel name, a dm device by dm
/// name, an md array as `md` (tosskey names it `md_tk_*`, mdadm `md127`).
fn device_identity(dev: &str) -> String {
    let sys = sys_block(dev);
    if sys.join("md").is_dir() {
        return "md".to_owned();
    }
    match std::fs::read_to_string(sys.join("dm/name")) {
        Ok(name) => format!("dm:{}", name.trim()),
        Err(_) => sys.file_name().unwrap().to_str().unwrap().to_owned(),
    }
}

/// Every table word that is a device number, as its identity.
fn identify_devices(line: &str) -> String {
    line.split(' ')
        .map(|word| {
            let is_dev = word.split_once(':').is_some_and(|(major, minor)| {
                !major.is_empty()
                    && major.bytes().all(|b| b.is_ascii_digit())
                    && minor.bytes().all(|b| b.is_ascii_digit())
                    && Path::new(&format!("/sys/dev/block/{word}")).exists()
            });
            if is_dev {
                device_identity(word)
            } else {
                word.to_owned()
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// What the kernel has for the plan's nodes: dm tables with keys, md arrays by shape.
/// `md_path`: where this run's md array is (tosskey's or mdadm's node).
fn kernel_view(plan: &Value, md_path: &Path) -> Vec<String> {
    let dm = DmControl::open().unwrap();
    plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|node| {
            let name = node["name"].as_str().unwrap();
            if node["kind"] == "md" {
                let sys = sys_block(&dev_of(md_path));
                let members: Vec<String> = (0..node["members"].as_array().unwrap().len())
                    .map(|slot| {
                        let rd = std::fs::read_link(sys.join(format!("md/rd{slot}"))).unwrap();
                        let kernel_name =
                            rd.to_str().unwrap().trim_start_matches("dev-").to_owned();
                        device_identity(&dev_of(Path::new(&format!("/dev/{kernel_name}"))))
                    })
                    .collect();
                let level = read_sys(&sys.join("md/level"));
                let chunk = if level == "raid0" {
                    read_sys(&sys.join("md/chunk_size"))
                } else {
                    "-".to_owned()
                };
                format!(
                    "md {level} chunk {chunk} size {} members {}",
                    read_sys(&sys.join("size")),
                    members.join(" ")
                )
            } else {
                let entries = dm.table_with_keys(&DmName::new(name).unwrap()).unwrap();
                let lines: Vec<String> = entries
                    .iter()
                    .map(|e| {
                        identify_devices(&format!(
                            "{} {} {} {}",
                            e.start,
                            e.length,
                            e.target_type,
                            e.params.as_str()
                        ))
                    })
                    .collect();
                format!("dm {name}: {}", lines.join("; "))
            }
        })
        .collect()
}

fn stock_tools_match(case: &Case) {
    // Hex loading, so the kernel's tables hold the keys and can be compared whole.
    let hex: &[&str] = if case.args.contains(&"--key-loading") {
        &[]
    } else {
        &["--key-loading", "hex"]
    };
    let members = disks(case.disks);
    let (public, private) = escrow_test_keys();
    let escrow = format!("/tmp/{}.escrow", case.name);
    let key_out = format!("/tmp/{}.key", case.name);
    let _ = std::fs::remove_file(&escrow);
    let plan = tosskey(&provision_args(
        case,
        &members,
        &[hex, &["--dry-run", "--json"]].concat(),
    ))
    .ok()
    .json()["plan"]
        .clone();
    let md_node = plan["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["kind"] == "md")
        .map(|n| PathBuf::from(n["path"].as_str().unwrap()));

    let volume = Volume(case.name);
    tosskey(&provision_args(
        case,
        &members,
        &[
            hex,
            &[
                "--escrow-key",
                public.to_str().unwrap(),
                "--escrow-file",
                &escrow,
            ],
        ]
        .concat(),
    ))
    .ok();
    let by_tosskey = kernel_view(&plan, md_node.as_deref().unwrap_or(Path::new("/")));
    tosskey(&["close", case.name]).ok();
    drop(volume);

    let decrypt = escrow_decrypt(&escrow, &private, &key_out).ok();
    let header = decrypt.stdout.lines().next().unwrap();
    assert!(header.starts_with("# POSIX sh"), "{header}");
    let section = |header: &str| recovery_step(&decrypt.stdout, header);
    let commands = section(render::RECOVERY_OPEN);
    assert_eq!(
        commands.len(),
        plan["nodes"].as_array().unwrap().len(),
        "one stock command per node: {}",
        decrypt.stdout
    );
    for line in &commands {
        run_stock(line);
    }
    let stock_md = PathBuf::from(format!("/dev/md/{}", case.name));
    let by_stock = kernel_view(&plan, &stock_md);
    // The printed steps after opening: delete the key files, then (nothing was mounted)
    // take the stock stack down, top first, as printed.
    for line in section(render::RECOVERY_FORGET_KEYS) {
        run_stock(line);
    }
    let teardown = section(render::RECOVERY_TEARDOWN);
    assert_eq!(
        teardown[0],
        format!("umount -- {}", render::RECOVERY_MOUNT),
        "{}",
        decrypt.stdout
    );
    for line in &teardown[1..] {
        run_stock(line);
    }
    assert_eq!(
        by_stock, by_tosskey,
        "{}: stock tools built other tables",
        case.name
    );
    let left: Vec<PathBuf> = std::fs::read_dir("/tmp")
        .unwrap()
        .map(|f| f.unwrap().path())
        .filter(|p| p.to_str().unwrap().starts_with(&key_out))
        .collect();
    assert!(left.is_empty(), "the printed rm left {left:?}");
    std::fs::remove_file(&escrow).unwrap();
    for member in &members {
        zero_range(Path::new(member), 0, 1 << 20).unwrap();
    }
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn stock_tools_rebuild_identical_tables() {
    for tool in ["mdadm", "dmsetup", "cryptsetup"] {
        assert!(
            Path::new("/usr/sbin").join(tool).exists(),
            "{tool} is not in the guest: run scripts/vm-test with TOSSKEY_VM_TOOLS including mdadm dmsetup cryptsetup (apt-get install mdadm dmsetup cryptsetup-bin on the host)"
        );
    }
    for case in CASES {
        stock_tools_match(case);
    }
}
