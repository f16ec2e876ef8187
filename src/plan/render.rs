//! Render: a [`Plan`] as text (`--dry-run`), as dm tables (key elided), and as the stock-tool
//! commands (`mdadm`, `dmsetup`, `cryptsetup`) that rebuild it without tosskey; and `status`,
//! the plan's data read back from the kernel, with the same node, table and key renderers.

use std::fmt::Write as _;
use std::path::PathBuf;
use tosskey_sysutil::SECTOR_SIZE;

use tosskey_dm::{DevId, KeyRef, Sectors};

use super::{md_level_name, DeviceRef, DmTarget, KeyLoading, Node, NodeKind, Plan, PlannedKey};
use crate::error::{Error, Refusal};
use crate::plan::shell::{self, quote};

/// How tosskey's tables name a device: members by `MAJ:MIN`, nodes (whose numbers exist only
/// once built) by path.
pub fn kernel_device(plan: &Plan, device: DeviceRef) -> String {
    match device {
        DeviceRef::Member(i) => plan.members[i].dev.clone(),
        DeviceRef::Node(i) => plan.nodes[i].path.display().to_string(),
    }
}

/// The path stock tools see: the member path, `/dev/md/<name>` for the array mdadm builds,
/// `/dev/mapper/<name>-raid10` for the dm `raid` mapping that stands in for a raid10 array
/// (`mdadm --build` makes no raid10), `/dev/mapper/<name>` for dm nodes.
pub fn stock_device(plan: &Plan, device: DeviceRef) -> String {
    match device {
        DeviceRef::Member(i) => plan.members[i].path.display().to_string(),
        DeviceRef::Node(i) => match plan.nodes[i].kind {
            NodeKind::Md {
                level: super::MdLevel::Raid10,
                ..
            } => format!("/dev/mapper/{}", stock_raid10_name(plan)),
            NodeKind::Md { .. } => format!("/dev/md/{}", plan.name),
            _ => plan.nodes[i].path.display().to_string(),
        },
    }
}

/// The dm name of the stock recipe's raid10 mapping.
fn stock_raid10_name(plan: &Plan) -> String {
    format!("{}-raid10", plan.name)
}

/// Sectors of each metadata device of the stock raid10 recipe: a dm `zero` target, which
/// reads as zeros and discards writes, big enough for dm-raid's superblock (4 KiB) and
/// its write-intent bitmap behind it.
const STOCK_RAID10_METADATA_SECTORS: u64 = 8192;

/// The dm name of the stock recipe's metadata device for slot `slot`.
fn stock_raid10_metadata_name(plan: &Plan, slot: usize) -> String {
    format!("{}-raid10-meta{slot}", plan.name)
}

/// The commands that rebuild md raid10 array `node` over `members` (stock device paths)
/// as a dm `raid` mapping: the same near layout, 2 copies, chunk and length, and `nosync`
/// (no initial resync, like tosskey's array built clean). dm-raid takes a raid10 layout
/// only from a metadata device (without one it keeps its default layout, 0, which md
/// refuses), so every member gets a dm `zero` device as its metadata device: dm-raid
/// finds no superblock there, treats the set as new and takes the table's layout, and
/// what it writes there is discarded, so nothing is written to the members or anywhere
/// else. dm-raid's params count is the number of words between it and the device count.
fn raid10_commands(plan: &Plan, node: &Node, members: &[String]) -> Result<String, Error> {
    let NodeKind::Md { chunk_bytes, .. } = &node.kind else {
        unreachable!("raid10 commands are made for md nodes")
    };
    let params = [
        (chunk_bytes / SECTOR_SIZE).to_string(),
        "nosync".to_owned(),
        "raid10_copies".to_owned(),
        tosskey_raid::RAID10_NEAR_COPIES.to_string(),
        "raid10_format".to_owned(),
        "near".to_owned(),
    ];
    let mut commands = Vec::new();
    let mut devices = Vec::new();
    for (slot, member) in members.iter().enumerate() {
        let metadata = stock_raid10_metadata_name(plan, slot);
        commands.push(format!(
            "dmsetup create --table {} -- {}",
            quote(&format!("0 {STOCK_RAID10_METADATA_SECTORS} zero"))?,
            quote(&metadata)?
        ));
        devices.push(format!("/dev/mapper/{metadata} {member}"));
    }
    let table = format!(
        "0 {} raid raid10 {} {} {} {}",
        node.size_bytes / SECTOR_SIZE,
        params.len(),
        params.join(" "),
        members.len(),
        devices.join(" ")
    );
    commands.push(format!(
        "dmsetup create --table {} -- {}",
        quote(&table)?,
        quote(&stock_raid10_name(plan))?
    ));
    Ok(format!(
        "{}   # md raid10 as a dm raid mapping (mdadm --build makes no raid10): members in this order, zero-target metadata devices, nosync: nothing written to them",
        commands.join(" && ")
    ))
}

