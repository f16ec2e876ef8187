//! Host tests (no root) at instance-store scale: sparse images of 60, 336 and 512 TiB
//! (over the 16 TiB an ext4 host file can be, so on `/dev/shm`; `TOSSKEY_LARGE_IMAGE_DIR`
//! overrides), each formatted by tosskey-xfs and by `mkfs.xfs -K` and compared field by
//! field as in `host_xfsprogs.rs`, with `xfs_repair -n` clean. One size at a time: the
//! mkfs.xfs image holds its 2 GiB log in RAM until it is deleted.

use crate::common::{assert_same_as_mkfs, Case, TIB};

#[test]
fn same_as_mkfs_xfs_at_60_336_and_512_tib() {
    for size in [60 * TIB, 336 * TIB, 512 * TIB] {
        assert_same_as_mkfs(Case::plain(size));
    }
}
