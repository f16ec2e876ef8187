//! tosskey-kmod: bring up the kernel facilities tosskey uses — device-mapper and its
//! targets, md and its personalities, the dm-crypt cipher, ext4 — before anything is
//! built, without anyone having run `modprobe` first.
//!
//! [`Kernel::ensure`] takes a [`Facility`] through three steps and stops at the first
//! that works:
//!
//! 1. **Present?** Read-only probes of `/proc` and `/sys` (`/proc/misc`, `/proc/mdstat`,
//!    `/proc/crypto`, `/proc/filesystems`, `/proc/modules`, `/sys/module`) and
//!    `modules.builtin`. Loaded earlier or built in: nothing to do.
//! 2. **The kernel's own request path**, where one exists that builds nothing: the caller
//!    passes it as a [`KernelRequest`]. The kernel then runs its module helper
//!    (`/proc/sys/kernel/modprobe`) itself — in the host's initial namespaces, so this is
//!    what works from a `FROM scratch` container that has no `/lib/modules`, and it
//!    honours the host's `/etc/modprobe.d` (blacklists, options).
//! 3. **`finit_module(2)`** of the facility's modules and their dependencies, resolved from
//!    `/lib/modules/$(uname -r)/modules.dep`, `modules.alias`, `modules.builtin` and
//!    `modules.softdep` ([`ModuleIndex`]). Compressed modules (`.ko.xz`, `.ko.zst`,
//!    `.ko.gz`) are handed to the kernel with `MODULE_INIT_COMPRESSED_FILE` (Linux 5.17,
//!    `CONFIG_MODULE_DECOMPRESS`); a kernel that cannot decompress gets
//!    [`Error::CompressedUnsupported`], naming the file. `EEXIST` (loaded meanwhile) is
//!    success. This is what works where no helper is installed (a minimal initramfs) or
//!    the helper is broken. Module parameters from `/etc/modprobe.d` are not applied, but
//!    its `blacklist` and `install` rules (and `modprobe.blacklist=` on the kernel command
//!    line) are honoured: a module with such a rule is not loaded, and the error names the
//!    rule ([`Error::Forbidden`], see `modprobe_d`).
//!
//! If all fail, [`Error::Unavailable`] names the facility, its modules and the kernel
//! configuration option, with why each step failed — one line.
//!
//! # Which mechanism is authoritative, per facility
//!
//! | facility | module(s) | option | request path (step 2) | why |
//! |---|---|---|---|---|
//! | device-mapper, `linear`, `striped` | `dm_mod` | `CONFIG_BLK_DEV_DM` | open `/dev/mapper/control` after `mknod c 10:236`: the kernel requests `char-major-10-236` (alias `devname:mapper/control`) | the node is what tosskey opens anyway, and without udev the same open is how every dm tool loads dm |
//! | `crypt` target | `dm_crypt` | `CONFIG_DM_CRYPT` | `DM_GET_TARGET_VERSION "crypt"`: dm requests `dm-crypt` exactly as at table load | asks before the md array exists, so a missing target builds nothing |
//! | md | `md_mod` | `CONFIG_BLK_DEV_MD` | none: finit_module is authoritative | tosskey creates arrays by writing `/sys/module/md_mod/parameters/new_array`, which exists only once md is in; md's only request path is the legacy `block-major-9-N` autoload on opening a 9:N node, which also creates an md device and is compiled out with `CONFIG_BLOCK_LEGACY_AUTOLOAD=n` |
//! | md personality | `raid0`, `raid1`, `linear` | `CONFIG_MD_RAID0`, ... | none: finit_module is authoritative | md requests `md-level-N` only inside `RUN_ARRAY`, i.e. after the array was created: too late for "nothing built". (If it is not loadable here, the kernel's request at `RUN_ARRAY` is the last chance; tosskey refuses earlier instead.) |
//! | cipher `xts(twofish)`, `xts(aes)` | `twofish`/`aes`, `xts` (aliases) | `CONFIG_CRYPTO_TWOFISH`/`_AES`, `CONFIG_CRYPTO_XTS` | bind an `AF_ALG` skcipher socket to the name: the crypto API requests `crypto-xts(twofish)`, `crypto-xts`, `crypto-twofish` and picks the best driver, exactly as dm-crypt's allocation does | the kernel chooses the implementation (AVX, AES-NI) it will use for the mapping; the tree fallback loads every implementation the alias names |
//! | filesystem `ext4` | `ext4` | `CONFIG_EXT4_FS` | `fsopen("ext4")` ([`request_filesystem`]): the kernel requests `fs-ext4`; no mount is made | same lookup mount(2) does, before the volume exists |
//!
//! The request paths that need another crate's handle (dm control fd, AF_ALG socket) are
//! passed in by the caller; this crate has no dependency on them.
//!
//! Everything is read under a root directory ([`Kernel::at`]) so host tests run on a fake
//! `/proc`, `/sys` and `/lib/modules` tree; [`ModuleLoader`] replaces `finit_module` there.

mod error;
mod facility;
mod index;
mod kernel;
mod modprobe_d;
mod syscall;

pub use error::Error;
pub use facility::{Facility, KernelRequest, Outcome, State};
pub use index::{ModuleIndex, Resolved};
pub use kernel::{Finit, Kernel, ModuleLoader};

/// The kernel request path for a filesystem type: `fsopen(2)` makes the kernel look the
/// type up and call its module helper for `fs-<fstype>` if it is not registered. Nothing
/// is mounted. Use as the `request` of [`Kernel::ensure`] for [`Facility::filesystem`].
pub fn request_filesystem(fstype: &str) -> std::io::Result<()> {
    syscall::fsopen(fstype)
        .map(drop)
        .map_err(std::io::Error::from)
}
