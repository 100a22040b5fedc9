//! `hodei agent`: a worker on another machine. It registers once with a registration token
//! (its own credential is kept in its data directory, mode 0600), then polls its server for
//! jobs, runs each with the same job actor and providers as `hodei run` and the server (local
//! processes, Docker for jobs with an `image`), spools their output to its disk, and sends it
//! and the jobs' transitions back under each job's lease. See `docs/agents.md`.
//!
//! - `mod.rs` (here): the command, registration, the poll and heartbeat loops, stopping.
//! - `job.rs`: one job — its spool, its job actor, the upload of its output and transitions.
//! - `outbox.rs`: the ledger where a job's transitions wait for the server.
//! - `files.rs`: caches on the agent's disk; artifacts sent to and fetched from the server.
//! - `checkout.rs`: the run's repository fetched into the agent's own mirror before a job's
//!   workspace is set up.

mod checkout;
mod config;
mod files;
mod job;
mod outbox;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hodei_actors::agents::Work;
use hodei_actors::messages::{CancelJob, LoseJob};
use hodei_adapters::docker::DockerConfig;
use hodei_adapters::local::LocalProvider;
use hodei_adapters::route::ByImage;
use hodei_adapters::sqlite::SqliteStore;
use hodei_api::agent_protocol::PollRequest;
use hodei_api::client::{Client, ClientError, Target};
use hodei_domain::ids::JobId;
use hodei_domain::model::Label;
use hodei_domain::ports::Reconcile;
use serde::{Deserialize, Serialize};

use crate::cli::{EXIT_INTERNAL, EXIT_OK, EXIT_USAGE};
use job::{Held, Phase, Setting, Upload};

/// The exit code when the server refuses the agent's credential or registration token.
pub const EXIT_REFUSED: u8 = 3;

/// Run jobs of a Hodei server on this machine.
#[derive(Debug, Clone, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei agent --server https://ci.example:8080 --token hodei_… --labels linux,arm64\n  HODEI_SERVER=http://10.0.0.2:8080 HODEI_AGENT_TOKEN=hodei_… hodei agent --data /var/lib/hodei-agent\n  hodei agent --config /etc/hodei/agent.toml\n\nSettings come from flags, then HODEI_* variables, then the configuration file (--config,\nHODEI_CONFIG, or hodei-agent.toml in the working directory if it exists), then defaults.\nThe registration token is needed once: the agent keeps its own credential in DATA/agent.json.\nExit codes: 0 stopped, 2 bad usage, 3 the server refused the token or credential."
)]
pub struct Args {
    /// A configuration file (TOML; keys as in docs/agents.md).
    #[arg(long, value_name = "FILE", env = "HODEI_CONFIG")]
    config: Option<PathBuf>,
    /// The server's URL (or HODEI_SERVER); the replicas of one deployment as URLs separated
    /// by commas, tried in turn.
    #[arg(long, value_name = "URL", env = "HODEI_SERVER")]
    server: Option<String>,
    /// A registration token an admin created (`hodei agents tokens create`), or
    /// HODEI_AGENT_TOKEN; needed at the first start only.
    #[arg(
        long,
        value_name = "TOKEN",
        env = "HODEI_AGENT_TOKEN",
        hide_env_values = true
    )]
    token: Option<String>,
    /// The agent's name, unique on the server (default: the host's name).
    #[arg(long, value_name = "NAME", env = "HODEI_AGENT_NAME")]
    name: Option<String>,
    /// Labels jobs can ask for (`runs_on`), comma-separated.
    #[arg(
        long,
        value_name = "LABELS",
        env = "HODEI_LABELS",
        value_delimiter = ','
    )]
    labels: Vec<String>,
    /// Jobs at once (default: one per CPU core).
    #[arg(long, value_name = "N", env = "HODEI_SLOTS")]
    slots: Option<u32>,
    /// Where the agent keeps its credential, spool and workspaces (default: hodei-agent).
    #[arg(long, value_name = "DIR", env = "HODEI_DATA")]
    data: Option<PathBuf>,
    /// A PEM certificate to trust for the server, besides the system's.
    #[arg(long, value_name = "FILE", env = "HODEI_CA")]
    ca: Option<PathBuf>,
    /// How long running jobs may go on after SIGTERM before they are stopped, in seconds
    /// (default: 30).
    #[arg(long, value_name = "SECONDS", env = "HODEI_GRACE_SECONDS")]
    grace: Option<u64>,
    /// Run local steps as this unprivileged user (the agent then runs as root).
    #[arg(long, value_name = "USER", env = "HODEI_RUN_AS")]
    run_as: Option<String>,
    /// Take one job, finish it (its log and artifacts with the server), leave and exit 0:
    /// an ephemeral worker of a pool. Runs one job at a time.
    #[arg(long)]
    one_job: bool,
    /// With --one-job: leave and exit 0 when no job came within this many seconds
    /// (default: 120).
    #[arg(long, value_name = "SECONDS", requires = "one_job")]
    idle_timeout: Option<u64>,
    /// The agent's credential, given by the worker manager to an ephemeral worker (in
    /// HODEI_AGENT_CREDENTIAL): with it the agent does not register, and keeps nothing in its
    /// data directory. Needs --one-job and --name.
    #[arg(
        long,
        value_name = "CREDENTIAL",
        env = "HODEI_AGENT_CREDENTIAL",
        hide_env_values = true,
        hide = true,
        requires_all = ["one_job", "name"]
    )]
    credential: Option<String>,
}

