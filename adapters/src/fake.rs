//! # FakeProvider: a scripted provider for actor tests and benchmarks
//!
//! A test double, and a real implementation of [`Provider`] and [`Reconcile`]: it keeps every
//! guarantee of the trait, runs no process, and its steps do what their script says. Use it in
//! actor tests (with `#[tokio::test(start_paused = true)]`, `sleep` follows tokio's clock) and in
//! the throughput benchmark.
//!
//! ## The script language
//! A step's [`StepSpec::script`] is a program when its first word is one of these verbs;
//! commands are separated by `;` and run in order:
//!
//! | command | effect |
//! |---|---|
//! | `exit N` | ends the step with exit code `N` (later commands do not run) |
//! | `signal N` | ends the step as killed by signal `N` |
//! | `oom` | ends the step as killed for lack of memory (`SIGKILL`, `oom_killed`) |
//! | `emit N` | writes `line 1\n` .. `line N\n`, one chunk each |
//! | `sleep MS` | waits `MS` milliseconds |
//! | `hang` | waits until the step is destroyed |
//! | `fail-start` | `start_step` returns [`ProviderError::Start`] |
//! | `panic` | `start_step` panics (to test panic containment in actors) |
//!
//! | `touch PATH` | creates the file `PATH` in the workspace (its content is its path) |
//! | `expect PATH` | the step exits 1 at once unless the workspace has the file `PATH` |
//!
//! The workspace is a map of files in memory: `copy_out` and `copy_in` move them to and from
//! directories of this machine, as the real providers do. `touch` and `expect` act when the
//! step starts, before the other commands.
//!
//! A program that reaches its end exits 0 (`emit 3; exit 2` emits three lines, then exits 2).
//! `fail-start` and `panic` act at start wherever they appear. A destroyed step ends as killed
//! by `SIGKILL`. A program runs on a tokio task from `start_step` on. Any other script
//! (`cargo build`) is a no-op that exits 0 at once, the cheap path of the benchmark: its handle
//! has an empty id, nothing is allocated beyond the handle and no task is spawned. A script that
//! starts with a verb but does not parse (`exit x`, `emit`) is refused with
//! [`ProviderError::Start`], so that a typo in a test does not pass silently.
//!
//! ## Faults and the call log
//! [`set_unavailable`](FakeProvider::set_unavailable) makes every call fail with
//! [`ProviderError::Unavailable`] (the engine is down);
//! [`set_fail_set_up`](FakeProvider::set_fail_set_up) makes `set_up` fail with
//! [`ProviderError::SetUp`];
//! [`set_quick_tear_down`](FakeProvider::set_quick_tear_down) makes it tear down as quickly as
//! the local provider says it does. Every call is recorded, faulty ones too,
//! as a [`Call`] that the test reads with [`calls`](FakeProvider::calls) (not with
//! [`FakeProvider::quiet`], for long benchmarks). [`add_orphan`](FakeProvider::add_orphan)
//! scripts what the next `reap_orphans` finds. `resume` hands back the workspace of an attempt
//! that was set up and not torn down, as a provider whose workspaces survive a crash does.
//!
//! Like a real engine, it refuses a broken lifecycle with [`ProviderError::Start`]: a step
//! started before its workspace was set up or after it was torn down, or the same try of a
//! step started twice.

use std::collections::HashMap;
use std::fmt::Write as _;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::Cause;
use hodei_domain::ports::{
    BoxFuture, JobSpec, Orphan, OutputSink, Provider, ProviderError, Reconcile, StepHandle,
    StepSpec, Workspace,
};
use hodei_domain::state::{Attempt, StepExit};
use tokio::sync::{Notify, watch};

/// One call to the provider, as recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Call {
    SetUp {
        run: RunId,
        job: JobId,
        attempt: Attempt,
    },
    StartStep {
        job: JobId,
        index: u32,
        attempt: Attempt,
    },
    WaitStep {
        job: JobId,
        index: u32,
        attempt: Attempt,
    },
    DestroyStep {
        job: JobId,
        index: u32,
        attempt: Attempt,
    },
    TearDown {
        run: RunId,
        job: JobId,
        attempt: Attempt,
    },
    Resume {
        job: JobId,
        attempt: Attempt,
    },
    ReapOrphans,
}

