//! `close` and `shred`: taking down the volumes tosskey made, by what their journals
//! recorded (nothing else is touched: [`crate::exec::teardown_steps`] refuses a recorded
//! device tosskey did not make). Every kernel operation goes through a [`StackKernel`].

use anyhow::Context as _;
use tosskey_dm::DmName;

use crate::commands::status::volume_name;
use crate::commands::Environment;
use crate::error::{Error, Refusal, Result};
use crate::exec::journal::{Component, Journal, Stage};
use crate::exec::kernel::{HostKernel, StackKernel};
use crate::exec::mount::mount_points_of;
use crate::exec::{teardown_in, teardown_steps, volume_mounts};

fn journal_for(env: &Environment, name: &DmName) -> Result<Journal> {
    env.journals.load(name.as_str())?.ok_or_else(|| {
        Error::Refused(Refusal::NoSuchVolume {
            name: name.to_string(),
        })
    })
}

/// Close volume `name` (or every volume): unmount if asked, remove mappings and arrays.
pub fn close(env: &Environment, name: Option<&str>, unmount_first: bool) -> Result<Vec<Closed>> {
    let name = name.map(volume_name).transpose()?;
    // Nothing to close is said (or done) before the device-mapper is needed: `close x` of a
    // volume with no journal is refused as such even where dm is not loaded.
    match &name {
        Some(name) => {
            journal_for(env, name)?;
        }
        None if env.journals.list()?.is_empty() => return Ok(Vec::new()),
        None => {}
    }
    close_in(
        &HostKernel::open(&env.root)?,
        env,
        name.as_ref(),
        unmount_first,
    )
}

/// A volume `close` took down, and the mounts it left alone (not the volume's).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Closed {
    pub name: String,
    pub left_alone: Vec<String>,
}

/// [`close`] through `kernel`.
pub fn close_in(
    kernel: &dyn StackKernel,
    env: &Environment,
    name: Option<&DmName>,
    unmount_first: bool,
) -> Result<Vec<Closed>> {
    let journals = match name {
        Some(name) => vec![journal_for(env, name)?],
        None => env.journals.list()?,
    };
    let mut closed = Vec::new();
    for journal in journals {
        // Refuses, before anything is unmounted, if the journal names a device tosskey did
        // not make.
        teardown_steps(&env.root, &journal, &kernel.dm_devices()?)?;
        let mounted = volume_mount_points(kernel, env, &journal)?;
        if !mounted.is_empty() && !unmount_first {
            return Err(Error::Refused(Refusal::VolumeMounted {
                name: journal.name,
                mounts: mounted.join(", "),
            }));
        }
        // Unmounts the volume's own mounts only.
        let left_alone = teardown_in(kernel, &env.root, &journal, &env.journals)
            .map_err(anyhow::Error::from)
            .with_context(|| format!("closing {}", journal.name))?;
        closed.push(Closed {
            name: journal.name,
            left_alone,
        });
    }
    Ok(closed)
}

/// Where the volume's mapping is mounted (empty when it is not, or does not exist).
fn volume_mount_points(
    kernel: &dyn StackKernel,
    env: &Environment,
    journal: &Journal,
) -> Result<Vec<String>> {
    let Some(volume) = kernel
        .dm_devices()?
        .into_iter()
        .find(|d| d.name.as_str() == journal.name)
    else {
        return Ok(Vec::new());
    };
    Ok(mount_points_of(
        &env.root.proc,
        volume.dev.major,
        volume.dev.minor,
    )?)
}

/// Emergency crypto-shred of volume `name`. Every crypt mapping is suspended and told to
/// `key wipe` (the kernel zeroes its key: from here on the data is unrecoverable), then its
/// table is replaced by an `error` target and resumed, so whatever still uses the device
/// (a filesystem with dirty pages, a process with open files) gets I/O errors instead of
/// hanging on a suspended device forever. Then the stack is taken down as far as its users
/// allow.
pub fn shred(env: &Environment, name: &str) -> Result<String> {
    let name = volume_name(name)?;
    // A volume with no journal is refused as such before the device-mapper is needed.
    journal_for(env, &name)?;
    shred_in(&HostKernel::open(&env.root)?, env, &name)
}