/// The table of node `index` with the key elided (a keyring reference is kept: it is no
/// secret and it is what the kernel shows), devices named by `name`. `None` for md arrays.
pub fn table(
    plan: &Plan,
    index: usize,
    name: impl Fn(DeviceRef) -> String,
) -> Result<Option<String>, tosskey_dm::Error> {
    let node = &plan.nodes[index];
    // Device numbers are filled in by position below: any number renders the same shape.
    let Some(target) = plan.dm_target(index, |_| DevId::new(0, 0))? else {
        return Ok(None);
    };
    let (key_refs, devices): (Option<Vec<KeyRef>>, Vec<DeviceRef>) = match &node.kind {
        NodeKind::Crypt { device, segments } => {
            let bits = plan.keys[segments[0].key].bits;
            let key_refs = (0..segments.len())
                .map(|i| plan.key_ref(&node.name, bits, i, segments.len()))
                .collect::<Result<Option<Vec<_>>, _>>()?;
            (key_refs, vec![*device])
        }
        NodeKind::Striped { devices, .. } => (None, devices.clone()),
        NodeKind::Linear { device } => (None, vec![*device]),
        NodeKind::Md { .. } => unreachable!("md arrays have no dm target"),
    };
    let names: Vec<String> = devices.into_iter().map(name).collect();
    let lines = target_lines(&target, key_refs.as_deref())?
        .iter()
        .map(|line| tosskey_dm::name_devices_in_line(line, &names))
        .collect::<Result<_, _>>()?;
    Ok(Some(join_lines(lines)))
}

/// The lines of a dm target with hex keys elided ([`tosskey_dm::CryptTarget::line_elided`])
/// and keyring references (`key_refs`, one per crypt segment) kept: how a plan's tables and
/// the tables `status` reads back are both shown.
pub fn target_lines(
    target: &DmTarget,
    key_refs: Option<&[KeyRef]>,
) -> Result<Vec<String>, tosskey_dm::Error> {
    Ok(match target {
        DmTarget::Crypt(crypt) => match key_refs {
            Some(key_refs) => crypt
                .lines(key_refs)?
                .iter()
                .map(|line| line.display_elided())
                .collect(),
            None => crypt.lines_elided()?,
        },
        DmTarget::Striped(striped) => vec![striped.line(Sectors(0))?.display_elided()],
        DmTarget::Linear(linear) => vec![linear.line(Sectors(0))?.display_elided()],
    })
}

/// A table's lines joined by "; ", as status and the root tests show a live table.
pub fn join_lines(lines: Vec<String>) -> String {
    lines.join("; ")
}

/// How keys reach dm-crypt, in user words.
pub fn key_loading_words(loading: KeyLoading) -> &'static str {
    match loading {
        KeyLoading::Auto => {
            "through the kernel keyring (hex in a wiped ioctl buffer only if the kernel has no keyring support for dm-crypt)"
        }
        KeyLoading::Keyring => "through the kernel keyring",
        KeyLoading::Hex => "as hex in a wiped ioctl buffer",
    }
}

