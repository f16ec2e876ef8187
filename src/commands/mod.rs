//! One module per command: each takes a checked request from [`crate::cli`], reads the
//! machine through [`crate::host`], derives a [`crate::plan`] and has [`crate::exec`] carry
//! it out, or reads back what is running.

pub mod bench;
pub mod close;
pub mod health;
pub mod metrics;
pub mod mkfs;
pub mod provision;
pub mod recover;
pub mod status;
pub mod volume;

use crate::exec::journal::JournalDir;
use crate::host::sysfs::SystemRoot;

/// Where the commands look and keep their journals (parameters so tests can redirect them).
#[derive(Debug, Clone)]
pub struct Environment {
    pub root: SystemRoot,
    pub journals: JournalDir,
}

impl Default for Environment {
    fn default() -> Self {
        Environment {
            root: SystemRoot::host(),
            journals: JournalDir::default(),
        }
    }
}
