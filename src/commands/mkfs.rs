//! `tosskey mkfs`: the pure-Rust ext4 or XFS formatter on a device or image file, behind the
//! same safety checks as a provision member ([`crate::host::safety`]): nothing in use, on the
//! system disk or held, and no partition table or filesystem/LUKS/md signature unless
//! `--force`.

use std::path::PathBuf;

use crate::error::{Error, Result, Usage};
use crate::host::safety::{check_member_writable, CheckOptions};
use crate::host::sysfs::SystemRoot;
pub use crate::plan::Filesystem;

/// What `tosskey mkfs` was asked to make.
#[derive(Debug, Clone)]
pub struct MkfsRequest {
    /// Block device or image file.
    pub target: PathBuf,
    pub filesystem: Filesystem,
    pub label: Option<String>,
    /// ext4 only.
    pub journal: bool,
    /// ext4 only.
    pub inode_ratio: Option<u64>,
    /// Overwrite a target that carries a signature (never one in use).
    pub force: bool,
}

/// Check `args.target`, format it, and say what was made. The formatter writes through
/// the descriptor the checks opened (read-write, `O_EXCL` on a block device) and scanned:
/// a path swapped after the check (a symlink re-pointed) cannot send it elsewhere.
pub fn run(root: &SystemRoot, args: MkfsRequest) -> Result<String> {
    if args.filesystem == Filesystem::Xfs && (args.journal || args.inode_ratio.is_some()) {
        return Err(Error::Usage(Usage::Ext4OptionsForXfs));
    }
    let mut checked = check_member_writable(
        root,
        &args.target,
        &CheckOptions {
            force: args.force,
            allow_regular_file: true,
        },
    )?;
    let claim = checked
        .take_claim()
        .expect("a member that passed the checks is claimed");
    match args.filesystem {
        Filesystem::Ext4 => format_ext4(claim, args),
        Filesystem::Xfs => format_xfs(claim, args),
    }
}

fn format_ext4(claim: std::fs::File, args: MkfsRequest) -> Result<String> {
    let defaults = tosskey_ext4::FormatOptions::default();
    let report = tosskey_ext4::format_file(
        claim,
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

fn format_xfs(claim: std::fs::File, args: MkfsRequest) -> Result<String> {
    let report = tosskey_xfs::format_file(
        claim,
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

#[cfg(test)]
mod tests {
    use std::path::Path;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;

    use super::*;
    use crate::host::safety::MIN_MEMBER_BYTES;

    fn args(target: &Path) -> MkfsRequest {
        MkfsRequest {
            target: target.to_path_buf(),
            filesystem: Filesystem::Ext4,
            label: None,
            journal: false,
            inode_ratio: None,
            force: false,
        }
    }

    fn image(path: &Path) {
        std::fs::File::create(path)
            .unwrap()
            .set_len(MIN_MEMBER_BYTES)
            .unwrap();
    }

    const HEAD: usize = 8192;

    fn head(path: &Path) -> Vec<u8> {
        let mut bytes = vec![0; HEAD];
        std::io::Read::read_exact(&mut std::fs::File::open(path).unwrap(), &mut bytes).unwrap();
        bytes
    }

    /// `link` is re-pointed between a blank image and an ext4 image as fast as a thread can
    /// rename symlinks while `mkfs` runs on it again and again: each run formats the blank
    /// image or refuses, and the ext4 image (refused when named directly) is never written.
    #[test]
    fn a_symlink_swapped_during_mkfs_never_gets_the_victim_formatted() {
        let dir = tempfile::tempdir().unwrap();
        let (blank, victim) = (dir.path().join("blank.img"), dir.path().join("victim.img"));
        image(&blank);
        image(&victim);
        tosskey_ext4::format(&victim, &tosskey_ext4::FormatOptions::default()).unwrap();
        let victim_bytes = std::fs::read(&victim).unwrap();
        let root = SystemRoot::host();
        assert!(run(&root, args(&victim)).is_err(), "the victim is refused");
        let link = dir.path().join("target");
        std::os::unix::fs::symlink(&blank, &link).unwrap();

        let stop = Arc::new(AtomicBool::new(false));
        let flipper = {
            let (stop, link) = (Arc::clone(&stop), link.clone());
            let targets = [victim.clone(), blank.clone()];
            let staged = dir.path().join("staged");
            std::thread::spawn(move || {
                let mut flips = 0usize;
                while !stop.load(Ordering::Relaxed) {
                    let _ = std::fs::remove_file(&staged);
                    std::os::unix::fs::symlink(&targets[flips % 2], &staged).unwrap();
                    std::fs::rename(&staged, &link).unwrap();
                    flips += 1;
                }
                flips
            })
        };
        let (mut formatted, mut refused) = (0, 0);
        for _ in 0..2000 {
            match run(&root, args(&link)) {
                Ok(_) => {
                    formatted += 1;
                    // Blank again, or the next check refuses the filesystem just made.
                    let file = std::fs::OpenOptions::new()
                        .write(true)
                        .open(&blank)
                        .unwrap();
                    file.set_len(0).unwrap();
                    file.set_len(MIN_MEMBER_BYTES).unwrap();
                }
                Err(_) => refused += 1,
            }
            // Any format rewrites the superblock (at 1024) with a new random UUID.
            if head(&victim) != victim_bytes[..HEAD] {
                stop.store(true, Ordering::Relaxed);
                let flips = flipper.join().unwrap();
                panic!("the victim was formatted (after {formatted} formats, {refused} refusals, {flips} flips)");
            }
        }
        stop.store(true, Ordering::Relaxed);
        let flips = flipper.join().unwrap();
        assert!(std::fs::read(&victim).unwrap() == victim_bytes);
        assert!(flips > 300, "the link was swapped {flips} times");
        assert!(
            formatted > 0 && refused > 0,
            "{formatted} formats, {refused} refusals"
        );
    }
}