/// A provider whose steps follow their scripts. See the documentation of this module.
#[derive(Default)]
pub struct FakeProvider {
    quiet: bool,
    unavailable: AtomicBool,
    fail_set_up: AtomicBool,
    quick_tear_down: AtomicBool,
    calls: Mutex<Vec<Call>>,
    steps: Mutex<HashMap<u64, FakeStep>>,
    next_step: AtomicU64,
    orphans: Mutex<Vec<Orphan>>,
    /// Workspaces set up and not torn down (what `resume` hands back), with the step tries
    /// started in each (index, step attempt).
    workspaces: Mutex<HashMap<(JobId, Attempt), StartedSteps>>,
    /// The files of each workspace, by path.
    files: Mutex<HashMap<(JobId, Attempt), WorkspaceFiles>>,
}

/// A workspace's files: path to content.
type WorkspaceFiles = std::collections::BTreeMap<String, Vec<u8>>;

/// The tries of steps started in a workspace: (index, step attempt).
type StartedSteps = std::collections::HashSet<(u32, Attempt)>;

/// A scripted step, kept until its job's tear down.
struct FakeStep {
    job: (JobId, Attempt),
    kill: Arc<Notify>,
    outcome: watch::Receiver<Option<StepExit>>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Verb {
    Exit(i32),
    Signal(i32),
    Oom,
    Emit(u64),
    Sleep(u64),
    Hang,
    FailStart,
    Panic,
}

impl FakeProvider {
    /// A provider that records every call.
    pub fn new() -> FakeProvider {
        FakeProvider::default()
    }

    /// A provider that records nothing: for benchmarks that start millions of steps.
    pub fn quiet() -> FakeProvider {
        FakeProvider {
            quiet: true,
            ..FakeProvider::default()
        }
    }

    /// While on, every call fails with [`ProviderError::Unavailable`].
    pub fn set_unavailable(&self, on: bool) {
        self.unavailable.store(on, Ordering::SeqCst);
    }

    /// While on, `set_up` fails with [`ProviderError::SetUp`].
    pub fn set_fail_set_up(&self, on: bool) {
        self.fail_set_up.store(on, Ordering::SeqCst);
    }

    /// Whether it answers [`Provider::quick_tear_down`] with yes, as the local provider does;
    /// no by default, as the container providers do.
    pub fn set_quick_tear_down(&self, on: bool) {
        self.quick_tear_down.store(on, Ordering::SeqCst);
    }

    /// What the next `reap_orphans` reports (once).
    pub fn add_orphan(&self, orphan: Orphan) {
        lock(&self.orphans).push(orphan);
    }

    /// The calls so far, in order.
    pub fn calls(&self) -> Vec<Call> {
        lock(&self.calls).clone()
    }

    /// The calls so far, forgetting them.
    pub fn take_calls(&self) -> Vec<Call> {
        std::mem::take(&mut *lock(&self.calls))
    }

    /// Records `call`, then fails if the engine is scripted to be down.
    fn enter(&self, call: Call) -> Result<(), ProviderError> {
        if !self.quiet {
            lock(&self.calls).push(call);
        }
        if self.unavailable.load(Ordering::SeqCst) {
            return Err(ProviderError::Unavailable {
                provider: "fake",
                reason: "scripted outage".into(),
                cause: None,
            });
        }
        Ok(())
    }

