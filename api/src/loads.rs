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

/// Gives back the pages of the program's own code and read-only data that the start used: the
/// migrations, the configuration, the routes and the OpenAPI document run once, and with the
/// kernel mapping 64 KiB around each page a start touches, they kept more than half of a
/// 50 MB binary resident. The pages an idle or busy server uses come back on their first use,
/// from the page cache or the file (the binary is on disk: nothing is lost, and no page that
/// was ever written is touched). Returns how many bytes were advised; 0 where the kernel (before
/// Linux 5.4) or the platform cannot.
#[cfg(target_os = "linux")]
pub fn give_back_start_pages() -> usize {
    /// Whole pages of the program's segments that are never written: `(start, length)`.
    unsafe extern "C" fn read_only(
        info: *mut libc::dl_phdr_info,
        _size: libc::size_t,
        ranges: *mut libc::c_void,
    ) -> libc::c_int {
        // SAFETY: the loader passes a valid `dl_phdr_info` for the call; `ranges` is the
        // `Vec` that `give_back_start_pages` lends for the walk.
        let (info, ranges) = unsafe { (&*info, &mut *ranges.cast::<Vec<(usize, usize)>>()) };
        // SAFETY: `dlpi_phdr` points to `dlpi_phnum` program headers of the object.
        let headers =
            unsafe { std::slice::from_raw_parts(info.dlpi_phdr, usize::from(info.dlpi_phnum)) };
        // SAFETY: `sysconf` only reads a setting.
        let page = usize::try_from(unsafe { libc::sysconf(libc::_SC_PAGESIZE) }).unwrap_or(4096);
        for header in headers {
            if header.p_type != libc::PT_LOAD || header.p_flags & libc::PF_W != 0 {
                continue;
            }
            let start = info.dlpi_addr as usize + header.p_vaddr as usize;
            let end = start + header.p_memsz as usize;
            let (start, end) = (start.div_ceil(page) * page, end / page * page);
            if end > start {
                ranges.push((start, end - start));
            }
        }
        // The first object is the program itself: the walk stops there.
        1
    }
    let mut ranges: Vec<(usize, usize)> = Vec::new();
    // SAFETY: the callback only reads the headers it is given and pushes to `ranges`, which
    // outlives the walk.
    unsafe {
        libc::dl_iterate_phdr(Some(read_only), (&raw mut ranges).cast::<libc::c_void>());
    }
    let mut advised = 0;
    for (start, length) in ranges {
        // SAFETY: whole pages of a segment mapped from the program's file and never written:
        // paging them out only drops copies that are read again from the file when used.
        let done = unsafe { libc::madvise(start as *mut libc::c_void, length, libc::MADV_PAGEOUT) };
        if done == 0 {
            advised += length;
        }
    }
    advised
}

/// Elsewhere the pages stay.
#[cfg(not(target_os = "linux"))]
pub fn give_back_start_pages() -> usize {
    0
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    /// This process's resident pages mapped from files (its program's among them), in KiB.
    #[cfg(target_os = "linux")]
    fn rss_file_kib() -> u64 {
        std::fs::read_to_string("/proc/self/status")
            .unwrap()
            .lines()
            .find_map(|l| l.strip_prefix("RssFile:"))
            .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
            .unwrap()
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn the_start_pages_of_the_program_are_given_back_and_come_back_when_used() {
        let before = rss_file_kib();
        let advised = give_back_start_pages();
        let after = rss_file_kib();
        assert!(
            advised > 1 << 20,
            "the program's read-only segments: {advised} bytes"
        );
        assert!(
            after + 1024 < before,
            "resident file pages: {before} KiB before, {after} KiB after"
        );
        // The code runs on: its pages come back from the file.
        let parsed: serde_json::Value = serde_json::from_str(r#"{"still": ["here", 1]}"#).unwrap();
        assert_eq!(parsed["still"][1], 1);
    }

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
