//! Commit statuses reported back to the forge for runs started by a webhook, and for their
//! reruns and retries: `pending` when the run is accepted, then `success`, `failure` or an
//! error state when it ends, each with a link to the run. Reporting never touches the run: a
//! status that cannot be sent is tried again (three times, 1 s then 2 s apart), then given up
//! with a warning in Hodei's log and a note in the log of the run's first job.
//!
//! The reporter of a run lives in the process; at start-up, [`resume`] starts one again for
//! every unfinished run of a repository, so a run that was going when Hodei stopped still gets
//! its final status (and `pending` once more). The link's address is the one the webhook
//! reached, kept with the run's inputs (`server_url`).

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

/// This server's address, as the webhook's request reached it.
pub fn server_url(req: &HttpRequest) -> String {
    let info = req.connection_info();
    format!("{}://{}", info.scheme(), info.host())
}

/// Reports run `run` of `repo` at `commit` to the forge, now and when it ends, in the
/// background, with a link to the run at `server_url`; does nothing for a repository without
/// a status token.
pub fn report(
    state: &ApiState,
    repo: &RepositoryRecord,
    commit: &str,
    run: RunId,
    server_url: &str,
) {
    let Some(token_name) = repo.status_token.clone() else {
        return;
    };
    let link = format!("{server_url}/api/v1/runs/{}", run.0);
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

/// Reports run `run` as [`report`] does, when it is a run of a registered repository at a
/// commit that a webhook started (or a rerun or retry of one).
pub async fn follow(state: &ApiState, run: RunId) {
    let Ok(Some(record)) = state.tree.ports.store.run(run).await else {
        return;
    };
    let inputs = &record.inputs;
    let Some(name) = inputs.repository() else {
        return;
    };
    if inputs.commit.is_empty() || inputs.server_url.is_empty() {
        return;
    }
    match state.repos.repository(name).await {
        Ok(Some(repo)) => report(state, &repo, &inputs.commit, run, &inputs.server_url),
        Ok(None) => {}
        Err(err) => give_up(state, run, &format!("cannot read the repository: {err}")).await,
    }
}

/// Reports again every unfinished run of a repository: at start-up, their reporters of the
/// earlier life are gone.
pub async fn resume(state: &ApiState) {
    match state.tree.ports.store.unfinished_runs().await {
        Ok(runs) => {
            for run in runs {
                follow(state, run).await;
            }
        }
        Err(err) => {
            tracing::warn!(error = %err, "Cannot read the unfinished runs to report their commit statuses.")
        }
    }
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
