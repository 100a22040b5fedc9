//! The harness of the in-process tests: a supervision tree on a SQLite store in a scratch
//! directory, with the scripted `FakeProvider`.
#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use hodei_actors::Ports;
use hodei_actors::fault::Faults;
use hodei_actors::messages::{Definition, Published, SubmitRun, Subscribe, WorkerSpec};
use hodei_adapters::clock::SystemClock;
use hodei_adapters::fake::FakeProvider;
use hodei_adapters::files::{DiskFiles, FileLimits};
use hodei_adapters::logs::FileLogStore;
use hodei_adapters::sqlite::SqliteStore;
use hodei_domain::engine::Approvals;
use hodei_domain::ids::{RunId, WorkerId};
use hodei_domain::plan::RunInputs;
use hodei_domain::ports::{
    BoxFuture, Clock, RunRecord, SecretScope, SecretStore, Store, StoreError,
};
use hodei_domain::state::{DomainEvent, JobState};
use hodei_supervisors::{Tree, TreeConfig, start_tree};

pub struct Secrets(pub Vec<(String, String)>);

impl SecretStore for Secrets {
    fn get<'a>(
        &'a self,
        _: &'a [SecretScope],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let value = self
            .0
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.clone());
        Box::pin(async move { Ok(value) })
    }
}

pub struct Harness {
    pub tree: Tree,
    pub store: Arc<SqliteStore>,
    pub logs: Arc<FileLogStore>,
    pub provider: Arc<FakeProvider>,
    /// Artifacts and caches, in the scratch directory.
    pub files: Arc<DiskFiles>,
    /// A wake-up for every batch of events published: waits re-read the store then, instead of
    /// polling it.
    published: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<()>>,
    /// Every batch published, in order: one per append (and a new run's opening).
    batches: Arc<std::sync::Mutex<Vec<Arc<[DomainEvent]>>>>,
    _dir: TempDir,
}

/// Turns every published batch into a wake-up, and keeps it.
struct WakeUp(
    tokio::sync::mpsc::UnboundedSender<()>,
    Arc<std::sync::Mutex<Vec<Arc<[DomainEvent]>>>>,
);

impl actix::Actor for WakeUp {
    type Context = actix::Context<Self>;
}

impl actix::Handler<Published> for WakeUp {
    type Result = ();

    fn handle(&mut self, published: Published, _: &mut actix::Context<Self>) {
        self.1.lock().unwrap().push(published.events);
        let _ = self.0.send(());
    }
}

/// A directory removed when dropped.
pub struct TempDir(pub std::path::PathBuf);

