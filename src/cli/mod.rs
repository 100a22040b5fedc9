//! The command line: `hodei <command>`, parsed with clap. Each command lives in a file of its own
//! and returns its exit code.

mod progress;
mod run;
mod server;
mod validate;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// A pipeline is invalid, or a run failed or was cancelled.
pub const EXIT_FAILED: u8 = 1;
/// The command line is wrong, or a named file cannot be read.
pub const EXIT_USAGE: u8 = 2;
/// A bug in Hodei.
pub const EXIT_INTERNAL: u8 = 70;

/// Hodei: a self-hosted CI/CD orchestrator.
#[derive(Debug, Parser)]
#[command(name = "hodei", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  hodei server\n  hodei run examples/local.yml\n  hodei validate examples/rust-crate.yml\n  hodei validate --format json .hodei/*.yml"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Args),
    Server(server::Args),
    Validate(validate::Args),
}

/// Parses the command line and runs the command.
pub fn main() -> ExitCode {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with success; everything else is a usage error.
            let _ = err.print();
            return ExitCode::from(if err.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            });
        }
    };
    let code = match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Server(args) => server::run(&args),
        Command::Validate(args) => validate::run(&args),
    };
    ExitCode::from(code)
}
