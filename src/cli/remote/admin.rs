//! `hodei login`, `contexts`, `jobs`, `workers`, `queue`, `tokens`, `events` and `status`.

use std::io::{BufRead, IsTerminal};
use std::time::Duration;

use hodei_api::client::follow::{EventFollower, EventItem, Reconnect};
use hodei_api::client::{Client, Target};
use hodei_api::views::EventView;

use super::context::{self, Config, Context};
use super::output::{Printer, Table, ago, duration};
use super::runs::jobs_table;
use super::{EXIT_OK, Failure, Outcome};

/// Log in to a server: check the token, then store it as a context.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei login http://127.0.0.1:8080 --token \"$(cat hodei-data/admin.token)\"\n  hodei login https://ci.example.com:8443 --name prod --ca-cert ca.pem < token.txt\n\nThe context is saved in ~/.config/hodei/config.toml (mode 0600; HODEI_CONFIG moves it)\nand becomes the current one."
)]
pub struct LoginArgs {
    /// The server, e.g. http://127.0.0.1:8080.
    pub url: String,
    /// The token; read from standard input when absent.
    #[arg(long)]
    pub token: Option<String>,
    /// The context's name.
    #[arg(long, default_value = "default")]
    pub name: String,
    /// A PEM file of CA certificates to trust besides the system's (a server with its own CA).
    #[arg(long, value_name = "FILE")]
    pub ca_cert: Option<std::path::PathBuf>,
    #[command(flatten)]
    pub output: super::Output,
}

/// The contexts saved by `hodei login`.
#[derive(Debug, clap::Subcommand)]
pub enum ContextsCommand {
    /// List the contexts; `*` marks the current one.
    #[command(after_help = "Examples:\n  hodei contexts list\n  hodei contexts list -o json")]
    List,
    /// Make a context the current one.
    #[command(after_help = "Examples:\n  hodei contexts use prod")]
    Use { name: String },
    /// Forget a context and its token.
    #[command(after_help = "Examples:\n  hodei contexts remove staging")]
    Remove { name: String },
}

/// Jobs of runs.
#[derive(Debug, clap::Subcommand)]
pub enum JobsCommand {
    /// Show a job: its state, attempts and every step attempt.
    #[command(
        after_help = "Examples:\n  hodei jobs show 7\n  hodei jobs show 7 -o json | jq '.steps[] | .exit_code'"
    )]
    Show { id: u64 },
    /// Approve a job waiting at its approval gate.
    #[command(after_help = "Examples:\n  hodei jobs approve 9")]
    Approve { id: u64 },
}

/// Workers.
#[derive(Debug, clap::Subcommand)]
pub enum WorkersCommand {
    /// List the workers: labels, slots, state and the jobs on each.
    #[command(
        after_help = "Examples:\n  hodei workers list\n  hodei workers list -o json | jq '.[] | select(.state == \"ready\") | .id'"
    )]
    List,
    /// Stop placing jobs on a worker; the jobs it runs go on.
    #[command(after_help = "Examples:\n  hodei workers drain local")]
    Drain { id: String },
    /// Place jobs on a drained worker again.
    #[command(after_help = "Examples:\n  hodei workers undrain local")]
    Undrain { id: String },
}

/// Why each job in the queue waits.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei queue\n  hodei queue --run 42\n  hodei queue --limit 500 -o json | jq '.items[] | .reason'"
)]
pub struct QueueArgs {
    /// Show at most this many jobs from the front, 1 to 1000.
    #[arg(long, default_value_t = 50, value_parser = clap::value_parser!(u32).range(1..=1000))]
    pub limit: u32,
    /// Only the jobs of this run.
    #[arg(long, value_name = "ID")]
    pub run: Option<u64>,
    #[command(flatten)]
    pub global: super::Global,
}

/// API tokens (admin).
#[derive(Debug, clap::Subcommand)]
pub enum TokensCommand {
    /// Create a token; its secret is printed this once.
    #[command(
        after_help = "Examples:\n  hodei tokens create --role operator --name ci-bot\n  hodei tokens create --role viewer -o json | jq -r .token"
    )]
    Create {
        /// viewer, operator or admin.
        #[arg(long, value_parser = ["viewer", "operator", "admin"])]
        role: String,
        /// What it is for.
        #[arg(long, default_value = "cli")]
        name: String,
    },
    /// List the tokens (without their secrets).
    #[command(
        after_help = "Examples:\n  hodei tokens list\n  hodei tokens list -o json | jq '.[] | select(.role == \"admin\")'"
    )]
    List,
    /// Revoke a token: it is refused from now on.
    #[command(after_help = "Examples:\n  hodei tokens revoke 3")]
    Revoke { id: u64 },
}

