//! Root test (VM guest): a member stays claimed (`O_EXCL`) from its safety check through
//! the journal and the key until the executor hands it to md, so nothing else can claim
//! or mount it in between; the array is still built (the claim is released in time).

use std::fs::OpenOptions;
use std::os::unix::fs::OpenOptionsExt as _;
use std::path::{Path, PathBuf};

use clap::Parser as _;
use tosskey::cli::{Cli, Command};
use tosskey::exec::facilities::KernelFacilities;
use tosskey::exec::journal::{boot_id, JournalDir};
use tosskey::exec::{teardown, Executor};
use tosskey::host::safety::{check_members, CheckOptions, MemberClaims};
use tosskey::host::sysfs::SystemRoot;
use tosskey::plan::derive;
use tosskey::plan::request::ProvisionConfig;
use tosskey_crypto::key::{KeyArena, KeySize};
use tosskey_testkit::{virtio_disks, zero_range};

/// Whether another exclusive open of `path` is refused (someone holds it).
fn claimed_by_someone(path: &Path) -> bool {
    let open = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_EXCL)
        .open(path);
    matches!(open, Err(e) if e.raw_os_error() == Some(libc::EBUSY))
}

#[test]
#[ignore = "root: runs in the VM guest (scripts/vm-test)"]
fn members_stay_claimed_until_md_claims_them() {
    let paths: Vec<PathBuf> = virtio_disks().unwrap()[..2]
        .iter()
        .map(|d| d.path.clone())
        .collect();
    for path in &paths {
        zero_range(path, 0, 4 << 20).unwrap();
    }
    let mut argv = vec![
        "tosskey",
        "provision",
        "--name",
        "t-claims",
        "--mkfs",
        "none",
    ];
    argv.extend(paths.iter().map(|p| p.to_str().unwrap()));
    let Command::Provision(args) = Cli::parse_from(argv).command else {
        unreachable!("parsed a provision command");
    };
    let cfg = ProvisionConfig::from_args(args).unwrap();
    let root = SystemRoot::host();
    let journal_dir = tempfile::tempdir().unwrap();
    let journals = JournalDir::new(journal_dir.path());
    let boot = boot_id(&root.proc).unwrap();

    let mut checked = check_members(&root, &paths, &CheckOptions::default()).unwrap();
    let plan = derive::from_config(&cfg, &checked, &boot).unwrap();
    let claims = MemberClaims::take(&mut checked);
    assert!(claims.is_held(0) && claims.is_held(1));
    let kernel = KernelFacilities::host().unwrap();
    let mut run = Executor::start(
        &root,
        &journals,
        kernel,
        &plan.name,
        &boot,
        paths.clone(),
        Vec::new(),
    )
    .unwrap();
    run.hold_claims(claims);
    let keys = KeyArena::generate(
        KeySize::from_bits(plan.crypt.format.key_bits).unwrap(),
        plan.keys.len(),
    )
    .unwrap();
    // The journal is written and the key made: the members are still ours alone.
    for path in &paths {
        assert!(
            claimed_by_someone(path),
            "{} was released before md claimed it",
            path.display()
        );
    }
    let built = run.build(&plan, &keys);
    let built = run
        .finish(built)
        .expect("md and dm claim the members after us");
    assert_eq!(built.node, Path::new("/dev/mapper/t-claims"));
    // Now md holds them.
    assert!(paths.iter().all(|p| claimed_by_someone(p)));
    let journal = journals.load("t-claims").unwrap().unwrap();
    teardown(&root, &journal, &journals).unwrap();
    assert!(!paths.iter().any(|p| claimed_by_someone(p)));
}
