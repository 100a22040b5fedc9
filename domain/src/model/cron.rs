//! Cron schedules: five fields (minute, hour, day of month, month, day of week), or six with a
//! leading seconds field, or a macro such as `@daily`; optionally after a time zone
//! (`TZ=Europe/Paris 0 3 * * *`). Parsing and walking the ticks is the crate `croner`'s; the
//! time zones are chrono-tz's compiled-in database, so nothing here reads the system.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::str::FromStr;

use chrono::{DateTime, TimeZone, Utc};
use chrono_tz::Tz;
use croner::parser::{CronParser, Seconds, Year};

use super::ValueError;
use crate::ids::Timestamp;

/// A validated cron schedule, kept as written, with the pattern and time zone it stands for.
/// Two schedules are equal when they are written alike.
#[derive(Debug, Clone)]
pub struct Cron {
    text: String,
    pattern: croner::Cron,
    zone: Tz,
}

const EXPECTED: &str = "a cron schedule of five fields (minute hour day-of-month month day-of-week, e.g. `0 3 * * *`), six with a leading seconds field, or @hourly, @daily, @midnight, @weekly, @monthly, @yearly, @annually; optionally after `TZ=Area/City `";
const BAD_ZONE: &str =
    "a time zone of the IANA database after `TZ=`, e.g. `TZ=Europe/Paris 0 3 * * *` or `TZ=UTC …`";
const NEVER: &str = "a schedule with at least one tick (this one names a day that never comes, such as 30 February)";

impl FromStr for Cron {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let trimmed = text.trim();
        let (zone, pattern) = match trimmed.strip_prefix("TZ=") {
            Some(rest) => {
                let (zone, pattern) = rest.split_once(char::is_whitespace).unwrap_or((rest, ""));
                let zone = zone
                    .parse::<Tz>()
                    .map_err(|_| ValueError::new(text, BAD_ZONE))?;
                (zone, pattern.trim())
            }
            None => (Tz::UTC, trimmed),
        };
        let pattern = match pattern {
            // croner knows the others; `@midnight` is Vixie cron's `@daily`.
            p if p.eq_ignore_ascii_case("@midnight") => "@daily",
            p => p,
        };
        let fields = pattern.split_whitespace().count();
        if !(pattern.starts_with('@') || fields == 5 || fields == 6) {
            return Err(ValueError::new(text, EXPECTED));
        }
        let parsed = CronParser::builder()
            .seconds(Seconds::Optional)
            .year(Year::Disallowed)
            .build()
            .parse(pattern)
            .map_err(|_| ValueError::new(text, EXPECTED))?;
        let cron = Cron {
            text: trimmed.to_owned(),
            pattern: parsed,
            zone,
        };
        // 2000-01-01T00:00:00Z: any pattern that can match does within the years croner walks.
        if cron.next_after(Timestamp(946_684_800_000)).is_none() {
            return Err(ValueError::new(text, NEVER));
        }
        Ok(cron)
    }
}

impl Cron {
    /// The schedule as written.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The time zone its fields are read in (UTC unless written `TZ=…`).
    pub fn zone(&self) -> &str {
        self.zone.name()
    }

    fn at(&self, time: Timestamp) -> Option<DateTime<Tz>> {
        Utc.timestamp_millis_opt(time.0)
            .single()
            .map(|t| t.with_timezone(&self.zone))
    }

    /// The first tick strictly after `time`; `None` past the years croner walks.
    pub fn next_after(&self, time: Timestamp) -> Option<Timestamp> {
        let start = self.at(time)?;
        self.pattern
            .find_next_occurrence(&start, false)
            .ok()
            .map(|t| Timestamp(t.timestamp_millis()))
    }

    /// The last tick at or before `time`; `None` before the years croner walks.
    pub fn last_at_or_before(&self, time: Timestamp) -> Option<Timestamp> {
        let start = self.at(time)?;
        self.pattern
            .find_previous_occurrence(&start, true)
            .ok()
            .map(|t| Timestamp(t.timestamp_millis()))
    }
}

impl PartialEq for Cron {
    fn eq(&self, other: &Cron) -> bool {
        self.text == other.text
    }
}

impl Eq for Cron {}

impl Hash for Cron {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.text.hash(state);
    }
}

impl fmt::Display for Cron {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cron_accepts_fields_ranges_steps_lists_names_seconds_and_zones() {
        for text in [
            "0 3 * * *",
            "*/15 * * * *",
            "0 9-17 * * mon-fri",
            "0 0 1,15 * *",
            "@daily",
            "@midnight",
            "0 0 * jan sun",
            "* * * * * *",
            "*/10 * * * * *",
            "TZ=Europe/Paris 0 3 * * *",
            "TZ=UTC @hourly",
            "0 0 L * *",
            "0 0 15W * *",
            "0 0 * * mon#2",
            "0 0 ? * mon",
        ] {
            assert!(text.parse::<Cron>().is_ok(), "{text}");
        }
    }

    #[test]
    fn cron_rejects_out_of_range_malformed_and_never_firing_schedules() {
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
            "0 0 0 * * * 2030",
            "0 0 30 2 *",
            "TZ=Mars/Olympus 0 3 * * *",
            "TZ=Europe/Paris",
        ] {
            assert!(text.parse::<Cron>().is_err(), "{text}");
        }
    }

    #[test]
    fn a_zone_moves_the_ticks_with_daylight_saving_time() {
        let paris: Cron = "TZ=Europe/Paris 0 3 * * *".parse().unwrap();
        // 2026-01-10T00:00Z: winter, 03:00 in Paris is 02:00Z.
        let winter = paris.next_after(Timestamp(1_768_003_200_000)).unwrap();
        assert_eq!(winter, Timestamp(1_768_003_200_000 + 2 * 3_600_000));
        // 2026-07-10T00:00Z: summer, 03:00 in Paris is 01:00Z.
        let summer = paris.next_after(Timestamp(1_783_641_600_000)).unwrap();
        assert_eq!(summer, Timestamp(1_783_641_600_000 + 3_600_000));
        assert_eq!(paris.zone(), "Europe/Paris");
    }
}
