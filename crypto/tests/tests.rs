//! The integration tests of tosskey-crypto: one test executable (one link) with a module
//! per subject; tests/locked_memory.rs is an executable of its own (it reads process-wide
//! memory state). This crate has no root tests; its SIMD-path tests are ignored where the
//! building CPU lacks the path.

mod common;
mod escrow;
mod escrow_segments;
mod kernel_vectors;
mod key;
mod key_scope;
mod properties;
mod sector_cipher;
mod spec;
mod twofish_paths;