/// A node in one line: an md array's level, members and size, a dm node's table. `device`
/// names the devices an md array is built on. Dry runs and `status` show nodes with it.
pub fn describe_node(node: &Node, device: impl Fn(DeviceRef) -> String) -> String {
    let NodeKind::Md {
        level,
        chunk_bytes,
        members,
    } = &node.kind
    else {
        let table = node.table.as_deref().unwrap_or("(no table)");
        return format!("{}: {table}", node.name);
    };
    let chunk = if matches!(level, super::MdLevel::Raid0 | super::MdLevel::Raid10) {
        format!(" chunk {} KiB", chunk_bytes >> 10)
    } else {
        String::new()
    };
    let over: Vec<String> = members.iter().map(|d| device(*d)).collect();
    format!(
        "{}: md {}{chunk} over {}, {}, non-persistent (no superblock)",
        node.name,
        md_level_name(*level),
        over.join(" "),
        bytes_and_human(node.size_bytes)
    )
}

/// A size in binary units: `512 MiB`, `1.5 GiB`, `1 TiB` (one decimal when not whole).
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
    let mut unit = 0;
    while unit + 1 < UNITS.len() && bytes >> (10 * (unit + 1)) > 0 {
        unit += 1;
    }
    let whole = bytes >> (10 * unit);
    let tenths = ((bytes - (whole << (10 * unit))) * 10 + (1 << (10 * unit)) / 2) >> (10 * unit);
    match tenths {
        0 => format!("{whole} {}", UNITS[unit]),
        10 => format!("{} {}", whole + 1, UNITS[unit]),
        t => format!("{whole}.{t} {}", UNITS[unit]),
    }
}

/// `536870912 bytes (512 MiB)`: exact, and readable.
pub fn bytes_and_human(bytes: u64) -> String {
    if bytes < 1024 {
        format!("{bytes} bytes")
    } else {
        format!("{bytes} bytes ({})", human_bytes(bytes))
    }
}

/// The keys: how many, of which size, the most one encrypts (and `scope`, what limited
/// it), then one line each with the range it covers.
pub fn keys_section(
    out: &mut String,
    indent: &str,
    keys: &[PlannedKey],
    largest_key_bytes: u64,
    scope: &str,
) {
    let bits = keys.first().map_or(0, |k| k.bits);
    let _ = writeln!(
        out,
        "{indent}keys: {} {bits}-bit key(s), at most {} under one key{scope}",
        keys.len(),
        bytes_and_human(largest_key_bytes)
    );
    for key in keys {
        let _ = writeln!(
            out,
            "{indent}  {}-bit for {}, sectors {}..{}",
            key.bits,
            key.mapping,
            key.covers.start,
            key.covers.start + key.covers.length
        );
    }
}

/// The steps of a provision run, in order.
pub fn steps(plan: &Plan) -> Vec<String> {
    let key_count = plan.keys.len();
    let mut steps = Vec::new();
    for (index, node) in plan.nodes.iter().enumerate() {
        steps.push(match &node.kind {
            NodeKind::Md { level, .. } => format!(
                "build the non-persistent md {} array {} (no superblock written)",
                md_level_name(*level),
                node.name
            ),
            NodeKind::Striped { .. } => format!("create the dm striped mapping {}", node.name),
            NodeKind::Linear { .. } => format!(
                "create the dm linear mapping {} over {}",
                node.name,
                plan.nodes[index - 1].name
            ),
            NodeKind::Crypt { .. } => format!(
                "load the dm-crypt mapping {} with its key {}, then verify read-only: decrypt raw sectors (first, last, random) in userspace and compare with the mapping",
                node.name,
                key_loading_words(plan.crypt.key_loading)
            ),
        });
    }
    steps.insert(
        0,
        format!(
            "generate {key_count} random {}-bit key(s) in locked memory",
            plan.crypt.format.key_bits
        ),
    );
    if let Some(escrow) = &plan.escrow {
        steps.push(format!(
            "escrow the key(s) with RSA-OAEP-SHA-256 to {} into {} (mode 0400; an earlier volume's file there is first moved to {})",
            escrow.public_key.display(),
            escrow.file.display(),
            crate::names::previous_escrow_file(&escrow.file).display()
        ));
    }
    if let Some(pcr) = plan.measure_pcr {
        steps.push(format!(
            "measure each crypt mapping and its keys into TPM PCR {pcr} and log it to {}",
            tosskey_tpm::DEFAULT_LOG
        ));
    }
    steps.push("wipe the key(s) from tosskey's memory: only the kernel holds them".into());
    if let Some(ext4) = &plan.mkfs {
        steps.push(format!(
            "format {} as ext4 ({} bytes per inode, {})",
            plan.volume().path.display(),
            ext4.inode_ratio,
            if ext4.journal {
                "with journal"
            } else {
                "no journal"
            }
        ));
    }
    if let Some(dir) = &plan.mount {
        steps.push(format!(
            "mount it at {} (noatime,nodev,nosuid)",
            dir.display()
        ));
    }
    for bind in &plan.binds {
        steps.push(format!(
            "bind {}: create it if missing, copy its contents to {} and bind-mount that over it",
            bind.dir.display(),
            bind.source.display()
        ));
    }
    steps
}

