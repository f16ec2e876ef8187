//! `copy_tree FROM TO`: copies the contents of directory FROM into the empty directory TO
//! with tosskey-copytree and prints what it copied and how long it took. The driver of the
//! benchmark in the crate README (`copytree/bench-vs-cp`).

use std::path::PathBuf;
use std::time::Instant;

fn main() {
    let arguments: Vec<PathBuf> = std::env::args_os().skip(1).map(PathBuf::from).collect();
    let [from, to] = arguments.as_slice() else {
        eprintln!("usage: copy_tree FROM TO");
        std::process::exit(2);
    };
    let started = Instant::now();
    match tosskey_copytree::copy_tree(from, to) {
        Ok(copied) => println!(
            "{} entries, {} bytes, {} hard links in {:.3} s",
            copied.entries,
            copied.bytes,
            copied.hard_links,
            started.elapsed().as_secs_f64()
        ),
        Err(error) => {
            eprintln!("copy_tree: {error}");
            std::process::exit(1);
        }
    }
}
