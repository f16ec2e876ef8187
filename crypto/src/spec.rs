//! dm-crypt cipher specifications (`twofish-xts-plain64`, `aes-xts-plain64`).

/// The block cipher under XTS. Both have 128-bit blocks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum BlockCipher {
    Aes,
    Twofish,
}
