//! The admin commands: `hodei <noun> <verb>` against a running server, through the typed client
//! of `hodei_api::client`. Each noun has a file; [`live`] is the follow view of a run.
//!
//! Exit codes: 0 ok; 1 a followed run failed or was cancelled, or the server failed the request;
//! 2 a usage or validation error (also a request the server refused as wrong: an unknown id, an
//! illegal move); 3 the server is unreachable or refused the token.

mod admin;
mod agents;
mod artifacts;
mod context;
mod live;
mod output;
mod pipelines;
mod repos;
mod runs;
mod secrets;

use std::future::Future;

use hodei_api::client::{Client, ClientError};

pub use admin::{
    ContextsCommand, EventsArgs, JobsCommand, LoginArgs, QueueArgs, TokensCommand, WorkersCommand,
};
pub use agents::AgentsCommand;
pub use output::Format;
pub use pipelines::PipelinesCommand;
pub use repos::ReposCommand;
pub use runs::RunsCommand;
pub use secrets::SecretsCommand;

use super::{EXIT_FAILED, EXIT_OK, EXIT_SERVER, EXIT_USAGE};

/// Options every command that asks a server takes, after the command's name
/// (`hodei runs list -o json`). `hodei run`, `validate` and `server` do not take them.
#[derive(Debug, Clone, clap::Args)]
pub struct Global {
    /// The context (server and token) to use instead of the current one; see `hodei login`.
    #[arg(long, global = true, value_name = "NAME")]
    pub context: Option<String>,
    /// How to print results: tables for people, JSON or YAML for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

/// The output option alone, for the commands that ask no server (`login`, `contexts`).
#[derive(Debug, Clone, clap::Args)]
pub struct Output {
    /// How to print results: tables for people, JSON or YAML for scripts.
    #[arg(long, short = 'o', global = true, value_enum, default_value_t = Format::Table)]
    pub output: Format,
}

impl Output {
    /// The options of a command that asks no server: no context to choose.
    pub fn global(&self) -> Global {
        Global {
            context: None,
            output: self.output,
        }
    }
}

/// An admin command, ready to run.
pub enum Command {
    Login(LoginArgs),
    Contexts(ContextsCommand),
    Pipelines(PipelinesCommand),
    Runs(RunsCommand),
    Jobs(JobsCommand),
    Workers(WorkersCommand),
    Queue(QueueArgs),
    Tokens(TokensCommand),
    Agents(AgentsCommand),
    Secrets(SecretsCommand),
    Repos(ReposCommand),
    Events(EventsArgs),
    Status,
}

/// What failed, as the user is told, and the exit code it means.
pub struct Failure {
    pub code: u8,
    pub message: String,
}

impl Failure {
    pub fn usage(message: impl Into<String>) -> Failure {
        Failure {
            code: EXIT_USAGE,
            message: message.into(),
        }
    }

