//! `[[pools]]` in `hodei.toml`: pools of ephemeral workers. Each entry is checked here, key by
//! key; a bad one stops the start with the file, the entry (`pools[1].max`), the value and
//! what was expected. `docs/operations.md` lists the keys; `docs/kubernetes.md` explains pools.
//!
//! ```toml
//! [[pools]]
//! name = "linux"
//! provider = "docker"          # or "kubernetes"
//! labels = ["linux", "ephemeral"]
//! image = "hodei:dev"          # an image with Hodei's binary (scripts/hodei-image)
//! resources = { cpu = "2", memory = "2Gi" }
//! max = 4
//! idle_timeout = "2m"
//! network = "ci"               # docker: the network the workers join
//! server_url = "http://hodei:8080"
//! ```

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use hodei_actors::pools::{NewSecret, Pool, PoolSettings};
use hodei_adapters::docker::DockerPool;
use hodei_adapters::pools::WorkerPool;
use hodei_domain::model::{Cpu, Label, Memory, Resources};
use hodei_domain::pools::PoolRule;
use hodei_domain::ports::{AgentStore, Launcher};

/// The engine a pool's workers run on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PoolProvider {
    /// Containers on the Docker engine of the server's machine.
    Docker,
    /// Pods on a Kubernetes cluster.
    Kubernetes,
}

/// A checked `[[pools]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolConfig {
    /// The pool's name: lowercase letters, digits and '-' (it names containers and pods).
    pub name: String,
    pub provider: PoolProvider,
    /// The labels its workers offer; a queued job whose `runs_on` they all satisfy starts one.
    pub labels: Vec<Label>,
    /// The image of its workers: one with Hodei's binary at `/usr/local/bin/hodei`.
    pub image: String,
    /// The CPU and memory each worker gets (limits on Docker, requests and limits on
    /// Kubernetes).
    pub resources: Resources,
    /// The most workers of the pool at once.
    pub max: u32,
    /// How long a started worker waits for a job before it stops.
    pub idle_timeout: Duration,
    /// Docker: the network its containers join (`None`: the engine's default bridge).
    pub network: Option<String>,
    /// Kubernetes: the namespace of its pods (`None`: the client's default namespace).
    pub namespace: Option<String>,
    /// Where its workers reach the server (`None`: the server's `advertise_url`, else
    /// `http://<host name>:<port>`).
    pub server_url: Option<String>,
}

/// A bad `[[pools]]` entry: the file, where in it, the value and what was expected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}: `{at}` is {value}: expected {expected}", path.display())]
pub struct PoolError {
    pub path: PathBuf,
    /// `pools[1].max`, or `pools` for the whole value.
    pub at: String,
    pub value: String,
    pub expected: String,
}

/// The keys of an entry and what each takes.
const KEYS: [(&str, &str); 10] = [
    (
        "name",
        "a pool name of lowercase letters, digits and '-' (at most 40), unique among the pools",
    ),
    ("provider", "\"docker\" or \"kubernetes\""),
    (
        "labels",
        "a non-empty list of worker labels such as [\"linux\", \"gpu\"]",
    ),
    (
        "image",
        "an image with Hodei's binary, such as \"hodei:dev\" (see scripts/hodei-image)",
    ),
    (
        "resources",
        "a table such as { cpu = \"2\", memory = \"2Gi\" } (both optional)",
    ),
    ("max", "a number of workers from 1 to 1000"),
    (
        "idle_timeout",
        "a duration such as \"90s\" or \"5m\", from 1s to 1d (default \"2m\")",
    ),
    (
        "network",
        "the name of a Docker network (provider \"docker\" only)",
    ),
    (
        "namespace",
        "the name of a Kubernetes namespace (provider \"kubernetes\" only)",
    ),
    (
        "server_url",
        "the http:// or https:// URL the workers reach the server at",
    ),
];

