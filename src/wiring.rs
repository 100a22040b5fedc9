//! The one place that chooses concrete adapters and starts the supervision tree.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use hodei_actors::Ports;
use hodei_actors::agents::AgentSettings;
use hodei_actors::fault::Faults;
use hodei_actors::messages::{RegisterWorker, WorkerSpec};
use hodei_actors::supervise::exit_on_escalation;
use hodei_adapters::ServerStore;
use hodei_adapters::clock::SystemClock;
use hodei_adapters::docker::DockerConfig;
use hodei_adapters::files::{DiskFiles, FileLimits};
use hodei_adapters::git::{GitMirrors, RepoHeads};
use hodei_adapters::kube::KubernetesProvider;
use hodei_adapters::local::{LocalProvider, RunAs};
use hodei_adapters::logs::FileLogStore;
use hodei_adapters::postgres::PgStore;
use hodei_adapters::route::{ByImage, ReapAll};
use hodei_adapters::secrets::{SealedSecrets, SecretKey};
use hodei_adapters::sqlite::SqliteStore;
use hodei_adapters::token_cache::CachedTokens;
use hodei_domain::engine::Approvals;
use hodei_domain::ids::WorkerId;
use hodei_domain::model::Label;
use hodei_domain::ports::AgentStore;
use hodei_domain::ports::{
    BoxFuture, Heads, LogStore, Provider, Reconcile, SecretScope, SecretStore, SecretVault,
    StoreError, TickStore, TokenStore,
};

use hodei_supervisors::{Tree, TreeConfig, start_tree};

use crate::kube_config::KubernetesConfig;
use crate::kube_worker::{KUBERNETES_WORKER, kubernetes_worker, offer_kubernetes};

/// Secrets taken from the environment of the `hodei` process, by name.
#[derive(Default)]
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
    /// The environment has no scopes: a name is the variable's, for every run.
    fn get<'a>(
        &'a self,
        _scopes: &'a [SecretScope],
        name: &'a str,
    ) -> BoxFuture<'a, Result<Option<String>, StoreError>> {
        let value = self
            .values
            .get(name)
            .cloned()
            .or_else(|| std::env::var(name).ok());
        Box::pin(async move { Ok(value) })
    }
}

/// Where a local stack keeps its files.
pub struct LocalPaths {
    /// The database, or `None` for an in-memory store.
    pub store: Option<PathBuf>,
    pub logs: PathBuf,
    /// Workspaces of jobs run as local processes.
    pub workspaces: PathBuf,
    /// Workspaces of jobs run in containers (bind-mounted into them).
    pub docker_workspaces: PathBuf,
    /// The mirrors of registered repositories, which jobs check out from (a server's only).
    pub mirrors: Option<PathBuf>,
    /// Artifacts of runs and caches of pipelines.
    pub files: PathBuf,
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
            docker_workspaces: with(".docker"),
            mirrors: None,
            files: with(".files"),
        }
    }

    /// In a scratch directory that the caller removes.
    pub fn scratch(dir: &Path) -> LocalPaths {
        LocalPaths {
            store: None,
            logs: dir.join("logs"),
            workspaces: dir.join("workspaces"),
            docker_workspaces: dir.join("docker"),
            mirrors: None,
            files: dir.join("files"),
        }
    }

    /// In a server's data directory: `DIR/hodei.db`, `DIR/logs/`, `DIR/workspaces/`,
    /// `DIR/docker/`, `DIR/mirrors/`, `DIR/files/`.
    pub fn data_dir(dir: &Path) -> LocalPaths {
        LocalPaths {
            store: Some(dir.join("hodei.db")),
            logs: dir.join("logs"),
            workspaces: dir.join("workspaces"),
            docker_workspaces: dir.join("docker"),
            mirrors: Some(dir.join("mirrors")),
            files: dir.join("files"),
        }
    }
}

