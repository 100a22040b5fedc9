//! Hodei's own log output on standard error, at the level `HODEI_LOG` sets (default `warn`).
//!
//! A client's malformed request (a NUL byte or another invalid character in a header, a request
//! line that does not parse, headers that do not arrive in time) is answered with 400 or 408 by
//! the HTTP layer, which also logs it at ERROR. It is the client's mistake, not the server's:
//! those events are left out, so that ERROR keeps meaning that Hodei itself failed.

use tracing::{Event, Level, Metadata};
use tracing_subscriber::layer::{Context, Filter};
use tracing_subscriber::prelude::*;

/// Installs the subscriber of the process.
pub fn init() {
    let filter = tracing_subscriber::EnvFilter::try_from_env("HODEI_LOG")
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("warn"));
    // Colour only on a terminal, and never with `NO_COLOR`: a log file or journal gets plain text.
    let colour = std::io::IsTerminal::is_terminal(&std::io::stderr())
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let output = tracing_subscriber::fmt::layer()
        .with_writer(std::io::stderr)
        .with_ansi(colour)
        .with_filter(filter)
        .with_filter(NoClientMistakes);
    tracing_subscriber::registry().with(output).init();
}

/// Leaves out the HTTP layer's ERROR events about a client's malformed request.
struct NoClientMistakes;

impl<S> Filter<S> for NoClientMistakes {
    fn enabled(&self, _: &Metadata<'_>, _: &Context<'_, S>) -> bool {
        true
    }

    fn event_enabled(&self, event: &Event<'_>, _: &Context<'_, S>) -> bool {
        let metadata = event.metadata();
        if *metadata.level() != Level::ERROR || !metadata.target().starts_with("actix_http::") {
            return true;
        }
        let mut message = Message::default();
        event.record(&mut message);
        !client_mistake(&message.0)
    }
}

/// Whether an event of the HTTP layer tells of a client's mistake (see `actix_http`'s
/// `DispatchError`: `Parse` and `SlowRequestTimeout`).
fn client_mistake(message: &str) -> bool {
    let Some(error) = message.strip_prefix("stream error: ") else {
        return false;
    };
    error.starts_with("request parse error")
        || error.starts_with("request did not complete within the specified timeout")
}

/// The `message` field of an event, as text.
#[derive(Default)]
struct Message(String);

impl tracing::field::Visit for Message {
    fn record_debug(&mut self, field: &tracing::field::Field, value: &dyn std::fmt::Debug) {
        if field.name() == "message" {
            self.0 = format!("{value:?}");
        }
    }

    fn record_str(&mut self, field: &tracing::field::Field, value: &str) {
        if field.name() == "message" {
            value.clone_into(&mut self.0);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::client_mistake;

    #[test]
    fn parse_errors_and_slow_headers_are_client_mistakes_io_errors_are_not() {
        assert!(client_mistake(
            "stream error: request parse error: invalid Header provided"
        ));
        assert!(client_mistake(
            "stream error: request did not complete within the specified timeout"
        ));
        assert!(!client_mistake("stream error: I/O error: broken pipe"));
        assert!(!client_mistake("Response payload stream error: x"));
    }
}
