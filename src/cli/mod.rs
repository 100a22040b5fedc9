//! The command line: `hodei <command>`, parsed with clap. Each command lives in a file of its own
//! and returns its exit code.

mod admin;
mod approve;
mod pod_steps;
mod progress;
mod remote;
mod replica;
mod run;
mod server;
mod validate;

#[cfg(test)]
mod deploy_tests;

use clap::{Parser, Subcommand};

/// Everything went as asked.
pub const EXIT_OK: u8 = 0;
/// A pipeline is invalid, or a run failed or was cancelled.
pub const EXIT_FAILED: u8 = 1;
/// The command line is wrong, or a named file cannot be read.
pub const EXIT_USAGE: u8 = 2;
/// A server cannot be reached, or refused the token (admin commands).
pub const EXIT_SERVER: u8 = 3;
/// A bug in Hodei.
pub const EXIT_INTERNAL: u8 = hodei_actors::supervise::EXIT_INTERNAL as u8;

/// Hodei: a self-hosted CI/CD orchestrator.
#[derive(Debug, Parser)]
#[command(name = "hodei", version, about, propagate_version = true)]
#[command(
    after_help = "Examples:\n  hodei server\n  hodei run examples/local.yml\n  hodei validate examples/rust-crate.yml\n  hodei login http://127.0.0.1:8080 --token \"$(cat hodei-data/admin.token)\"\n  hodei pipelines apply examples/local.yml\n  hodei runs start local --follow\n  hodei runs list --status failed -o json\n\nExit codes: 0 ok, 1 a run failed or was cancelled, 2 usage or validation error,\n3 server unreachable or token refused."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    Run(run::Args),
    Server(server::Args),
    Agent(crate::agent::Args),
    Validate(validate::Args),
    Login(remote::LoginArgs),
    /// The saved servers (contexts): list, use, remove.
    #[command(after_help = "Examples:\n  hodei contexts list\n  hodei contexts use prod")]
    Contexts {
        #[command(subcommand)]
        command: remote::ContextsCommand,
        #[command(flatten)]
        output: remote::Output,
    },
    /// Pipeline definitions on a server: apply, list, show.
    #[command(
        after_help = "Examples:\n  hodei pipelines apply .hodei/*.yml\n  hodei pipelines list\n  hodei pipelines show web"
    )]
    Pipelines {
        #[command(subcommand)]
        command: remote::PipelinesCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    /// Runs on a server: start, list, show, cancel, retry, rerun, logs.
    #[command(
        after_help = "Examples:\n  hodei runs start web --follow\n  hodei runs list --status failed\n  hodei runs logs 42 --job build -f"
    )]
    Runs {
        #[command(subcommand)]
        command: remote::RunsCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    /// Jobs on a server: show, approve.
    #[command(after_help = "Examples:\n  hodei jobs show 7\n  hodei jobs approve 9")]
    Jobs {
        #[command(subcommand)]
        command: remote::JobsCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    /// Workers of a server: list, drain, undrain.
    #[command(after_help = "Examples:\n  hodei workers list\n  hodei workers drain local")]
    Workers {
        #[command(subcommand)]
        command: remote::WorkersCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    Queue(remote::QueueArgs),
    /// API tokens of a server (admin): create, list, revoke.
    #[command(
        after_help = "Examples:\n  hodei tokens create --role operator --name ci-bot\n  hodei tokens revoke 3"
    )]
    Tokens {
        #[command(subcommand)]
        command: remote::TokensCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    /// Agents on other machines (admin): registration tokens, list, delete.
    #[command(
        after_help = "Examples:\n  hodei agents tokens create --name builders --labels linux\n  hodei agents list"
    )]
    Agents {
        #[command(subcommand)]
        command: remote::AgentsCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    /// Secrets a server keeps for runs: set (value from stdin or a prompt), list, delete.
    #[command(
        after_help = "Examples:\n  hodei secrets set DEPLOY_TOKEN --pipeline web\n  hodei secrets list\n  hodei secrets delete DEPLOY_TOKEN --pipeline web"
    )]
    Secrets {
        #[command(subcommand)]
        command: remote::SecretsCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    /// Repositories whose forges' webhooks start runs: add, list, show, remove.
    #[command(
        after_help = "Examples:\n  hodei repos add app --forge github --url https://github.com/acme/app.git --webhook-secret HOOK\n  hodei repos list"
    )]
    Repos {
        #[command(subcommand)]
        command: remote::ReposCommand,
        #[command(flatten)]
        global: remote::Global,
    },
    Events(remote::EventsArgs),
    /// The server's version and health, the queue and the workers.
    #[command(after_help = "Examples:\n  hodei status\n  hodei status -o json | jq .queued")]
    Status {
        #[command(flatten)]
        global: remote::Global,
    },
    /// Operations on a server's store, on its machine: copy-store (SQLite to PostgreSQL).
    #[command(
        after_help = "Examples:\n  hodei admin copy-store --from sqlite:hodei-data/hodei.db --to postgres://hodei:PASSWORD@db.example/hodei"
    )]
    Admin {
        #[command(subcommand)]
        command: admin::AdminCommand,
    },
    /// Print a shell completion script.
    #[command(
        after_help = "Examples:\n  hodei completions bash > /etc/bash_completion.d/hodei\n  hodei completions zsh > \"${fpath[1]}/_hodei\"\n  hodei completions fish > ~/.config/fish/completions/hodei.fish"
    )]
    Completions {
        #[arg(value_enum)]
        shell: clap_complete::Shell,
    },
    /// The entrypoint of a job's pod on Kubernetes, started by Hodei.
    #[command(
        hide = true,
        name = "pod-steps",
        after_help = "Examples:\n  hodei pod-steps install /hodei/bin/hodei\n  /hodei/bin/hodei pod-steps run --workspace /workspace --secrets /hodei/secrets --wait-tcp 5432"
    )]
    PodSteps {
        #[command(subcommand)]
        command: pod_steps::Command,
    },
}

