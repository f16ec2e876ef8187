//! Host tests of the build path: every layout the plan supports is built by the [`Executor`]
//! against a fake kernel ([`FakeKernel`]), which logs each operation asked of it; the tests
//! assert the exact sequence, and for a failure injected at each operation, that everything
//! built until then is taken down again, newest first. The fake's crypt mappings hold the
//! userspace decryption of the zeros beneath them, so the executor's verification runs
//! for real on every segment.

use std::rc::Rc;

use tosskey_crypto::key::{KeyArena, KeySize};

use super::*;
use crate::exec::journal::JournalDir;
use crate::exec::kernel::fake::FakeKernel;
use crate::plan::derive::tests::plan_sized;

const MIB: u64 = 1 << 20;

/// A fake machine: a tree whose kernel has every facility a plan can ask for, a journal
/// directory, and the fake kernel over them.
struct Machine {
    dir: tempfile::TempDir,
    root: SystemRoot,
    journals: JournalDir,
    kernel: Rc<FakeKernel>,
}

impl Machine {
    /// A machine with `plan`'s members as zeroed disks.
    fn for_plan(plan: &Plan) -> Machine {
        let dir = tempfile::tempdir().unwrap();
        let root = SystemRoot::under(dir.path());
        let write = |relative: &str, text: &str| {
            let path = dir.path().join(relative);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        };
        write("proc/sys/kernel/osrelease", "6.12.0-fake\n");
        write("proc/misc", "236 device-mapper\n");
        write("proc/modules", "dm_crypt 61440 0 - Live 0x0\n");
        write("sys/module/md_mod/parameters/new_array", "");
        write(
            "proc/mdstat",
            "Personalities : [raid0] [raid1] [raid10] [linear]\nunused devices: <none>\n",
        );
        write(
            "proc/crypto",
            "name         : xts(twofish)\nname         : xts(aes)\n",
        );
        write("proc/filesystems", "\text4\n");
        write("proc/self/mountinfo", "");
        let kernel = Rc::new(FakeKernel::new(&root));
        for member in &plan.members {
            kernel.disk(
                &member.path,
                DevId::new(member.major, member.minor),
                member.size_bytes,
            );
        }
        let journals = JournalDir::new(dir.path().join("journals"));
        Machine {
            dir,
            root,
            journals,
            kernel,
        }
    }

    /// Build `plan` with `keys` as provision does (start, build, mount), and finish: keep
    /// it, or undo it on failure.
    fn provision(&self, plan: &Plan, keys: &KeyArena) -> Result<BuiltStack> {
        let facilities = KernelFacilities::at(self.dir.path())?;
        let members = plan.members.iter().map(|m| m.path.clone()).collect();
        let mut run = Executor::start_in(
            &self.journals,
            facilities,
            Rc::clone(&self.kernel) as Rc<dyn StackKernel>,
            &plan.name,
            "boot",
            members,
            Vec::new(),
        )?;
        let built = run.build(plan, keys).and_then(|built| {
            for volume in plan.volumes() {
                run.mount_volume(plan, volume, crate::plan::Filesystem::Ext4, false)?;
            }
            for bind in &plan.binds {
                run.bind(bind)?;
            }
            Ok(built)
        });
        run.finish(built)
    }
}

/// A plan for `disks` disks of 4 MiB with provision's `args`, and fresh keys for it.
fn plan_and_keys(args: &[&str], disks: usize) -> (Plan, KeyArena) {
    let plan = plan_sized(args, disks, 4 * MIB).unwrap();
    let keys = KeyArena::generate(
        KeySize::from_bits(plan.crypt.format.key_bits).unwrap(),
        plan.keys.len(),
    )
    .unwrap();
    (plan, keys)
}

/// The undo a successful build operation of the log calls for, if any.
fn undo_of(operation: &str) -> Option<String> {
    let mut words = operation.split(' ');
    match (words.next(), words.next(), words.next()) {
        (Some("create"), Some(name), _) => Some(format!("remove {name}")),
        (Some("assemble"), Some(name), _) => Some(format!("stop {name}")),
        (Some("mount" | "bind"), Some(_), Some(dir)) => Some(format!("unmount {dir}")),
        _ => None,
    }
}

