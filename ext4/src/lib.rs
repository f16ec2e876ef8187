//! tosskey-ext4: a pure-Rust ext4 formatter.