fn expected(key: &str) -> &'static str {
    KEYS.iter()
        .find(|(name, _)| *name == key)
        .map_or("", |(_, expected)| expected)
}

/// Checks the value of `pools` in the file `path`: an array of tables.
pub fn parse(path: &Path, value: toml::Value) -> Result<Vec<PoolConfig>, PoolError> {
    let bad = |at: String, value: String, expected: &str| PoolError {
        path: path.to_owned(),
        at,
        value,
        expected: expected.to_owned(),
    };
    let toml::Value::Array(entries) = value else {
        return Err(bad(
            "pools".into(),
            format!("a TOML {}", value.type_str()),
            "an array of tables: [[pools]] entries",
        ));
    };
    let mut pools: Vec<PoolConfig> = Vec::with_capacity(entries.len());
    for (index, entry) in entries.into_iter().enumerate() {
        let toml::Value::Table(table) = entry else {
            return Err(bad(
                format!("pools[{index}]"),
                format!("a TOML {}", entry.type_str()),
                "a table: a [[pools]] entry",
            ));
        };
        let pool = entry_of(path, index, table)?;
        if pools.iter().any(|p| p.name == pool.name) {
            return Err(bad(
                format!("pools[{index}].name"),
                format!("{:?}", pool.name),
                "a name no other pool has",
            ));
        }
        pools.push(pool);
    }
    Ok(pools)
}

fn entry_of(path: &Path, index: usize, table: toml::Table) -> Result<PoolConfig, PoolError> {
    let bad = |key: &str, value: &toml::Value| PoolError {
        path: path.to_owned(),
        at: format!("pools[{index}].{key}"),
        value: show(value),
        expected: expected(key).to_owned(),
    };
    let missing = |key: &str| PoolError {
        path: path.to_owned(),
        at: format!("pools[{index}].{key}"),
        value: "missing".into(),
        expected: expected(key).to_owned(),
    };
    for key in table.keys() {
        if !KEYS.iter().any(|(name, _)| name == key) {
            let names = KEYS.iter().map(|(n, _)| *n);
            let hint = hodei_domain::suggest::did_you_mean(key, names.clone())
                .map(|s| format!(" (did you mean `{s}`?)"))
                .unwrap_or_default();
            return Err(PoolError {
                path: path.to_owned(),
                at: format!("pools[{index}]"),
                value: format!("a table with the unknown key `{key}`{hint}"),
                expected: format!("the keys {}", names.collect::<Vec<_>>().join(", ")),
            });
        }
    }
    let text = |key: &str| -> Result<Option<String>, PoolError> {
        match table.get(key) {
            None => Ok(None),
            Some(toml::Value::String(text)) if !text.trim().is_empty() => {
                Ok(Some(text.trim().to_owned()))
            }
            Some(other) => Err(bad(key, other)),
        }
    };
    let name = text("name")?.ok_or_else(|| missing("name"))?;
    if !pool_name(&name) {
        return Err(bad("name", &toml::Value::String(name)));
    }
    let provider = match text("provider")?.as_deref() {
        Some("docker") => PoolProvider::Docker,
        Some("kubernetes") => PoolProvider::Kubernetes,
        Some(other) => return Err(bad("provider", &toml::Value::String(other.into()))),
        None => return Err(missing("provider")),
    };
    let labels = match table.get("labels") {
        None => return Err(missing("labels")),
        Some(value @ toml::Value::Array(items)) if !items.is_empty() => items
            .iter()
            .map(|item| item.as_str().and_then(|t| t.parse::<Label>().ok()))
            .collect::<Option<Vec<Label>>>()
            .ok_or_else(|| bad("labels", value))?,
        Some(other) => return Err(bad("labels", other)),
    };
    let image = text("image")?.ok_or_else(|| missing("image"))?;
    if image.parse::<hodei_domain::model::Image>().is_err() {
        return Err(bad("image", &toml::Value::String(image)));
    }
    let resources = match table.get("resources") {
        None => Resources::default(),
        Some(value @ toml::Value::Table(inner)) => {
            let fine = inner.keys().all(|k| k == "cpu" || k == "memory");
            let quantity = |key: &str| inner.get(key).map(quantity_text);
            let cpu = quantity("cpu").map(|t| t.and_then(|t| t.parse::<Cpu>().ok()));
            let memory = quantity("memory").map(|t| t.and_then(|t| t.parse::<Memory>().ok()));
            if !fine || cpu == Some(None) || memory == Some(None) {
                return Err(bad("resources", value));
            }
            Resources {
                cpu: cpu.flatten(),
                memory: memory.flatten(),
            }
        }
        Some(other) => return Err(bad("resources", other)),
    };
    let max = match table.get("max") {
        None => return Err(missing("max")),
        Some(toml::Value::Integer(n)) if (1..=1000).contains(n) => *n as u32,
        Some(other) => return Err(bad("max", other)),
    };
    let idle_timeout = match text("idle_timeout")? {
        None => Duration::from_secs(120),
        Some(given) => match given.parse::<hodei_domain::model::Duration>() {
            Ok(d) if d.as_secs() <= 86_400 => d.to_std(),
            _ => return Err(bad("idle_timeout", &toml::Value::String(given))),
        },
    };
    let network = text("network")?;
    let namespace = text("namespace")?;
    match provider {
        PoolProvider::Docker if namespace.is_some() => {
            return Err(bad("namespace", &table["namespace"]));
        }
        PoolProvider::Kubernetes if network.is_some() => {
            return Err(bad("network", &table["network"]));
        }
        _ => {}
    }
    let server_url = match text("server_url")? {
        None => None,
        Some(url) if http_url(&url) => Some(url.trim_end_matches('/').to_owned()),
        Some(url) => return Err(bad("server_url", &toml::Value::String(url))),
    };
    Ok(PoolConfig {
        name,
        provider,
        labels,
        image,
        resources,
        max,
        idle_timeout,
        network,
        namespace,
        server_url,
    })
}

