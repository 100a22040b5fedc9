//! Identifiers and instants. The domain never makes them: ids come from the store, instants from
//! the caller's `Clock`, so every rule stays a plain function.

use std::fmt;

use serde::{Deserialize, Serialize};

macro_rules! id_type {
    ($(#[$doc:meta])* $name:ident, $prefix:literal) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(pub u64);

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, concat!($prefix, "{}"), self.0)
            }
        }
    };
}

id_type!(
    /// A pipeline run, allocated by the store.
    RunId,
    "run-"
);
id_type!(
    /// One job of a run (a matrix instance is a job of its own), allocated by the store.
    JobId,
    "job-"
);

/// A worker: the local machine, an agent, or an ephemeral container or pod.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct WorkerId(pub String);

impl fmt::Display for WorkerId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// An instant, in milliseconds since the Unix epoch, as told by the caller's clock.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// Milliseconds elapsed from `earlier` to `self`, zero if `earlier` is later.
    pub fn millis_since(self, earlier: Timestamp) -> u64 {
        u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0)
    }

    /// The instant in RFC 3339, in UTC, with milliseconds: `2026-12-06T21:03:20.123Z`, as the
    /// API writes instants (the store keeps the milliseconds).
    pub fn rfc3339(self) -> String {
        let (days, ms) = (self.0.div_euclid(86_400_000), self.0.rem_euclid(86_400_000));
        let (year, month, day) = civil_from_days(days);
        let secs = ms / 1000;
        format!(
            "{year:04}-{month:02}-{day:02}T{:02}:{:02}:{:02}.{:03}Z",
            secs / 3600,
            secs % 3600 / 60,
            secs % 60,
            ms % 1000
        )
    }

    /// An RFC 3339 date-time: `2026-12-06T21:03:20.123Z`, or with an offset (`+01:00`), `t` or
    /// a space for `T`, and a fraction of any length (milliseconds are kept, the rest dropped).
    /// `None` for anything else.
    pub fn parse_rfc3339(text: &str) -> Option<Timestamp> {
        let b = text.as_bytes();
        let digits = |range: std::ops::Range<usize>| -> Option<i64> {
            let part = b.get(range)?;
            part.iter()
                .all(u8::is_ascii_digit)
                .then(|| part.iter().fold(0i64, |n, d| n * 10 + i64::from(d - b'0')))
        };
        let separated = b.get(4) == Some(&b'-')
            && b.get(7) == Some(&b'-')
            && matches!(b.get(10), Some(b'T' | b't' | b' '))
            && b.get(13) == Some(&b':')
            && b.get(16) == Some(&b':');
        if !separated {
            return None;
        }
        let (year, month, day) = (digits(0..4)?, digits(5..7)?, digits(8..10)?);
        let (hour, minute, second) = (digits(11..13)?, digits(14..16)?, digits(17..19)?);
        let days_in_month = match month {
            2 if year % 4 == 0 && (year % 100 != 0 || year % 400 == 0) => 29,
            2 => 28,
            4 | 6 | 9 | 11 => 30,
            1..=12 => 31,
            _ => return None,
        };
        if day < 1 || day > days_in_month || hour > 23 || minute > 59 || second > 60 {
            return None;
        }
        let mut at = 19;
        let mut millis = 0;
        if b.get(at) == Some(&b'.') {
            let start = at + 1;
            at = start;
            while b.get(at).is_some_and(u8::is_ascii_digit) {
                at += 1;
            }
            if at == start {
                return None;
            }
            let kept = (at - start).min(3);
            millis = digits(start..start + kept)? * 10i64.pow(3 - kept as u32);
        }
        let offset = match b.get(at..)? {
            [b'Z' | b'z'] => 0,
            [sign @ (b'+' | b'-'), _, _, b':', _, _] => {
                let (h, m) = (digits(at + 1..at + 3)?, digits(at + 4..at + 6)?);
                if h > 23 || m > 59 {
                    return None;
                }
                let minutes = h * 60 + m;
                if *sign == b'+' { minutes } else { -minutes }
            }
            _ => return None,
        };
        let seconds =
            days_from_civil(year, month, day) * 86_400 + hour * 3600 + minute * 60 + second
                - offset * 60;
        Some(Timestamp(seconds * 1000 + millis))
    }
}

/// The proleptic Gregorian date of a day counted from 1970-01-01 (Howard Hinnant's algorithm).
fn civil_from_days(days: i64) -> (i64, i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (yoe + era * 400 + i64::from(month <= 2), month, day)
}

/// The day counted from 1970-01-01 of a proleptic Gregorian date: the inverse of
/// [`civil_from_days`].
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year.rem_euclid(400);
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

#[cfg(test)]
mod time_tests {
    use super::Timestamp;
    use proptest::prelude::*;

    #[test]
    fn instants_are_written_in_utc_with_milliseconds() {
        assert_eq!(Timestamp(0).rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp(951_782_400_000).rfc3339(),
            "2000-02-29T00:00:00.000Z"
        );
        assert_eq!(
            Timestamp(1_796_591_000_123).rfc3339(),
            "2026-12-06T21:03:20.123Z"
        );
        assert_eq!(Timestamp(-1).rfc3339(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn rfc3339_date_times_are_read_with_their_offset() {
        let read = |text: &str| Timestamp::parse_rfc3339(text).map(|t| t.0);
        assert_eq!(read("2026-12-06T21:03:20.123Z"), Some(1_796_591_000_123));
        assert_eq!(
            read("2026-12-06T22:03:20.123+01:00"),
            Some(1_796_591_000_123)
        );
        assert_eq!(read("2026-12-06 21:03:20Z"), Some(1_796_591_000_000));
        assert_eq!(read("2026-12-06T21:03:20.1239Z"), Some(1_796_591_000_123));
        assert_eq!(read("2026-12-06t21:03:20.5z"), Some(1_796_591_000_500));
        for bad in [
            "",
            "1796591000123",
            "2026-12-06",
            "2026-13-06T21:03:20Z",
            "2026-02-30T21:03:20Z",
            "2026-12-06T24:03:20Z",
            "2026-12-06T21:03:20",
            "2026-12-06T21:03:20.Z",
            "2026-12-06T21:03:20+0100",
            "2026-12-06T21:03:20Z ",
            "２026-12-06T21:03:20Z",
        ] {
            assert_eq!(read(bad), None, "{bad:?}");
        }
    }

    proptest! {
        #[test]
        fn what_is_written_reads_back(ms in -62_135_596_800_000i64..253_402_300_799_999) {
            let written = Timestamp(ms).rfc3339();
            prop_assert_eq!(Timestamp::parse_rfc3339(&written), Some(Timestamp(ms)));
        }
    }
}
