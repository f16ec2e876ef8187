//! tosskey-dm: a safe, key-hygienic API over the device-mapper control device.
//!
//! [`DmControl`] owns an fd of `/dev/mapper/control` and issues the device-mapper ioctls
//! (version, create, table load, resume, suspend, remove, list, status, table, target message);
//! [`CryptTarget`], [`StripedTarget`] and [`LinearTarget`] render table lines, and every
//! target tosskey emits or reads back (crypt, striped, linear, error, zero, raid) has
//! parameters that display and parse as the kernel's table text ([`TargetParams`],
//! [`TableEntry`]);
//! [`activate_crypt`] creates a crypt mapping in one call with the key loaded through the
//! kernel keyring (or hex as a fallback) and rolls back on failure. [`CryptTable`] splits a
//! mapping into key-scope segments (consecutive crypt targets whose offsets and IVs continue,
//! one key each) and [`activate_crypt_table`] loads it with one `logon` key per segment.
//!
//! ```no_run
//! use tosskey_dm::{activate_crypt, CryptOptions, CryptTarget, DevId, DmControl, DmName, DmUuid,
//!                  KeyLoading, Sectors};
//! # fn main() -> Result<(), tosskey_dm::Error> {
//! # let key = [0u8; 64];
//! let dm = DmControl::open()?;
//! let name = DmName::new("ephemeral-encrypted")?;
//! let uuid = DmUuid::new("TOSSKEY-<boot id>-ephemeral-encrypted")?;
//! let target = CryptTarget::new("twofish-xts-plain64", DevId::new(259, 0), Sectors(2 << 30))?
//!     .with_options(CryptOptions { sector_size: 4096, ..CryptOptions::default() });
//! println!("{}", target.line_elided()?); // for --dry-run: the key shows as <key-elided>
//! let mapping = activate_crypt(&dm, &name, &uuid, &target, &key, KeyLoading::Auto)?;
//! // ... use mapping.node (/dev/mapper/ephemeral-encrypted) ...
//! dm.suspend(&name)?; // shred: suspend, wipe the key, remove
//! dm.wipe_crypt_key(&name)?;
//! dm.remove(&name)?;
//! # Ok(()) }
//! ```
//!
//! # Why not the `devicemapper` crate
//!
//! The design named the `devicemapper` crate (0.34). Judged against tosskey's key-hygiene
//! rules and its static build, it does not fit:
//! - it has no `crypt` target type, so the crypt line would be a caller-built `String` —
//!   and it copies table parameters into its own non-zeroized buffers;
//! - its trace/debug logging prints tables and messages (a hex key in a log);
//! - `DM_SECURE_DATA_FLAG` is set only on table load, not on table reads or `key` messages;
//! - its `-sys` build runs bindgen, wanting libclang and the libdevmapper headers on the
//!   build machine: heavy for a static, portable binary and for CI.
//!
//! The interface itself is ten ioctls on one fixed-layout header, so tosskey issues them
//! itself with `libc`: the `ioctl` module holds the `#[repr(C)]` structs (checked against
//! `linux/dm-ioctl.h` with gcc in the tests), the request-number table and one choke point
//! that sizes the buffer, regrows it on `DM_BUFFER_FULL_FLAG` and records command, device and
//! errno in the error. Every buffer is a zeroizing allocation, locked in memory (best effort:
//! a failed lock is counted, see [`unlocked_buffer_bytes`]); every call that can carry key
//! material (table load of a crypt target, table read, `key` messages) sets
//! `DM_SECURE_DATA_FLAG` so the kernel wipes its copies too. That module and the raw
//! `add_key`/`keyctl`/`mknod` calls are the crate's only `unsafe` code.
//!
//! # Keys: what dm-crypt keeps after the table load (checked in the guest, Debian 6.1)
//!
//! dm-crypt always keeps the key bytes in its own kernel memory (its key buffer and the
//! cipher's key schedule): that is what encrypts. What else remains depends on the loading:
//! - **Keyring** ([`KeyLoading::Keyring`]): the key is added as a `logon` key (not readable
//!   from userspace) `tosskey:<name>` to the loading thread's keyring, the table names it as
//!   `:<bytes>:logon:tosskey:<name>`, dm-crypt looks it up and copies it during TABLE_LOAD, and
//!   [`activate_crypt`] invalidates the key right after. Then `/proc/keys` lists no `tosskey:`
//!   key, the table read back is exactly
//!   `twofish-xts-plain64 :64:logon:tosskey:<name> 0 7:0 0 1 sector_size:4096` (no key
//!   bytes, not even through [`DmControl::table_with_keys`]), and the mapping keeps reading
//!   and writing (root test `keyring_key_is_invalidated_and_absent_from_the_table`, which
//!   also reopens the device with the same key as hex and reads the plaintext back).
//! - **Hex** ([`KeyLoading::Hex`]): the key is part of the table line and dm-crypt keeps that
//!   string: TABLE_STATUS returns the key in hex to any CAP_SYS_ADMIN caller (root test
//!   `hex_key_is_returned_by_the_kernel_and_elided_by_table`). [`DmControl::table`]
//!   therefore elides it; only [`DmControl::table_with_keys`] returns it, in zeroizing memory.
//! - **Shred**: suspend → `key wipe` message (refused with `EINVAL` while the device is live)
//!   → dm-crypt zeroes its key: the table then shows a key field of 128 `0` digits, resume
//!   fails with `EAGAIN` ("crypt key is not set") and the device can only be removed (root
//!   test `shred_wipes_the_key_so_resume_fails_and_remove_succeeds`).
//!
//! The thread keyring matters: in the guest a key in the initramfs init's `@s` was not found
//! (`ENOKEY`), while a key added to the thread keyring of the thread issuing TABLE_LOAD is.
//!
//! # Device nodes and udev
//!
//! Without udev (`/run/udev/control` absent) nobody waits on a udev cookie (`event_nr` 0) and
//! [`DmControl::resume`] creates `/dev/mapper/<name>` with `mknod` (block, 0600) from the
//! device number the kernel returns; [`DmControl::remove`] unlinks it (only if it is the block
//! node of that device). With udev running, resume carries `DM_UDEV_PRIMARY_SOURCE_FLAG` in
//! the cookie's flag bits and a zero cookie, so udev's rules run but nothing ever blocks on
//! them; the node is still created if udev has not made it yet.