/// `--dry-run` for humans.
pub fn text(plan: &Plan) -> String {
    let mut out = String::new();
    let _ = writeln!(out, "tosskey plan for {}", plan.volume().path.display());
    let _ = writeln!(out, "members:");
    for m in &plan.members {
        let _ = writeln!(
            out,
            "  {} ({}, {} bytes{})",
            m.path.display(),
            m.dev,
            m.size_bytes,
            m.identity
                .as_deref()
                .map(|i| format!(", {i}"))
                .unwrap_or_default()
        );
    }
    let _ = writeln!(out, "nodes, bottom first (tables with the key elided):");
    for node in &plan.nodes {
        let _ = writeln!(
            out,
            "  {}",
            describe_node(node, |d| plan.device_path(d).display().to_string())
        );
    }
    keys_section(
        &mut out,
        "",
        &plan.keys,
        plan.key_scope.largest_key_bytes,
        &format!(
            " (key scope: {})",
            plan.key_scope
                .limit_bytes
                .map_or("none".to_owned(), |b| format!("{b} bytes"))
        ),
    );
    let _ = writeln!(
        out,
        "kernel facilities: {}",
        plan.facilities
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", ")
    );
    let _ = writeln!(out, "steps:");
    for (i, step) in steps(plan).iter().enumerate() {
        let _ = writeln!(out, "  {}. {step}", i + 1);
    }
    out
}

/// What a run found in the kernel or brought up (or, for `--dry-run`, would), one line a
/// facility: `  md: would load md_mod`.
pub fn kernel_facilities(outcomes: &[tosskey_kmod::Outcome]) -> String {
    use tosskey_kmod::State;
    let mut out = String::from("kernel facilities, brought up in this order:\n");
    for outcome in outcomes {
        let modules = outcome.modules.join(", ");
        let line = match outcome.state {
            State::Present => "present".to_owned(),
            State::Requested | State::Loaded if modules.is_empty() => "brought up".to_owned(),
            State::Requested => format!("requested from the kernel, which loaded {modules}"),
            State::Loaded => format!("loaded {modules}"),
            State::WouldRequest if modules.is_empty() => {
                "would be requested from the kernel (not in the module tree)".to_owned()
            }
            State::WouldRequest => {
                format!("would be requested from the kernel, else load {modules}")
            }
            State::WouldLoad => format!("would load {modules}"),
            State::Missing => "MISSING: neither present nor in the module tree".to_owned(),
        };
        let _ = writeln!(out, "  {}: {line}", outcome.facility);
    }
    out
}

impl std::fmt::Display for super::Facility {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            super::Facility::DmTarget(name) => write!(f, "dm target {name}"),
            super::Facility::MdPersonality(name) => write!(f, "md personality {name}"),
            super::Facility::Cipher(name) => write!(f, "cipher {name}"),
            super::Facility::LogonKeys => f.write_str("logon keys"),
            super::Facility::Filesystem(name) => write!(f, "filesystem {name}"),
        }
    }
}

