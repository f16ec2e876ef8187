//! tosskey: encrypt ephemeral disks with a key nobody keeps.

// No ioctl table here (the workspace lints allow unsafe only in those): forbid, so no
// module can opt back in.
#![forbid(unsafe_code)]

pub mod af_alg;
pub mod bench;
pub mod cli;
pub mod config;
pub mod discover;
pub mod error;
pub mod exec;
pub mod facilities;
pub mod harden;
pub mod health;
pub mod kernel;
pub mod measure;
pub mod metrics;
pub mod mkfs;
pub mod mount;
pub mod plan;
pub mod provision;
pub mod recover;
pub mod rollback;
pub mod safety;
pub mod shell;
pub mod signature;
pub mod state;
pub mod sysfs;
pub mod verify;
pub mod volumes;
