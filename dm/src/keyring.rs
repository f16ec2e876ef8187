//! A `logon` key in the calling thread's keyring, for dm-crypt to pick up during TABLE_LOAD.
//!
//! `logon` keys cannot be read back from userspace (no `KEYCTL_READ`), only used by the kernel.
//! The key goes into the *thread* keyring: dm-crypt's `request_key()` runs in the context of
//! the thread issuing TABLE_LOAD and searches its thread, process and session keyrings. (In the
//! guest, a key in the session keyring of an initramfs `init` was not found: that context
//! does not possess the session keyring it sees as `@s`.) The thread keyring is always
//! possessed by its thread, so add and load on the same thread — [`KeyringKey`] is `!Send`
//! to make that hard to get wrong.

use std::ffi::CString;
use std::marker::PhantomData;

use crate::error::Error;
use crate::ioctl;

/// A `logon` key in the calling thread's keyring; invalidated (unlinked everywhere and
/// destroyed) when dropped or by [`KeyringKey::invalidate`].
#[derive(Debug)]
pub struct KeyringKey {
    serial: i32,
    description: String,
    /// Only the adding thread possesses its thread keyring (and may invalidate the key).
    _same_thread: PhantomData<*const ()>,
}

impl KeyringKey {
    /// `add_key("logon", description, payload, KEY_SPEC_THREAD_KEYRING)`. The payload is read
    /// in place from the caller's memory; no copy is made. `description` must look like
    /// `prefix:name` (a logon key rule), e.g. `tosskey:ephemeral-encrypted`.
    pub fn add_logon(description: &str, payload: &[u8]) -> Result<Self, Error> {
        let keyring_error = |source| Error::Keyring {
            action: "add",
            description: description.to_owned(),
            source,
        };
        let c_description = CString::new(description)
            .map_err(|_| keyring_error(std::io::Error::from_raw_os_error(libc::EINVAL)))?;
        let serial = ioctl::add_key(
            c"logon",
            &c_description,
            payload,
            ioctl::KEY_SPEC_THREAD_KEYRING,
        )
        .map_err(keyring_error)?;
        Ok(Self {
            serial,
            description: description.to_owned(),
            _same_thread: PhantomData,
        })
    }

    /// The key's serial number (as in /proc/keys, in hex there).
    pub fn serial(&self) -> i32 {
        self.serial
    }

    pub fn description(&self) -> &str {
        &self.description
    }

    /// `KEYCTL_INVALIDATE` now, reporting failure (dropping does the same silently).
    pub fn invalidate(self) -> Result<(), Error> {
        let this = std::mem::ManuallyDrop::new(self);
        ioctl::keyctl_invalidate(this.serial).map_err(|source| Error::Keyring {
            action: "invalidate",
            description: this.description.clone(),
            source,
        })
    }
}

impl Drop for KeyringKey {
    fn drop(&mut self) {
        // Best effort on error paths; `invalidate()` is the checked way.
        let _ = ioctl::keyctl_invalidate(self.serial);
    }
}
