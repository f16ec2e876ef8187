//! tosskey-raid: non-persistent md arrays assembled with raw md ioctls (no mdadm).
//!
//! [`MdArray::build`] does what `mdadm --build` does: `SET_ARRAY_INFO` with
//! `not_persistent = 1`, one `ADD_NEW_DISK` per member (state `SYNC|ACTIVE`, slot = list
//! position), `RUN_ARRAY`. No superblock, bitmap or anything else is written to the
//! members: the array exists only in the kernel and disappears at
//! [`MdArray::stop`] or reboot. raid0 (default chunk 512 KiB), raid1 (built clean, so no
//! resync copies one member over another), raid10 (md's near layout with 2 copies,
//! mdadm's `n2`, also built clean) and linear are supported.
//!
//! The array is a fresh md device: `mdN` with the first free minor from 127 down (the
//! order mdadm uses; minors present in `/sys/block`, `/sys/dev/block` or `/proc/mdstat`
//! are skipped), or `md_<name>` when [`ArraySpec::name_hint`] is set. It is created by
//! writing the name to `/sys/module/md_mod/parameters/new_array`; the `/dev` node is
//! created with mknod (block 9:N, mode 0600) only when devtmpfs/udev did not, and removed
//! again by [`MdArray::stop`].
//!
//! # Members of unequal size
//!
//! raid0 over members whose sizes differ by a chunk or more is "multi-zone", and since
//! Linux 5.4 `RUN_ARRAY` refuses it (when a later zone spans two or more members; the
//! root test `the_kernel_refuses_uncut_unequal_raid0…` shows it on the guest's 6.1:
//! "cannot assemble multi-zone RAID0 with default_layout setting") unless a zone layout
//! is chosen (and
//! `SET_ARRAY_INFO`'s `layout` field is ignored for raid0: md.c sets it to -1 — "Cannot
//! trust RAID0 layout info here"; only sysfs `md/layout` or the `raid0.default_layout`
//! module parameter set it). tosskey does not pick a layout: it cuts every member to the
//! smallest member's size rounded down to the chunk, by writing `md/component_size` and
//! each larger member's `md/dev-*/size` (KiB) before `RUN_ARRAY`. The array is then one
//! zone of `members × floor(smallest / chunk) × chunk` bytes. Why:
//! - The result is the same whatever the kernel version or its `default_layout`, and it
//!   is exactly the first zone of any multi-zone array over the same members in either
//!   layout — so `mdadm --build` with stock tools reproduces it for recovery, and so does
//!   a dm `striped` table (`--raid dm-stripe` uses the same width): the two are
//!   interchangeable.
//! - ORIG vs ALT multi-zone layouts are the very confusion that made 5.4 refuse them
//!   (data corruption when a kernel guessed wrong); avoiding zones avoids the question.
//! - Every stripe spans every member, so throughput is uniform; the cost is the
//!   capacity beyond the smallest member, which is nil for cloud instance-store disks
//!   (identical by construction). Wildly different sizes are refused by `provision`.
//!
//! raid1 already uses the smallest member's size; linear uses every member whole. raid10
//! uses the smallest member rounded down to the chunk; over an odd number of members it
//! is cut (through `md/component_size`) to an even number of chunks, so that the array
//! is whole rows of copies and a dm `raid` table of the same length (what the stock
//! recipe builds) describes exactly the same array.
//! [`ArraySpec::expected_size_bytes`] states the resulting size, and `build` refuses
//! (and undoes) an array whose kernel size differs from it.
//!
//! # Ownership without writing to disk
//!
//! A non-persistent array carries no superblock, UUID or name on disk, and tosskey
//! writes nothing to the members. A later run recognises its arrays by kernel-only state:
//! - name them: [`ArraySpec::name_hint`] `Some("tosskey_<volume>")` builds
//!   `md_tosskey_<volume>` (`/dev/md_tosskey_<volume>`, shown so in `/proc/mdstat`). The
//!   name exists from the moment the md device is created, so even after a crash between
//!   `RUN_ARRAY` and the dm mapping a rerun finds it by name and can stop or reuse it;
//! - and the dm-crypt mapping on top carries a `TOSSKEY-…` dm UUID: the array's
//!   holders ([`ArrayStatus::holders`]) and [`MdSysfs::dm_uuid`] tie it to its volume.
//!
//! [`MdSysfs::list_arrays`] lists every md array with its members (from
//! `/sys/block/md*/md/dev-*`), so the binary can recognise its own and refuse members
//! held by another array; [`MdArray::build`] itself refuses a member that is in an md
//! array or held by anything (`holders/`), and the kernel's exclusive claim in
//! `ADD_NEW_DISK` refuses a member that is mounted or opened with `O_EXCL` (EBUSY), in
//! which case everything built so far is undone.

mod array;
mod error;
pub mod ioctl;
mod spec;
mod sysfs;

pub use array::{ArrayInfo, MdArray};
pub use error::{RaidError, Result};
pub use spec::{
    raid10_array_bytes, ArraySpec, Bytes, DevId, Level, Member, DEFAULT_CHUNK, MAX_CHUNK,
    MAX_NAME_HINT_LEN, MIN_CHUNK, MIN_MEMBER_BYTES, RAID10_NEAR2_LAYOUT, RAID10_NEAR_COPIES,
};
pub use sysfs::{
    parse_mdstat, parse_personalities, ArrayMemberStatus, ArrayStatus, MdSysfs, MdstatEntry,
    MdstatMember, SystemRoot, HIGHEST_AUTO_MINOR,
};
