//! Creating a crypt mapping in one call, with rollback.

use std::path::PathBuf;

use crate::control::DmControl;
use crate::error::Error;
use crate::keyring::KeyringKey;
use crate::segments::CryptTable;
use crate::target::{CryptTarget, KeyRef};
use crate::types::{DevId, DmName, DmUuid};

/// How the key reaches dm-crypt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyLoading {
    /// Through a `logon` key in the thread keyring (`:<bytes>:logon:tosskey:<name>`), which is
    /// invalidated right after TABLE_LOAD.
    Keyring,
    /// As hex in the table (zeroizing buffer, `DM_SECURE_DATA_FLAG`).
    Hex,
    /// Keyring, falling back to hex only when the kernel has no keyring support for dm-crypt
    /// (see [`no_keyring_support`]); any other keyring or table-load failure is an error.
    Auto,
}

/// How the keys were actually loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLoaded {
    /// Via keyring keys with these descriptions, one per segment (already invalidated).
    Keyring { descriptions: Vec<String> },
    /// As hex in the table: TABLE_STATUS can return it, [`DmControl::table`] elides it.
    Hex,
    /// As hex because [`KeyLoading::Auto`] found no keyring support for dm-crypt.
    HexFallback { reason: NoKeyringSupport },
}

impl std::fmt::Display for KeyLoaded {
    /// `keyring`, `hex` or `hex (fallback: <reason>)`: the words reports and `status` use.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            KeyLoaded::Keyring { .. } => f.write_str("keyring"),
            KeyLoaded::Hex => f.write_str("hex"),
            KeyLoaded::HexFallback { reason } => write!(f, "hex (fallback: {reason})"),
        }
    }
}

/// Why this kernel cannot hand dm-crypt a keyring key: the only reasons
/// [`KeyLoading::Auto`] loads hex instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NoKeyringSupport {
    /// The crypt target predates keyring keys (dm-crypt 1.15.0, Linux 4.10): it would
    /// take `:<bytes>:logon:<description>` for a hex key and refuse it.
    #[error("dm-crypt target {}.{}.{} predates keyring keys (1.15.0, Linux 4.10)", .version.0, .version.1, .version.2)]
    CryptTargetTooOld { version: (u32, u32, u32) },
    /// `add_key("logon", …)` failed with `ENOSYS` (kernel built without `CONFIG_KEYS`) or
    /// `ENODEV` (no `logon` key type).
    #[error("the kernel has no logon keys (add_key: {})", std::io::Error::from_raw_os_error(*.errno))]
    NoLogonKeys { errno: i32 },
}

/// The first dm-crypt version that takes keyring keys.
pub const CRYPT_KEYRING_VERSION: (u32, u32, u32) = (1, 15, 0);

/// The one test of "this kernel has no keyring support for dm-crypt", on what
/// [`KeyLoading::Auto`] saw: the crypt target's version (`None` when the kernel could not
/// say) and, once keys were added, the keyring path's error. Only a crypt target older than
/// [`CRYPT_KEYRING_VERSION`] or `add_key` failing with `ENOSYS`/`ENODEV` qualifies; every
/// other error (a quota, a seccomp `EPERM`, any TABLE_LOAD failure) is not a reason to put
/// the key in the table.
pub fn no_keyring_support(
    crypt_version: Option<(u32, u32, u32)>,
    keyring_error: Option<&Error>,
) -> Option<NoKeyringSupport> {
    if let Some(version) = crypt_version.filter(|v| *v < CRYPT_KEYRING_VERSION) {
        return Some(NoKeyringSupport::CryptTargetTooOld { version });
    }
    match keyring_error? {
        Error::Keyring {
            action: "add",
            source,
            ..
        } => match source.raw_os_error() {
            Some(errno @ (libc::ENOSYS | libc::ENODEV)) => {
                Some(NoKeyringSupport::NoLogonKeys { errno })
            }
            _ => None,
        },
        _ => None,
    }
}

/// The loaded crypt target's version: DM_GET_TARGET_VERSION (Linux 5.4+), else its
/// DM_LIST_VERSIONS entry; `None` when neither says (the target is not loaded yet).
fn crypt_target_version(dm: &DmControl) -> Option<(u32, u32, u32)> {
    match dm.target_version("crypt") {
        Ok(target) => Some(target.version),
        Err(_) => dm
            .target_versions()
            .ok()?
            .into_iter()
            .find(|target| target.name == "crypt")
            .map(|target| target.version),
    }
}

/// A live crypt mapping made by [`activate_crypt`] or [`activate_crypt_table`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub name: DmName,
    pub dev: DevId,
    /// `/dev/mapper/<name>`.
    pub node: PathBuf,
    pub key_loaded: KeyLoaded,
}