/// How an agent with `--one-job` ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct OneJob {
    /// It leaves when no job came within this time.
    idle_timeout: Duration,
}

/// The agent's settings, from flags, variables, the configuration file and defaults.
struct Settings {
    server: String,
    token: Option<String>,
    name: Option<String>,
    labels: Vec<String>,
    slots: Option<u32>,
    data: PathBuf,
    ca: Option<PathBuf>,
    grace: u64,
    run_as: Option<hodei_adapters::local::RunAs>,
    /// `--one-job`: one job, then the agent leaves.
    one_job: Option<OneJob>,
    /// A credential given (an ephemeral worker's): no registration, no identity file.
    credential: Option<String>,
}

/// What the agent keeps in `DATA/agent.json` (mode 0600).
#[derive(Debug, Serialize, Deserialize)]
struct Identity {
    server: String,
    name: String,
    credential: String,
    /// Marks what this agent starts (processes, containers), so that a restart on this data
    /// directory reaps its own leftovers and nothing of another agent on the same machine.
    instance: String,
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let settings = match config::settings(args.clone()) {
        Ok(settings) => settings,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    let system = actix::System::new();
    let providers = Arc::new(Mutex::new(None));
    let code = system.block_on(serve(&settings, providers.clone()));
    drop(system);
    let provider: Option<Arc<ByImage>> = providers.lock().unwrap_or_else(|e| e.into_inner()).take();
    if let Some(provider) = provider
        && let Ok(runtime) = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
    {
        runtime.block_on(provider.stop_all());
    }
    code
}

fn identity_file(data: &Path) -> PathBuf {
    data.join("agent.json")
}

/// The agent's identity: read from its data directory, or made by registering.
async fn identity(args: &Settings, target: &Target) -> Result<Identity, (u8, String)> {
    if let (Some(credential), Some(name)) = (&args.credential, &args.name) {
        return Ok(Identity {
            server: target.url.clone(),
            name: name.clone(),
            credential: credential.clone(),
            instance: format!("agent-{name}"),
        });
    }
    let file = identity_file(&args.data);
    if let Ok(text) = std::fs::read_to_string(&file) {
        let identity: Identity = serde_json::from_str(&text).map_err(|err| {
            (
                EXIT_USAGE,
                format!(
                    "{} is not an agent identity ({err}): remove it to register again",
                    file.display()
                ),
            )
        })?;
        return Ok(identity);
    }
    let Some(token) = &args.token else {
        return Err((
            EXIT_USAGE,
            format!(
                "this agent is not registered ({} does not exist): give a registration token with --token or HODEI_AGENT_TOKEN",
                file.display()
            ),
        ));
    };
    let name = match &args.name {
        Some(name) => name.clone(),
        None => hostname(),
    };
    let client = Client::new(target).map_err(|err| (EXIT_USAGE, err.to_string()))?;
    let registered = loop {
        match client.register_agent(token, &name, &args.labels).await {
            Ok(registered) => break registered,
            Err(err) if err.is_retryable() => {
                eprintln!("warning: cannot register yet: {err}; trying again in 2 s");
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
            Err(err @ ClientError::Unauthorized { .. }) => {
                return Err((
                    EXIT_REFUSED,
                    format!("the server refused the registration token: {err}"),
                ));
            }
            Err(err) => return Err((EXIT_REFUSED, format!("cannot register: {err}"))),
        }
    };
    let instance = hodei_api::auth::generate()
        .map_err(|err| (EXIT_INTERNAL, err.to_string()))?
        .chars()
        .filter(char::is_ascii_alphanumeric)
        .skip(5)
        .take(16)
        .collect::<String>();
    let identity = Identity {
        server: target.url.clone(),
        name: registered.name,
        credential: registered.credential,
        instance: format!("agent-{instance}"),
    };
    std::fs::create_dir_all(&args.data).map_err(|err| {
        (
            EXIT_USAGE,
            format!("cannot create {}: {err}", args.data.display()),
        )
    })?;
    let mut out = crate::cli::create_private(&file).map_err(|err| {
        (
            EXIT_INTERNAL,
            format!("cannot write {}: {err}", file.display()),
        )
    })?;
    use std::io::Write as _;
    out.write_all(
        serde_json::to_string_pretty(&identity)
            .unwrap_or_default()
            .as_bytes(),
    )
    .map_err(|err| {
        (
            EXIT_INTERNAL,
            format!("cannot write {}: {err}", file.display()),
        )
    })?;
    println!(
        "Registered as agent `{}` (credential kept in {}).",
        identity.name,
        file.display()
    );
    Ok(identity)
}

fn hostname() -> String {
    std::fs::read_to_string("/etc/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| h.parse::<hodei_domain::model::Name>().is_ok())
        .unwrap_or_else(|| "agent".to_owned())
}

async fn serve(args: &Settings, providers: Arc<Mutex<Option<Arc<ByImage>>>>) -> u8 {
    hodei_api::client::install_crypto();
    let labels: Vec<String> = args
        .labels
        .iter()
        .filter(|l| !l.is_empty())
        .cloned()
        .collect();
    for label in &labels {
        if label.parse::<Label>().is_err() {
            eprintln!("error: --labels: `{label}` is not {}", Label::EXPECTED);
            return EXIT_USAGE;
        }
    }
    let slots = match args.one_job {
        Some(_) => 1,
        None => args
            .slots
            .unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32)),
    };
    if !(1..=1024).contains(&slots) {
        eprintln!("error: --slots: {slots} is not a number of jobs from 1 to 1024");
        return EXIT_USAGE;
    }
    let mut target = Target::new(&args.server, None);
    target.ca_cert = args.ca.clone();
    let identity = match identity(args, &target).await {
        Ok(identity) => identity,
        Err((code, message)) => {
            eprintln!("error: {message}");
            return code;
        }
    };
    target.token = Some(identity.credential.clone());
    let client = match Client::new(&target) {
        Ok(client) => client,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    // The same providers as the server's: processes here, Docker for jobs with an image.
    let instance = format!("agent-{}", identity.name);
    // The code of the repositories it checks out is the agent's alone.
    let mirrors = args.data.join("mirrors");
    if let Err(err) = crate::wiring::set_dir_modes(&[(&mirrors, 0o700)]) {
        eprintln!("error: cannot create {}: {err}", mirrors.display());
        return EXIT_USAGE;
    }
    let mut local = LocalProvider::new(args.data.join("workspaces"), instance.clone())
        .with_mirrors(mirrors.clone());
    if let Some(user) = &args.run_as {
        local = local.with_run_as(user.clone());
        if let Err(err) = make_passable(&args.data) {
            eprintln!(
                "error: cannot let the user `{}` reach the workspaces in {}: {err}",
                user.name,
                args.data.display()
            );
            return EXIT_USAGE;
        }
    }
    let local = Arc::new(local);
    let mut docker = DockerConfig::new(args.data.join("docker"), instance);
    docker.mirrors = Some(mirrors.clone());
    let provider = Arc::new(ByImage::new(local, docker).await);
    *providers.lock().unwrap_or_else(|e| e.into_inner()) = Some(provider.clone());
    // What an earlier life of this agent left running is stopped: its leases are gone.
    match provider.reap_orphans(&[]).await {
        Ok(reaped) if !reaped.is_empty() => println!(
            "Stopped {} step(s) or container(s) an earlier run of this agent left behind.",
            reaped.len()
        ),
        Ok(_) => {}
        Err(err) => eprintln!("warning: cannot look for what an earlier run left behind: {err}"),
    }
    let spool = args.data.join("spool");
    let _ = std::fs::remove_dir_all(&spool);
    // The job actor's ports: the store is never read on an agent (a job's transitions go to
    // the server through the outbox), so an empty in-memory one stands for it.
    let store = match SqliteStore::memory().await {
        Ok(store) => Arc::new(store),
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_INTERNAL;
        }
    };
    let files = match hodei_adapters::files::DiskFiles::open(
        args.data.join("files"),
        hodei_adapters::files::FileLimits::default(),
        crate::wiring::DEFAULT_BRANCH.to_owned(),
    ) {
        Ok(files) => files,
        Err(err) => {
            eprintln!("hodei agent: cannot open its files directory: {err}");
            return EXIT_INTERNAL;
        }
    };
    let setting = Setting {
        store,
        provider: provider.clone(),
        client: client.clone(),
        name: identity.name.clone(),
        spool,
        files,
        mirrors: Arc::new(hodei_adapters::git::GitMirrors::new(mirrors)),
        freed: Arc::default(),
    };
    println!(
        "Agent `{}` of {} runs {slots} job(s) at once.",
        identity.name, identity.server
    );
    // As the server does: what the start allocated, and the code it ran, go back to the system.
    actix::spawn(async {
        tokio::time::sleep(Duration::from_millis(500)).await;
        hodei_api::loads::give_back_memory();
        hodei_api::loads::give_back_start_pages();
    });
    let jobs: Arc<Mutex<HashMap<JobId, Held>>> = Arc::default();
    let refused = Arc::new(tokio::sync::Notify::new());
    let heartbeat = actix::spawn(heartbeats(client.clone(), jobs.clone(), refused.clone()));
    let rung = Arc::new(tokio::sync::Notify::new());
    let doorbell_up = Arc::new(AtomicBool::new(false));
    let bell = actix::spawn(doorbell(client.clone(), rung.clone(), doorbell_up.clone()));
    let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
        Ok(term) => term,
        Err(err) => {
            eprintln!("error: cannot watch for SIGTERM: {err}");
            return EXIT_INTERNAL;
        }
    };
    // With --one-job: whether the job came, and until when it may come.
    let mut took = false;
    let idle_deadline = tokio::time::Instant::now()
        + args
            .one_job
            .map_or(Duration::from_secs(365 * 24 * 3600), |o| o.idle_timeout);
    let code = loop {
        let held = jobs.lock().unwrap_or_else(|e| e.into_inner()).len() as u32;
        if args.one_job.is_some() {
            if took && held == 0 {
                println!("The one job is done: leaving.");
                break leave(&client).await;
            }
            if !took && tokio::time::Instant::now() >= idle_deadline {
                println!("No job came within the idle timeout: leaving.");
                break leave(&client).await;
            }
        }
        // A one-job agent takes nothing after its job.
        let room = held < slots && !(args.one_job.is_some() && took);
        let labels = with_docker(&labels, provider.engine_trouble().is_none());
        // With the doorbell open, a poll only takes what is there, and the doorbell says when
        // more comes; otherwise the poll waits for it. (Measured: rings and short polls keep
        // up with more jobs per second than long polls held open while the doorbell is too.)
        let rings = doorbell_up.load(Ordering::SeqCst);
        let request = PollRequest {
            labels,
            slots,
            room,
            free: Some(if room { slots.saturating_sub(held) } else { 0 }),
            // A one-job agent waiting for its job polls no longer than its idle timeout.
            wait_ms: match (rings, args.one_job.is_some() && !took) {
                (true, _) => 0,
                (false, true) => {
                    let left = idle_deadline.saturating_duration_since(tokio::time::Instant::now());
                    left.as_millis().min(20_000) as u64
                }
                (false, false) => 20_000,
            },
            version: env!("CARGO_PKG_VERSION").to_owned(),
        };
        let polled = tokio::select! {
            polled = client.poll(&request) => polled,
            // A slot is free again: poll again with room (a poll without room takes nothing,
            // so leaving it is safe).
            _ = setting.freed.notified(), if !room => continue,
            _ = term.recv() => break drain(&client, &jobs, args.grace).await,
            _ = tokio::signal::ctrl_c() => break drain(&client, &jobs, args.grace).await,
            _ = refused.notified() => break EXIT_REFUSED,
        };
        match polled {
            Ok(work) => {
                let claimed = work.job.is_some();
                took |= claimed;
                take(work, &setting, &jobs);
                if claimed || !rings {
                    continue;
                }
                // Nothing more for now: the doorbell rings when there is (a poll every 15 s
                // all the same keeps the agent's offer fresh).
                tokio::select! {
                    _ = rung.notified() => {}
                    _ = setting.freed.notified(), if !room => {}
                    _ = tokio::time::sleep(Duration::from_secs(15)) => {}
                    _ = tokio::time::sleep_until(idle_deadline), if args.one_job.is_some() && !took => {}
                    _ = term.recv() => break drain(&client, &jobs, args.grace).await,
                    _ = tokio::signal::ctrl_c() => break drain(&client, &jobs, args.grace).await,
                    _ = refused.notified() => break EXIT_REFUSED,
                }
            }
            Err(err @ ClientError::Unauthorized { .. }) => {
                eprintln!(
                    "error: the server refused this agent's credential ({err}): the agent was deleted; remove {} and register again",
                    identity_file(&args.data).display()
                );
                break EXIT_REFUSED;
            }
            Err(err) => {
                tracing::warn!(error = %err, "Cannot reach the server; trying again.");
                tokio::time::sleep(Duration::from_secs(1)).await;
            }
        }
    };
    heartbeat.abort();
    bell.abort();
    code
}

