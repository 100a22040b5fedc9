//! Bare mirrors of repositories, with the `git` command: fetched when a webhook names a commit,
//! read at that commit (the pipeline file, the changed paths), cloned from into workspaces.
//!
//! ## Guarantees
//! - Credentials reach `git` only through its environment (`GIT_CONFIG_*` setting
//!   `http.extraHeader`), never its arguments, so no process list and no error shows them;
//!   `git` never prompts (`GIT_TERMINAL_PROMPT=0`) and reads no system or user configuration.
//! - Fetches of one repository are serialised (one lock per mirror); other repositories fetch
//!   at the same time.
//!
//! ## Errors
//! [`MirrorError::Git`] with what was being done and `git`'s own message.

mod checkout;
mod heads;

pub use checkout::{Objects, check_out, fill_workspace};
pub use heads::RepoHeads;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use hodei_domain::forge::Forge;
use hodei_domain::ports::{BoxFuture, MirrorError, MirrorSource, Mirrors};
use tokio::process::Command;

/// The mirrors of a data directory: `DIR/<repository>.git`, bare.
pub struct GitMirrors {
    dir: PathBuf,
    locks: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
}

impl GitMirrors {
    pub fn new(dir: PathBuf) -> GitMirrors {
        GitMirrors {
            dir,
            locks: Mutex::default(),
        }
    }

    /// Where the mirror of `repository` is.
    pub fn path(&self, repository: &str) -> PathBuf {
        self.dir.join(format!("{repository}.git"))
    }

    fn lock(&self, repository: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.locks.lock().unwrap_or_else(|e| e.into_inner());
        locks.entry(repository.to_owned()).or_default().clone()
    }
}

/// The environment that hands `git` the credentials, as HTTP basic authentication.
pub fn credential_env(forge: Forge, credentials: Option<&str>) -> Vec<(String, String)> {
    let Some(credentials) = credentials else {
        return Vec::new();
    };
    let pair = match credentials.split_once(':') {
        Some(_) => credentials.to_owned(),
        // A bare token: the user name each forge takes with one.
        None => {
            let user = match forge {
                Forge::GitHub => "x-access-token",
                Forge::GitLab => "oauth2",
                Forge::Gitea => "hodei",
            };
            format!("{user}:{credentials}")
        }
    };
    let header = format!(
        "Authorization: Basic {}",
        base64::engine::general_purpose::STANDARD.encode(pair)
    );
    vec![
        ("GIT_CONFIG_COUNT".into(), "1".into()),
        ("GIT_CONFIG_KEY_0".into(), "http.extraHeader".into()),
        ("GIT_CONFIG_VALUE_0".into(), header),
    ]
}

/// Runs `git` with `args` in a clean environment plus `env`; answers its standard output.
pub async fn git(
    repository: &str,
    doing: &'static str,
    cwd: Option<&Path>,
    args: &[&str],
    env: &[(String, String)],
) -> Result<Vec<u8>, MirrorError> {
    let mut command = Command::new("git");
    command
        .args(args)
        .env_clear()
        .env("PATH", std::env::var_os("PATH").unwrap_or_default())
        .env("GIT_TERMINAL_PROMPT", "0")
        .env("GIT_CONFIG_NOSYSTEM", "1")
        .env("GIT_CONFIG_GLOBAL", "/dev/null")
        .env("GIT_ASKPASS", "/bin/false")
        .env("LC_ALL", "C")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true);
    if let Some(cwd) = cwd {
        command.current_dir(cwd);
    }
    let failed = |reason: String| MirrorError::Git {
        repository: repository.to_owned(),
        doing,
        reason,
    };
    let out = command
        .output()
        .await
        .map_err(|err| failed(format!("cannot run `git`: {err} (install Debian's git)")))?;
    if !out.status.success() {
        let stderr = String::from_utf8_lossy(&out.stderr);
        return Err(failed(format!(
            "`git {}` failed ({}): {}",
            args.first().unwrap_or(&""),
            out.status,
            stderr.trim()
        )));
    }
    Ok(out.stdout)
}

