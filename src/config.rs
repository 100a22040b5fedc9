//! The server's configuration: `hodei.toml`, overridden by `HODEI_*` environment variables,
//! overridden by flags. Every value is checked before anything starts; a bad one stops the
//! start with where it came from, the key, the value and what was expected. Unknown keys in
//! the file are refused, with a suggestion for a likely typo.
//!
//! Resolution is a plain function of the file's text, an environment lookup and the flags, so
//! that it is tested without touching the process's environment. `docs/operations.md` lists
//! every key.

use std::fmt;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use hodei_domain::model::Label;

/// The file read when `--config` and `HODEI_CONFIG` are not given, if it exists.
pub const DEFAULT_FILE: &str = "hodei.toml";

/// A checked server configuration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerConfig {
    /// Where the HTTP server listens.
    pub listen: SocketAddr,
    /// Where the server keeps its database, logs, workspaces and admin token.
    pub data: PathBuf,
    /// HTTP worker threads.
    pub http_workers: usize,
    /// The largest request body accepted, in bytes.
    pub max_body_bytes: usize,
    /// The labels of the local worker (this machine).
    pub labels: Vec<Label>,
    /// How long running jobs may go on after SIGTERM before they are stopped.
    pub shutdown_grace: std::time::Duration,
    /// The most jobs that may wait in the queue before new runs are refused.
    pub max_queued_jobs: usize,
    /// The certificate chain and private key (PEM files) to serve HTTPS with; plain HTTP
    /// without.
    pub tls: Option<(PathBuf, PathBuf)>,
    /// How long an agent's lease on a job (and its place as a worker) lasts without a
    /// heartbeat.
    pub agent_lease: std::time::Duration,
    /// Jobs run at once on the server's own machine; 0: none (every job on agents).
    pub local_slots: u32,
    /// The size limits and retention of artifacts and caches.
    pub files: hodei_adapters::files::FileLimits,
    /// The unprivileged user local steps run as (the server then runs as root); `None`: as
    /// the server's own user.
    pub run_as: Option<String>,
    /// Where the record (runs, events, tokens, agents, secrets) and the logs are kept.
    pub database: Database,
    /// How replicas sharing a PostgreSQL database find and follow each other.
    pub replica: ReplicaConfig,
    /// The `[kubernetes]` table: a worker whose jobs run as pods on a cluster; `None` without
    /// one.
    pub kubernetes: Option<crate::kube_config::KubernetesConfig>,
    /// The pools of ephemeral workers (`[[pools]]`, file only; see [`crate::pools`]).
    pub pools: Vec<crate::pools::PoolConfig>,
}

/// The settings of a replica (a server on a PostgreSQL database, which others may share).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    /// This server's name among replicas; `None`: the machine's host name.
    pub node_name: Option<String>,
    /// Where the other replicas reach this one; `None`: `http://<host name>:<port>`.
    pub advertise_url: Option<String>,
    /// How long the leader's lease lasts without a renewal: a dead leader is replaced about
    /// this long after it died.
    pub leader_lease: std::time::Duration,
    /// Whether followers listen to PostgreSQL's notifications to follow logs at once (they
    /// poll every 250 ms as well, and only poll when this is off).
    pub log_notifications: bool,
}

/// Where a server keeps its record and logs.
#[derive(Clone, PartialEq, Eq)]
pub enum Database {
    /// The embedded SQLite database of the data directory (`DIR/hodei.db`) and log files
    /// (`DIR/logs/`): the default.
    Sqlite,
    /// A PostgreSQL database, by URL: the record and the logs.
    Postgres(String),
}

impl fmt::Debug for Database {
    /// Never the password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Database::Sqlite => f.write_str("Sqlite"),
            Database::Postgres(url) => {
                write!(f, "Postgres({})", hodei_adapters::postgres::redact(url))
            }
        }
    }
}

/// One configuration key: its name in the file, its variable, what it takes, its default.
struct Key {
    name: &'static str,
    env: &'static str,
    expected: &'static str,
    default: fn() -> Raw,
}

