//! The kernel's skcipher through AF_ALG sockets (`linux/if_alg.h`), for `tosskey bench`:
//! the same cipher implementation dm-crypt gets from the crypto API, driven from userspace
//! one request per crypt sector with its own IV, as dm-crypt issues them.
//!
//! Only nix's safe wrappers are used (the binary crate forbids `unsafe`): `socket` +
//! `bind(sockaddr_alg)` make a transform, `setsockopt(ALG_SET_KEY)` keys it, every
//! `accept` gives an operation socket, and a request is one `sendmsg` carrying the
//! `ALG_SET_OP` and `ALG_SET_IV` control messages with the input, then one `read` of the
//! output.

use std::fs::File;
use std::io::{IoSlice, Read as _};
use std::os::fd::{AsRawFd as _, OwnedFd};

use nix::errno::Errno;
use nix::sys::socket::{
    accept, bind, sendmsg, setsockopt, socket, sockopt::AlgSetKey, AddressFamily, AlgAddr,
    ControlMessage, MsgFlags, SockFlag, SockType,
};

/// Why an AF_ALG transform could not be used.
#[derive(Debug, thiserror::Error)]
pub enum AfAlgError {
    /// `socket(AF_ALG)` failed: the kernel lacks `CONFIG_CRYPTO_USER_API_SKCIPHER`
    /// (module `algif_skcipher`), or a sandbox hides the address family.
    #[error("AF_ALG sockets are unavailable (load algif_skcipher, or run outside the sandbox): {source}")]
    Unavailable {
        #[source]
        source: Errno,
    },
    /// `bind` found no such skcipher (module not loaded or not built).
    #[error("the kernel has no skcipher {name} (load its modules, e.g. modprobe xts twofish_generic): {source}")]
    NoCipher {
        name: String,
        #[source]
        source: Errno,
    },
    /// Any later step (key, accept, request).
    #[error("AF_ALG {name}: {step} failed: {source}")]
    Call {
        name: String,
        step: &'static str,
        #[source]
        source: std::io::Error,
    },
}

impl AfAlgError {
    /// A few words for a table cell: `AF_ALG unavailable`, `no xts(aes) in kernel`.
    pub fn short(&self) -> String {
        match self {
            AfAlgError::Unavailable { .. } => "AF_ALG unavailable".to_owned(),
            AfAlgError::NoCipher { name, .. } => format!("no {name} in kernel"),
            AfAlgError::Call { step, .. } => format!("AF_ALG {step} failed"),
        }
    }
}

/// Encrypt or decrypt (`ALG_OP_ENCRYPT` / `ALG_OP_DECRYPT`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Direction {
    Encrypt,
    Decrypt,
}

impl Direction {
    fn op(self) -> libc::c_int {
        match self {
            Direction::Encrypt => libc::ALG_OP_ENCRYPT,
            Direction::Decrypt => libc::ALG_OP_DECRYPT,
        }
    }
}

/// An unkeyed transform socket bound to skcipher `name`. Binding makes the crypto API look
/// the algorithm up — requesting `crypto-<name>` and its parts from the kernel's module
/// helper when missing — which is also how `facilities` asks the kernel for a cipher.
pub fn bind_transform(name: &str) -> Result<OwnedFd, AfAlgError> {
    let transform = socket(
        AddressFamily::Alg,
        SockType::SeqPacket,
        SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|source| AfAlgError::Unavailable { source })?;
    bind(transform.as_raw_fd(), &AlgAddr::new("skcipher", name)).map_err(|source| {
        AfAlgError::NoCipher {
            name: name.to_owned(),
            source,
        }
    })?;
    Ok(transform)
}

/// A keyed kernel skcipher transform (`xts(twofish)`, ...). Operation sockets accepted
/// from it share its key; several may run at once on different threads.
#[derive(Debug)]
pub struct Skcipher {
    name: String,
    transform: OwnedFd,
}

impl Skcipher {
    /// Binds skcipher `name` and sets `key` (the whole XTS key, both halves). The key goes
    /// from the caller's buffer straight into the kernel; nothing here copies it.
    pub fn new(name: &str, key: &[u8]) -> Result<Self, AfAlgError> {
        let cipher = Skcipher {
            name: name.to_owned(),
            transform: bind_transform(name)?,
        };
        setsockopt(&cipher.transform, AlgSetKey::default(), &key)
            .map_err(|errno| cipher.call("ALG_SET_KEY", errno.into()))?;
        Ok(cipher)
    }

