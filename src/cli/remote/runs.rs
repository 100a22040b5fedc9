//! `hodei runs start | list | show | cancel | retry | rerun | logs | artifacts | download`.

use std::collections::BTreeSet;

use hodei_api::client::{Client, RunFilter};
use hodei_api::views::{JobView, RunView, TriggerRequest};

use super::live::{self, Follow};
use super::output::{Printer, Table, ago, duration, now_ms};
use super::{EXIT_FAILED, EXIT_OK, Failure, Outcome, key_value};

/// Runs of pipelines.
#[derive(Debug, clap::Subcommand)]
pub enum RunsCommand {
    /// Start a run of a pipeline's latest version.
    #[command(
        after_help = "Examples:\n  hodei runs start web\n  hodei runs start web -p TARGET=release --branch main --follow\n  id=$(hodei runs start web -o json | jq .id)\n\nWith --follow the exit code is the run's: 0 succeeded, 1 failed or cancelled."
    )]
    Start {
        pipeline: String,
        /// A parameter's value (repeatable).
        #[arg(short = 'p', long = "param", value_name = "KEY=VALUE", value_parser = key_value)]
        params: Vec<(String, String)>,
        /// The branch the run is for (`branch` in `when`).
        #[arg(long, default_value = "")]
        branch: String,
        /// What started it: manual, push, pull_request, tag or schedule.
        #[arg(long)]
        event: Option<String>,
        /// The tag, for `--event tag`.
        #[arg(long, default_value = "")]
        tag: String,
        /// A variable for every job, over the pipeline's (repeatable).
        #[arg(short = 'e', long = "env", value_name = "KEY=VALUE", value_parser = key_value)]
        env: Vec<(String, String)>,
        /// Follow the run live until it ends; exit with its outcome.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Start it even though the pipeline's `on:` has no `manual` entry; the run's events
        /// record who did.
        #[arg(long)]
        override_triggers: bool,
    },
    /// List runs, newest first.
    #[command(
        after_help = "Examples:\n  hodei runs list\n  hodei runs list --status failed --pipeline web --limit 5\n  hodei runs list -o json | jq '.[] | select(.state == \"running\") | .id'"
    )]
    List {
        /// Only runs in this state: pending, running, cancelling, succeeded, failed, cancelled.
        #[arg(long)]
        status: Option<String>,
        /// Only runs of this pipeline.
        #[arg(long)]
        pipeline: Option<String>,
        /// Only runs for this branch.
        #[arg(long)]
        branch: Option<String>,
        /// At most this many runs.
        #[arg(long, default_value_t = 20, value_parser = clap::value_parser!(u32).range(1..=100_000))]
        limit: u32,
    },
    /// Show a run: its jobs, their states, attempts, durations and steps.
    #[command(after_help = "Examples:\n  hodei runs show 42\n  hodei runs show 42 -o yaml")]
    Show { id: u64 },
    /// Cancel a run: running steps stop, pending jobs are cancelled, hooks run.
    #[command(after_help = "Examples:\n  hodei runs cancel 42")]
    Cancel { id: u64 },
    /// Start a new run of a run that did not succeed, keeping the jobs that succeeded.
    #[command(after_help = "Examples:\n  hodei runs retry 42 --follow")]
    Retry {
        id: u64,
        /// Follow the new run live until it ends; exit with its outcome.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Start a new run with the same inputs as a run: every job again.
    #[command(after_help = "Examples:\n  hodei runs rerun 42")]
    Rerun {
        id: u64,
        /// Follow the new run live until it ends; exit with its outcome.
        #[arg(long, short = 'f')]
        follow: bool,
    },
    /// Print a run's logs; with -f, follow them live until the run ends.
    #[command(
        after_help = "Examples:\n  hodei runs logs 42\n  hodei runs logs 42 --job build -f\n  hodei runs logs 42 --job build --from 1048576\n\nWith -f the exit code is the run's: 0 succeeded, 1 failed or cancelled."
    )]
    Logs {
        id: u64,
        /// Only this job's log (a matrix job's name matches all its instances).
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Follow live until the run ends; a dropped connection resumes where it stopped.
        #[arg(long, short = 'f')]
        follow: bool,
        /// Start at this byte of the log (with --job).
        #[arg(long, value_name = "OFFSET", requires = "job", default_value_t = 0)]
        from: u64,
    },
    /// List the files a run's jobs kept as artifacts.
    #[command(
        after_help = "Examples:\n  hodei runs artifacts 42\n  hodei runs artifacts 42 -o json"
    )]
    Artifacts { id: u64 },
    /// Download one artifact of a run, by its path in the job's workspace.
    #[command(
        after_help = "Examples:\n  hodei runs download 42 dist/app.tar.gz\n  hodei runs download 42 report.xml --job test --to test-report.xml\n  hodei runs download 42 dist/app.js --to - | head"
    )]
    Download {
        id: u64,
        /// The artifact's path, as `hodei runs artifacts` lists it.
        name: String,
        /// The job that kept it, when several did.
        #[arg(long, value_name = "NAME")]
        job: Option<String>,
        /// Where to write it (`-` for standard output); by default its file name here.
        #[arg(long, value_name = "FILE")]
        to: Option<std::path::PathBuf>,
    },
}