/// Holds the agent's doorbell open: each ring, and each opening and closing, wakes the poll
/// loop. When it cannot be held (a proxy that cuts WebSockets, a server away), the agent
/// long-polls, and tries the doorbell again later.
async fn doorbell(client: Client, rung: Arc<tokio::sync::Notify>, up: Arc<AtomicBool>) {
    let mut backoff = Duration::from_secs(1);
    let mut told = false;
    loop {
        match client.doorbell().await {
            Ok(mut bell) => {
                tracing::info!("Doorbell open: work and cancels reach this agent at once.");
                up.store(true, Ordering::SeqCst);
                rung.notify_one();
                backoff = Duration::from_secs(1);
                told = false;
                let reason = loop {
                    match bell.ring().await {
                        Ok(()) => rung.notify_one(),
                        Err(reason) => break reason,
                    }
                };
                up.store(false, Ordering::SeqCst);
                rung.notify_one();
                tracing::warn!(reason = %reason, "The doorbell closed; long-polling meanwhile.");
            }
            Err(err) if !told => {
                told = true;
                tracing::warn!(error = %err, "Cannot open the doorbell (a WebSocket); long-polling instead.");
            }
            Err(_) => {}
        }
        tokio::time::sleep(backoff).await;
        backoff = (backoff * 2).min(Duration::from_secs(30));
    }
}

