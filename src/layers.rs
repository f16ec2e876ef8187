//! The layer rule, checked: every module of `src/` imports only from its own folder or from
//! a layer below it, and no two modules import each other, directly or round a ring.
//!
//! ```text
//! cli/ → commands/ → exec/ → plan/ → host/ → error.rs, names.rs
//! ```
//!
//! Read from the source text: each `crate::…` and `super::…` path outside comments and
//! outside the file's closing `#[cfg(test)]` module (tests may build their inputs with any
//! layer, e.g. parse a command line) is an edge from the file's module to the module the path
//! names (a file, or a folder's `mod.rs` for the items it defines).

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// The layers, top first. A module in one may use modules in its own and any later one.
const LAYERS: [&[&str]; 6] = [
    &["cli"],
    &["commands"],
    &["exec"],
    &["plan"],
    &["host"],
    // The bottom: each imports nothing from the crate (so not each other either).
    &["error", "names"],
];

/// A module's layer: the index of its top-level folder or file in [`LAYERS`].
fn rank(module: &str) -> Option<usize> {
    let top = module.split("::").next().unwrap_or(module);
    LAYERS.iter().position(|layer| layer.contains(&top))
}

/// The module a source file defines: `exec/mod.rs` → `exec`, `plan/derive.rs` →
/// `plan::derive`; `None` for the crate roots.
fn module_of(relative: &str) -> Option<String> {
    let path = relative.strip_suffix(".rs")?;
    if path == "lib" || path == "main" {
        return None;
    }
    let path = path.strip_suffix("/mod").unwrap_or(path);
    Some(path.replace('/', "::"))
}

/// The code a file's edges are read from: comments and the trailing test module removed.
fn production_code(source: &str) -> String {
    let mut code = String::new();
    let mut lines = source.lines().peekable();
    while let Some(line) = lines.next() {
        let trimmed = line.trim_start();
        if trimmed == "#[cfg(test)]"
            && lines.peek().is_some_and(|next| {
                let item = next.trim_start();
                let item = item.strip_prefix("pub(crate) ").unwrap_or(item);
                item.strip_prefix("pub ")
                    .unwrap_or(item)
                    .starts_with("mod ")
            })
        {
            break;
        }
        let without_comment = match line.find("//") {
            Some(at) => &line[..at],
            None => line,
        };
        code.push_str(without_comment);
        code.push('\n');
    }
    code
}

/// The first segment of each path in a `{a, b::c, self}` group starting at `text[0]`.
fn group_heads(text: &str) -> Vec<String> {
    let mut heads = Vec::new();
    let mut depth = 0;
    let mut current = String::new();
    let mut head_done = false;
    for c in text.chars() {
        match c {
            '{' => {
                depth += 1;
                if depth > 1 {
                    head_done = true;
                }
            }
            '}' => {
                depth -= 1;
                if depth == 0 {
                    break;
                }
            }
            ',' if depth == 1 => {
                heads.push(std::mem::take(&mut current));
                head_done = false;
            }
            ':' if depth == 1 => head_done = true,
            c if depth == 1 && !head_done && (c.is_alphanumeric() || c == '_') => current.push(c),
            _ => {}
        }
    }
    heads.push(current);
    heads.retain(|h| !h.is_empty());
    heads
}

/// Resolves `base::segment` to the module that holds it: a submodule if one exists, else
/// `base` itself (the item is defined in its `mod.rs` or file).
fn resolve(modules: &BTreeSet<String>, base: &str, segment: &str) -> String {
    let candidate = if base.is_empty() {
        segment.to_owned()
    } else {
        format!("{base}::{segment}")
    };
    if modules.contains(&candidate) {
        candidate
    } else {
        base.to_owned()
    }
}

/// The modules a file's code refers to.
fn references(modules: &BTreeSet<String>, module: &str, code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    // A file's `super` is its folder (a folder's mod.rs: the folder's parent).
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_owned())
    };
    for (prefix, base) in [("crate::", String::new()), ("super::", parent(module))] {
        let mut rest = code;
        while let Some(at) = rest.find(prefix) {
            let preceded_by_ident = rest[..at]
                .chars()
                .next_back()
                .is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
            rest = &rest[at + prefix.len()..];
            if preceded_by_ident {
                continue;
            }
            // Walk down as far as the path names modules.
            let mut current = base.clone();
            let mut tail = rest;
            loop {
                if tail.starts_with('{') {
                    for head in group_heads(tail) {
                        if head != "self" {
                            found.insert(resolve(modules, &current, &head));
                        }
                    }
                    break;
                }
                let segment: String = tail
                    .chars()
                    .take_while(|c| c.is_alphanumeric() || *c == '_')
                    .collect();
                let next = resolve(modules, &current, &segment);
                if next == current || !tail[segment.len()..].starts_with("::") {
                    found.insert(next);
                    break;
                }
                current = next;
                tail = &tail[segment.len() + 2..];
            }
        }
    }
    found.remove(module);
    found.remove("");
    found
}

