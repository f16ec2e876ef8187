//! Creating a crypt mapping in one call, with rollback.

use std::path::PathBuf;

use crate::control::DmControl;
use crate::error::Error;
use crate::keyring::KeyringKey;
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

/// How the key was actually loaded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyLoaded {
    /// Via the keyring key with this description (already invalidated).
    Keyring { description: String },
    /// As hex in the table: TABLE_STATUS can return it, [`DmControl::table`] elides it.
    Hex,
}

/// A live crypt mapping made by [`activate_crypt`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Activation {
    pub name: DmName,
    pub dev: DevId,
    /// `/dev/mapper/<name>`.
    pub node: PathBuf,
    pub key_loaded: KeyLoaded,
}

/// The keyring description tosskey uses for mapping `name`.
pub fn keyring_description(name: &DmName) -> String {
    format!("tosskey:{name}")
}

/// Creates mapping `name` (tagged `uuid`) as `target` keyed with `key`: DEV_CREATE →
/// TABLE_LOAD (on this thread, which added the keyring key) → key invalidated → resume →
/// `/dev/mapper/<name>` node. Any failure removes the device again; if that fails too the
/// error is [`Error::Rollback`].
pub fn activate_crypt(
    dm: &DmControl,
    name: &DmName,
    uuid: &DmUuid,
    target: &CryptTarget,
    key: &[u8],
    loading: KeyLoading,
) -> Result<Activation, Error> {
    dm.create(name, uuid)?;
    let loaded_and_resumed = load_crypt_table(dm, name, target, key, loading)
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
    match loading {
        KeyLoading::Keyring => load_with_keyring(dm, name, target, key),
        KeyLoading::Hex => load_with_hex(dm, name, target, key),
        KeyLoading::Auto => match load_with_keyring(dm, name, target, key) {
            Err(err) if keyring_unusable(&err) => load_with_hex(dm, name, target, key),
            other => other,
        },
    }
}

fn load_with_keyring(
    dm: &DmControl,
    name: &DmName,
    target: &CryptTarget,
    key: &[u8],
) -> Result<KeyLoaded, Error> {
    let description = keyring_description(name);
    let key_ref = KeyRef::Keyring {
        bytes: key.len(),
        description: description.clone(),
    };
    let line = target.line(&key_ref)?;
    let keyring_key = KeyringKey::add_logon(&description, key)?;
    let loaded = dm.load_table(name, &[line]);
    // dm-crypt copied the payload during TABLE_LOAD: the key has no further use.
    let invalidated = keyring_key.invalidate();
    loaded?;
    invalidated?;
    Ok(KeyLoaded::Keyring { description })
}

fn load_with_hex(
    dm: &DmControl,
    name: &DmName,
    target: &CryptTarget,
    key: &[u8],
) -> Result<KeyLoaded, Error> {
    let line = target.line(&KeyRef::hex_from_bytes(key))?;
    dm.load_table(name, &[line])?;
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
