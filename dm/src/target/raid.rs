//! The `raid` target (dm-raid, md's personalities behind a dm table): `<raid_type>
//! <#raid_params> <chunk_size> [<param>...] <#raid_devs> <meta_dev0> <dev0> [...]`.
//!
//! tosskey emits it only in the stock-tools recipe for md raid10 (`mdadm --build` makes no
//! raid10): `raid raid10 6 <chunk> nosync raid10_copies 2 raid10_format near <n> <meta> <dev>
//! ...` over `zero` metadata devices. The parameter count counts the words from the chunk size
//! to the last option; `sync` and `nosync` stand alone, every other option takes one value.

use std::fmt;
use std::str::FromStr;

use zeroize::Zeroizing;

use super::{syntax, TargetLine, Words};
use crate::error::Error;
use crate::types::{DevId, Sectors};

/// Options without a value; every other dm-raid option is `<name> <value>`.
const FLAG_OPTIONS: [&str; 2] = ["sync", "nosync"];

/// One optional raid parameter, as written: `nosync`, or `raid10_copies 2`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidOption {
    pub name: String,
    /// `None` for `sync` and `nosync`.
    pub value: Option<String>,
}

impl RaidOption {
    /// A `<name> <value>` option.
    pub fn with_value(name: &str, value: impl fmt::Display) -> Self {
        Self {
            name: name.to_owned(),
            value: Some(value.to_string()),
        }
    }

    /// A flag (`sync`, `nosync`).
    pub fn flag(name: &str) -> Self {
        Self {
            name: name.to_owned(),
            value: None,
        }
    }

    fn word_count(&self) -> usize {
        1 + usize::from(self.value.is_some())
    }
}

/// One raid device slot: metadata device and data device, `-` when absent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RaidDevice {
    pub metadata: Option<DevId>,
    pub data: Option<DevId>,
}

/// The parameters of a `raid` line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RaidParams {
    /// `raid0`, `raid1`, `raid10`, `raid5_la`...
    pub raid_type: String,
    /// Chunk size in sectors (0 for raid1).
    pub chunk: Sectors,
    pub options: Vec<RaidOption>,
    pub devices: Vec<RaidDevice>,
}

impl RaidParams {
    /// md raid10 in the near layout with `copies` copies, no initial resync (`nosync`: the
    /// array's content is whatever the members hold, as for an array built clean).
    pub fn raid10_near_nosync(chunk: Sectors, copies: u32, devices: Vec<RaidDevice>) -> Self {
        Self {
            raid_type: "raid10".to_owned(),
            chunk,
            options: vec![
                RaidOption::flag("nosync"),
                RaidOption::with_value("raid10_copies", copies),
                RaidOption::with_value("raid10_format", "near"),
            ],
            devices,
        }
    }

    /// The word indices of the present devices (see [`super::TargetParams::device_words`]):
    /// after the type, the count, the chunk, the option words and the device count.
    pub(super) fn device_words(&self) -> Vec<usize> {
        let first = 4 + self
            .options
            .iter()
            .map(RaidOption::word_count)
            .sum::<usize>();
        self.devices
            .iter()
            .enumerate()
            .flat_map(|(slot, device)| {
                [
                    device.metadata.map(|_| first + 2 * slot),
                    device.data.map(|_| first + 2 * slot + 1),
                ]
            })
            .flatten()
            .collect()
    }

    /// The line `<start> <length> raid <params>`.
    pub fn line(&self, start: Sectors, length: Sectors) -> Result<TargetLine, Error> {
        TargetLine::new(
            start,
            length,
            "raid",
            Zeroizing::new(self.to_string()),
            false,
        )
    }
}

fn device_word(device: Option<DevId>) -> String {
    device.map_or_else(|| "-".to_owned(), |d| d.to_string())
}

