//! # Leadership among replicas
//!
//! Several `hodei server` replicas may share one database. One of them leads: it runs the
//! scheduler and the singleton duties (resuming runs, reaping leases, firing schedules); the
//! others serve what they can themselves and forward the rest to it. The leadership is a lease
//! in the `leader` table (one row), with a fencing **epoch**.
//!
//! - [`PgStore::try_lead`] takes the lease when it is free or expired (by the database's
//!   clock, so that the replicas' clocks need not agree), or held by an earlier life of the
//!   same replica (same node name and address: it restarted), and bumps the epoch.
//! - [`PgStore::renew`] extends it, as long as this replica still holds it with its epoch and
//!   has not resigned it.
//! - [`PgStore::fence`] makes every write of this store check, in its own transaction, that
//!   the epoch is still the one this replica was given (`SELECT … FOR KEY SHARE`). A takeover
//!   locks the row `FOR UPDATE`, which waits for the writes in flight: each of the deposed
//!   leader's writes either committed before the new leader took over, or fails. Two
//!   schedulers therefore never both place a job, however late a deposed leader learns it.
//! - [`PgStore::resign`] ends the lease at once (a clean shutdown): another replica leads
//!   within its next try, without waiting for the lease to run out.
//!
//! ## Guarantees
//! - At most one replica holds an unexpired lease; epochs only grow.
//! - Once a fenced store has seen its epoch superseded, every write of it fails with
//!   [`StoreError::Unavailable`] naming the new epoch, and the callback given to
//!   [`PgStore::fence`] is called (once).

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::Duration;

use hodei_domain::ports::{LeaderInfo, StoreError};
use sqlx::PgConnection;

use super::PgStore;
use super::error::store_error;

/// The answer to [`PgStore::try_lead`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Lead {
    /// This replica leads now, with this epoch.
    Led { epoch: u64 },
    /// Another replica holds an unexpired lease.
    Held(LeaderInfo),
}

/// The answer to [`PgStore::renew`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Renewal {
    Renewed,
    /// Another replica leads now (or this one's lease was taken after it ran out).
    Deposed {
        by: LeaderInfo,
    },
}

/// What a fenced store checks before each write.
#[derive(Default)]
pub(super) struct Fence {
    /// The epoch this store writes under; 0: not fenced (a single server, a follower, tools).
    epoch: AtomicU64,
    deposed: AtomicBool,
    on_deposed: Mutex<Option<OnDeposed>>,
}

/// Told once, with the epoch of the leader that took over.
type OnDeposed = Box<dyn FnOnce(u64) + Send>;

impl Fence {
    /// In the transaction `conn`, before its writes: `Err` once the leadership moved on.
    pub(super) async fn check(&self, conn: &mut PgConnection) -> Result<(), StoreError> {
        let mine = self.epoch.load(Ordering::SeqCst);
        if mine == 0 {
            return Ok(());
        }
        if self.deposed.load(Ordering::SeqCst) {
            return Err(deposed(mine, None));
        }
        let now: i64 = sqlx::query_scalar("SELECT epoch FROM leader WHERE id = 1 FOR KEY SHARE")
            .fetch_one(conn)
            .await
            .map_err(|err| store_error("checking the leadership", err))?;
        if now as u64 == mine {
            return Ok(());
        }
        self.depose(now as u64);
        Err(deposed(mine, Some(now as u64)))
    }

    pub(super) fn is_deposed(&self) -> bool {
        self.deposed.load(Ordering::SeqCst)
    }

    fn depose(&self, now: u64) {
        if self.deposed.swap(true, Ordering::SeqCst) {
            return;
        }
        let callback = self
            .on_deposed
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .take();
        if let Some(callback) = callback {
            callback(now);
        }
    }
}

fn deposed(mine: u64, now: Option<u64>) -> StoreError {
    StoreError::Unavailable {
        reason: match now {
            Some(now) => format!(
                "this server no longer leads: its leadership (epoch {mine}) was taken over (epoch {now}); its writes are refused"
            ),
            None => format!(
                "this server no longer leads (epoch {mine} was taken over); its writes are refused"
            ),
        },
        cause: None,
    }
}

const SELECT: &str = "SELECT epoch, holder, address, \
     GREATEST(0, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000))::BIGINT AS left_ms \
     FROM leader WHERE id = 1";
/// The same, locking the row as a takeover does.
const SELECT_FOR_UPDATE: &str = "SELECT epoch, holder, address, \
     GREATEST(0, (EXTRACT(EPOCH FROM (expires_at - now())) * 1000))::BIGINT AS left_ms \
     FROM leader WHERE id = 1 FOR UPDATE";

fn info((epoch, holder, address, left): (i64, String, String, i64)) -> LeaderInfo {
    LeaderInfo {
        holder,
        address,
        epoch: epoch as u64,
        expires_in_ms: left.max(0) as u64,
    }
}

/// Whether the lease is held by an earlier life of this very replica: the same node name
/// (holders are `<node>-<life>`) at the same address, which this life now listens on — so the
/// earlier one cannot, and is gone (a restart after a crash). It is taken over at once instead
/// of after the lease runs out.
fn previous_life(current: &LeaderInfo, holder: &str, address: &str) -> bool {
    let node = |name: &str| name.rsplit_once('-').map(|(node, _)| node.to_owned());
    !address.is_empty()
        && current.address == address
        && node(&current.holder).is_some()
        && node(&current.holder) == node(holder)
}

