//! Quantities users write as text: durations (`90s`, `10m`, `1h30m`), CPU (`500m`, `2`, `0.5`) and
//! memory (`512Mi`, `2Gi`, `1G`). Each parses once, validates, and prints back canonically.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};

use super::ValueError;

/// A length of time, to the second: `90s`, `10m`, `1h30m`, `2d`. At least one second, at most 365 days.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Duration {
    seconds: u64,
}

impl Duration {
    /// The longest duration Hodei accepts: a year.
    pub const MAX_SECONDS: u64 = 365 * 24 * 3600;
    const EXPECTED: &'static str =
        "a duration such as `90s`, `10m` or `1h30m` (units d, h, m, s), from 1s to 365d";

    /// A duration of `seconds`, if it is within 1 s and 365 d.
    pub const fn from_secs(seconds: u64) -> Option<Duration> {
        if seconds == 0 || seconds > Self::MAX_SECONDS {
            None
        } else {
            Some(Duration { seconds })
        }
    }

    /// Parses at compile time; used by the `timeout!` macro so that a bad literal fails the build.
    ///
    /// # Panics
    /// When `text` is not a valid duration (at compile time when used in a `const` context).
    pub const fn parse_const(text: &str) -> Duration {
        // `stringify!("10m")` keeps the quotes: look inside them.
        let bytes = text.as_bytes();
        let quoted = bytes.len() >= 2 && bytes[0] == b'"' && bytes[bytes.len() - 1] == b'"';
        let inner = if quoted {
            bytes.split_at(bytes.len() - 1).0.split_at(1).1
        } else {
            bytes
        };
        match parse_duration(inner) {
            Some(duration) => duration,
            None => panic!("invalid duration: expected e.g. 90s, 10m or 1h30m"),
        }
    }

    /// The length in whole seconds.
    pub const fn as_secs(self) -> u64 {
        self.seconds
    }

    /// As a standard library duration.
    pub const fn to_std(self) -> std::time::Duration {
        std::time::Duration::from_secs(self.seconds)
    }
}

const fn parse_duration(bytes: &[u8]) -> Option<Duration> {
    if bytes.is_empty() {
        return None;
    }
    let mut i = 0;
    let mut total: u64 = 0;
    // Units must come in decreasing order, each at most once: 1h30m, not 30m1h.
    let mut last_unit_rank = 5;
    while i < bytes.len() {
        let start = i;
        let mut value: u64 = 0;
        while i < bytes.len() && bytes[i].is_ascii_digit() {
            value = match value.checked_mul(10) {
                Some(v) => match v.checked_add((bytes[i] - b'0') as u64) {
                    Some(v) => v,
                    None => return None,
                },
                None => return None,
            };
            i += 1;
        }
        if i == start || i == bytes.len() {
            return None;
        }
        let (rank, factor) = match bytes[i] {
            b'd' => (4, 86_400),
            b'h' => (3, 3_600),
            b'm' => (2, 60),
            b's' => (1, 1),
            _ => return None,
        };
        if rank >= last_unit_rank {
            return None;
        }
        last_unit_rank = rank;
        i += 1;
        total = match value.checked_mul(factor) {
            Some(v) => match total.checked_add(v) {
                Some(t) => t,
                None => return None,
            },
            None => return None,
        };
    }
    Duration::from_secs(total)
}

impl FromStr for Duration {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        parse_duration(text.trim().as_bytes()).ok_or_else(|| ValueError::new(text, Self::EXPECTED))
    }
}

impl fmt::Display for Duration {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut rest = self.seconds;
        for (unit, factor) in [("d", 86_400), ("h", 3_600), ("m", 60), ("s", 1)] {
            if rest >= factor {
                write!(f, "{}{unit}", rest / factor)?;
                rest %= factor;
            }
        }
        Ok(())
    }
}

/// CPU in millicores: `500m` is half a core, `2` two cores, `0.5` half a core. From 1m to 1024 cores.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Cpu {
    millis: u32,
}

impl Cpu {
    const MAX_MILLIS: u64 = 1024 * 1000;
    const EXPECTED: &'static str =
        "a CPU amount such as `500m` (millicores), `2` or `0.5` (cores), at most 1024 cores";