/// With `run_as`, the steps' user passes through the data directory to the workspaces (mode
/// 0711: it cannot list them); the credential, spool, files and mirrors stay the agent's
/// alone.
fn make_passable(data: &Path) -> std::io::Result<()> {
    let (workspaces, spool, files, docker, mirrors) = (
        data.join("workspaces"),
        data.join("spool"),
        data.join("files"),
        data.join("docker"),
        data.join("mirrors"),
    );
    crate::wiring::set_dir_modes(&[
        (data, 0o711),
        (&workspaces, 0o711),
        (&spool, 0o700),
        (&files, 0o700),
        (&docker, 0o700),
        (&mirrors, 0o700),
    ])
}

/// The labels offered: the agent's own, and `docker` while its engine answers (the server adds
/// `agent` and `checkout`).
fn with_docker(labels: &[String], engine: bool) -> Vec<String> {
    let mut labels: Vec<String> = labels.iter().filter(|l| *l != "docker").cloned().collect();
    if engine {
        labels.push("docker".into());
    }
    labels
}

/// Starts the job a poll brought, and passes on cancels.
fn take(work: Work, setting: &Setting, jobs: &Arc<Mutex<HashMap<JobId, Held>>>) {
    // The job first: a job cancelled while it was being claimed comes with its cancel.
    if let Some(claimed) = work.job {
        start_job(*claimed, setting, jobs);
    }
    for claimed in work.more {
        start_job(claimed, setting, jobs);
    }
    for job in work.cancel {
        if let Some(held) = jobs.lock().unwrap_or_else(|e| e.into_inner()).get(&job) {
            held.actor.do_send(CancelJob);
        }
    }
}