    fn start(
        &self,
        workspace: &Workspace,
        step: &StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> Result<StepHandle, ProviderError> {
        let mut handle = StepHandle {
            job: workspace.job,
            index: step.index,
            attempt: step.attempt,
            id: String::new(),
        };
        if !is_program(&step.script) {
            return Ok(handle);
        }
        let script = self.file_commands(workspace, &step.script);
        let verbs = parse(&script).map_err(|reason| ProviderError::Start {
            reason: format!("fake script {:?}: {reason}", step.script),
            cause: None,
        })?;
        for verb in &verbs {
            match verb {
                Verb::FailStart => {
                    return Err(ProviderError::Start {
                        reason: "scripted start failure".into(),
                        cause: None,
                    });
                }
                Verb::Panic => panic!("scripted panic in start_step of {}", workspace.job),
                _ => {}
            }
        }
        let runtime =
            tokio::runtime::Handle::try_current().map_err(|err| ProviderError::Other {
                provider: "fake",
                reason: format!("a scripted step needs a tokio runtime: {err}"),
                cause: Cause::of(err),
            })?;
        let kill = Arc::new(Notify::new());
        let (publish, outcome) = watch::channel(None);
        let killed = Arc::clone(&kill);
        runtime.spawn(async move {
            let exit = tokio::select! {
                biased;
                () = killed.notified() => StepExit::signal(libc::SIGKILL),
                exit = run(&verbs, output.as_ref()) => exit,
            };
            publish.send_replace(Some(exit));
        });
        let id = self.next_step.fetch_add(1, Ordering::Relaxed);
        let entry = FakeStep {
            job: (workspace.job, workspace.attempt),
            kill,
            outcome,
        };
        lock(&self.steps).insert(id, entry);
        handle.id = id.to_string();
        Ok(handle)
    }

    /// Carries out the `touch` and `expect` commands of a script on the workspace's files, and
    /// answers the rest (with `exit 1` first when a file was missing).
    fn file_commands(&self, workspace: &Workspace, script: &str) -> String {
        let mut files = lock(&self.files);
        let files = files.entry((workspace.job, workspace.attempt)).or_default();
        let mut rest = Vec::new();
        let mut missing = false;
        for command in script.split(';').map(str::trim) {
            if let Some(path) = command.strip_prefix("touch ") {
                files.insert(path.trim().to_owned(), path.trim().as_bytes().to_vec());
            } else if let Some(path) = command.strip_prefix("expect ") {
                missing |= !files.contains_key(path.trim());
            } else {
                rest.push(command);
            }
        }
        if missing {
            rest.insert(0, "exit 1");
        }
        rest.join(";")
    }

    /// The step's kill switch and outcome; `None` for the no-op (empty id) or an unknown id.
    fn step(
        &self,
        handle: &StepHandle,
    ) -> Option<(Arc<Notify>, watch::Receiver<Option<StepExit>>)> {
        let id = handle.id.parse().ok()?;
        let steps = lock(&self.steps);
        let step = steps.get(&id)?;
        Some((Arc::clone(&step.kill), step.outcome.clone()))
    }
}

/// Runs the program's verbs that take effect after the start; the step's exit.
async fn run(verbs: &[Verb], output: &dyn OutputSink) -> StepExit {
    let mut line = String::new();
    for verb in verbs {
        match *verb {
            Verb::Exit(code) => return StepExit::code(code),
            Verb::Signal(signal) => return StepExit::signal(signal),
            Verb::Oom => {
                return StepExit {
                    oom_killed: true,
                    ..StepExit::signal(libc::SIGKILL)
                };
            }
            Verb::Emit(lines) => {
                for n in 1..=lines {
                    line.clear();
                    let _ = writeln!(line, "line {n}");
                    output.output(line.as_bytes());
                }
            }
            Verb::Sleep(ms) => tokio::time::sleep(Duration::from_millis(ms)).await,
            Verb::Hang => std::future::pending::<()>().await,
            Verb::FailStart | Verb::Panic => {}
        }
    }
    StepExit::code(0)
}

const VERBS: [&str; 10] = [
    "touch",
    "expect",
    "exit",
    "signal",
    "oom",
    "emit",
    "sleep",
    "hang",
    "fail-start",
    "panic",
];

/// Whether the script is meant as a program: its first word is a verb. Allocates nothing.
fn is_program(script: &str) -> bool {
    script
        .split(|c: char| c.is_whitespace() || c == ';')
        .find(|word| !word.is_empty())
        .is_some_and(|first| VERBS.contains(&first))
}

fn parse(script: &str) -> Result<Vec<Verb>, String> {
    let mut verbs = Vec::new();
    for command in script.split(';').map(str::trim).filter(|c| !c.is_empty()) {
        let mut words = command.split_whitespace();
        let verb = words.next().unwrap_or_default();
        let arg = words.next();
        if let Some(extra) = words.next() {
            return Err(format!("`{command}`: unexpected `{extra}`"));
        }
        let number = |what: &str| -> Result<u64, String> {
            let arg = arg.ok_or_else(|| format!("`{command}`: expected {what}"))?;
            arg.parse()
                .map_err(|_| format!("`{command}`: expected {what}, found `{arg}`"))
        };
        let small = |what: &str| -> Result<i32, String> {
            i32::try_from(number(what)?).map_err(|_| format!("`{command}`: {what} out of range"))
        };
        let bare = |verb: Verb| match arg {
            None => Ok(verb),
            Some(arg) => Err(format!("`{command}`: takes no argument, found `{arg}`")),
        };
        verbs.push(match verb {
            "exit" => Verb::Exit(small("an exit code")?),
            "signal" => Verb::Signal(small("a signal number")?),
            "emit" => Verb::Emit(number("a number of lines")?),
            "sleep" => Verb::Sleep(number("milliseconds")?),
            "oom" => bare(Verb::Oom)?,
            "hang" => bare(Verb::Hang)?,
            "fail-start" => bare(Verb::FailStart)?,
            "panic" => bare(Verb::Panic)?,
            other => {
                return Err(format!(
                    "unknown command `{other}`; expected one of {VERBS:?}"
                ));
            }
        });
    }
    Ok(verbs)
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(PoisonError::into_inner)
}

fn lost(handle: &StepHandle) -> ProviderError {
    ProviderError::Wait {
        reason: format!(
            "no fake step {:?} of {} (or its job was torn down)",
            handle.id, handle.job
        ),
        cause: None,
    }
}

impl Provider for FakeProvider {
    fn name(&self) -> &'static str {
        "fake"
    }

