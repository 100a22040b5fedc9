//! Runs: the list with its filters, and one run with its graph, its jobs, its artifacts (with
//! download links) and its actions, both refreshed live from the API's event streams.

use actix_web::http::header;
use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::ids::RunId;
use hodei_domain::model::Role;
use hodei_domain::state::RunState;
use maud::{Markup, html};
use serde::Deserialize;

use super::html::{Page, Section, action, elapsed, encode, error_page, state, time};
use super::session::{CsrfForm, Visitor};
use crate::ApiState;
use crate::error::ApiError;
use crate::routes::runs as api;
use crate::routes::runs::RunQuery;
use crate::views::RunView;

/// The filters of the list, as the form sends them (empty means any).
#[derive(Debug, Deserialize)]
pub struct Filters {
    state: Option<String>,
    pipeline: Option<String>,
    branch: Option<String>,
    cursor: Option<String>,
}

fn given(value: &Option<String>) -> Option<String> {
    value
        .as_deref()
        .map(str::trim)
        .filter(|v| !v.is_empty())
        .map(str::to_owned)
}

/// `GET /runs`: runs, newest first, filtered by state, pipeline and branch.
pub async fn list(
    req: HttpRequest,
    state_: web::Data<ApiState>,
    visitor: Visitor,
    filters: web::Query<Filters>,
) -> HttpResponse {
    let query = RunQuery {
        status: given(&filters.state),
        pipeline: given(&filters.pipeline),
        branch: given(&filters.branch),
        cursor: given(&filters.cursor),
        limit: Some(50),
    };
    let page = match api::list(&state_, query).await {
        Ok(page) => page,
        Err(err) => return error_page(Some(&visitor), &err),
    };
    let chosen = given(&filters.state);
    let next = page.next_cursor.as_ref().map(|cursor| {
        let mut link = format!("/runs?cursor={}", encode(cursor));
        for (key, value) in [
            ("state", &filters.state),
            ("pipeline", &filters.pipeline),
            ("branch", &filters.branch),
        ] {
            if let Some(value) = given(value) {
                link.push_str(&format!("&{key}={}", encode(&value)));
            }
        }
        link
    });
    let live = html! {
        @if page.items.is_empty() {
            p { "No run matches." }
        } @else {
            table.list #runs {
                thead { tr {
                    th scope="col" { "Run" } th scope="col" { "Pipeline" } th scope="col" { "State" }
                    th scope="col" { "Branch" } th scope="col" { "Event" } th scope="col" { "Created" }
                } }
                tbody {
                    @for run in &page.items {
                        tr data-run=(run.id) {
                            td { a href={ "/runs/" (run.id) } { "#" (run.id) } }
                            td { a href={ "/pipelines/" (encode(&run.pipeline)) } { (run.pipeline) } " v" (run.version) }
                            td { (state(&run.state)) }
                            td { (run.branch) }
                            td { (run.event) }
                            td { (time(run.created)) }
                        }
                    }
                }
            }
        }
        @if let Some(next) = &next {
            p { a href=(next) rel="next" { "Older runs" } }
        }
    };
    Page {
        title: "Runs".into(),
        section: Section::Runs,
        before: html! {
            form.filters method="get" action="/runs" role="search" {
                label for="f-state" { "State" }
                select #f-state name="state" {
                    option value="" { "any" }
                    @for s in RunState::ALL {
                        option value=(s.name()) selected[chosen.as_deref() == Some(s.name())] { (s.name()) }
                    }
                }
                label for="f-pipeline" { "Pipeline" }
                input #f-pipeline name="pipeline" value=[given(&filters.pipeline)];
                label for="f-branch" { "Branch" }
                input #f-branch name="branch" value=[given(&filters.branch)];
                button type="submit" { "Filter" }
            }
        },
        live: Some(("events".into(), live)),
        after: html! {},
    }
    .respond(&req, &visitor)
}

/// The plan of a run's definition, off the worker's event loop; `None` when it no longer
/// loads (Hodei's rules changed since it was stored).
pub(super) async fn plan_of(source: String) -> Option<hodei_domain::plan::Plan> {
    web::block(move || {
        let pipeline = hodei_domain::load::load(&source).pipeline?;
        Some(hodei_domain::plan::plan(&pipeline))
    })
    .await
    .ok()
    .flatten()
}

/// The role each job's approval gate asks for, by position; operator for every job when the
/// definition no longer plans to the run's jobs (and for the post-hooks job, which has none).
async fn gates(source: String, jobs: usize) -> Vec<Role> {
    match plan_of(source).await {
        Some(plan) if plan.run_jobs().len() == jobs => (0..jobs)
            .map(|i| {
                plan.jobs
                    .get(i)
                    .map_or(Role::Operator, crate::routes::jobs::approver)
            })
            .collect(),
        _ => vec![Role::Operator; jobs],
    }
}

/// Each job's `needs` (the view's ids) as positions among the run's jobs.
fn needs_by_position(view: &crate::views::RunView) -> Vec<Vec<usize>> {
    view.jobs
        .iter()
        .map(|job| {
            job.needs
                .iter()
                .filter_map(|id| view.jobs.iter().position(|other| other.id == *id))
                .collect()
        })
        .collect()
}

