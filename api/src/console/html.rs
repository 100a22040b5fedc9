//! The console's page frame and the small pieces every page uses: times, durations, states,
//! action buttons. Markup is built with `maud`, which escapes every value it inserts: a
//! pipeline named `<script>` is shown as text.

use actix_web::http::{StatusCode, header};
use actix_web::{HttpRequest, HttpResponse};
use hodei_domain::model::Role;

use crate::views::Time;
use maud::{DOCTYPE, Markup, html};

use super::session::Visitor;
use crate::error::ApiError;

/// The header a script sends to get only a page's live part.
pub const FRAGMENT_HEADER: &str = "hodei-fragment";

/// What the console's pages send besides their HTML: no inline script or style may run, no
/// other site may frame them.
const CSP: &str = "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
    connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'";

/// Which section of the navigation a page belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Section {
    Runs,
    Pipelines,
    Queue,
}

/// A page: its title, its section, and its body; `live` is the part a script refreshes when
/// what it shows changes, with how it learns of changes (`events`, `run:ID`, `poll`).
pub struct Page {
    pub title: String,
    pub section: Section,
    pub before: Markup,
    pub live: Option<(String, Markup)>,
    pub after: Markup,
}

impl Page {
    /// The whole page, or only its live part when a script asks for it.
    pub fn respond(self, req: &HttpRequest, visitor: &Visitor) -> HttpResponse {
        if req.headers().contains_key(FRAGMENT_HEADER)
            && let Some((_, live)) = &self.live
        {
            return html_response(StatusCode::OK, live.0.clone());
        }
        html_response(StatusCode::OK, self.render(visitor))
    }

    fn render(&self, visitor: &Visitor) -> String {
        frame(
            &self.title,
            Some(visitor),
            Some(self.section),
            html! {
                (self.before)
                @if let Some((source, live)) = &self.live {
                    div #live data-live=(source) aria-live="polite" { (live) }
                }
                (self.after)
            },
        )
    }
}

/// An HTML answer with the console's security headers.
pub fn html_response(status: StatusCode, body: String) -> HttpResponse {
    HttpResponse::build(status)
        .content_type("text/html; charset=utf-8")
        .insert_header((header::CONTENT_SECURITY_POLICY, CSP))
        .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
        .insert_header((header::REFERRER_POLICY, "same-origin"))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .body(body)
}

/// The document around a page's content.
pub fn frame(
    title: &str,
    visitor: Option<&Visitor>,
    section: Option<Section>,
    content: Markup,
) -> String {
    let current = |s: Section| (section == Some(s)).then_some("page");
    html! {
        (DOCTYPE)
        html lang="en" {
            head {
                meta charset="utf-8";
                meta name="viewport" content="width=device-width, initial-scale=1";
                meta name="color-scheme" content="light dark";
                @if let Some(visitor) = visitor {
                    meta name="hodei-csrf" content=(visitor.csrf);
                }
                title { (title) " · Hodei" }
                link rel="stylesheet" href="/assets/console.css";
                script src="/assets/console.js" defer {}
            }
            body {
                a.skip href="#main" { "Skip to content" }
                header.top {
                    a.brand href="/" { "Hodei" }
                    @if let Some(visitor) = visitor {
                        nav aria-label="Sections" {
                            a href="/runs" aria-current=[current(Section::Runs)] { "Runs" }
                            a href="/pipelines" aria-current=[current(Section::Pipelines)] { "Pipelines" }
                            a href="/queue" aria-current=[current(Section::Queue)] { "Queue & workers" }
                        }
                        div.who {
                            span { (visitor.caller.name) " " span.role { (visitor.caller.role.to_string()) } }
                            form method="post" action="/logout" {
                                input type="hidden" name="csrf" value=(visitor.csrf);
                                button type="submit" { "Sign out" }
                            }
                        }
                    }
                }
                main #main tabindex="-1" {
                    h1 { (title) }
                    (content)
                }
            }
        }
    }
    .0
}

/// An error as a page, with the status the API would answer.
pub fn error_page(visitor: Option<&Visitor>, err: &ApiError) -> HttpResponse {
    use actix_web::ResponseError;
    let status = err.status_code();
    if status.is_server_error() {
        tracing::error!(code = err.code(), error = %err, "Console page failed.");
    }
    let body = frame(
        status.canonical_reason().unwrap_or("Error"),
        visitor,
        None,
        html! {
            p.error role="alert" { (err.to_string()) }
            @if let ApiError::InvalidParameters { errors } = err {
                ul { @for e in errors { li { (e) } } }
            }
            p { a href="/runs" { "Runs" } " · " a href="/pipelines" { "Pipelines" } }
        },
    );
    html_response(status, body)
}

/// The sign-in page.
pub fn login(nonce: &str, next: &str, problem: Option<&str>) -> String {
    frame(
        "Sign in",
        None,
        None,
        html! {
            @if let Some(problem) = problem {
                p.error role="alert" { (problem) }
            }
            form.login method="post" action="/login" {
                input type="hidden" name="csrf" value=(nonce);
                input type="hidden" name="next" value=(next);
                label for="token" { "API token" }
                input #token type="password" name="token" autocomplete="current-password"
                    required autofocus;
                p.hint { "A token from " code { "hodei tokens create" } " or the server's "
                    code { "admin.token" } ". The console keeps a session; the token stays here." }
                button type="submit" { "Sign in" }
            }
        },
    )
}

/// A form with one button that posts to `action`, for a visitor whose role allows `needed`;
/// nothing otherwise (the server refuses anyway).
pub fn action(visitor: &Visitor, needed: Role, action: &str, label: &str, class: &str) -> Markup {
    html! {
        @if visitor.caller.role.allows(needed) {
            form.action method="post" action=(action) {
                input type="hidden" name="csrf" value=(visitor.csrf);
                button type="submit" class=(class) { (label) }
            }
        }
    }
}

/// A state, as a badge whose text says it (colour is not the only cue).
pub fn state(name: &str) -> Markup {
    html! { span class={ "state state-" (name) } { (name.replace('_', " ")) } }
}

/// A time, machine-readable and in UTC for people (the script shows it in local time).
pub fn time(at: Time) -> Markup {
    html! { time datetime=(at) { (utc(at.millis())) } }
}

/// How long from `start` to `end`, or until now (kept current by the script) when running.
pub fn elapsed(start: Option<Time>, end: Option<Time>) -> Markup {
    match (start, end) {
        (Some(s), Some(e)) => {
            html! { span.duration { (crate::views::short_duration(e.millis() - s.millis())) } }
        }
        (Some(s), None) => html! {
            span.duration data-since=(s.millis()) { (crate::views::short_duration(now_ms() - s.millis())) }
        },
        _ => html! { span.duration { "–" } },
    }
}

/// `text` as one path segment or query value, percent-encoded.
pub fn encode(text: &str) -> String {
    text.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// Milliseconds since the epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as i64)
}

/// `ms` since the epoch as `YYYY-MM-DD HH:MM:SS UTC`.
pub fn utc(ms: i64) -> String {
    let iso = hodei_domain::ids::Timestamp(ms).rfc3339();
    format!("{} {} UTC", &iso[..10], &iso[11..19])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn utc_times_are_civil_dates() {
        assert_eq!(utc(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(utc(1_796_596_422_000), "2026-12-06 22:33:42 UTC");
    }

    #[test]
    fn values_are_escaped() {
        let markup = state("<script>");
        assert_eq!(
            markup.0,
            "<span class=\"state state-&lt;script&gt;\">&lt;script&gt;</span>"
        );
    }
}
