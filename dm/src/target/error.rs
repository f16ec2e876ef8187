//! The `error` target: no parameters; every I/O fails (what `shred` leaves behind).

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::{syntax, TargetLine};
use crate::error::Error;
use crate::types::Sectors;

/// The parameters of an `error` line: there are none, and the kernel shows none.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ErrorParams;

impl ErrorParams {
    /// The line `<start> <length> error`.
    pub fn line(start: Sectors, length: Sectors) -> Result<TargetLine, Error> {
        TargetLine::new(start, length, "error", Zeroizing::new(String::new()), false)
    }
}

impl fmt::Display for ErrorParams {
    fn fmt(&self, _: &mut fmt::Formatter<'_>) -> fmt::Result {
        Ok(())
    }
}

impl FromStr for ErrorParams {
    type Err = Error;
    fn from_str(params: &str) -> Result<Self, Error> {
        match params.trim() {
            "" => Ok(Self),
            other => Err(syntax(
                "error",
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
        assert_eq!("".parse::<ErrorParams>().unwrap().to_string(), "");
        assert!("7:0 0".parse::<ErrorParams>().is_err());
        assert_eq!(
            ErrorParams::line(Sectors(8), Sectors(16))
                .unwrap()
                .display_elided(),
            "8 16 error "
        );
    }
}
