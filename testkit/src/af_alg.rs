//! Asking the kernel crypto API for an algorithm by name, through an `AF_ALG` socket.
//!
//! Template instances such as `xts(twofish)` exist in `/proc/crypto` only after something
//! requested them (dm-crypt does so at TABLE_LOAD). Binding an `AF_ALG` socket is the
//! smallest userspace request: the kernel instantiates (and self-tests) the algorithm or
//! answers ENOENT. Layout from `/usr/include/linux/if_alg.h` (`struct sockaddr_alg`).
#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};

use tosskey_sysutil::cvt;

/// Binds an `AF_ALG` socket of `kind` (e.g. "skcipher") to `name` (e.g. "xts(twofish)").
/// Needs the `af_alg` and `algif_<kind>` modules. The socket is closed on return; the
/// instantiated algorithm stays registered.
pub(crate) fn request_algorithm(kind: &str, name: &str) -> io::Result<()> {
    let mut address = libc::sockaddr_alg {
        salg_family: libc::sa_family_t::try_from(libc::AF_ALG).map_err(io::Error::other)?,
        salg_type: [0; 14],
        salg_feat: 0,
        salg_mask: 0,
        salg_name: [0; 64],
    };
    // Both fields are NUL-terminated C strings: leave at least one trailing zero.
    if kind.len() >= address.salg_type.len() || name.len() >= address.salg_name.len() {
        return Err(io::Error::from_raw_os_error(libc::ENAMETOOLONG));
    }
    address.salg_type[..kind.len()].copy_from_slice(kind.as_bytes());
    address.salg_name[..name.len()].copy_from_slice(name.as_bytes());

    // SAFETY: socket() takes no pointers; a non-negative result is a new descriptor
    // owned by nobody else.
    let raw =
        cvt(unsafe { libc::socket(libc::AF_ALG, libc::SOCK_SEQPACKET | libc::SOCK_CLOEXEC, 0) })?;
    // SAFETY: `raw` was just returned by socket() and is not owned elsewhere.
    let socket = unsafe { OwnedFd::from_raw_fd(raw) };
    let length = libc::socklen_t::try_from(std::mem::size_of::<libc::sockaddr_alg>())
        .map_err(io::Error::other)?;
    // SAFETY: `address` is a live, initialised sockaddr_alg and `length` is its exact
    // size; bind() only reads it. `socket` is open for the duration of the call.
    let ret = unsafe {
        libc::bind(
            socket.as_raw_fd(),
            std::ptr::from_ref(&address).cast::<libc::sockaddr>(),
            length,
        )
    };
    cvt(ret).map(drop)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `struct sockaddr_alg` (libc's definition, which `request_algorithm` fills) against
    /// `linux/if_alg.h` as gcc compiles it.
    #[test]
    fn sockaddr_alg_matches_the_installed_uapi_header() {
        use std::mem::{offset_of, size_of};
        const C_PROGRAM: &str = r#"
#include <stdio.h>
#include <stddef.h>
#include <linux/if_alg.h>
#define F(f) printf("offsetof(" #f ")=%zu\n", offsetof(struct sockaddr_alg, f))
int main(void) {
    printf("sizeof(sockaddr_alg)=%zu\n", sizeof(struct sockaddr_alg));
    F(salg_family); F(salg_type); F(salg_feat); F(salg_mask); F(salg_name);
    return 0;
}
"#;
        let rust = format!(
            "sizeof(sockaddr_alg)={}\noffsetof(salg_family)={}\noffsetof(salg_type)={}\n\
             offsetof(salg_feat)={}\noffsetof(salg_mask)={}\noffsetof(salg_name)={}\n",
            size_of::<libc::sockaddr_alg>(),
            offset_of!(libc::sockaddr_alg, salg_family),
            offset_of!(libc::sockaddr_alg, salg_type),
            offset_of!(libc::sockaddr_alg, salg_feat),
            offset_of!(libc::sockaddr_alg, salg_mask),
            offset_of!(libc::sockaddr_alg, salg_name),
        );
        assert_eq!(
            crate::uapi_header::report_of("linux/if_alg.h", C_PROGRAM),
            rust
        );
    }

    #[test]
    fn overlong_names_are_refused_before_any_syscall() {
        let name = "x".repeat(64);
        let error = request_algorithm("skcipher", &name).unwrap_err();
        assert_eq!(error.raw_os_error(), Some(libc::ENAMETOOLONG));
    }
}
