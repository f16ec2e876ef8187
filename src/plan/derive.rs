//! Derive: a checked config (provision) or an escrow file (recover, escrow decrypt) becomes a
//! [`Plan`]. Every sizing rule (assembly, encryption sectors) lives here and only here; the
//! names come from [`crate::names`].

use std::path::PathBuf;
use tosskey_sysutil::SECTOR_SIZE;

use tosskey_crypto::escrow::{EscrowMetadata, KeySegment};
use tosskey_dm::{Bytes, CryptTable, CryptTarget, DevId, DmName, Sectors};

use crate::error::{Error, Refusal};
use crate::host::safety::{CheckedDevice, MemberKind};
use crate::names::{self, Role};
use crate::plan::request::{AssemblyChoice, ProvisionConfig};

use super::render;
use super::{
    assembled_bytes, crypt_length_sectors, md_level_name, Assembly, CryptSegment, CryptSettings,
    DeviceRef, EscrowCrypt, Facility, KeyLoading, KeyScope, Layout, MdLevel, Node, NodeKind, Plan,
    PlannedBind, PlannedKey, PlannedMember, SectorRange, BYPASS_WORKQUEUES,
};

/// The mirror level that `count` members are too few for, if they are (a mirror of one
/// disk mirrors nothing). Config calls it a usage error for devices named on the command
/// line; derive a refusal for discovered ones.
pub fn member_count_problem(choice: AssemblyChoice, count: usize) -> Option<&'static str> {
    match choice {
        AssemblyChoice::Md(level @ (MdLevel::Raid1 | MdLevel::Raid10)) if count < 2 => {
            Some(md_level_name(level))
        }
        _ => None,
    }
}

/// The plan for `provision`: the config applied to the checked members.
pub fn from_config(
    cfg: &ProvisionConfig,
    checked: &[CheckedDevice],
    boot_id: &str,
) -> Result<Plan, Error> {
    let members = checked
        .iter()
        .map(|c| planned_member(c, None))
        .collect::<Result<Vec<_>, _>>()?;
    for_members(cfg, members, boot_id)
}

fn for_members(
    cfg: &ProvisionConfig,
    members: Vec<PlannedMember>,
    boot_id: &str,
) -> Result<Plan, Error> {
    if let Some(level) = member_count_problem(cfg.assembly, members.len()) {
        return Err(Error::Refused(Refusal::TooFewMembers {
            level,
            count: members.len(),
        }));
    }
    let assembly = cfg.assembly_for(members.len());
    refuse_wasteful_sizes(assembly, &members)?;
    let largest_block = members
        .iter()
        .map(|m| m.logical_block_size)
        .max()
        .unwrap_or(512);
    let sector_size = match cfg.sector_size {
        Some(size) if size < largest_block => {
            return Err(Error::Refused(Refusal::SectorBelowBlock {
                size,
                block: largest_block,
            }))
        }
        Some(size) => size,
        None if largest_block <= 4096 => 4096,
        None => {
            return Err(Error::Refused(Refusal::BlockOverSectorMax {
                block: largest_block,
            }))
        }
    };
    // One member has nothing to spread over: per-disk is the shared layout then.
    let layout = if members.len() > 1 {
        cfg.layout
    } else {
        Layout::Shared
    };
    let crypt = CryptSettings {
        format: EscrowCrypt {
            cipher: cfg.cipher,
            key_bits: cfg.key_size.bits(),
            sector_size,
            iv_large_sectors: false,
            iv_offset: 0,
            data_offset: 0,
            allow_discards: cfg.allow_discards,
        },
        allow_discards: cfg.allow_discards,
        no_read_workqueue: cfg.no_read_workqueue,
        no_write_workqueue: cfg.no_write_workqueue,
        key_loading: cfg.key_loading,
    };
    assemble_plan(Shape {
        name: &cfg.name,
        boot_id,
        members,
        assembly,
        layout,
        crypt,
        segmentation: Segmentation::Scope(cfg.key_scope),
        mkfs: cfg.mkfs.clone(),
        mount: cfg.mount.clone(),
        binds: planned_binds(cfg),
        escrow: cfg.escrow.clone(),
    })
}

/// Where each `--bind` directory lives on the volume mounted at `--mount`.
fn planned_binds(cfg: &ProvisionConfig) -> Vec<PlannedBind> {
    let Some(mount) = &cfg.mount else {
        return Vec::new();
    };
    cfg.binds
        .iter()
        .map(|dir| PlannedBind {
            dir: dir.clone(),
            source: names::bind_source(mount, dir),
        })
        .collect()
}

/// The plan an escrow file records, over `members` (found again by identity for recover,
/// the recorded paths for escrow decrypt). Discards are as the file records; the other table
/// options are tosskey's defaults.
pub fn from_escrow(
    meta: &EscrowMetadata,
    recorded_keys: &[(String, Option<KeySegment>)],
    members: Vec<PlannedMember>,
    boot_id: &str,
    key_loading: KeyLoading,
    mount: Option<PathBuf>,
) -> Result<Plan, Error> {
    let name = DmName::new(&meta.name).map_err(anyhow::Error::from)?;
    let crypt = CryptSettings {
        format: meta.crypt.clone(),
        allow_discards: meta.crypt.allow_discards,
        no_read_workqueue: BYPASS_WORKQUEUES,
        no_write_workqueue: BYPASS_WORKQUEUES,
        key_loading,
    };
    assemble_plan(Shape {
        name: &name,
        boot_id,
        members,
        assembly: meta.assembly,
        layout: meta.layout,
        crypt,
        segmentation: Segmentation::Recorded {
            keys: recorded_keys,
            limit: meta.key_scope_bytes,
        },
        mkfs: None,
        mount,
        binds: Vec::new(),
        escrow: None,
    })
}

