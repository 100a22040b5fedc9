//! Open streams by the token that opened them, so that revoking a token ends them: a WebSocket
//! is authenticated once, at its handshake, and would otherwise outlive its token.
//!
//! ## Guarantees
//! - `DELETE /api/v1/tokens/{id}` on this server ends the token's open log and event streams at
//!   once, with a close frame (code 1008, "the token was revoked").
//! - A token revoked elsewhere (another replica, the admin CLI on the store) ends them within
//!   [`SWEEP`]: while streams are open, the server asks the token store every [`SWEEP`] which
//!   of their tokens still authenticate.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex, PoisonError, Weak};
use std::time::Duration;

use actix::{Message, Recipient};
use hodei_domain::ports::TokenStore;

/// How often the tokens of open streams are checked against the store.
pub const SWEEP: Duration = Duration::from_millis(500);

/// Tells a stream that the token that opened it no longer authenticates.
#[derive(Message)]
#[rtype(result = "()")]
pub struct TokenRevoked;

type Open = Mutex<HashMap<u64, Vec<Recipient<TokenRevoked>>>>;

/// The open streams of each token.
#[derive(Clone, Default)]
pub(crate) struct StreamsByToken {
    open: Arc<Open>,
}

impl StreamsByToken {
    /// Remembers a stream opened with token `token`.
    pub(crate) fn add(&self, token: u64, stream: Recipient<TokenRevoked>) {
        let mut open = self.open.lock().unwrap_or_else(PoisonError::into_inner);
        let streams = open.entry(token).or_default();
        streams.retain(Recipient::connected);
        streams.push(stream);
    }

    /// Ends the streams of `token`.
    pub(crate) fn revoked(&self, token: u64) {
        end(&self.open, &[token]);
    }

    /// Checks the tokens of open streams against `tokens` every [`SWEEP`] until the server that
    /// holds these streams is gone. Runs on the current actix arbiter.
    pub(crate) fn sweep(&self, tokens: Arc<dyn TokenStore>) {
        let open: Weak<Open> = Arc::downgrade(&self.open);
        actix::spawn(async move {
            let mut every = tokio::time::interval(SWEEP);
            loop {
                every.tick().await;
                let Some(open) = open.upgrade() else { return };
                let watched = tokens_with_streams(&open);
                if watched.is_empty() {
                    continue;
                }
                let valid: HashSet<u64> = match tokens.tokens().await {
                    Ok(records) => records.into_iter().map(|r| r.id).collect(),
                    Err(err) => {
                        tracing::warn!(error = %err, "Cannot check the tokens of open streams.");
                        continue;
                    }
                };
                let gone: Vec<u64> = watched.into_iter().filter(|t| !valid.contains(t)).collect();
                end(&open, &gone);
            }
        });
    }
}

/// The tokens that have open streams, forgetting streams that ended.
fn tokens_with_streams(open: &Open) -> Vec<u64> {
    let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
    open.retain(|_, streams| {
        streams.retain(Recipient::connected);
        !streams.is_empty()
    });
    open.keys().copied().collect()
}

fn end(open: &Open, tokens: &[u64]) {
    let ended: Vec<Recipient<TokenRevoked>> = {
        let mut open = open.lock().unwrap_or_else(PoisonError::into_inner);
        tokens
            .iter()
            .filter_map(|t| open.remove(t))
            .flatten()
            .collect()
    };
    for stream in ended {
        stream.do_send(TokenRevoked);
    }
}
