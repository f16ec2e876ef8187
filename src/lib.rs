//! tosskey: encrypt ephemeral disks with a key nobody keeps.

pub mod cli;
pub mod config;
pub mod discover;
pub mod harden;
pub mod plan;
pub mod rollback;
pub mod safety;
pub mod signature;
pub mod state;
pub mod sysfs;
