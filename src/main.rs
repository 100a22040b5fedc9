//! # hodei
//!
//! The one binary of Hodei, a self-hosted CI/CD orchestrator. Today it lints pipelines
//! (`hodei validate`); the server, the agent, one-shot runs and the admin CLI grow here as
//! subcommands. Start reading at [`cli`] for the command line, and at the `hodei-domain` crate for
//! the pipeline model it checks.
//!
//! Exit codes are part of the interface: 0 success, 1 a pipeline (or later, a run) failed,
//! 2 a usage error, 70 an internal error. Hodei never exits with Rust's panic code 101.

mod cli;

use std::process::ExitCode;

fn main() -> ExitCode {
    // A panic is a bug in Hodei, not the user's input: say so, and keep the exit code documented.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("hodei: internal error: {info}");
        eprintln!("hodei: this is a bug; please report it with the input that caused it.");
    }));
    match std::panic::catch_unwind(cli::main) {
        Ok(code) => code,
        Err(_) => ExitCode::from(cli::EXIT_INTERNAL),
    }
}
