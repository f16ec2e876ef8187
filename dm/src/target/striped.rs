//! The `striped` target: `<#stripes> <chunk> <dev0> <offset0> [<dev1> <offset1>...]`.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::{syntax, TargetLine, Words};
use crate::error::Error;
use crate::types::{DevId, Sectors};
/// One member of a striped target: the usable region is `offset..size` of `device`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeMember {
    pub device: DevId,
    pub offset: Sectors,
    /// Size of the whole member device.
    pub size: Sectors,
}

/// A `striped` target: `<n> <chunk> <dev0> <off0> ...` over equal-width members.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedTarget {
    chunk: Sectors,
    members: Vec<StripeMember>,
}

impl StripedTarget {
    /// `chunk` must be a power of two of at least 8 sectors (4 KiB, so 4Kn members stay
    /// aligned); every member needs at least one chunk after its offset.
    pub fn new(chunk: Sectors, members: Vec<StripeMember>) -> Result<Self, Error> {
        let invalid = |reason: String| Error::InvalidTarget {
            target: "striped",
            reason,
        };
        if chunk.0 < 8 || !chunk.0.is_power_of_two() {
            return Err(invalid(format!(
                "chunk {chunk} sectors is not a power of two of at least 8 sectors"
            )));
        }
        if members.is_empty() {
            return Err(invalid("no members".into()));
        }
        for member in &members {
            if member.size.0.saturating_sub(member.offset.0) < chunk.0 {
                return Err(invalid(format!(
                    "member {} has less than one {chunk}-sector chunk after offset {}",
                    member.device, member.offset
                )));
            }
        }
        Ok(Self { chunk, members })
    }

    /// Usable sectors per member: the smallest member's room, rounded down to whole chunks.
    pub fn member_width(&self) -> Sectors {
        let min = self
            .members
            .iter()
            .map(|m| m.size.0 - m.offset.0)
            .min()
            .unwrap_or(0);
        Sectors(min / self.chunk.0 * self.chunk.0)
    }

    /// `n × floor((min − off) / chunk) × chunk`.
    pub fn length(&self) -> Sectors {
        Sectors(self.member_width().0 * self.members.len() as u64)
    }

    pub fn chunk(&self) -> Sectors {
        self.chunk
    }

    pub fn members(&self) -> &[StripeMember] {
        &self.members
    }

    /// The parameters `<n> <chunk> <dev0> <off0> ...`.
    pub fn params(&self) -> StripedParams {
        StripedParams {
            chunk: self.chunk,
            stripes: self
                .members
                .iter()
                .map(|m| StripeDevice {
                    device: m.device,
                    offset: m.offset,
                })
                .collect(),
        }
    }

    /// The target of a table line of `length` sectors with these parameters: each member's
    /// size is taken as its offset plus its share of `length` (the table does not say how
    /// large the devices are). Fails unless that rebuilds exactly `length` sectors.
    pub fn from_params(length: Sectors, params: &StripedParams) -> Result<Self, Error> {
        let count = params.stripes.len() as u64;
        let width = length.0.checked_div(count).unwrap_or(0);
        let members = params
            .stripes
            .iter()
            .map(|stripe| {
                let size = stripe.offset.0.checked_add(width).ok_or_else(|| {
                    syntax(
                        "striped",
                        format!("stripe {} ends beyond 2^64 sectors", stripe.device),
                    )
                })?;
                Ok(StripeMember {
                    device: stripe.device,
                    offset: stripe.offset,
                    size: Sectors(size),
                })
            })
            .collect::<Result<Vec<_>, Error>>()?;
        let target = Self::new(params.chunk, members)?;
        if target.length() != length {
            return Err(syntax(
                "striped",
                format!(
                    "{length} sectors are not whole {}-sector chunks on each of {count} stripes",
                    params.chunk
                ),
            ));
        }
        Ok(target)
    }