impl TempDir {
    pub fn new(name: &str) -> TempDir {
        let dir = std::env::temp_dir().join(format!("hodei-actors-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a test changes of the default harness.
pub struct Options {
    pub slots: u32,
    pub secrets: Vec<(String, String)>,
    pub faults: Faults,
    /// Wraps the store the actors see (the harness reads the real one).
    pub store: fn(Arc<SqliteStore>) -> Arc<dyn Store>,
    pub config: Box<dyn FnOnce(&mut TreeConfig)>,
    /// The clock the actors read; the system's by default.
    pub clock: Arc<dyn Clock>,
    /// Whether the tree runs a timer of schedules (on the harness's store).
    pub schedules: bool,
    /// Whether the tree takes agents (an agent desk on the harness's store, with this lease).
    pub agents: Option<Duration>,
    /// Workers with a provider of their own (registered by the test).
    pub worker_providers: hodei_actors::WorkerProviders,
}

impl Default for Options {
    fn default() -> Options {
        Options {
            slots: 2,
            secrets: Vec::new(),
            faults: Faults::none(),
            store: |store| store,
            config: Box::new(|_| {}),
            clock: Arc::new(SystemClock),
            schedules: false,
            agents: None,
            worker_providers: Default::default(),
        }
    }
}

pub async fn harness(name: &str, slots: u32, secrets: Vec<(String, String)>) -> Harness {
    harness_with(
        name,
        Options {
            slots,
            secrets,
            ..Options::default()
        },
    )
    .await
}

pub async fn harness_with(name: &str, options: Options) -> Harness {
    let dir = TempDir::new(name);
    let store = Arc::new(SqliteStore::open(&dir.0.join("hodei.db")).await.unwrap());
    let logs = Arc::new(FileLogStore::open(&dir.0.join("logs"), 1).unwrap());
    let provider = Arc::new(FakeProvider::new());
    let files = Arc::new(
        DiskFiles::open(dir.0.join("files"), FileLimits::default(), "main".into()).unwrap(),
    );
    let ports = Ports {
        store: (options.store)(store.clone()),
        logs: logs.clone(),
        provider: provider.clone(),
        worker_providers: options.worker_providers,
        reconcile: provider.clone(),
        clock: options.clock,
        secrets: Arc::new(Secrets(options.secrets)),
        files: files.clone(),
        faults: options.faults,
    };
    let worker = WorkerSpec {
        id: WorkerId("local".into()),
        labels: vec!["linux".parse().unwrap()],
        slots: options.slots,
        agent: false,
        offline: false,
    };
    let mut config = TreeConfig::new(Some(worker), Approvals::Local);
    // Tests restart fast; escalation is for the tests that ask for it.
    config.restart_policy.backoff_base_ms = 1;
    config.restart_policy.backoff_max_ms = 20;
    config.escalation = Arc::new(|escalated| panic!("unexpected escalation: {escalated:?}"));
    if options.schedules {
        config.ticks = Some(store.clone());
    }
    if let Some(lease) = options.agents {
        let agents: Arc<dyn hodei_domain::ports::AgentStore> = store.clone();
        config.agents = Some((agents, hodei_actors::agents::AgentSettings { lease }));
    }
    (options.config)(&mut config);
    let tree = start_tree(ports, config);
    let (wake, published) = tokio::sync::mpsc::unbounded_channel();
    use actix::Actor as _;
    let batches = Arc::default();
    let subscriber = WakeUp(wake, Arc::clone(&batches)).start().recipient();
    tree.bus.do_send(Subscribe { subscriber });
    Harness {
        batches,
        tree,
        store,
        logs,
        provider,
        files,
        published: tokio::sync::Mutex::new(published),
        _dir: dir,
    }
}

impl Harness {
    pub async fn submit(&self, yaml: &str, inputs: RunInputs) -> RunId {
        self.tree
            .orchestrator
            .send(SubmitRun {
                definition: Definition::Text(yaml.to_owned()),
                inputs,
                limit: None,
            })
            .await
            .unwrap()
            .unwrap()
    }

    /// Waits until the run is finished; fails with "likely deadlocked" after 20 s.
    pub async fn finished(&self, run: RunId) -> RunRecord {
        self.until(run, "the end of the run", |r| r.state.is_terminal())
            .await
    }

    /// Waits until the run's record passes `test`, reading it again after each batch of
    /// published events (every transition is published once it is durable); fails with
    /// "likely deadlocked" after 20 s without it.
    pub async fn until(
        &self,
        run: RunId,
        what: &str,
        test: impl Fn(&RunRecord) -> bool,
    ) -> RunRecord {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        let mut published = self.published.lock().await;
        loop {
            while published.try_recv().is_ok() {}
            let record = self.store.run(run).await.unwrap().unwrap();
            if test(&record) {
                return record;
            }
            let woken = tokio::time::timeout_at(deadline, published.recv()).await;
            assert!(
                woken.is_ok(),
                "{run}: {what} never happened: likely deadlocked; {record:?}"
            );
        }
    }

    /// The kinds of the events of `run` published so far, batch by batch.
    pub fn batches(&self, run: RunId) -> Vec<Vec<&'static str>> {
        self.batches
            .lock()
            .unwrap()
            .iter()
            .map(|batch| {
                batch
                    .iter()
                    .filter(|e| e.run_id() == run)
                    .map(DomainEvent::kind)
                    .collect::<Vec<_>>()
            })
            .filter(|kinds| !kinds.is_empty())
            .collect()
    }

    pub async fn store_run(&self, run: RunId) -> RunRecord {
        self.store.run(run).await.unwrap().unwrap()
    }

    pub async fn events(&self, run: RunId) -> Vec<DomainEvent> {
        let mut out = Vec::new();
        let mut after = 0;
        loop {
            let page = self.store.events(after, 500).await.unwrap();
            let Some(&(last, _)) = page.last() else { break };
            after = last;
            out.extend(
                page.into_iter()
                    .map(|(_, e)| e)
                    .filter(|e| e.run_id() == run),
            );
        }
        out
    }

    pub async fn log(&self, record: &RunRecord, job: &str) -> String {
        let job = record.jobs.iter().find(|j| j.name == job).unwrap().id;
        use hodei_domain::ports::LogStore;
        self.logs.flush(job).await.unwrap();
        String::from_utf8(self.logs.read(job, 0, None).await.unwrap()).unwrap()
    }
}

/// Keeps injected panics out of the test output; every other panic is reported as usual.
pub fn quiet_injected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let report = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let text = info
                .payload()
                .downcast_ref::<String>()
                .map(String::as_str)
                .or_else(|| info.payload().downcast_ref::<&str>().copied())
                .unwrap_or_default();
            if !text.contains("fault injection") {
                report(info);
            }
        }));
    });
}

pub fn state_of<'a>(record: &'a RunRecord, job: &str) -> &'a JobState {
    &record
        .jobs
        .iter()
        .find(|j| j.name == job)
        .unwrap_or_else(|| panic!("no job {job}"))
        .state
}
