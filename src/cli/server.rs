//! `hodei server`: the orchestrator as a service. Resolves and checks the configuration
//! ([`crate::config`]), opens the data directory, starts the supervision tree and the HTTP API,
//! creates the admin token at the first start, prints the URL, and serves until Ctrl-C or
//! SIGTERM.

use std::io::Write as _;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hodei_actors::messages::{FlushLog, Note};
use hodei_actors::messages::{GetQueueStats, GetWorkers, SetWorkerState};
use hodei_adapters::local::RunAs;
use hodei_domain::schedule::WorkerState;
use hodei_supervisors::Tree;

use hodei_api::auth::{
    BOOTSTRAP_AGENT_TOKEN, Bootstrap, bootstrap, bootstrap_agents, check_external,
};
use hodei_api::{ApiState, Limits};
use tokio::signal::unix::{Signal, SignalKind, signal};

use super::replica;
use super::{EXIT_INTERNAL, EXIT_OK, EXIT_USAGE};
use crate::config::{self, Flags, ServerConfig};
use crate::wiring::{ServerDatabase, ServerWorkers, server_stack};
use hodei_adapters::postgres::PgStore;

/// The exit code of a leader that found itself deposed (EX_TEMPFAIL): its supervisor starts it
/// again, as a follower.
pub const EXIT_DEPOSED: u8 = 75;

/// Run the Hodei server: REST API, metrics, and the actors that run pipelines.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei server\n  hodei server --listen 0.0.0.0:8080 --data /var/lib/hodei\n  hodei server --config /etc/hodei/hodei.toml\n  hodei server --database postgres://hodei:PASSWORD@db.example:5432/hodei\n\nSettings come from hodei.toml, then HODEI_* variables, then flags (see docs/operations.md).\nAt the first start an admin token is printed once and written to DATA/admin.token;\nHODEI_BOOTSTRAP_TOKEN sets it instead; HODEI_BOOTSTRAP_AGENT_TOKEN sets an agent\nregistration token named `bootstrap` at the first start."
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
    /// A PostgreSQL database for the record and the logs, e.g.
    /// postgres://hodei:PASSWORD@db.example:5432/hodei (default: SQLite in the data directory).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
}

/// The environment variable that sets the first admin token.
const BOOTSTRAP_VARIABLE: &str = "HODEI_BOOTSTRAP_TOKEN";
/// The environment variable that sets an agent registration token at the first start.
const BOOTSTRAP_AGENT_VARIABLE: &str = "HODEI_BOOTSTRAP_AGENT_TOKEN";

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
    for (name, token) in [
        (BOOTSTRAP_VARIABLE, &given),
        (BOOTSTRAP_AGENT_VARIABLE, &env(BOOTSTRAP_AGENT_VARIABLE)),
    ] {
        if let Some(token) = token
            && let Err(reason) = check_external(token)
        {
            eprintln!("error: environment variable {name}: {reason}");
            return EXIT_USAGE;
        }
    }
    let system = actix::System::new();
    let providers = Arc::new(std::sync::Mutex::new(None));
    let code = system.block_on(serve(config, given, providers.clone()));
    // The actors are gone first, so that nothing records the stopped steps as their failure;
    // then every step this process started is stopped, and resumes at the next start.
    super::end_system(system);
    let provider = providers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
        .take();
    if let Some(provider) = provider {
        match tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
        {
            Ok(runtime) => runtime.block_on(provider.stop_all()),
            Err(err) => eprintln!("error: cannot stop the running steps: {err}"),
        }
    }
    code
}

