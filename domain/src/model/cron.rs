//! Cron schedules: five fields (minute, hour, day of month, month, day of week) or a macro such
//! as `@daily`.

use std::fmt;
use std::str::FromStr;

use super::ValueError;

/// A validated cron schedule, kept as written.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Cron(String);

const EXPECTED: &str = "a cron schedule of five fields (minute hour day-of-month month day-of-week, e.g. `0 3 * * *`) or @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually";

const MONTHS: [&str; 12] = [
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: [&str; 7] = ["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

struct Field {
    min: u32,
    max: u32,
    names: &'static [&'static str],
}

const FIELDS: [Field; 5] = [
    Field {
        min: 0,
        max: 59,
        names: &[],
    },
    Field {
        min: 0,
        max: 23,
        names: &[],
    },
    Field {
        min: 1,
        max: 31,
        names: &[],
    },
    Field {
        min: 1,
        max: 12,
        names: &MONTHS,
    },
    Field {
        min: 0,
        max: 7,
        names: &DAYS,
    },
];

impl Field {
    fn value(&self, text: &str) -> Option<u32> {
        if let Some(index) = self.names.iter().position(|n| n.eq_ignore_ascii_case(text)) {
            return Some(index as u32 + self.min);
        }
        if text.is_empty() || text.len() > 2 || !text.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        text.parse()
            .ok()
            .filter(|v| (self.min..=self.max).contains(v))
    }

    fn accepts(&self, text: &str) -> bool {
        text.split(',').all(|part| {
            let (range, step) = match part.split_once('/') {
                Some((range, step)) => (range, Some(step)),
                None => (part, None),
            };
            if let Some(step) = step {
                let ok = step.len() <= 2
                    && step
                        .parse::<u32>()
                        .is_ok_and(|s| s >= 1 && s <= self.max.max(1));
                if !ok {
                    return false;
                }
            }
            if range == "*" {
                return true;
            }
            match range.split_once('-') {
                Some((lo, hi)) => match (self.value(lo), self.value(hi)) {
                    (Some(lo), Some(hi)) => lo <= hi,
                    _ => false,
                },
                None => self.value(range).is_some(),
            }
        })
    }
}

impl FromStr for Cron {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let ok = match trimmed {
            "@hourly" | "@daily" | "@midnight" | "@weekly" | "@monthly" | "@yearly"
            | "@annually" => true,
            _ => {
                let parts: Vec<&str> = trimmed.split_whitespace().collect();
                parts.len() == 5 && parts.iter().zip(FIELDS.iter()).all(|(p, f)| f.accepts(p))
            }
        };
        if ok {
            Ok(Cron(trimmed.to_owned()))
        } else {
            Err(ValueError::new(text, EXPECTED))
        }
    }
}

impl Cron {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_accepts_fields_ranges_steps_lists_and_names() {
        for text in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 9-17 * * mon-fri",
            "0 0 1,15 * *",
            "@daily",
            "0 0 * jan sun",
        ] {
            assert!(text.parse::<Cron>().is_ok(), "{text}");
        }
    }

    #[test]
    fn cron_rejects_out_of_range_and_malformed_schedules() {
        for text in [
            "",
            "* * * *",
            "60 * * * *",
            "* 24 * * *",
            "* * 0 * *",
            "*/0 * * * *",
            "5-1 * * * *",
            "@often",
            "a b c d e",
            "* * * * * *",
        ] {
            assert!(text.parse::<Cron>().is_err(), "{text}");
        }
    }
}
