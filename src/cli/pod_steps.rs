//! `hodei pod-steps`: the entrypoint of a job's pod on Kubernetes (hidden: Hodei starts it, not
//! a user). `install DEST` copies this binary for the pod's init container; `run` runs the
//! steps that Hodei asks for on its standard input (see `hodei_adapters::kube`).

use std::path::PathBuf;
use std::time::Duration;

use hodei_adapters::kube::{EntrypointConfig, install, run_entrypoint};

use super::{EXIT_FAILED, EXIT_OK};

/// The entrypoint of a job's pod.
#[derive(Debug, clap::Subcommand)]
pub enum Command {
    /// Copies this binary to DEST (the init container of a job's pod).
    #[command(after_help = "Examples:\n  hodei pod-steps install /hodei/bin/hodei")]
    Install { dest: PathBuf },
    /// Runs the steps requested on standard input, one after the other.
    #[command(
        after_help = "Examples:\n  /hodei/bin/hodei pod-steps run --workspace /workspace --secrets /hodei/secrets\n  /hodei/bin/hodei pod-steps run --workspace /workspace --secrets /hodei/secrets --wait-tcp 5432 --ready-timeout 60s"
    )]
    Run(RunArgs),
}

#[derive(Debug, clap::Args)]
pub struct RunArgs {
    /// The workspace; steps' working directories are relative to it.
    #[arg(long)]
    workspace: PathBuf,
    /// The directory of the mounted Secret of the pod.
    #[arg(long)]
    secrets: PathBuf,
    /// A port on localhost that must accept connections before the first step (a service's).
    #[arg(long = "wait-tcp")]
    wait_tcp: Vec<u16>,
    /// How long to wait for those ports, in seconds with an `s`: `60s`.
    #[arg(long, default_value = "60s", value_parser = seconds)]
    ready_timeout: Duration,
}

fn seconds(text: &str) -> Result<Duration, String> {
    text.strip_suffix('s')
        .and_then(|n| n.parse().ok())
        .map(Duration::from_secs)
        .ok_or_else(|| format!("`{text}`: expected whole seconds such as `60s`"))
}

/// Runs the command; its exit code.
pub fn run(command: Command) -> u8 {
    let result = match command {
        Command::Install { dest } => install(&dest),
        Command::Run(args) => run_entrypoint(
            &EntrypointConfig {
                workspace: args.workspace,
                secrets: args.secrets,
                wait_tcp: args.wait_tcp,
                ready_timeout: args.ready_timeout,
            },
            std::io::stdin(),
            std::io::stdout(),
        ),
    };
    match result {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("hodei pod-steps: {err}");
            EXIT_FAILED
        }
    }
}