/// The members recorded in an escrow file, at the paths they had when it was made (for the
/// stock commands of `escrow decrypt`; their device numbers are unknown).
pub fn recorded_members(meta: &EscrowMetadata) -> Vec<PlannedMember> {
    meta.members
        .iter()
        .map(|m| PlannedMember {
            path: m.path_at_creation.clone(),
            dev: "?".to_owned(),
            major: 0,
            minor: 0,
            size_bytes: m.size_bytes,
            logical_block_size: meta.crypt.sector_size,
            identity: Some(m.identity.clone()),
        })
        .collect()
}

/// How a crypt node is cut into key segments.
#[derive(Clone, Copy)]
enum Segmentation<'a> {
    /// Provision: segments of at most this many bytes (`None`: one key per node).
    Scope(Option<u64>),
    /// Recover: the keys an escrow file records, in order, each with its mapping and (format
    /// 2) its segment; a mapping without segments has one key. `limit`: the key scope the
    /// file records (reported as the plan's, like provision's).
    Recorded {
        keys: &'a [(String, Option<KeySegment>)],
        limit: Option<u64>,
    },
}

/// Everything that decides the nodes.
struct Shape<'a> {
    name: &'a DmName,
    boot_id: &'a str,
    members: Vec<PlannedMember>,
    assembly: Assembly,
    layout: Layout,
    crypt: CryptSettings,
    segmentation: Segmentation<'a>,
    mkfs: Option<super::Ext4Settings>,
    mount: Option<PathBuf>,
    binds: Vec<PlannedBind>,
    escrow: Option<super::EscrowSettings>,
}

/// Nodes and keys accumulate here, bottom first.
struct Builder<'a> {
    name: &'a DmName,
    boot_id: &'a str,
    members: &'a [PlannedMember],
    crypt: &'a CryptSettings,
    segmentation: Segmentation<'a>,
    /// Segment boundaries are multiples of this many sectors (the stripe chunk under a
    /// shared crypt node, else 0: only the crypt sector).
    chunk_sectors: u64,
    nodes: Vec<Node>,
    keys: Vec<PlannedKey>,
}

