//! Pipelines: the list, one pipeline with its versions and a trigger form built from its
//! parameters, and the YAML text of a version.

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::model::Role;
use maud::html;
use serde::Deserialize;

use super::html::{Page, Section, encode, error_page, time};
use super::session::Visitor;
use crate::ApiState;
use crate::routes::pipelines as api;
use crate::views::TriggerRequest;

/// Paging of the list.
#[derive(Debug, Deserialize)]
pub struct ListQuery {
    cursor: Option<String>,
}

/// `GET /pipelines`.
pub async fn list(
    req: HttpRequest,
    state: web::Data<ApiState>,
    visitor: Visitor,
    query: web::Query<ListQuery>,
) -> HttpResponse {
    let page = match api::list(&state, query.cursor.as_deref(), None).await {
        Ok(page) => page,
        Err(err) => return error_page(Some(&visitor), &err),
    };
    Page {
        title: "Pipelines".into(),
        section: Section::Pipelines,
        before: html! {
            @if page.items.is_empty() {
                p { "No pipeline yet: apply one with " code { "hodei pipelines apply FILE" } "." }
            } @else {
                table.list {
                    thead { tr { th scope="col" { "Pipeline" } th scope="col" { "Latest" } th scope="col" { "Updated" } th scope="col" { "Runs" } } }
                    tbody {
                        @for p in &page.items {
                            tr {
                                td { a href={ "/pipelines/" (encode(&p.name)) } { (p.name) } }
                                td { "v" (p.latest) }
                                td { (time(p.updated)) }
                                td { a href={ "/runs?pipeline=" (encode(&p.name)) } { "runs" } }
                            }
                        }
                    }
                }
                @if let Some(next) = &page.next_cursor {
                    p { a href={ "/pipelines?cursor=" (encode(next)) } rel="next" { "Next page" } }
                }
            }
        },
        live: None,
        after: html! {},
    }
    .respond(&req, &visitor)
}

/// `GET /pipelines/{name}`: versions, the latest YAML, and the trigger form.
pub async fn show(
    req: HttpRequest,
    state: web::Data<ApiState>,
    visitor: Visitor,
    name: web::Path<String>,
) -> HttpResponse {
    let pipeline = match api::read(&state, &name).await {
        Ok(p) => p,
        Err(err) => return error_page(Some(&visitor), &err),
    };
    let source = pipeline.source.clone();
    let parameters = web::block(move || {
        let loaded = hodei_domain::load::load(&source);
        loaded
            .pipeline
            .map(|p| hodei_domain::plan::plan(&p).parameters)
    })
    .await
    .ok()
    .flatten();
    let base = format!("/pipelines/{}", encode(&pipeline.name));
    Page {
        title: format!("Pipeline {}", pipeline.name),
        section: Section::Pipelines,
        before: html! {
            p { a href={ "/runs?pipeline=" (encode(&pipeline.name)) } { "Runs of this pipeline" } }
            @if visitor.caller.role.allows(Role::Operator) {
                section aria-labelledby="trigger" {
                    h2 #trigger { "Trigger a run of v" (pipeline.version) }
                    @match &parameters {
                        None => p.error { "The latest version no longer loads: apply a corrected definition." },
                        Some(parameters) => form.trigger method="post" action={ (base) "/runs" } {
                            input type="hidden" name="csrf" value=(visitor.csrf);
                            @for (name, p) in parameters {
                                @let id = format!("param-{name}");
                                label for=(id) { (name) }
                                @if p.choices.is_empty() {
                                    input id=(id) name={ "param." (name) } value=[p.default.as_deref()];
                                } @else {
                                    select id=(id) name={ "param." (name) } {
                                        @for choice in &p.choices {
                                            option value=(choice) selected[p.default.as_deref() == Some(choice.as_str())] { (choice) }
                                        }
                                    }
                                }
                                @if let Some(description) = &p.description { p.hint { (description) } }
                            }
                            label for="branch" { "Branch" }
                            input #branch name="branch" placeholder="main";
                            button type="submit" { "Trigger" }
                        },
                    }
                }
            }
            section aria-labelledby="versions" {
                h2 #versions { "Versions" }
                ol.versions reversed {
                    @for v in pipeline.versions.iter().rev() {
                        li { a href={ (base) "/versions/" (v.version) } { "v" (v.version) } " · " (time(v.created)) }
                    }
                }
            }
            section aria-labelledby="yaml" {
                h2 #yaml { "Definition (v" (pipeline.version) ")" }
                pre.yaml { code { (pipeline.source) } }
            }
        },
        live: None,
        after: html! {},
    }
    .respond(&req, &visitor)
}

/// `GET /pipelines/{name}/versions/{version}`: that version's YAML.
pub async fn version(
    req: HttpRequest,
    state: web::Data<ApiState>,
    visitor: Visitor,
    path: web::Path<(String, u32)>,
) -> HttpResponse {
    let (name, number) = path.into_inner();
    let stored = match api::version(&state, &name, number).await {
        Ok(v) => v,
        Err(err) => return error_page(Some(&visitor), &err),
    };
    Page {
        title: format!("{name} v{number}"),
        section: Section::Pipelines,
        before: html! {
            p { a href={ "/pipelines/" (encode(&name)) } { "All versions of " (name) } " · stored " (time(stored.created.into())) }
            pre.yaml { code { (stored.source) } }
        },
        live: None,
        after: html! {},
    }
    .respond(&req, &visitor)
}

/// `POST /pipelines/{name}/runs`: the trigger form; on to the new run's page.
pub async fn trigger(
    req: HttpRequest,
    state: web::Data<ApiState>,
    visitor: Visitor,
    name: web::Path<String>,
    form: web::Form<Vec<(String, String)>>,
) -> HttpResponse {
    let result = async {
        let field = |key: &str| form.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str());
        visitor.check(&req, field("csrf").unwrap_or_default())?;
        visitor.caller.require(Role::Operator)?;
        let request = TriggerRequest {
            params: form
                .iter()
                .filter_map(|(k, v)| Some((k.strip_prefix("param.")?.to_owned(), v.clone())))
                .collect(),
            branch: field("branch").unwrap_or_default().trim().to_owned(),
            ..TriggerRequest::default()
        };
        api::submit(&state, &visitor.caller, &name, request).await
    }
    .await;
    match result {
        Ok(run) => super::see_other(format!("/runs/{}", run.0)),
        Err(err) => error_page(Some(&visitor), &err),
    }
}