/// Opens the adapters of a local stack and starts the tree: `slots` jobs at once on this
/// machine (default: one per CPU core). Must run inside an actix System.
pub async fn local_stack(
    paths: &LocalPaths,
    secrets: Arc<dyn SecretStore>,
    labels: Vec<Label>,
    slots: Option<u32>,
    approvals: Approvals,
) -> Result<(Tree, Arc<ByImage>), String> {
    let store = Arc::new(open_store(paths).await?);
    let local = Local {
        labels,
        slots,
        approvals,
        run_as: None,
        kubernetes: None,
    };
    let files = open_files(paths, FileLimits::default())?;
    let instance = store.instance_id().to_owned();
    let record = Record {
        store,
        instance,
        logs: open_logs(paths)?,
    };
    let (tree, provider, _) = start_stack(
        record,
        paths,
        secrets,
        local,
        None,
        files,
        Duties::default(),
    )
    .await?;
    Ok((tree, provider))
}

/// Opens the log files of a stack.
fn open_logs(paths: &LocalPaths) -> Result<Arc<dyn LogStore>, String> {
    let logs = FileLogStore::open(&paths.logs, 2)
        .map_err(|e| format!("cannot open the logs in {}: {e}", paths.logs.display()))?;
    Ok(Arc::new(logs))
}

/// What a stack keeps its record and logs in.
struct Record {
    store: Arc<dyn hodei_domain::ports::Store>,
    /// The store's instance id.
    instance: String,
    logs: Arc<dyn LogStore>,
}

/// The store a server runs on.
pub enum ServerDatabase {
    /// The SQLite database of the data directory, opened (and locked) by [`server_stack`].
    Sqlite,
    /// A PostgreSQL database, opened by the caller (which leads the replicas that share it).
    Postgres(PgStore),
}

/// Opens a server's store: the SQLite database of the data directory with log files beside
/// it, or the PostgreSQL store with the logs in it.
async fn open_server_store(
    paths: &LocalPaths,
    database: ServerDatabase,
) -> Result<(Arc<dyn ServerStore>, Arc<dyn LogStore>), String> {
    match database {
        ServerDatabase::Sqlite => Ok((Arc::new(open_store(paths).await?), open_logs(paths)?)),
        ServerDatabase::Postgres(store) => {
            let logs: Arc<dyn LogStore> = Arc::new(store.logs());
            Ok((Arc::new(store), logs))
        }
    }
}

/// Opens the files directory of a stack.
fn open_files(paths: &LocalPaths, limits: FileLimits) -> Result<Arc<DiskFiles>, String> {
    DiskFiles::open(paths.files.clone(), limits, DEFAULT_BRANCH.to_owned())
        .map(Arc::new)
        .map_err(|err| {
            format!(
                "cannot open the files directory {}: {err}",
                paths.files.display()
            )
        })
}

/// The branch whose caches jobs of other branches fall back to.
pub const DEFAULT_BRANCH: &str = "main";

/// What the machine Hodei runs on does: its worker's labels and slots (0: no local worker),
/// and how approval gates are handled; and the Kubernetes worker beside it, if configured.
struct Local {
    labels: Vec<Label>,
    slots: Option<u32>,
    approvals: Approvals,
    /// The user local steps run as, if not Hodei's own.
    run_as: Option<RunAs>,
    kubernetes: Option<KubernetesConfig>,
}

/// What `hodei server` runs on: the tree, the providers, the store for the API's tokens and
/// the stored secrets.
pub struct ServerStack {
    pub tree: Tree,
    pub provider: Arc<ByImage>,
    /// The provider of the Kubernetes worker, with a `[kubernetes]` table.
    pub kubernetes: Option<Arc<KubernetesProvider>>,
    pub tokens: Arc<dyn TokenStore>,
    pub secrets: Arc<dyn SecretVault>,
    /// The registered repositories and their mirrors (`DIR/mirrors/`).
    pub sources: hodei_api::Sources,
    /// Agents' registrations and leases.
    pub agents: Arc<dyn AgentStore>,
}

/// The workers of a server: the machine it runs on (its labels, its slots, 0 for none, and
/// the user its steps run as), the Kubernetes worker of a `[kubernetes]` table, and the pools
/// of ephemeral workers (`[[pools]]`).
pub struct ServerWorkers {
    pub labels: Vec<Label>,
    pub local_slots: u32,
    pub run_as: Option<RunAs>,
    pub kubernetes: Option<KubernetesConfig>,
    pub pools: crate::pools::Pools,
}

/// The file of a data directory that holds the key of the stored secrets.
pub const SECRETS_KEY_FILE: &str = "secrets.key";

