//! Forges and their webhooks, as pure functions: which forge a repository lives on, what a
//! delivery says (its id, and a ping, a push of a branch or tag, or a pull/merge request), and
//! whether a pipeline's `on:` wants a run of it ([`decide`]).
//!
//! Checking a delivery's signature is the API's business (it holds the secret and the crypto);
//! reading the pipeline at the pushed commit and the changed paths is the mirror's.
//!
//! Payload shapes: GitHub's `push`, `pull_request` and `ping` events; GitLab's `Push Hook`,
//! `Tag Push Hook` and `Merge Request Hook`; Gitea's and Forgejo's `push` and `pull_request`
//! (the same shapes as GitHub's, near enough).

mod glob;
pub mod status;

pub use glob::glob_match;

use serde_json::Value;

use crate::model::Triggers;

/// Where a repository lives: how its webhooks are signed and shaped, and how commit statuses
/// are reported.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Forge {
    GitHub,
    GitLab,
    /// Gitea and Forgejo.
    Gitea,
}

impl Forge {
    /// Every forge, by name.
    pub const ALL: [Forge; 3] = [Forge::GitHub, Forge::GitLab, Forge::Gitea];

    pub fn name(self) -> &'static str {
        match self {
            Forge::GitHub => "github",
            Forge::GitLab => "gitlab",
            Forge::Gitea => "gitea",
        }
    }
}

impl std::str::FromStr for Forge {
    type Err = String;

    fn from_str(text: &str) -> Result<Forge, String> {
        match text {
            "github" => Ok(Forge::GitHub),
            "gitlab" => Ok(Forge::GitLab),
            "gitea" | "forgejo" => Ok(Forge::Gitea),
            other => Err(format!(
                "unknown forge `{other}`: expected github, gitlab or gitea (also for Forgejo)"
            )),
        }
    }
}

impl std::fmt::Display for Forge {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.name())
    }
}

/// The all-zero object id a forge sends for "no commit" (a created or deleted ref).
fn is_zero(sha: &str) -> bool {
    !sha.is_empty() && sha.bytes().all(|b| b == b'0')
}

/// What a delivery asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    /// The forge checks that the hook works: answered, starts nothing.
    Ping,
    /// A branch moved to `commit` (from `before`, `None` for a new branch).
    Push {
        branch: String,
        before: Option<String>,
        commit: String,
    },
    /// A tag was pushed, pointing at `commit`.
    Tag { tag: String, commit: String },
    /// A pull (merge) request was opened, updated or reopened: its head is `commit` on
    /// `head_branch`, to merge into `base_branch`.
    PullRequest {
        number: u64,
        head_branch: String,
        base_branch: String,
        commit: String,
    },
    /// Something no run is started for (a deleted branch, a closed pull request, another
    /// kind of event), with what it was.
    Ignored { what: String },
}

impl Event {
    /// The run's `event`: `push`, `tag` or `pull_request`; `None` for what starts no run.
    pub fn run_event(&self) -> Option<&'static str> {
        match self {
            Event::Push { .. } => Some("push"),
            Event::Tag { .. } => Some("tag"),
            Event::PullRequest { .. } => Some("pull_request"),
            Event::Ping | Event::Ignored { .. } => None,
        }
    }

    /// The commit a run of it is for.
    pub fn commit(&self) -> Option<&str> {
        match self {
            Event::Push { commit, .. }
            | Event::Tag { commit, .. }
            | Event::PullRequest { commit, .. } => Some(commit),
            Event::Ping | Event::Ignored { .. } => None,
        }
    }

    /// The run's branch: the pushed branch, or a pull request's head branch.
    pub fn branch(&self) -> &str {
        match self {
            Event::Push { branch, .. } => branch,
            Event::PullRequest { head_branch, .. } => head_branch,
            _ => "",
        }
    }

    /// The run's tag, for a tag push.
    pub fn tag(&self) -> &str {
        match self {
            Event::Tag { tag, .. } => tag,
            _ => "",
        }
    }
}

/// A webhook delivery that is not what its forge sends.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PayloadError {
    #[error("the `{header}` header is missing: is this a {forge} webhook?")]
    MissingHeader { forge: Forge, header: &'static str },
    #[error("the body is not JSON: {reason}")]
    NotJson { reason: String },
    #[error("the payload has no `{field}` ({expected})")]
    MissingField {
        field: &'static str,
        expected: &'static str,
    },
}

/// The headers a delivery came with, as the caller reads them (names in lower case).
pub trait Headers {
    fn header(&self, name: &str) -> Option<&str>;
}

