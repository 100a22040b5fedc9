//! The live view of a run on a server (`runs start --follow`, `runs logs -f`): a line for each
//! change of a job's state, the logs of its jobs with each line prefixed by the job's name,
//! and, on a terminal, a footer that shows every job of the run with its state and its `needs`,
//! redrawn below the output.
//!
//! Level-triggered: the run as the server reports it (`GET /runs/{id}`) is the truth; events
//! only say when to read it again, and after a dropped connection it is read again anyway. The
//! logs come over one WebSocket per job, each resumed from the byte it reached, so a dropped
//! connection loses and repeats no line.

use std::collections::{BTreeSet, HashMap};
use std::io::Write;
use std::time::{Duration, Instant};

use hodei_api::client::follow::{EventFollower, EventItem, LogFollower, LogItem, Reconnect};
use hodei_api::client::{Client, ClientError};
use hodei_api::views::{JobView, RunView};
use hodei_domain::state::{JobFailure, JobSkipReason, JobState, RunState};
use tokio::sync::mpsc;

use super::Failure;
use super::output::{Printer, duration, now_ms, visible_width};

/// What to follow and how.
pub struct Follow {
    pub run: u64,
    /// Only these jobs' logs; every job's when `None`.
    pub only: Option<BTreeSet<u64>>,
    /// Where each log starts.
    pub from: u64,
    /// Print nothing: only wait for the end.
    pub quiet: bool,
    /// Prefix each log line with its job's name.
    pub prefix: bool,
}

/// What the followers report.
enum Msg {
    Events(Result<EventItem, ClientError>),
    Log {
        job: u64,
        item: Result<LogItem, ClientError>,
    },
}

/// How often the run is read again when nothing happens, and how soon after an event.
const RESYNC_EVERY: Duration = Duration::from_secs(5);
const RESYNC_AFTER_EVENT: Duration = Duration::from_millis(100);
/// The most jobs the footer lists.
const FOOTER_JOBS: usize = 12;

/// Follows a run until it is over and every followed log has ended; answers the run as it
/// ended.
pub async fn follow(client: &Client, follow: Follow, printer: Printer) -> Result<RunView, Failure> {
    let (tx, mut rx) = mpsc::unbounded_channel();
    // Events first: nothing that happens after the first read of the run is missed.
    let mut events = EventFollower::new(client.clone(), Some(follow.run), Reconnect::default());
    events.connect().await?;
    let events_tx = tx.clone();
    let events_task = tokio::spawn(async move {
        loop {
            let item = events.next().await;
            let failed = item.is_err();
            if events_tx.send(Msg::Events(item)).is_err() || failed {
                return;
            }
        }
    });

    let mut view = Live::new(client, follow, printer).await?;
    let mut due = Instant::now();
    let outcome = loop {
        if Instant::now() >= due {
            match view.resync(&tx).await {
                Ok(()) => due = Instant::now() + RESYNC_EVERY,
                Err(err) if err.is_retryable() => {
                    view.notice(&format!("reading the run failed ({err}); trying again"));
                    due = Instant::now() + Duration::from_secs(1);
                }
                Err(err) => break Err(Failure::from(err)),
            }
        }
        if view.done() {
            break Ok(view.run.clone());
        }
        let tick = if view.footer_on() {
            Duration::from_secs(1)
        } else {
            RESYNC_EVERY
        };
        let wait = due.saturating_duration_since(Instant::now()).min(tick);
        let msg = match tokio::time::timeout(wait, rx.recv()).await {
            Err(_) => {
                view.redraw();
                continue;
            }
            Ok(None) => continue,
            Ok(Some(msg)) => msg,
        };
        match msg {
            Msg::Events(Ok(EventItem::Event(_))) => {
                due = due.min(Instant::now() + RESYNC_AFTER_EVENT);
            }
            Msg::Events(Ok(EventItem::Resync { .. })) => due = Instant::now(),
            Msg::Events(Ok(EventItem::Reconnecting { attempt, reason })) => {
                view.notice(&format!(
                    "the run's event stream dropped ({reason}); reconnecting (attempt {attempt})"
                ));
            }
            Msg::Events(Err(err)) | Msg::Log { item: Err(err), .. } => {
                break Err(Failure::from(err));
            }
            Msg::Log {
                job,
                item: Ok(item),
            } => view.log(job, item),
        }
    };
    events_task.abort();
    view.finish();
    outcome
}

