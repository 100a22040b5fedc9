#![allow(dead_code)]
//! A Hodei API server for tests and benchmarks: on a loopback port, with a real SQLite store and
//! log store in a temporary directory, stored secrets, repository mirrors, and the local provider
//! running real shell steps.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use hodei_actors::Ports;
use hodei_actors::fault::Faults;
use hodei_actors::messages::WorkerSpec;
use hodei_adapters::clock::SystemClock;
use hodei_adapters::git::GitMirrors;
use hodei_adapters::local::LocalProvider;
use hodei_adapters::logs::FileLogStore;
use hodei_adapters::secrets::{SealedSecrets, SecretKey};
use hodei_adapters::sqlite::SqliteStore;
use hodei_api::auth::{Bootstrap, bootstrap};
use hodei_api::{ApiState, Limits, Sources};
use hodei_domain::engine::Approvals;
use hodei_domain::ids::{Timestamp, WorkerId};
use hodei_supervisors::{Tree, TreeConfig, start_tree};

/// A running server and a client for it.
pub struct Server {
    pub base: String,
    pub admin: String,
    pub http: reqwest::Client,
    pub handle: ServerHandle,
    pub provider: Arc<LocalProvider>,
    /// The supervision tree behind the API.
    pub tree: Tree,
    /// The store behind the API.
    pub store: Arc<SqliteStore>,
    pub _dir: tempfile::TempDir,
}

pub async fn start_with(limits: Limits) -> Server {
    let dir = tempfile::tempdir().expect("a temporary directory");
    let store = Arc::new(
        SqliteStore::open(&dir.path().join("hodei.db"))
            .await
            .expect("the store opens"),
    );
    let logs = Arc::new(FileLogStore::open(&dir.path().join("logs"), 1).expect("the logs open"));
    let key = SecretKey::load_or_create(&dir.path().join("secrets.key")).expect("a key file");
    let secrets = Arc::new(SealedSecrets::new(store.clone(), &key));
    let provider = Arc::new(
        LocalProvider::new(
            dir.path().join("workspaces"),
            store.instance_id().to_owned(),
        )
        .with_mirrors(dir.path().join("mirrors")),
    );
    let ports = Ports {
        store: store.clone(),
        logs,
        provider: provider.clone(),
        worker_providers: Default::default(),
        reconcile: provider.clone(),
        clock: Arc::new(SystemClock),
        secrets: secrets.clone(),
        files: Arc::new(
            hodei_adapters::files::DiskFiles::open(
                dir.path().join("files"),
                hodei_adapters::files::FileLimits::default(),
                "main".into(),
            )
            .expect("the files directory opens"),
        ),
        faults: Faults::none(),
    };
    let mut config = TreeConfig::new(
        Some(WorkerSpec {
            id: WorkerId("local".into()),
            // As the server's own worker: it checks out registered repositories.
            labels: vec![hodei_domain::model::Label::checkout()],
            slots: 4,
            agent: false,
            offline: false,
        }),
        Approvals::Wait,
    );
    let agents: Arc<dyn hodei_domain::ports::AgentStore> = store.clone();
    config.agents = Some((agents.clone(), Default::default()));
    let tree = start_tree(ports, config);
    let admin = match bootstrap(store.as_ref(), None, Timestamp(0)).await {
        Ok(Bootstrap::Generated { token }) => token,
        other => panic!("the first start generates an admin token: {other:?}"),
    };
    let listener = TcpListener::bind("127.0.0.1:0").expect("a loopback port");
    let base = format!("http://{}", listener.local_addr().unwrap());
    // A provider that is away: shown by the probes and the metrics, without making the server
    // unready.
    let sources = Sources {
        repos: store.clone(),
        mirrors: Arc::new(GitMirrors::new(dir.path().join("mirrors"))),
    };
    let state = ApiState::new(tree.clone(), store.clone(), secrets, sources, limits)
        .with_agents(agents)
        .with_provider(
            "docker",
            std::sync::Arc::new(|| Some("the engine is away (scripted)".into())),
        );
    let server = hodei_api::serve(state, listener, 1, None).expect("the server starts");
    let handle = server.handle();
    actix_rt::spawn(server);
    Server {
        base,
        admin,
        http: {
            hodei_api::client::install_crypto();
            reqwest::Client::new()
        },
        handle,
        provider,
        tree,
        store,
        _dir: dir,
    }
}

pub async fn start() -> Server {
    start_with(Limits::default()).await
}

impl Drop for Server {
    fn drop(&mut self) {
        self.provider.stop_all();
        drop(self.handle.stop(false));
    }
}
