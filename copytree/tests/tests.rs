//! The integration tests of tosskey-copytree: one test executable (one link, one file in the
//! VM guest's initramfs) with a module per subject. Root tests are `#[ignore = "root: ..."]`
//! and run in the guest: `scripts/vm-test -p tosskey-copytree -- root_copy::`.

mod host_copy;
mod root_copy;
mod tree;

/// Asked for its root tests outside the guest, this executable exits 101 before any test
/// starts: tosskey-testkit's start-up gate is linked in (testkit's gate_coverage test
/// requires this test in every executable with root tests).
#[test]
fn root_tests_refuse_to_run_outside_the_guest() {
    tosskey_testkit::guest::assert_this_executable_refuses_root_tests();
}