/// A CPU may be written as a number (`cpu = 2`) or as text (`cpu = "500m"`).
fn quantity_text(value: &toml::Value) -> Option<String> {
    match value {
        toml::Value::String(text) => Some(text.clone()),
        toml::Value::Integer(n) => Some(n.to_string()),
        toml::Value::Float(x) => Some(x.to_string()),
        _ => None,
    }
}

fn show(value: &toml::Value) -> String {
    match value {
        toml::Value::String(text) => format!("{text:?}"),
        toml::Value::Integer(n) => n.to_string(),
        other => other.to_string(),
    }
}

/// Lowercase letters, digits and '-', starting with a letter, at most 40: it goes into
/// container and pod names (which add a suffix of their own).
fn pool_name(name: &str) -> bool {
    name.len() <= 40
        && name.starts_with(|c: char| c.is_ascii_lowercase())
        && !name.ends_with('-')
        && name
            .chars()
            .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-')
}

fn http_url(url: &str) -> bool {
    let Some(rest) = url
        .strip_prefix("http://")
        .or_else(|| url.strip_prefix("https://"))
    else {
        return false;
    };
    let host = rest.split('/').next().unwrap_or("");
    !host.is_empty() && !url.chars().any(char::is_whitespace)
}

/// The pools of a server, each with the URL its workers reach the server at.
#[derive(Debug, Clone, Default)]
pub struct Pools {
    entries: Vec<(PoolConfig, String)>,
}

impl Pools {
    /// The pools of the configuration.
    pub fn from_config(config: &crate::config::ServerConfig) -> Pools {
        Pools {
            entries: config
                .pools
                .iter()
                .map(|pool| (pool.clone(), server_url(pool, config)))
                .collect(),
        }
    }