    fn set_up<'a>(&'a self, job: &'a JobSpec) -> BoxFuture<'a, Result<Workspace, ProviderError>> {
        Box::pin(async move {
            self.enter(Call::SetUp {
                run: job.run,
                job: job.job,
                attempt: job.attempt,
            })?;
            if self.fail_set_up.load(Ordering::SeqCst) {
                return Err(ProviderError::SetUp {
                    reason: "scripted set-up failure".into(),
                    cause: None,
                });
            }
            lock(&self.workspaces)
                .entry((job.job, job.attempt))
                .or_default();
            Ok(Workspace {
                run: job.run,
                job: job.job,
                attempt: job.attempt,
                id: String::new(),
            })
        })
    }

    fn start_step<'a>(
        &'a self,
        workspace: &'a Workspace,
        step: &'a StepSpec,
        output: Arc<dyn OutputSink>,
    ) -> BoxFuture<'a, Result<StepHandle, ProviderError>> {
        Box::pin(async move {
            self.enter(Call::StartStep {
                job: workspace.job,
                index: step.index,
                attempt: step.attempt,
            })?;
            self.check_lifecycle(workspace, step)?;
            self.start(workspace, step, output)
        })
    }

    fn wait_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<StepExit, ProviderError>> {
        Box::pin(async move {
            self.enter(Call::WaitStep {
                job: step.job,
                index: step.index,
                attempt: step.attempt,
            })?;
            if step.id.is_empty() {
                return Ok(StepExit::code(0));
            }
            let (_, mut outcome) = self.step(step).ok_or_else(|| lost(step))?;
            let exit = *outcome
                .wait_for(Option::is_some)
                .await
                .map_err(|_| lost(step))?;
            exit.ok_or_else(|| lost(step))
        })
    }

    fn destroy_step<'a>(
        &'a self,
        step: &'a StepHandle,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.enter(Call::DestroyStep {
                job: step.job,
                index: step.index,
                attempt: step.attempt,
            })?;
            if let Some((kill, mut outcome)) = self.step(step) {
                kill.notify_one();
                // Ends as soon as the step's task sees the kill; a closed channel means it ended.
                let _ = outcome.wait_for(Option::is_some).await;
            }
            Ok(())
        })
    }

    fn resume<'a>(
        &'a self,
        job: &'a JobSpec,
    ) -> BoxFuture<'a, Result<Option<Workspace>, ProviderError>> {
        Box::pin(async move { self.resumed(job) })
    }

    fn copy_out<'a>(
        &'a self,
        workspace: &'a Workspace,
        patterns: &'a [String],
        into: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<Vec<String>, ProviderError>> {
        Box::pin(async move {
            let taken: Vec<(String, Vec<u8>)> = lock(&self.files)
                .get(&(workspace.job, workspace.attempt))
                .into_iter()
                .flatten()
                .filter(|(path, _)| {
                    patterns
                        .iter()
                        .any(|p| crate::files::workspace::is_taken(p, path))
                })
                .map(|(path, bytes)| (path.clone(), bytes.clone()))
                .collect();
            for (path, bytes) in &taken {
                let to = into.join(path);
                let written = to
                    .parent()
                    .map_or(Ok(()), std::fs::create_dir_all)
                    .and_then(|()| std::fs::write(&to, bytes));
                written.map_err(|err| ProviderError::Other {
                    provider: "fake",
                    reason: format!("cannot write {}: {err}", to.display()),
                    cause: Cause::of(err),
                })?;
            }
            Ok(taken.into_iter().map(|(path, _)| path).collect())
        })
    }

    fn copy_in<'a>(
        &'a self,
        workspace: &'a Workspace,
        from: &'a std::path::Path,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            let read = crate::files::workspace::files_in(from).and_then(|files| {
                files
                    .into_iter()
                    .map(|f| Ok((f.rel, std::fs::read(&f.path)?)))
                    .collect::<std::io::Result<Vec<_>>>()
            });
            let found = read.map_err(|err| ProviderError::Other {
                provider: "fake",
                reason: format!("cannot read {}: {err}", from.display()),
                cause: Cause::of(err),
            })?;
            lock(&self.files)
                .entry((workspace.job, workspace.attempt))
                .or_default()
                .extend(found);
            Ok(())
        })
    }

    fn tear_down<'a>(
        &'a self,
        workspace: &'a Workspace,
    ) -> BoxFuture<'a, Result<(), ProviderError>> {
        Box::pin(async move {
            self.enter(Call::TearDown {
                run: workspace.run,
                job: workspace.job,
                attempt: workspace.attempt,
            })?;
            let job = (workspace.job, workspace.attempt);
            lock(&self.workspaces).remove(&job);
            lock(&self.files).remove(&job);
            lock(&self.steps).retain(|_, step| {
                if step.job == job {
                    step.kill.notify_one();
                }
                step.job != job
            });
            Ok(())
        })
    }

    fn quick_tear_down(&self, _workspace: &Workspace) -> bool {
        self.quick_tear_down.load(Ordering::SeqCst)
    }
}