/// The audit trail.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Examples:\n  hodei events --limit 20\n  hodei events -f\n  hodei events --after 1200 -o json"
)]
pub struct EventsArgs {
    /// Events numbered after this one.
    #[arg(long, default_value_t = 0)]
    pub after: u64,
    /// At most this many (without -f), 1 to 500.
    #[arg(long, default_value_t = 50)]
    pub limit: u32,
    /// Keep printing new events as they are recorded (nothing missed across reconnects).
    #[arg(long, short = 'f')]
    pub follow: bool,
    #[command(flatten)]
    pub global: super::Global,
}

pub async fn login(args: LoginArgs, printer: Printer) -> Outcome {
    let token = match args.token {
        Some(token) => token,
        None => {
            if std::io::stdin().is_terminal() {
                eprint!("Token for {}: ", args.url);
            }
            let mut line = String::new();
            std::io::stdin()
                .lock()
                .read_line(&mut line)
                .map_err(|err| {
                    Failure::usage(format!("cannot read the token from standard input: {err}"))
                })?;
            line.trim().to_owned()
        }
    };
    if token.is_empty() {
        return Err(Failure::usage(
            "no token: pass --token TOKEN or write it on standard input",
        ));
    }
    let mut target = Target::new(&args.url, Some(token.clone()));
    target.ca_cert = args.ca_cert.clone();
    let client = Client::new(&target)?;
    // A request that needs a token proves both the URL and the token.
    client.queue(1, None).await?;
    let health = client.ready().await?;
    let path = context::path();
    let mut config = Config::load(&path)?;
    config.contexts.insert(
        args.name.clone(),
        Context {
            url: client.url().to_owned(),
            token: Some(token),
            ca_cert: args.ca_cert,
        },
    );
    config.current = Some(args.name.clone());
    config.save(&path)?;
    let answer = serde_json::json!({
        "context": args.name,
        "url": client.url(),
        "server_version": health.version,
        "config": path,
    });
    printer.show(&answer, |_| {
        println!(
            "Logged in to {} (Hodei {}) as context `{}`, saved in {}.",
            client.url(),
            health.version,
            args.name,
            path.display()
        );
    });
    Ok(EXIT_OK)
}

pub fn contexts(cmd: ContextsCommand, printer: Printer) -> Outcome {
    let path = context::path();
    let mut config = Config::load(&path)?;
    let unknown = |name: &str, config: &Config| {
        Failure::usage(format!(
            "no context named `{name}` in {} (known: {})",
            path.display(),
            config
                .contexts
                .keys()
                .cloned()
                .collect::<Vec<_>>()
                .join(", ")
        ))
    };
    match cmd {
        ContextsCommand::List => {
            let items: Vec<serde_json::Value> = config
                .contexts
                .iter()
                .map(|(name, c)| {
                    serde_json::json!({
                        "name": name,
                        "url": c.url,
                        "current": config.current.as_deref() == Some(name.as_str()),
                        "ca_cert": c.ca_cert,
                    })
                })
                .collect();
            printer.show(&items, |_| {
                let mut table = Table::new(vec!["", "NAME", "URL"]);
                for (name, c) in &config.contexts {
                    let mark = if config.current.as_deref() == Some(name.as_str()) {
                        "*"
                    } else {
                        ""
                    };
                    table.row(vec![mark.into(), name.clone(), c.url.clone()]);
                }
                table.print();
            });
        }
        ContextsCommand::Use { name } => {
            if !config.contexts.contains_key(&name) {
                return Err(unknown(&name, &config));
            }
            config.current = Some(name.clone());
            config.save(&path)?;
            if printer.human() {
                println!("The current context is `{name}`.");
            }
        }
        ContextsCommand::Remove { name } => {
            if config.contexts.remove(&name).is_none() {
                return Err(unknown(&name, &config));
            }
            if config.current.as_deref() == Some(name.as_str()) {
                config.current = None;
            }
            config.save(&path)?;
            if printer.human() {
                println!("Context `{name}` removed.");
            }
        }
    }
    Ok(EXIT_OK)
}