impl fmt::Display for RaidParams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let count = 1 + self
            .options
            .iter()
            .map(RaidOption::word_count)
            .sum::<usize>();
        write!(f, "{} {count} {}", self.raid_type, self.chunk)?;
        for option in &self.options {
            write!(f, " {}", option.name)?;
            if let Some(value) = &option.value {
                write!(f, " {value}")?;
            }
        }
        write!(f, " {}", self.devices.len())?;
        for device in &self.devices {
            write!(
                f,
                " {} {}",
                device_word(device.metadata),
                device_word(device.data)
            )?;
        }
        Ok(())
    }
}

impl FromStr for RaidParams {
    type Err = Error;
    fn from_str(params: &str) -> Result<Self, Error> {
        let mut words = Words::new("raid", params);
        let raid_type = words.next("raid type")?.to_owned();
        let count: usize = words.number("raid parameter count")?;
        if count == 0 {
            return Err(syntax(
                "raid",
                "the raid parameter count is 0 (the chunk size is always one)".into(),
            ));
        }
        let chunk = words.sectors("chunk size")?;
        let mut left = count - 1;
        let mut options = Vec::new();
        while left > 0 {
            let name = words.next("raid parameter")?;
            let option = if FLAG_OPTIONS.contains(&name) {
                RaidOption::flag(name)
            } else if left >= 2 {
                RaidOption::with_value(name, words.next("raid parameter value")?)
            } else {
                return Err(syntax(
                    "raid",
                    format!("the value of {name:?} lies beyond the parameter count {count}"),
                ));
            };
            left -= option.word_count();
            options.push(option);
        }
        let device_count: usize = words.number("raid device count")?;
        let mut device = |what: &str| -> Result<Option<DevId>, Error> {
            match words.peek() {
                Some("-") => words.next(what).map(|_| None),
                _ => words.device(what).map(Some),
            }
        };
        let devices = (0..device_count)
            .map(|slot| {
                Ok(RaidDevice {
                    metadata: device(&format!("metadata device {slot}"))?,
                    data: device(&format!("data device {slot}"))?,
                })
            })
            .collect::<Result<_, Error>>()?;
        words.end()?;
        Ok(Self {
            raid_type,
            chunk,
            options,
            devices,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(meta_minor: u32, data_minor: u32) -> RaidDevice {
        RaidDevice {
            metadata: Some(DevId::new(253, meta_minor)),
            data: Some(DevId::new(7, data_minor)),
        }
    }

    #[test]
    fn the_stock_raid10_recipe_round_trips() {
        let params = RaidParams::raid10_near_nosync(
            Sectors(1024),
            2,
            vec![slot(0, 0), slot(1, 1), slot(2, 2)],
        );
        let text = "raid10 6 1024 nosync raid10_copies 2 raid10_format near 3 253:0 7:0 253:1 7:1 253:2 7:2";
        assert_eq!(params.to_string(), text);
        assert_eq!(text.parse::<RaidParams>().unwrap(), params);
        assert_eq!(
            params
                .line(Sectors(0), Sectors(786_432))
                .unwrap()
                .display_elided(),
            format!("0 786432 raid {text}")
        );
    }

    #[test]
    fn absent_devices_and_bare_chunk_round_trip() {
        let text = "raid1 1 0 2 - 7:0 - 7:1";
        let params: RaidParams = text.parse().unwrap();
        assert_eq!(params.devices[0].metadata, None);
        assert_eq!(params.devices[1].data, Some(DevId::new(7, 1)));
        assert!(params.options.is_empty());
        assert_eq!(params.to_string(), text);
    }

    #[test]
    fn malformed_raid_text_is_refused() {
        for bad in [
            "",
            "raid10",
            "raid10 0 1024 0",
            "raid10 2 1024 raid10_copies 2 0",
            "raid10 3 1024 nosync 1 - 7:0",
            "raid10 1 1024 2 - 7:0",
            "raid10 1 1024 1 - 7:0 extra",
            "raid10 1 1024 1 sda 7:0",
        ] {
            let err = bad.parse::<RaidParams>().unwrap_err().to_string();
            assert!(
                err.starts_with("cannot read raid table parameters"),
                "{bad}: {err}"
            );
        }
    }
}
