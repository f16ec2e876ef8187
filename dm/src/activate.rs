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
    /// Keyring, falling back to hex when the kernel cannot (no keyring support, `ENOKEY`,
    /// `EINVAL` for the keyring syntax on kernels before 4.10).
    Auto,
}

/// How the keys were actually loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLoaded {
    /// Via keyring keys with these descriptions, one per segment (already invalidated).
    Keyring { descriptions: Vec<String> },
    /// As hex in the table: TABLE_STATUS can return it, [`DmControl::table`] elides it.
    Hex,
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
        KeyLoading::Auto => match load_with_keyring(dm, name, table, keys) {
            Err(err) if keyring_unusable(&err) => load_with_hex(dm, name, table, keys),
            other => other,
        },
    }
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

/// Whether a keyring-path failure means "this kernel cannot take keyring keys" rather than a
/// problem hex loading would hit too.
fn keyring_unusable(err: &Error) -> bool {
    match err {
        Error::Keyring { .. } => true,
        Error::Ioctl { command, .. } => {
            *command == "DM_TABLE_LOAD"
                && matches!(
                    err.errno(),
                    Some(
                        libc::ENOKEY
                            | libc::EINVAL
                            | libc::EKEYREVOKED
                            | libc::EKEYREJECTED
                            | libc::EOPNOTSUPP
                    )
                )
        }
        _ => false,
    }
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
    fn auto_falls_back_only_for_keyring_problems() {
        let ioctl = |command: &'static str, errno| Error::Ioctl {
            command,
            device: "x".into(),
            fix: "",
            source: std::io::Error::from_raw_os_error(errno),
        };
        assert!(keyring_unusable(&ioctl("DM_TABLE_LOAD", libc::ENOKEY)));
        assert!(keyring_unusable(&ioctl("DM_TABLE_LOAD", libc::EINVAL)));
        assert!(!keyring_unusable(&ioctl("DM_TABLE_LOAD", libc::EBUSY)));
        assert!(!keyring_unusable(&ioctl("DM_DEV_CREATE", libc::EINVAL)));
        assert!(keyring_unusable(&Error::Keyring {
            action: "add",
            description: "tosskey:x".into(),
            source: std::io::Error::from_raw_os_error(libc::ENOSYS),
        }));
    }
}