/// `println!` that never panics: a closed stdout (`hodei run … | head -1`) drops the text, and
/// is noted ([`stdout_closed`]).
macro_rules! outln {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        $crate::cli::note_stdout(writeln!(std::io::stdout().lock(), $($arg)*));
    }};
}
pub(crate) use outln;

/// Notes the result of a write to stdout: the first failure because the reader went away
/// wakes whoever waits on [`stdout_closed`]. Other failures are ignored, as `println!` would
/// not: Hodei's output is never worth a crash.
pub(crate) fn note_stdout(result: std::io::Result<()>) {
    use std::sync::atomic::{AtomicBool, Ordering};
    static NOTED: AtomicBool = AtomicBool::new(false);
    if let Err(err) = result
        && err.kind() == std::io::ErrorKind::BrokenPipe
        && !NOTED.swap(true, Ordering::SeqCst)
    {
        stdout_closed().notify_one();
    }
}

/// Woken once when stdout is closed by its reader.
pub(crate) fn stdout_closed() -> &'static tokio::sync::Notify {
    static CLOSED: std::sync::OnceLock<tokio::sync::Notify> = std::sync::OnceLock::new();
    CLOSED.get_or_init(tokio::sync::Notify::new)
}

/// Parses the command line and runs the command.
pub fn main() -> u8 {
    let cli = match Cli::try_parse() {
        Ok(cli) => cli,
        Err(err) => {
            // Help and version go to stdout with success; everything else is a usage error.
            let _ = err.print();
            return if err.use_stderr() {
                EXIT_USAGE
            } else {
                EXIT_OK
            };
        }
    };
    if !matches!(
        cli.command,
        Command::Run(_) | Command::Server(_) | Command::Agent(_) | Command::PodSteps { .. }
    ) {
        // A command whose reader went away (`hodei completions bash | head -3`) ends quietly,
        // as Unix tools do: nothing of it needs cleaning up. `hodei run` cancels its runs
        // instead ([`stdout_closed`]), and the server writes nothing to stdout that matters.
        // SAFETY: restoring the default action of a signal, before any thread is started.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_DFL) };
    }
    match cli.command {
        Command::Run(args) => run::run(&args),
        Command::Server(args) => server::run(&args),
        Command::Agent(args) => crate::agent::run(&args),
        Command::Validate(args) => validate::run(&args),
        Command::Admin { command } => admin::run(&command),
        Command::Completions { shell } => {
            let mut command = <Cli as clap::CommandFactory>::command();
            clap_complete::generate(shell, &mut command, "hodei", &mut std::io::stdout());
            EXIT_OK
        }
        Command::Login(args) => {
            let global = args.output.global();
            remote::run(remote::Command::Login(args), &global)
        }
        Command::Contexts { command, output } => {
            remote::run(remote::Command::Contexts(command), &output.global())
        }
        Command::Pipelines { command, global } => {
            remote::run(remote::Command::Pipelines(command), &global)
        }
        Command::Runs { command, global } => remote::run(remote::Command::Runs(command), &global),
        Command::Jobs { command, global } => remote::run(remote::Command::Jobs(command), &global),
        Command::Workers { command, global } => {
            remote::run(remote::Command::Workers(command), &global)
        }
        Command::Queue(args) => {
            let global = args.global.clone();
            remote::run(remote::Command::Queue(args), &global)
        }
        Command::Tokens { command, global } => {
            remote::run(remote::Command::Tokens(command), &global)
        }
        Command::Agents { command, global } => {
            remote::run(remote::Command::Agents(command), &global)
        }
        Command::Secrets { command, global } => {
            remote::run(remote::Command::Secrets(command), &global)
        }
        Command::Repos { command, global } => remote::run(remote::Command::Repos(command), &global),
        Command::Events(args) => {
            let global = args.global.clone();
            remote::run(remote::Command::Events(args), &global)
        }
        Command::Status { global } => remote::run(remote::Command::Status, &global),
        Command::PodSteps { command } => pod_steps::run(command),
    }
}

/// Ends an actix System inside the context of its Tokio runtime. The actors' tasks are dropped
/// with the System, and with them what they hold, such as a store read in flight with a pooled
/// connection: sqlx returns such a connection to its pool (and closes the pool) on a task of the
/// current runtime, and panics when there is none. actix drops its local tasks before its
/// runtime, outside the runtime's context; entered here, they are released while the runtime is
/// still there.
pub(crate) fn end_system(system: actix::SystemRunner) {
    let runtime = system.runtime().tokio_runtime().handle().clone();
    let _inside = runtime.enter();
    drop(system);
}

/// Creates (or truncates) a file readable and writable by its owner only: for secrets.
pub(crate) fn create_private(path: &std::path::Path) -> std::io::Result<std::fs::File> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    Ok(file)
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    /// Every command and subcommand shows examples in its `--help`.
    #[test]
    fn every_command_has_examples_in_its_help() {
        fn walk(command: &clap::Command, path: &str, missing: &mut Vec<String>) {
            let path = format!("{path} {}", command.get_name());
            let examples = command
                .get_after_help()
                .is_some_and(|help| help.to_string().contains("Examples:"));
            if !examples {
                missing.push(path.clone());
            }
            for sub in command.get_subcommands().filter(|s| s.get_name() != "help") {
                walk(sub, &path, missing);
            }
        }
        let mut missing = Vec::new();
        walk(&super::Cli::command(), "", &mut missing);
        assert!(
            missing.is_empty(),
            "no examples in the help of: {missing:?}"
        );
    }
}