impl Builder<'_> {
    fn bytes(&self, device: DeviceRef) -> u64 {
        match device {
            DeviceRef::Member(i) => self.members[i].size_bytes,
            DeviceRef::Node(i) => self.nodes[i].size_bytes,
        }
    }

    fn push(&mut self, node: Node) -> DeviceRef {
        self.nodes.push(node);
        DeviceRef::Node(self.nodes.len() - 1)
    }

    fn dm_node(&self, role: Role, size_bytes: u64, kind: NodeKind) -> Result<Node, Error> {
        let name = names::dm_name(self.name, role);
        let uuid = names::dm_uuid(self.boot_id, self.name.as_str(), role)
            .map_err(anyhow::Error::from)?
            .to_string();
        let dm_name = DmName::new(&name).map_err(anyhow::Error::from)?;
        Ok(Node {
            path: tosskey_dm::DmControl::node_path(&dm_name),
            name,
            uuid: Some(uuid),
            size_bytes,
            kind,
            table: None,
        })
    }

    /// A crypt node over `device`, one key per segment (see [`Segmentation`]).
    fn crypt(&mut self, role: Role, device: DeviceRef) -> Result<DeviceRef, Error> {
        let name = names::dm_name(self.name, role);
        let data_bytes = self
            .bytes(device)
            .saturating_sub(self.crypt.format.data_offset * SECTOR_SIZE);
        let length = crypt_length_sectors(data_bytes, self.crypt.format.sector_size);
        if length == 0 {
            return Err(Error::Refused(Refusal::TooSmallForSector {
                sector_size: self.crypt.format.sector_size,
            }));
        }
        let lengths = self.segment_lengths(&name, length)?;
        let mut segments = Vec::with_capacity(lengths.len());
        let mut start = 0;
        for segment_length in lengths {
            let range = SectorRange {
                start,
                length: segment_length,
            };
            self.keys.push(PlannedKey {
                mapping: name.clone(),
                bits: self.crypt.format.key_bits,
                covers: range,
            });
            segments.push(CryptSegment {
                key: self.keys.len() - 1,
                range,
            });
            start += segment_length;
        }
        let node = self.dm_node(
            role,
            length * SECTOR_SIZE,
            NodeKind::Crypt { device, segments },
        )?;
        Ok(self.push(node))
    }

    /// The segment lengths of crypt node `name` of `length` sectors: cut by the key scope
    /// (tosskey-dm's one splitting rule), or as the escrow file recorded them.
    fn segment_lengths(&self, name: &str, length: u64) -> Result<Vec<u64>, Error> {
        // Only the lengths matter here: the device is filled in when the table is built.
        let whole = CryptTarget::new(
            &self.crypt.format.cipher.to_string(),
            DevId::new(0, 0),
            Sectors(length),
        )
        .map_err(anyhow::Error::from)?
        .with_options(self.crypt.options());
        match self.segmentation {
            Segmentation::Scope(scope) => {
                let table =
                    CryptTable::split(&whole, scope.map(Bytes), Sectors(self.chunk_sectors))
                        .map_err(|e| {
                            Error::Refused(Refusal::KeyScopeSplit {
                                mapping: name.to_string(),
                                reason: e.to_string(),
                            })
                        })?;
                Ok(table
                    .segments()
                    .iter()
                    .map(|s| s.target.length().0)
                    .collect())
            }
            Segmentation::Recorded { keys, .. } => {
                let recorded: Vec<Option<KeySegment>> = keys
                    .iter()
                    .filter(|(mapping, _)| mapping == name)
                    .map(|(_, segment)| *segment)
                    .collect();
                let lengths = match recorded.as_slice() {
                    [None] => vec![length],
                    _ => {
                        let mut expected_start = 0;
                        let mut lengths = Vec::with_capacity(recorded.len());
                        for segment in &recorded {
                            match segment {
                                Some(s) if s.start_sector == expected_start => {
                                    lengths.push(s.sectors);
                                    expected_start += s.sectors;
                                }
                                _ => {
                                    return Err(Error::Refused(Refusal::EscrowKeysOutOfOrder {
                                        mapping: name.to_string(),
                                    }))
                                }
                            }
                        }
                        lengths
                    }
                };
                // Checks that the segments add up to the node and align as dm-crypt wants.
                CryptTable::from_lengths(
                    &whole,
                    &lengths.iter().copied().map(Sectors).collect::<Vec<_>>(),
                )
                .map_err(|e| {
                    Error::Refused(Refusal::EscrowSegmentsDoNotFit {
                        mapping: name.to_string(),
                        reason: e.to_string(),
                    })
                })?;
                Ok(lengths)
            }
        }
    }

    /// The md array or dm stripe over `devices` (`shared`: it sits under the one crypt
    /// mapping, else it is the volume). A single device is not assembled.
    fn assemble(
        &mut self,
        assembly: Assembly,
        devices: Vec<DeviceRef>,
        shared: bool,
    ) -> Result<DeviceRef, Error> {
        let sizes: Vec<u64> = devices.iter().map(|d| self.bytes(*d)).collect();
        let size_bytes = assembled_bytes(assembly, &sizes);
        match assembly {
            Assembly::Single => Ok(devices[0]),
            Assembly::Md { level, chunk_bytes } => {
                let kernel_name = names::md_array_name(self.name);
                let node = Node {
                    path: PathBuf::from("/dev").join(&kernel_name),
                    name: kernel_name,
                    uuid: None,
                    size_bytes,
                    kind: NodeKind::Md {
                        level,
                        chunk_bytes,
                        members: devices,
                    },
                    table: None,
                };
                let array = self.push(node);
                if shared {
                    return Ok(array);
                }
                // The volume is always /dev/mapper/<name>: a linear mapping over the array.
                let top =
                    self.dm_node(Role::Volume, size_bytes, NodeKind::Linear { device: array })?;
                Ok(self.push(top))
            }
            Assembly::DmStripe { chunk_bytes } => {
                let role = if shared { Role::Stripe } else { Role::Volume };
                let node = self.dm_node(
                    role,
                    size_bytes,
                    NodeKind::Striped {
                        chunk_bytes,
                        devices,
                    },
                )?;
                Ok(self.push(node))
            }
        }
    }
}

fn assemble_plan(shape: Shape<'_>) -> Result<Plan, Error> {
    let mut builder = Builder {
        name: shape.name,
        boot_id: shape.boot_id,
        members: &shape.members,
        crypt: &shape.crypt,
        segmentation: shape.segmentation,
        chunk_sectors: match (shape.layout, shape.assembly) {
            (
                Layout::Shared,
                Assembly::Md {
                    level: MdLevel::Raid0,
                    chunk_bytes,
                }
                | Assembly::DmStripe { chunk_bytes },
            ) => chunk_bytes / SECTOR_SIZE,
            _ => 0,
        },
        nodes: Vec::new(),
        keys: Vec::new(),
    };
    let member_refs: Vec<DeviceRef> = (0..shape.members.len()).map(DeviceRef::Member).collect();
    match shape.layout {
        Layout::Shared => {
            let under = builder.assemble(shape.assembly, member_refs, true)?;
            builder.crypt(Role::Volume, under)?;
        }
        Layout::PerDisk => {
            let mut crypt = Vec::new();
            for (i, member) in member_refs.into_iter().enumerate() {
                crypt.push(builder.crypt(Role::Member(i), member)?);
            }
            builder.assemble(shape.assembly, crypt, false)?;
        }
    }
    let Builder { nodes, keys, .. } = builder;
    let key_scope = KeyScope {
        limit_bytes: match shape.segmentation {
            Segmentation::Scope(limit) | Segmentation::Recorded { limit, .. } => limit,
        },
        keys: keys.len(),
        largest_key_bytes: keys.iter().map(|k| k.covers.length).max().unwrap_or(0) * SECTOR_SIZE,
    };
    let mut plan = Plan {
        name: shape.name.to_string(),
        volume_bytes: nodes.last().map_or(0, |n| n.size_bytes),
        facilities: facilities(&nodes, &shape.crypt, shape.mount.is_some()),
        members: shape.members,
        assembly: shape.assembly,
        layout: shape.layout,
        crypt: shape.crypt,
        keys,
        key_scope,
        nodes,
        mkfs: shape.mkfs,
        mount: shape.mount,
        binds: shape.binds,
        escrow: shape.escrow,
        measure_pcr: None,
    };
    for index in 0..plan.nodes.len() {
        plan.nodes[index].table = render::table(&plan, index, |d| render::kernel_device(&plan, d))?;
    }
    Ok(plan)
}