    /// The line `<start> <length> striped <n> <chunk> <dev0> <off0> ...`.
    pub fn line(&self, start: Sectors) -> Result<TargetLine, Error> {
        TargetLine::new(
            start,
            self.length(),
            "striped",
            Zeroizing::new(self.params().to_string()),
            false,
        )
    }
}

/// One stripe of a `striped` line: `<dev> <offset>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StripeDevice {
    pub device: DevId,
    pub offset: Sectors,
}

/// The parameters of a `striped` line: `<#stripes> <chunk> <dev0> <offset0> ...`, devices
/// as `MAJ:MIN`, the chunk in sectors.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StripedParams {
    pub chunk: Sectors,
    pub stripes: Vec<StripeDevice>,
}

impl fmt::Display for StripedParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{} {}", self.stripes.len(), self.chunk)?;
        for stripe in &self.stripes {
            write!(f, " {} {}", stripe.device, stripe.offset)?;
        }
        Ok(())
    }
}

impl FromStr for StripedParams {
    type Err = Error;
    fn from_str(params: &str) -> Result<Self, Error> {
        let mut words = Words::new("striped", params);
        let count: usize = words.number("stripe count")?;
        if count == 0 {
            return Err(syntax("striped", "the stripe count is 0".into()));
        }
        let chunk = words.sectors("chunk size")?;
        let stripes = (0..count)
            .map(|index| {
                Ok(StripeDevice {
                    device: words.device(&format!("device of stripe {index}"))?,
                    offset: words.sectors(&format!("offset of stripe {index}"))?,
                })
            })
            .collect::<Result<_, Error>>()?;
        words.end()?;
        Ok(Self { chunk, stripes })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn striped_length_is_whole_chunks_of_the_smallest_member() {
        let members = vec![
            StripeMember {
                device: DevId::new(7, 0),
                offset: Sectors(0),
                size: Sectors(10_000),
            },
            StripeMember {
                device: DevId::new(7, 1),
                offset: Sectors(8),
                size: Sectors(9_000),
            },
        ];
        let striped = StripedTarget::new(Sectors(1024), members).unwrap();
        // min(10000 - 0, 9000 - 8) = 8992 → 8 chunks of 1024 = 8192 per member.
        assert_eq!(striped.member_width(), Sectors(8192));
        assert_eq!(striped.length(), Sectors(16_384));
        let line = striped.line(Sectors(0)).unwrap();
        assert_eq!(line.display_elided(), "0 16384 striped 2 1024 7:0 0 7:1 8");
        assert!(StripedTarget::new(Sectors(1000), vec![]).is_err());
        let tiny = vec![StripeMember {
            device: DevId::new(7, 2),
            offset: Sectors(0),
            size: Sectors(100),
        }];
        assert!(StripedTarget::new(Sectors(128), tiny).is_err());
    }

    #[test]
    fn kernel_text_round_trips_and_rebuilds_the_target() {
        let text = "3 128 253:0 0 253:1 2048 8:32 8";
        let params: StripedParams = text.parse().unwrap();
        assert_eq!(params.to_string(), text);
        assert_eq!(params.chunk, Sectors(128));
        assert_eq!(
            params.stripes[1],
            StripeDevice {
                device: DevId::new(253, 1),
                offset: Sectors(2048)
            }
        );
        let target = StripedTarget::from_params(Sectors(3 * 1024), &params).unwrap();
        assert_eq!(target.params(), params);
        assert_eq!(target.length(), Sectors(3 * 1024));
        assert_eq!(
            target.line(Sectors(0)).unwrap().display_elided(),
            format!("0 3072 striped {text}")
        );
        // 1000 sectors per stripe is not whole 128-sector chunks.
        assert!(StripedTarget::from_params(Sectors(3000), &params).is_err());
        for bad in [
            "",
            "0 128",
            "2 128 253:0 0",
            "1 128 253:0 0 253:1 0",
            "1 x 253:0 0",
            "1 128 sda 0",
        ] {
            let err = bad.parse::<StripedParams>().unwrap_err().to_string();
            assert!(
                err.starts_with("cannot read striped table parameters"),
                "{bad}: {err}"
            );
        }
    }
}
