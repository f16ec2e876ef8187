//! tosskey: encrypt ephemeral disks with a key nobody keeps.
