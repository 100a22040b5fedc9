//! The queue and the workers: each waiting job with its position and why it waits, each
//! worker with its labels, its usage and drain / undrain for admins. Refreshed live.

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::model::Role;
use maud::html;

use super::html::{Page, Section, action, encode, error_page, state, time};
use super::session::{CsrfForm, Visitor};
use crate::ApiState;
use crate::error::ApiError;
use crate::routes::workers as api;

/// `GET /queue`.
pub async fn show(req: HttpRequest, state_: web::Data<ApiState>, visitor: Visitor) -> HttpResponse {
    let found = async {
        Ok::<_, ApiError>((
            api::queue(&state_, Some(500), None).await?,
            api::workers(&state_).await?,
        ))
    }
    .await;
    let (queue, workers) = match found {
        Ok(found) => found,
        Err(err) => return error_page(Some(&visitor), &err),
    };
    let live = html! {
        section aria-labelledby="queue" {
            h2 #queue { "Waiting jobs (" (queue.total) ")" }
            @if queue.items.is_empty() {
                p { "No job waits." }
            } @else {
                table.list {
                    thead { tr {
                        th scope="col" { "Position" } th scope="col" { "Job" } th scope="col" { "Run" }
                        th scope="col" { "Needs labels" } th scope="col" { "Queued" } th scope="col" { "Why it waits" }
                    } }
                    tbody {
                        @for item in &queue.items {
                            tr {
                                td { (item.position + 1) }
                                td { a href={ "/jobs/" (item.job) } { "job " (item.job) } }
                                td { a href={ "/runs/" (item.run) } { "#" (item.run) " " (item.pipeline) } }
                                td { @for label in &item.runs_on { code { (label) } " " } }
                                td { (time(item.queued_at)) }
                                td.reason { (item.reason) }
                            }
                        }
                    }
                }
                @if queue.total > queue.items.len() {
                    p { "And " (queue.total - queue.items.len()) " more." }
                }
            }
        }
        section aria-labelledby="workers" {
            h2 #workers { "Workers" }
            table.list {
                thead { tr {
                    th scope="col" { "Worker" } th scope="col" { "Labels" } th scope="col" { "Used" }
                    th scope="col" { "State" } th scope="col" { "Jobs" } th scope="col" { span.sr { "Actions" } }
                } }
                tbody {
                    @for worker in &workers.items {
                        @let base = format!("/workers/{}", encode(&worker.id));
                        tr {
                            td { (worker.id) }
                            td { @for label in &worker.labels { code { (label) } " " } }
                            td {
                                meter min="0" max=(worker.slots) value=(worker.jobs.len()) {}
                                " " (worker.jobs.len()) " of " (worker.slots)
                            }
                            td { (state(&worker.state)) }
                            td { @for job in &worker.jobs { a href={ "/jobs/" (job) } { (job) } " " } }
                            td {
                                @match worker.state.as_str() {
                                    "ready" => (action(&visitor, Role::Admin, &format!("{base}/drain"), "Drain", "")),
                                    "draining" => (action(&visitor, Role::Admin, &format!("{base}/undrain"), "Undrain", "")),
                                    _ => {}
                                }
                            }
                        }
                    }
                }
            }
        }
    };
    Page {
        title: "Queue & workers".into(),
        section: Section::Queue,
        before: html! {},
        live: Some(("events".into(), live)),
        after: html! {},
    }
    .respond(&req, &visitor)
}

/// `POST /workers/{id}/{drain|undrain}`: the API's handler, then the queue page.
pub async fn act(
    req: HttpRequest,
    state_: web::Data<ApiState>,
    visitor: Visitor,
    path: web::Path<(String, String)>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let (id, what) = path.into_inner();
    let result = async {
        visitor.check(&req, &form.csrf)?;
        let caller = visitor.caller.clone();
        match what.as_str() {
            "drain" => api::drain_worker(state_, caller, web::Path::from(id)).await,
            "undrain" => api::undrain_worker(state_, caller, web::Path::from(id)).await,
            other => Err(ApiError::NoRoute {
                path: format!("/workers/{id}/{other}"),
            }),
        }
    }
    .await;
    match result {
        Ok(_) => super::see_other("/queue".into()),
        Err(err) => error_page(Some(&visitor), &err),
    }
}