/// Fails if any of `keys` shows in `text`, in hex (either case) or as a byte list.
fn assert_no_key_in(text: &str, keys: &KeyArena) {
    for index in 0..keys.len() {
        let key = keys.key(index).unwrap();
        let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
        assert!(!text.contains(&hex[..16]), "key {index} in hex: {text}");
        assert!(
            !text.contains(&hex[..16].to_uppercase()),
            "key {index} in hex: {text}"
        );
        let listed = format!("{:?}", &key[..4]);
        assert!(
            !text.contains(&listed[1..listed.len() - 1]),
            "key {index} as bytes: {text}"
        );
    }
}

/// Build the layout of `args` over `disks` disks, check it succeeded, that its teardown
/// takes down what it built newest first, and return the kernel's log of the build; then
/// fail each operation of that log in turn on a fresh machine and check the run undid
/// exactly what it had built, newest first, and left no journal.
fn build_and_undo_at_each_step(args: &[&str], disks: usize) -> Vec<String> {
    let (plan, keys) = plan_and_keys(args, disks);
    let machine = Machine::for_plan(&plan);
    let built = machine.provision(&plan, &keys).unwrap();
    assert_eq!(built.node, plan.volume().path);
    assert_eq!(built.crypt.len(), plan.crypt_nodes().count());
    for mapping in &built.crypt {
        assert!(mapping.verification.all_matched(), "{mapping:?}");
        assert!(mapping.verification.checks.len() >= 3, "{mapping:?}");
    }
    let log = machine.kernel.log();
    assert_no_key_in(&log.join("\n"), &keys);
    assert_no_key_in(&format!("{:?}", machine.kernel), &keys);
    // What the journal recorded is what close takes down: the same undo, newest first.
    let journal = machine.journals.load(&plan.name).unwrap().unwrap();
    teardown_in(&*machine.kernel, &machine.root, &journal, &machine.journals).unwrap();
    let undo: Vec<String> = log.iter().rev().filter_map(|op| undo_of(op)).collect();
    assert_eq!(machine.kernel.log()[log.len()..], undo);
    assert!(machine.kernel.dm_devices().unwrap().is_empty());

    for failing in 0..log.len() {
        let machine = Machine::for_plan(&plan);
        assert_failure_undone(&machine, &plan, &keys, &log, failing);
        assert!(machine.kernel.dm_devices().unwrap().is_empty());
        assert_no_key_in(&machine.kernel.log().join("\n"), &keys);
    }
    log
}

/// Fail operation `failing` of a successful build's `log` on `machine` and check the run
/// undid exactly what it had built until then, newest first, and left no journal.
fn assert_failure_undone(
    machine: &Machine,
    plan: &Plan,
    keys: &KeyArena,
    log: &[String],
    failing: usize,
) {
    machine.kernel.fail_build(failing);
    let err = machine.provision(plan, keys).unwrap_err();
    let mut expected = log[..failing].to_vec();
    expected.push(format!("refuse {}", log[failing]));
    expected.extend(log[..failing].iter().rev().filter_map(|op| undo_of(op)));
    assert_eq!(
        machine.kernel.log(),
        expected,
        "failure at {}",
        log[failing]
    );
    assert!(
        matches!(err, Error::RolledBack { .. }),
        "failure at {}: {err:?}",
        log[failing]
    );
    assert!(machine.journals.load(&plan.name).unwrap().is_none());
}

/// The crypt table options every layout here gets (tosskey's defaults, 4 KiB sectors).
const OPTIONS: &str = "3 no_read_workqueue no_write_workqueue sector_size:4096";

/// `load <name>: 0 <sectors> crypt ...` of a one-key crypt mapping over `device`.
fn crypt_load(name: &str, sectors: u64, device: &str, loading: &str) -> String {
    format!(
        "load {name}: 0 {sectors} crypt twofish-xts-plain64 <key-elided> 0 {device} 0 {OPTIONS}; keys of 64 bytes, {loading}"
    )
}

/// Build the layout of `args` over `disks` disks, undo it after a failure at each step,
/// and check the log of the successful build is `expected`.
fn assert_builds(args: &[&str], disks: usize, expected: &[String]) {
    assert_eq!(build_and_undo_at_each_step(args, disks), expected);
}

#[test]
fn a_single_disk_is_created_loaded_and_resumed_and_each_failure_undone() {
    assert_builds(
        &[],
        1,
        &[
            "create v".into(),
            crypt_load("v", 8192, "254:16", "Auto loading: keyring tosskey:v"),
            "resume v".into(),
        ],
    );
}

