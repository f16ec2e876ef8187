//! `tosskey mkfs`: the pure-Rust ext4 formatter on a device or image file, behind the same
//! safety checks as a provision member ([`crate::safety`]): nothing in use, on the system
//! disk or held, and no partition table or filesystem/LUKS/md signature unless `--force`.

use crate::cli::MkfsArgs;
use crate::error::Result;
use crate::safety::{check_member, CheckOptions};
use crate::sysfs::SystemRoot;

/// Check `args.target`, format it, and say what was made.
pub fn run(root: &SystemRoot, args: MkfsArgs) -> Result<String> {
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
    let report = tosskey_ext4::format(
        &args.target,
        &tosskey_ext4::FormatOptions {
            label: args.label,
            journal: args.journal,
            inode_ratio: args.inode_ratio,
            ..tosskey_ext4::FormatOptions::default()
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
