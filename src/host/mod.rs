//! What the machine has, read under one [`sysfs::SystemRoot`]: block devices and their
//! holders, mounts, which disks a cloud attached, which of them may be touched, and what data a
//! member already carries. Nothing here changes a device.

pub mod discover;
pub mod safety;
pub mod signature;
pub mod sysfs;
pub mod wait;