#[test]
fn raid_none_builds_and_mounts_each_disk_and_a_failure_on_disk_two_undoes_disk_one() {
    // build_and_undo_at_each_step fails each operation in turn: a failure while building
    // or mounting disk 1 (the second) takes down disk 0's mapping and mount too. The
    // journal's teardown (close) unmounts and removes all three.
    let mut expected = Vec::new();
    for (i, dev) in ["254:16", "254:32", "254:48"].iter().enumerate() {
        expected.push(format!("create v-{i}"));
        expected.push(crypt_load(
            &format!("v-{i}"),
            8192,
            dev,
            &format!("Auto loading: keyring tosskey:v-{i}"),
        ));
        expected.push(format!("resume v-{i}"));
    }
    for i in 0..3 {
        expected.push(format!("mount /dev/mapper/v-{i} /mnt/k/{i} ext4"));
    }
    assert_builds(&["--raid", "none", "--mount", "/mnt/k"], 3, &expected);
}

#[test]
fn md_raid0_is_assembled_before_the_crypt_mapping_over_it() {
    assert_builds(
        &[],
        2,
        &[
            "assemble md_tk_v raid0 over /dev/vdb /dev/vdc".into(),
            "create v".into(),
            crypt_load("v", 16384, "9:0", "Auto loading: keyring tosskey:v"),
            "resume v".into(),
        ],
    );
}

#[test]
fn a_dm_stripe_is_resumed_before_the_crypt_mapping_over_it() {
    assert_builds(
        &["--raid", "dm-stripe"],
        2,
        &[
            "create v-stripe".into(),
            "load v-stripe: 0 16384 striped 2 1024 254:16 0 254:32 0".into(),
            "resume v-stripe".into(),
            "create v".into(),
            crypt_load("v", 16384, "253:0", "Auto loading: keyring tosskey:v"),
            "resume v".into(),
        ],
    );
}

#[test]
fn raid1_is_verified_copy_by_copy_from_its_members() {
    assert_builds(
        &["--level", "raid1"],
        2,
        &[
            "assemble md_tk_v raid1 over /dev/vdb /dev/vdc".into(),
            "create v".into(),
            crypt_load("v", 8192, "9:0", "Auto loading: keyring tosskey:v"),
            "resume v".into(),
        ],
    );
}

#[test]
fn raid10_over_four_disks_holds_half_of_them() {
    assert_builds(
        &["--level", "raid10"],
        4,
        &[
            "assemble md_tk_v raid10 over /dev/vdb /dev/vdc /dev/vdd /dev/vde".into(),
            "create v".into(),
            crypt_load("v", 16384, "9:0", "Auto loading: keyring tosskey:v"),
            "resume v".into(),
        ],
    );
}

#[test]
fn md_linear_concatenates_under_the_crypt_mapping() {
    assert_builds(
        &["--level", "linear"],
        2,
        &[
            "assemble md_tk_v linear over /dev/vdb /dev/vdc".into(),
            "create v".into(),
            crypt_load("v", 16384, "9:0", "Auto loading: keyring tosskey:v"),
            "resume v".into(),
        ],
    );
}

/// The one-key crypt mappings of two disks of a per-disk layout, then `above`.
fn per_disk_then(above: &[&str]) -> Vec<String> {
    let mut log: Vec<String> = vec![
        "create v-m0".into(),
        crypt_load("v-m0", 8192, "254:16", "Auto loading: keyring tosskey:v-m0"),
        "resume v-m0".into(),
        "create v-m1".into(),
        crypt_load("v-m1", 8192, "254:32", "Auto loading: keyring tosskey:v-m1"),
        "resume v-m1".into(),
    ];
    log.extend(above.iter().map(|line| line.to_string()));
    log
}

#[test]
fn per_disk_md_assembles_over_the_crypt_mappings_and_a_linear_volume_tops_it() {
    assert_builds(
        &["--layout", "per-disk"],
        2,
        &per_disk_then(&[
            "assemble md_tk_v raid0 over /dev/mapper/v-m0 /dev/mapper/v-m1",
            "create v",
            "load v: 0 16384 linear 9:0 0",
            "resume v",
        ]),
    );
}

#[test]
fn per_disk_raid1_mirrors_the_crypt_mappings() {
    assert_builds(
        &["--layout", "per-disk", "--level", "raid1"],
        2,
        &per_disk_then(&[
            "assemble md_tk_v raid1 over /dev/mapper/v-m0 /dev/mapper/v-m1",
            "create v",
            "load v: 0 8192 linear 9:0 0",
            "resume v",
        ]),
    );
}