/// Opens the adapters of a server in its data directory and starts the tree: the local stack,
/// with approval gates waiting for someone to approve through the API, and runs' secrets from
/// the stored secrets, sealed with the key file `DIR/secrets.key` (made on the first start).
/// Must run inside an actix System.
pub async fn server_stack(
    data: &Path,
    database: ServerDatabase,
    workers: ServerWorkers,
    agents: AgentSettings,
    limits: FileLimits,
) -> Result<ServerStack, String> {
    let ServerWorkers {
        labels,
        local_slots,
        run_as,
        kubernetes,
        pools,
    } = workers;
    let mut paths = LocalPaths::data_dir(data);
    if let ServerDatabase::Postgres(_) = database {
        // The record and the logs are in PostgreSQL: no database file in the directory.
        paths.store = None;
    }
    make_private(data, &paths, run_as.is_some())
        .map_err(|err| format!("cannot make the data directory private to this user: {err}"))?;
    let sole_writer = matches!(database, ServerDatabase::Sqlite);
    let (store, logs) = open_server_store(&paths, database).await?;
    let key = SecretKey::load_or_create(&data.join(SECRETS_KEY_FILE)).map_err(|e| e.to_string())?;
    let secrets = Arc::new(SealedSecrets::new(store.clone(), &key));
    // The SQLite server is its database's one writer (it holds the data directory's lock), so
    // the tokens it has seen can be remembered: it revokes them itself. Replicas on PostgreSQL
    // ask the database at every request (another replica may revoke a token).
    let tokens: Arc<dyn TokenStore> = match sole_writer {
        true => Arc::new(CachedTokens::new(store.clone())),
        false => store.clone(),
    };
    // One set of mirrors, with its locks: webhooks and the timer fetch into the same ones.
    let mirrors = Arc::new(GitMirrors::new(paths.mirrors.clone().unwrap_or_default()));
    let sources = hodei_api::Sources {
        repos: store.clone(),
        mirrors: mirrors.clone(),
    };
    let heads: Arc<dyn Heads> = Arc::new(RepoHeads {
        store: store.clone(),
        repos: store.clone(),
        secrets: secrets.clone(),
        mirrors,
    });
    let agent_store: Arc<dyn AgentStore> = store.clone();
    let local = Local {
        labels,
        slots: Some(local_slots),
        approvals: Approvals::Wait,
        run_as,
        kubernetes,
    };
    let files = open_files(&paths, limits)?;
    prune_files(files.clone());
    let ticks: Arc<dyn TickStore> = store.clone();
    let pools = pools
        .settings(agent_store.clone(), store.instance_id())
        .await?;
    let record = Record {
        instance: store.instance_id().to_owned(),
        store,
        logs,
    };
    let (tree, provider, kubernetes) = start_stack(
        record,
        &paths,
        secrets.clone(),
        local,
        Some((agent_store.clone(), agents)),
        files,
        Duties {
            ticks: Some((ticks, heads)),
            pools,
        },
    )
    .await?;
    Ok(ServerStack {
        tree,
        provider,
        kubernetes,
        tokens,
        secrets,
        sources,
        agents: agent_store,
    })
}

/// Makes a server's data directory private to the user Hodei runs as, whatever the umask: the
/// directory and `logs/` 0700, the database (created empty if new, so that SQLite gives its WAL
/// files the same mode) and the files beside it 0600. A directory made by an older Hodei is
/// tightened; the directory's own mode keeps what is deeper from other users.
/// Creates each directory if missing, and gives it its mode whatever the umask.
pub(crate) fn set_dir_modes(dirs: &[(&Path, u32)]) -> std::io::Result<()> {
    use std::fs::{DirBuilder, Permissions, set_permissions};
    use std::os::unix::fs::{DirBuilderExt, PermissionsExt};
    for (dir, mode) in dirs {
        DirBuilder::new().recursive(true).mode(*mode).create(dir)?;
        set_permissions(dir, Permissions::from_mode(*mode))?;
    }
    Ok(())
}

