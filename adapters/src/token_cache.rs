//! # API tokens remembered in memory
//!
//! [`CachedTokens`] puts a [`TokenStore`] behind a cache of the tokens it has found by digest,
//! so that an API request authenticates without a database read once its token was seen.
//!
//! ## Guarantees
//! - A token revoked through this object is refused at once: [`revoke_token`] forgets it
//!   before it returns, and a lookup that read the store while a revocation was under way
//!   does not put what it read in the cache (a generation counter tells).
//! - Only tokens found and not revoked are remembered: an unknown digest is asked of the store
//!   every time, so guessing fills no memory, and a token created later is found.
//! - At most [`CAPACITY`] tokens are remembered; the cache is emptied when full.
//!
//! ## Assumptions
//! Nothing else revokes tokens in the same database while this object serves them: use it
//! only where this process is the database's one writer (the SQLite server, which holds the
//! data directory's lock). Servers sharing PostgreSQL ask the store at every request, since a
//! token revoked on another replica must be refused at once there too.
//!
//! [`revoke_token`]: TokenStore::revoke_token

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use hodei_domain::ids::Timestamp;
use hodei_domain::ports::{BoxFuture, NewToken, StoreError, TokenRecord, TokenStore};

/// The most tokens remembered.
pub const CAPACITY: usize = 10_000;

/// A [`TokenStore`] whose lookups by digest are remembered.
pub struct CachedTokens {
    inner: Arc<dyn TokenStore>,
    state: Mutex<Cache>,
}

#[derive(Default)]
struct Cache {
    by_digest: HashMap<[u8; 32], TokenRecord>,
    /// Moved on by every revocation, before and after it: a lookup remembers what it read
    /// only if the generation did not move while it read, and no revocation was under way.
    generation: u64,
    revoking: u32,
}

impl CachedTokens {
    pub fn new(inner: Arc<dyn TokenStore>) -> CachedTokens {
        CachedTokens {
            inner,
            state: Mutex::default(),
        }
    }

    fn cache(&self) -> std::sync::MutexGuard<'_, Cache> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Forgets token `id`, and marks a revocation as under way (`start`) or over.
    fn forget(&self, id: u64, start: bool) {
        let mut cache = self.cache();
        cache.by_digest.retain(|_, record| record.id != id);
        cache.generation += 1;
        if start {
            cache.revoking += 1;
        } else {
            cache.revoking -= 1;
        }
    }
}

impl TokenStore for CachedTokens {
    fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<TokenRecord, StoreError>> {
        self.inner.create_token(token)
    }