fn millis(ttl: Duration) -> i64 {
    i64::try_from(ttl.as_millis()).unwrap_or(i64::MAX)
}

impl PgStore {
    /// Takes the leadership for `ttl` when no other replica holds an unexpired lease: `holder`
    /// names this replica (one life of it), `address` is where the others reach it.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn try_lead(
        &self,
        holder: &str,
        address: &str,
        ttl: Duration,
    ) -> Result<Lead, StoreError> {
        let (holder, address) = (holder.to_owned(), address.to_owned());
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            let what = "taking the leadership";
            let mut tx = pool.begin().await.map_err(|err| store_error(what, err))?;
            // FOR UPDATE: waits for the writes in flight of the leader being replaced.
            let row: (i64, String, String, i64) = sqlx::query_as(SELECT_FOR_UPDATE)
                .fetch_one(&mut *tx)
                .await
                .map_err(|err| store_error(what, err))?;
            let current = info(row);
            if current.expires_in_ms > 0
                && current.holder != holder
                && !previous_life(&current, &holder, &address)
            {
                return Ok(Lead::Held(current));
            }
            let epoch: i64 = sqlx::query_scalar(
                "UPDATE leader SET epoch = epoch + 1, holder = $1, address = $2, \
                 expires_at = now() + $3 * interval '1 millisecond' WHERE id = 1 RETURNING epoch",
            )
            .bind(&holder)
            .bind(&address)
            .bind(millis(ttl))
            .fetch_one(&mut *tx)
            .await
            .map_err(|err| store_error(what, err))?;
            tx.commit().await.map_err(|err| store_error(what, err))?;
            Ok(Lead::Led {
                epoch: epoch as u64,
            })
        })
        .await
    }

    /// Extends this replica's leadership (`holder`, `epoch`) by `ttl` from now, unless it
    /// resigned: a renewal still in flight when the replica stopped lands after its
    /// [`resign`](PgStore::resign) and must not bring the lease back for another `ttl`.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached: the lease runs on
    /// until it expires, and a later renewal may still succeed if nobody took over.
    pub async fn renew(
        &self,
        holder: &str,
        epoch: u64,
        ttl: Duration,
    ) -> Result<Renewal, StoreError> {
        let holder = holder.to_owned();
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            let what = "renewing the leadership";
            let mut conn = pool.acquire().await.map_err(|err| store_error(what, err))?;
            let renewed = sqlx::query(
                "UPDATE leader SET expires_at = now() + $3 * interval '1 millisecond' \
                 WHERE id = 1 AND holder = $1 AND epoch = $2 AND expires_at > to_timestamp(0)",
            )
            .bind(&holder)
            .bind(epoch as i64)
            .bind(millis(ttl))
            .execute(&mut *conn)
            .await
            .map_err(|err| store_error(what, err))?
            .rows_affected();
            if renewed == 1 {
                return Ok(Renewal::Renewed);
            }
            let row: (i64, String, String, i64) = sqlx::query_as(SELECT)
                .fetch_one(&mut *conn)
                .await
                .map_err(|err| store_error(what, err))?;
            Ok(Renewal::Deposed { by: info(row) })
        })
        .await
    }

    /// The replica that holds the leadership, if its lease has not run out.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached.
    pub async fn leader(&self) -> Result<Option<LeaderInfo>, StoreError> {
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            let row: (i64, String, String, i64) = sqlx::query_as(SELECT)
                .fetch_one(&pool)
                .await
                .map_err(|err| store_error("reading the leadership", err))?;
            let current = info(row);
            Ok((current.expires_in_ms > 0).then_some(current))
        })
        .await
    }

    /// Ends this replica's leadership at once, if it still holds it: the next try of another
    /// replica takes over.
    ///
    /// # Errors
    /// [`StoreError::Unavailable`] when the database cannot be reached (the lease then runs
    /// out by itself).
    pub async fn resign(&self, holder: &str, epoch: u64) -> Result<(), StoreError> {
        let holder = holder.to_owned();
        let pool = self.shared.pool.clone();
        self.spawn(async move {
            sqlx::query(
                "UPDATE leader SET expires_at = to_timestamp(0) WHERE id = 1 AND holder = $1 AND epoch = $2",
            )
            .bind(&holder)
            .bind(epoch as i64)
            .execute(&pool)
            .await
            .map_err(|err| store_error("resigning the leadership", err))?;
            Ok(())
        })
        .await
    }

    /// From now on, every write of this store (and of its [`super::PgLogStore`]) checks that
    /// the leadership is still at `epoch`; the first write that finds it moved on calls
    /// `deposed` with the new epoch.
    pub fn fence(&self, epoch: u64, deposed: impl FnOnce(u64) + Send + 'static) {
        let fence = &self.shared.fence;
        *fence
            .on_deposed
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(Box::new(deposed));
        fence.epoch.store(epoch, Ordering::SeqCst);
    }

    /// Whether this store has found its leadership taken over.
    pub fn is_deposed(&self) -> bool {
        self.shared.fence.deposed.load(Ordering::SeqCst)
    }

    /// Marks the leadership as lost (a renewal found another leader): the callback given to
    /// [`fence`](Self::fence) is called, and every later write fails.
    pub fn depose(&self, now: u64) {
        self.shared.fence.depose(now);
    }

    pub(super) fn fence_handle(&self) -> Arc<Fence> {
        self.shared.fence.clone()
    }
}