/// Makes the data directory and what is in it the server's user's alone. With `run_as`, the
/// steps' user may pass through the data directory (mode 0711: not list it) to the workspaces
/// (0711 too), and reaches nothing else.
fn make_private(data: &Path, paths: &LocalPaths, run_as: bool) -> std::io::Result<()> {
    use std::fs::{OpenOptions, Permissions, set_permissions};
    use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
    let passable = if run_as { 0o711 } else { 0o700 };
    let mut dirs = vec![
        (data, passable),
        (paths.logs.as_path(), 0o700),
        (paths.files.as_path(), 0o700),
        (paths.docker_workspaces.as_path(), 0o700),
    ];
    if run_as {
        dirs.push((paths.workspaces.as_path(), 0o711));
    }
    if let Some(mirrors) = &paths.mirrors {
        dirs.push((mirrors.as_path(), 0o700));
    }
    set_dir_modes(&dirs)?;
    if let Some(db) = &paths.store {
        OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(db)?;
        let beside = ["-wal", "-shm"].map(|suffix| {
            let mut name = db.as_os_str().to_owned();
            name.push(suffix);
            PathBuf::from(name)
        });
        for file in std::iter::once(db.clone())
            .chain(beside)
            .chain([data.join("admin.token")])
        {
            match set_permissions(&file, Permissions::from_mode(0o600)) {
                Err(err) if err.kind() != std::io::ErrorKind::NotFound => return Err(err),
                _ => {}
            }
        }
    }
    Ok(())
}

async fn open_store(paths: &LocalPaths) -> Result<SqliteStore, String> {
    match &paths.store {
        Some(path) => {
            lock_store(path)?;
            SqliteStore::open(path).await
        }
        None => SqliteStore::memory().await,
    }
    .map_err(|e| format!("cannot open the store: {e}"))
}

/// Takes the store's lock for the life of this process: one Hodei at a time uses a store (a
/// second one would reap the first one's running steps as left by an earlier life). The lock
/// file beside the database (`<store>.lock`) holds the holder's process id; the kernel releases
/// the lock when the process ends, however it ends.
pub fn lock_store(path: &Path) -> Result<(), String> {
    use std::io::{Read, Seek, Write};
    use std::os::fd::AsRawFd;
    use std::os::unix::fs::OpenOptionsExt;
    let lock_path = PathBuf::from(format!("{}.lock", path.display()));
    if let Some(parent) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| format!("cannot create {}: {e}", parent.display()))?;
    }
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(&lock_path)
        .map_err(|e| format!("cannot open {}: {e}", lock_path.display()))?;
    // SAFETY: flock on a file descriptor this function owns; no memory is involved.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0;
    if !locked {
        let mut holder = String::new();
        let _ = file.read_to_string(&mut holder);
        let holder = match holder.trim() {
            "" => "another process".to_owned(),
            pid => format!("another Hodei (pid {pid})"),
        };
        return Err(format!(
            "{} is in use by {holder}: stop it first, or give this one another data directory or store",
            path.display()
        ));
    }
    let _ = file.set_len(0);
    let _ = file.rewind();
    let _ = writeln!(file, "{}", std::process::id());
    // Held until the process ends.
    std::mem::forget(file);
    Ok(())
}

/// Removes the artifacts and caches past their retention now, and then every hour.
fn prune_files(files: Arc<DiskFiles>) {
    actix::spawn(async move {
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            let files = files.clone();
            let pruned =
                tokio::task::spawn_blocking(move || files.prune(std::time::SystemTime::now()))
                    .await;
            if let Ok((runs, caches)) = pruned
                && runs + caches > 0
            {
                tracing::info!(
                    runs,
                    caches,
                    "Removed artifacts and caches past their retention."
                );
            }
        }
    });
}

/// A server's duties beyond running jobs (none for `hodei run`).
#[derive(Default)]
struct Duties {
    /// Where schedules' ticks are claimed, and where their runs take their code.
    ticks: Option<(Arc<dyn TickStore>, Arc<dyn Heads>)>,
    /// The pools of ephemeral workers.
    pools: Option<hodei_actors::pools::PoolSettings>,
}