const KEYS: [Key; 21] = [
    Key {
        name: "listen",
        env: "HODEI_LISTEN",
        expected: "an IP address and port, such as 127.0.0.1:8080 or [::]:8080",
        default: || Raw::Text("127.0.0.1:8080".into()),
    },
    Key {
        name: "data",
        env: "HODEI_DATA",
        expected: "a directory path",
        default: || Raw::Text("hodei-data".into()),
    },
    Key {
        name: "http_workers",
        env: "HODEI_HTTP_WORKERS",
        expected: "a number of threads from 1 to 64",
        default: || Raw::Int(2),
    },
    Key {
        name: "max_body_bytes",
        env: "HODEI_MAX_BODY_BYTES",
        expected: "a number of bytes from 1024 to 67108864 (64 MiB)",
        default: || Raw::Int(1024 * 1024),
    },
    Key {
        name: "labels",
        env: "HODEI_LABELS",
        expected: "a list of worker labels such as [\"linux\", \"docker\"] (in HODEI_LABELS: comma-separated)",
        default: || Raw::List(vec!["local".into(), std::env::consts::OS.into()]),
    },
    Key {
        name: "shutdown_grace_seconds",
        env: "HODEI_SHUTDOWN_GRACE_SECONDS",
        expected: "a number of seconds from 0 to 3600",
        default: || Raw::Int(30),
    },
    Key {
        name: "max_queued_jobs",
        env: "HODEI_MAX_QUEUED_JOBS",
        expected: "a number of jobs from 1 to 10000000",
        default: || Raw::Int(100_000),
    },
    Key {
        name: "tls_cert",
        env: "HODEI_TLS_CERT",
        expected: "the path of a PEM certificate chain, given together with `tls_key`",
        default: || Raw::Text(String::new()),
    },
    Key {
        name: "tls_key",
        env: "HODEI_TLS_KEY",
        expected: "the path of a PEM private key, given together with `tls_cert`",
        default: || Raw::Text(String::new()),
    },
    Key {
        name: "agent_lease_seconds",
        env: "HODEI_AGENT_LEASE_SECONDS",
        expected: "a number of seconds from 1 to 3600",
        default: || Raw::Int(60),
    },
    Key {
        name: "local_slots",
        env: "HODEI_LOCAL_SLOTS",
        expected: "a number of jobs from 0 (the server runs none itself: every job on agents) to 1024",
        default: || Raw::Int(std::thread::available_parallelism().map_or(2, |n| n.get() as i64)),
    },
    Key {
        name: "artifacts_max_job_mib",
        env: "HODEI_ARTIFACTS_MAX_JOB_MIB",
        expected: "a number of MiB from 1 to 1048576 (1 TiB)",
        default: || Raw::Int(1024),
    },
    Key {
        name: "artifacts_retention_days",
        env: "HODEI_ARTIFACTS_RETENTION_DAYS",
        expected: "a number of days from 1 to 3650",
        default: || Raw::Int(30),
    },
    Key {
        name: "caches_max_entry_mib",
        env: "HODEI_CACHES_MAX_ENTRY_MIB",
        expected: "a number of MiB from 1 to 1048576 (1 TiB)",
        default: || Raw::Int(2048),
    },
    Key {
        name: "caches_retention_days",
        env: "HODEI_CACHES_RETENTION_DAYS",
        expected: "a number of days from 1 to 3650",
        default: || Raw::Int(7),
    },
    Key {
        name: "run_as",
        env: "HODEI_RUN_AS",
        expected: "the name or uid of an unprivileged user of this machine, or \"\" (steps run as the server's user)",
        default: || Raw::Text(String::new()),
    },
    Key {
        name: "database_url",
        env: "HODEI_DATABASE_URL",
        expected: "a PostgreSQL URL such as postgres://hodei:PASSWORD@db.example:5432/hodei, or empty for the SQLite database of the data directory",
        default: || Raw::Text(String::new()),
    },
    Key {
        name: "node_name",
        env: "HODEI_NODE_NAME",
        expected: "a name of letters, digits, '.', '-' and '_' (at most 63), or \"\" for the machine's host name",
        default: || Raw::Text(String::new()),
    },
    Key {
        name: "advertise_url",
        env: "HODEI_ADVERTISE_URL",
        expected: "the http:// or https:// URL other replicas reach this server at, such as http://hodei-2:8080, or \"\" for http://<host name>:<port>",
        default: || Raw::Text(String::new()),
    },
    Key {
        name: "leader_lease_ms",
        env: "HODEI_LEADER_LEASE_MS",
        expected: "a number of milliseconds from 500 to 60000",
        default: || Raw::Int(2000),
    },
    Key {
        name: "log_notifications",
        env: "HODEI_LOG_NOTIFICATIONS",
        expected: "true or false",
        default: || Raw::Text("true".into()),
    },
];