    /// A new operation socket (one per thread).
    pub fn operation(&self) -> Result<Operation<'_>, AfAlgError> {
        let socket = accept(&self.transform).map_err(|errno| self.call("accept", errno.into()))?;
        Ok(Operation {
            cipher: self,
            socket: File::from(socket),
        })
    }

    fn call(&self, step: &'static str, source: std::io::Error) -> AfAlgError {
        AfAlgError::Call {
            name: self.name.clone(),
            step,
            source,
        }
    }
}

/// One operation socket of a [`Skcipher`].
#[derive(Debug)]
pub struct Operation<'a> {
    cipher: &'a Skcipher,
    socket: File,
}

impl Operation<'_> {
    /// One request: `input` with `iv`, result into `output` (same length).
    pub fn crypt(
        &mut self,
        direction: Direction,
        iv: &[u8; 16],
        input: &[u8],
        output: &mut [u8],
    ) -> Result<(), AfAlgError> {
        debug_assert_eq!(input.len(), output.len());
        let op = direction.op();
        let control = [ControlMessage::AlgSetOp(&op), ControlMessage::AlgSetIv(iv)];
        let sent = sendmsg::<AlgAddr>(
            self.socket.as_raw_fd(),
            &[IoSlice::new(input)],
            &control,
            MsgFlags::empty(),
            None,
        )
        .map_err(|errno| self.cipher.call("sendmsg", errno.into()))?;
        if sent != input.len() {
            return Err(self.cipher.call(
                "sendmsg",
                std::io::Error::other(format!("sent {sent} of {} bytes", input.len())),
            ));
        }
        self.socket
            .read_exact(output)
            .map_err(|error| self.cipher.call("read", error))
    }
}

/// The driver the crypto API picks for `name` (highest priority skcipher of that name in
/// `/proc/crypto`, e.g. `xts-aes-aesni` or `xts(twofish-generic)`), with its priority.
/// Templates such as `xts(twofish)` are only listed once instantiated: read it after
/// [`Skcipher::new`].
pub fn kernel_driver(proc_crypto: &str, name: &str) -> Option<(String, u32)> {
    proc_crypto
        .split("\n\n")
        .filter_map(|entry| {
            let field = |key: &str| {
                entry.lines().find_map(|line| {
                    let (k, v) = line.split_once(':')?;
                    (k.trim() == key).then(|| v.trim().to_owned())
                })
            };
            let is_skcipher = field("type").as_deref() == Some("skcipher");
            (field("name").as_deref() == Some(name) && is_skcipher).then(|| {
                let priority = field("priority").and_then(|p| p.parse().ok()).unwrap_or(0);
                (field("driver").unwrap_or_default(), priority)
            })
        })
        .max_by_key(|(_, priority)| *priority)
}

#[cfg(test)]
mod tests {
    use super::*;

    const PROC_CRYPTO: &str = "\
name         : xts(aes)
driver       : xts-aes-aesni
module       : aesni_intel
priority     : 401
refcnt       : 1
selftest     : passed
internal     : no
type         : skcipher
async        : yes
blocksize    : 16

name         : xts(aes)
driver       : xts(ecb(aes-generic))
module       : kernel
priority     : 100
type         : skcipher

name         : __xts(aes)
driver       : __xts-aes-aesni
priority     : 401
type         : skcipher

name         : twofish
driver       : twofish-generic
priority     : 100
type         : cipher
";

    #[test]
    fn kernel_driver_picks_the_highest_priority_skcipher_of_that_name() {
        assert_eq!(
            kernel_driver(PROC_CRYPTO, "xts(aes)"),
            Some(("xts-aes-aesni".to_owned(), 401))
        );
        assert_eq!(kernel_driver(PROC_CRYPTO, "xts(twofish)"), None);
        // A plain cipher of that name is not an skcipher.
        assert_eq!(kernel_driver(PROC_CRYPTO, "twofish"), None);
    }

    #[test]
    fn short_reasons_fit_a_table_cell() {
        let unavailable = AfAlgError::Unavailable {
            source: Errno::EAFNOSUPPORT,
        };
        assert_eq!(unavailable.short(), "AF_ALG unavailable");
        let missing = AfAlgError::NoCipher {
            name: "xts(twofish)".to_owned(),
            source: Errno::ENOENT,
        };
        assert_eq!(missing.short(), "no xts(twofish) in kernel");
        assert!(missing.to_string().contains("modprobe"));
    }
}
