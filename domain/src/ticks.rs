//! When the `on.schedule` entries of pipelines fire: pure rules over explicit times, for the
//! timer actor (`hodei_actors::timer`) that applies them.
//!
//! ## Rules
//! - An entry is known by its pipeline and its text (`TZ=Europe/Paris 0 3 * * *`): a new
//!   version of the pipeline that keeps the entry keeps its history.
//! - Its *baseline* is the last tick fired for it (claimed in the store), or else when the
//!   pipeline's version that brought it was stored: ticks before the entry existed never fire.
//! - At `now`, the entry is due when its last tick at or before `now` is after the baseline.
//!   That tick fires **once**, however many ticks passed since the baseline: a Hodei that was
//!   down through several ticks fires the latest of them once when it starts, and reports how
//!   many were missed ([`Due::missed`]).
//! - Several replicas decide alike; the store lets one of them claim each (pipeline, entry,
//!   tick), so a tick fires once.

use crate::ids::Timestamp;
use crate::model::Cron;

/// How far after its time a tick may fire and still count as on time (not missed).
pub const ON_TIME_MS: u64 = 60_000;

/// Missed ticks are counted up to this many (a schedule of every second down for a week).
pub const MISSED_COUNT_LIMIT: u64 = 10_000;

/// A tick to fire now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Due {
    /// The tick's time: the one to claim and record.
    pub tick: Timestamp,
    /// Ticks after the baseline and before `tick` that will never fire (Hodei was down, or
    /// busy), at most [`MISSED_COUNT_LIMIT`].
    pub missed: u64,
    /// Whether `tick` itself fires late (more than [`ON_TIME_MS`] after its time): it was
    /// missed while Hodei was down and fires once, now.
    pub late: bool,
}

/// Whether `cron` has a tick to fire at `now`, given its `baseline` (see the module's rules).
pub fn due(cron: &Cron, baseline: Timestamp, now: Timestamp) -> Option<Due> {
    let tick = cron.last_at_or_before(now)?;
    if tick <= baseline {
        return None;
    }
    let mut missed = 0;
    let mut at = baseline;
    while missed < MISSED_COUNT_LIMIT {
        match cron.next_after(at) {
            Some(next) if next < tick => {
                missed += 1;
                at = next;
            }
            _ => break,
        }
    }
    Some(Due {
        tick,
        missed,
        late: now.millis_since(tick) > ON_TIME_MS,
    })
}

/// When the timer must look again for `cron`: its first tick after `now`.
pub fn next_wake(cron: &Cron, now: Timestamp) -> Option<Timestamp> {
    cron.next_after(now)
}

/// The baseline of an entry: its last claimed tick, or else when its pipeline version was
/// stored.
pub fn baseline(last_claimed: Option<Timestamp>, version_created: Timestamp) -> Timestamp {
    last_claimed.unwrap_or(version_created)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// 2026-03-02T03:00:00Z, a Monday.
    const T0: i64 = 1_772_420_400_000;
    const MIN: i64 = 60_000;
    const HOUR: i64 = 60 * MIN;
    const DAY: i64 = 24 * HOUR;

    fn cron(text: &str) -> Cron {
        text.parse().unwrap()
    }

    fn at(offset: i64) -> Timestamp {
        Timestamp(T0 + offset)
    }

    #[test]
    fn due_fires_each_tick_once_on_time_and_missed_ticks_once() {
        let daily = cron("0 3 * * *");
        let every_minute = cron("* * * * *");
        let every_second = cron("* * * * * *");
        let cases: &[(&str, &Cron, i64, i64, Option<Due>)] = &[
            (
                "stored before the tick, looked at just after it",
                &daily,
                -MIN,
                200,
                Some(Due {
                    tick: at(0),
                    missed: 0,
                    late: false,
                }),
            ),
            ("looked at just before the tick", &daily, -MIN, -1, None),
            ("already fired", &daily, 0, 30 * MIN, None),
            (
                "the entry came after the tick of that day",
                &daily,
                MIN,
                2 * HOUR,
                None,
            ),
            (
                "down for three days: the latest tick, once, late",
                &daily,
                -DAY,
                2 * DAY + 5 * HOUR,
                Some(Due {
                    tick: at(2 * DAY),
                    missed: 2,
                    late: true,
                }),
            ),
            (
                "every minute, after 10 minutes down",
                &every_minute,
                0,
                10 * MIN + 5_000,
                Some(Due {
                    tick: at(10 * MIN),
                    missed: 9,
                    late: false,
                }),
            ),
            (
                "every second, 1.5 s on",
                &every_second,
                0,
                1_500,
                Some(Due {
                    tick: at(1_000),
                    missed: 0,
                    late: false,
                }),
            ),
            (
                "the tick at the very baseline is not fired again",
                &every_minute,
                0,
                0,
                None,
            ),
        ];
        for (name, cron, baseline, now, expected) in cases {
            assert_eq!(due(cron, at(*baseline), at(*now)), *expected, "{name}");
        }
    }

    #[test]
    fn missed_ticks_are_counted_up_to_the_limit() {
        let every_second = cron("* * * * * *");
        let due = due(&every_second, at(0), at(7 * DAY)).unwrap();
        assert_eq!(due.missed, MISSED_COUNT_LIMIT);
        assert!(due.late || due.tick == at(7 * DAY));
    }

    #[test]
    fn next_wake_is_the_next_tick_in_the_entrys_time_zone() {
        assert_eq!(next_wake(&cron("0 3 * * *"), at(0)), Some(at(DAY)));
        assert_eq!(next_wake(&cron("0 3 * * *"), at(-1)), Some(at(0)));
        // 03:00 in New York is 08:00Z in March before the switch (8 March 2026).
        assert_eq!(
            next_wake(&cron("TZ=America/New_York 0 3 * * *"), at(0)),
            Some(at(5 * HOUR))
        );
        assert_eq!(
            next_wake(&cron("*/15 * * * *"), at(MIN)),
            Some(at(15 * MIN))
        );
    }

    #[test]
    fn the_baseline_is_the_last_claim_or_the_version() {
        assert_eq!(baseline(Some(at(5)), at(9)), at(5));
        assert_eq!(baseline(None, at(9)), at(9));
    }
}