    /// `millis` thousandths of a core, if within 1m and 1024 cores.
    pub fn from_millis(millis: u32) -> Option<Cpu> {
        (millis > 0 && u64::from(millis) <= Self::MAX_MILLIS).then_some(Cpu { millis })
    }

    /// Thousandths of a core.
    pub fn millis(self) -> u32 {
        self.millis
    }
}

impl FromStr for Cpu {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ValueError::new(text, Self::EXPECTED);
        let trimmed = text.trim();
        let millis = if let Some(m) = trimmed.strip_suffix('m') {
            if m.is_empty() || !m.bytes().all(|b| b.is_ascii_digit()) || m.len() > 10 {
                return Err(err());
            }
            m.parse::<u64>().map_err(|_| err())?
        } else {
            let (whole, frac) = trimmed.split_once('.').unwrap_or((trimmed, ""));
            let digits_ok = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
            if (whole.is_empty() && frac.is_empty())
                || !digits_ok(whole)
                || !digits_ok(frac)
                || frac.len() > 3
                || whole.len() > 7
            {
                return Err(err());
            }
            let whole: u64 = if whole.is_empty() {
                0
            } else {
                whole.parse().map_err(|_| err())?
            };
            let frac: u64 = if frac.is_empty() {
                0
            } else {
                format!("{frac:0<3}").parse().map_err(|_| err())?
            };
            whole * 1000 + frac
        };
        if millis == 0 || millis > Self::MAX_MILLIS {
            return Err(err());
        }
        Ok(Cpu {
            millis: millis as u32,
        })
    }
}

impl fmt::Display for Cpu {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.millis.is_multiple_of(1000) {
            write!(f, "{}", self.millis / 1000)
        } else {
            write!(f, "{}m", self.millis)
        }
    }
}

/// Memory in bytes: `512Mi`, `2Gi`, `1G`, `1048576`. Binary (Ki..Pi) and decimal (k..P) suffixes
/// as in Kubernetes. From one byte to 1 PiB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(into = "String", try_from = "String")]
pub struct Memory {
    bytes: u64,
}

impl Memory {
    const MAX_BYTES: u64 = 1 << 50;
    const EXPECTED: &'static str = "a memory amount such as `512Mi`, `2Gi` or `1G` (suffixes Ki, Mi, Gi, Ti, Pi, k, M, G, T, P), at most 1Pi";
    const SUFFIXES: [(&'static str, u64); 10] = [
        ("Ki", 1 << 10),
        ("Mi", 1 << 20),
        ("Gi", 1 << 30),
        ("Ti", 1 << 40),
        ("Pi", 1 << 50),
        ("k", 1_000),
        ("M", 1_000_000),
        ("G", 1_000_000_000),
        ("T", 1_000_000_000_000),
        ("P", 1_000_000_000_000_000),
    ];

    /// `bytes` bytes, if within one byte and 1 PiB.
    pub fn from_bytes(bytes: u64) -> Option<Memory> {
        (bytes > 0 && bytes <= Self::MAX_BYTES).then_some(Memory { bytes })
    }

    /// The amount in bytes.
    pub fn bytes(self) -> u64 {
        self.bytes
    }
}

impl FromStr for Memory {
    type Err = ValueError;

    fn from_str(text: &str) -> Result<Self, Self::Err> {
        let err = || ValueError::new(text, Self::EXPECTED);
        let trimmed = text.trim();
        let (number, factor) = Self::SUFFIXES
            .iter()
            .find_map(|(suffix, factor)| trimmed.strip_suffix(suffix).map(|n| (n, *factor)))
            .unwrap_or((trimmed, 1));
        if number.is_empty() || number.len() > 16 || !number.bytes().all(|b| b.is_ascii_digit()) {
            return Err(err());
        }
        let value: u64 = number.parse().map_err(|_| err())?;
        let bytes = value.checked_mul(factor).ok_or_else(err)?;
        Memory::from_bytes(bytes).ok_or_else(err)
    }
}

impl fmt::Display for Memory {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (suffix, factor) in Self::SUFFIXES.iter().take(5).rev() {
            if self.bytes.is_multiple_of(*factor) {
                return write!(f, "{}{suffix}", self.bytes / factor);
            }
        }
        write!(f, "{}", self.bytes)
    }
}