/// Whether `text` is an object id (a full SHA-1 or SHA-256 in hex).
fn is_object_id(text: &str) -> bool {
    matches!(text.len(), 40 | 64) && text.bytes().all(|b| b.is_ascii_hexdigit())
}

impl Mirrors for GitMirrors {
    fn fetch<'a>(
        &'a self,
        source: &'a MirrorSource,
        wanted: &'a [String],
    ) -> BoxFuture<'a, Result<(), MirrorError>> {
        Box::pin(async move {
            let repo = source.repository.as_str();
            let lock = self.lock(repo);
            let _held = lock.lock().await;
            let path = self.path(repo);
            let path_text = path.to_string_lossy().into_owned();
            if !path.join("HEAD").exists() {
                std::fs::create_dir_all(&self.dir).map_err(|err| MirrorError::Git {
                    repository: repo.to_owned(),
                    doing: "create the mirror",
                    reason: format!("{}: {err}", self.dir.display()),
                })?;
                git(
                    repo,
                    "create the mirror",
                    None,
                    &["init", "--bare", "--quiet", &path_text],
                    &[],
                )
                .await?;
            }
            let env = credential_env(source.forge, source.credentials.as_deref());
            // Nothing is fetched when every commit asked for is here already (a delivery sent
            // again, a second pipeline of one push). Otherwise refs are fetched to the same
            // name, and a commit by its id (the forge's server must allow it) when missing.
            let mut specs: Vec<String> = Vec::new();
            let mut missing = false;
            for want in wanted {
                if is_object_id(want) {
                    let have = git(
                        repo,
                        "look up a commit",
                        Some(&path),
                        &["cat-file", "-e", &format!("{want}^{{commit}}")],
                        &[],
                    )
                    .await;
                    if have.is_err() {
                        missing = true;
                        specs.push(want.clone());
                    }
                } else {
                    specs.push(format!("+{want}:{want}"));
                }
            }
            if specs.is_empty() || (!missing && wanted.iter().any(|w| is_object_id(w))) {
                return Ok(());
            }
            let mut args = vec![
                "fetch",
                "--quiet",
                "--no-tags",
                "--no-write-fetch-head",
                source.url.as_str(),
            ];
            args.extend(specs.iter().map(String::as_str));
            git(repo, "fetch", Some(&path), &args, &env).await.map(drop)
        })
    }

    fn read_file<'a>(
        &'a self,
        repository: &'a str,
        commit: &'a str,
        path: &'a str,
    ) -> BoxFuture<'a, Result<Option<Vec<u8>>, MirrorError>> {
        Box::pin(async move {
            let mirror = self.path(repository);
            let object = format!("{commit}:{path}");
            // One process in the usual case: the file is there.
            match git(
                repository,
                "read the pipeline file",
                Some(&mirror),
                &["cat-file", "blob", &object],
                &[],
            )
            .await
            {
                Ok(text) => Ok(Some(text)),
                // No such file, or no such commit: the commit tells which.
                Err(err) => {
                    let commit_object = format!("{commit}^{{commit}}");
                    git(
                        repository,
                        "find the commit",
                        Some(&mirror),
                        &["cat-file", "-e", &commit_object],
                        &[],
                    )
                    .await
                    .map_err(|_| err)?;
                    Ok(None)
                }
            }
        })
    }

    fn changed_paths<'a>(
        &'a self,
        repository: &'a str,
        from: &'a str,
        to: &'a str,
        merge_base: bool,
    ) -> BoxFuture<'a, Result<Vec<String>, MirrorError>> {
        Box::pin(async move {
            let mirror = self.path(repository);
            let range = match merge_base {
                true => format!("{from}...{to}"),
                false => format!("{from}..{to}"),
            };
            let out = git(
                repository,
                "list the changed paths",
                Some(&mirror),
                &["diff", "--name-only", "-z", &range],
                &[],
            )
            .await?;
            Ok(out
                .split(|&b| b == 0)
                .filter(|p| !p.is_empty())
                .map(|p| String::from_utf8_lossy(p).into_owned())
                .collect())
        })
    }
}
