use std::io;
use std::path::PathBuf;

use nix::errno::Errno;

/// Everything that can go wrong bringing a kernel facility up.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// A facility is neither present nor could be brought up. The fix is in the message:
    /// the module to load and the kernel configuration option that provides it; the
    /// source says why this crate's own load failed.
    #[error("kernel facility {facility} is unavailable{request}; load module {module} (modprobe {module}), or boot a kernel built with {config}")]
    Unavailable {
        facility: String,
        module: String,
        config: String,
        /// `" (the kernel's module request failed: ...)"`, or empty when there is no such
        /// path for this facility.
        request: String,
        #[source]
        load: Box<Error>,
    },

    /// `modules.dep` (or another index file) could not be read.
    #[error("cannot read the module index {path}")]
    ModuleTree {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// The name is neither a module, an alias nor a built-in of this kernel's tree.
    #[error("{module} is not in the module tree {dir}")]
    NotInTree { module: String, dir: PathBuf },

    /// The module file could not be opened.
    #[error("cannot open module file {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    /// finit_module(2) refused the module.
    #[error("finit_module {module} ({path}) failed")]
    Load {
        module: String,
        path: PathBuf,
        #[source]
        source: Errno,
    },

    /// The administrator's modprobe configuration forbids loading the module (`blacklist`,
    /// `install`, `modprobe.blacklist=`): the finit_module fallback does not go around it.
    #[error("the modprobe configuration forbids loading {module} (`{rule}` at {at}), and tosskey does not load a module behind such a rule: remove the rule, or load the module yourself before tosskey runs")]
    Forbidden {
        module: String,
        rule: String,
        at: String,
    },

    /// The module is compressed and this kernel cannot decompress modules itself.
    #[error("{module} is compressed ({path}) and this kernel does not decompress modules (needs Linux 5.17 with CONFIG_MODULE_DECOMPRESS for this format); load it with modprobe, or install uncompressed modules")]
    CompressedUnsupported {
        module: String,
        path: PathBuf,
        #[source]
        source: Errno,
    },

    /// Every module loaded, yet the kernel still does not show the facility.
    #[error("loaded {modules}, but the kernel still does not offer it")]
    NoEffect { modules: String },

    /// A kernel status file (`/proc/modules`, `/proc/sys/kernel/osrelease`, ...) could
    /// not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}
