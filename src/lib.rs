//! tosskey: encrypt ephemeral disks with a key nobody keeps.

pub mod cli;
pub mod harden;
pub mod plan;
pub mod rollback;
pub mod state;
