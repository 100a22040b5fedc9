//! The web console, served at `/` by `hodei server`: server-rendered HTML and one small
//! hand-written script and stylesheet compiled into the binary (no build step, no CDN).
//!
//! The console is a client of the API that happens to live in the same process: its pages
//! read through the same functions as the REST handlers (`routes::*::list`, `view`, ...), its
//! buttons call the REST handlers themselves, and its script reads JSON from `/api/v1` and
//! follows logs and events over the API's WebSockets, authenticated by the session cookie
//! ([`session`]) instead of a bearer token.
//!
//! Where to start reading:
//! - [`session`]: sign-in, the session cookie, CSRF, sign-out, and the [`session::Visitor`]
//!   extractor every page takes.
//! - [`html`]: the page frame and the live part a script refreshes.
//! - [`pipelines`], [`runs`], [`jobs`], [`queue`]: the pages and their actions.
//! - [`layout`] and [`graph`]: a run's jobs as an SVG graph, laid out by a pure function.
//! - `assets/`: `console.js` (live refresh, durations, keyboard), `log.js` (the log viewer)
//!   with `ansi.js` (its colours), and `console.css` (light and dark from the system's
//!   preference).
//!
//! ## Guarantees
//! - Every page needs a session; every action is a POST with the session's CSRF token, checked
//!   before the API handler runs, which checks the role again.
//! - A visitor sees only the buttons their role may use.
//! - Text from pipelines, runs and logs is never parsed as HTML: pages escape it, the script
//!   puts log text in text nodes.

pub mod graph;
pub mod html;
pub mod jobs;
pub mod layout;
pub mod pipelines;
pub mod queue;
pub mod runs;
pub mod session;

use actix_web::http::header;
use actix_web::{HttpResponse, web};

/// The console's script, stylesheet and log viewer, compiled in.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "ansi.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/ansi.js"),
    ),
    (
        "log.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/log.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
];

/// Adds the console's pages, actions and assets.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/", web::get().to(home))
        .route("/login", web::get().to(session::login_page))
        .route("/login", web::post().to(session::login))
        .route("/logout", web::post().to(session::logout))
        .route("/assets/{name}", web::get().to(asset))
        .route("/pipelines", web::get().to(pipelines::list))
        .route("/pipelines/{name}", web::get().to(pipelines::show))
        .route(
            "/pipelines/{name}/versions/{version}",
            web::get().to(pipelines::version),
        )
        .route("/pipelines/{name}/runs", web::post().to(pipelines::trigger))
        .route("/runs", web::get().to(runs::list))
        .route("/runs/{id}", web::get().to(runs::show))
        .route("/runs/{id}/{action}", web::post().to(runs::act))
        .route("/jobs/{id}", web::get().to(jobs::show))
        .route("/jobs/{id}/approve", web::post().to(jobs::approve))
        .route("/queue", web::get().to(queue::show))
        .route("/workers/{id}/{action}", web::post().to(queue::act));
}

/// `/`: the runs.
async fn home() -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/runs"))
        .finish()
}

/// `/assets/{name}`: a compiled-in file.
async fn asset(name: web::Path<String>) -> HttpResponse {
    match ASSETS.iter().find(|(file, _, _)| *file == name.as_str()) {
        Some((_, media, body)) => HttpResponse::Ok()
            .content_type(*media)
            .insert_header((header::CACHE_CONTROL, "no-cache"))
            .insert_header((header::X_CONTENT_TYPE_OPTIONS, "nosniff"))
            .body(*body),
        None => HttpResponse::NotFound().finish(),
    }
}

/// A redirect after a form's action (303: the browser follows with a GET).
fn see_other(location: String) -> HttpResponse {
    HttpResponse::SeeOther()
        .insert_header((header::LOCATION, location))
        .finish()
}