impl FakeProvider {
    /// Refuses what a real engine refuses: a step started outside a set-up workspace (before
    /// `set_up` or after `tear_down`), or the same try of a step started twice.
    fn check_lifecycle(&self, workspace: &Workspace, step: &StepSpec) -> Result<(), ProviderError> {
        let mut workspaces = lock(&self.workspaces);
        let Some(started) = workspaces.get_mut(&(workspace.job, workspace.attempt)) else {
            return Err(ProviderError::Start {
                reason: format!(
                    "step {} of {} (attempt {}) started outside a set-up workspace",
                    step.index, workspace.job, workspace.attempt
                ),
                cause: None,
            });
        };
        if !started.insert((step.index, step.attempt)) {
            return Err(ProviderError::Start {
                reason: format!(
                    "step {} (try {}) of {} started twice",
                    step.index, step.attempt, workspace.job
                ),
                cause: None,
            });
        }
        Ok(())
    }

    fn resumed(&self, job: &JobSpec) -> Result<Option<Workspace>, ProviderError> {
        self.enter(Call::Resume {
            job: job.job,
            attempt: job.attempt,
        })?;
        let kept = lock(&self.workspaces).contains_key(&(job.job, job.attempt));
        Ok(kept.then(|| Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: String::new(),
        }))
    }
}

impl Reconcile for FakeProvider {
    fn reap_orphans<'a>(
        &'a self,
        _spare: &'a [hodei_domain::ports::JobAttempt],
    ) -> BoxFuture<'a, Result<Vec<Orphan>, ProviderError>> {
        Box::pin(async move {
            self.enter(Call::ReapOrphans)?;
            Ok(std::mem::take(&mut *lock(&self.orphans)))
        })
    }
}

#[cfg(test)]
#[path = "fake_tests.rs"]
mod tests;
