//! Reading the process's own mapping table: where key memory lives and what the kernel
//! says about it (locked, excluded from core dumps), or that it is gone.

/// The mapping in /proc/self/smaps that contains an address: its size, `Locked:` kB and
/// `VmFlags` (where `lo` means locked and `dd` "do not include in core dumps").
#[derive(Debug)]
pub struct Mapping {
    pub bytes: usize,
    pub locked_kb: u64,
    pub flags: Vec<String>,
}

/// The mapping that contains `address`, or `None` when no mapping does.
pub fn mapping_at(address: usize) -> Option<Mapping> {
    let smaps = std::fs::read_to_string("/proc/self/smaps").unwrap();
    let mut found: Option<Mapping> = None;
    for line in smaps.lines() {
        // A mapping starts with "start-end perms offset dev inode [path]" (hex addresses).
        if let Some((range, _)) = line.split_once(' ') {
            if let Some((start, end)) = range.split_once('-') {
                if let (Ok(start), Ok(end)) = (
                    usize::from_str_radix(start, 16),
                    usize::from_str_radix(end, 16),
                ) {
                    if found.is_some() {
                        break;
                    }
                    if (start..end).contains(&address) {
                        found = Some(Mapping {
                            bytes: end - start,
                            locked_kb: 0,
                            flags: Vec::new(),
                        });
                    }
                    continue;
                }
            }
        }
        if let Some(mapping) = found.as_mut() {
            if let Some(rest) = line.strip_prefix("Locked:") {
                mapping.locked_kb = rest.trim().trim_end_matches("kB").trim().parse().unwrap();
            }
            if let Some(rest) = line.strip_prefix("VmFlags:") {
                mapping.flags = rest.split_whitespace().map(str::to_owned).collect();
            }
        }
    }
    found
}
