//! Instants as the API writes them: RFC 3339 in UTC with milliseconds
//! (`2026-12-06T21:03:20.123Z`), as GitHub, GitLab and Kubernetes write them, in the views, the
//! events and the CLI's `-o json|yaml`. The store keeps milliseconds since the Unix epoch; the
//! translation happens here, when a value leaves or enters the API. Durations stay numbers,
//! with their unit in the field's name (`duration_ms`).

use std::fmt;

use hodei_domain::ids::Timestamp;
use hodei_domain::state::DomainEvent;
use serde::de::Error as _;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;

/// An instant of a view. JSON: a string, `2026-12-06T21:03:20.123Z`; the OpenAPI document
/// gives it as `type: string, format: date-time`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Time(pub Timestamp);

impl Time {
    /// Milliseconds since the Unix epoch.
    pub fn millis(self) -> i64 {
        self.0.0
    }
}

/// The milliseconds from `earlier` to `self`: a duration, as durations are written.
impl std::ops::Sub for Time {
    type Output = i64;

    fn sub(self, earlier: Time) -> i64 {
        self.millis() - earlier.millis()
    }
}

impl From<Timestamp> for Time {
    fn from(at: Timestamp) -> Time {
        Time(at)
    }
}

impl fmt::Display for Time {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0.rfc3339())
    }
}

impl Serialize for Time {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.0.rfc3339())
    }
}

impl<'de> Deserialize<'de> for Time {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Time, D::Error> {
        let text = String::deserialize(deserializer)?;
        parse(&text).map(Time).map_err(D::Error::custom)
    }
}

fn parse(text: &str) -> Result<Timestamp, String> {
    Timestamp::parse_rfc3339(text).ok_or_else(|| {
        format!("`{text}` is not a time: expected RFC 3339 such as `2026-12-06T21:03:20.123Z`")
    })
}

/// A domain event as the API writes it: its stored JSON (docs/states.md) with `at` as an RFC
/// 3339 string instead of milliseconds.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiEvent(pub DomainEvent);

impl ApiEvent {
    /// The event's JSON as the API writes it.
    pub fn to_json(&self) -> Value {
        let mut value = serde_json::to_value(&self.0).unwrap_or(Value::Null);
        if let Some(at) = value.get_mut("at") {
            *at = Value::String(self.0.at().rfc3339());
        }
        value
    }
}

impl Serialize for ApiEvent {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        self.to_json().serialize(serializer)
    }
}

impl<'de> Deserialize<'de> for ApiEvent {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<ApiEvent, D::Error> {
        let mut value = Value::deserialize(deserializer)?;
        if let Some(at) = value.get_mut("at")
            && let Some(text) = at.as_str()
        {
            *at = Value::from(parse(text).map_err(D::Error::custom)?.0);
        }
        DomainEvent::deserialize(value)
            .map(ApiEvent)
            .map_err(D::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use hodei_domain::ids::RunId;

    #[test]
    fn views_and_events_write_instants_as_rfc3339_and_read_them_back() {
        let at = Timestamp(1_796_591_000_123);
        let json = serde_json::to_value(Time(at)).unwrap();
        assert_eq!(json, "2026-12-06T21:03:20.123Z");
        assert_eq!(serde_json::from_value::<Time>(json).unwrap(), Time(at));
        let wrong = serde_json::from_value::<Time>(Value::from(1_796_591_000_123i64));
        assert!(wrong.is_err());

        let event = DomainEvent::RunStarted { run: RunId(7), at };
        let json = serde_json::to_value(ApiEvent(event.clone())).unwrap();
        assert_eq!(
            json,
            serde_json::json!({"type": "run_started", "run": 7, "at": "2026-12-06T21:03:20.123Z"})
        );
        assert_eq!(serde_json::from_value::<ApiEvent>(json).unwrap().0, event);
        // The stored form is unchanged.
        assert_eq!(
            serde_json::to_value(&event).unwrap()["at"],
            1_796_591_000_123i64
        );
    }
}