/// What the kernel must provide: target types, md personalities, the cipher, logon keys,
/// the filesystem when mounting (formatting is tosskey's own code and needs none).
fn facilities(nodes: &[Node], crypt: &CryptSettings, mounts: bool) -> Vec<Facility> {
    let mut needed: Vec<Facility> = nodes
        .iter()
        .flat_map(|node| match &node.kind {
            NodeKind::Md { level, .. } => vec![Facility::MdPersonality(md_level_name(*level))],
            NodeKind::Striped { .. } => vec![Facility::DmTarget("striped")],
            NodeKind::Linear { .. } => vec![Facility::DmTarget("linear")],
            NodeKind::Crypt { .. } => {
                let mut crypt_needs = vec![
                    Facility::DmTarget("crypt"),
                    Facility::Cipher(crypt.format.cipher.kernel_skcipher_name()),
                ];
                if crypt.key_loading != KeyLoading::Hex {
                    crypt_needs.push(Facility::LogonKeys);
                }
                crypt_needs
            }
        })
        .collect();
    if mounts {
        needed.push(Facility::Filesystem("ext4"));
    }
    needed.sort();
    needed.dedup();
    needed
}

/// Striping and mirroring use every member only up to the smallest one's size. Members that
/// differ by more than half are almost certainly a wrong device, and would waste most of the
/// big ones: refuse (linear concatenation has no such problem).
fn refuse_wasteful_sizes(assembly: Assembly, members: &[PlannedMember]) -> Result<(), Error> {
    let striped = matches!(
        assembly,
        Assembly::DmStripe { .. }
            | Assembly::Md {
                level: MdLevel::Raid0 | MdLevel::Raid1 | MdLevel::Raid10,
                ..
            }
    );
    let smallest = members.iter().min_by_key(|m| m.size_bytes);
    let largest = members.iter().max_by_key(|m| m.size_bytes);
    if let (true, Some(small), Some(large)) = (striped, smallest, largest) {
        if small.size_bytes.saturating_mul(2) < large.size_bytes {
            return Err(Error::Refused(Refusal::UnevenMembers {
                small: small.path.clone(),
                small_bytes: small.size_bytes,
                large: large.path.clone(),
                large_bytes: large.size_bytes,
            }));
        }
    }
    Ok(())
}