/// The commands that rebuild the plan with stock tools, bottom first, given the raw key
/// file of each key. Nothing they run writes to a member. Every name, path and table in
/// them is shell-quoted ([`crate::plan::shell::quote`]): they are pasted into a root shell. No
/// value can be read as an option: dmsetup and cryptsetup get `--` before their names and
/// devices; mdadm stops at `--` without reading the devices after it, so its devices must
/// be absolute paths (they are: `/dev/…` from the escrow file's checked paths and the
/// nodes), which is checked here.
pub fn stock_commands(plan: &Plan, key_files: &[PathBuf]) -> Result<Vec<String>, Error> {
    let mut commands = Vec::new();
    for (index, node) in plan.nodes.iter().enumerate() {
        let device = |d: DeviceRef| stock_device(plan, d);
        commands.push(match &node.kind {
            NodeKind::Md {
                level: super::MdLevel::Raid10,
                members,
                ..
            } => raid10_commands(
                plan,
                node,
                &members.iter().map(|d| device(*d)).collect::<Vec<_>>(),
            )?,
            NodeKind::Md {
                level,
                chunk_bytes,
                members,
            } => {
                let mut devices = vec![stock_device(plan, DeviceRef::Node(index))];
                devices.extend(members.iter().map(|d| device(*d)));
                if let Some(relative) = devices.iter().find(|d| !d.starts_with('/')) {
                    return Err(Error::Refused(Refusal::MdadmRelativeDevice {
                        device: relative.clone(),
                    }));
                }
                format!(
                    "mdadm --build {} --level={}{} --raid-devices={} {}   # members in this order, nothing written to them",
                    quote(&devices[0])?,
                    md_level_name(*level),
                    match level {
                        super::MdLevel::Raid0 => format!(" --chunk={}K", chunk_bytes >> 10),
                        // Like tosskey's array: the mirrors are taken as in sync, no resync writes.
                        super::MdLevel::Raid1 => " --assume-clean".to_owned(),
                        // tosskey gives linear no chunk (the kernel would round members to it).
                        super::MdLevel::Linear => String::new(),
                        super::MdLevel::Raid10 => unreachable!("raid10 is rebuilt with dmsetup"),
                    },
                    members.len(),
                    shell::join(&devices[1..])?
                )
            }
            NodeKind::Striped { .. } | NodeKind::Linear { .. } => format!(
                "dmsetup create --table {} -- {}",
                quote(&table(plan, index, device)?.expect("dm nodes have a table"))?,
                quote(&node.name)?
            ),
            NodeKind::Crypt { device: under, segments } => {
                let Some(DmTarget::Crypt(table)) = plan.dm_target(index, |_| DevId::new(0, 0))?
                else {
                    unreachable!("a crypt node renders a crypt target")
                };
                if let [segment] = segments.as_slice() {
                    // One key: the cryptsetup plain command, as before key scope.
                    let key = segment.key;
                    let args = table.segments()[0].target.cryptsetup_open_args(
                        usize::try_from(plan.keys[key].bits / 8).expect("key bytes fit usize"),
                        &key_files[key].display().to_string(),
                        &device(*under),
                        &node.name,
                    );
                    format!("cryptsetup {}", shell::join(&args)?)
                } else {
                    multi_key_command(plan, index, segments, key_files)?
                }
            }
        });
    }
    Ok(commands)
}

/// Where the printed recovery steps mount the volume.
pub const RECOVERY_MOUNT: &str = "/mnt/recovered";

/// The headers of the printed recovery steps, in order; each is a shell comment line
/// followed by its commands, so the whole output is a script (tests split it at them).
pub const RECOVERY_MEMBERS: &str = "# members, in recorded order (kernel names can change between boots: check each against its stable name before running anything below)";
pub const RECOVERY_OPEN: &str =
    "# 1. open the volume, bottom first (nothing is written to the members):";
pub const RECOVERY_FORGET_KEYS: &str =
    "# 2. the kernel holds the key now: delete the raw key file(s)";
pub const RECOVERY_MOUNT_STEP: &str = "# 3. mount it:";
pub const RECOVERY_TEARDOWN: &str = "# 4. when done, take it down, top first:";

