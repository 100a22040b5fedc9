//! `hodei secrets set | list | delete`: the server's stored secrets. A value is read from
//! standard input or typed at a prompt that does not echo: never from an argument, which other
//! users of the machine could read in the process list.

use std::io::{IsTerminal, Read, Write};

use hodei_api::client::Client;

use super::output::{Printer, Table, ago};
use super::{EXIT_OK, Failure, Outcome};

/// Where a secret applies.
#[derive(Debug, Clone, clap::Args)]
#[group(required = false, multiple = false)]
pub struct ScopeArgs {
    /// The secret belongs to this pipeline's runs.
    #[arg(long, value_name = "NAME")]
    pub pipeline: Option<String>,
    /// The secret belongs to the runs of this repository's pipelines.
    #[arg(long, value_name = "NAME")]
    pub repository: Option<String>,
}

impl ScopeArgs {
    /// `(scope, owner)`, if one was given.
    fn scope(&self) -> Option<(&'static str, &str)> {
        match (&self.pipeline, &self.repository) {
            (Some(p), _) => Some(("pipeline", p)),
            (None, Some(r)) => Some(("repository", r)),
            (None, None) => None,
        }
    }

    fn required(&self) -> Result<(&'static str, &str), Failure> {
        self.scope().ok_or_else(|| {
            Failure::usage("say whose secret it is: --pipeline NAME or --repository NAME")
        })
    }
}

/// Secrets the server keeps for runs (admin to change, operator to list).
#[derive(Debug, clap::Subcommand)]
pub enum SecretsCommand {
    /// Store a secret's value, read from standard input (or typed at a prompt that does not echo).
    ///
    /// Runs of the pipeline (or of the repository's pipelines) get it as the environment
    /// variable NAME when the pipeline names it under `secrets:`; it is masked in every log.
    /// One trailing newline of the input is dropped.
    #[command(
        after_help = "Examples:\n  hodei secrets set DEPLOY_TOKEN --pipeline web          # prompts\n  printf %s \"$TOKEN\" | hodei secrets set DEPLOY_TOKEN --pipeline web\n  hodei secrets set REGISTRY_PASSWORD --repository app < password.txt"
    )]
    Set {
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// List stored secrets: names and times, never values.
    #[command(
        after_help = "Examples:\n  hodei secrets list\n  hodei secrets list --pipeline web -o json"
    )]
    List {
        #[command(flatten)]
        scope: ScopeArgs,
    },
    /// Delete a secret: runs that name it can no longer start.
    #[command(after_help = "Examples:\n  hodei secrets delete DEPLOY_TOKEN --pipeline web")]
    Delete {
        name: String,
        #[command(flatten)]
        scope: ScopeArgs,
    },
}

pub async fn run(cmd: SecretsCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        SecretsCommand::Set { name, scope } => {
            let (kind, owner) = scope.required()?;
            let value = read_value(&name)?;
            let stored = client.set_secret(kind, owner, &name, &value).await?;
            printer.show(&stored, |_| {
                println!("Secret {name} of {kind} `{owner}` stored.");
            });
        }
        SecretsCommand::List { scope } => {
            let list = client.secrets(scope.scope()).await?;
            printer.show(&list.items, |_| {
                let mut table = Table::new(vec!["SCOPE", "OWNER", "NAME", "UPDATED", "CREATED"]);
                for s in &list.items {
                    table.row(vec![
                        s.scope.clone(),
                        s.owner.clone(),
                        s.name.clone(),
                        ago(s.updated),
                        ago(s.created),
                    ]);
                }
                table.print();
            });
        }
        SecretsCommand::Delete { name, scope } => {
            let (kind, owner) = scope.required()?;
            client.delete_secret(kind, owner, &name).await?;
            let answer =
                serde_json::json!({ "scope": kind, "owner": owner, "name": name, "deleted": true });
            printer.show(&answer, |_| {
                println!("Secret {name} of {kind} `{owner}` deleted.");
            });
        }
    }
    Ok(EXIT_OK)
}

/// The value: typed at a prompt without echo on a terminal, else all of standard input; one
/// trailing newline is dropped either way.
fn read_value(name: &str) -> Result<String, Failure> {
    let stdin = std::io::stdin();
    let mut value = String::new();
    if stdin.is_terminal() {
        eprint!("Value of {name} (not shown): ");
        let _ = std::io::stderr().flush();
        let _echo = EchoOff::new();
        stdin
            .read_line(&mut value)
            .map_err(|err| Failure::usage(format!("cannot read the value: {err}")))?;
        eprintln!();
    } else {
        stdin.lock().read_to_string(&mut value).map_err(|err| {
            Failure::usage(format!(
                "cannot read the value from standard input (UTF-8 expected): {err}"
            ))
        })?;
    }
    if value.ends_with('\n') {
        value.pop();
        if value.ends_with('\r') {
            value.pop();
        }
    }
    if value.is_empty() {
        return Err(Failure::usage(format!(
            "the value of {name} is empty: pipe it in (`printf %s \"$VALUE\" | hodei secrets set {name} ...`) or type it at the prompt"
        )));
    }
    Ok(value)
}

/// The terminal's echo, off until dropped.
struct EchoOff(Option<libc::termios>);

impl EchoOff {
    fn new() -> EchoOff {
        // SAFETY: tcgetattr/tcsetattr on standard input with a termios they fill or that
        // tcgetattr filled; failures leave the terminal as it was.
        unsafe {
            let mut saved: libc::termios = std::mem::zeroed();
            if libc::tcgetattr(libc::STDIN_FILENO, &mut saved) != 0 {
                return EchoOff(None);
            }
            let mut quiet = saved;
            quiet.c_lflag &= !libc::ECHO;
            quiet.c_lflag |= libc::ECHONL;
            if libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, &quiet) != 0 {
                return EchoOff(None);
            }
            EchoOff(Some(saved))
        }
    }
}

impl Drop for EchoOff {
    fn drop(&mut self) {
        if let Some(saved) = &self.0 {
            // SAFETY: restores the settings tcgetattr gave.
            unsafe {
                libc::tcsetattr(libc::STDIN_FILENO, libc::TCSANOW, saved);
            }
        }
    }
}
