//! `hodei run [FILE]`: runs a pipeline here, with the same actors as the server, and shows live
//! progress. Exit 0 when every run it waited for succeeded, 1 when one failed or was cancelled,
//! 2 for invalid input. With `--store`, unfinished runs found there are resumed first.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::IsTerminal;
use std::path::PathBuf;
use std::sync::Arc;

use actix::{Actor, Handler, Message};
use hodei_actors::messages::{CancelRun, Definition, SubmitRun, Subscribe, WatchLogs};
use hodei_domain::engine::Approvals;
use hodei_domain::ids::RunId;
use hodei_domain::load::load_bytes;
use hodei_domain::model::{Label, is_env_name};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::Store;
use hodei_domain::state::{DomainEvent, RunState};

use super::approve::{Granted, keep_gates};
use super::progress::{Progress, Row, summary};
use super::{EXIT_FAILED, EXIT_OK, EXIT_USAGE, outln};
use crate::wiring::{EnvSecrets, LocalPaths, local_stack};

/// Run a pipeline on this machine, with live progress.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei run examples/local.yml\n  hodei run ci.yml -p TARGET=release -e RUST_LOG=debug --secret API_TOKEN\n  hodei run ci.yml --store .hodei/runs.db     # durable: resumes after a crash\n  hodei run --store .hodei/runs.db            # only resume unfinished runs\n  hodei run deploy.yml --approve deploy       # approve a gated job beforehand\n\nExit codes: 0 succeeded, 1 failed or cancelled, 2 invalid input.\nCtrl-C, SIGTERM or SIGHUP cancels the run (post hooks run); a second one stops at once."
)]
pub struct Args {
    /// The pipeline file to run. May be left out with `--store` to resume unfinished runs only.
    #[arg(value_name = "FILE")]
    file: Option<PathBuf>,
    /// A run parameter.
    #[arg(short = 'p', long = "param", value_name = "K=V")]
    params: Vec<String>,
    /// An environment variable for every job and hook.
    #[arg(short = 'e', long = "env", value_name = "K=V")]
    env: Vec<String>,
    /// A secret: the value of the environment variable NAME, given to every step as NAME and
    /// masked as `***` in all output.
    #[arg(long = "secret", value_name = "NAME")]
    secrets: Vec<String>,
    /// Keep the runs in this SQLite file (logs and workspaces beside it) and resume the
    /// unfinished ones first. Without it, the run lives in memory and a temporary directory.
    #[arg(long, value_name = "PATH")]
    store: Option<PathBuf>,
    /// The branch the run is for (`branch` in `when`).
    #[arg(long, default_value = "")]
    branch: String,
    /// What started the run (`event` in `when`).
    #[arg(long, default_value = "manual")]
    event: String,
    /// How many jobs run at once on this machine (1 to 1024). Default: one per CPU core.
    #[arg(long, value_name = "N", value_parser = clap::value_parser!(u32).range(1..=1024))]
    slots: Option<u32>,
    /// Approve the job JOB (one with `approval:`) beforehand; `all` approves every gated job.
    /// Without it a gated job is asked about on a terminal, and refused (its run cancelled)
    /// where there is no terminal.
    #[arg(long = "approve", value_name = "JOB")]
    approve: Vec<String>,
}

fn pairs(
    values: &[String],
    what: &str,
    check_name: bool,
) -> Result<BTreeMap<String, String>, String> {
    let mut out = BTreeMap::new();
    for value in values {
        let Some((key, val)) = value.split_once('=') else {
            return Err(format!("{what} `{value}`: expected K=V"));
        };
        if check_name && !is_env_name(key) {
            return Err(format!(
                "{what} `{value}`: `{key}` is not a valid variable name"
            ));
        }
        out.insert(key.to_owned(), val.to_owned());
    }
    Ok(out)
}