    /// What the worker manager runs: each pool with its launcher (Docker at
    /// `HODEI_DOCKER_HOST` or the local socket; Kubernetes by the kubeconfig or the pod's
    /// service account). `owner` is the store's instance id, which marks the pools' workers.
    /// `None` without pools.
    pub async fn settings(
        &self,
        agents: Arc<dyn AgentStore>,
        owner: &str,
    ) -> Result<Option<PoolSettings>, String> {
        if self.entries.is_empty() {
            return Ok(None);
        }
        let mut pools = Vec::with_capacity(self.entries.len());
        for (config, server_url) in &self.entries {
            let pool = WorkerPool {
                name: config.name.clone(),
                labels: config.labels.clone(),
                image: config.image.clone(),
                resources: config.resources,
                owner: owner.to_owned(),
            };
            let launcher: Arc<dyn Launcher> = match config.provider {
                PoolProvider::Docker => {
                    let socket = std::env::var("HODEI_DOCKER_HOST")
                        .unwrap_or_else(|_| "unix:///var/run/docker.sock".to_owned());
                    let docker = DockerPool {
                        pool,
                        network: config.network.clone(),
                    };
                    Arc::new(
                        hodei_adapters::docker::PoolLauncher::connect(&socket, docker).map_err(
                            |err| {
                                format!("pool {}: cannot use the Docker engine: {err}", config.name)
                            },
                        )?,
                    )
                }
                PoolProvider::Kubernetes => Arc::new(
                    hodei_adapters::kube::PoolLauncher::connect(config.namespace.as_deref(), pool)
                        .await
                        .map_err(|err| format!("pool {}: {err}", config.name))?,
                ),
            };
            // A worker has its idle timeout to take a job, plus the time to start and reach
            // the server.
            // Its workers are agents: they check out repositories as well.
            let mut labels = config.labels.clone();
            if !labels.contains(&Label::checkout()) {
                labels.push(Label::checkout());
            }
            let rule = PoolRule {
                labels,
                max: config.max,
                start_deadline: Duration::from_secs(120),
                idle_deadline: config.idle_timeout + Duration::from_secs(30),
            };
            pools.push(Pool {
                name: config.name.clone(),
                rule,
                launcher,
                server_url: server_url.clone(),
                idle_timeout: config.idle_timeout,
            });
            tracing::info!(pool = %config.name, max = config.max, server = %server_url, "Pool of ephemeral workers ready.");
        }
        let secret: NewSecret = Arc::new(|| hodei_api::auth::generate().map_err(|e| e.to_string()));
        Ok(Some(PoolSettings {
            pools,
            agents,
            secret,
            every: Duration::from_secs(1),
        }))
    }
}