/// A checked member as the plan records it. `identity`: the recorded one (recovery), else
/// the device's serial, WWN or by-id link.
pub fn planned_member(
    checked: &CheckedDevice,
    identity: Option<String>,
) -> Result<PlannedMember, Error> {
    let MemberKind::Block(device) = &checked.kind else {
        return Err(Error::Refused(Refusal::NotBlockDevice {
            path: checked.path.clone(),
        }));
    };
    let identity = identity
        .or_else(|| device.serial.clone())
        .or_else(|| device.wwid.clone())
        .or_else(|| {
            device
                .by_id
                .first()
                .map(|id| format!("/dev/disk/by-id/{id}"))
        });
    Ok(PlannedMember {
        path: checked.path.clone(),
        dev: device.dev.to_string(),
        major: device.dev.major,
        minor: device.dev.minor,
        size_bytes: checked.size_bytes,
        logical_block_size: checked.logical_block_size,
        identity,
    })
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use clap::Parser as _;

    const BOOT: &str = "0123456789abcdef0123456789abcdef";

    fn plan(args: &[&str], disks: usize) -> Result<Plan, Error> {
        plan_sized(args, disks, 256 << 20)
    }

    pub(crate) fn plan_sized(args: &[&str], disks: usize, size_bytes: u64) -> Result<Plan, Error> {
        let mut argv = vec!["tosskey", "provision", "--name", "v"];
        let paths: Vec<String> = (0..disks)
            .map(|i| format!("/dev/vd{}", char::from(b'b' + u8::try_from(i).unwrap())))
            .collect();
        argv.extend(paths.iter().map(String::as_str));
        argv.extend_from_slice(args);
        let crate::cli::Command::Provision(args) =
            crate::cli::Cli::try_parse_from(argv).unwrap().command
        else {
            panic!("expected provision")
        };
        let cfg = ProvisionConfig::from_args(args).unwrap();
        let members = paths
            .iter()
            .enumerate()
            .map(|(i, path)| PlannedMember {
                path: PathBuf::from(path),
                dev: format!("254:{}", 16 * (i + 1)),
                major: 254,
                minor: u32::try_from(16 * (i + 1)).unwrap(),
                size_bytes,
                logical_block_size: 512,
                identity: None,
            })
            .collect();
        for_members(&cfg, members, BOOT)
    }

    fn names(plan: &Plan) -> Vec<&str> {
        plan.nodes.iter().map(|n| n.name.as_str()).collect()
    }

    const OPTIONS: &str = "3 no_read_workqueue no_write_workqueue sector_size:4096";

    const TIB: u64 = 1 << 40;

    #[test]
    fn eight_disks_of_seven_and_a_half_tib_shared_get_sixty_one_tib_keys() {
        let plan = plan_sized(&[], 8, 15 * TIB / 2).unwrap();
        assert_eq!(plan.keys.len(), 60);
        assert_eq!(plan.key_scope.keys, 60);
        assert_eq!(plan.key_scope.largest_key_bytes, TIB);
        assert_eq!(plan.key_scope.limit_bytes, Some(TIB));
        let table = plan.volume().table.as_deref().unwrap();
        let lines: Vec<&str> = table.split("; ").collect();
        assert_eq!(lines.len(), 60);
        // Segment 1 starts at 1 TiB: offset and IV offset continue the numbering, and its
        // keyring key is its own.
        let t = TIB / 512;
        assert!(
            lines[1].starts_with(&format!(
                "{t} {t} crypt twofish-xts-plain64 :64:logon:tosskey:v#1 {t} /dev/md_tk_v {t} "
            )),
            "{}",
            lines[1]
        );
        // Ranges tile the volume.
        let mut next = 0;
        for key in &plan.keys {
            assert_eq!(key.covers.start, next);
            next += key.covers.length;
        }
        assert_eq!(next * SECTOR_SIZE, plan.volume_bytes);

        // escrow decrypt: several keys cannot go through cryptsetup plain; dmsetup gets one
        // line per segment on its standard input, each key read from its own file.
        let files: Vec<PathBuf> = (0..60).map(|i| PathBuf::from(format!("/k.{i}"))).collect();
        let commands = render::stock_commands(&plan, &files).unwrap();
        let crypt = commands.last().unwrap();
        assert!(crypt.starts_with("printf '%s\\n' '0 "), "{crypt}");
        assert!(crypt.contains("| dmsetup create -- v "), "{crypt}");
        assert_eq!(crypt.matches("$(od -An -v -tx1 -- /k.").count(), 60);
        assert!(crypt.contains(&format!(
            "'{t} {t} crypt twofish-xts-plain64 '\"$(od -An -v -tx1 -- /k.1 | tr -d ' \\n')\"' {t} /dev/md/v {t} "
        )), "{crypt}");
    }

    #[test]
    fn per_disk_splits_each_disk_and_none_keeps_one_key_per_mapping() {
        let plan = plan_sized(&["--layout", "per-disk"], 8, 15 * TIB / 2).unwrap();
        assert_eq!(plan.keys.len(), 64);
        assert_eq!(plan.crypt_nodes().count(), 8);
        assert!(plan.key_scope.largest_key_bytes <= TIB);
        let none = plan_sized(&["--key-scope", "none"], 8, 15 * TIB / 2).unwrap();
        assert_eq!(none.keys.len(), 1);
        assert_eq!(none.key_scope.largest_key_bytes, 60 * TIB);
        assert!(!none.volume().table.as_deref().unwrap().contains("; "));
    }

    /// Each key's mapping and range, as an escrow file records them.
    fn recorded_segments(plan: &Plan) -> Vec<(String, Option<KeySegment>)> {
        plan.keys
            .iter()
            .map(|k| {
                (
                    k.mapping.clone(),
                    Some(KeySegment {
                        start_sector: k.covers.start,
                        sectors: k.covers.length,
                    }),
                )
            })
            .collect()
    }

    #[test]
    fn a_recorded_segmentation_is_rebuilt_and_a_gap_is_refused() {
        let provisioned = plan_sized(&["--key-scope", "2TiB"], 2, 3 * TIB).unwrap();
        assert_eq!(provisioned.keys.len(), 3);
        let recorded = recorded_segments(&provisioned);
        let shape = |keys| {
            assemble_plan(Shape {
                name: &DmName::new("v").unwrap(),
                boot_id: BOOT,
                members: provisioned.members.clone(),
                assembly: provisioned.assembly,
                layout: provisioned.layout,
                crypt: provisioned.crypt.clone(),
                segmentation: Segmentation::Recorded {
                    keys,
                    limit: provisioned.key_scope.limit_bytes,
                },
                mkfs: None,
                mount: None,
                binds: Vec::new(),
                escrow: None,
            })
        };
        let recovered = shape(&recorded).unwrap();
        assert_eq!(recovered.keys, provisioned.keys);
        assert_eq!(recovered.key_scope, provisioned.key_scope);
        assert_eq!(recovered.volume().table, provisioned.volume().table);
        let mut gap = recorded.clone();
        gap.remove(1);
        assert!(matches!(shape(&gap), Err(Error::Refused(_))));
    }

    /// The plan `recover` derives from the escrow file `provisioned` would write.
    fn recovered_from_escrow(provisioned: &Plan, key_loading: KeyLoading) -> Plan {
        let meta = EscrowMetadata {
            name: provisioned.name.clone(),
            hostname: "h".into(),
            created_at: "2026-12-03T12:00:00Z".into(),
            crypt: provisioned.crypt.format.clone(),
            assembly: provisioned.assembly,
            layout: provisioned.layout,
            members: Vec::new(),
            key_scope_bytes: provisioned.key_scope.limit_bytes,
        };
        from_escrow(
            &meta,
            &recorded_segments(provisioned),
            provisioned.members.clone(),
            BOOT,
            key_loading,
            None,
        )
        .unwrap()
    }

    #[test]
    fn recovery_reports_the_key_scope_the_escrow_file_records() {
        let provisioned = plan_sized(&["--key-scope", "2TiB"], 2, 3 * TIB).unwrap();
        let recovered = recovered_from_escrow(&provisioned, KeyLoading::Auto);
        assert_eq!(recovered.key_scope.limit_bytes, Some(2 * TIB));
        assert_eq!(recovered.key_scope, provisioned.key_scope);
    }

    #[test]
    fn a_volume_that_passes_discards_is_recovered_and_rebuilt_with_them() {
        for discards in [false, true] {
            let mut args = vec!["--key-loading", "hex"];
            if discards {
                args.push("--allow-discards");
            }
            let provisioned = plan(&args, 1).unwrap();
            assert_eq!(provisioned.crypt.format.allow_discards, discards);
            let recovered = recovered_from_escrow(&provisioned, KeyLoading::Hex);
            assert_eq!(recovered.volume().table, provisioned.volume().table);
            let commands = render::stock_commands(&recovered, &[PathBuf::from("/k.0")]).unwrap();
            assert_eq!(
                commands[0].contains(" --allow-discards "),
                discards,
                "{}",
                commands[0]
            );
        }
    }

    #[test]
    fn single_disk_is_one_crypt_node_with_the_keyring_reference() {
        let plan = plan(&[], 1).unwrap();
        assert_eq!(names(&plan), ["v"]);
        let node = &plan.nodes[0];
        assert_eq!(
            node.uuid.as_deref(),
            Some("TOSSKEY-0123456789abcdef0123456789abcdef-v")
        );
        assert_eq!(
            node.table.as_deref(),
            Some(
                format!(
                    "0 524288 crypt twofish-xts-plain64 :64:logon:tosskey:v 0 254:16 0 {OPTIONS}"
                )
                .as_str()
            )
        );
        assert_eq!(plan.volume_bytes, 256 << 20);
        assert_eq!(plan.keys.len(), 1);
        assert!(plan.facilities.contains(&Facility::LogonKeys));
    }

    #[test]
    fn hex_loading_elides_the_key_and_needs_no_keyring() {
        let plan = plan(&["--key-loading", "hex"], 1).unwrap();
        let table = plan.nodes[0].table.as_deref().unwrap();
        assert!(
            table.contains(" twofish-xts-plain64 <key-elided> 0 254:16 0 "),
            "{table}"
        );
        assert!(!plan.facilities.contains(&Facility::LogonKeys));
    }

    #[test]
    fn shared_raid0_is_an_array_under_one_crypt_node() {
        let plan = plan(&[], 2).unwrap();
        assert_eq!(names(&plan), ["md_tk_v", "v"]);
        assert_eq!(plan.nodes[0].size_bytes, 512 << 20);
        assert_eq!(plan.nodes[0].uuid, None);
        assert_eq!(
            plan.nodes[1].table.as_deref(),
            Some(format!("0 1048576 crypt twofish-xts-plain64 :64:logon:tosskey:v 0 /dev/md_tk_v 0 {OPTIONS}").as_str())
        );
        assert!(plan.facilities.contains(&Facility::MdPersonality("raid0")));
    }

    #[test]
    fn per_disk_md_has_a_key_per_member_and_a_linear_volume_node() {
        let plan = plan(&["--layout", "per-disk"], 2).unwrap();
        assert_eq!(names(&plan), ["v-m0", "v-m1", "md_tk_v", "v"]);
        assert_eq!(
            plan.nodes[1].uuid.as_deref(),
            Some("TOSSKEY-0123456789abcdef0123456789abcdef-v-m1")
        );
        assert_eq!(
            plan.keys
                .iter()
                .map(|k| k.mapping.as_str())
                .collect::<Vec<_>>(),
            ["v-m0", "v-m1"]
        );
        assert_eq!(
            plan.keys[0].covers,
            SectorRange {
                start: 0,
                length: 524288
            }
        );
        assert_eq!(
            plan.nodes[3].table.as_deref(),
            Some("0 1048576 linear /dev/md_tk_v 0")
        );
        assert_eq!(plan.volume().path, PathBuf::from("/dev/mapper/v"));
    }

    #[test]
    fn per_disk_dm_stripe_stripes_the_crypt_nodes() {
        let plan = plan(&["--layout", "per-disk", "--raid", "dm-stripe"], 2).unwrap();
        assert_eq!(names(&plan), ["v-m0", "v-m1", "v"]);
        assert_eq!(
            plan.nodes[2].table.as_deref(),
            Some("0 1048576 striped 2 1024 /dev/mapper/v-m0 0 /dev/mapper/v-m1 0")
        );
    }

    #[test]
    fn shared_dm_stripe_sits_under_the_crypt_node() {
        let plan = plan(&["--raid", "dm-stripe"], 3).unwrap();
        assert_eq!(names(&plan), ["v-stripe", "v"]);
        assert_eq!(
            plan.nodes[0].table.as_deref(),
            Some("0 1572864 striped 3 1024 254:16 0 254:32 0 254:48 0")
        );
        assert_eq!(
            plan.nodes[0].uuid.as_deref(),
            Some("TOSSKEY-0123456789abcdef0123456789abcdef-v-stripe")
        );
    }

    #[test]
    fn stock_commands_rebuild_every_node_bottom_first() {
        let plan = plan(&["--layout", "per-disk", "--level", "raid1"], 2).unwrap();
        let keys = [PathBuf::from("/k.0"), PathBuf::from("/k.1")];
        let commands = render::stock_commands(&plan, &keys).unwrap();
        assert_eq!(commands.len(), 4, "{commands:#?}");
        assert!(commands[0].starts_with("cryptsetup open --type plain --cipher twofish-xts-plain64 --key-size 512 --key-file /k.0 --sector-size 4096 --perf-no_read_workqueue --perf-no_write_workqueue -- /dev/vdb v-m0"), "{}", commands[0]);
        assert!(commands[2].starts_with("mdadm --build /dev/md/v --level=raid1 --assume-clean --raid-devices=2 /dev/mapper/v-m0 /dev/mapper/v-m1"), "{}", commands[2]);
        assert_eq!(
            commands[3],
            "dmsetup create --table '0 524288 linear /dev/md/v 0' -- v"
        );
    }

    #[test]
    fn raid10_is_rebuilt_as_a_dm_raid_mapping_of_the_same_geometry() {
        // 3 members of 256 MiB + 512 KiB: 513 chunks each, cut to 512 (an odd member count
        // takes an even number of chunks): 768 chunks of array.
        let shared = plan_sized(&["--level", "raid10"], 3, (256 << 20) + (512 << 10)).unwrap();
        assert_eq!(shared.nodes[0].size_bytes, 768 * (512 << 10));
        let keys = [PathBuf::from("/k")];
        let commands = render::stock_commands(&shared, &keys).unwrap();
        assert_eq!(
            commands[0],
            "dmsetup create --table '0 8192 zero' -- v-raid10-meta0 && dmsetup create --table '0 8192 zero' -- v-raid10-meta1 && dmsetup create --table '0 8192 zero' -- v-raid10-meta2 && dmsetup create --table '0 786432 raid raid10 6 1024 nosync raid10_copies 2 raid10_format near 3 /dev/mapper/v-raid10-meta0 /dev/vdb /dev/mapper/v-raid10-meta1 /dev/vdc /dev/mapper/v-raid10-meta2 /dev/vdd' -- v-raid10   # md raid10 as a dm raid mapping (mdadm --build makes no raid10): members in this order, zero-target metadata devices, nosync: nothing written to them"
        );
        assert!(
            commands[1].contains(" /dev/mapper/v-raid10 v"),
            "{}",
            commands[1]
        );
        let described =
            render::describe_node(&shared.nodes[0], |d| render::stock_device(&shared, d));
        assert!(
            described.contains("md raid10 chunk 512 KiB over /dev/vdb /dev/vdc /dev/vdd"),
            "{described}"
        );
        // Per disk: the mapping is over the crypt mappings, the volume a linear over it.
        let per_disk = plan(&["--level", "raid10", "--layout", "per-disk"], 4).unwrap();
        let keys: Vec<PathBuf> = (0..4).map(|i| PathBuf::from(format!("/k.{i}"))).collect();
        let commands = render::stock_commands(&per_disk, &keys).unwrap();
        assert!(
            commands[4].contains(
                " 4 /dev/mapper/v-raid10-meta0 /dev/mapper/v-m0 /dev/mapper/v-raid10-meta1 /dev/mapper/v-m1 /dev/mapper/v-raid10-meta2 /dev/mapper/v-m2 /dev/mapper/v-raid10-meta3 /dev/mapper/v-m3'"
            ),
            "{}",
            commands[4]
        );
        assert_eq!(
            commands[5],
            "dmsetup create --table '0 1048576 linear /dev/mapper/v-raid10 0' -- v"
        );
    }

    /// Runs `command` with `sh -c` in `dir`, with fake `cryptsetup`, `mdadm` and `dmsetup`
    /// first in PATH that print their arguments NUL-terminated, then their standard input.
    fn run_with_fake_tools(dir: &std::path::Path, command: &str) -> Vec<u8> {
        use std::os::unix::fs::PermissionsExt as _;
        let bin = dir.join("bin");
        if !bin.exists() {
            std::fs::create_dir(&bin).unwrap();
            for tool in ["cryptsetup", "mdadm", "dmsetup"] {
                let path = bin.join(tool);
                std::fs::write(&path, "#!/bin/sh\nprintf '%s\\0' \"$@\"\ncat\n").unwrap();
                std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
            }
        }
        let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
        let output = std::process::Command::new("sh")
            .args(["-c", command])
            .current_dir(dir)
            .env("PATH", path)
            .output()
            .unwrap();
        assert!(output.status.success(), "{command}: {output:?}");
        output.stdout
    }

    #[test]
    fn printed_commands_give_hostile_paths_to_the_tools_as_single_words() {
        let dir = tempfile::tempdir().unwrap();
        let hostile = "k $(touch pwned) `touch pwned2` it's \"q\" $HOME\\x";
        let keys_dir = dir.path().join(hostile);
        std::fs::create_dir(&keys_dir).unwrap();
        let key_files: Vec<PathBuf> = (0..3).map(|i| keys_dir.join(format!("k.{i}"))).collect();

        // One key per mapping: cryptsetup gets the key file and member path as one word each.
        let mut plan = plan(&["--layout", "per-disk", "--level", "raid1"], 2).unwrap();
        plan.members[0].path = PathBuf::from("/dev/disk/by-id/a b;$(touch pwned)'");
        let commands = render::stock_commands(&plan, &key_files[..2]).unwrap();
        let args = run_with_fake_tools(dir.path(), &commands[0]);
        let args: Vec<&[u8]> = args.split(|&b| b == 0).collect();
        let at = args.iter().position(|a| *a == b"--key-file").unwrap();
        assert_eq!(args[at + 1], key_files[0].to_str().unwrap().as_bytes());
        assert_eq!(args[args.len() - 3], b"/dev/disk/by-id/a b;$(touch pwned)'");
        assert_eq!(args[args.len() - 2], b"v-m0");
        for command in &commands[1..] {
            run_with_fake_tools(dir.path(), command);
        }

        // Several keys: dmsetup reads one line per segment, each with its key file's bytes
        // as hex in the key field.
        let plan = plan_sized(&[], 1, 3 * TIB).unwrap();
        assert_eq!(plan.keys.len(), 3);
        for (i, file) in key_files.iter().enumerate() {
            std::fs::write(file, [u8::try_from(i).unwrap() + 0xa0; 64]).unwrap();
        }
        let commands = render::stock_commands(&plan, &key_files).unwrap();
        let printed = run_with_fake_tools(dir.path(), commands.last().unwrap());
        let printed = String::from_utf8(printed).unwrap();
        let (args, table) = printed.split_at(printed.rfind('\0').unwrap() + 1);
        assert_eq!(args, "create\0--\0v\0");
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines.len(), 3, "{table}");
        for (i, line) in lines.iter().enumerate() {
            let key = format!("{:02x}", 0xa0 + i).repeat(64);
            assert_eq!(line.split(' ').nth(4), Some(key.as_str()), "{line}");
        }
        let left: Vec<_> = std::fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(
            left.len(),
            2,
            "the shell ran something it was given: {left:?}"
        );
    }

    #[test]
    fn no_printed_name_or_device_can_be_read_as_an_option() {
        let dir = tempfile::tempdir().unwrap();
        let keys = [PathBuf::from("/k.0"), PathBuf::from("/k.1")];
        // A member path and names as a hostile escrow file could once make them (DmName
        // refuses such names now, the escrow file relative paths).
        let hostile = |mut plan: Plan| {
            plan.members[0].path = PathBuf::from("--batch-mode");
            for node in &mut plan.nodes {
                node.name = format!("-{}", node.name);
            }
            plan
        };
        // mdadm reads no device after `--`: a device that is not an absolute path is refused.
        let raid0 = hostile(plan(&["--level", "raid0"], 2).unwrap());
        let error = render::stock_commands(&raid0, &keys).unwrap_err();
        let text = crate::error::render(&error);
        assert!(
            text.contains("--batch-mode: it is not an absolute path"),
            "{text}"
        );

        // dmsetup and cryptsetup get every name and device after `--`.
        let per_disk = hostile(plan(&["--layout", "per-disk", "--raid", "dm-stripe"], 2).unwrap());
        let commands = render::stock_commands(&per_disk, &keys).unwrap();
        let operands = |command: &str| -> Vec<Vec<u8>> {
            let printed = run_with_fake_tools(dir.path(), command);
            let args: Vec<&[u8]> = printed.split(|&b| b == 0).collect();
            let end = args.iter().position(|a| *a == b"--").expect("--");
            args[end + 1..args.len() - 1]
                .iter()
                .map(|a| a.to_vec())
                .collect()
        };
        assert_eq!(
            operands(&commands[0]),
            [b"--batch-mode".to_vec(), b"-v-m0".to_vec()]
        );
        let last = commands.last().unwrap();
        assert!(last.starts_with("dmsetup create --table "), "{last}");
        assert_eq!(operands(last), [b"-v".to_vec()]);
    }

    #[test]
    fn a_mirror_needs_two_disks() {
        let problem = |level, count| member_count_problem(AssemblyChoice::Md(level), count);
        assert_eq!(problem(MdLevel::Raid1, 1), Some("raid1"));
        assert_eq!(problem(MdLevel::Raid1, 2), None);
        assert_eq!(problem(MdLevel::Raid0, 1), None);
        assert_eq!(problem(MdLevel::Raid10, 1), Some("raid10"));
    }

    #[test]
    fn binds_are_planned_under_the_mount_point_and_shown_in_the_dry_run_and_json() {
        let plan = plan(
            &[
                "--mount",
                "/mnt/ephemeral",
                "--bind",
                "/var/lib/containerd",
                "--bind",
                "/var/log/pods",
            ],
            1,
        )
        .unwrap();
        let planned: Vec<(&str, &str)> = plan
            .binds
            .iter()
            .map(|b| (b.dir.to_str().unwrap(), b.source.to_str().unwrap()))
            .collect();
        assert_eq!(
            planned,
            [
                (
                    "/var/lib/containerd",
                    "/mnt/ephemeral/bind/var/lib/containerd"
                ),
                ("/var/log/pods", "/mnt/ephemeral/bind/var/log/pods"),
            ]
        );
        let text = render::text(&plan);
        let mount = text.find("mount it at /mnt/ephemeral").unwrap();
        let first = text
            .find("bind /var/lib/containerd: create it if missing, copy its contents to /mnt/ephemeral/bind/var/lib/containerd and bind-mount that over it")
            .unwrap_or_else(|| panic!("{text}"));
        let second = text.find("bind /var/log/pods:").unwrap();
        assert!(mount < first && first < second, "{text}");
        let json = serde_json::to_value(&plan).unwrap();
        assert_eq!(json["binds"][1]["dir"], "/var/log/pods");
        assert_eq!(
            json["binds"][1]["source"],
            "/mnt/ephemeral/bind/var/log/pods"
        );
        // No --bind: no binds key, as before.
        let json =
            serde_json::to_value(plan_sized(&["--mount", "/m"], 1, 256 << 20).unwrap()).unwrap();
        assert!(json.get("binds").is_none(), "{json}");
    }

    #[test]
    fn dry_run_text_says_key_loading_in_words() {
        let text = render::text(&plan(&["--key-loading", "auto"], 1).unwrap());
        assert!(text.contains("through the kernel keyring"), "{text}");
        assert!(!text.contains("Auto"), "{text}");
    }
}