impl Headers for [(&str, &str)] {
    fn header(&self, name: &str) -> Option<&str> {
        self.iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| *v)
    }
}

/// A delivery: its id (the same for a redelivery) and what it asks for.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Delivery {
    pub id: String,
    pub event: Event,
    /// The repository's default branch, as the payload names it; empty when it does not.
    pub default_branch: String,
}

/// The header that names a delivery of `forge`, and the one that names its event.
pub fn delivery_headers(forge: Forge) -> (&'static str, &'static str) {
    match forge {
        Forge::GitHub => ("x-github-delivery", "x-github-event"),
        Forge::GitLab => ("x-gitlab-event-uuid", "x-gitlab-event"),
        Forge::Gitea => ("x-gitea-delivery", "x-gitea-event"),
    }
}

/// Reads a delivery of `forge` from its headers and JSON body. The signature must have been
/// checked before.
pub fn parse_delivery(
    forge: Forge,
    headers: &(impl Headers + ?Sized),
    body: &[u8],
) -> Result<Delivery, PayloadError> {
    let (id_header, event_header) = delivery_headers(forge);
    // Forgejo sends its own header names beside (or instead of) Gitea's.
    let id = headers
        .header(id_header)
        .or_else(|| (forge == Forge::Gitea).then(|| headers.header("x-forgejo-delivery"))?)
        .or_else(|| (forge == Forge::GitLab).then(|| headers.header("idempotency-key"))?)
        .ok_or(PayloadError::MissingHeader {
            forge,
            header: id_header,
        })?
        .to_owned();
    let kind = headers
        .header(event_header)
        .or_else(|| (forge == Forge::Gitea).then(|| headers.header("x-forgejo-event"))?)
        .ok_or(PayloadError::MissingHeader {
            forge,
            header: event_header,
        })?;
    if forge == Forge::GitHub && kind == "ping" {
        return Ok(Delivery {
            id,
            event: Event::Ping,
            default_branch: String::new(),
        });
    }
    let json: Value = serde_json::from_slice(body).map_err(|err| PayloadError::NotJson {
        reason: err.to_string(),
    })?;
    let event = match (forge, kind) {
        (Forge::GitHub | Forge::Gitea, "push") | (Forge::GitLab, "Push Hook" | "Tag Push Hook") => {
            push(&json)?
        }
        (Forge::GitHub | Forge::Gitea, "pull_request") => pull_request(&json)?,
        (Forge::GitLab, "Merge Request Hook") => merge_request(&json)?,
        (_, other) => Event::Ignored {
            what: format!("a `{other}` event"),
        },
    };
    // GitHub and Gitea name it in `repository`, GitLab in `project`.
    let default_branch = text(&json, "/repository/default_branch")
        .or_else(|| text(&json, "/project/default_branch"))
        .unwrap_or_default()
        .to_owned();
    Ok(Delivery {
        id,
        event,
        default_branch,
    })
}

fn text<'a>(json: &'a Value, pointer: &str) -> Option<&'a str> {
    json.pointer(pointer).and_then(Value::as_str)
}

fn required<'a>(
    json: &'a Value,
    pointer: &str,
    field: &'static str,
    expected: &'static str,
) -> Result<&'a str, PayloadError> {
    text(json, pointer).ok_or(PayloadError::MissingField { field, expected })
}

fn push(json: &Value) -> Result<Event, PayloadError> {
    let reference = required(json, "/ref", "ref", "e.g. refs/heads/main")?;
    let after = required(json, "/after", "after", "the pushed commit")?;
    let before = text(json, "/before")
        .filter(|b| !is_zero(b))
        .map(str::to_owned);
    if is_zero(after) || json.pointer("/deleted").and_then(Value::as_bool) == Some(true) {
        return Ok(Event::Ignored {
            what: format!("the deletion of {reference}"),
        });
    }
    // GitLab names the commit a tag points at `checkout_sha`; `after` may be the tag object.
    let commit = text(json, "/checkout_sha")
        .filter(|s| !s.is_empty())
        .unwrap_or(after)
        .to_owned();
    if let Some(branch) = reference.strip_prefix("refs/heads/") {
        Ok(Event::Push {
            branch: branch.to_owned(),
            before,
            commit,
        })
    } else if let Some(tag) = reference.strip_prefix("refs/tags/") {
        Ok(Event::Tag {
            tag: tag.to_owned(),
            commit,
        })
    } else {
        Ok(Event::Ignored {
            what: format!("a push of {reference}"),
        })
    }
}

