//! Host test: every source file of the workspace that declares root tests links this crate
//! by name, so its test executable carries the start-up gate (src/guest.rs) that refuses to
//! run ignored tests outside the guest. A file that only reached the crate through a shared
//! module could silently lose the gate when that module changes.

use std::path::{Path, PathBuf};

const ROOT_TEST_MARK: &str = "#[ignore = \"root: ";

fn rust_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        let name = path.file_name().unwrap().to_string_lossy().into_owned();
        if path.is_dir() {
            // Build output, the separate fuzz workspace and hidden directories hold no
            // root tests of this workspace.
            if !(name == "target" || name == "fuzz" || name.starts_with('.')) {
                rust_files(&path, found);
            }
        } else if name.ends_with(".rs") {
            found.push(path);
        }
    }
}

#[test]
fn every_file_with_root_tests_links_the_guest_gate() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(workspace, &mut files);
    let mut with_root_tests = 0;
    let mut ungated = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        if !text.contains(ROOT_TEST_MARK) || file.starts_with(workspace.join("testkit")) {
            continue;
        }
        with_root_tests += 1;
        if !text.contains("tosskey_testkit") {
            ungated.push(file.strip_prefix(workspace).unwrap().display().to_string());
        }
    }
    // The workspace has root tests in dm, raid, ext4 and the tosskey package: finding none
    // would mean this scan looks in the wrong place.
    assert!(
        with_root_tests >= 4,
        "found only {with_root_tests} files with root tests"
    );
    assert!(
        ungated.is_empty(),
        "these files declare root tests but do not name tosskey_testkit, so their test \
         executables may lack the guest gate (add `use tosskey_testkit as _;`): {ungated:?}"
    );
}