/// The whole way back without tosskey, as a shell script: which disk is which, the stock
/// commands that open the volume ([`stock_commands`]), deleting the key file(s), the mount,
/// and the teardown (`umount`, `cryptsetup close`/`dmsetup remove`, `mdadm --stop`).
pub fn recovery_steps(plan: &Plan, key_files: &[PathBuf]) -> Result<Vec<String>, Error> {
    let mut lines = vec![RECOVERY_MEMBERS.to_owned()];
    for member in &plan.members {
        // Comment lines: the escrow file's parser refuses control characters in paths and
        // identities, so no newline can end the comment.
        let path = member.path.display().to_string();
        lines.push(match member.identity.as_deref() {
            Some(id) if id.starts_with("/dev/disk/by-id/") => {
                format!("#   {path}: {id} (`readlink -f {id}` gives its kernel name now)")
            }
            Some(id) if id != path => format!(
                "#   {path}: serial/WWN {id} (`lsblk -o NAME,SERIAL,WWN` gives its kernel name now)"
            ),
            _ => format!("#   {path}: no stable name recorded"),
        });
    }
    lines.push(RECOVERY_OPEN.to_owned());
    lines.extend(stock_commands(plan, key_files)?);
    lines.push(RECOVERY_FORGET_KEYS.to_owned());
    lines.push(format!(
        "rm -f -- {}",
        shell::join(
            &key_files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
        )?
    ));
    let volume = quote(&plan.volume().path.display().to_string())?.into_owned();
    lines.push(RECOVERY_MOUNT_STEP.to_owned());
    lines.push(format!(
        "mkdir -p -- {RECOVERY_MOUNT} && mount -t ext4 -o noatime,nodev,nosuid -- {volume} {RECOVERY_MOUNT}"
    ));
    lines.push(RECOVERY_TEARDOWN.to_owned());
    lines.push(format!("umount -- {RECOVERY_MOUNT}"));
    for (index, node) in plan.nodes.iter().enumerate().rev() {
        lines.push(match &node.kind {
            NodeKind::Md { .. } => format!(
                "mdadm --stop {}",
                quote(&stock_device(plan, DeviceRef::Node(index)))?
            ),
            NodeKind::Crypt { segments, .. } if segments.len() == 1 => {
                format!("cryptsetup close -- {}", quote(&node.name)?)
            }
            _ => format!("dmsetup remove -- {}", quote(&node.name)?),
        });
    }
    Ok(lines)
}

/// The command that rebuilds crypt node `index` of several keys with dmsetup: cryptsetup
/// plain takes one key per device, so the table is given whole, one line per segment, each
/// line's key read from its key file as hex. The lines go to dmsetup's standard input
/// (`--table` takes one line only) through the shell's `printf` builtin, so no key appears in
/// a process's arguments. Each line is one shell word: the quoted text before the key, the
/// key's `"$(od … | tr …)"` (its file name quoted inside, after `--`) and the quoted text
/// after it.
fn multi_key_command(
    plan: &Plan,
    index: usize,
    segments: &[super::CryptSegment],
    key_files: &[PathBuf],
) -> Result<String, Error> {
    let node = &plan.nodes[index];
    let table = table(plan, index, |d| stock_device(plan, d))?.expect("crypt nodes have a table");
    let lines = table
        .split("; ")
        .zip(segments)
        .map(|(line, segment)| {
            let (before_key, after_key) = tosskey_dm::split_crypt_line_at_key(line)?;
            Ok(format!(
                "{}\"$(od -An -v -tx1 -- {} | tr -d ' \\n')\"{}",
                quote(&before_key)?,
                quote(&key_files[segment.key].display().to_string())?,
                quote(&after_key)?,
            ))
        })
        .collect::<Result<Vec<String>, Error>>()?;
    Ok(format!(
        "printf '%s\\n' {} | dmsetup create -- {}   # {} keys, one crypt target each",
        lines.join(" "),
        quote(&node.name)?,
        segments.len()
    ))
}

#[cfg(test)]
mod tests {
    use tosskey_kmod::{Outcome, State};

    #[test]
    fn the_facility_lines_say_what_was_or_would_be_done() {
        let text = super::kernel_facilities(&[
            Outcome {
                facility: "md".into(),
                state: State::WouldLoad,
                modules: vec!["md_mod".into()],
            },
            Outcome {
                facility: "dm-crypt target".into(),
                state: State::Present,
                modules: vec![],
            },
        ]);
        assert_eq!(
            text,
            "kernel facilities, brought up in this order:\n  md: would load md_mod\n  dm-crypt target: present\n"
        );
    }
}