/// Where the workers of `pool` reach the server: its `server_url`, else the server's
/// `advertise_url`, else `http://<host name>:<port>`.
pub fn server_url(pool: &PoolConfig, config: &crate::config::ServerConfig) -> String {
    if let Some(url) = &pool.server_url {
        return url.clone();
    }
    if let Some(url) = &config.replica.advertise_url {
        return url.clone();
    }
    let scheme = if config.tls.is_some() {
        "https"
    } else {
        "http"
    };
    let host = std::fs::read_to_string("/etc/hostname")
        .map(|h| h.trim().to_owned())
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "localhost".to_owned());
    format!("{scheme}://{host}:{}", config.listen.port())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pools(text: &str) -> Result<Vec<PoolConfig>, String> {
        let mut table: toml::Table = text.parse().unwrap();
        parse(Path::new("hodei.toml"), table.remove("pools").unwrap()).map_err(|e| e.to_string())
    }

    #[test]
    fn a_pool_entry_is_read_with_its_defaults() {
        let text = "[[pools]]\nname = \"linux\"\nprovider = \"docker\"\nlabels = [\"linux\", \"ephemeral\"]\nimage = \"hodei:dev\"\nmax = 3\nresources = { cpu = 2, memory = \"1Gi\" }\nnetwork = \"ci\"\n\n[[pools]]\nname = \"gpu\"\nprovider = \"kubernetes\"\nlabels = [\"gpu\"]\nimage = \"registry.example/hodei:1\"\nmax = 1\nidle_timeout = \"5m\"\nnamespace = \"ci\"\nserver_url = \"http://hodei.ci:8080/\"\n";
        let pools = pools(text).unwrap();
        assert_eq!(pools.len(), 2);
        let linux = &pools[0];
        assert_eq!(linux.name, "linux");
        assert_eq!(linux.provider, PoolProvider::Docker);
        assert_eq!(linux.labels.len(), 2);
        assert_eq!(linux.max, 3);
        assert_eq!(linux.idle_timeout, Duration::from_secs(120));
        assert_eq!(linux.resources.cpu.unwrap().millis(), 2000);
        assert_eq!(linux.resources.memory.unwrap().bytes(), 1 << 30);
        assert_eq!(linux.network.as_deref(), Some("ci"));
        let gpu = &pools[1];
        assert_eq!(gpu.provider, PoolProvider::Kubernetes);
        assert_eq!(gpu.idle_timeout, Duration::from_secs(300));
        assert_eq!(gpu.namespace.as_deref(), Some("ci"));
        assert_eq!(gpu.server_url.as_deref(), Some("http://hodei.ci:8080"));
        assert_eq!(gpu.resources, Resources::default());
    }

    #[test]
    fn a_bad_pool_entry_names_the_entry_the_key_the_value_and_what_was_expected() {
        let base = "[[pools]]\nname = \"linux\"\nprovider = \"docker\"\nlabels = [\"linux\"]\nimage = \"hodei:dev\"\nmax = 2\n";
        assert_eq!(
            pools(&base.replace("max = 2", "max = 0")).unwrap_err(),
            "hodei.toml: `pools[0].max` is 0: expected a number of workers from 1 to 1000"
        );
        assert_eq!(
            pools(&base.replace("max = 2\n", "")).unwrap_err(),
            "hodei.toml: `pools[0].max` is missing: expected a number of workers from 1 to 1000"
        );
        assert_eq!(
            pools(&base.replace("\"docker\"", "\"podman\"")).unwrap_err(),
            "hodei.toml: `pools[0].provider` is \"podman\": expected \"docker\" or \"kubernetes\""
        );
        let err = pools(&base.replace("\"linux\"\nprov", "\"Linux Pool\"\nprov")).unwrap_err();
        assert!(
            err.starts_with("hodei.toml: `pools[0].name` is \"Linux Pool\""),
            "{err}"
        );
        let err = pools(&base.replace("[\"linux\"]", "[]")).unwrap_err();
        assert!(err.contains("`pools[0].labels` is []"), "{err}");
        let err = pools(&format!("{base}netwrk = \"ci\"\n")).unwrap_err();
        assert!(
            err.contains("unknown key `netwrk` (did you mean `network`?)"),
            "{err}"
        );
        let err = pools(&format!("{base}idle_timeout = \"soon\"\n")).unwrap_err();
        assert!(err.contains("`pools[0].idle_timeout` is \"soon\""), "{err}");
        let err = pools(&format!("{base}resources = {{ cpu = \"lots\" }}\n")).unwrap_err();
        assert!(err.contains("`pools[0].resources`"), "{err}");
        let err = pools(&format!("{base}namespace = \"ci\"\n")).unwrap_err();
        assert!(
            err.contains("`pools[0].namespace`") && err.contains("\"kubernetes\" only"),
            "{err}"
        );
        let err = pools(&format!("{base}server_url = \"hodei:8080\"\n")).unwrap_err();
        assert!(err.contains("`pools[0].server_url`"), "{err}");
        let err = pools(&format!("{base}{base}")).unwrap_err();
        assert!(
            err.contains("`pools[1].name`") && err.contains("no other pool"),
            "{err}"
        );
        let err = pools("pools = 3\n").unwrap_err();
        assert!(err.contains("`pools` is a TOML integer"), "{err}");
    }
}