pub async fn run(cmd: RunsCommand, client: &Client, printer: Printer) -> Outcome {
    match cmd {
        RunsCommand::Start {
            pipeline,
            params,
            branch,
            event,
            tag,
            env,
            follow,
            override_triggers,
        } => {
            let request = TriggerRequest {
                params: params.into_iter().collect(),
                branch,
                event,
                tag,
                env: env.into_iter().collect(),
                override_triggers,
            };
            let run = client.trigger(&pipeline, &request).await?;
            started(client, run, follow, printer).await
        }
        RunsCommand::List {
            status,
            pipeline,
            branch,
            limit,
        } => {
            let filter = RunFilter {
                status,
                pipeline,
                branch,
            };
            let mut items = Vec::new();
            let mut cursor: Option<String> = None;
            while items.len() < limit as usize {
                let want = (limit as usize - items.len()).min(500) as u32;
                let page = client.runs(&filter, cursor.as_deref(), want).await?;
                items.extend(page.items);
                match page.next_cursor {
                    Some(next) => cursor = Some(next),
                    None => break,
                }
            }
            printer.show(&items, |p| {
                let mut table = Table::new(vec![
                    "ID", "PIPELINE", "VERSION", "STATE", "BRANCH", "EVENT", "CREATED",
                ]);
                for run in &items {
                    table.row(vec![
                        run.id.to_string(),
                        run.pipeline.clone(),
                        format!("v{}", run.version),
                        p.state(&run.state),
                        dash(&run.branch),
                        run.event.clone(),
                        ago(run.created),
                    ]);
                }
                table.print();
            });
            Ok(EXIT_OK)
        }
        RunsCommand::Show { id } => {
            let run = client.run(id).await?;
            printer.show(&run, |p| show_run(&run, p));
            Ok(EXIT_OK)
        }
        RunsCommand::Cancel { id } => {
            let run = client.cancel(id).await?;
            printer.show(&run, |p| {
                println!("run {id}: cancel requested ({})", p.state(&run.state));
            });
            Ok(EXIT_OK)
        }
        RunsCommand::Retry { id, follow } => {
            let run = client.retry(id).await?;
            started(client, run, follow, printer).await
        }
        RunsCommand::Rerun { id, follow } => {
            let run = client.rerun(id).await?;
            started(client, run, follow, printer).await
        }
        RunsCommand::Logs {
            id,
            job,
            follow,
            from,
        } => logs(client, id, job, follow, from, printer).await,
        RunsCommand::Artifacts { id } => super::artifacts::list(client, id, printer).await,
        RunsCommand::Download { id, name, job, to } => {
            super::artifacts::download(client, id, &name, job.as_deref(), to).await
        }
    }
}

/// After a run was started: says so, or follows it.
async fn started(client: &Client, run: RunView, follow: bool, printer: Printer) -> Outcome {
    if !follow {
        printer.show(&run, |p| {
            println!(
                "run {} of {} v{} started ({}); follow it with `hodei runs logs {} -f`",
                run.id,
                run.pipeline,
                run.version,
                p.state(&run.state),
                run.id
            );
        });
        return Ok(EXIT_OK);
    }
    if printer.human() {
        println!(
            "run {} of {} v{} started",
            printer.bold(&run.id.to_string()),
            run.pipeline,
            run.version
        );
    }
    let follow = Follow {
        run: run.id,
        only: None,
        from: 0,
        quiet: !printer.human(),
        prefix: true,
    };
    ended(live::follow(client, follow, printer).await?, printer)
}

/// Prints how a followed run ended; its exit code.
fn ended(run: RunView, printer: Printer) -> Outcome {
    printer.show(&run, |p| {
        println!();
        jobs_table(&run.jobs, p);
        let took = match (run.started, run.finished) {
            (Some(s), Some(f)) => format!(" in {}", duration(f - s)),
            _ => String::new(),
        };
        println!("\nrun {} {}{took}", run.id, p.state(&run.state));
    });
    Ok(if run.state == "succeeded" {
        EXIT_OK
    } else {
        EXIT_FAILED
    })
}

fn show_run(run: &RunView, p: &Printer) {
    println!(
        "{}  {} v{}  {}",
        p.bold(&format!("run {}", run.id)),
        run.pipeline,
        run.version,
        p.state(&run.state)
    );
    let took = match (run.started, run.finished) {
        (Some(s), Some(f)) => duration(f - s),
        (Some(s), None) => format!("{} so far", duration(now_ms() - s.millis())),
        _ => "-".to_owned(),
    };
    println!(
        "event {}  branch {}  created {}  duration {took}",
        run.event,
        dash(&run.branch),
        ago(run.created)
    );
    if !run.tag.is_empty() {
        println!("tag {}", run.tag);
    }
    for (key, value) in &run.params {
        println!("param {key}={value}");
    }
    println!();
    jobs_table(&run.jobs, p);
}