/// The keyring description tosskey uses for mapping `name` (one key).
pub fn keyring_description(name: &DmName) -> String {
    format!("tosskey:{name}")
}

/// The keyring description of segment `index` of a mapping with `count` segments: the
/// one-key description when there is one segment, else `tosskey:<name>#<index>` (`#` cannot
/// occur in a [`DmName`], so no other mapping's description collides).
pub fn segment_keyring_description(name: &DmName, index: usize, count: usize) -> String {
    if count == 1 {
        keyring_description(name)
    } else {
        format!("tosskey:{name}#{index}")
    }
}

/// Creates mapping `name` (tagged `uuid`) as `target` keyed with `key`: one segment of
/// [`activate_crypt_table`].
pub fn activate_crypt(
    dm: &DmControl,
    name: &DmName,
    uuid: &DmUuid,
    target: &CryptTarget,
    key: &[u8],
    loading: KeyLoading,
) -> Result<Activation, Error> {
    activate_crypt_table(
        dm,
        name,
        uuid,
        &CryptTable::single(target.clone()),
        &[key],
        loading,
    )
}

/// Creates mapping `name` (tagged `uuid`) as `table`, segment `i` keyed with `keys[i]`:
/// DEV_CREATE → TABLE_LOAD (on this thread, which added the keyring keys) → keys invalidated →
/// resume → `/dev/mapper/<name>` node. Any failure removes the device again; if that fails too
/// the error is [`Error::Rollback`].
pub fn activate_crypt_table(
    dm: &DmControl,
    name: &DmName,
    uuid: &DmUuid,
    table: &CryptTable,
    keys: &[&[u8]],
    loading: KeyLoading,
) -> Result<Activation, Error> {
    dm.create(name, uuid)?;
    let loaded_and_resumed = load_crypt_segments(dm, name, table, keys, loading)
        .and_then(|key_loaded| Ok((key_loaded, dm.resume(name)?)));
    match loaded_and_resumed {
        Ok((key_loaded, dev)) => Ok(Activation {
            name: name.clone(),
            dev,
            node: DmControl::node_path(name),
            key_loaded,
        }),
        Err(primary) => match dm.remove(name) {
            Ok(()) => Err(primary),
            Err(cleanup) => Err(Error::Rollback {
                device: name.to_string(),
                primary: Box::new(primary),
                cleanup: Box::new(cleanup),
            }),
        },
    }
}

/// Loads `target` with `key` into the inactive slot of existing device `name` (see
/// [`KeyLoading`]). The caller resumes.
pub fn load_crypt_table(
    dm: &DmControl,
    name: &DmName,
    target: &CryptTarget,
    key: &[u8],
    loading: KeyLoading,
) -> Result<KeyLoaded, Error> {
    load_crypt_segments(
        dm,
        name,
        &CryptTable::single(target.clone()),
        &[key],
        loading,
    )
}

/// Loads `table` into the inactive slot of existing device `name`, segment `i` keyed with
/// `keys[i]` (see [`KeyLoading`]; with the keyring, every segment has its own `logon` key, all
/// invalidated right after the load). The caller resumes.
pub fn load_crypt_segments(
    dm: &DmControl,
    name: &DmName,
    table: &CryptTable,
    keys: &[&[u8]],
    loading: KeyLoading,
) -> Result<KeyLoaded, Error> {
    match loading {
        KeyLoading::Keyring => load_with_keyring(dm, name, table, keys),
        KeyLoading::Hex => load_with_hex(dm, name, table, keys),
        KeyLoading::Auto => {
            let crypt_version = crypt_target_version(dm);
            let keyring_error = match no_keyring_support(crypt_version, None) {
                Some(reason) => return load_with_hex_fallback(dm, name, table, keys, reason),
                None => match load_with_keyring(dm, name, table, keys) {
                    Err(err) => err,
                    loaded => return loaded,
                },
            };
            match no_keyring_support(crypt_version, Some(&keyring_error)) {
                Some(reason) => load_with_hex_fallback(dm, name, table, keys, reason),
                None => Err(keyring_error),
            }
        }
    }
}

fn load_with_hex_fallback(
    dm: &DmControl,
    name: &DmName,
    table: &CryptTable,
    keys: &[&[u8]],
    reason: NoKeyringSupport,
) -> Result<KeyLoaded, Error> {
    load_with_hex(dm, name, table, keys)?;
    Ok(KeyLoaded::HexFallback { reason })
}

