//! Host tests of the start-up gate (src/guest.rs) that refuses to run ignored tests outside
//! the guest: a built test executable asked for `--ignored` on the host exits 101 before
//! libtest starts, and every source file of the workspace that declares root tests names
//! this crate in its code (a mention in a comment does not link anything).

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

/// `text` without its `//` and `/* */` comments (string literals are not parsed: a `//`
/// inside one cuts the rest of its line, which can only hide a name, never invent one).
fn without_comments(text: &str) -> String {
    let mut code = String::with_capacity(text.len());
    let mut rest = text;
    while !rest.is_empty() {
        let line_comment = rest.find("//");
        let block_comment = rest.find("/*");
        match (line_comment, block_comment) {
            (Some(line), block) if block.is_none_or(|block| line < block) => {
                code.push_str(&rest[..line]);
                rest = rest[line..]
                    .find('\n')
                    .map_or("", |end| &rest[line + end..]);
            }
            (_, Some(block)) => {
                code.push_str(&rest[..block]);
                rest = rest[block..]
                    .find("*/")
                    .map_or("", |end| &rest[block + end + 2..]);
            }
            (_, None) => {
                code.push_str(rest);
                rest = "";
            }
        }
    }
    code
}

#[test]
fn comments_do_not_count_as_code() {
    let text = "// use tosskey_testkit as _;\nfn f() {} /* tosskey_testkit */ let x = 1; // y\nz";
    assert_eq!(without_comments(text), "\nfn f() {}  let x = 1; \nz");
    assert!(!without_comments(text).contains("tosskey_testkit"));
}

/// This executable, built like every test executable and linking this crate, refuses a
/// root-test run on the host.
#[test]
fn a_built_test_executable_refuses_ignored_tests_on_the_host() {
    tosskey_testkit::guest::assert_this_executable_refuses_root_tests();
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
        if !without_comments(&text).contains("tosskey_testkit") {
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