macro_rules! string_conversions {
    ($($ty:ty),*) => {$(
        impl From<$ty> for String {
            fn from(value: $ty) -> String {
                value.to_string()
            }
        }

        impl TryFrom<String> for $ty {
            type Error = ValueError;

            fn try_from(value: String) -> Result<Self, Self::Error> {
                value.parse()
            }
        }
    )*};
}

string_conversions!(Duration, Cpu, Memory);

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn durations_parse_each_unit_and_combinations() {
        for (text, secs) in [
            ("90s", 90),
            ("10m", 600),
            ("1h30m", 5400),
            ("2d", 172_800),
            ("1d2h3m4s", 93_784),
            ("365d", 31_536_000),
        ] {
            assert_eq!(text.parse::<Duration>().unwrap().as_secs(), secs, "{text}");
        }
    }

    #[test]
    fn durations_reject_zero_bad_units_disorder_and_overflow() {
        for text in [
            "",
            "0s",
            "10",
            "m",
            "10x",
            "1.5h",
            "30m1h",
            "1h1h",
            "-1s",
            "366d",
            "99999999999999999999s",
            "1 h",
        ] {
            let err = text.parse::<Duration>().unwrap_err();
            assert!(err.expected.contains("duration"), "{text}: {err}");
        }
    }

    #[test]
    fn duration_prints_canonically() {
        assert_eq!("90s".parse::<Duration>().unwrap().to_string(), "1m30s");
        assert_eq!("1h30m".parse::<Duration>().unwrap().to_string(), "1h30m");
        assert_eq!(Duration::parse_const("10m").as_secs(), 600);
    }

    #[test]
    fn cpu_accepts_millicores_cores_and_fractions() {
        for (text, millis) in [
            ("500m", 500),
            ("2", 2000),
            ("0.5", 500),
            (".25", 250),
            ("1.5", 1500),
        ] {
            assert_eq!(text.parse::<Cpu>().unwrap().millis(), millis, "{text}");
        }
        for text in ["0", "0m", "", "m", "1.2345", "2 cores", "-1", "2000", "1e3"] {
            assert!(text.parse::<Cpu>().is_err(), "{text}");
        }
        assert_eq!("1500m".parse::<Cpu>().unwrap().to_string(), "1500m");
        assert_eq!("2000m".parse::<Cpu>().unwrap().to_string(), "2");
    }

    #[test]
    fn memory_accepts_binary_and_decimal_suffixes() {
        for (text, bytes) in [
            ("512Mi", 512 << 20),
            ("2Gi", 2 << 30),
            ("1G", 1_000_000_000),
            ("1048576", 1 << 20),
            ("64k", 64_000),
        ] {
            assert_eq!(text.parse::<Memory>().unwrap().bytes(), bytes, "{text}");
        }
        for text in [
            "0",
            "",
            "Gi",
            "1.5Gi",
            "2gb",
            "-1Mi",
            "2Ei",
            "99999999999999999Pi",
        ] {
            assert!(text.parse::<Memory>().is_err(), "{text}");
        }
        assert_eq!("1024Mi".parse::<Memory>().unwrap().to_string(), "1Gi");
    }

    proptest! {
        #[test]
        fn quantities_never_panic_and_round_trip(text in "\\PC{0,24}") {
            if let Ok(d) = text.parse::<Duration>() {
                prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
            }
            if let Ok(c) = text.parse::<Cpu>() {
                prop_assert_eq!(c.to_string().parse::<Cpu>().unwrap(), c);
            }
            if let Ok(m) = text.parse::<Memory>() {
                prop_assert_eq!(m.to_string().parse::<Memory>().unwrap(), m);
            }
        }

        #[test]
        fn durations_round_trip_through_text(secs in 1u64..=Duration::MAX_SECONDS) {
            let d = Duration::from_secs(secs).unwrap();
            prop_assert_eq!(d.to_string().parse::<Duration>().unwrap(), d);
        }
    }
}
