//! Contexts: named servers with their tokens, in `~/.config/hodei/config.toml` (mode 0600), and
//! how the server a command talks to is chosen: `--context`, else the current context; then
//! `HODEI_URL` and `HODEI_TOKEN` override its URL and token.
//!
//! ```toml
//! current = "prod"
//!
//! [contexts.prod]
//! url = "https://ci.example.com:8443"
//! token = "hodei_…"
//! ca_cert = "/etc/hodei/ca.pem"   # optional: a CA to trust besides the system's
//! ```

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use hodei_api::client::Target;
use serde::{Deserialize, Serialize};

/// One server and how to log in to it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Context {
    pub url: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub ca_cert: Option<PathBuf>,
}

/// The file's content.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current: Option<String>,
    #[serde(default)]
    pub contexts: BTreeMap<String, Context>,
}

/// Why no server can be chosen, or the file cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ContextError {
    #[error("cannot read {}: {source}", path.display())]
    Read {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("{}: {reason}", path.display())]
    Invalid { path: PathBuf, reason: String },
    #[error("cannot write {}: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("no context named `{name}` in {} (known: {known}); log in with `hodei login URL --name {name}`", path.display())]
    Unknown {
        name: String,
        path: PathBuf,
        known: String,
    },
    #[error(
        "no server is configured: log in with `hodei login URL --token TOKEN`, or set HODEI_URL and HODEI_TOKEN"
    )]
    NoServer,
}

/// Where the contexts live: `$HODEI_CONFIG`, else `$XDG_CONFIG_HOME/hodei/config.toml`, else
/// `~/.config/hodei/config.toml`.
pub fn path() -> PathBuf {
    if let Some(path) = std::env::var_os("HODEI_CONFIG").filter(|p| !p.is_empty()) {
        return PathBuf::from(path);
    }
    let base = std::env::var_os("XDG_CONFIG_HOME")
        .filter(|p| !p.is_empty())
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|home| PathBuf::from(home).join(".config")))
        .unwrap_or_else(|| PathBuf::from("."));
    base.join("hodei").join("config.toml")
}

impl Config {
    /// Reads the file; a missing file is an empty configuration.
    pub fn load(path: &Path) -> Result<Config, ContextError> {
        let text = match std::fs::read_to_string(path) {
            Ok(text) => text,
            Err(err) if err.kind() == std::io::ErrorKind::NotFound => return Ok(Config::default()),
            Err(source) => {
                return Err(ContextError::Read {
                    path: path.to_owned(),
                    source,
                });
            }
        };
        toml::from_str(&text).map_err(|err| ContextError::Invalid {
            path: path.to_owned(),
            reason: err.to_string().trim_end().to_owned(),
        })
    }

    /// Writes the file readable by its owner only (it holds tokens), replacing it whole.
    pub fn save(&self, path: &Path) -> Result<(), ContextError> {
        let write = |source| ContextError::Write {
            path: path.to_owned(),
            source,
        };
        let text = toml::to_string(self).map_err(|err| write(std::io::Error::other(err)))?;
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(write)?;
        }
        let temp = path.with_extension("toml.tmp");
        let mut file = crate::cli::create_private(&temp).map_err(write)?;
        file.write_all(text.as_bytes()).map_err(write)?;
        file.sync_all().map_err(write)?;
        std::fs::rename(&temp, path).map_err(write)
    }

    /// The server to talk to: the context named `name` (else the current one), with
    /// `HODEI_URL` and `HODEI_TOKEN` (from `env`) over its URL and token.
    pub fn target(
        &self,
        name: Option<&str>,
        env: impl Fn(&str) -> Option<String>,
        path: &Path,
    ) -> Result<Target, ContextError> {
        let chosen = match name.or(self.current.as_deref()) {
            Some(name) => match self.contexts.get(name) {
                Some(context) => Some(context),
                None => {
                    return Err(ContextError::Unknown {
                        name: name.to_owned(),
                        path: path.to_owned(),
                        known: match self.contexts.is_empty() {
                            true => "none".to_owned(),
                            false => self.contexts.keys().cloned().collect::<Vec<_>>().join(", "),
                        },
                    });
                }
            },
            None => None,
        };
        let url = env("HODEI_URL")
            .filter(|u| !u.is_empty())
            .or_else(|| chosen.map(|c| c.url.clone()))
            .ok_or(ContextError::NoServer)?;
        let token = env("HODEI_TOKEN")
            .filter(|t| !t.is_empty())
            .or_else(|| chosen.and_then(|c| c.token.clone()));
        let mut target = Target::new(&url, token);
        target.ca_cert = chosen.and_then(|c| c.ca_cert.clone());
        Ok(target)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> Config {
        let mut config = Config {
            current: Some("dev".into()),
            ..Config::default()
        };
        for (name, url) in [
            ("dev", "http://127.0.0.1:8080"),
            ("prod", "https://ci:8443"),
        ] {
            config.contexts.insert(
                name.into(),
                Context {
                    url: url.into(),
                    token: Some(format!("{name}-token")),
                    ca_cert: None,
                },
            );
        }
        config
    }

    #[test]
    fn the_flag_beats_the_current_context_and_the_environment_beats_both() {
        let path = Path::new("c.toml");
        let none = |_: &str| None;
        let t = config().target(None, none, path).unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_deref()),
            ("http://127.0.0.1:8080", Some("dev-token"))
        );
        let t = config().target(Some("prod"), none, path).unwrap();
        assert_eq!(t.token.as_deref(), Some("prod-token"));
        let env = |k: &str| (k == "HODEI_TOKEN").then(|| "env-token".to_owned());
        let t = config().target(Some("prod"), env, path).unwrap();
        assert_eq!(
            (t.url.as_str(), t.token.as_deref()),
            ("https://ci:8443", Some("env-token"))
        );
        let env = |k: &str| (k == "HODEI_URL").then(|| "http://other:1".to_owned());
        let t = Config::default().target(None, env, path).unwrap();
        assert_eq!((t.url.as_str(), t.token), ("http://other:1", None));
    }

    #[test]
    fn an_unknown_context_names_the_known_ones_and_no_server_says_how_to_log_in() {
        let path = Path::new("c.toml");
        let err = config().target(Some("stage"), |_| None, path).unwrap_err();
        assert!(err.to_string().contains("known: dev, prod"), "{err}");
        let err = Config::default().target(None, |_| None, path).unwrap_err();
        assert!(err.to_string().contains("hodei login URL"), "{err}");
    }

    #[test]
    fn the_file_round_trips_with_mode_0600() {
        use std::os::unix::fs::PermissionsExt;
        let dir = std::env::temp_dir().join(format!("hodei-ctx-{}", std::process::id()));
        let path = dir.join("sub").join("config.toml");
        config().save(&path).unwrap();
        assert_eq!(Config::load(&path).unwrap(), config());
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        std::fs::write(&path, "curent = 1\n").unwrap();
        let err = Config::load(&path).unwrap_err().to_string();
        assert!(err.contains("curent"), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}
