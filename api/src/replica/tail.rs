//! A job's log followed from the database, on a follower: the same frames as the leader's
//! stream ([`crate::stream`]) — `log` frames with their byte offsets, then `end` with the job's
//! outcome — read from what is committed, so that a client on any replica sees what an agent
//! sent to another.
//!
//! ## Guarantees
//! - No gap and no duplicate: each read starts where the last one ended.
//! - New bytes are read when PostgreSQL's notification for the job rings, and at least every
//!   [`Follower::poll`] without one (notifications are a doorbell, never the only path).
//! - A slow client slows only its own reads: the database is the buffer, so this stream never
//!   sends `lagged`.
//! - `end` comes once the job is over and every byte committed before its end was sent.

use std::time::Duration;

use actix_web::{HttpRequest, HttpResponse, web};
use futures_util::StreamExt;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::model::Role;
use serde_json::json;

use super::Follower;
use crate::error::ApiError;
use crate::stream::end_state;

/// The most bytes read (and sent in one frame) at a time.
const MAX_READ: usize = 256 * 1024;
/// How often the job's state is read while its log does not grow.
const STATE_EVERY: Duration = Duration::from_millis(500);

#[derive(serde::Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StreamQuery {
    from: Option<u64>,
}

/// `GET /api/v1/jobs/{id}/log/stream` on a follower.
pub async fn stream_job_log(
    follower: web::Data<Follower>,
    id: web::Path<u64>,
    query: web::Query<StreamQuery>,
    req: HttpRequest,
    body: web::Payload,
) -> Result<HttpResponse, ApiError> {
    follower.caller(&req).await?.require(Role::Viewer)?;
    let job = JobId(*id);
    let run = follower
        .store
        .job_run(job)
        .await?
        .ok_or_else(|| ApiError::NotFound {
            what: format!("job {}", job.0),
        })?;
    let (response, session, incoming) = crate::routes::streams::upgrade(&req, body)?;
    let follower = follower.get_ref().clone();
    let from = query.from.unwrap_or(0);
    actix_web::rt::spawn(async move {
        let mut incoming = incoming;
        let mut pongs = session.clone();
        // The client's pings are answered and its close noticed on the side.
        let (gone, mut client_gone) = tokio::sync::oneshot::channel::<()>();
        actix_web::rt::spawn(async move {
            while let Some(message) = incoming.next().await {
                match message {
                    Ok(actix_ws::Message::Ping(bytes)) => {
                        if pongs.pong(&bytes).await.is_err() {
                            break;
                        }
                    }
                    Ok(actix_ws::Message::Close(_)) | Err(_) => break,
                    Ok(_) => {}
                }
            }
            let _ = gone.send(());
        });
        tokio::select! {
            () = follow(follower, job, run, from, session) => {}
            _ = &mut client_gone => {}
        }
    });
    Ok(response)
}

/// Sends the log from `from` until the job is over, then `end`.
async fn follow(
    follower: Follower,
    job: JobId,
    run: RunId,
    from: u64,
    mut session: actix_ws::Session,
) {
    let mut rings = follower.doorbell.subscribe();
    let mut at = from;
    let mut held = Vec::new();
    let mut state_checked = tokio::time::Instant::now() - STATE_EVERY;
    let mut over: Option<&'static str> = None;
    loop {
        let bytes = match (follower.read_tail)(job, at + held.len() as u64, MAX_READ).await {
            Ok(bytes) => bytes,
            Err(err) => {
                let _ = session
                    .close(Some(actix_ws::CloseReason {
                        code: actix_ws::CloseCode::Error,
                        description: Some(format!("cannot read the log: {err}")),
                    }))
                    .await;
                return;
            }
        };
        let grew = !bytes.is_empty();
        held.extend_from_slice(&bytes);
        let whole = if over.is_some() && !grew {
            held.len()
        } else {
            crate::stream::whole_chars(&held)
        };
        if whole > 0 {
            let chunk: Vec<u8> = held.drain(..whole).collect();
            let n = chunk.len() as u64;
            let frame = crate::stream::log_frame(at, chunk);
            if session.text(frame.to_string()).await.is_err() {
                return;
            }
            at += n;
        }
        if let Some(state) = over
            && !grew
            && held.is_empty()
        {
            let end = json!({"type": "end", "state": state, "offset": at});
            let _ = session.text(end.to_string()).await;
            let _ = session.close(None).await;
            return;
        }
        if grew && bytes.len() == MAX_READ {
            continue;
        }
        if over.is_none() && state_checked.elapsed() >= STATE_EVERY {
            state_checked = tokio::time::Instant::now();
            if let Ok(Some(record)) = follower.store.run(run).await
                && let Some(found) = record.jobs.iter().find(|j| j.id == job)
                && let Some(state) = end_state(&found.state)
            {
                // Read once more: every byte committed before the end is sent before `end`.
                over = Some(state);
                continue;
            }
        }
        if over.is_some() {
            continue;
        }
        // Until the job's doorbell rings, or the next poll.
        let wait = tokio::time::sleep(follower.poll);
        tokio::pin!(wait);
        loop {
            tokio::select! {
                () = &mut wait => break,
                ring = rings.recv() => match ring {
                    Ok(rung) if rung == job => break,
                    Ok(_) => {}
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => break,
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                        (&mut wait).await;
                        break;
                    }
                },
            }
        }
    }
}