/// A followed log.
#[derive(Default)]
struct Log {
    ended: bool,
    /// The line that tells the job's end, printed once its log has ended.
    end: Option<String>,
    /// The start of a line whose end has not come yet.
    partial: Vec<u8>,
}

/// What the view knows and shows.
struct Live {
    client: Client,
    follow: Follow,
    printer: Printer,
    run: RunView,
    /// The state shown last, by job, with why it waited if it was queued.
    shown: HashMap<u64, (String, u32, Option<String>)>,
    /// Why each queued job waits, as the scheduler says.
    waits: HashMap<u64, String>,
    logs: HashMap<u64, Log>,
    width: usize,
    started: Instant,
    /// Lines the footer takes now (0: none drawn).
    footer_lines: usize,
    footer: bool,
}

impl Live {
    async fn new(client: &Client, follow: Follow, printer: Printer) -> Result<Live, Failure> {
        let run = client.run(follow.run).await?;
        let width = run
            .jobs
            .iter()
            .map(|j| j.name.chars().count())
            .max()
            .unwrap_or(4)
            .clamp(4, 30);
        let footer = !follow.quiet && printer.human() && printer.out_terminal;
        Ok(Live {
            client: client.clone(),
            follow,
            printer,
            run,
            shown: HashMap::new(),
            waits: HashMap::new(),
            logs: HashMap::new(),
            width,
            started: Instant::now(),
            footer_lines: 0,
            footer,
        })
    }

    fn footer_on(&self) -> bool {
        self.footer
    }

    /// Reads the run again, shows what changed, and follows the logs of jobs that started.
    async fn resync(&mut self, tx: &mpsc::UnboundedSender<Msg>) -> Result<(), ClientError> {
        self.run = self.client.run(self.follow.run).await?;
        self.waits.clear();
        if self.run.jobs.iter().any(|j| j.state == "queued") {
            let queue = self.client.queue(1000, Some(self.follow.run)).await?;
            for item in queue.items {
                self.waits.insert(item.job, item.reason);
            }
        }
        let mut lines = Vec::new();
        let jobs = self.run.jobs.clone();
        for job in &jobs {
            let wanted = self
                .follow
                .only
                .as_ref()
                .is_none_or(|only| only.contains(&job.id));
            let began = job.started.is_some() || job.state == "running";
            if !self.follow.quiet && wanted && began && !self.logs.contains_key(&job.id) {
                self.logs.insert(job.id, Log::default());
                let mut follower = LogFollower::new(
                    self.client.clone(),
                    job.id,
                    self.follow.from,
                    Reconnect::default(),
                );
                let tx = tx.clone();
                let id = job.id;
                tokio::spawn(async move {
                    loop {
                        match follower.next().await {
                            Ok(None) => return,
                            Ok(Some(item)) => {
                                if tx
                                    .send(Msg::Log {
                                        job: id,
                                        item: Ok(item),
                                    })
                                    .is_err()
                                {
                                    return;
                                }
                            }
                            Err(err) => {
                                let _ = tx.send(Msg::Log {
                                    job: id,
                                    item: Err(err),
                                });
                                return;
                            }
                        }
                    }
                });
            }
            let now = (
                job.state.clone(),
                job.attempt,
                self.waits.get(&job.id).cloned(),
            );
            if self.shown.get(&job.id) != Some(&now) {
                self.shown.insert(job.id, now);
                let line = self.transition(job);
                match self.logs.get_mut(&job.id) {
                    _ if self.follow.quiet || job.state == "pending" => {}
                    // A job's end is told after the last line of its log.
                    Some(log) if !log.ended && is_over(&job.state) => log.end = Some(line),
                    _ => lines.push(line),
                }
            }
        }
        self.print(&lines);
        Ok(())
    }

    /// Over: the run ended and every followed log reached its end.
    fn done(&self) -> bool {
        let over = RunState::from_name(&self.run.state).is_some_and(|s| s.is_terminal());
        over && self.logs.values().all(|log| log.ended)
    }

    fn name(&self, job: u64) -> String {
        self.run
            .jobs
            .iter()
            .find(|j| j.id == job)
            .map_or_else(|| format!("job {job}"), |j| j.name.clone())
    }

    fn stamp(&self) -> String {
        let elapsed = self.started.elapsed().as_secs_f64();
        self.printer.paint("2", &format!("[{elapsed:>7.1}s]"))
    }