fn load_with_keyring(
    dm: &DmControl,
    name: &DmName,
    table: &CryptTable,
    keys: &[&[u8]],
) -> Result<KeyLoaded, Error> {
    let descriptions: Vec<String> = (0..keys.len())
        .map(|index| segment_keyring_description(name, index, keys.len()))
        .collect();
    let key_refs: Vec<KeyRef> = descriptions
        .iter()
        .zip(keys)
        .map(|(description, key)| KeyRef::Keyring {
            bytes: key.len(),
            description: description.clone(),
        })
        .collect();
    let lines = table.lines(&key_refs)?;
    // Dropping this (on an error below) invalidates the keys added so far.
    let mut added = Vec::with_capacity(keys.len());
    for (description, key) in descriptions.iter().zip(keys) {
        added.push(KeyringKey::add_logon(description, key)?);
    }
    let loaded = dm.load_table(name, &lines);
    // dm-crypt copied every payload during TABLE_LOAD: the keys have no further use. Each is
    // invalidated even if another one fails; the first failure is reported.
    let invalidated: Vec<Result<(), Error>> =
        added.into_iter().map(KeyringKey::invalidate).collect();
    loaded?;
    invalidated.into_iter().collect::<Result<(), Error>>()?;
    Ok(KeyLoaded::Keyring { descriptions })
}

fn load_with_hex(
    dm: &DmControl,
    name: &DmName,
    table: &CryptTable,
    keys: &[&[u8]],
) -> Result<KeyLoaded, Error> {
    let key_refs: Vec<KeyRef> = keys.iter().map(|key| KeyRef::hex_from_bytes(key)).collect();
    dm.load_table(name, &table.lines(&key_refs)?)?;
    Ok(KeyLoaded::Hex)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keyring_description_is_a_logon_style_name() {
        let name = DmName::new("ephemeral-encrypted").unwrap();
        assert_eq!(keyring_description(&name), "tosskey:ephemeral-encrypted");
    }

    #[test]
    fn segment_descriptions_are_distinct_and_one_segment_keeps_the_old_one() {
        let name = DmName::new("vol").unwrap();
        assert_eq!(segment_keyring_description(&name, 0, 1), "tosskey:vol");
        let all: std::collections::HashSet<String> = (0..300)
            .map(|i| segment_keyring_description(&name, i, 300))
            .collect();
        assert_eq!(all.len(), 300);
        assert!(all.contains("tosskey:vol#299"));
    }

    #[test]
    fn auto_falls_back_only_without_keyring_support_for_dm_crypt() {
        let keyring = |action, errno| Error::Keyring {
            action,
            description: "tosskey:x".into(),
            source: std::io::Error::from_raw_os_error(errno),
        };
        let ioctl = |errno| Error::Ioctl {
            command: "DM_TABLE_LOAD",
            device: "x".into(),
            fix: "",
            source: std::io::Error::from_raw_os_error(errno),
        };
        // Too old a crypt target decides before anything is tried.
        assert_eq!(
            no_keyring_support(Some((1, 14, 1)), None),
            Some(NoKeyringSupport::CryptTargetTooOld {
                version: (1, 14, 1)
            })
        );
        assert_eq!(no_keyring_support(Some((1, 15, 0)), None), None);
        assert_eq!(no_keyring_support(None, None), None);
        // A kernel without keys or without the logon type.
        for errno in [libc::ENOSYS, libc::ENODEV] {
            assert_eq!(
                no_keyring_support(Some((1, 24, 0)), Some(&keyring("add", errno))),
                Some(NoKeyringSupport::NoLogonKeys { errno })
            );
        }
        // Everything else is an error, never a reason to put the key in the table.
        for errno in [libc::EDQUOT, libc::EPERM, libc::EACCES, libc::ENOMEM] {
            assert_eq!(
                no_keyring_support(Some((1, 24, 0)), Some(&keyring("add", errno))),
                None
            );
        }
        assert_eq!(
            no_keyring_support(None, Some(&keyring("invalidate", libc::ENOSYS))),
            None
        );
        for errno in [
            libc::ENOKEY,
            libc::EINVAL,
            libc::EKEYREVOKED,
            libc::EKEYREJECTED,
            libc::EOPNOTSUPP,
            libc::EBUSY,
        ] {
            assert_eq!(
                no_keyring_support(Some((1, 24, 0)), Some(&ioctl(errno))),
                None
            );
        }
    }

    #[test]
    fn a_fallback_says_why_in_one_line() {
        let loaded = KeyLoaded::HexFallback {
            reason: NoKeyringSupport::NoLogonKeys {
                errno: libc::ENOSYS,
            },
        };
        let text = loaded.to_string();
        assert!(
            text.starts_with("hex (fallback: the kernel has no logon keys (add_key: "),
            "{text}"
        );
        assert!(!text.contains('\n'));
        let old = KeyLoaded::HexFallback {
            reason: NoKeyringSupport::CryptTargetTooOld {
                version: (1, 14, 1),
            },
        };
        assert_eq!(
            old.to_string(),
            "hex (fallback: dm-crypt target 1.14.1 predates keyring keys (1.15.0, Linux 4.10))"
        );
        assert_eq!(KeyLoaded::Hex.to_string(), "hex");
    }
}
