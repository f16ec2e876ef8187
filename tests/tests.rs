//! The integration tests of the `tosskey` binary and library: one test executable (one
//! link, one file in the VM guest's initramfs) with a module per subject. Root tests are
//! `#[ignore = "root: ..."]` and run in the guest: `scripts/vm-test -p tosskey --
//! MODULE::`.

mod cli;
mod cli_matrix;
mod common;
mod discover;
mod escrow_decrypt;
mod readme;
mod root_bench;
mod root_bind;
mod root_claims;
mod root_cli_matrix;
mod root_compat;
mod root_every_disk;
mod root_first_contact;
mod root_health;
mod root_io_error;
mod root_measure;
mod root_mirrors;
mod root_modules;
mod root_plan;
mod root_raid;
mod root_readme;
mod root_rerun;
mod root_scope;
mod root_signature_corpus;
mod root_single;
mod root_verify;
mod safety;
mod safety_signatures;
mod safety_vm;

/// Asked for its root tests outside the guest, this executable exits 101 before any test
/// starts: tosskey-testkit's start-up gate is linked in (testkit's gate_coverage test
/// requires this test in every executable with root tests).
#[test]
fn root_tests_refuse_to_run_outside_the_guest() {
    tosskey_testkit::guest::assert_this_executable_refuses_root_tests();
}