mod activate;
mod control;
mod error;
mod ioctl;
mod keyring;
mod segments;
mod target;
mod types;

pub use activate::{
    activate_crypt, activate_crypt_table, keyring_description, load_crypt_segments,
    load_crypt_table, no_keyring_support, segment_keyring_description, Activation, KeyLoaded,
    KeyLoading, NoKeyringSupport, CRYPT_KEYRING_VERSION,
};
pub use control::{
    describe_holders, DeviceInfo, DmControl, SecretTableEntry, TableEntry, TargetStatus,
    TargetVersion, CONTROL_PATH, MAPPER_DIR,
};
pub use error::Error;
pub use keyring::KeyringKey;
pub use segments::{wipe_crypt_keys, CryptSegment, CryptTable, MAX_SEGMENTS};
pub use target::{
    elide_params, name_devices_in_line, split_crypt_line_at_key, CryptKeyField, CryptOptions,
    CryptParams, CryptTarget, ErrorParams, KeyRef, LinearParams, LinearTarget, RaidDevice,
    RaidOption, RaidParams, StripeDevice, StripeMember, StripedParams, StripedTarget, TargetLine,
    TargetParams, ZeroParams, ELIDED_KEY,
};
pub use types::{Bytes, DevId, DmName, DmUuid, Sectors};

/// How many bytes of ioctl and table buffers — the ones that can carry key material — this
/// process could not lock in memory (RLIMIT_MEMLOCK too small without CAP_IPC_LOCK). Those
/// buffers are still zeroized after use, but may have been written to swap meanwhile.
pub fn unlocked_buffer_bytes() -> usize {
    tosskey_sysutil::unlocked_bytes()
}
