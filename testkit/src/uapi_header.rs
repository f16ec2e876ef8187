//! Test helper: what the C compiler says about a uapi header. The `#[repr(C)]` mirrors of
//! this crate are checked against the installed header itself (packages gcc and
//! linux-libc-dev), not against numbers copied from it by hand, like tosskey-dm's and
//! tosskey-raid's layout tests.

use std::process::Command;

/// Compiles `program` (a C `main` that prints `name=value` lines) with the host's gcc and
/// returns what it prints. Fails loudly without gcc or `header` rather than passing without
/// having compared anything.
pub(crate) fn report_of(header: &str, program: &str) -> String {
    let path = std::path::Path::new("/usr/include").join(header);
    assert!(
        path.exists(),
        "{} is needed to check the struct layouts: apt-get install linux-libc-dev",
        path.display()
    );
    let dir = std::env::temp_dir().join(format!(
        "tosskey-testkit-{}-{}",
        header.replace('/', "-"),
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).unwrap();
    let source = dir.join("layout.c");
    let executable = dir.join("layout");
    std::fs::write(&source, program).unwrap();
    let compiled = Command::new("gcc")
        .arg("-o")
        .arg(&executable)
        .arg(&source)
        .output()
        .expect("gcc is needed to check the struct layouts against the uapi headers");
    assert!(
        compiled.status.success(),
        "gcc failed on {}: {}",
        source.display(),
        String::from_utf8_lossy(&compiled.stderr)
    );
    let output = Command::new(&executable).output().unwrap();
    std::fs::remove_dir_all(&dir).unwrap();
    assert!(output.status.success(), "{output:?}");
    String::from_utf8(output.stdout).unwrap()
}
