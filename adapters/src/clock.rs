//! The system clock behind the domain's `Clock` port.

use std::time::{SystemTime, UNIX_EPOCH};

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::Clock;

/// Wall-clock time, in milliseconds since the Unix epoch.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let millis = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_millis());
        Timestamp(i64::try_from(millis).unwrap_or(i64::MAX))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_system_clock_reads_after_2020_and_never_goes_back_in_one_thread() {
        let a = SystemClock.now();
        let b = SystemClock.now();
        assert!(a.0 > 1_577_836_800_000, "{a:?}");
        assert!(b >= a);
    }
}