/// [`shred`] through `kernel`.
pub fn shred_in(kernel: &dyn StackKernel, env: &Environment, name: &DmName) -> Result<String> {
    let mut journal = journal_for(env, name)?;
    let live = kernel.dm_devices()?;
    // Refuses, before any key is wiped, if the journal names a device tosskey did not make.
    teardown_steps(&env.root, &journal, &live)?;
    // Recorded before the first key is wiped: from here on the volume is no volume, and a
    // rerun of provision must not call it provisioned, even if the teardown below fails.
    journal.stage = Stage::Shredded;
    env.journals.save(&journal)?;
    let mut wiped = Vec::new();
    let mut keys_wiped = 0;
    for component in &journal.built {
        let Component::Dm { name: dm_name, .. } = component else {
            continue;
        };
        let Some(info) = live.iter().find(|d| d.name.as_str() == dm_name) else {
            continue;
        };
        let table = kernel.dm_table(&info.name)?;
        if !table.iter().any(|t| t.target_type == "crypt") {
            continue;
        }
        let keys = kernel.shred_dm(&info.name, &table)?;
        keys_wiped += keys;
        wiped.push(if keys == 1 {
            dm_name.clone()
        } else {
            format!("{dm_name} ({keys} keys)")
        });
    }
    // The keys are gone and the devices answer with errors: unmount the volume's own
    // mounts without waiting for users (a lazy unmount completes when the last one lets
    // go); any other filesystem at the mount point is left alone.
    let mounts = volume_mounts(&env.root, &journal, &live)?;
    for dir in &mounts.on_top {
        kernel.detach(dir);
    }
    let what = if keys_wiped == 1 { "key" } else { "keys" };
    let mut message = match teardown_in(kernel, &env.root, &journal, &env.journals) {
        Ok(_) => format!("shredded {name}: {what} wiped from {} and the stack removed", wiped.join(", ")),
        Err(e) => format!(
            "shredded {name}: {what} wiped from {}; the mappings now fail every I/O and stay until their users let go ({}); run `tosskey close {name}` later",
            wiped.join(", "),
            crate::error::render(&e)
        ),
    };
    for line in mounts.left_alone {
        message.push('\n');
        message.push_str(&line);
    }
    Ok(message)
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::commands::status::status;
    use crate::commands::status::tests::{raid0_volume, Fixture, MIB};
    use crate::exec::journal::MappingTarget;

    #[test]
    fn close_unmounts_then_removes_the_stack_top_first_and_forgets_it() {
        let f = raid0_volume();
        let v = DmName::new("v").unwrap();
        let err = close_in(&f.kernel, &f.env, Some(&v), false).unwrap_err();
        assert_eq!(err.exit_code(), crate::error::REFUSED);
        assert!(f.kernel.log().is_empty());
        assert_eq!(
            close_in(&f.kernel, &f.env, Some(&v), true).unwrap(),
            [Closed {
                name: "v".into(),
                left_alone: Vec::new()
            }]
        );
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "remove v", "stop md_tk_v"]
        );
        assert_eq!(f.env.journals.load("v").unwrap(), None);
        drop(f.tree);
    }

    #[test]
    fn shred_wipes_every_crypt_mapping_before_taking_the_stack_down() {
        let f = raid0_volume();
        let message = shred_in(&f.kernel, &f.env, &DmName::new("v").unwrap()).unwrap();
        assert_eq!(
            message,
            "shredded v: key wiped from v and the stack removed"
        );
        assert_eq!(
            f.kernel.log(),
            ["shred v", "detach /mnt/v", "remove v", "stop md_tk_v"]
        );
    }

    /// The fixture's volume bound at /var/lib/a and /var/lib/b (recorded in that order),
    /// and mounted at /mnt/v again after them (as a rerun that remounted it leaves it).
    fn bound_volume() -> Fixture {
        let f = raid0_volume();
        let mut journal = f.env.journals.load("v").unwrap().unwrap();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        for dir in ["/var/lib/a", "/var/lib/b"] {
            journal.binds.push(crate::exec::journal::RecordedBind {
                dir: dir.into(),
                source: format!("/mnt/v/bind{dir}").into(),
            });
            add_mount(
                &f,
                &format!("95 1 253:0 /bind{dir} {dir} rw,noatime - ext4 /dev/mapper/v rw"),
            );
        }
        add_mount(&f, "99 1 253:0 / /mnt/v rw,noatime - ext4 /dev/mapper/v rw");
        f.env.journals.save(&journal).unwrap();
        f
    }

    #[test]
    fn close_unmounts_the_binds_first_newest_first_then_the_volume() {
        let f = bound_volume();
        let v = DmName::new("v").unwrap();
        let err = close_in(&f.kernel, &f.env, Some(&v), false).unwrap_err();
        assert!(err.to_string().contains("/var/lib/a"), "{err}");
        close_in(&f.kernel, &f.env, Some(&v), true).unwrap();
        // The fixture's own unmount of /mnt/v comes first in the log.
        assert_eq!(
            f.kernel.log()[1..],
            [
                "unmount /var/lib/b",
                "unmount /var/lib/a",
                "unmount /mnt/v",
                "remove v",
                "stop md_tk_v"
            ]
        );
    }

    #[test]
    fn shred_detaches_the_binds_first_and_leaves_another_filesystem_over_one_alone() {
        let f = bound_volume();
        add_mount(&f, "100 1 0:50 / /var/lib/b rw - tmpfs tmpfs rw");
        let message = shred_in(&f.kernel, &f.env, &DmName::new("v").unwrap()).unwrap();
        assert_eq!(
            f.kernel.log()[1..],
            [
                "shred v",
                "detach /var/lib/a",
                "detach /mnt/v",
                "remove v",
                "stop md_tk_v"
            ]
        );
        assert!(
            message.ends_with(
                "\nv is also mounted at /var/lib/b beneath tmpfs (tmpfs, 0:50): left alone; unmount that first"
            ),
            "{message}"
        );
    }

    fn add_mount(f: &Fixture, line: &str) {
        let path = f.env.root.proc.join("self/mountinfo");
        let text = std::fs::read_to_string(&path).unwrap() + line + "\n";
        std::fs::write(path, text).unwrap();
    }

    /// The volume was unmounted and something else mounted at its directory: close and
    /// shred take the stack down and leave that filesystem where it is, saying so.
    #[test]
    fn close_and_shred_leave_another_filesystem_at_the_mount_point_alone() {
        let foreign = "90 1 8:17 / /mnt/v rw - ext4 /dev/sdb1 rw";
        let note = "left /mnt/v alone: /dev/sdb1 (ext4, 8:17) is mounted there, not v";
        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        add_mount(&f, foreign);
        let v = DmName::new("v").unwrap();
        let closed = close_in(&f.kernel, &f.env, Some(&v), true).unwrap();
        assert_eq!(closed[0].left_alone, [note]);
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "remove v", "stop md_tk_v"]
        );
        let mounts = std::fs::read_to_string(f.env.root.proc.join("self/mountinfo")).unwrap();
        assert!(mounts.contains(foreign), "{mounts}");

        let f = raid0_volume();
        f.kernel.unmount(Path::new("/mnt/v")).unwrap();
        add_mount(&f, foreign);
        let message = shred_in(&f.kernel, &f.env, &v).unwrap();
        assert!(message.ends_with(&format!("\n{note}")), "{message}");
        assert_eq!(
            f.kernel.log(),
            ["unmount /mnt/v", "shred v", "remove v", "stop md_tk_v"]
        );
        let mounts = std::fs::read_to_string(f.env.root.proc.join("self/mountinfo")).unwrap();
        assert!(mounts.contains(foreign), "{mounts}");
    }

    /// Every mount of the volume's own device comes down (a second mount point too), and
    /// one hidden beneath another filesystem is reported, not reached through it.
    #[test]
    fn close_unmounts_every_mount_of_the_volume_and_only_those() {
        let f = raid0_volume();
        add_mount(&f, "92 1 253:0 / /srv/v rw - ext4 /dev/mapper/v rw");
        let v = DmName::new("v").unwrap();
        let closed = close_in(&f.kernel, &f.env, Some(&v), true).unwrap();
        assert!(closed[0].left_alone.is_empty(), "{closed:?}");
        assert_eq!(
            f.kernel.log(),
            [
                "unmount /srv/v",
                "unmount /mnt/v",
                "remove v",
                "stop md_tk_v"
            ]
        );

        let f = raid0_volume();
        add_mount(&f, "93 1 0:50 / /mnt/v rw - tmpfs tmpfs rw");
        let teardown = teardown_steps(
            &f.env.root,
            &f.env.journals.load("v").unwrap().unwrap(),
            &f.kernel.dm_devices().unwrap(),
        )
        .unwrap();
        assert_eq!(
            teardown.left_alone,
            ["v is also mounted at /mnt/v beneath tmpfs (tmpfs, 0:50): left alone; unmount that first"]
        );
        assert!(
            !teardown
                .steps
                .iter()
                .any(|s| matches!(s, crate::exec::TeardownStep::Unmount(_))),
            "{teardown:?}"
        );
    }

    #[test]
    fn names_that_are_not_volume_names_are_usage_errors_and_touch_nothing() {
        let f = raid0_volume();
        for name in ["../v", "v/../v", "a b", ""] {
            for err in [
                close(&f.env, Some(name), true).unwrap_err(),
                shred(&f.env, name).unwrap_err(),
                status(&f.env, Some(name)).unwrap_err(),
            ] {
                assert_eq!(err.exit_code(), crate::error::USAGE, "{name:?}: {err}");
                assert!(err.to_string().contains("is not a volume name"), "{err}");
            }
        }
        assert!(f.env.journals.load("v").unwrap().is_some());
    }

    #[test]
    fn a_journal_naming_devices_tosskey_did_not_make_removes_nothing() {
        // The journal of v lists a cryptsetup mapping and somebody's md array.
        let mut f = raid0_volume();
        f.tree
            .md_array("md0", 0, "raid1", &[("vdb", 0)], 256 * MIB)
            .attr("md0", "md/metadata_version", "1.2");
        f.kernel
            .dm("home", (253, 5), "CRYPT-LUKS2-0123-home", &[])
            .dm("bare", (253, 6), "", &[]);
        for (component, what) in [
            (
                Component::Dm {
                    name: "home".into(),
                    target: Some(MappingTarget::Crypt),
                },
                "dm device home with UUID \"CRYPT-LUKS2-0123-home\"",
            ),
            (
                Component::Dm {
                    name: "bare".into(),
                    target: Some(MappingTarget::Crypt),
                },
                "dm device bare with UUID \"\"",
            ),
            (
                Component::Md { name: "md0".into() },
                "md array md0 (metadata \"1.2\"",
            ),
        ] {
            let mut journal = f.env.journals.load("v").unwrap().unwrap();
            journal.built.insert(0, component);
            f.env.journals.save(&journal).unwrap();
            let v = DmName::new("v").unwrap();
            for err in [
                close_in(&f.kernel, &f.env, Some(&v), true).unwrap_err(),
                shred_in(&f.kernel, &f.env, &v).unwrap_err(),
            ] {
                assert_eq!(err.exit_code(), crate::error::REFUSED, "{err}");
                assert!(err.to_string().contains(what), "{what}: {err}");
            }
            assert!(f.kernel.log().is_empty(), "{:?}", f.kernel.log());
            journal.built.remove(0);
            f.env.journals.save(&journal).unwrap();
        }
    }
}