/// Every violation of the rule in `files` (path relative to `src/` → source text).
fn violations(files: &BTreeMap<String, String>) -> Vec<String> {
    let sources: BTreeMap<String, &str> = files
        .iter()
        .filter_map(|(path, text)| Some((module_of(path)?, text.as_str())))
        .collect();
    let modules: BTreeSet<String> = sources.keys().cloned().collect();
    let mut problems = Vec::new();
    let mut edges: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    for (module, source) in &sources {
        let Some(own) = rank(module) else {
            problems.push(format!("{module} is in no layer: add its folder to LAYERS"));
            continue;
        };
        let refs = references(&modules, module, &production_code(source));
        for used in &refs {
            let same_folder = used.split("::").next() == module.split("::").next();
            match rank(used) {
                Some(theirs) if same_folder || theirs > own => {}
                _ => problems.push(format!("{module} uses {used}, a layer above or beside it")),
            }
        }
        edges.insert(module, refs);
    }
    problems.extend(cycles(&edges));
    problems
}

/// One message per module ring (depth-first search; a back edge closes a ring).
fn cycles(edges: &BTreeMap<&str, BTreeSet<String>>) -> Vec<String> {
    fn visit<'a>(
        node: &'a str,
        edges: &'a BTreeMap<&str, BTreeSet<String>>,
        stack: &mut Vec<&'a str>,
        done: &mut BTreeSet<&'a str>,
        rings: &mut Vec<String>,
    ) {
        if let Some(at) = stack.iter().position(|n| *n == node) {
            let mut ring: Vec<&str> = stack[at..].to_vec();
            ring.push(node);
            rings.push(format!("import ring: {}", ring.join(" → ")));
            return;
        }
        if !done.insert(node) {
            return;
        }
        stack.push(node);
        for next in edges.get(node).into_iter().flatten() {
            visit(next, edges, stack, done, rings);
        }
        stack.pop();
    }
    let mut rings = Vec::new();
    let mut done = BTreeSet::new();
    for node in edges.keys() {
        visit(node, edges, &mut Vec::new(), &mut done, &mut rings);
    }
    rings
}

fn read_tree(dir: &Path, relative: &str, files: &mut BTreeMap<String, String>) {
    for entry in std::fs::read_dir(dir).expect("src/ is readable") {
        let entry = entry.expect("src/ entry");
        let name = entry.file_name().into_string().expect("UTF-8 file names");
        let path = format!("{relative}{name}");
        if entry.file_type().expect("file type").is_dir() {
            read_tree(&entry.path(), &format!("{path}/"), files);
        } else if name.ends_with(".rs") && path != "layers.rs" {
            files.insert(path, std::fs::read_to_string(entry.path()).expect("source"));
        }
    }
}

#[test]
fn src_follows_the_layer_rule() {
    let mut files = BTreeMap::new();
    read_tree(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join("src"),
        "",
        &mut files,
    );
    assert!(files.len() > 20, "read {} files", files.len());
    let problems = violations(&files);
    assert!(problems.is_empty(), "{}", problems.join("\n"));
}

#[test]
fn an_upward_import_and_a_ring_are_found() {
    let files: BTreeMap<String, String> = [
        ("plan/mod.rs", "pub mod derive;\n"),
        ("plan/derive.rs", "use crate::host::safety::Checked;\nuse super::render;\n"),
        ("plan/render.rs", "use crate::plan::derive::x;\n// crate::cli is only a comment\n"),
        ("host/mod.rs", ""),
        ("host/safety.rs", "fn f() { crate::commands::status::read(); }\n"),
        ("commands/mod.rs", ""),
        ("commands/status.rs", "use crate::{host::safety, error::Error};\n#[cfg(test)]\nmod tests {\n use crate::cli::Cli;\n}\n"),
        ("cli/mod.rs", ""),
        ("error.rs", ""),
    ]
    .into_iter()
    .map(|(p, t)| (p.to_owned(), t.to_owned()))
    .collect();
    let problems = violations(&files);
    assert_eq!(
        problems,
        [
            "host::safety uses commands::status, a layer above or beside it",
            "import ring: plan::derive → plan::render → plan::derive",
        ],
        "{problems:#?}"
    );
}