/// Variables that start with `HODEI_` but are not configuration keys.
const OTHER_VARIABLES: [&str; 6] = [
    "HODEI_CONFIG",
    "HODEI_BOOTSTRAP_TOKEN",
    "HODEI_BOOTSTRAP_AGENT_TOKEN",
    "HODEI_LOG",
    "HODEI_DOCKER_HOST",
    "HODEI_FAULT",
];

/// A value as given, before it is checked.
#[derive(Debug, Clone, PartialEq)]
enum Raw {
    Text(String),
    Int(i64),
    List(Vec<String>),
    /// A TOML value of another kind (a table, a date, a float, a boolean), described.
    Other(String),
}

impl fmt::Display for Raw {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Raw::Text(text) => write!(f, "{text:?}"),
            Raw::Int(n) => write!(f, "{n}"),
            Raw::List(items) => write!(f, "{items:?}"),
            Raw::Other(text) => f.write_str(text),
        }
    }
}

/// Where a value came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Origin {
    File(PathBuf),
    Env(&'static str),
    Flag(&'static str),
    Default,
}

impl fmt::Display for Origin {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Origin::File(path) => write!(f, "{}", path.display()),
            Origin::Env(name) => write!(f, "environment variable {name}"),
            Origin::Flag(flag) => write!(f, "flag {flag}"),
            Origin::Default => f.write_str("the default"),
        }
    }
}

/// Why the configuration cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read the configuration file {}: {reason}", path.display())]
    Unreadable { path: PathBuf, reason: String },
    #[error("{}: not valid TOML: {reason}", path.display())]
    Syntax { path: PathBuf, reason: String },
    #[error("{}: unknown key `{key}`{}; the keys are {}", path.display(), hint(suggestion), key_names())]
    UnknownKey {
        path: PathBuf,
        key: String,
        suggestion: Option<String>,
    },
    /// A key of a part of Hodei that is planned but not there yet: refused, never ignored.
    #[error("{}: `{key}`: {what} is not supported yet (see {doc})", path.display())]
    NotSupported {
        path: PathBuf,
        key: String,
        what: &'static str,
        doc: &'static str,
    },
    #[error("{origin}: `{key}` is {value}: expected {expected}")]
    Invalid {
        origin: Origin,
        key: &'static str,
        value: String,
        expected: &'static str,
    },
    #[error(transparent)]
    Pool(#[from] crate::pools::PoolError),
}

/// Keys of what is planned but not there yet (key, what, where it is documented): a file that
/// sets one is refused with that, rather than taken for a typo or silently ignored.
const NOT_YET: [(&str, &str, &str); 0] = [];

fn hint(suggestion: &Option<String>) -> String {
    suggestion
        .as_ref()
        .map(|s| format!(" (did you mean `{s}`?)"))
        .unwrap_or_default()
}

fn key_names() -> String {
    KEYS.iter().map(|k| k.name).collect::<Vec<_>>().join(", ")
}

/// The values given by flags.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Flags {
    pub listen: Option<String>,
    pub data: Option<PathBuf>,
    pub database: Option<String>,
}