    /// A client error, with how to fix it.
    pub fn client(err: ClientError) -> Failure {
        let code = match &err {
            ClientError::Unreachable { .. }
            | ClientError::Certificate { .. }
            | ClientError::Unauthorized { .. } => EXIT_SERVER,
            ClientError::BadUrl { .. } | ClientError::Tls { .. } => EXIT_SERVER,
            err if err.is_retryable() => EXIT_FAILED,
            ClientError::Rejected { .. } => EXIT_USAGE,
            _ => EXIT_FAILED,
        };
        let hint = match &err {
            ClientError::Unreachable { url, .. } => format!(
                "\n  hint: is `hodei server` running at {url}? Choose another server with `hodei login URL --token TOKEN`, `--context NAME` or HODEI_URL"
            ),
            ClientError::Certificate { problem, .. } => format!("\n  hint: {}", problem.fix()),
            ClientError::Unauthorized { status: 401, url, .. } => format!(
                "\n  hint: log in with a valid token: `hodei login {url} --token TOKEN` (or set HODEI_TOKEN); an admin can make one with `hodei tokens create`"
            ),
            ClientError::Unauthorized { .. } => {
                "\n  hint: the token's role is too low for this; ask an admin for an operator or admin token".to_owned()
            }
            ClientError::Rejected {
                retry_after: Some(seconds),
                ..
            } => format!("\n  hint: try again in {seconds} s"),
            _ => String::new(),
        };
        let mut message = format!("{err}{hint}");
        if let ClientError::Rejected { problem, .. } = &err {
            for d in problem.diagnostics.iter().flatten() {
                let at = match (d.line, d.column) {
                    (Some(l), Some(c)) => format!("{l}:{c}: "),
                    _ => String::new(),
                };
                message.push_str(&format!("\n  {at}{}: {}", d.path, d.message));
            }
            for e in problem.errors.iter().flatten() {
                message.push_str(&format!("\n  {e}"));
            }
        }
        Failure { code, message }
    }
}

impl From<ClientError> for Failure {
    fn from(err: ClientError) -> Failure {
        Failure::client(err)
    }
}

impl From<context::ContextError> for Failure {
    fn from(err: context::ContextError) -> Failure {
        let code = match err {
            context::ContextError::NoServer => EXIT_SERVER,
            _ => EXIT_USAGE,
        };
        Failure {
            code,
            message: err.to_string(),
        }
    }
}

/// What a command gives back: its exit code, or what failed.
pub type Outcome = Result<u8, Failure>;

/// Runs an admin command; returns the exit code.
pub fn run(command: Command, global: &Global) -> u8 {
    // Printing into a closed pipe (`hodei runs list | head`) ends the process quietly, as
    // for any command-line tool, instead of failing the print.
    // SAFETY: setting a signal's disposition to the default has no preconditions.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
    let printer = output::Printer::new(global.output);
    let outcome = match command {
        Command::Login(args) => block_on(admin::login(args, printer)),
        Command::Contexts(cmd) => admin::contexts(cmd, printer),
        other => match client(global) {
            Err(failure) => Err(failure),
            Ok(client) => block_on(dispatch(other, client, printer)),
        },
    };
    match outcome {
        Ok(code) => code,
        Err(failure) => {
            eprintln!("error: {}", failure.message);
            failure.code
        }
    }
}

async fn dispatch(command: Command, client: Client, printer: output::Printer) -> Outcome {
    match command {
        Command::Pipelines(cmd) => pipelines::run(cmd, &client, printer).await,
        Command::Runs(cmd) => runs::run(cmd, &client, printer).await,
        Command::Jobs(cmd) => admin::jobs(cmd, &client, printer).await,
        Command::Workers(cmd) => admin::workers(cmd, &client, printer).await,
        Command::Queue(args) => admin::queue(args, &client, printer).await,
        Command::Tokens(cmd) => admin::tokens(cmd, &client, printer).await,
        Command::Agents(cmd) => agents::run(cmd, &client, printer).await,
        Command::Secrets(cmd) => secrets::run(cmd, &client, printer).await,
        Command::Repos(cmd) => repos::run(cmd, &client, printer).await,
        Command::Events(args) => admin::events(args, &client, printer).await,
        Command::Status => admin::status(&client, printer).await,
        Command::Login(_) | Command::Contexts(_) => Ok(EXIT_OK),
    }
}

/// The client of the chosen server.
fn client(global: &Global) -> Result<Client, Failure> {
    let path = context::path();
    let config = context::Config::load(&path)?;
    let target = config.target(
        global.context.as_deref(),
        |key| std::env::var(key).ok(),
        &path,
    )?;
    Ok(Client::new(&target)?)
}

/// Runs a future on a runtime of this thread.
fn block_on<F: Future<Output = Outcome>>(future: F) -> Outcome {
    match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime.block_on(future),
        Err(err) => Err(Failure {
            code: super::EXIT_INTERNAL,
            message: format!("cannot start the async runtime: {err}"),
        }),
    }
}

/// Parses `KEY=VALUE`.
pub fn key_value(text: &str) -> Result<(String, String), String> {
    match text.split_once('=') {
        Some((key, value)) if !key.is_empty() => Ok((key.to_owned(), value.to_owned())),
        _ => Err(format!("`{text}` is not KEY=VALUE")),
    }
}