/// Starts a claimed job and the upload of its output and transitions.
fn start_job(
    claimed: hodei_actors::agents::ClaimedJob,
    setting: &Setting,
    jobs: &Arc<Mutex<HashMap<JobId, Held>>>,
) {
    let (job, epoch, base) = (claimed.job, claimed.epoch, claimed.log_base);
    let job::Started { held, outbox, logs } = match job::start(&claimed, setting) {
        Ok(started) => started,
        Err(err) => {
            // Its lease runs out and the server gives it to another worker.
            tracing::error!(job_id = %job, error = %err, "Cannot start a job.");
            return;
        }
    };
    tracing::info!(job_id = %job, epoch, "Job claimed.");
    let phase = held.phase.clone();
    jobs.lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(job, held);
    // The job's own calls present its job token, not the agent's credential.
    let client = setting.client.with_token(&claimed.token);
    let (jobs, spool) = (jobs.clone(), setting.spool.clone());
    let freed = setting.freed.clone();
    actix::spawn(async move {
        let outcome = job::upload(client, job, epoch, base, outbox, logs, phase).await;
        let held = jobs.lock().unwrap_or_else(|e| e.into_inner()).remove(&job);
        match outcome {
            Upload::Sealed => tracing::info!(job_id = %job, "Job done; the server has all of it."),
            Upload::Lost(reason) => {
                tracing::warn!(job_id = %job, reason = %reason, "The server gave this job to another worker: stopping it.");
                if let Some(held) = held {
                    held.actor.do_send(LoseJob);
                }
            }
            Upload::Crashed => {
                tracing::error!(job_id = %job, "The job failed on this agent; its lease runs out.")
            }
        }
        let _ = std::fs::remove_dir_all(spool.join(format!("job-{}-epoch-{epoch}", job.0)));
        freed.notify_one();
    });
}

