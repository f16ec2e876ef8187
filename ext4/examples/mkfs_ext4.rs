//! Format a block device or image file: `cargo run -p tosskey-ext4 --example mkfs_ext4 -- TARGET [--journal] [--meta-bg] [--backups N] [--label L] [--uuid HEX32]`.

use std::path::PathBuf;

use tosskey_ext4::{format, FormatOptions};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut target = None;
    let mut opts = FormatOptions::default();
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--journal" => opts.journal = true,
            "--meta-bg" => opts.meta_bg = true,
            "--backups" => {
                opts.backup_superblocks = args
                    .next()
                    .and_then(|n| n.parse().ok())
                    .expect("--backups 0|1|2")
            }
            "--label" => opts.label = args.next(),
            "--uuid" => {
                let hex: String = args.next().expect("--uuid HEX").replace('-', "");
                let mut uuid = [0u8; 16];
                for (i, byte) in uuid.iter_mut().enumerate() {
                    *byte = u8::from_str_radix(&hex[2 * i..2 * i + 2], 16).expect("hex UUID");
                }
                opts.uuid = Some(uuid);
            }
            _ => target = Some(PathBuf::from(arg)),
        }
    }
    let target = target.expect(
        "usage: mkfs TARGET [--journal] [--meta-bg] [--backups N] [--label L] [--uuid HEX]",
    );
    match format(&target, &opts) {
        Ok(report) => println!("{report:?}"),
        Err(error) => {
            eprintln!("mkfs: {error}");
            std::process::exit(1);
        }
    }
}
