//! tosskey: encrypt ephemeral disks with a key nobody keeps.
//!
//! The folders are the layers, top to bottom; a module imports only from its own folder or
//! from a layer below it (ARCHITECTURE.md; the `layers` tests check it):
//! [`cli`] → [`commands`] → [`exec`] → [`plan`] → [`host`] → [`error`], [`names`].

// No ioctl table here (the workspace lints allow unsafe only in those): forbid, so no
// module can opt back in.
#![forbid(unsafe_code)]

pub mod cli;
pub mod commands;
pub mod error;
pub mod exec;
pub mod host;
#[cfg(test)]
mod layers;
pub mod names;
pub mod plan;