/// Runs the command; returns the exit code.
pub fn run(args: &Args) -> u8 {
    let (params, env) = match (
        pairs(&args.params, "parameter", false),
        pairs(&args.env, "variable", true),
    ) {
        (Ok(p), Ok(e)) => (p, e),
        (Err(err), _) | (_, Err(err)) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    for name in &args.secrets {
        if !is_env_name(name) || name.starts_with("HODEI_") {
            eprintln!(
                "error: secret `{name}`: not a valid variable name (letters, digits and `_`, not starting with `HODEI_`)"
            );
            return EXIT_USAGE;
        }
    }
    // The secrets named with `--secret`, then those the pipeline names (`secrets:`).
    let mut secret_names = args.secrets.clone();
    let mut labels: BTreeSet<String> = BTreeSet::from(["local".to_owned()]);
    let source = match &args.file {
        Some(path) => {
            let bytes = match std::fs::read(path) {
                Ok(bytes) => bytes,
                Err(err) => {
                    eprintln!("error: cannot read `{}`: {err}", path.display());
                    return EXIT_USAGE;
                }
            };
            let loaded = load_bytes(&bytes);
            let text = String::from_utf8_lossy(&bytes).into_owned();
            let color = std::io::stderr().is_terminal()
                && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
            for diagnostic in &loaded.diagnostics {
                eprintln!(
                    "{}",
                    diagnostic.render(&path.display().to_string(), &text, color)
                );
            }
            let Some(pipeline) = loaded.pipeline else {
                eprintln!("error: `{}` is not a valid pipeline", path.display());
                return EXIT_USAGE;
            };
            // Parameters are checked here, before anything starts.
            let probe = RunInputs {
                params: params.clone(),
                ..RunInputs::default()
            };
            if let Err(errors) = hodei_domain::plan::plan(&pipeline).resolve(probe) {
                for error in errors {
                    eprintln!("error: {error}");
                }
                return EXIT_USAGE;
            }
            if let Err(err) = check_approvals(&args.approve, &pipeline) {
                eprintln!("error: {err}");
                return EXIT_USAGE;
            }
            for name in &pipeline.secrets {
                if !secret_names.contains(name) {
                    secret_names.push(name.clone());
                }
            }
            // `hodei run` runs every job on this machine: it takes every label the pipeline asks for.
            labels.extend(pipeline.defaults.runs_on.iter().map(ToString::to_string));
            for job in &pipeline.jobs {
                labels.extend(job.runs_on.iter().map(ToString::to_string));
            }
            Some(text)
        }
        None if args.store.is_some() => None,
        None => {
            eprintln!(
                "error: give a pipeline FILE to run, or `--store PATH` to resume its unfinished runs"
            );
            return EXIT_USAGE;
        }
    };
    let secrets = match EnvSecrets::from_env(&secret_names) {
        Ok(secrets) => secrets,
        Err(name) => {
            eprintln!("error: secret `{name}`: the environment variable `{name}` is not set");
            return EXIT_USAGE;
        }
    };
    let labels: Vec<Label> = labels.iter().filter_map(|l| l.parse().ok()).collect();
    let inputs = RunInputs {
        branch: args.branch.clone(),
        event: args.event.clone(),
        tag: String::new(),
        commit: String::new(),
        params,
        env,
        secrets: secret_names,
        repository: String::new(),
        server_url: String::new(),
        default_branch: String::new(),
        overridden_by: String::new(),
    };
    let scratch = std::env::temp_dir().join(format!("hodei-run-{}", std::process::id()));
    let paths = match &args.store {
        Some(store) => LocalPaths::beside(store),
        None => LocalPaths::scratch(&scratch),
    };
    let system = actix::System::new();
    let code = system.block_on(session(
        paths,
        Arc::new(secrets),
        labels,
        args.slots,
        Granted::from_args(&args.approve),
        source,
        inputs,
    ));
    // The actors and the log writers go first, then their scratch directory.
    super::end_system(system);
    let _ = std::fs::remove_dir_all(&scratch);
    code
}

/// Checks that every `--approve JOB` names a job of `pipeline` with an approval gate.
fn check_approvals(
    names: &[String],
    pipeline: &hodei_domain::model::Pipeline,
) -> Result<(), String> {
    let gated: Vec<String> = pipeline
        .jobs
        .iter()
        .filter(|job| job.approval.is_some())
        .map(|job| job.name.to_string())
        .collect();
    for name in names.iter().filter(|name| *name != "all") {
        if !gated.contains(name) {
            let known = match gated.as_slice() {
                [] => "it has no job with an approval gate".to_owned(),
                jobs => format!("its jobs with an approval gate: {}", jobs.join(", ")),
            };
            return Err(format!(
                "--approve `{name}`: the pipeline has no job `{name}` with `approval:` ({known}; or `all`)"
            ));
        }
    }
    Ok(())
}

/// Wait for these runs too.
#[derive(Debug, Message)]
#[rtype(result = "()")]
struct AwaitRuns(Vec<RunId>);

impl Handler<AwaitRuns> for Progress {
    type Result = ();

    fn handle(&mut self, msg: AwaitRuns, _: &mut actix::Context<Self>) {
        self.await_runs(msg.0);
    }
}

async fn session(
    paths: LocalPaths,
    secrets: Arc<EnvSecrets>,
    labels: Vec<Label>,
    slots: Option<u32>,
    granted: Granted,
    source: Option<String>,
    inputs: RunInputs,
) -> u8 {
    // Listening before anything runs: a signal that comes early cancels, it never kills.
    let mut signals = match Signals::new() {
        Ok(signals) => signals,
        Err(err) => {
            eprintln!("error: cannot listen for signals: {err}");
            return EXIT_USAGE;
        }
    };
    // `--approve all` approves every gate as it is reached; otherwise the gatekeeper decides.
    let approvals = match granted {
        Granted::All => Approvals::Local,
        Granted::Jobs(_) => Approvals::Wait,
    };
    let (tree, provider) = match local_stack(&paths, secrets, labels, slots, approvals).await {
        Ok(stack) => stack,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    let store = tree.ports.store.clone();
    let color = std::io::stdout().is_terminal()
        && std::env::var_os("NO_COLOR").is_none_or(|v| v.is_empty());
    let (done_tx, done_rx) = tokio::sync::oneshot::channel();
    let progress = Progress::new(store.clone(), color, done_tx).start();
    tree.bus.do_send(Subscribe {
        subscriber: progress.clone().recipient(),
    });
    tree.hub.do_send(WatchLogs {
        watcher: progress.clone().recipient(),
    });
    let gatekeeper = (approvals == Approvals::Wait)
        .then(|| keep_gates(store.clone(), tree.orchestrator.clone(), granted.clone()));

    let mut awaited = match store.unfinished_runs().await {
        Ok(runs) => runs,
        Err(err) => {
            eprintln!("error: cannot read the store: {err}");
            return EXIT_USAGE;
        }
    };
    // A resumed run needs its secrets again, from the same environment variables.
    for run in &awaited {
        if let Ok(Some(record)) = store.run(*run).await {
            for name in &record.inputs.secrets {
                if std::env::var_os(name).is_none() {
                    eprintln!(
                        "error: {run} needs the secret `{name}`: set the environment variable `{name}` and start again"
                    );
                    return EXIT_USAGE;
                }
            }
        }
    }
    if !awaited.is_empty() {
        outln!(
            "Resuming {} unfinished run(s) found in the store.",
            awaited.len()
        );
    }
    if let Some(gatekeeper) = gatekeeper {
        // Subscribed first, then the gates already waiting looked for: none is missed (one
        // found both ways is kept once).
        let resumed = gatekeeper.resume_for(store.clone(), awaited.clone());
        let subscribed = tree.bus.send(Subscribe {
            subscriber: gatekeeper.start().recipient(),
        });
        if subscribed.await.is_err() {
            eprintln!("error: the event bus is not running");
            return EXIT_USAGE;
        }
        resumed.await;
    }
    let mut submitted = None;
    if let Some(source) = source {
        match tree
            .orchestrator
            .send(SubmitRun {
                definition: Definition::Text(source),
                inputs,
                limit: None,
            })
            .await
        {
            Ok(Ok(run)) => {
                submitted = Some(run);
                awaited.push(run);
            }
            Ok(Err(err)) => {
                eprintln!("error: {err}");
                return EXIT_USAGE;
            }
            Err(err) => {
                eprintln!("error: the orchestrator is not running: {err}");
                return EXIT_USAGE;
            }
        }
    }
    if awaited.is_empty() {
        outln!("Nothing to run: the store has no unfinished run.");
        return EXIT_OK;
    }
    progress.do_send(AwaitRuns(awaited.clone()));

    // Ctrl-C cancels every awaited run; a second one stops at once, leaving nothing running.
    // SIGTERM and SIGHUP — how `timeout`, CI runners, systemd and `docker stop` end a process —
    // count as Ctrl-C.
    let (orchestrator, runs) = (tree.orchestrator.clone(), awaited.clone());
    actix::spawn(async move {
        let mut presses = 0;
        while let Some(signal) = signals.next().await {
            presses += 1;
            if presses == 1 {
                eprintln!(
                    "\nCancelling ({signal}): post hooks run. Press Ctrl-C again to stop at once."
                );
                for run in &runs {
                    orchestrator.do_send(CancelRun {
                        run: *run,
                        by: "local user".into(),
                    });
                }
            } else {
                eprintln!("\nStopping at once.");
                // Every step this process runs dies with everything it started; a durable run
                // resumes at the next `hodei run --store`.
                provider.stop_all().await;
                std::process::exit(130);
            }
        }
    });
    let _ = done_rx.await;
    let code = report(store.as_ref(), &awaited).await;
    let _ = submitted;
    actix::System::current().stop();
    code
}

/// The signals that cancel a local run: SIGINT (Ctrl-C), SIGTERM and SIGHUP, and a closed
/// stdout.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
    hangup: tokio::signal::unix::Signal,
}

impl Signals {
    fn new() -> std::io::Result<Signals> {
        use tokio::signal::unix::{SignalKind, signal};
        Ok(Signals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
            hangup: signal(SignalKind::hangup())?,
        })
    }

    /// The name of the next signal received (a closed stdout counts as one: its reader, such as
    /// `| head -1`, went away).
    async fn next(&mut self) -> Option<&'static str> {
        tokio::select! {
            got = self.interrupt.recv() => got.map(|()| "Ctrl-C"),
            got = self.terminate.recv() => got.map(|()| "SIGTERM"),
            got = self.hangup.recv() => got.map(|()| "SIGHUP"),
            () = super::stdout_closed().notified() => Some("stdout closed"),
        }
    }
}