/// The jobs of a run, a line each.
pub fn jobs_table(jobs: &[JobView], p: &Printer) {
    let mut table = Table::new(vec![
        "JOB", "ID", "STATE", "ATTEMPT", "DURATION", "STEPS", "WORKER",
    ]);
    for job in jobs {
        let took = match (job.started, job.finished) {
            (Some(s), Some(f)) => duration(f - s),
            (Some(s), None) => duration(now_ms() - s.millis()),
            _ => "-".to_owned(),
        };
        let attempt = job.attempt;
        let steps = job.steps.iter().filter(|s| s.job_attempt == attempt);
        let (done, all) = steps.fold((0, 0), |(done, all), s| {
            (done + usize::from(s.state == "succeeded"), all + 1)
        });
        table.row(vec![
            p.bold(&job.name),
            job.id.to_string(),
            p.state(&job.state),
            job.attempt.to_string(),
            took,
            if all == 0 {
                "-".into()
            } else {
                format!("{done}/{all}")
            },
            job.worker.clone().unwrap_or_else(|| "-".into()),
        ]);
    }
    table.print();
}

fn dash(text: &str) -> String {
    if text.is_empty() {
        "-".into()
    } else {
        text.to_owned()
    }
}

/// The jobs `name` picks: that job, or every instance of a matrix job of that name.
fn pick<'a>(run: &'a RunView, name: &str) -> Result<Vec<&'a JobView>, Failure> {
    let exact: Vec<&JobView> = run.jobs.iter().filter(|j| j.name == name).collect();
    if !exact.is_empty() {
        return Ok(exact);
    }
    let prefix = format!("{name} (");
    let instances: Vec<&JobView> = run
        .jobs
        .iter()
        .filter(|j| j.name.starts_with(&prefix))
        .collect();
    if !instances.is_empty() {
        return Ok(instances);
    }
    let names: Vec<&str> = run.jobs.iter().map(|j| j.name.as_str()).collect();
    Err(Failure::usage(format!(
        "run {} has no job `{name}`; its jobs are: {}",
        run.id,
        names.join(", ")
    )))
}

async fn logs(
    client: &Client,
    id: u64,
    job: Option<String>,
    follow: bool,
    from: u64,
    printer: Printer,
) -> Outcome {
    let run = client.run(id).await?;
    let jobs: Vec<&JobView> = match &job {
        Some(name) => pick(&run, name)?,
        None => run.jobs.iter().collect(),
    };
    let prefix = jobs.len() > 1;
    if follow {
        let only: BTreeSet<u64> = jobs.iter().map(|j| j.id).collect();
        let follow = Follow {
            run: id,
            only: Some(only),
            from,
            quiet: false,
            prefix,
        };
        let ended_run = live::follow(client, follow, printer).await?;
        return Ok(if ended_run.state == "succeeded" {
            EXIT_OK
        } else {
            EXIT_FAILED
        });
    }
    let width = jobs
        .iter()
        .map(|j| j.name.chars().count())
        .max()
        .unwrap_or(0);
    let mut out = std::io::stdout().lock();
    for job in jobs {
        let mut offset = from;
        let mut partial = Vec::new();
        loop {
            let (bytes, length) = match client.log(job.id, offset).await {
                Ok(found) => found,
                // A job that never started has no log yet.
                Err(err) if err.status() == Some(416) && offset == 0 => break,
                Err(err) => return Err(err.into()),
            };
            offset += bytes.len() as u64;
            write_lines(
                &mut out,
                &mut partial,
                &bytes,
                prefix.then_some((job.name.as_str(), width)),
                printer,
            );
            if bytes.is_empty() || offset >= length {
                break;
            }
        }
        if !partial.is_empty() {
            partial.push(b'\n');
            write_lines(
                &mut out,
                &mut Vec::new(),
                &partial,
                prefix.then_some((job.name.as_str(), width)),
                printer,
            );
        }
    }
    Ok(EXIT_OK)
}

/// Writes the complete lines of `partial` + `bytes`, keeping the unfinished end in `partial`.
fn write_lines(
    out: &mut impl std::io::Write,
    partial: &mut Vec<u8>,
    bytes: &[u8],
    prefix: Option<(&str, usize)>,
    printer: Printer,
) {
    partial.extend_from_slice(bytes);
    let buffer = std::mem::take(partial);
    let mut rest: &[u8] = &buffer;
    while let Some(end) = rest.iter().position(|&b| b == b'\n') {
        let line = &rest[..end];
        let _ = match prefix {
            Some((name, width)) => {
                let who = printer.paint("2", &format!("{name:<width$} |"));
                out.write_all(format!("{who} ").as_bytes())
                    .and_then(|()| out.write_all(line))
                    .and_then(|()| out.write_all(b"\n"))
            }
            None => out.write_all(line).and_then(|()| out.write_all(b"\n")),
        };
        rest = &rest[end + 1..];
    }
    partial.extend_from_slice(rest);
}
