//! `hodei server`: the orchestrator as a service. Resolves and checks the configuration
//! ([`crate::config`]), opens the data directory, starts the supervision tree and the HTTP API,
//! creates the admin token at the first start, prints the URL, and serves until Ctrl-C or
//! SIGTERM.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hodei_api::auth::{Bootstrap, bootstrap, check_external};
use hodei_api::{ApiState, Limits};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::{EXIT_INTERNAL, EXIT_OK, EXIT_USAGE};
use crate::config::{self, Flags, ServerConfig};
use crate::wiring::{EnvSecrets, server_stack};

/// Run the Hodei server: REST API, metrics, and the actors that run pipelines.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei server\n  hodei server --listen 0.0.0.0:8080 --data /var/lib/hodei\n  hodei server --config /etc/hodei/hodei.toml\n\nSettings come from hodei.toml, then HODEI_* variables, then flags (see docs/operations.md).\nAt the first start an admin token is printed once and written to DATA/admin.token;\nHODEI_BOOTSTRAP_TOKEN sets it instead."
)]
pub struct Args {
    /// The configuration file (default: hodei.toml if it exists, or HODEI_CONFIG).
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// Where to listen, e.g. 127.0.0.1:8080.
    #[arg(long, value_name = "ADDR")]
    listen: Option<String>,
    /// The data directory: database, logs, workspaces, admin token.
    #[arg(long, value_name = "DIR")]
    data: Option<PathBuf>,
}

/// The environment variable that sets the first admin token.
const BOOTSTRAP_VARIABLE: &str = "HODEI_BOOTSTRAP_TOKEN";

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let env = |name: &str| std::env::var(name).ok();
    let config = match load_config(args, &env) {
        Ok(config) => config,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    for (name, suggestion) in config::unknown_variables(std::env::vars().map(|(k, _)| k)) {
        let hint = suggestion
            .map(|s| format!(" (did you mean {s}?)"))
            .unwrap_or_default();
        eprintln!("warning: environment variable {name} is not a Hodei setting{hint}");
    }
    let given = env(BOOTSTRAP_VARIABLE);
    if let Some(token) = &given
        && let Err(reason) = check_external(token)
    {
        eprintln!("error: environment variable {BOOTSTRAP_VARIABLE}: {reason}");
        return EXIT_USAGE;
    }
    let system = actix::System::new();
    system.block_on(serve(config, given))
}

fn load_config(args: &Args, env: &dyn Fn(&str) -> Option<String>) -> Result<ServerConfig, String> {
    let file = config::file_to_read(args.config.as_deref(), env);
    let text = match &file {
        Some((path, _)) => Some(std::fs::read_to_string(path).map_err(|err| {
            config::ConfigError::Unreadable {
                path: path.clone(),
                reason: err.to_string(),
            }
            .to_string()
        })?),
        None => None,
    };
    let flags = Flags {
        listen: args.listen.clone(),
        data: args.data.clone(),
    };
    let file = file
        .as_ref()
        .zip(text.as_deref())
        .map(|((p, _), t)| (p.as_path(), t));
    config::resolve(file, env, &flags).map_err(|err| err.to_string())
}

async fn serve(config: ServerConfig, given: Option<String>) -> u8 {
    let secrets = match EnvSecrets::from_env(&[]) {
        Ok(secrets) => Arc::new(secrets),
        Err(name) => {
            eprintln!("error: secret `{name}` is not set");
            return EXIT_USAGE;
        }
    };
    let stack = match server_stack(&config.data, secrets, config.labels.clone()).await {
        Ok(stack) => stack,
        Err(err) => {
            eprintln!("error: {err} (data directory {})", config.data.display());
            return EXIT_USAGE;
        }
    };
    let now = stack.tree.ports.clock.now();
    match bootstrap(stack.tokens.as_ref(), given.as_deref(), now).await {
        Ok(Bootstrap::Existing) => {}
        Ok(Bootstrap::Given) => {
            println!("Admin token set from {BOOTSTRAP_VARIABLE}.");
        }
        Ok(Bootstrap::Generated { token }) => {
            let file = config.data.join("admin.token");
            if let Err(err) = write_secret(&file, &token) {
                eprintln!(
                    "error: cannot write the admin token to {}: {err}",
                    file.display()
                );
                return EXIT_INTERNAL;
            }
            println!(
                "Admin token (shown once; also in {}, mode 0600):",
                file.display()
            );
            println!("  {token}");
        }
        Err(err) => {
            eprintln!("error: cannot create the admin token: {err}");
            return EXIT_INTERNAL;
        }
    }
    let listener = match TcpListener::bind(config.listen) {
        Ok(listener) => listener,
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            return EXIT_USAGE;
        }
    };
    let url = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    let limits = Limits {
        max_body: config.max_body_bytes,
    };
    let router = stack.provider.clone();
    let state = ApiState::new(stack.tree, stack.tokens, limits)
        .with_provider("docker", Arc::new(move || router.engine_trouble()));
    let server = match hodei_api::serve(state, listener, config.http_workers) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot serve on {url}: {err}");
            return EXIT_INTERNAL;
        }
    };
    // Watch for signals before saying we listen: a signal right after that stops us cleanly.
    let signals = StopSignals::watch();
    println!(
        "Hodei server listening on http://{url} (data in {})",
        config.data.display()
    );
    let _ = std::io::stdout().flush();
    let handle = server.handle();
    actix::spawn(async move {
        signals.wait().await;
        eprintln!(
            "Stopping: no new requests; running steps are stopped and resume at the next start."
        );
        handle.stop(true).await;
    });
    let result = server.await;
    // Nothing this process started keeps running; unfinished runs resume at the next start.
    stack.provider.stop_all().await;
    actix::System::current().stop();
    match result {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("error: the HTTP server failed: {err}");
            EXIT_INTERNAL
        }
    }
}

/// Ctrl-C (SIGINT) and SIGTERM, watched from the moment [`StopSignals::watch`] is called.
struct StopSignals {
    interrupt: Option<Signal>,
    terminate: Option<Signal>,
}

impl StopSignals {
    fn watch() -> StopSignals {
        let watch = |kind: SignalKind, name: &str| match signal(kind) {
            Ok(signal) => Some(signal),
            Err(err) => {
                tracing::warn!(signal = name, error = %err, "Cannot watch for a signal.");
                None
            }
        };
        StopSignals {
            interrupt: watch(SignalKind::interrupt(), "SIGINT"),
            terminate: watch(SignalKind::terminate(), "SIGTERM"),
        }
    }

    /// Until either signal arrives.
    async fn wait(self) {
        async fn next(signal: Option<Signal>) {
            match signal {
                Some(mut signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(self.interrupt) => {}
            _ = next(self.terminate) => {}
        }
    }
}

/// Writes `secret` to `path`, readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let mut file = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?;
    // An existing file keeps its mode on open: set it.
    file.set_permissions(std::fs::Permissions::from_mode(0o600))?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}
