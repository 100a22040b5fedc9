//! Commit statuses as each forge's API takes them: where to send one, and what, for a run's
//! state. Pure: the API's reporter sends the request.

use super::Forge;

/// What a commit status says about a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StatusState {
    Pending,
    Running,
    Success,
    Failure,
    Cancelled,
}

/// One status to send: `POST url` with `body` (JSON) and the token in `Authorization`.
#[derive(Debug, Clone, PartialEq)]
pub struct StatusRequest {
    pub url: String,
    pub body: serde_json::Value,
    /// The `Authorization` header's value.
    pub authorization: String,
}

/// The `owner/name` path of a repository from its clone URL: `https://host/acme/app.git` is
/// `acme/app`.
pub fn repository_path(clone_url: &str) -> Option<String> {
    let rest = clone_url.split_once("://").map_or(clone_url, |(_, r)| r);
    let path = rest.split_once('/').map(|(_, p)| p)?;
    let path = path.trim_end_matches('/').trim_end_matches(".git");
    (path.contains('/') && !path.is_empty()).then(|| path.to_owned())
}

/// The forge's API base for a clone URL, when not given: GitHub's public API for github.com,
/// `/api/v3` (GitHub Enterprise), `/api/v4` (GitLab) or `/api/v1` (Gitea) on the clone's host.
pub fn default_api(forge: Forge, clone_url: &str) -> Option<String> {
    let (scheme, rest) = clone_url.split_once("://")?;
    let host = rest.split('/').next()?;
    let scheme = if scheme == "http" { "http" } else { "https" };
    Some(match forge {
        Forge::GitHub if host == "github.com" => "https://api.github.com".to_owned(),
        Forge::GitHub => format!("{scheme}://{host}/api/v3"),
        Forge::GitLab => format!("{scheme}://{host}/api/v4"),
        Forge::Gitea => format!("{scheme}://{host}/api/v1"),
    })
}

/// The request that reports `state` for `commit` of the repository at `path` (`owner/name`).
pub fn status_request(
    forge: Forge,
    api: &str,
    path: &str,
    commit: &str,
    state: StatusState,
    target_url: &str,
    description: &str,
) -> StatusRequest {
    let api = api.trim_end_matches('/');
    let context = "hodei";
    match forge {
        Forge::GitHub | Forge::Gitea => {
            let state = match state {
                StatusState::Pending | StatusState::Running => "pending",
                StatusState::Success => "success",
                StatusState::Failure => "failure",
                StatusState::Cancelled => "error",
            };
            StatusRequest {
                url: format!("{api}/repos/{path}/statuses/{commit}"),
                body: serde_json::json!({
                    "state": state, "target_url": target_url,
                    "description": description, "context": context,
                }),
                authorization: String::new(),
            }
        }
        Forge::GitLab => {
            let state = match state {
                StatusState::Pending => "pending",
                StatusState::Running => "running",
                StatusState::Success => "success",
                StatusState::Failure => "failed",
                StatusState::Cancelled => "canceled",
            };
            StatusRequest {
                url: format!(
                    "{api}/projects/{}/statuses/{commit}",
                    path.replace('/', "%2F")
                ),
                body: serde_json::json!({
                    "state": state, "target_url": target_url,
                    "description": description, "name": context,
                }),
                authorization: String::new(),
            }
        }
    }
}

impl StatusRequest {
    /// The same request, authorised with `token` as the forge expects it.
    pub fn authorised(mut self, forge: Forge, token: &str) -> StatusRequest {
        self.authorization = match forge {
            Forge::GitHub => format!("Bearer {token}"),
            Forge::GitLab => format!("Bearer {token}"),
            Forge::Gitea => format!("token {token}"),
        };
        self
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_forge_gets_its_own_url_state_and_authorisation() {
        assert_eq!(
            repository_path("https://github.com/acme/app.git").as_deref(),
            Some("acme/app")
        );
        assert_eq!(repository_path("https://host/app.git"), None);
        assert_eq!(
            default_api(Forge::GitHub, "https://github.com/acme/app.git").as_deref(),
            Some("https://api.github.com")
        );
        assert_eq!(
            default_api(Forge::GitLab, "http://lab.local/a/b.git").as_deref(),
            Some("http://lab.local/api/v4")
        );
        let gh = status_request(
            Forge::GitHub,
            "https://api.github.com",
            "acme/app",
            "abc",
            StatusState::Failure,
            "http://hodei/api/v1/runs/7",
            "failed",
        )
        .authorised(Forge::GitHub, "t");
        assert_eq!(gh.url, "https://api.github.com/repos/acme/app/statuses/abc");
        assert_eq!(gh.body["state"], "failure");
        assert_eq!(gh.authorization, "Bearer t");
        let gl = status_request(
            Forge::GitLab,
            "http://lab/api/v4/",
            "acme/app",
            "abc",
            StatusState::Cancelled,
            "u",
            "d",
        );
        assert_eq!(gl.url, "http://lab/api/v4/projects/acme%2Fapp/statuses/abc");
        assert_eq!(gl.body["state"], "canceled");
        let gt = status_request(
            Forge::Gitea,
            "http://tea/api/v1",
            "a/b",
            "c",
            StatusState::Running,
            "u",
            "d",
        )
        .authorised(Forge::Gitea, "t");
        assert_eq!(gt.body["state"], "pending");
        assert_eq!(gt.authorization, "token t");
    }
}
