//! Every name tosskey gives a kernel object or a file, made in one place (stratisd's
//! `names.rs`): the dm names and UUIDs of a volume's mappings by [`Role`], the md array's
//! kernel name, the journal's file and the rotated escrow file. `status`, `close` and reruns
//! recognise tosskey's own objects by these rules, so nothing else formats them.
//!
//! Keyring descriptions (`tosskey:<name>[#<segment>]`) are made by tosskey-dm
//! ([`tosskey_dm::segment_keyring_description`]), the crate that adds and references the keys.

use std::path::{Path, PathBuf};

use tosskey_dm::{DmName, DmUuid};

/// dm UUIDs of everything tosskey makes start with this, so `status`, `close` and reruns
/// recognise their own devices.
pub const UUID_PREFIX: &str = "TOSSKEY-";

/// The longest `--name`: the dm UUID `TOSSKEY-<32 hex boot id>-<name>-<suffix>` must fit
/// the kernel's 128 bytes.
pub const MAX_NAME_LEN: usize = 80;

/// Where the journals live unless a test or `--state-dir` says otherwise.
pub const DEFAULT_STATE_DIR: &str = "/run/tosskey";

/// The directory at the root of the volume's filesystem that holds the `--bind`
/// directories' copies: `DIR` lives at `bind/DIR` (e.g. `bind/var/lib/containerd`).
pub const BIND_DIR: &str = "bind";

/// Where `--bind DIR` lives within the volume's filesystem: `/bind/DIR`, the root that
/// mountinfo shows for the bind mount at `DIR`. `dir` is absolute.
pub fn bind_root(dir: &Path) -> PathBuf {
    Path::new("/").join(BIND_DIR).join(relative_to_root(dir))
}

/// Where `--bind DIR` lives while the volume is mounted at `mount`: `MOUNT/bind/DIR`.
pub fn bind_source(mount: &Path, dir: &Path) -> PathBuf {
    mount.join(BIND_DIR).join(relative_to_root(dir))
}

fn relative_to_root(dir: &Path) -> &Path {
    dir.strip_prefix("/").unwrap_or(dir)
}

/// The md array's kernel names start with this (`md_<hint>`; the kernel adds `md_` to the
/// hint given at creation).
const MD_KERNEL_PREFIX: &str = "md_";

/// What a dm mapping is to its volume; the role picks the name and the UUID suffix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// `/dev/mapper/<name>`: what is formatted and mounted.
    Volume,
    /// The crypt mapping over member `i` in a per-disk layout: `<name>-m<i>`.
    Member(usize),
    /// The dm stripe under the one crypt mapping of a shared layout: `<name>-stripe`.
    Stripe,
}

impl Role {
    fn suffix(self) -> Option<String> {
        match self {
            Role::Volume => None,
            Role::Member(i) => Some(format!("m{i}")),
            Role::Stripe => Some("stripe".to_owned()),
        }
    }
}

/// The dm name of `volume`'s mapping in `role`.
pub fn dm_name(volume: &DmName, role: Role) -> String {
    match role.suffix() {
        Some(suffix) => format!("{volume}-{suffix}"),
        None => volume.to_string(),
    }
}

/// The dm UUID of `volume`'s mapping in `role`, made in boot `boot_id`.
pub fn dm_uuid(boot_id: &str, volume: &str, role: Role) -> Result<DmUuid, tosskey_dm::Error> {
    let uuid = match role.suffix() {
        Some(suffix) => format!("{UUID_PREFIX}{boot_id}-{volume}-{suffix}"),
        None => format!("{UUID_PREFIX}{boot_id}-{volume}"),
    };
    DmUuid::new(&uuid)
}

/// Whether a dm UUID is one tosskey made.
pub fn is_tosskey_uuid(uuid: &str) -> bool {
    uuid.starts_with(UUID_PREFIX)
}

/// The md array name hint tosskey uses for `volume` (the kernel names the array
/// `md_<hint>`): `tk_` and the name with every character md refuses replaced by `_`.
pub fn md_name_hint(volume: &DmName) -> String {
    let cleaned: String = volume
        .as_str()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || c == '-' {
                c
            } else {
                '_'
            }
        })
        .take(tosskey_raid::MAX_NAME_HINT_LEN - 3)
        .collect();
    format!("tk_{cleaned}")
}

/// The kernel name of `volume`'s md array (`/dev/<name>`, `/sys/block/<name>`).
pub fn md_array_name(volume: &DmName) -> String {
    format!("{MD_KERNEL_PREFIX}{}", md_name_hint(volume))
}

/// The name hint an md array was created with, from its kernel name.
pub fn md_hint_of(kernel_name: &str) -> Option<&str> {
    kernel_name.strip_prefix(MD_KERNEL_PREFIX)
}

/// The journal of volume `name` in directory `dir`.
pub fn journal_file(dir: &Path, name: &str) -> PathBuf {
    dir.join(format!("{name}.json"))
}

/// Where an escrow file is moved when a new volume's escrow file takes its place: the
/// earlier volume's file stays there until the operator collects it (or until the next
/// volume's rotation replaces it).
pub fn previous_escrow_file(file: &Path) -> PathBuf {
    let mut name = file.as_os_str().to_owned();
    name.push(".previous");
    PathBuf::from(name)
}

#[cfg(test)]
mod tests {
    use super::*;

    const BOOT: &str = "0123456789abcdef0123456789abcdef";

    #[test]
    fn roles_name_the_mappings_and_their_uuids() {
        let v = DmName::new("v").unwrap();
        assert_eq!(dm_name(&v, Role::Volume), "v");
        assert_eq!(dm_name(&v, Role::Member(3)), "v-m3");
        assert_eq!(dm_name(&v, Role::Stripe), "v-stripe");
        assert_eq!(
            dm_uuid(BOOT, "v", Role::Member(1)).unwrap().as_str(),
            format!("TOSSKEY-{BOOT}-v-m1")
        );
        assert_eq!(
            dm_uuid(BOOT, "v", Role::Volume).unwrap().as_str(),
            format!("TOSSKEY-{BOOT}-v")
        );
        assert!(is_tosskey_uuid(
            dm_uuid(BOOT, "v", Role::Stripe).unwrap().as_str()
        ));
    }

    #[test]
    fn the_longest_name_fits_the_kernels_uuid() {
        let uuid = dm_uuid(BOOT, &"n".repeat(MAX_NAME_LEN), Role::Member(15)).unwrap();
        assert!(uuid.as_str().starts_with("TOSSKEY-0123"));
        assert!(uuid.as_str().len() <= 128);
    }

    #[test]
    fn md_names_are_cleaned_and_round_trip_to_their_hint() {
        let v = DmName::new("data.vol").unwrap();
        assert_eq!(md_array_name(&v), "md_tk_data_vol");
        assert_eq!(
            md_hint_of(&md_array_name(&v)),
            Some(md_name_hint(&v).as_str())
        );
        assert_eq!(md_hint_of("dm-0"), None);
    }

    #[test]
    fn file_names() {
        assert_eq!(
            journal_file(Path::new("/run/tosskey"), "v"),
            Path::new("/run/tosskey/v.json")
        );
        assert_eq!(
            previous_escrow_file(Path::new("/k/e.bin")),
            Path::new("/k/e.bin.previous")
        );
    }
}