/// Prints the summary of each run; the exit code is 0 only if all succeeded.
async fn report(store: &dyn Store, runs: &[RunId]) -> u8 {
    let mut code = EXIT_OK;
    let mut times: HashMap<hodei_domain::ids::JobId, (Option<i64>, Option<i64>)> = HashMap::new();
    let mut after = 0;
    while let Ok(page) = store.events(after, 1_000).await {
        let Some(&(last, _)) = page.last() else { break };
        after = last;
        for (_, event) in page {
            if !runs.contains(&event.run_id()) {
                continue;
            }
            let Some(job) = event.job_id() else { continue };
            let entry = times.entry(job).or_default();
            match &event {
                DomainEvent::JobStarted { at, .. } => {
                    entry.0.get_or_insert(at.0);
                }
                DomainEvent::JobSucceeded { at, .. }
                | DomainEvent::JobFailed { at, .. }
                | DomainEvent::JobTimedOut { at, .. }
                | DomainEvent::JobCancelled { at, .. } => entry.1 = Some(at.0),
                _ => {}
            }
        }
    }
    for run in runs {
        let Ok(Some(record)) = store.run(*run).await else {
            eprintln!("error: {run} is not in the store");
            code = EXIT_FAILED;
            continue;
        };
        let rows: Vec<Row> = record
            .jobs
            .iter()
            .map(|job| {
                let (start, end) = times.get(&job.id).copied().unwrap_or_default();
                Row {
                    name: job.name.clone(),
                    state: job.state.name().to_owned(),
                    attempts: job.attempt.get(),
                    duration: start.zip(end).map(|(s, e)| (e - s) as f64 / 1000.0),
                }
            })
            .collect();
        summary(&rows);
        let total = (record.since.0 - record.created.0) as f64 / 1000.0;
        outln!(
            "{run} of `{}`: {} in {total:.1}s",
            record.pipeline,
            record.state.name()
        );
        if record.state != RunState::Succeeded {
            code = EXIT_FAILED;
        }
    }
    code
}
