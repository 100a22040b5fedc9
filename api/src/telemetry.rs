//! Prometheus metrics: the process-wide recorder, the HTTP middleware that counts requests,
//! the event-bus subscriber that counts outcomes, and what is sampled at each scrape.
//!
//! | metric | kind | labels |
//! |---|---|---|
//! | `hodei_http_requests_total` | counter | `method`, `route` (the route pattern), `status` |
//! | `hodei_http_request_duration_seconds` | histogram (summary) | `method`, `route` |
//! | `hodei_runs_total` | counter | `outcome`: succeeded, failed, cancelled |
//! | `hodei_jobs_total` | counter | `outcome`: succeeded, failed, timed_out, cancelled, skipped |
//! | `hodei_steps_total` | counter | `outcome`: as jobs |
//! | `hodei_job_wait_seconds` | histogram (summary) | — : from queued to started |
//! | `hodei_job_run_seconds` | histogram (summary) | `outcome`: from started to its end |
//! | `hodei_log_bytes_total` | counter | — : bytes written to job logs |
//! | `hodei_queue_jobs` | gauge | `state`: queued, placed (sampled at scrape) |
//! | `hodei_workers` | gauge | `state`: ready, draining, offline (sampled at scrape) |
//! | `hodei_websocket_subscribers` | gauge | — : open log and event streams (sampled at scrape) |
//! | `hodei_provider_up` | gauge | `provider` (sampled at scrape) |
//! | `hodei_actor_restarts_total` | counter | `actor` (sampled at scrape) |
//! | `hodei_pool_workers` | gauge | `pool`, `state`: starting, running (set by the worker manager) |
//! | `hodei_pool_workers_started_total` | counter | `pool` (counted by the worker manager) |
//! | `hodei_pool_workers_failed_total` | counter | `pool` (counted by the worker manager) |
//!
//! The recorder is global (the `metrics` facade has one per process): it is installed once, by
//! the first server of the process, and shared by later ones (tests start several).

use std::collections::HashMap;
use std::sync::OnceLock;
use std::time::Instant;

use actix::{Actor, Context, Handler};
use actix_web::body::MessageBody;
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::middleware::Next;
use hodei_actors::contain::ActorKind;
use hodei_actors::messages::{GetQueueStats, GetWorkers};
use hodei_actors::messages::{LogChunk, Published};
use hodei_domain::ids::{JobId, Timestamp};
use hodei_domain::schedule::WorkerState;
use hodei_domain::state::DomainEvent;
use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};

use crate::ApiState;

/// The process's Prometheus handle, installing the recorder on first use.
pub fn prometheus() -> &'static PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE.get_or_init(|| {
        let recorder = PrometheusBuilder::new().build_recorder();
        let handle = recorder.handle();
        if let Err(err) = metrics::set_global_recorder(recorder) {
            tracing::warn!(error = %err, "Another metrics recorder is installed; /metrics shows only what reaches this one.");
        }
        handle
    })
}

/// Counts each request by method, route pattern and status, and times it.
pub async fn count_requests(
    req: ServiceRequest,
    next: Next<impl MessageBody>,
) -> Result<ServiceResponse<impl MessageBody>, actix_web::Error> {
    let started = Instant::now();
    let method = req.method().as_str().to_owned();
    let response = next.call(req).await?;
    // The pattern, not the path: `/api/v1/runs/{id}` keeps the label set small.
    let route = response
        .request()
        .match_pattern()
        .unwrap_or_else(|| "unmatched".to_owned());
    let status = response.status().as_u16().to_string();
    metrics::counter!("hodei_http_requests_total", "method" => method.clone(), "route" => route.clone(), "status" => status)
        .increment(1);
    metrics::histogram!("hodei_http_request_duration_seconds", "method" => method, "route" => route)
        .record(started.elapsed().as_secs_f64());
    Ok(response)
}

/// Samples what is not counted as it happens: the scheduler's queue and actor restarts.
pub async fn sample(state: &ApiState) {
    match state.tree.scheduler.send(GetQueueStats).await {
        Ok(stats) => {
            metrics::gauge!("hodei_queue_jobs", "state" => "queued").set(stats.queued as f64);
            metrics::gauge!("hodei_queue_jobs", "state" => "placed").set(stats.placed as f64);
        }
        Err(err) => tracing::warn!(error = %err, "The scheduler did not answer for the metrics."),
    }
    if let Ok(workers) = state.tree.scheduler.send(GetWorkers).await {
        for (name, wanted) in [
            ("ready", WorkerState::Ready),
            ("draining", WorkerState::Draining),
            ("offline", WorkerState::Offline),
        ] {
            let count = workers.iter().filter(|w| w.worker.state == wanted).count();
            metrics::gauge!("hodei_workers", "state" => name).set(count as f64);
        }
    }
    metrics::gauge!("hodei_websocket_subscribers").set(crate::stream::subscribers() as f64);
    if let Some(desk) = &state.tree.desk
        && let Ok(stats) = desk
            .send(hodei_actors::agents::GetAgentStats { take_claims: true })
            .await
    {
        metrics::gauge!("hodei_agents", "state" => "connected").set(stats.connected.len() as f64);
        if let Some(store) = &state.agents
            && let Ok(registered) = store.agents().await
        {
            let offline = registered
                .iter()
                .filter(|a| !stats.connected.iter().any(|c| c.name == a.name))
                .count();
            metrics::gauge!("hodei_agents", "state" => "offline").set(offline as f64);
        }
        metrics::counter!("hodei_agent_lease_expiries_total").absolute(stats.lease_expiries);
        metrics::counter!("hodei_agent_log_bytes_total").absolute(stats.log_bytes);
        for seconds in stats.claim_seconds {
            metrics::histogram!("hodei_agent_claim_seconds").record(seconds);
        }
    }
    for (name, health) in &state.providers {
        let up = if health().is_none() { 1.0 } else { 0.0 };
        metrics::gauge!("hodei_provider_up", "provider" => *name).set(up);
    }
    for kind in [
        ActorKind::Orchestrator,
        ActorKind::Run,
        ActorKind::Job,
        ActorKind::Scheduler,
        ActorKind::LogHub,
        ActorKind::EventBus,
        ActorKind::WorkerRegistry,
        ActorKind::Provider,
        ActorKind::Timer,
        ActorKind::AgentDesk,
        ActorKind::PoolManager,
    ] {
        metrics::counter!("hodei_actor_restarts_total", "actor" => kind.name())
            .absolute(state.tree.restarts.get(kind));
    }
}