    fn token_by_digest<'a>(
        &'a self,
        digest: &'a [u8; 32],
    ) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
        Box::pin(async move {
            let generation = {
                let cache = self.cache();
                if let Some(record) = cache.by_digest.get(digest) {
                    return Ok(Some(record.clone()));
                }
                cache.generation
            };
            let found = self.inner.token_by_digest(digest).await?;
            if let Some(record) = found.as_ref().filter(|r| r.revoked.is_none()) {
                let mut cache = self.cache();
                if cache.generation == generation && cache.revoking == 0 {
                    if cache.by_digest.len() >= CAPACITY {
                        cache.by_digest.clear();
                    }
                    cache.by_digest.insert(*digest, record.clone());
                }
            }
            Ok(found)
        })
    }

    fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
        self.inner.tokens()
    }

    fn revoke_token(&self, id: u64, at: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
        Box::pin(async move {
            self.forget(id, true);
            let revoked = self.inner.revoke_token(id, at).await;
            self.forget(id, false);
            revoked
        })
    }

    fn any_token(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
        self.inner.any_token()
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use hodei_domain::model::Role;

    use super::*;
    use crate::sqlite::SqliteStore;

    /// Counts the lookups that reach the store.
    struct Counting {
        inner: SqliteStore,
        lookups: AtomicUsize,
    }

    impl TokenStore for Counting {
        fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<TokenRecord, StoreError>> {
            self.inner.create_token(token)
        }
        fn token_by_digest<'a>(
            &'a self,
            digest: &'a [u8; 32],
        ) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
            self.lookups.fetch_add(1, Ordering::SeqCst);
            self.inner.token_by_digest(digest)
        }
        fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
            self.inner.tokens()
        }
        fn revoke_token(&self, id: u64, at: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
            self.inner.revoke_token(id, at)
        }
        fn any_token(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
            self.inner.any_token()
        }
    }

    fn new_token(name: &str, digest: u8) -> NewToken {
        NewToken {
            name: name.into(),
            role: Role::Viewer,
            digest: [digest; 32],
            at: Timestamp(1),
        }
    }

    #[tokio::test]
    async fn a_seen_token_is_not_read_again_and_a_revoked_one_is_refused_at_once() {
        let counting = Arc::new(Counting {
            inner: SqliteStore::memory().await.unwrap(),
            lookups: AtomicUsize::new(0),
        });
        let tokens = CachedTokens::new(counting.clone());
        let created = tokens.create_token(new_token("ci", 7)).await.unwrap();
        for _ in 0..3 {
            let found = tokens.token_by_digest(&[7; 32]).await.unwrap().unwrap();
            assert_eq!((found.id, found.revoked), (created.id, None));
        }
        assert_eq!(counting.lookups.load(Ordering::SeqCst), 1, "read once");
        // Unknown digests are asked every time and never remembered.
        for _ in 0..2 {
            assert!(tokens.token_by_digest(&[9; 32]).await.unwrap().is_none());
        }
        assert_eq!(counting.lookups.load(Ordering::SeqCst), 3);
        // A token created after a miss is found.
        tokens.create_token(new_token("late", 9)).await.unwrap();
        assert!(tokens.token_by_digest(&[9; 32]).await.unwrap().is_some());

        assert!(tokens.revoke_token(created.id, Timestamp(2)).await.unwrap());
        let found = tokens.token_by_digest(&[7; 32]).await.unwrap().unwrap();
        assert_eq!(found.revoked, Some(Timestamp(2)), "refused at once");
        // A revoked token is never remembered: every lookup reads the store.
        let before = counting.lookups.load(Ordering::SeqCst);
        tokens.token_by_digest(&[7; 32]).await.unwrap();
        assert_eq!(counting.lookups.load(Ordering::SeqCst), before + 1);
    }

    /// Holds each lookup, once it has read the store, until the test lets it go.
    struct Held {
        inner: SqliteStore,
        read: tokio::sync::mpsc::UnboundedSender<()>,
        go: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    }

    impl TokenStore for Held {
        fn create_token(&self, token: NewToken) -> BoxFuture<'_, Result<TokenRecord, StoreError>> {
            self.inner.create_token(token)
        }
        fn token_by_digest<'a>(
            &'a self,
            digest: &'a [u8; 32],
        ) -> BoxFuture<'a, Result<Option<TokenRecord>, StoreError>> {
            Box::pin(async move {
                let found = self.inner.token_by_digest(digest).await;
                let _ = self.read.send(());
                self.go.lock().await.recv().await;
                found
            })
        }
        fn tokens(&self) -> BoxFuture<'_, Result<Vec<TokenRecord>, StoreError>> {
            self.inner.tokens()
        }
        fn revoke_token(&self, id: u64, at: Timestamp) -> BoxFuture<'_, Result<bool, StoreError>> {
            self.inner.revoke_token(id, at)
        }
        fn any_token(&self) -> BoxFuture<'_, Result<bool, StoreError>> {
            self.inner.any_token()
        }
    }

    #[tokio::test]
    async fn a_lookup_that_read_before_a_revocation_does_not_remember_the_token() {
        let (read, mut reads) = tokio::sync::mpsc::unbounded_channel();
        let (go, gone) = tokio::sync::mpsc::unbounded_channel();
        let held = Arc::new(Held {
            inner: SqliteStore::memory().await.unwrap(),
            read,
            go: tokio::sync::Mutex::new(gone),
        });
        let tokens = Arc::new(CachedTokens::new(held));
        let created = tokens.create_token(new_token("ci", 7)).await.unwrap();
        // A lookup reads the store while the token is valid, and is held there...
        let lookup = tokio::spawn({
            let tokens = tokens.clone();
            async move { tokens.token_by_digest(&[7; 32]).await }
        });
        reads.recv().await.unwrap();
        // ...while the token is revoked.
        assert!(tokens.revoke_token(created.id, Timestamp(2)).await.unwrap());
        go.send(()).unwrap();
        let stale = lookup.await.unwrap().unwrap().unwrap();
        assert!(
            stale.revoked.is_none(),
            "what it read, before the revocation"
        );
        // What it read is not remembered: the next lookup reads the store and sees the revocation.
        go.send(()).unwrap();
        let found = tokens.token_by_digest(&[7; 32]).await.unwrap().unwrap();
        assert_eq!(found.revoked, Some(Timestamp(2)));
        assert!(tokens.cache().by_digest.is_empty());
    }
}
