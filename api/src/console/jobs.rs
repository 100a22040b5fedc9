//! A job: its state and steps (refreshed live), each step linked to the log line where its
//! output starts, its approval, and the log viewer (`assets/log.js`), which reads the log by
//! line from `/api/v1/jobs/{id}/log/lines`, searches it on the server and follows it over the
//! log WebSocket.

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::ids::JobId;
use hodei_domain::model::Role;
use maud::html;

use super::html::{Page, Section, action, elapsed, error_page, state};
use super::session::{CsrfForm, Visitor};
use crate::ApiState;
use crate::error::ApiError;
use crate::routes::{jobs as api, runs};

/// `GET /jobs/{id}`: the job and its log viewer.
pub async fn show(
    req: HttpRequest,
    state_: web::Data<ApiState>,
    visitor: Visitor,
    id: web::Path<u64>,
) -> HttpResponse {
    match page(&state_, &visitor, JobId(*id)).await {
        Ok(page) => page.respond(&req, &visitor),
        Err(err) => error_page(Some(&visitor), &err),
    }
}

/// One started step attempt: its label, state, exit and first log line.
struct StepLine {
    label: String,
    state: String,
    exit: Option<i32>,
    line: u64,
}

async fn page(state_: &ApiState, visitor: &Visitor, job: JobId) -> Result<Page, ApiError> {
    let (record, position) = api::locate(state_, job).await?;
    let run = record.id;
    let stored = &record.jobs[position];
    let view = runs::view(state_, run).await?;
    let shown = view
        .jobs
        .iter()
        .find(|j| j.id == job.0)
        .ok_or_else(|| ApiError::NotFound {
            what: format!("job {}", job.0),
        })?;
    let plan = super::runs::plan_of(record.source.clone()).await;
    let gate = plan
        .as_ref()
        .and_then(|p| p.jobs.get(position))
        .map_or(Role::Operator, api::approver);
    let names: Vec<String> = plan
        .as_ref()
        .and_then(|p| p.jobs.get(position))
        .map(|j| {
            j.steps
                .iter()
                .map(|s| s.name.clone().unwrap_or_else(|| first_line(&s.run)))
                .collect()
        })
        .unwrap_or_default();
    let logs = state_.tree.ports.logs.as_ref();
    let mut steps = Vec::new();
    for step in &stored.steps {
        let Some(offset) = step.log_offset else {
            continue;
        };
        let name = names
            .get(step.index as usize)
            .cloned()
            .unwrap_or_else(|| format!("step {}", step.index + 1));
        // The list numbers the steps; a retried one says which try it is.
        let mut label = name;
        if stored.attempt.get() > 1 || step.attempt.get() > 1 {
            label.push_str(&format!(
                " (job attempt {}, try {})",
                step.job_attempt.get(),
                step.attempt.get()
            ));
        }
        steps.push(StepLine {
            label,
            state: step.state.name().to_owned(),
            exit: step.exit.and_then(|e| e.code),
            line: state_
                .lines
                .line_at(logs, job, offset)
                .await
                .map_err(ApiError::logs)?,
        });
    }
    let finished = matches!(
        shown.state.as_str(),
        "succeeded" | "failed" | "timed_out" | "cancelled" | "skipped"
    );
    let live = html! {
        dl.summary {
            dt { "State" } dd { (state(&shown.state)) }
            dt { "Run" } dd { a href={ "/runs/" (run.0) } { "#" (run.0) " " (view.pipeline) } }
            dt { "Attempt" } dd { (shown.attempt) }
            dt { "Worker" } dd { (shown.worker.as_deref().unwrap_or("–")) }
            dt { "Duration" } dd { (elapsed(shown.started, shown.finished)) }
        }
        @if shown.state == "waiting_approval" {
            div.actions {
                (action(visitor, gate, &format!("/jobs/{}/approve", job.0), "Approve", "primary"))
            }
        }
        @if !steps.is_empty() {
            nav.steps aria-label="Steps" {
                ol {
                    @for step in &steps {
                        li {
                            a href={ "#L" (step.line) } data-line=(step.line) { (step.label) }
                            " " (state(&step.state))
                            @if let Some(code) = step.exit { " exit " (code) }
                        }
                    }
                }
            }
        }
    };
    Ok(Page {
        title: format!("Job {} of run #{}", shown.name, run.0),
        section: Section::Runs,
        before: html! {},
        live: Some((format!("run:{}", run.0), live)),
        after: html! {
            section.viewer aria-labelledby="log-title" {
                h2 #log-title { "Log" }
                div.toolbar role="toolbar" aria-label="Log" {
                    button #log-follow type="button" aria-pressed="false" disabled[finished]
                        title="Follow the live output (f)" { "Follow" }
                    button #log-top type="button" title="First line (g)" { "Top" }
                    button #log-bottom type="button" title="Last line (G)" { "Bottom" }
                    button #log-error type="button" title="First line with “error” (e)" { "First error" }
                    form #log-search role="search" {
                        label for="log-q" class="sr" { "Search the log" }
                        input #log-q type="search" name="q" placeholder="Search the whole log (/)" autocomplete="off";
                        button type="submit" { "Find" }
                        button #log-prev type="button" disabled title="Previous match (N)" { "↑" }
                        button #log-next type="button" disabled title="Next match (n)" { "↓" }
                    }
                    span #log-status role="status" {}
                }
                div #log class="log" data-job=(job.0) data-finished=(finished)
                    tabindex="0" role="log" aria-label="Job log" {}
            }
            script src="/assets/ansi.js" defer {}
            script src="/assets/log.js" defer {}
        },
    })
}

/// The first line of a script, as a step's name when it has none.
fn first_line(script: &str) -> String {
    let line = script.lines().find(|l| !l.trim().is_empty()).unwrap_or("");
    let mut name: String = line.trim().chars().take(60).collect();
    if line.trim().chars().count() > 60 || script.trim().lines().count() > 1 {
        name.push('…');
    }
    name
}

/// `POST /jobs/{id}/approve`: the API's handler, then back to the job's run.
pub async fn approve(
    req: HttpRequest,
    state_: web::Data<ApiState>,
    visitor: Visitor,
    id: web::Path<u64>,
    form: web::Form<CsrfForm>,
) -> HttpResponse {
    let job = *id;
    let result = async {
        visitor.check(&req, &form.csrf)?;
        api::approve_job(state_.clone(), visitor.caller.clone(), web::Path::from(job)).await?;
        Ok::<_, ApiError>(state_.tree.ports.store.job_run(JobId(job)).await?)
    }
    .await;
    match result {
        Ok(Some(run)) => super::see_other(format!("/runs/{}", run.0)),
        Ok(None) => super::see_other(format!("/jobs/{job}")),
        Err(err) => error_page(Some(&visitor), &err),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unnamed_steps_are_named_by_their_first_line() {
        assert_eq!(first_line("cargo test"), "cargo test");
        assert_eq!(first_line("\n  make\nmake install"), "make…");
    }
}