/// How the server's own machine runs steps, said loudly at start when it is as root.
fn local_steps(slots: u32, run_as: Option<&RunAs>) -> String {
    if slots == 0 {
        return "off: every job runs on an agent".to_owned();
    }
    if let Some(user) = run_as {
        return format!(
            "as the user `{}` (uid {}), {slots} at once",
            user.name, user.uid
        );
    }
    // SAFETY: geteuid cannot fail and touches no memory.
    let uid = unsafe { libc::geteuid() };
    if uid == 0 {
        let warning = "local steps run as root: every job on this machine has root's rights; set run_as to an unprivileged user, set local_slots = 0 (jobs on agents only), or run the server as an unprivileged user (docs/operations.md, Security)";
        eprintln!("WARNING: {warning}");
        return format!("as root (uid 0): {warning}");
    }
    format!("as uid {uid}, {slots} at once")
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
        database: args.database.clone(),
    };
    let file = file
        .as_ref()
        .zip(text.as_deref())
        .map(|((p, _), t)| (p.as_path(), t));
    config::resolve(file, env, &flags).map_err(|err| err.to_string())
}

async fn serve(
    config: ServerConfig,
    given: Option<String>,
    providers: Arc<std::sync::Mutex<Option<Arc<hodei_adapters::route::ByImage>>>>,
) -> u8 {
    let agents = hodei_actors::agents::AgentSettings {
        lease: config.agent_lease,
    };
    let run_as = match config.run_as.as_deref().map(RunAs::checked).transpose() {
        Ok(run_as) => run_as,
        Err(err) => {
            eprintln!("error: run_as: {err}");
            return EXIT_USAGE;
        }
    };
    let notice = local_steps(config.local_slots, run_as.as_ref());
    let tls = match &config.tls {
        Some((cert, key)) => match hodei_api::tls::load(cert, key) {
            Ok(tls) => Some(tls),
            Err(err) => {
                eprintln!("error: tls_cert and tls_key: {err}");
                return EXIT_USAGE;
            }
        },
        None => None,
    };
    let bind = || match TcpListener::bind(config.listen) {
        Ok(listener) => Ok(listener),
        Err(err) => {
            eprintln!("error: cannot listen on {}: {err}", config.listen);
            Err(EXIT_USAGE)
        }
    };
    // A replica listens from the start (it may serve as a follower first); a single server
    // only once its admin token exists, so that a port that answers means a server that can.
    let mut listening = None;
    // Watch for signals from here on: a signal while following, or right after saying we
    // listen, stops us cleanly.
    let mut signals = StopSignals::watch();
    let shown_database = match &config.database {
        config::Database::Sqlite => String::new(),
        config::Database::Postgres(url) => {
            format!(", database {}", hodei_adapters::postgres::redact(url))
        }
    };
    let shown = format!("data in {}{shown_database}", config.data.display());
    // On PostgreSQL, this server is one of the replicas that may share the database: it
    // follows until it leads, and only the leader runs the tree.
    let (database, leadership) = match &config.database {
        config::Database::Sqlite => (ServerDatabase::Sqlite, None),
        config::Database::Postgres(database_url) => {
            let store = match PgStore::open(database_url).await {
                Ok(store) => store,
                Err(err) => {
                    eprintln!(
                        "error: cannot open the store: {err} (data directory {})",
                        config.data.display()
                    );
                    return EXIT_USAGE;
                }
            };
            let listener = listening.insert(match bind() {
                Ok(listener) => listener,
                Err(code) => return code,
            });
            let identity = replica::identity(&config, listener, tls.is_some());
            let followed = {
                let mut stop = Box::pin(signals.wait());
                replica::follow(
                    &store,
                    &config,
                    listener,
                    tls.clone(),
                    identity,
                    &mut stop,
                    &shown,
                )
                .await
            };
            match followed {
                replica::Followed::Leads(leadership) => (
                    ServerDatabase::Postgres(store.clone()),
                    Some((store, leadership)),
                ),
                replica::Followed::Stopped(code) => return code,
            }
        }
    };
    let workers = ServerWorkers {
        labels: config.labels.clone(),
        local_slots: config.local_slots,
        run_as,
        kubernetes: config.kubernetes.clone(),
        pools: crate::pools::Pools::from_config(&config),
    };
    let stack = match server_stack(&config.data, database, workers, agents, config.files).await {
        Ok(stack) => stack,
        Err(err) => {
            eprintln!("error: {err} (data directory {})", config.data.display());
            return EXIT_USAGE;
        }
    };
    *providers
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner) = Some(stack.provider.clone());
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
    if let Ok(token) = std::env::var(BOOTSTRAP_AGENT_VARIABLE) {
        match bootstrap_agents(stack.agents.as_ref(), &token, now).await {
            Ok(true) => println!(
                "Agent registration token `{BOOTSTRAP_AGENT_TOKEN}` set from {BOOTSTRAP_AGENT_VARIABLE}."
            ),
            Ok(false) => {}
            Err(err) => {
                eprintln!("error: cannot store the agent registration token: {err}");
                return EXIT_INTERNAL;
            }
        }
    }
    let listener = match listening.take() {
        Some(listener) => listener,
        None => match bind() {
            Ok(listener) => listener,
            Err(code) => return code,
        },
    };
    let url = listener
        .local_addr()
        .map_or_else(|_| config.listen.to_string(), |a| a.to_string());
    let limits = Limits {
        max_body: config.max_body_bytes,
        max_queued: config.max_queued_jobs,
        max_artifacts: config.files.artifacts_per_job,
        ..Limits::default()
    };
    let router = stack.provider.clone();
    let tree = stack.tree.clone();
    let mut state = ApiState::new(
        stack.tree,
        stack.tokens,
        stack.secrets,
        stack.sources,
        limits,
    )
    .with_agents(stack.agents)
    .with_notice("local_steps", notice)
    .with_provider("docker", Arc::new(move || router.engine_trouble()));
    if let Some(kube) = stack.kubernetes.clone() {
        state = state.with_provider("kubernetes", Arc::new(move || kube.trouble()));
    }
    let (deposed, deposition) = tokio::sync::oneshot::channel();
    let mut role = String::new();
    if let Some((store, leadership)) = &leadership {
        replica::renew(store.clone(), leadership, deposed);
        state = state.with_cluster(leadership.cluster.clone());
        role = format!(
            ": the leader of the replicas ({}, epoch {})",
            leadership.holder, leadership.epoch
        );
    }
    // The runs that were going when the server stopped report their commit statuses again.
    let resuming = state.clone();
    actix::spawn(async move { hodei_api::status::resume(&resuming).await });
    let accepting = state.accepting.clone();
    let scheme = if tls.is_some() { "https" } else { "http" };
    let server = match hodei_api::serve(state, listener, config.http_workers, tls) {
        Ok(server) => server,
        Err(err) => {
            eprintln!("error: cannot serve on {url}: {err}");
            return EXIT_INTERNAL;
        }
    };
    println!("Hodei server listening on {scheme}://{url} ({shown}){role}");
    let _ = std::io::stdout().flush();
    // What the start allocated and freed (migrations, the OpenAPI document, the resumed runs'
    // plans) stays with the allocator's per-thread arenas otherwise, and the code it ran stays
    // mapped: give both back once the start is over.
    actix::spawn(async {
        tokio::time::sleep(std::time::Duration::from_millis(500)).await;
        hodei_api::loads::give_back_memory();
        let pages = hodei_api::loads::give_back_start_pages();
        tracing::debug!(
            bytes = pages,
            "The start's pages of the program were given back."
        );
    });
    let handle = server.handle();
    let grace = config.shutdown_grace;
    // A leader that finds itself deposed stops at once: another replica runs the tree now.
    let was_deposed = Arc::new(std::sync::atomic::AtomicBool::new(false));
    if leadership.is_some() {
        let (handle, was_deposed) = (handle.clone(), was_deposed.clone());
        actix::spawn(async move {
            if let Ok(why) = deposition.await {
                eprintln!(
                    "error: this replica no longer leads: {why}; it stops, and its supervisor may start it again as a follower"
                );
                was_deposed.store(true, std::sync::atomic::Ordering::SeqCst);
                handle.stop(false).await;
            }
        });
    }
    actix::spawn(async move {
        let mut signals = signals;
        signals.wait().await;
        eprintln!(
            "Stopping: no new runs; running jobs have {} s to finish (a second signal stops them now).",
            grace.as_secs()
        );
        accepting.store(false, std::sync::atomic::Ordering::SeqCst);
        tokio::select! {
            _ = wind_down(&tree, grace) => {}
            _ = signals.wait() => eprintln!("Stopping now."),
        }
        stop_running(&tree, grace).await;
        handle.stop(true).await;
    });
    let result = server.await;
    let deposed = was_deposed.load(std::sync::atomic::Ordering::SeqCst);
    if let Some((store, leadership)) = &leadership {
        // Another replica takes over at its next try, without waiting for the lease to end.
        let resigned = store.resign(&leadership.holder, leadership.epoch);
        if deposed {
            // Deposed by another epoch, this changes nothing. Stopped because its renewals
            // came too late (a busy machine) while its lease still held, the replica ends
            // that lease too, within what is left of it (the database may be out of reach).
            let _ = tokio::time::timeout(leadership.ttl / 4, resigned).await;
        } else {
            let _ = resigned.await;
        }
    }
    if deposed {
        actix::System::current().stop();
        return EXIT_DEPOSED;
    }
    actix::System::current().stop();
    match result {
        Ok(()) => EXIT_OK,
        Err(err) => {
            eprintln!("error: the HTTP server failed: {err}");
            EXIT_INTERNAL
        }
    }
}