/// Keeps the leases of the jobs held; stops those the server gave to another worker.
async fn heartbeats(
    client: Client,
    jobs: Arc<Mutex<HashMap<JobId, Held>>>,
    refused: Arc<tokio::sync::Notify>,
) {
    loop {
        tokio::time::sleep(Duration::from_secs(1)).await;
        let held: Vec<(JobId, u64)> = jobs
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .filter(|(_, h)| *h.phase.borrow() != Phase::Crashed)
            .map(|(job, h)| (*job, h.epoch))
            .collect();
        match client.heartbeat(&held).await {
            Ok(beat) => {
                let jobs = jobs.lock().unwrap_or_else(|e| e.into_inner());
                for job in beat.lost {
                    if let Some(held) = jobs.get(&job) {
                        tracing::warn!(job_id = %job, "The server no longer counts this agent's lease on the job: stopping it.");
                        held.actor.do_send(LoseJob);
                    }
                }
                for job in beat.cancel {
                    if let Some(held) = jobs.get(&job) {
                        held.actor.do_send(CancelJob);
                    }
                }
            }
            Err(ClientError::Unauthorized { .. }) => refused.notify_one(),
            Err(err) => tracing::warn!(error = %err, "Heartbeat failed; the jobs go on."),
        }
    }
}

/// A one-job agent is done (its job is with the server, or none came): it leaves.
async fn leave(client: &Client) -> u8 {
    if let Err(err) = client.leaving(true).await {
        eprintln!("warning: cannot tell the server that this agent leaves: {err}");
    }
    EXIT_OK
}

/// SIGTERM: no new job; those running may finish within the grace period; then they stop and
/// are handed back, so that the server gives them to other workers at once.
async fn drain(client: &Client, jobs: &Arc<Mutex<HashMap<JobId, Held>>>, grace: u64) -> u8 {
    println!("Stopping: no new job; waiting up to {grace} s for the running ones.");
    if let Err(err) = client.leaving(false).await {
        eprintln!("warning: cannot tell the server that this agent stops: {err}");
    }
    let deadline = tokio::time::Instant::now() + Duration::from_secs(grace);
    while tokio::time::Instant::now() < deadline {
        if jobs.lock().unwrap_or_else(|e| e.into_inner()).is_empty() {
            let _ = client.leaving(true).await;
            return EXIT_OK;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let left: Vec<(JobId, u64, String)> = jobs
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .iter()
        .map(|(job, held)| {
            held.actor.do_send(LoseJob);
            (*job, held.epoch, held.token.clone())
        })
        .collect();
    for (job, epoch, token) in left {
        match client.with_token(&token).hand_back(job, epoch).await {
            Ok(()) => println!("Handed job-{} back to the server.", job.0),
            // Its lease runs out on the server all the same, which then gives it away.
            Err(err) => eprintln!("warning: cannot hand job-{} back: {err}", job.0),
        }
    }
    // The stopped jobs' processes and containers end before the agent does.
    tokio::time::sleep(Duration::from_secs(1)).await;
    let _ = client.leaving(true).await;
    EXIT_OK
}