#[test]
fn per_disk_dm_stripe_stripes_over_the_crypt_mappings() {
    assert_builds(
        &["--layout", "per-disk", "--raid", "dm-stripe"],
        2,
        &per_disk_then(&[
            "create v",
            "load v: 0 16384 striped 2 1024 253:0 0 253:1 0",
            "resume v",
        ]),
    );
}

#[test]
fn key_scope_segments_continue_offsets_and_ivs_each_with_its_own_keyring_key() {
    let segment = |i: u64| {
        let at = i * 2048;
        format!("{at} 2048 crypt twofish-xts-plain64 <key-elided> {at} 254:16 {at} {OPTIONS}")
    };
    let table: Vec<String> = (0..4).map(segment).collect();
    assert_builds(
        &["--key-scope", "1MiB"],
        1,
        &[
            "create v".into(),
            format!(
                "load v: {}; keys of 64+64+64+64 bytes, Auto loading: keyring tosskey:v#0 tosskey:v#1 tosskey:v#2 tosskey:v#3",
                table.join("; ")
            ),
            "resume v".into(),
        ],
    );
}

#[test]
fn key_scope_per_disk_gives_every_disk_its_segments() {
    let log = build_and_undo_at_each_step(&["--key-scope", "2MiB", "--layout", "per-disk"], 2);
    assert_eq!(log.len(), 10, "{log:#?}");
    for (name, line) in [("v-m0", &log[1]), ("v-m1", &log[4])] {
        assert!(
            line.ends_with(&format!(
                "keys of 64+64 bytes, Auto loading: keyring tosskey:{name}#0 tosskey:{name}#1"
            )),
            "{line}"
        );
    }
}

#[test]
fn hex_key_loading_and_a_mount_come_last_and_are_undone_first() {
    assert_builds(
        &["--key-loading", "hex", "--mount", "/mnt/v"],
        2,
        &[
            "assemble md_tk_v raid0 over /dev/vdb /dev/vdc".into(),
            "create v".into(),
            crypt_load("v", 16384, "9:0", "Hex loading: hex"),
            "resume v".into(),
            "mount /dev/mapper/v /mnt/v ext4".into(),
        ],
    );
}

#[test]
fn keyring_key_loading_with_aes_and_a_mount() {
    let log = build_and_undo_at_each_step(
        &[
            "--key-loading",
            "keyring",
            "--cipher",
            "aes-xts-plain64",
            "--mount",
            "/mnt/v",
        ],
        1,
    );
    assert_eq!(
        log,
        [
            "create v".to_owned(),
            format!("load v: 0 8192 crypt aes-xts-plain64 <key-elided> 0 254:16 0 {OPTIONS}; keys of 64 bytes, Keyring loading: keyring tosskey:v"),
            "resume v".into(),
            "mount /dev/mapper/v /mnt/v ext4".into(),
        ]
    );
}

#[test]
fn auto_key_loading_without_keyring_support_falls_back_to_hex_and_the_journal_says_why() {
    let (plan, keys) = plan_and_keys(&[], 1);
    let machine = Machine::for_plan(&plan);
    machine.kernel.without_keyring();
    let built = machine.provision(&plan, &keys).unwrap();
    assert_eq!(
        machine.kernel.log()[1],
        crypt_load(
            "v",
            8192,
            "254:16",
            "Auto loading: hex (fallback: dm-crypt target 1.14.0 predates keyring keys (1.15.0, Linux 4.10))"
        )
    );
    assert!(
        built.crypt[0].key_loaded.starts_with("hex (fallback: "),
        "{:?}",
        built.crypt[0]
    );
    let journal = machine.journals.load("v").unwrap().unwrap();
    assert_eq!(journal.stage, Stage::Complete);
    assert!(
        journal
            .key_loading_fallback
            .is_some_and(|reason| reason.contains("predates keyring keys")),
        "the journal records the fallback"
    );
}

#[test]
fn a_mapping_held_open_during_the_undo_is_reported_left_over() {
    let (plan, keys) = plan_and_keys(&["--mount", "/mnt/v"], 1);
    let machine = Machine::for_plan(&plan);
    // The mount (operation 3) fails, and someone holds the mapping open.
    machine.kernel.fail_build(3).hold("v");
    let err = machine.provision(&plan, &keys).unwrap_err();
    let Error::RollbackIncomplete { leftovers, .. } = &err else {
        panic!("expected an incomplete rollback: {err:?}")
    };
    assert_eq!(leftovers.len(), 1, "{leftovers:?}");
    assert!(
        leftovers[0].to_string().starts_with("dm mapping v ("),
        "{leftovers:?}"
    );
    assert_eq!(machine.kernel.dm_devices().unwrap().len(), 1);
}

