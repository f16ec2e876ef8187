//! Format a block device or image file: `cargo run -p tosskey-xfs --example mkfs_xfs -- TARGET [--sector 512|4096] [--stripe SU_BYTES SW] [--noalign] [--label L] [--uuid HEX32]`.

use std::path::PathBuf;

use tosskey_xfs::{format, Alignment, FormatOptions, Stripe};

fn main() {
    let mut args = std::env::args().skip(1);
    let mut target = None;
    let mut opts = FormatOptions::default();
    let number = |value: Option<String>, what: &str| -> u64 {
        value
            .and_then(|n| n.parse().ok())
            .unwrap_or_else(|| panic!("{what} needs a number"))
    };
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "--sector" => {
                opts.sector_size = Some(u32::try_from(number(args.next(), "--sector")).unwrap())
            }
            "--stripe" => {
                let unit = number(args.next(), "--stripe SU_BYTES");
                let count = number(args.next(), "--stripe SU_BYTES SW");
                let stripe = Stripe::from_bytes(unit, unit * count)
                    .expect("--stripe: whole 4 KiB blocks, SW >= 1");
                opts.alignment = Alignment::Stripe(stripe);
            }
            "--noalign" => opts.alignment = Alignment::None,
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
        "usage: mkfs TARGET [--sector 512|4096] [--stripe SU_BYTES SW] [--noalign] [--label L] [--uuid HEX]",
    );
    match format(&target, &opts) {
        Ok(report) => println!("{report:?}"),
        Err(error) => {
            eprintln!("mkfs: {error}");
            std::process::exit(1);
        }
    }
}