/// The outcome an event records, as `(metric, outcome)`, if it ends a run, job or step.
pub fn outcome(event: &DomainEvent) -> Option<(&'static str, &'static str)> {
    Some(match event {
        DomainEvent::RunSucceeded { .. } => ("hodei_runs_total", "succeeded"),
        DomainEvent::RunFailed { .. } => ("hodei_runs_total", "failed"),
        DomainEvent::RunCancelled { .. } => ("hodei_runs_total", "cancelled"),
        DomainEvent::JobSucceeded { .. } => ("hodei_jobs_total", "succeeded"),
        DomainEvent::JobFailed { .. } => ("hodei_jobs_total", "failed"),
        DomainEvent::JobTimedOut { .. } => ("hodei_jobs_total", "timed_out"),
        DomainEvent::JobCancelled { .. } => ("hodei_jobs_total", "cancelled"),
        DomainEvent::JobSkipped { .. } => ("hodei_jobs_total", "skipped"),
        DomainEvent::StepSucceeded { .. } => ("hodei_steps_total", "succeeded"),
        DomainEvent::StepFailed { .. } => ("hodei_steps_total", "failed"),
        DomainEvent::StepTimedOut { .. } => ("hodei_steps_total", "timed_out"),
        DomainEvent::StepCancelled { .. } => ("hodei_steps_total", "cancelled"),
        DomainEvent::StepSkipped { .. } => ("hodei_steps_total", "skipped"),
        _ => return None,
    })
}

/// Subscribes to the event bus and the log hub: counts runs, jobs and steps by outcome, times
/// how long jobs wait and run, and counts log bytes.
#[derive(Debug, Default)]
pub struct OutcomeCounter {
    /// When each queued job was queued.
    queued: HashMap<JobId, Timestamp>,
    /// When each running job started.
    started: HashMap<JobId, Timestamp>,
}

impl Actor for OutcomeCounter {
    type Context = Context<Self>;
}

fn seconds(from: Timestamp, to: Timestamp) -> f64 {
    to.0.saturating_sub(from.0).max(0) as f64 / 1000.0
}

impl Handler<Published> for OutcomeCounter {
    type Result = ();

    fn handle(&mut self, msg: Published, _: &mut Context<Self>) {
        for event in msg.events.iter() {
            if let Some((metric, outcome)) = outcome(event) {
                metrics::counter!(metric, "outcome" => outcome).increment(1);
                if metric == "hodei_jobs_total"
                    && let Some(job) = event.job_id()
                {
                    self.queued.remove(&job);
                    if let Some(started) = self.started.remove(&job) {
                        metrics::histogram!("hodei_job_run_seconds", "outcome" => outcome)
                            .record(seconds(started, event.at()));
                    }
                }
            }
            match event {
                DomainEvent::JobQueued { job, at, .. }
                | DomainEvent::JobRetrying { job, at, .. }
                | DomainEvent::JobRequeued { job, at, .. } => {
                    self.queued.insert(*job, *at);
                }
                DomainEvent::JobStarted { job, at, .. } => {
                    if let Some(queued) = self.queued.remove(job) {
                        metrics::histogram!("hodei_job_wait_seconds").record(seconds(queued, *at));
                    }
                    self.started.insert(*job, *at);
                }
                _ => {}
            }
        }
    }
}

impl Handler<LogChunk> for OutcomeCounter {
    type Result = ();

    fn handle(&mut self, msg: LogChunk, _: &mut Context<Self>) {
        metrics::counter!("hodei_log_bytes_total").increment(msg.bytes.len() as u64);
    }
}

#[cfg(test)]
mod tests {
    use hodei_domain::ids::RunId;

    use super::*;

    #[test]
    fn only_final_events_count_as_outcomes() {
        let run = RunId(1);
        let at = Timestamp(0);
        assert_eq!(
            outcome(&DomainEvent::RunSucceeded { run, at }),
            Some(("hodei_runs_total", "succeeded"))
        );
        assert_eq!(outcome(&DomainEvent::RunStarted { run, at }), None);
    }
}
