//! The `linear` target: `<dev> <offset>`.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::{TargetLine, Words};
use crate::error::Error;
use crate::types::{DevId, Sectors};

/// A `linear` target: `length` sectors of `device` from sector `offset`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearTarget {
    pub device: DevId,
    pub offset: Sectors,
    pub length: Sectors,
}

impl LinearTarget {
    /// The target of a table line of `length` sectors with these parameters.
    pub fn from_params(length: Sectors, params: LinearParams) -> Self {
        Self {
            device: params.device,
            offset: params.offset,
            length,
        }
    }

    /// The parameters `<dev> <offset>`.
    pub fn params(&self) -> LinearParams {
        LinearParams {
            device: self.device,
            offset: self.offset,
        }
    }

    /// The line `<start> <length> linear <dev> <offset>`.
    pub fn line(&self, start: Sectors) -> Result<TargetLine, Error> {
        TargetLine::new(
            start,
            self.length,
            "linear",
            Zeroizing::new(self.params().to_string()),
            false,
        )
    }
}

/// The parameters of a `linear` line: `<dev> <offset>`, the device as `MAJ:MIN` (the kernel
/// shows a device given by path this way too).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LinearParams {
    pub device: DevId,
    pub offset: Sectors,
}

impl fmt::Display for LinearParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.device, self.offset)
    }
}

impl FromStr for LinearParams {
    type Err = Error;
    fn from_str(params: &str) -> Result<Self, Error> {
        let mut words = Words::new("linear", params);
        let parsed = Self {
            device: words.device("device")?,
            offset: words.sectors("offset")?,
        };
        words.end()?;
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn linear_line() {
        let linear = LinearTarget {
            device: DevId::new(8, 16),
            offset: Sectors(2048),
            length: Sectors(100),
        };
        assert_eq!(
            linear.line(Sectors(0)).unwrap().display_elided(),
            "0 100 linear 8:16 2048"
        );
    }

    #[test]
    fn kernel_text_round_trips() {
        let text = "253:3 2048";
        let params: LinearParams = text.parse().unwrap();
        assert_eq!(params.to_string(), text);
        let target = LinearTarget::from_params(Sectors(100), params);
        assert_eq!(target.params(), params);
        assert_eq!(
            (target.device, target.offset),
            (DevId::new(253, 3), Sectors(2048))
        );
        for bad in ["", "8:16", "8:16 x", "/dev/sda 0", "8:16 0 7"] {
            let err = bad.parse::<LinearParams>().unwrap_err().to_string();
            assert!(
                err.starts_with("cannot read linear table parameters"),
                "{bad}: {err}"
            );
        }
    }
}
