//! The one place that chooses concrete adapters and starts the supervision tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hodei_actors::Ports;
use hodei_actors::messages::WorkerSpec;
use hodei_actors::run::Approvals;
use hodei_adapters::clock::SystemClock;
use hodei_adapters::local::LocalProvider;
use hodei_adapters::logs::FileLogStore;
use hodei_adapters::sqlite::SqliteStore;
use hodei_domain::ids::WorkerId;
use hodei_domain::model::Label;
use hodei_domain::ports::{SecretStore, TokenStore};
use hodei_supervisors::{Tree, TreeConfig, start_tree};

/// Secrets taken from the environment of the `hodei` process, by name.
pub struct EnvSecrets {
    values: std::collections::BTreeMap<String, String>,
}

impl EnvSecrets {
    /// The given names with their values from the environment, or the first name that is not set.
    pub fn from_env(names: &[String]) -> Result<EnvSecrets, String> {
        let mut values = std::collections::BTreeMap::new();
        for name in names {
            match std::env::var(name) {
                Ok(value) => {
                    values.insert(name.clone(), value);
                }
                Err(_) => return Err(name.clone()),
            }
        }
        Ok(EnvSecrets { values })
    }
}

impl SecretStore for EnvSecrets {
    fn get(&self, name: &str) -> Option<String> {
        self.values
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok())
    }
}

/// Where a local stack keeps its files.
pub struct LocalPaths {
    /// The database, or `None` for an in-memory store.
    pub store: Option<PathBuf>,
    pub logs: PathBuf,
    pub workspaces: PathBuf,
}

impl LocalPaths {
    /// Next to a store file: `<store>.logs/` and `<store>.workspaces/`.
    pub fn beside(store: &Path) -> LocalPaths {
        let with = |suffix: &str| {
            let mut name = store.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        };
        LocalPaths {
            store: Some(store.to_owned()),
            logs: with(".logs"),
            workspaces: with(".workspaces"),
        }
    }

    /// In a scratch directory that the caller removes.
    pub fn scratch(dir: &Path) -> LocalPaths {
        LocalPaths {
            store: None,
            logs: dir.join("logs"),
            workspaces: dir.join("workspaces"),
        }
    }

    /// In a server's data directory: `DIR/hodei.db`, `DIR/logs/`, `DIR/workspaces/`.
    pub fn data_dir(dir: &Path) -> LocalPaths {
        LocalPaths {
            store: Some(dir.join("hodei.db")),
            logs: dir.join("logs"),
            workspaces: dir.join("workspaces"),
        }
    }
}

/// Opens the adapters of a local stack and starts the tree. Must run inside an actix System.
pub async fn local_stack(
    paths: &LocalPaths,
    secrets: Arc<dyn SecretStore>,
    labels: Vec<Label>,
    approvals: Approvals,
) -> Result<(Tree, Arc<LocalProvider>), String> {
    let store = open_store(paths).await?;
    start_stack(Arc::new(store), paths, secrets, labels, approvals)
}

/// What `hodei server` runs on: the tree, the local provider, and the store for the API's
/// tokens.
pub struct ServerStack {
    pub tree: Tree,
    pub provider: Arc<LocalProvider>,
    pub tokens: Arc<dyn TokenStore>,
}

/// Opens the adapters of a server in its data directory and starts the tree: the local stack,
/// with approval gates waiting for someone to approve through the API. Must run inside an
/// actix System.
pub async fn server_stack(
    data: &Path,
    secrets: Arc<dyn SecretStore>,
    labels: Vec<Label>,
) -> Result<ServerStack, String> {
    let paths = LocalPaths::data_dir(data);
    let store = Arc::new(open_store(&paths).await?);
    let tokens: Arc<dyn TokenStore> = store.clone();
    let (tree, provider) = start_stack(store, &paths, secrets, labels, Approvals::Wait)?;
    Ok(ServerStack {
        tree,
        provider,
        tokens,
    })
}

async fn open_store(paths: &LocalPaths) -> Result<SqliteStore, String> {
    match &paths.store {
        Some(path) => SqliteStore::open(path).await,
        None => SqliteStore::memory().await,
    }
    .map_err(|e| format!("cannot open the store: {e}"))
}

fn start_stack(
    store: Arc<SqliteStore>,
    paths: &LocalPaths,
    secrets: Arc<dyn SecretStore>,
    labels: Vec<Label>,
    approvals: Approvals,
) -> Result<(Tree, Arc<LocalProvider>), String> {
    let instance = store.instance_id().to_owned();
    let logs = Arc::new(
        FileLogStore::open(&paths.logs, 2)
            .map_err(|e| format!("cannot open the logs in {}: {e}", paths.logs.display()))?,
    );
    let provider = Arc::new(LocalProvider::new(paths.workspaces.clone(), instance));
    let local = provider.clone();
    let ports = Ports {
        store,
        logs,
        provider: provider.clone(),
        reconcile: provider,
        clock: Arc::new(SystemClock),
        secrets,
    };
    let slots = std::thread::available_parallelism().map_or(2, |n| n.get() as u32);
    let worker = WorkerSpec {
        id: WorkerId("local".into()),
        labels,
        slots,
    };
    let tree = start_tree(
        ports,
        TreeConfig {
            local_worker: Some(worker),
            approvals,
        },
    );
    Ok((tree, local))
}
