//! tosskey: encrypt ephemeral disks with a key nobody keeps.

pub mod af_alg;
pub mod bench;
pub mod cli;
pub mod config;
pub mod discover;
pub mod exit;
pub mod facilities;
pub mod harden;
pub mod mount;
pub mod plan;
pub mod provision;
pub mod recover;
pub mod rollback;
pub mod safety;
pub mod signature;
pub mod stack;
pub mod state;
pub mod sysfs;
pub mod verify;
pub mod volumes;