async fn start_stack(
    record: Record,
    paths: &LocalPaths,
    secrets: Arc<dyn SecretStore>,
    local: Local,
    agents: Option<(Arc<dyn AgentStore>, AgentSettings)>,
    files: Arc<DiskFiles>,
    duties: Duties,
) -> Result<(Tree, Arc<ByImage>, Option<Arc<KubernetesProvider>>), String> {
    let Duties { ticks, pools } = duties;
    let Local {
        labels,
        slots,
        approvals,
        run_as,
        kubernetes,
    } = local;
    let Record {
        store,
        instance,
        logs,
    } = record;
    let mut local = LocalProvider::new(paths.workspaces.clone(), instance.clone());
    if let Some(mirrors) = &paths.mirrors {
        local = local.with_mirrors(mirrors.clone());
    }
    if let Some(user) = run_as {
        local = local.with_run_as(user);
    }
    let local = Arc::new(local);
    // Jobs with an `image` run on the Docker engine (`HODEI_DOCKER_HOST`, by default the local
    // socket); while it does not answer, they wait in the queue.
    let kubernetes = match kubernetes {
        Some(config) => Some(kubernetes_worker(config, &instance).await?),
        None => None,
    };
    let mut docker = DockerConfig::new(paths.docker_workspaces.clone(), instance);
    docker.mirrors = paths.mirrors.clone();
    if let Ok(host) = std::env::var("HODEI_DOCKER_HOST") {
        docker.socket = host;
    }
    let provider = Arc::new(ByImage::new(local.clone(), docker).await);
    let mut worker_providers = std::collections::BTreeMap::new();
    let mut reconcile: Arc<dyn Reconcile> = provider.clone();
    if let Some((kube, _)) = &kubernetes {
        let runs: Arc<dyn Provider> = kube.clone();
        worker_providers.insert(WorkerId(KUBERNETES_WORKER.into()), runs);
        reconcile = Arc::new(ReapAll(vec![provider.clone(), kube.clone()]));
    }
    let ports = Ports {
        store,
        logs,
        provider: provider.clone(),
        worker_providers: Arc::new(worker_providers),
        reconcile,
        clock: Arc::new(SystemClock),
        secrets,
        files,
        faults: Faults::none(),
    };
    // One job per core unless told otherwise.
    let slots =
        slots.unwrap_or_else(|| std::thread::available_parallelism().map_or(2, |n| n.get() as u32));
    let worker = move |engine: bool| WorkerSpec {
        id: WorkerId("local".into()),
        labels: labels
            .iter()
            .filter(|l| **l != Label::docker() && **l != Label::checkout())
            .cloned()
            .chain(engine.then(Label::docker))
            .chain(std::iter::once(Label::checkout()))
            .collect(),
        slots,
        agent: false,
        offline: false,
    };
    let engine = match provider.engine_trouble() {
        None => true,
        Some(trouble) => {
            tracing::warn!(error = %trouble, "Jobs with an image wait until the Docker engine answers.");
            false
        }
    };
    let mut config = TreeConfig::new((slots > 0).then(|| worker(engine)), approvals);
    config.agents = agents;
    config.pools = pools;
    if slots == 0 {
        tracing::info!("The local worker is off: every job runs on an agent.");
    }
    (config.ticks, config.heads) = match ticks {
        Some((ticks, heads)) => (Some(ticks), Some(heads)),
        None => (None, None),
    };
    let worker = Arc::new(worker);
    // Past its restart budget, a failing actor stops Hodei; the steps it runs go first, so that
    // nothing is left running (a run with a store resumes at the next start).
    let exit = exit_on_escalation();
    let steps = provider.clone();
    config.escalation = Arc::new(move |escalated| {
        let (steps, exit) = (steps.clone(), exit.clone());
        actix::spawn(async move {
            steps.stop_all().await;
            exit(escalated)
        });
    });
    let tree = start_tree(ports, config);
    // The worker offers the `docker` label while the engine answers.
    let workers = tree.workers.clone();
    provider.watch(Arc::new(move |trouble| {
        match &trouble {
            None => tracing::warn!("The Docker engine answers again: jobs with an image go on."),
            Some(trouble) => tracing::warn!(error = %trouble, "The Docker engine does not answer: jobs with an image wait in the queue."),
        }
        if slots > 0 {
            workers.do_send(RegisterWorker {
                worker: worker(trouble.is_none()),
                lease: None,
            });
        }
    }));
    let kubernetes = kubernetes.map(|(kube, spec)| {
        offer_kubernetes(&tree, &kube, spec);
        kube
    });
    Ok((tree, provider, kubernetes))
}