/// `GET /runs/{id}`: the run's inputs, actions, graph and jobs.
pub async fn show(
    req: HttpRequest,
    state_: web::Data<ApiState>,
    visitor: Visitor,
    id: web::Path<u64>,
) -> HttpResponse {
    let run = RunId(*id);
    let (record, view, artifacts) = match async {
        Ok::<_, ApiError>((
            api::record(&state_, run).await?,
            api::view(&state_, run).await?,
            crate::routes::artifacts::list(&state_, run).await?,
        ))
    }
    .await
    {
        Ok(found) => found,
        Err(err) => return error_page(Some(&visitor), &err),
    };
    let gates = gates(record.source, view.jobs.len()).await;
    let needs = needs_by_position(&view);
    let live = html! {
        (summary(&view))
        (actions(&visitor, &view))
        section aria-labelledby="graph" {
            h2 #graph { "Graph" }
            (super::graph::draw(&view.jobs, &needs))
        }
        section aria-labelledby="jobs" {
            h2 #jobs { "Jobs" }
            (jobs_table(&visitor, &view, &gates))
        }
        @if !artifacts.is_empty() {
            section aria-labelledby="artifacts" {
                h2 #artifacts { "Artifacts" }
                (artifacts_table(&artifacts))
            }
        }
    };
    Page {
        title: format!("Run #{} of {}", view.id, view.pipeline),
        section: Section::Runs,
        before: html! {},
        live: Some((format!("run:{}", view.id), live)),
        after: html! {},
    }
    .respond(&req, &visitor)
}

/// The run's inputs and times.
fn summary(view: &RunView) -> Markup {
    html! {
        dl.summary {
            dt { "State" } dd { (state(&view.state)) }
            dt { "Pipeline" } dd { a href={ "/pipelines/" (encode(&view.pipeline)) } { (view.pipeline) } " "
                a href={ "/pipelines/" (encode(&view.pipeline)) "/versions/" (view.version) } { "v" (view.version) } }
            dt { "Branch" } dd { @if view.branch.is_empty() { "–" } @else { (view.branch) } }
            dt { "Event" } dd { (view.event) @if !view.tag.is_empty() { " " (view.tag) } }
            dt { "Created" } dd { (time(view.created)) }
            dt { "Duration" } dd { (elapsed(view.started, view.finished)) }
            @for (key, value) in &view.params {
                dt { "Parameter " code { (key) } } dd { code { (value) } }
            }
        }
    }
}

/// What the visitor may do with the run now.
fn actions(visitor: &Visitor, view: &RunView) -> Markup {
    let finished = matches!(view.state.as_str(), "succeeded" | "failed" | "cancelled");
    let base = format!("/runs/{}", view.id);
    html! {
        div.actions {
            @if !finished {
                (action(visitor, Role::Operator, &format!("{base}/cancel"), "Cancel", "danger"))
            }
            @if matches!(view.state.as_str(), "failed" | "cancelled") {
                (action(visitor, Role::Operator, &format!("{base}/retry"), "Retry failed jobs", ""))
            }
            @if finished {
                (action(visitor, Role::Operator, &format!("{base}/rerun"), "Run again", ""))
            }
        }
    }
}

/// The files the jobs kept, each a download link.
fn artifacts_table(artifacts: &[crate::views::ArtifactView]) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Job" } th scope="col" { "File" } th scope="col" { "Size" }
            } }
            tbody {
                @for artifact in artifacts {
                    tr {
                        td { a href={ "/jobs/" (artifact.job_id) } { (artifact.job) } }
                        td { a href=(artifact.url) download { code { (artifact.path) } } }
                        td { (artifact.size) " bytes" }
                    }
                }
            }
        }
    }
}

/// The jobs, in plan order, with their approve buttons for who may approve.
fn jobs_table(visitor: &Visitor, view: &RunView, gates: &[Role]) -> Markup {
    html! {
        table.list {
            thead { tr {
                th scope="col" { "Job" } th scope="col" { "State" } th scope="col" { "Attempt" }
                th scope="col" { "Worker" } th scope="col" { "Duration" } th scope="col" { span.sr { "Actions" } }
            } }
            tbody {
                @for (job, gate) in view.jobs.iter().zip(gates) {
                    tr data-job=(job.id) {
                        td { a href={ "/jobs/" (job.id) } { (job.name) } }
                        td { (state(&job.state)) }
                        td { (job.attempt) }
                        td { (job.worker.as_deref().unwrap_or("–")) }
                        td { (elapsed(job.started, job.finished)) }
                        td {
                            @if job.state == "waiting_approval" {
                                (action(visitor, *gate, &format!("/jobs/{}/approve", job.id), "Approve", "primary"))
                            }
                        }
                    }
                }
            }
        }
    }
}

/// `POST /runs/{id}/{cancel|retry|rerun}`: the API's handler, then the run (or the new run).
pub async fn act(
    req: HttpRequest,
    state_: web::Data<ApiState>,
    visitor: Visitor,
    path: web::Path<(u64, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let (id, what) = path.into_inner();
    if let Err(err) = visitor.check(&req, &form.csrf) {
        return error_page(Some(&visitor), &err);
    }
    let caller = visitor.caller.clone();
    let answer = match what.as_str() {
        "cancel" => api::cancel_run(state_, caller, web::Path::from(id)).await,
        "retry" => api::retry_run(state_, caller, web::Path::from(id)).await,
        "rerun" => api::rerun_run(state_, caller, web::Path::from(id)).await,
        other => Err(ApiError::NoRoute {
            path: format!("/runs/{id}/{other}"),
        }),
    };
    match answer {
        Ok(response) => {
            // A new run says where it is; a cancel stays on this run.
            let new = response
                .headers()
                .get(header::LOCATION)
                .and_then(|l| l.to_str().ok())
                .and_then(|l| l.strip_prefix("/api/v1/runs/"))
                .map(str::to_owned);
            super::see_other(format!("/runs/{}", new.unwrap_or_else(|| id.to_string())))
        }
        Err(err) => error_page(Some(&visitor), &err),
    }
}