    /// The line for a job's new state.
    fn transition(&self, job: &JobView) -> String {
        let mut text = self.printer.state(&job.state);
        if job.state == "running" && job.attempt > 1 {
            text.push_str(&format!(" (attempt {})", job.attempt));
        }
        if let Some(why) = reason(job, &self.run) {
            text.push_str(&format!(": {why}"));
        }
        if let Some(why) = self.waits.get(&job.id).filter(|w| !w.is_empty()) {
            text.push_str(&format!(": {why}"));
        }
        let who = format!("{:<w$}", job.name, w = self.width);
        format!("{} {} {text}", self.stamp(), self.printer.bold(&who))
    }

    fn log(&mut self, job: u64, item: LogItem) {
        match item {
            LogItem::Output { bytes, .. } => {
                let mut buffer = std::mem::take(&mut self.logs.entry(job).or_default().partial);
                buffer.extend_from_slice(&bytes);
                let mut lines = Vec::new();
                let mut rest: &[u8] = &buffer;
                while let Some(end) = rest.iter().position(|&b| b == b'\n') {
                    lines.push(self.log_line(job, &rest[..end]));
                    rest = &rest[end + 1..];
                }
                let rest = rest.to_vec();
                self.logs.entry(job).or_default().partial = rest;
                self.print(&lines);
            }
            LogItem::End { .. } => {
                let log = self.logs.entry(job).or_default();
                log.ended = true;
                let rest = std::mem::take(&mut log.partial);
                let end = log.end.take();
                let mut lines = Vec::new();
                if !rest.is_empty() {
                    lines.push(self.log_line(job, &rest));
                }
                lines.extend(end.map(String::into_bytes));
                self.print(&lines);
            }
            LogItem::Reconnecting {
                attempt,
                from,
                reason,
            } => {
                let name = self.name(job);
                self.notice(&format!(
                    "the log stream of {name} dropped ({reason}); reconnecting from byte {from} (attempt {attempt})"
                ));
            }
        }
    }

    /// A line of a job's log as it is printed: its bytes as the job wrote them (text or not),
    /// after the job's name when lines are prefixed.
    fn log_line(&self, job: u64, bytes: &[u8]) -> Vec<u8> {
        let bytes = bytes.strip_suffix(b"\r").unwrap_or(bytes);
        let mut line = Vec::with_capacity(bytes.len() + self.width + 16);
        if self.follow.prefix {
            let who = format!("{:<w$} |", self.name(job), w = self.width);
            line.extend_from_slice(self.printer.paint("2", &who).as_bytes());
            line.push(b' ');
        }
        line.extend_from_slice(bytes);
        line
    }

    /// A note about the connection, on standard error.
    fn notice(&mut self, text: &str) {
        self.erase();
        eprintln!("hodei: {text}");
        self.draw();
    }

    /// Prints lines above the footer.
    fn print(&mut self, lines: &[impl AsRef<[u8]>]) {
        if lines.is_empty() {
            return;
        }
        self.erase();
        let mut out = std::io::stdout().lock();
        for line in lines {
            let _ = out.write_all(line.as_ref());
            let _ = out.write_all(b"\n");
        }
        drop(out);
        self.draw();
    }

    fn redraw(&mut self) {
        self.erase();
        self.draw();
    }

    fn erase(&mut self) {
        if self.footer_lines > 0 {
            print!("\x1b[{}F\x1b[J", self.footer_lines);
            self.footer_lines = 0;
        }
    }

    fn draw(&mut self) {
        if !self.footer {
            return;
        }
        let columns = terminal_width().unwrap_or(80).max(20);
        let lines = self.footer_text();
        let mut out = std::io::stdout().lock();
        for line in &lines {
            let _ = writeln!(out, "{}", clip(line, columns - 1));
        }
        let _ = out.flush();
        self.footer_lines = lines.len();
    }

