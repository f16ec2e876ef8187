//! Tells the tests which SIMD paths the building machine runs, so that a test of a
//! path this CPU lacks is reported as ignored instead of passing without checking
//! anything. (The library itself detects features at run time and never uses these.)

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    for cfg in [
        "tosskey_host_avx2",
        "tosskey_host_avx512f",
        "tosskey_host_vaes512",
    ] {
        println!("cargo::rustc-check-cfg=cfg({cfg})");
    }
    let target_is_x86_64 = std::env::var("CARGO_CFG_TARGET_ARCH").is_ok_and(|a| a == "x86_64");
    if target_is_x86_64 {
        for cfg in host_cfgs() {
            println!("cargo::rustc-cfg={cfg}");
        }
    }
}

/// The cfgs for the building CPU (none when the build host is not x86-64).
#[cfg(target_arch = "x86_64")]
fn host_cfgs() -> Vec<&'static str> {
    use std::arch::is_x86_feature_detected as has;
    let mut cfgs = Vec::new();
    if has!("avx2") && has!("sse4.1") {
        cfgs.push("tosskey_host_avx2");
    }
    if has!("avx512f") && has!("sse4.1") {
        cfgs.push("tosskey_host_avx512f");
        if has!("vaes") && has!("vpclmulqdq") && has!("aes") {
            cfgs.push("tosskey_host_vaes512");
        }
    }
    cfgs
}

#[cfg(not(target_arch = "x86_64"))]
fn host_cfgs() -> Vec<&'static str> {
    Vec::new()
}