pub async fn jobs(cmd: JobsCommand, client: &Client, printer: Printer) -> Outcome {
    let job = match cmd {
        JobsCommand::Show { id } => client.job(id).await?,
        JobsCommand::Approve { id } => client.approve(id).await?,
    };
    printer.show(&job, |p| {
        jobs_table(std::slice::from_ref(&job), p);
        if job.steps.is_empty() {
            return;
        }
        println!();
        let mut table = Table::new(vec![
            "JOB ATTEMPT",
            "STEP",
            "ATTEMPT",
            "STATE",
            "EXIT",
            "DURATION",
        ]);
        for step in &job.steps {
            let exit = match (step.exit_code, step.signal, step.oom_killed) {
                (_, _, true) => "oom-killed".to_owned(),
                (Some(code), _, _) => code.to_string(),
                (None, Some(signal), _) => format!("signal {signal}"),
                _ => "-".to_owned(),
            };
            let took = match step.started {
                Some(s) if step.state != "running" => duration(step.since - s),
                _ => "-".to_owned(),
            };
            table.row(vec![
                step.job_attempt.to_string(),
                (step.index + 1).to_string(),
                step.attempt.to_string(),
                p.state(&step.state),
                exit,
                took,
            ]);
        }
        table.print();
    });
    Ok(EXIT_OK)
}

pub async fn workers(cmd: WorkersCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        WorkersCommand::List => {
            let list = client.workers().await?;
            printer.show(&list.items, |p| {
                let mut table = Table::new(vec![
                    "ID", "STATE", "SLOTS", "JOBS", "LABELS", "AGENT", "SEEN",
                ]);
                for w in &list.items {
                    let (agent, seen) = match &w.agent {
                        Some(a) => (
                            format!("yes {}", a.version).trim().to_owned(),
                            a.last_heartbeat.map_or("-".into(), ago),
                        ),
                        None => ("-".into(), "-".into()),
                    };
                    table.row(vec![
                        p.bold(&w.id),
                        p.state(&w.state),
                        w.slots.to_string(),
                        format!("{}/{}", w.jobs.len(), w.slots),
                        w.labels.join(","),
                        agent,
                        seen,
                    ]);
                }
                table.print();
            });
        }
        WorkersCommand::Drain { id } => {
            client.drain(&id).await?;
            let answer = serde_json::json!({ "id": id, "state": "draining" });
            printer.show(&answer, |_| {
                println!("Worker `{id}` is draining: it takes no new job.")
            });
        }
        WorkersCommand::Undrain { id } => {
            client.undrain(&id).await?;
            let answer = serde_json::json!({ "id": id, "state": "ready" });
            printer.show(&answer, |_| println!("Worker `{id}` takes jobs again."));
        }
    }
    Ok(EXIT_OK)
}

pub async fn queue(args: QueueArgs, client: &Client, printer: Printer) -> Outcome {
    let queue = client.queue(args.limit, args.run).await?;
    printer.show(&queue, |p| {
        if queue.items.is_empty() && queue.awaiting_approval.is_empty() {
            println!("The queue is empty.");
            return;
        }
        if queue.items.is_empty() {
            println!("No job is queued.");
        } else {
            let mut table = Table::new(vec![
                "POS", "JOB", "RUN", "PIPELINE", "WAITING", "LABELS", "WHY",
            ]);
            for item in &queue.items {
                table.row(vec![
                    item.position.to_string(),
                    item.job.to_string(),
                    item.run.to_string(),
                    item.pipeline.clone(),
                    ago(item.queued_at).trim_end_matches(" ago").to_owned(),
                    item.runs_on.join(","),
                    p.paint("33", &item.reason),
                ]);
            }
            table.print();
            if queue.total > queue.items.len() {
                println!(
                    "… {} more ({} in all)",
                    queue.total - queue.items.len(),
                    queue.total
                );
            }
        }
        if !queue.awaiting_approval.is_empty() {
            println!();
            println!("Waiting for approval (they queue once approved):");
            let mut table = Table::new(vec![
                "JOB", "RUN", "PIPELINE", "NAME", "WAITING", "APPROVER",
            ]);
            for item in &queue.awaiting_approval {
                table.row(vec![
                    item.job.to_string(),
                    item.run.to_string(),
                    item.pipeline.clone(),
                    item.name.clone(),
                    ago(item.waiting_since).trim_end_matches(" ago").to_owned(),
                    p.paint(
                        "33",
                        &match item.approver {
                            hodei_domain::model::Role::Admin => "admin".to_owned(),
                            role => format!("{role} or admin"),
                        },
                    ),
                ]);
            }
            table.print();
            println!("Approve one with `hodei jobs approve JOB` (a token of the APPROVER role).");
        }
    });
    Ok(EXIT_OK)
}