#[test]
fn the_key_check_finds_a_key_written_in_hex_or_as_bytes() {
    let (_, keys) = plan_and_keys(&[], 1);
    let key = keys.key(0).unwrap();
    let hex: String = key.iter().map(|b| format!("{b:02x}")).collect();
    let listed = format!("{key:?}");
    for leak in [hex.clone(), hex.to_uppercase(), listed] {
        let text = format!("load v: {leak}");
        let caught = std::panic::catch_unwind(|| assert_no_key_in(&text, &keys));
        assert!(caught.is_err(), "not caught: {leak}");
    }
    assert_no_key_in("load v: <key-elided>", &keys);
}

/// `--bind`: after the mount, each directory is copied onto the volume and bound, in order.
/// Close takes the binds down first, newest first; a failure at the mount or at a bind
/// undoes the binds made (newest first), the mount and the stack, and removes a directory
/// the run created; a copy that fails names the file and binds nothing.
#[test]
fn binds_follow_the_mount_and_every_failure_unbinds_newest_first() {
    let tree = tempfile::tempdir().unwrap();
    let mount = tree.path().join("mnt");
    let (kept, created) = (tree.path().join("var/lib/a"), tree.path().join("var/log/b"));
    std::fs::create_dir_all(&kept).unwrap();
    std::fs::write(kept.join("data"), b"node data").unwrap();
    let text = |path: &std::path::Path| path.to_str().unwrap().to_owned();
    let args = [
        "--mount".to_owned(),
        text(&mount),
        "--bind".to_owned(),
        text(&kept),
        "--bind".to_owned(),
        text(&created),
    ];
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let (plan, keys) = plan_and_keys(&args, 1);
    let fresh = || {
        let _ = std::fs::remove_dir_all(&mount);
        let _ = std::fs::remove_dir_all(tree.path().join("var/log"));
        Machine::for_plan(&plan)
    };
    let (kept_source, created_source) = (&plan.binds[0].source, &plan.binds[1].source);

    let machine = fresh();
    machine.provision(&plan, &keys).unwrap();
    let log = machine.kernel.log();
    assert_eq!(
        log[log.len() - 3..],
        [
            format!("mount /dev/mapper/v {} ext4", mount.display()),
            format!("bind {} {}", kept_source.display(), kept.display()),
            format!("bind {} {}", created_source.display(), created.display()),
        ]
    );
    assert_eq!(
        std::fs::read(kept_source.join("data")).unwrap(),
        b"node data"
    );
    assert!(created.is_dir() && created_source.is_dir());
    let journal = machine.journals.load(&plan.name).unwrap().unwrap();
    let recorded: Vec<_> = journal.binds.iter().map(|b| (&b.dir, &b.source)).collect();
    assert_eq!(recorded, [(&kept, kept_source), (&created, created_source)]);
    teardown_in(&*machine.kernel, &machine.root, &journal, &machine.journals).unwrap();
    assert_eq!(
        machine.kernel.log()[log.len()..],
        [
            format!("unmount {}", created.display()),
            format!("unmount {}", kept.display()),
            format!("unmount {}", mount.display()),
            "remove v".to_owned(),
        ]
    );

    for failing in log.len() - 3..log.len() {
        assert_failure_undone(&fresh(), &plan, &keys, &log, failing);
        assert!(!created.exists(), "failure at {}", log[failing]);
        assert_eq!(std::fs::read(kept.join("data")).unwrap(), b"node data");
    }

    // The copy finds the volume's side already holding something: the error names it,
    // nothing is bound, and the mount and the stack are undone.
    let machine = fresh();
    std::fs::create_dir_all(kept_source.join("data")).unwrap();
    let err = machine.provision(&plan, &keys).unwrap_err();
    let said = crate::error::render(&err);
    assert!(
        said.contains(&format!(
            "copying {} onto the volume ({})",
            kept.display(),
            kept_source.display()
        )) && said.contains(&format!(
            "cannot copy into {}: it is not empty",
            kept_source.display()
        )),
        "{said}"
    );
    let log = machine.kernel.log();
    assert!(!log.iter().any(|op| op.starts_with("bind")), "{log:?}");
    assert_eq!(
        log[log.len() - 2..],
        [
            format!("unmount {}", mount.display()),
            "remove v".to_owned()
        ]
    );
    assert!(!created.exists());
}
