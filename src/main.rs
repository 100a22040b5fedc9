//! # hodei
//!
//! The one binary of Hodei, a self-hosted CI/CD orchestrator: `hodei server` serves the API,
//! `hodei run` runs a pipeline here with the same actors as the server, `hodei validate` lints
//! pipelines. [`config`] resolves the server's settings ([`kube_config`] its `[kubernetes]`
//! table, whose worker [`kube_worker`] makes); [`wiring`] is the one place that chooses
//! concrete adapters. Start reading at [`cli`] for the command line, and at the `hodei-domain`
//! crate for the pipeline model it checks.
//!
//! Exit codes are part of the interface: 0 success, 1 a pipeline (or later, a run) failed,
//! 2 a usage error, 70 an internal error. Hodei never exits with Rust's panic code 101.

mod agent;
mod cli;
mod config;
mod kube_config;
mod kube_worker;
mod logging;
mod pools;
mod wiring;

use std::process::ExitCode;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by the first panic on any thread, contained or not.
static PANICKED: AtomicBool = AtomicBool::new(false);

fn main() -> ExitCode {
    // A panic is a bug in Hodei, not the user's input: say so, and keep the exit code documented.
    std::panic::set_hook(Box::new(|info| {
        PANICKED.store(true, Ordering::SeqCst);
        eprintln!("hodei: internal error: {info}");
        eprintln!("hodei: this is a bug; please report it with the input that caused it.");
    }));
    // Hodei's own logs go to stderr; `HODEI_LOG` (e.g. `info`, `hodei_actors=debug`) sets the level.
    logging::init();
    let code = std::panic::catch_unwind(cli::main).ok();
    ExitCode::from(exit_code(code, PANICKED.load(Ordering::SeqCst)))
}

/// The exit code of a command that ended with `code` (`None`: it panicked): an internal error
/// reported on any thread, even one Hodei went on after, makes it [`cli::EXIT_INTERNAL`], so
/// that a process that said "internal error" never exits with success.
fn exit_code(code: Option<u8>, panicked: bool) -> u8 {
    match code {
        Some(code) if !panicked => code,
        _ => cli::EXIT_INTERNAL,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_internal_error_on_any_thread_never_exits_with_success() {
        assert_eq!(exit_code(Some(0), false), 0);
        assert_eq!(exit_code(Some(1), false), 1);
        assert_eq!(exit_code(None, true), cli::EXIT_INTERNAL);
        assert_eq!(exit_code(Some(0), true), cli::EXIT_INTERNAL);
        assert_eq!(exit_code(Some(1), true), cli::EXIT_INTERNAL);
    }
}
