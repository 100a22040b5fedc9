//! Commit statuses reported back to the forge for runs started by a webhook: `pending` when the
//! run is accepted, then `success`, `failure` or an error state when it ends, each with a link
//! to the run. Reporting never touches the run: a status that cannot be sent is tried again
//! (three times, 1 s then 2 s apart), then given up with a warning in Hodei's log and a note in
//! the log of the run's first job.
//!
//! ## Assumptions
//! The reporter of a run lives in this process: after a restart of Hodei, a run that was going
//! gets no final status.

use std::time::Duration;

use actix_web::HttpRequest;
use hodei_actors::messages::Note;
use hodei_domain::forge::status::{
    StatusRequest, StatusState, default_api, repository_path, status_request,
};
use hodei_domain::ids::RunId;
use hodei_domain::ports::{RepositoryRecord, SecretScope};
use hodei_domain::state::RunState;

use crate::ApiState;

/// The run's address on this server, as the webhook's request reached it.
pub fn run_link(req: &HttpRequest, run: RunId) -> String {
    let info = req.connection_info();
    format!("{}://{}/api/v1/runs/{}", info.scheme(), info.host(), run.0)
}

/// Reports run `run` of `repo` at `commit` to the forge, now and when it ends, in the
/// background; does nothing for a repository without a status token.
pub fn report(state: &ApiState, repo: &RepositoryRecord, commit: &str, run: RunId, link: String) {
    let Some(token_name) = repo.status_token.clone() else {
        return;
    };
    let (state, repo, commit) = (state.clone(), repo.clone(), commit.to_owned());
    actix_web::rt::spawn(async move {
        let scope = [SecretScope::Repository(repo.name.clone())];
        let token = match state.tree.ports.secrets.get(&scope, &token_name).await {
            Ok(Some(token)) => token,
            other => {
                let why = match other {
                    Err(err) => err.to_string(),
                    _ => format!("the secret `{token_name}` is not stored"),
                };
                return give_up(&state, run, &format!("no status token: {why}")).await;
            }
        };
        let api = repo
            .status_api
            .clone()
            .or_else(|| default_api(repo.forge, &repo.clone_url));
        let (Some(api), Some(path)) = (api, repository_path(&repo.clone_url)) else {
            return give_up(
                &state,
                run,
                "no API URL or owner/name can be told from the clone URL; set `status_api`",
            )
            .await;
        };
        let request = |status: StatusState, description: &str| {
            status_request(repo.forge, &api, &path, &commit, status, &link, description)
                .authorised(repo.forge, &token)
        };
        send(
            &state,
            run,
            request(StatusState::Pending, "the run was accepted"),
        )
        .await;
        let (status, description) = loop {
            tokio::time::sleep(Duration::from_millis(200)).await;
            let Ok(Some(record)) = state.tree.ports.store.run(run).await else {
                continue;
            };
            match record.state {
                RunState::Succeeded => break (StatusState::Success, "the run succeeded"),
                RunState::Failed => break (StatusState::Failure, "the run failed"),
                RunState::Cancelled => break (StatusState::Cancelled, "the run was cancelled"),
                RunState::Pending | RunState::Running | RunState::Cancelling => {}
            }
        };
        send(&state, run, request(status, description)).await;
    });
}

/// Sends one status, tried again on failure; a status that cannot be sent is shown, not fatal.
async fn send(state: &ApiState, run: RunId, request: StatusRequest) {
    crate::client::install_crypto();
    let client = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build();
    let Ok(client) = client else {
        return give_up(state, run, "no HTTP client").await;
    };
    let mut last = String::new();
    for attempt in 0..3u32 {
        if attempt > 0 {
            tokio::time::sleep(Duration::from_secs(1 << (attempt - 1))).await;
        }
        let sent = client
            .post(&request.url)
            .header("authorization", &request.authorization)
            .header("accept", "application/json")
            .header("user-agent", "hodei")
            .json(&request.body)
            .send()
            .await;
        match sent {
            Ok(answer) if answer.status().is_success() => return,
            Ok(answer) => last = format!("the forge answered {}", answer.status()),
            Err(err) => last = format!("cannot reach the forge: {err}"),
        }
    }
    give_up(
        state,
        run,
        &format!(
            "commit status `{}` not reported to {}: {last}",
            request.body["state"].as_str().unwrap_or("?"),
            request.url
        ),
    )
    .await;
}

/// Shows that a status was not reported: in Hodei's log and in the run's first job's log.
async fn give_up(state: &ApiState, run: RunId, why: &str) {
    tracing::warn!(run_id = %run, error = %why, "Commit status not reported.");
    if let Ok(Some(record)) = state.tree.ports.store.run(run).await
        && let Some(job) = record.jobs.first()
    {
        state.tree.hub.do_send(Note {
            job: job.id,
            text: format!("hodei: {why}"),
        });
    }
}
