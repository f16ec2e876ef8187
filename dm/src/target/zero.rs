//! The `zero` target: no parameters; reads return zeros, writes are discarded (the stock raid10
//! recipe's metadata devices).

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::{syntax, TargetLine};
use crate::error::Error;
use crate::types::Sectors;

/// The parameters of a `zero` line: there are none, and the kernel shows none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ZeroParams;

impl ZeroParams {
    /// The line `<start> <length> zero`.
    pub fn line(start: Sectors, length: Sectors) -> Result<TargetLine, Error> {
        TargetLine::new(start, length, "zero", Zeroizing::new(String::new()), false)
    }
}

impl fmt::Display for ZeroParams {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl FromStr for ZeroParams {
    type Err = Error;
    fn from_str(params: &str) -> Result<Self, Error> {
        match params.trim() {
            "" => Ok(Self),
            other => Err(syntax(
                "zero",
                format!("it takes no parameters, not {other:?}"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn no_parameters_round_trip() {
        assert_eq!("".parse::<ZeroParams>().unwrap().to_string(), "");
        assert!("7:0 0".parse::<ZeroParams>().is_err());
        assert_eq!(
            ZeroParams::line(Sectors(8), Sectors(16))
                .unwrap()
                .display_elided(),
            "8 16 zero "
        );
    }
}
