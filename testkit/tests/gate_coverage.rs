//! Host tests of the start-up gate (src/guest.rs) that refuses to run ignored tests outside
//! the guest. Each crate's integration-test executable proves at run time that it carries
//! the gate (its `root_tests_refuse_to_run_outside_the_guest` test runs the executable again
//! with `--ignored` and requires exit 101); these tests check that every file declaring root
//! tests ends up in such an executable, or (a unit-test module) names this crate in its code:
//! a mention in a comment links nothing.

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

/// The call that proves, at run time, that an integration-test executable carries the gate.
const GATE_PROBE: &str = "tosskey_testkit::guest::assert_this_executable_refuses_root_tests()";

/// Where the gate of `file`'s test executable must show, and what is missing there, if
/// anything. An integration-test module (`CRATE/tests/NAME.rs`) is compiled only as a module
/// of `CRATE/tests/tests.rs` (each crate sets `autotests = false`), whose own test must call
/// [`GATE_PROBE`]; any other file (a unit-test module under `src/`) must name this crate in
/// its code, so that its crate's test executable links it.
fn gate_problem(workspace: &Path, file: &Path, text: &str) -> Option<String> {
    let relative = file.strip_prefix(workspace).unwrap();
    let shown = relative.display().to_string();
    // The `tests` directory beside a Cargo.toml that holds `file`, if any.
    let tests_dir = relative
        .ancestors()
        .map(|dir| workspace.join(dir))
        .find(|dir| dir.ends_with("tests") && dir.parent().unwrap().join("Cargo.toml").exists());
    let Some(tests_dir) = tests_dir else {
        return (!without_comments(text).contains("tosskey_testkit"))
            .then(|| format!("{shown} does not name tosskey_testkit in its code"));
    };
    let root = tests_dir.join("tests.rs");
    let Ok(root_text) = std::fs::read_to_string(&root) else {
        return Some(format!("{shown}: its crate has no tests/tests.rs"));
    };
    let root_code = without_comments(&root_text);
    let module = file.strip_prefix(tests_dir).unwrap().with_extension("");
    let module = module.to_string_lossy();
    if file != root && !root_code.contains(&format!("mod {module};")) {
        return Some(format!(
            "{shown} is not a module of {}: its tests are never compiled",
            root.strip_prefix(workspace).unwrap().display()
        ));
    }
    (!root_code.contains(GATE_PROBE)).then(|| {
        format!(
            "{} holds root tests (in {shown}) but no test calling {GATE_PROBE}",
            root.strip_prefix(workspace).unwrap().display()
        )
    })
}

#[test]
fn every_executable_with_root_tests_proves_its_guest_gate() {
    let workspace = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let mut files = Vec::new();
    rust_files(workspace, &mut files);
    let mut with_root_tests = 0;
    let mut problems = Vec::new();
    for file in &files {
        let text = std::fs::read_to_string(file).unwrap();
        // This crate's own unit tests run in its own executable, gate included.
        if !text.contains(ROOT_TEST_MARK) || file.starts_with(workspace.join("testkit/src")) {
            continue;
        }
        with_root_tests += 1;
        problems.extend(gate_problem(workspace, file, &text));
    }
    // The workspace has root tests in dm, raid, ext4, xfs, tpm, testkit and the tosskey
    // package: finding few would mean this scan looks in the wrong place.
    assert!(
        with_root_tests >= 7,
        "found only {with_root_tests} files with root tests"
    );
    assert!(problems.is_empty(), "{problems:#?}");
}

/// A module that declares root tests but hangs off no test executable, or an executable
/// whose probe is only mentioned in a comment, is found.
#[test]
fn a_probe_in_a_comment_or_an_undeclared_module_is_found() {
    let dir = tempfile_dir();
    let tests = dir.join("krate/tests");
    std::fs::create_dir_all(&tests).unwrap();
    std::fs::write(dir.join("krate/Cargo.toml"), "").unwrap();
    let module = tests.join("root_thing.rs");
    std::fs::write(
        tests.join("tests.rs"),
        format!("mod root_thing;\n// {GATE_PROBE};\n"),
    )
    .unwrap();
    let problem = gate_problem(&dir, &module, ROOT_TEST_MARK).unwrap();
    assert!(problem.contains("no test calling"), "{problem}");
    std::fs::write(
        tests.join("tests.rs"),
        format!("fn t() {{ {GATE_PROBE}; }}\n"),
    )
    .unwrap();
    let problem = gate_problem(&dir, &module, ROOT_TEST_MARK).unwrap();
    assert!(problem.contains("is not a module of"), "{problem}");
    std::fs::write(
        tests.join("tests.rs"),
        format!("mod root_thing;\nfn t() {{ {GATE_PROBE}; }}\n"),
    )
    .unwrap();
    assert_eq!(gate_problem(&dir, &module, ROOT_TEST_MARK), None);
    std::fs::remove_dir_all(&dir).unwrap();
}

/// A fresh directory under the system's temporary directory.
fn tempfile_dir() -> PathBuf {
    let dir = std::env::temp_dir().join(format!("tosskey-gate-coverage-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}
