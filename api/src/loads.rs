//! Pipeline loads on the server: parsing, decoding and validating a pipeline's YAML (or planning
//! a stored one) is CPU and memory work proportional to what the text expands to, so it runs off
//! the workers' event loops (`web::block`), at most [`PARALLEL`] at a time, and gives memory back
//! to the system after a large one.
//!
//! ## Guarantees
//! - However many uploads arrive at once, at most [`PARALLEL`] loads hold memory at a time; each
//!   is bounded by the YAML tree budget (`hodei_domain::yaml::Limits::max_tree_bytes`). The
//!   permit travels with the work: a client that hangs up does not free a place while its load
//!   still runs.
//! - After a load whose tree cost at least [`TRIM_FROM`] bytes, the allocator returns its free
//!   memory to the system (glibc keeps it in per-thread arenas otherwise, and every blocking
//!   thread has one).

use std::sync::Arc;

use hodei_domain::yaml::Cost;
use tokio::sync::Semaphore;

use crate::ApiError;

/// How many loads run at once on one server: one per core of a small machine.
pub const PARALLEL: usize = 2;

/// After a load whose tree cost this many bytes, freed memory is returned to the system.
pub const TRIM_FROM: usize = 4 << 20;

/// The places for loads, shared by every worker of a server.
#[derive(Clone)]
pub(crate) struct Loads {
    permits: Arc<Semaphore>,
}

impl Default for Loads {
    fn default() -> Loads {
        Loads {
            permits: Arc::new(Semaphore::new(PARALLEL)),
        }
    }
}

impl Loads {
    /// Runs `work` on the blocking pool once a place is free; `work` answers its result and
    /// what its YAML tree cost. `doing` names the work for the error when it stops (a panic).
    pub(crate) async fn run<T: Send + 'static>(
        &self,
        doing: &'static str,
        work: impl FnOnce() -> (T, Cost) + Send + 'static,
    ) -> Result<T, ApiError> {
        let permit =
            self.permits
                .clone()
                .acquire_owned()
                .await
                .map_err(|err| ApiError::Internal {
                    reason: format!("{doing} could not start: {err}"),
                })?;
        actix_web::web::block(move || {
            let (result, cost) = work();
            if cost.bytes >= TRIM_FROM {
                give_back_memory();
            }
            drop(permit);
            result
        })
        .await
        .map_err(|err| ApiError::Internal {
            reason: format!("{doing} stopped: {err}"),
        })
    }
}

/// Returns the allocator's free memory to the system (every arena of glibc's allocator).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
pub fn give_back_memory() {
    // SAFETY: `malloc_trim` only releases free memory; it takes no pointer.
    unsafe {
        libc::malloc_trim(0);
    }
}

/// Other allocators return large blocks on their own.
#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
pub fn give_back_memory() {}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    #[actix_rt::test]
    async fn no_more_than_parallel_loads_run_at_once() {
        let loads = Loads::default();
        let running = Arc::new(AtomicUsize::new(0));
        let most = Arc::new(AtomicUsize::new(0));
        let tasks = (0..4 * PARALLEL).map(|_| {
            let (running, most) = (running.clone(), most.clone());
            loads.run("a test load", move || {
                let now = running.fetch_add(1, Ordering::SeqCst) + 1;
                most.fetch_max(now, Ordering::SeqCst);
                std::thread::sleep(std::time::Duration::from_millis(20));
                running.fetch_sub(1, Ordering::SeqCst);
                ((), Cost::default())
            })
        });
        for done in futures_util::future::join_all(tasks).await {
            done.unwrap();
        }
        let most = most.load(Ordering::SeqCst);
        assert!((1..=PARALLEL).contains(&most), "{most} loads at once");
    }
}