/// Lets the jobs that run finish, for at most `grace`: the workers take no new job, and the
/// wait ends when none runs.
async fn wind_down(tree: &Tree, grace: Duration) {
    let workers = tree.scheduler.send(GetWorkers).await.unwrap_or_default();
    for view in workers {
        tree.scheduler.do_send(SetWorkerState {
            worker: view.worker.id,
            state: WorkerState::Draining,
        });
    }
    let deadline = tokio::time::Instant::now() + grace;
    while tokio::time::Instant::now() < deadline {
        match tree.scheduler.send(GetQueueStats).await {
            Ok(stats) if stats.placed > 0 => {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
            _ => return,
        }
    }
}

/// Says in the log of every job still running why it is stopped; the steps themselves are
/// stopped when the server has stopped, and the jobs resume at the next start. The jobs of
/// the Kubernetes worker get no note: their pods run on, and the next start takes them back.
async fn stop_running(tree: &Tree, grace: Duration) {
    let workers = tree.scheduler.send(GetWorkers).await.unwrap_or_default();
    for view in workers {
        // A pod runs on without Hodei, and the next start takes its step back with the output
        // it wrote meanwhile: a note in the middle of the step's output would be taken for a
        // part of it.
        let pods = view.worker.id.0 == crate::kube_worker::KUBERNETES_WORKER;
        for job in view.jobs {
            if !pods {
                tree.hub.do_send(Note {
                    job,
                    text: format!(
                        "Hodei shut down (SIGTERM) and the job did not finish within the grace period of {} s: its step was stopped; the job goes on at the next start",
                        grace.as_secs()
                    ),
                });
            }
            let _ = tree.hub.send(FlushLog { job }).await;
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

    /// Until either signal arrives (again).
    async fn wait(&mut self) {
        async fn next(signal: &mut Option<Signal>) {
            match signal {
                Some(signal) => {
                    signal.recv().await;
                }
                None => std::future::pending().await,
            }
        }
        tokio::select! {
            _ = next(&mut self.interrupt) => {}
            _ = next(&mut self.terminate) => {}
        }
    }
}

/// Writes `secret` to `path`, readable by its owner only.
fn write_secret(path: &Path, secret: &str) -> std::io::Result<()> {
    let mut file = super::create_private(path)?;
    writeln!(file, "{secret}")?;
    file.sync_all()
}
