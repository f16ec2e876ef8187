//! `tosskey mkfs`: the pure-Rust ext4 or XFS formatter on a device or image file, behind the
//! same safety checks as a provision member ([`crate::safety`]): nothing in use, on the
//! system disk or held, and no partition table or filesystem/LUKS/md signature unless
//! `--force`.

use crate::cli::{FilesystemArg, MkfsArgs};
use crate::error::{Error, Result};
use crate::safety::{check_member, CheckOptions};
use crate::sysfs::SystemRoot;

/// Check `args.target`, format it, and say what was made.
pub fn run(root: &SystemRoot, args: MkfsArgs) -> Result<String> {
    if args.filesystem == FilesystemArg::Xfs && (args.journal || args.inode_ratio.is_some()) {
        return Err(Error::Usage(
            "--journal and --inode-ratio are ext4 options: drop them for --type xfs (XFS always has its log and allocates inodes as it needs them)".into(),
        ));
    }
    let mut checked = check_member(
        root,
        &args.target,
        &CheckOptions {
            force: args.force,
            allow_regular_file: true,
        },
    )?;
    // The formatter opens the target exclusively itself: ours must be gone first.
    checked.release_claim();
    match args.filesystem {
        FilesystemArg::Ext4 => format_ext4(args),
        FilesystemArg::Xfs => format_xfs(args),
    }
}

fn format_ext4(args: MkfsArgs) -> Result<String> {
    let defaults = tosskey_ext4::FormatOptions::default();
    let report = tosskey_ext4::format(
        &args.target,
        &tosskey_ext4::FormatOptions {
            label: args.label,
            journal: args.journal,
            inode_ratio: args.inode_ratio.unwrap_or(defaults.inode_ratio),
            ..defaults
        },
    )?;
    Ok(format!(
        "{}: ext4, {} blocks of 4096 bytes, {} inodes, {} groups{}\n",
        args.target.display(),
        report.blocks,
        report.inodes,
        report.groups,
        if report.journal_blocks > 0 {
            ", with journal"
        } else {
            ""
        }
    ))
}

fn format_xfs(args: MkfsArgs) -> Result<String> {
    let report = tosskey_xfs::format(
        &args.target,
        &tosskey_xfs::FormatOptions {
            label: args.label,
            ..tosskey_xfs::FormatOptions::default()
        },
    )?;
    let g = &report.geometry;
    Ok(format!(
        "{}: xfs, {} blocks of 4096 bytes, {} AGs of {} blocks, {}-byte sectors, log of {} blocks{}\n",
        args.target.display(),
        g.dblocks,
        g.agcount,
        g.agblocks,
        g.sector_size,
        g.log_blocks,
        match g.stripe {
            Some(stripe) => format!(", stripe unit {} blocks, width {}", stripe.unit, stripe.width),
            None => String::new(),
        }
    ))
}
