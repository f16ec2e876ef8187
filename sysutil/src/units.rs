//! Sizes in the two units the kernel's block interfaces use: 512-byte sectors (sysfs `size`,
//! device-mapper tables, md) and bytes. One constant, [`SECTOR_SIZE`], converts them.

use std::fmt;

/// Bytes in a sector as the kernel counts them (`SECTOR_SHIFT` 9): sysfs `size`, dm table
/// starts, lengths and offsets are always in these 512-byte units, whatever the device's
/// logical block size.
pub const SECTOR_SIZE: u64 = 512;

/// A count of 512-byte sectors.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Sectors(pub u64);

impl Sectors {
    /// The same size in bytes; `None` on overflow (beyond 8 EiB).
    pub fn to_bytes(self) -> Option<Bytes> {
        self.0.checked_mul(SECTOR_SIZE).map(Bytes)
    }
}

impl fmt::Display for Sectors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

/// A count of bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Bytes(pub u64);

impl Bytes {
    /// `n` KiB.
    pub const fn kib(n: u64) -> Bytes {
        Bytes(n << 10)
    }

    /// `n` MiB.
    pub const fn mib(n: u64) -> Bytes {
        Bytes(n << 20)
    }

    /// Shown as `N MiB` or `N KiB` when it is a whole number of them, else `N bytes` (for
    /// messages; [`fmt::Display`] shows the plain number).
    pub fn human(self) -> impl fmt::Display {
        struct Human(u64);
        impl fmt::Display for Human {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                if self.0 != 0 && self.0.is_multiple_of(1 << 20) {
                    write!(f, "{} MiB", self.0 >> 20)
                } else if self.0 != 0 && self.0.is_multiple_of(1 << 10) {
                    write!(f, "{} KiB", self.0 >> 10)
                } else {
                    write!(f, "{} bytes", self.0)
                }
            }
        }
        Human(self.0)
    }

    /// Whole sectors in this many bytes (rounded down).
    pub fn sectors_floor(self) -> Sectors {
        Sectors(self.0 / SECTOR_SIZE)
    }

    /// The sector count when this is a whole number of sectors.
    pub fn sectors_exact(self) -> Option<Sectors> {
        self.0
            .is_multiple_of(SECTOR_SIZE)
            .then_some(Sectors(self.0 / SECTOR_SIZE))
    }
}

impl fmt::Display for Bytes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_convert() {
        assert_eq!(Sectors(8).to_bytes(), Some(Bytes(4096)));
        assert_eq!(Sectors(u64::MAX).to_bytes(), None);
        assert_eq!(Bytes(4097).sectors_floor(), Sectors(8));
        assert_eq!(Bytes(4097).sectors_exact(), None);
        assert_eq!(Bytes(4096).sectors_exact(), Some(Sectors(8)));
        assert_eq!(Bytes::kib(512).human().to_string(), "512 KiB");
        assert_eq!(Bytes::mib(3).human().to_string(), "3 MiB");
        assert_eq!(Bytes(1000).human().to_string(), "1000 bytes");
        assert_eq!(Bytes(0).human().to_string(), "0 bytes");
        assert_eq!(Bytes::kib(512).to_string(), "524288");
    }
}