    /// The run's jobs, with their states and what they wait for.
    fn footer_text(&self) -> Vec<String> {
        let p = &self.printer;
        let jobs = &self.run.jobs;
        let over = |j: &JobView| is_over(&j.state);
        let done = jobs.iter().filter(|j| over(j)).count();
        let mut lines = vec![format!(
            "{} {} v{} · {} · {done}/{} jobs done · {}",
            p.paint("2", "──"),
            p.bold(&format!("run {} {}", self.run.id, self.run.pipeline)),
            self.run.version,
            p.state(&self.run.state),
            jobs.len(),
            duration(self.started.elapsed().as_millis() as i64),
        )];
        // With many jobs, the finished ones give way to those still to come.
        let hide_done = jobs.len() > FOOTER_JOBS;
        let mut shown = 0;
        for job in jobs.iter() {
            if (hide_done && over(job)) || shown == FOOTER_JOBS {
                continue;
            }
            shown += 1;
            let mark = match job.state.as_str() {
                "succeeded" => p.paint("32", "✓"),
                "failed" | "timed_out" => p.paint("31", "✗"),
                "cancelled" => p.paint("33", "⊘"),
                "skipped" => p.paint("2", "-"),
                "running" => p.paint("36", "●"),
                _ => p.paint("2", "○"),
            };
            let time = match (job.started, job.finished) {
                (Some(s), Some(f)) => duration(f - s),
                (Some(s), None) => duration(now_ms() - s.millis()),
                _ => String::new(),
            };
            let waits = match () {
                _ if self.waits.get(&job.id).is_some_and(|w| !w.is_empty()) => {
                    p.paint("33", &self.waits[&job.id])
                }
                _ if !job.needs.is_empty() && !over(job) && job.started.is_none() => {
                    let names: Vec<&str> = job
                        .needs
                        .iter()
                        .filter_map(|id| jobs.iter().find(|j| j.id == *id))
                        .map(|j| j.name.as_str())
                        .collect();
                    p.paint("2", &format!("← {}", names.join(", ")))
                }
                _ => String::new(),
            };
            lines.push(format!(
                "  {mark} {:<w$}  {:<10} {:>7}  {waits}",
                job.name,
                job.state,
                time,
                w = self.width
            ));
        }
        let hidden = jobs.len() - shown;
        if hidden > 0 {
            lines.push(p.paint("2", &format!("  … and {hidden} more")));
        }
        lines
    }

    /// Clears the footer for good.
    fn finish(&mut self) {
        self.erase();
        self.footer = false;
        let _ = std::io::stdout().flush();
    }
}

/// Whether a job in this state is over.
fn is_over(state: &str) -> bool {
    JobState::is_terminal_name(state)
}

/// Why a job ended as it did, in words.
fn reason(job: &JobView, run: &RunView) -> Option<String> {
    let value = job.reason.clone()?;
    let name = |id: u64| {
        run.jobs
            .iter()
            .find(|j| j.id == id)
            .map_or_else(|| format!("job {id}"), |j| j.name.clone())
    };
    if job.state == "skipped" {
        let why: JobSkipReason = serde_json::from_value(value).ok()?;
        return Some(match why {
            JobSkipReason::WhenFalse => "its `when` is false".to_owned(),
            JobSkipReason::NeedFailed { job } => format!("{} did not succeed", name(job.0)),
            JobSkipReason::NeedSkipped { job } => format!("{} was skipped", name(job.0)),
            JobSkipReason::RunCancelled => "the run was cancelled".to_owned(),
        });
    }
    let failure: JobFailure = serde_json::from_value(value).ok()?;
    Some(failure.to_string())
}

/// `text` cut to `columns` visible characters (colour codes kept whole).
fn clip(text: &str, columns: usize) -> String {
    if visible_width(text) <= columns {
        return text.to_owned();
    }
    let mut out = String::new();
    let mut width = 0;
    let mut escape = false;
    for c in text.chars() {
        if c == '\x1b' {
            escape = true;
        }
        if escape {
            out.push(c);
            if c == 'm' {
                escape = false;
            }
            continue;
        }
        if width == columns {
            continue;
        }
        out.push(c);
        width += 1;
    }
    out.push_str("\x1b[0m");
    out
}

/// The width of the terminal on standard output: as the terminal says, else `COLUMNS`.
fn terminal_width() -> Option<usize> {
    // SAFETY: TIOCGWINSZ writes a `winsize` into the struct passed; nothing else is touched.
    let mut size: libc::winsize = unsafe { std::mem::zeroed() };
    let found = unsafe { libc::ioctl(libc::STDOUT_FILENO, libc::TIOCGWINSZ, &mut size) };
    if found == 0 && size.ws_col > 0 {
        return Some(size.ws_col as usize);
    }
    std::env::var("COLUMNS").ok()?.parse().ok()
}
