//! The integration tests of tosskey-ext4: one test executable (one link, one file in the VM
//! guest's initramfs) with a module per subject. Root tests are `#[ignore = "root: ..."]`
//! and run in the guest: `scripts/vm-test -p tosskey-ext4 -- MODULE::`.

mod host_e2fsck;
mod host_large;
mod root_format;

/// Asked for its root tests outside the guest, this executable exits 101 before any test
/// starts: tosskey-testkit's start-up gate is linked in (testkit's gate_coverage test
/// requires this test in every executable with root tests).
#[test]
fn root_tests_refuse_to_run_outside_the_guest() {
    tosskey_testkit::guest::assert_this_executable_refuses_root_tests();
}