fn pull_request(json: &Value) -> Result<Event, PayloadError> {
    let action = required(json, "/action", "action", "opened, synchronize, ...")?;
    if !matches!(
        action,
        "opened" | "synchronize" | "synchronized" | "reopened"
    ) {
        return Ok(Event::Ignored {
            what: format!("a pull request {action}"),
        });
    }
    Ok(Event::PullRequest {
        number: json.pointer("/number").and_then(Value::as_u64).unwrap_or(0),
        head_branch: required(
            json,
            "/pull_request/head/ref",
            "pull_request.head.ref",
            "the head branch",
        )?
        .to_owned(),
        base_branch: required(
            json,
            "/pull_request/base/ref",
            "pull_request.base.ref",
            "the base branch",
        )?
        .to_owned(),
        commit: required(
            json,
            "/pull_request/head/sha",
            "pull_request.head.sha",
            "the head commit",
        )?
        .to_owned(),
    })
}

fn merge_request(json: &Value) -> Result<Event, PayloadError> {
    let action = text(json, "/object_attributes/action").unwrap_or("open");
    if !matches!(action, "open" | "update" | "reopen") {
        return Ok(Event::Ignored {
            what: format!("a merge request {action}"),
        });
    }
    Ok(Event::PullRequest {
        number: json
            .pointer("/object_attributes/iid")
            .and_then(Value::as_u64)
            .unwrap_or(0),
        head_branch: required(
            json,
            "/object_attributes/source_branch",
            "object_attributes.source_branch",
            "the source branch",
        )?
        .to_owned(),
        base_branch: required(
            json,
            "/object_attributes/target_branch",
            "object_attributes.target_branch",
            "the target branch",
        )?
        .to_owned(),
        commit: required(
            json,
            "/object_attributes/last_commit/id",
            "object_attributes.last_commit.id",
            "the head commit",
        )?
        .to_owned(),
    })
}

/// Whether a pipeline's `on:` wants a run of `event`; `Err` says why not.
///
/// `changed` are the paths the push or pull request changes, `None` when they cannot be known
/// (a new branch): a `paths` filter then lets the run start.
///
/// Rules (those of the forges' own CI): a branch push needs `on.push`, and its `branches` to
/// match when given, and is not started when only `tags` are given; a tag push the other way
/// round; a pull request needs `on.pull_request`, its `branches` matched against the base
/// branch. `paths` must match one changed path when given (not for tags).
pub fn decide(on: &Triggers, event: &Event, changed: Option<&[String]>) -> Result<(), String> {
    let any = |patterns: &[String], text: &str| patterns.iter().any(|p| glob_match(p, text));
    let paths_ok = |patterns: &[String]| match changed {
        _ if patterns.is_empty() => true,
        None => true,
        Some(files) => files.iter().any(|f| any(patterns, f)),
    };
    match event {
        Event::Push { branch, .. } => {
            let Some(filter) = &on.push else {
                return Err("`on:` has no `push`".into());
            };
            if filter.branches.is_empty() && !filter.tags.is_empty() {
                return Err(format!("`on.push` lists only tags; `{branch}` is a branch"));
            }
            if !filter.branches.is_empty() && !any(&filter.branches, branch) {
                return Err(format!("branch `{branch}` is not in `on.push.branches`"));
            }
            if !paths_ok(&filter.paths) {
                return Err("no changed path matches `on.push.paths`".into());
            }
            Ok(())
        }
        Event::Tag { tag, .. } => {
            let Some(filter) = &on.push else {
                return Err("`on:` has no `push`".into());
            };
            if filter.tags.is_empty() && !filter.branches.is_empty() {
                return Err(format!("`on.push` lists only branches; `{tag}` is a tag"));
            }
            if !filter.tags.is_empty() && !any(&filter.tags, tag) {
                return Err(format!("tag `{tag}` is not in `on.push.tags`"));
            }
            Ok(())
        }
        Event::PullRequest { base_branch, .. } => {
            let Some(filter) = &on.pull_request else {
                return Err("`on:` has no `pull_request`".into());
            };
            if !filter.branches.is_empty() && !any(&filter.branches, base_branch) {
                return Err(format!(
                    "base branch `{base_branch}` is not in `on.pull_request.branches`"
                ));
            }
            if !paths_ok(&filter.paths) {
                return Err("no changed path matches `on.pull_request.paths`".into());
            }
            Ok(())
        }
        Event::Ping => Err("a ping starts nothing".into()),
        Event::Ignored { what } => Err(format!("{what} starts nothing")),
    }
}

#[cfg(test)]
mod tests;