/// The configuration file to read: `--config`, else `HODEI_CONFIG`, else `hodei.toml` if it
/// exists. `None`: no file, defaults and overrides only.
pub fn file_to_read(
    flag: Option<&Path>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Option<(PathBuf, bool)> {
    if let Some(path) = flag {
        return Some((path.to_owned(), true));
    }
    if let Some(path) = env("HODEI_CONFIG") {
        return Some((PathBuf::from(path), true));
    }
    let default = PathBuf::from(DEFAULT_FILE);
    default.exists().then_some((default, false))
}

/// Unknown `HODEI_*` variables, each with a suggestion if one is close: warned about, since
/// other tools may set variables of that prefix too.
pub fn unknown_variables(names: impl Iterator<Item = String>) -> Vec<(String, Option<String>)> {
    let known: Vec<&str> = KEYS.iter().map(|k| k.env).chain(OTHER_VARIABLES).collect();
    names
        .filter(|name| name.starts_with("HODEI_") && !known.contains(&name.as_str()))
        .map(|name| {
            let suggestion = hodei_domain::suggest::did_you_mean(&name, known.iter().copied());
            (name, suggestion.map(str::to_owned))
        })
        .collect()
}

/// Resolves the configuration from the file's text (if any), the environment and the flags.
pub fn resolve(
    file: Option<(&Path, &str)>,
    env: &dyn Fn(&str) -> Option<String>,
    flags: &Flags,
) -> Result<ServerConfig, ConfigError> {
    let mut given: Vec<(Raw, Origin)> = KEYS
        .iter()
        .map(|key| ((key.default)(), Origin::Default))
        .collect();
    let mut kubernetes = None;
    let mut pools = Vec::new();
    if let Some((path, text)) = file {
        let table: toml::Table =
            text.parse()
                .map_err(|err: toml::de::Error| ConfigError::Syntax {
                    path: path.to_owned(),
                    reason: err.to_string().trim_end().to_owned(),
                })?;
        for (name, value) in table {
            // A table of its own, read by its own module.
            if name == "kubernetes" {
                kubernetes = Some(crate::kube_config::parse(path, value)?);
                continue;
            }
            if let Some((_, what, doc)) = NOT_YET.iter().find(|(key, ..)| *key == name) {
                return Err(ConfigError::NotSupported {
                    path: path.to_owned(),
                    key: name,
                    what,
                    doc,
                });
            }
            if name == "pools" {
                pools = crate::pools::parse(path, value)?;
                continue;
            }
            let Some(index) = KEYS.iter().position(|k| k.name == name) else {
                let suggestion =
                    hodei_domain::suggest::did_you_mean(&name, KEYS.iter().map(|k| k.name));
                return Err(ConfigError::UnknownKey {
                    path: path.to_owned(),
                    suggestion: suggestion.map(str::to_owned),
                    key: name,
                });
            };
            given[index] = (from_toml(value), Origin::File(path.to_owned()));
        }
    }
    for (index, key) in KEYS.iter().enumerate() {
        if let Some(value) = env(key.env) {
            let raw = match key.name {
                "labels" => Raw::List(
                    value
                        .split(',')
                        .map(|l| l.trim().to_owned())
                        .filter(|l| !l.is_empty())
                        .collect(),
                ),
                _ => Raw::Text(value),
            };
            given[index] = (raw, Origin::Env(key.env));
        }
    }
    if let Some(listen) = &flags.listen {
        given[0] = (Raw::Text(listen.clone()), Origin::Flag("--listen"));
    }
    if let Some(data) = &flags.data {
        let data = Raw::Text(data.to_string_lossy().into_owned());
        given[1] = (data, Origin::Flag("--data"));
    }
    if let Some(url) = &flags.database {
        given[16] = (Raw::Text(url.clone()), Origin::Flag("--database"));
    }
    let value = |index: usize| (&given[index].0, &given[index].1, &KEYS[index]);
    Ok(ServerConfig {
        listen: parse_text(value(0), |t| t.parse::<SocketAddr>().ok())?,
        data: parse_text(value(1), |t| (!t.is_empty()).then(|| PathBuf::from(t)))?,
        http_workers: parse_number(value(2), 1, 64)?,
        max_body_bytes: parse_number(value(3), 1024, 64 * 1024 * 1024)?,
        labels: parse_labels(value(4))?,
        shutdown_grace: std::time::Duration::from_secs(parse_number(value(5), 0, 3600)? as u64),
        max_queued_jobs: parse_number(value(6), 1, 10_000_000)?,
        tls: {
            // A relative path in the file is relative to the file's directory (where the
            // certificates usually sit beside it); one from a variable, to the working directory.
            let path = |index: usize| match (&given[index].0, &given[index].1) {
                (Raw::Text(text), _) if text.trim().is_empty() => Ok(None),
                (Raw::Text(text), Origin::File(file)) => Ok(Some(beside(file, text.trim()))),
                (Raw::Text(text), _) => Ok(Some(PathBuf::from(text.trim()))),
                (other, origin) => Err(invalid(other, origin, &KEYS[index])),
            };
            match (path(7)?, path(8)?) {
                (Some(cert), Some(key)) => Some((cert, key)),
                (None, None) => None,
                // One without the other: the missing one is what is wrong.
                (Some(_), None) => return Err(invalid(&given[8].0, &given[8].1, &KEYS[8])),
                (None, Some(_)) => return Err(invalid(&given[7].0, &given[7].1, &KEYS[7])),
            }
        },
        agent_lease: std::time::Duration::from_secs(parse_number(value(9), 1, 3600)? as u64),
        local_slots: parse_number(value(10), 0, 1024)? as u32,
        files: {
            const MIB: u64 = 1 << 20;
            let days = |n: usize| std::time::Duration::from_secs(n as u64 * 24 * 3600);
            hodei_adapters::files::FileLimits {
                artifacts_per_job: parse_number(value(11), 1, 1 << 20)? as u64 * MIB,
                artifact_retention: days(parse_number(value(12), 1, 3650)?),
                cache_entry: parse_number(value(13), 1, 1 << 20)? as u64 * MIB,
                cache_retention: days(parse_number(value(14), 1, 3650)?),
            }
        },
        run_as: match value(15) {
            (Raw::Text(text), _, _) if text.trim().is_empty() => None,
            (Raw::Text(text), _, _) => Some(text.trim().to_owned()),
            (Raw::Int(n), _, _) if *n > 0 => Some(n.to_string()),
            (raw, origin, key) => return Err(invalid(raw, origin, key)),
        },
        database: parse_database(value(16))?,
        replica: ReplicaConfig {
            node_name: parse_text(value(17), |t| {
                let fine = t.len() <= 63
                    && t.chars()
                        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_'));
                fine.then(|| (!t.is_empty()).then(|| t.to_owned()))
            })?,
            advertise_url: parse_text(value(18), |t| {
                if t.is_empty() {
                    return Some(None);
                }
                let rest = t
                    .strip_prefix("http://")
                    .or_else(|| t.strip_prefix("https://"))?;
                let host = rest.split('/').next().unwrap_or("");
                (!host.is_empty() && !t.chars().any(char::is_whitespace))
                    .then(|| Some(t.trim_end_matches('/').to_owned()))
            })?,
            leader_lease: std::time::Duration::from_millis(
                parse_number(value(19), 500, 60_000)? as u64
            ),
            log_notifications: match value(20) {
                (Raw::Text(text), origin, key) => match text.trim() {
                    "true" | "on" | "1" => true,
                    "false" | "off" | "0" => false,
                    _ => return Err(invalid(&Raw::Text(text.clone()), origin, key)),
                },
                (Raw::Other(kind), _, _) if kind == "a TOML boolean true" => true,
                (Raw::Other(kind), _, _) if kind == "a TOML boolean false" => false,
                (raw, origin, key) => return Err(invalid(raw, origin, key)),
            },
        },
        kubernetes,
        pools,
    })
}

/// `database_url`: empty for SQLite, or a PostgreSQL URL. A refused value is shown without
/// its password.
fn parse_database((raw, origin, key): (&Raw, &Origin, &Key)) -> Result<Database, ConfigError> {
    match raw {
        Raw::Text(text) if text.trim().is_empty() => Ok(Database::Sqlite),
        Raw::Text(text) if hodei_adapters::postgres::is_postgres_url(text) => {
            Ok(Database::Postgres(text.trim().to_owned()))
        }
        Raw::Text(text) => Err(ConfigError::Invalid {
            origin: origin.clone(),
            key: key.name,
            value: format!("{:?}", hodei_adapters::postgres::redact(text)),
            expected: key.expected,
        }),
        other => Err(invalid(other, origin, key)),
    }
}

/// `path` as written in the configuration file `file`: a relative one is taken from the file's
/// directory.
pub(crate) fn beside(file: &Path, path: &str) -> PathBuf {
    let path = Path::new(path);
    match file.parent() {
        Some(dir) if path.is_relative() => dir.join(path),
        _ => path.to_owned(),
    }
}

fn from_toml(value: toml::Value) -> Raw {
    match value {
        toml::Value::String(text) => Raw::Text(text),
        toml::Value::Integer(n) => Raw::Int(n),
        toml::Value::Array(items) => {
            let texts: Option<Vec<String>> = items
                .iter()
                .map(|v| v.as_str().map(str::to_owned))
                .collect();
            match texts {
                Some(texts) => Raw::List(texts),
                None => Raw::Other("an array with values that are not strings".into()),
            }
        }
        toml::Value::Boolean(b) => Raw::Other(format!("a TOML boolean {b}")),
        other => Raw::Other(format!("a TOML {}", other.type_str())),
    }
}

fn invalid(raw: &Raw, origin: &Origin, key: &Key) -> ConfigError {
    ConfigError::Invalid {
        origin: origin.clone(),
        key: key.name,
        value: raw.to_string(),
        expected: key.expected,
    }
}

fn parse_text<T>(
    (raw, origin, key): (&Raw, &Origin, &Key),
    parse: impl Fn(&str) -> Option<T>,
) -> Result<T, ConfigError> {
    match raw {
        Raw::Text(text) => parse(text.trim()).ok_or_else(|| invalid(raw, origin, key)),
        _ => Err(invalid(raw, origin, key)),
    }
}

fn parse_number(
    (raw, origin, key): (&Raw, &Origin, &Key),
    min: usize,
    max: usize,
) -> Result<usize, ConfigError> {
    let n = match raw {
        Raw::Int(n) => usize::try_from(*n).ok(),
        Raw::Text(text) => text.trim().parse::<usize>().ok(),
        _ => None,
    };
    n.filter(|n| (min..=max).contains(n))
        .ok_or_else(|| invalid(raw, origin, key))
}

fn parse_labels((raw, origin, key): (&Raw, &Origin, &Key)) -> Result<Vec<Label>, ConfigError> {
    let Raw::List(items) = raw else {
        return Err(invalid(raw, origin, key));
    };
    items
        .iter()
        .map(|item| {
            item.parse::<Label>().map_err(|_| ConfigError::Invalid {
                origin: origin.clone(),
                key: key.name,
                value: format!("{raw} (the label {item:?})"),
                expected: key.expected,
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_env(_: &str) -> Option<String> {
        None
    }

    fn file(text: &str) -> Option<(&'static Path, &str)> {
        Some((Path::new("hodei.toml"), text))
    }

    #[test]
    fn relative_certificate_paths_in_the_file_are_taken_from_its_directory() {
        let text = "tls_cert = \"certs/server.pem\"\ntls_key = \"/etc/hodei/server.key\"\n";
        let path = Path::new("/etc/hodei/hodei.toml");
        let config = resolve(Some((path, text)), &no_env, &Flags::default()).unwrap();
        assert_eq!(
            config.tls,
            Some((
                PathBuf::from("/etc/hodei/certs/server.pem"),
                PathBuf::from("/etc/hodei/server.key")
            ))
        );
        // A file named without a directory: its directory is the working directory.
        let config = resolve(file(text), &no_env, &Flags::default()).unwrap();
        assert_eq!(config.tls.unwrap().0, PathBuf::from("certs/server.pem"));
        // A variable's relative path stays relative to the working directory.
        let env = |name: &str| match name {
            "HODEI_TLS_CERT" => Some("server.pem".to_owned()),
            _ => None,
        };
        let config = resolve(Some((path, text)), &env, &Flags::default()).unwrap();
        assert_eq!(config.tls.unwrap().0, PathBuf::from("server.pem"));
    }

    #[test]
    fn defaults_apply_without_a_file_variables_or_flags() {
        let config = resolve(None, &no_env, &Flags::default()).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(config.data, PathBuf::from("hodei-data"));
        assert_eq!(config.http_workers, 2);
        assert_eq!(config.max_body_bytes, 1024 * 1024);
        assert_eq!(config.labels[0].to_string(), "local");
    }

    #[test]
    fn variables_override_the_file_and_flags_override_variables() {
        let text = "listen = \"0.0.0.0:9000\"\ndata = \"/srv/a\"\nhttp_workers = 4\n";
        let env = |name: &str| match name {
            "HODEI_LISTEN" => Some("127.0.0.1:9001".to_owned()),
            "HODEI_DATA" => Some("/srv/b".to_owned()),
            "HODEI_LABELS" => Some("linux, gpu".to_owned()),
            _ => None,
        };
        let flags = Flags {
            listen: Some("127.0.0.1:9002".into()),
            data: None,
            database: None,
        };
        let config = resolve(file(text), &env, &flags).unwrap();
        assert_eq!(config.listen.to_string(), "127.0.0.1:9002");
        assert_eq!(config.data, PathBuf::from("/srv/b"));
        assert_eq!(config.http_workers, 4);
        let labels: Vec<String> = config.labels.iter().map(ToString::to_string).collect();
        assert_eq!(labels, ["linux", "gpu"]);
    }

    #[test]
    fn replica_settings_have_defaults_and_refuse_what_cannot_work() {
        let config = resolve(None, &no_env, &Flags::default()).unwrap();
        assert_eq!(
            config.replica,
            ReplicaConfig {
                node_name: None,
                advertise_url: None,
                leader_lease: std::time::Duration::from_secs(2),
                log_notifications: true,
            }
        );
        let text = "node_name = \"hodei-2\"\nadvertise_url = \"http://hodei-2:8080/\"\nleader_lease_ms = 5000\nlog_notifications = false\n";
        let config = resolve(file(text), &no_env, &Flags::default()).unwrap();
        assert_eq!(config.replica.node_name.as_deref(), Some("hodei-2"));
        assert_eq!(
            config.replica.advertise_url.as_deref(),
            Some("http://hodei-2:8080")
        );
        assert_eq!(config.replica.leader_lease.as_millis(), 5000);
        assert!(!config.replica.log_notifications);
        let env = |name: &str| (name == "HODEI_LOG_NOTIFICATIONS").then(|| "off".to_owned());
        assert!(
            !resolve(None, &env, &Flags::default())
                .unwrap()
                .replica
                .log_notifications
        );
        for (text, key) in [
            ("node_name = \"has space\"\n", "`node_name`"),
            ("advertise_url = \"hodei-2:8080\"\n", "`advertise_url`"),
            ("advertise_url = \"http://\"\n", "`advertise_url`"),
            ("leader_lease_ms = 100\n", "`leader_lease_ms`"),
            ("log_notifications = \"maybe\"\n", "`log_notifications`"),
        ] {
            let err = resolve(file(text), &no_env, &Flags::default())
                .unwrap_err()
                .to_string();
            assert!(err.contains(key) && err.contains("expected"), "{err}");
        }
    }

    #[test]
    fn the_database_is_sqlite_by_default_and_postgres_by_url_from_file_variable_or_flag() {
        let config = resolve(None, &no_env, &Flags::default()).unwrap();
        assert_eq!(config.database, Database::Sqlite);
        let text = "database_url = \"postgres://hodei:s3cret@db/hodei\"\n";
        let config = resolve(file(text), &no_env, &Flags::default()).unwrap();
        assert_eq!(
            config.database,
            Database::Postgres("postgres://hodei:s3cret@db/hodei".into())
        );
        assert_eq!(
            format!("{:?}", config.database),
            "Postgres(postgres://hodei:***@db/hodei)",
            "never the password"
        );
        let env = |name: &str| {
            (name == "HODEI_DATABASE_URL").then(|| "postgresql://other/hodei".to_owned())
        };
        let config = resolve(file(text), &env, &Flags::default()).unwrap();
        assert_eq!(
            config.database,
            Database::Postgres("postgresql://other/hodei".into())
        );
        let flags = Flags {
            database: Some("postgres://flag/hodei".into()),
            ..Flags::default()
        };
        let config = resolve(file(text), &env, &flags).unwrap();
        assert_eq!(
            config.database,
            Database::Postgres("postgres://flag/hodei".into())
        );
        let err = resolve(
            file("database_url = \"mysql://root:hunter2@db/hodei\"\n"),
            &no_env,
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(
            err.contains("`database_url`") && err.contains("PostgreSQL URL"),
            "{err}"
        );
        assert!(!err.contains("hunter2"), "the password is not shown: {err}");
    }

    #[test]
    fn a_bad_value_names_its_origin_key_value_and_what_was_expected() {
        let err = resolve(file("listen = \"localhost\"\n"), &no_env, &Flags::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "hodei.toml: `listen` is \"localhost\": expected an IP address and port, such as 127.0.0.1:8080 or [::]:8080"
        );
        let env = |name: &str| (name == "HODEI_HTTP_WORKERS").then(|| "0".to_owned());
        let err = resolve(None, &env, &Flags::default())
            .unwrap_err()
            .to_string();
        assert_eq!(
            err,
            "environment variable HODEI_HTTP_WORKERS: `http_workers` is \"0\": expected a number of threads from 1 to 64"
        );
        let err = resolve(
            file("max_body_bytes = \"big\"\n"),
            &no_env,
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("`max_body_bytes` is \"big\""), "{err}");
        let err = resolve(
            file("labels = [\"has space\"]\n"),
            &no_env,
            &Flags::default(),
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("the label \"has space\""), "{err}");
        let err = resolve(file("labels = \"linux\"\n"), &no_env, &Flags::default())
            .unwrap_err()
            .to_string();
        assert!(err.contains("expected a list of worker labels"), "{err}");
        let flags = Flags {
            listen: Some("nowhere".into()),
            ..Flags::default()
        };
        let err = resolve(None, &no_env, &flags).unwrap_err().to_string();
        assert!(
            err.starts_with("flag --listen: `listen` is \"nowhere\""),
            "{err}"
        );
    }

    #[test]
    fn a_pool_entry_is_read_by_its_own_rules() {
        // Pools are read (by `crate::pools`): a bad entry is refused with where it is.
        let text = "[[pools]]\nname = \"gpu\"\n";
        let err = resolve(
            Some((Path::new("hodei.toml"), text)),
            &|_| None,
            &Flags::default(),
        )
        .expect_err("refused");
        assert_eq!(
            err.to_string(),
            "hodei.toml: `pools[0].provider` is missing: expected \"docker\" or \"kubernetes\""
        );
    }

    #[test]
    fn a_kubernetes_table_is_read_by_its_own_rules() {
        let config = resolve(None, &no_env, &Flags::default()).unwrap();
        assert_eq!(config.kubernetes, None);
        let text =
            "listen = \"127.0.0.1:9000\"\n[kubernetes]\nimage = \"hodei:1\"\nnamespace = \"ci\"\n";
        let config = resolve(file(text), &no_env, &Flags::default()).unwrap();
        let kubernetes = config.kubernetes.expect("a [kubernetes] table");
        assert_eq!(kubernetes.namespace, "ci");
        assert_eq!(kubernetes.image, "hodei:1");
        let text = "[kubernetes]\nnamespace = \"ci\"\n";
        let err = resolve(file(text), &no_env, &Flags::default()).unwrap_err();
        assert!(
            err.to_string()
                .starts_with("hodei.toml: `kubernetes.image` is missing: expected Hodei's image"),
            "{err}"
        );
    }

    #[test]
    fn unknown_keys_are_refused_with_a_suggestion() {
        let err = resolve(file("lisen = \"x\"\n"), &no_env, &Flags::default()).unwrap_err();
        assert_eq!(
            err.to_string(),
            "hodei.toml: unknown key `lisen` (did you mean `listen`?); the keys are listen, data, http_workers, max_body_bytes, labels, shutdown_grace_seconds, max_queued_jobs, tls_cert, tls_key, agent_lease_seconds, local_slots, artifacts_max_job_mib, artifacts_retention_days, caches_max_entry_mib, caches_retention_days, run_as, database_url, node_name, advertise_url, leader_lease_ms, log_notifications"
        );
        let err = resolve(file("listen = \n"), &no_env, &Flags::default()).unwrap_err();
        assert!(matches!(err, ConfigError::Syntax { .. }), "{err}");
    }

    #[test]
    fn unknown_hodei_variables_are_reported_with_a_suggestion() {
        let names = ["HODEI_LISTN", "HODEI_LOG", "PATH", "HODEI_WHATEVER_ELSE"];
        let unknown = unknown_variables(names.iter().map(|n| (*n).to_owned()));
        assert_eq!(
            unknown,
            [
                ("HODEI_LISTN".to_owned(), Some("HODEI_LISTEN".to_owned())),
                ("HODEI_WHATEVER_ELSE".to_owned(), None),
            ]
        );
    }
}