pub async fn tokens(cmd: TokensCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        TokensCommand::Create { role, name } => {
            let created = client.create_token(&name, &role).await?;
            printer.show(&created, |_| {
                println!("{}", created.token);
                eprintln!(
                    "Token {} (`{}`, {}) created: it is shown this once.",
                    created.id, created.name, role
                );
            });
        }
        TokensCommand::List => {
            let list = client.tokens().await?;
            printer.show(&list.items, |_| {
                let mut table = Table::new(vec!["ID", "NAME", "ROLE", "CREATED"]);
                for t in &list.items {
                    let role = serde_json::to_value(t.role)
                        .ok()
                        .and_then(|v| v.as_str().map(str::to_owned))
                        .unwrap_or_default();
                    table.row(vec![t.id.to_string(), t.name.clone(), role, ago(t.created)]);
                }
                table.print();
            });
        }
        TokensCommand::Revoke { id } => {
            client.revoke_token(id).await?;
            let answer = serde_json::json!({ "id": id, "revoked": true });
            printer.show(&answer, |_| println!("Token {id} revoked."));
        }
    }
    Ok(EXIT_OK)
}

pub async fn events(args: EventsArgs, client: &Client, printer: Printer) -> Outcome {
    if !args.follow {
        let page = client.events(args.after, args.limit.clamp(1, 500)).await?;
        printer.show(&page, |_| {
            for item in &page.items {
                println!("{}", event_line(item));
            }
        });
        return Ok(EXIT_OK);
    }
    // The stream says when to read; the numbered trail is what is printed, so that nothing is
    // missed or repeated across dropped connections.
    let mut stream = EventFollower::new(client.clone(), None, Reconnect::default());
    stream.connect().await?;
    let mut after = args.after;
    loop {
        loop {
            let page = client.events(after, 500).await?;
            for item in &page.items {
                match printer.human() {
                    true => println!("{}", event_line(item)),
                    false => println!("{}", serde_json::to_string(item).unwrap_or_default()),
                }
            }
            after = page.next_after;
            if page.items.len() < 500 {
                break;
            }
        }
        match tokio::time::timeout(Duration::from_secs(5), stream.next()).await {
            Err(_) | Ok(Ok(EventItem::Event(_) | EventItem::Resync { .. })) => {}
            Ok(Ok(EventItem::Reconnecting { attempt, reason })) => {
                eprintln!(
                    "hodei: the event stream dropped ({reason}); reconnecting (attempt {attempt})"
                );
            }
            Ok(Err(err)) => return Err(err.into()),
        }
    }
}

/// An event in one line: its number, time, type and subject.
fn event_line(item: &EventView) -> String {
    let value = serde_json::to_value(&item.event).unwrap_or_default();
    let kind = value["type"].as_str().unwrap_or("event").to_owned();
    let mut subject = Vec::new();
    for key in ["run", "job", "step", "attempt", "worker", "by"] {
        if let Some(v) = value.get(key).filter(|v| !v.is_null()) {
            let v = v.as_str().map_or_else(|| v.to_string(), str::to_owned);
            subject.push(format!("{key}={v}"));
        }
    }
    let at = ago(item.event.0.at().into());
    format!(
        "{:>8}  {:<10}  {kind:<22} {}",
        item.seq,
        at,
        subject.join(" ")
    )
}

pub async fn status(client: &Client, printer: Printer) -> Outcome {
    let health = client.ready().await?;
    let queue = client.queue(1, None).await?;
    let workers = client.workers().await?;
    let busy: usize = workers.items.iter().map(|w| w.jobs.len()).sum();
    let slots: u32 = workers.items.iter().map(|w| w.slots).sum();
    let answer = serde_json::json!({
        "url": client.url(),
        "version": health.version,
        "status": health.status,
        "checks": health.checks,
        "queued": queue.total,
        "workers": workers.items,
        "running_jobs": busy,
        "slots": slots,
    });
    printer.show(&answer, |p| {
        println!("server   {} (Hodei {})", client.url(), health.version);
        println!("health   {}", p.state(&health.status));
        for (name, found) in &health.checks {
            println!(
                "  {name:<8} {}",
                if found == "ok" {
                    p.state("ok")
                } else {
                    p.paint("33", found)
                }
            );
        }
        println!("queue    {} job(s) waiting", queue.total);
        println!(
            "workers  {} ({busy}/{slots} slots busy)",
            workers.items.len()
        );
        for w in &workers.items {
            println!(
                "  {:<12} {} {}/{}",
                w.id,
                p.state(&w.state),
                w.jobs.len(),
                w.slots
            );
        }
    });
    Ok(EXIT_OK)
}
