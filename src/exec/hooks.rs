//! Test hooks of `test-hooks` builds: crash points and step times the root tests use; in a
//! release build they compile to nothing and read no environment variable.

/// Test-only hooks at the end of each build step, compiled in only with the `test-hooks`
/// feature (release builds never have them). Steps: `journal`, `assembly`, `crypt`,
/// `verify`, `escrow`, `mkfs`, `mount`, and per `--bind` directory `copy` and `bind`.
/// - `TOSSKEY_TEST_CRASH_AFTER=<step>` SIGKILLs the process right after that step, so root
///   tests can prove a rerun converges.
/// - `TOSSKEY_TEST_STEP_TIMES=1` prints `tosskey: step <step> done at <seconds>` (the
///   `CLOCK_MONOTONIC` reading) to stderr, so root tests can time each step of one run (the
///   cost of many keys is measured that way).
pub fn crash_point(step: &str) {
    #[cfg(feature = "test-hooks")]
    {
        if step_times_requested() {
            if let Ok(now) = nix::time::clock_gettime(nix::time::ClockId::CLOCK_MONOTONIC) {
                let seconds = now.tv_sec() as f64 + now.tv_nsec() as f64 / 1e9;
                eprintln!("tosskey: step {step} done at {seconds:.6}");
            }
        }
        if std::env::var("TOSSKEY_TEST_CRASH_AFTER").is_ok_and(|s| s == step) {
            eprintln!("tosskey: TOSSKEY_TEST_CRASH_AFTER={step}: killing myself");
            let _ = nix::sys::signal::raise(nix::sys::signal::Signal::SIGKILL);
        }
    }
    #[cfg(not(feature = "test-hooks"))]
    let _ = step;
}

/// Whether `TOSSKEY_TEST_STEP_TIMES` asks for step times (see [`crash_point`]): always false
/// without the `test-hooks` feature, whose builds do not read the variable at all.
pub fn step_times_requested() -> bool {
    #[cfg(feature = "test-hooks")]
    {
        std::env::var_os("TOSSKEY_TEST_STEP_TIMES").is_some()
    }
    #[cfg(not(feature = "test-hooks"))]
    {
        false
    }
}
