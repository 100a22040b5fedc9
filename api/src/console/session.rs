//! Console sessions: signing in with a token, the session cookie, CSRF tokens, signing out.
//!
//! Signing in exchanges an API token for a session: a random 256-bit id in an `HttpOnly`,
//! `SameSite=Strict` cookie (`Secure` over HTTPS), held on the server with the token's digest,
//! a CSRF token and an expiry. The session never holds the token itself.
//!
//! ## Guarantees
//! - Every request of a session authenticates the token's digest again: a revoked token ends
//!   its sessions at their next request, a token's role change is seen at once.
//! - A session expires [`TTL`] after sign-in, whatever its use.
//! - A state-changing request of a session needs its CSRF token (the `csrf` field of a form,
//!   the `X-Hodei-CSRF` header of a script's request) and, when the browser sends `Origin`,
//!   this server's origin; the sign-in form carries a token of its own (double-submit cookie).
//!
//! ## Assumptions
//! Sessions live in this process's memory: a restart signs everyone out, and with several
//! replicas a browser must stick to one.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Mutex, PoisonError};
use std::time::{Duration, Instant};

use actix_web::http::{Method, StatusCode, header};
use actix_web::{FromRequest, HttpRequest, HttpResponse, ResponseError, web};
use serde::Deserialize;

use crate::ApiState;
use crate::auth::{self, Caller};
use crate::error::ApiError;

/// The session cookie.
pub const COOKIE: &str = "hodei_session";
/// The cookie that carries the sign-in form's CSRF token.
const LOGIN_COOKIE: &str = "hodei_login";
/// The header a script sends its session's CSRF token in.
pub const CSRF_HEADER: &str = "x-hodei-csrf";
/// How long a session lasts.
pub const TTL: Duration = Duration::from_secs(12 * 3600);
/// The most sessions held at once; the oldest go first.
const MAX_SESSIONS: usize = 10_000;

/// One signed-in browser.
#[derive(Debug, Clone)]
pub struct Session {
    /// The digest of the token it signed in with.
    pub digest: [u8; 32],
    /// What its forms and scripts must send back.
    pub csrf: String,
    expires: Instant,
}

/// The sessions of this server.
pub struct Sessions {
    ttl: Duration,
    held: Mutex<HashMap<String, Session>>,
}

impl Default for Sessions {
    fn default() -> Sessions {
        Sessions::new(TTL)
    }
}

impl Sessions {
    /// Sessions that last `ttl`.
    pub fn new(ttl: Duration) -> Sessions {
        Sessions {
            ttl,
            held: Mutex::default(),
        }
    }

    /// A new session for the token with `digest`: its id and its CSRF token.
    pub fn open(&self, digest: [u8; 32]) -> Result<(String, Session), ApiError> {
        let id = random()?;
        let session = Session {
            digest,
            csrf: random()?,
            expires: Instant::now() + self.ttl,
        };
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        let now = Instant::now();
        held.retain(|_, s| s.expires > now);
        if held.len() >= MAX_SESSIONS
            && let Some(oldest) = held
                .iter()
                .min_by_key(|(_, s)| s.expires)
                .map(|(k, _)| k.clone())
        {
            held.remove(&oldest);
        }
        held.insert(id.clone(), session.clone());
        Ok((id, session))
    }

    /// The session `id`, unless it is unknown or expired.
    pub fn get(&self, id: &str) -> Option<Session> {
        let mut held = self.held.lock().unwrap_or_else(PoisonError::into_inner);
        match held.get(id) {
            Some(session) if session.expires > Instant::now() => Some(session.clone()),
            Some(_) => {
                held.remove(id);
                None
            }
            None => None,
        }
    }

    /// Ends the session `id`.
    pub fn close(&self, id: &str) {
        self.held
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .remove(id);
    }
}

/// 256 random bits, URL-safe.
fn random() -> Result<String, ApiError> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|err| ApiError::Internal {
        reason: format!("no randomness for a session: {err}"),
    })?;
    Ok(auth::base64url(&bytes))
}

/// The value of cookie `name` in the request.
pub fn cookie<'a>(req: &'a HttpRequest, name: &str) -> Option<&'a str> {
    req.headers()
        .get_all(header::COOKIE)
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

/// A `Set-Cookie` value: `HttpOnly`, `SameSite=Strict`, on every path, `Secure` over HTTPS.
fn set_cookie(req: &HttpRequest, name: &str, value: &str, max_age: Duration) -> String {
    let secure = match req.connection_info().scheme() {
        "https" => "; Secure",
        _ => "",
    };
    format!(
        "{name}={value}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{secure}",
        max_age.as_secs()
    )
}

/// Whether the request may change state: not GET, HEAD or OPTIONS.
fn changes_state(method: &Method) -> bool {
    !matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

/// Whether the request's `Origin`, when it has one, is this server.
fn same_origin(req: &HttpRequest) -> bool {
    let Some(origin) = req.headers().get(header::ORIGIN) else {
        return true;
    };
    let info = req.connection_info();
    origin.to_str().ok() == Some(format!("{}://{}", info.scheme(), info.host()).as_str())
}

/// Whether two secrets are equal, in a time that does not tell where they differ.
fn same_secret(a: &str, b: &str) -> bool {
    auth::same_digest(&auth::digest(a), &auth::digest(b))
}

/// The session a request of the API carries in its cookie instead of a bearer token: its id
/// and token digest, `None` without a session cookie. A state-changing request must also carry
/// the CSRF header, and come from this origin.
pub(crate) fn api_session(
    req: &HttpRequest,
    sessions: &Sessions,
) -> Result<Option<(String, [u8; 32])>, ApiError> {
    let Some(id) = cookie(req, COOKIE) else {
        return Ok(None);
    };
    let session = sessions.get(id).ok_or(ApiError::Unauthenticated {
        reason: "the console session expired or ended: sign in again",
    })?;
    if !same_origin(req) {
        return Err(ApiError::Unauthenticated {
            reason: "a session cookie from another origin is not accepted",
        });
    }
    if changes_state(req.method()) {
        let sent = req
            .headers()
            .get(CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        if !same_secret(sent, &session.csrf) {
            return Err(ApiError::Unauthenticated {
                reason: "a change made with a session cookie needs its `X-Hodei-CSRF` header",
            });
        }
    }
    Ok(Some((id.to_owned(), session.digest)))
}

/// A signed-in visitor of the console: who they are and their session's CSRF token.
#[derive(Debug, Clone)]
pub struct Visitor {
    pub caller: Caller,
    pub csrf: String,
    session: String,
}

impl Visitor {
    /// Fails unless `sent` is the session's CSRF token and the request comes from here.
    pub fn check(&self, req: &HttpRequest, sent: &str) -> Result<(), ApiError> {
        if !same_origin(req) || !same_secret(sent, &self.csrf) {
            return Err(ApiError::argument(
                "the form's `csrf` field",
                "(not this session's)",
                "the token of the page the form came from: reload the page",
            ));
        }
        Ok(())
    }
}

/// A console page asked for without a valid session: off to the sign-in page, and back after.
#[derive(Debug)]
pub struct SignInFirst {
    next: String,
}

impl std::fmt::Display for SignInFirst {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "sign in to see {}", self.next)
    }
}

impl ResponseError for SignInFirst {
    fn status_code(&self) -> StatusCode {
        StatusCode::SEE_OTHER
    }

    fn error_response(&self) -> HttpResponse {
        let next = super::html::encode(&self.next);
        HttpResponse::SeeOther()
            .insert_header((header::LOCATION, format!("/login?next={next}")))
            .finish()
    }
}

impl FromRequest for Visitor {
    type Error = SignInFirst;
    type Future = Pin<Box<dyn Future<Output = Result<Visitor, SignInFirst>>>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let next = match req.method() {
            &Method::GET => req
                .uri()
                .path_and_query()
                .map_or("/".to_owned(), |p| p.to_string()),
            _ => "/".to_owned(),
        };
        let state = req.app_data::<web::Data<ApiState>>().cloned();
        let id = cookie(req, COOKIE).map(str::to_owned);
        Box::pin(async move {
            let fail = || SignInFirst { next: next.clone() };
            let (state, id) = (state.ok_or_else(fail)?, id.ok_or_else(fail)?);
            let session = state.sessions.get(&id).ok_or_else(fail)?;
            match auth::authenticate_digest(state.tokens.as_ref(), session.digest).await {
                Ok(caller) => Ok(Visitor {
                    caller,
                    csrf: session.csrf,
                    session: id,
                }),
                Err(_) => {
                    state.sessions.close(&id);
                    Err(fail())
                }
            }
        })
    }
}

/// Where to go after signing in: a path of this site, `/` otherwise.
fn safe_next(next: Option<&str>) -> &str {
    match next {
        Some(path) if path.starts_with('/') && !path.starts_with("//") && !path.contains('\\') => {
            path
        }
        _ => "/",
    }
}

/// The sign-in page's query.
#[derive(Debug, Deserialize)]
pub struct LoginQuery {
    next: Option<String>,
}

/// `GET /login`: the sign-in form, with a fresh CSRF token in the form and in a cookie.
pub async fn login_page(
    req: HttpRequest,
    query: web::Query<LoginQuery>,
) -> Result<HttpResponse, ApiError> {
    let nonce = random()?;
    let next = safe_next(query.next.as_deref()).to_owned();
    login_form(&req, StatusCode::OK, &nonce, &next, None)
}

/// The sign-in form with `nonce` in it and in its cookie.
fn login_form(
    req: &HttpRequest,
    status: StatusCode,
    nonce: &str,
    next: &str,
    problem: Option<&str>,
) -> Result<HttpResponse, ApiError> {
    let mut response = super::html::html_response(status, super::html::login(nonce, next, problem));
    let cookie = set_cookie(req, LOGIN_COOKIE, nonce, Duration::from_secs(3600));
    let value = header::HeaderValue::from_str(&cookie).map_err(|err| ApiError::Internal {
        reason: format!("a cookie that is no header value: {err}"),
    })?;
    response.headers_mut().append(header::SET_COOKIE, value);
    Ok(response)
}

/// The sign-in form.
#[derive(Debug, Deserialize)]
pub struct LoginForm {
    token: String,
    csrf: String,
    next: Option<String>,
}

/// `POST /login`: checks the token and opens a session, or shows the form again with why not.
pub async fn login(
    req: HttpRequest,
    state: web::Data<ApiState>,
    form: web::Form<LoginForm>,
) -> Result<HttpResponse, ApiError> {
    let next = safe_next(form.next.as_deref()).to_owned();
    let expected = cookie(&req, LOGIN_COOKIE).unwrap_or_default();
    let refused = |status: StatusCode, why: &str| -> Result<HttpResponse, ApiError> {
        login_form(&req, status, &random()?, &next, Some(why))
    };
    if expected.is_empty() || !same_secret(&form.csrf, expected) || !same_origin(&req) {
        return refused(
            StatusCode::FORBIDDEN,
            "The form expired or came from another site: sign in again.",
        );
    }
    let digest = auth::digest(form.token.trim());
    let caller = match auth::authenticate_digest(state.tokens.as_ref(), digest).await {
        Ok(caller) => caller,
        Err(ApiError::Unauthenticated { reason }) => {
            return refused(
                StatusCode::UNAUTHORIZED,
                &format!("This token cannot sign in: {reason}."),
            );
        }
        Err(err) => return Err(err),
    };
    let (id, _) = state.sessions.open(digest)?;
    tracing::info!(token = %caller.name, role = %caller.role, "Console session opened.");
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, next))
        .insert_header((header::SET_COOKIE, set_cookie(&req, COOKIE, &id, TTL)))
        .append_header((
            header::SET_COOKIE,
            set_cookie(&req, LOGIN_COOKIE, "", Duration::ZERO),
        ))
        .finish())
}

/// A form that only carries its CSRF token.
#[derive(Debug, Deserialize)]
pub struct CsrfForm {
    pub csrf: String,
}

/// `POST /logout`: ends the session and forgets its cookie.
pub async fn logout(
    req: HttpRequest,
    state: web::Data<ApiState>,
    visitor: Visitor,
    form: web::Form<CsrfForm>,
) -> Result<HttpResponse, ApiError> {
    visitor.check(&req, &form.csrf)?;
    state.sessions.close(&visitor.session);
    tracing::info!(token = %visitor.caller.name, "Console session closed.");
    Ok(HttpResponse::SeeOther()
        .insert_header((header::LOCATION, "/login"))
        .insert_header((
            header::SET_COOKIE,
            set_cookie(&req, COOKIE, "", Duration::ZERO),
        ))
        .finish())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_session_is_found_until_it_expires_or_is_closed() {
        let sessions = Sessions::new(Duration::from_secs(60));
        let (id, session) = sessions.open([7; 32]).unwrap();
        assert_eq!(sessions.get(&id).unwrap().digest, [7; 32]);
        assert_eq!(session.csrf.len(), 43);
        assert_ne!(session.csrf, id);
        sessions.close(&id);
        assert!(sessions.get(&id).is_none());

        let short = Sessions::new(Duration::ZERO);
        let (id, _) = short.open([1; 32]).unwrap();
        assert!(short.get(&id).is_none(), "an expired session is gone");
    }

    #[test]
    fn next_stays_on_this_site() {
        assert_eq!(safe_next(Some("/runs?state=failed")), "/runs?state=failed");
        assert_eq!(safe_next(Some("//evil.example/")), "/");
        assert_eq!(safe_next(Some("https://evil.example/")), "/");
        assert_eq!(safe_next(Some("/\\evil")), "/");
        assert_eq!(safe_next(None), "/");
    }

    #[test]
    fn cookies_are_read_by_name() {
        let req = actix_web::test::TestRequest::default()
            .insert_header((header::COOKIE, "a=1; hodei_session=xyz; b=2"))
            .to_http_request();
        assert_eq!(cookie(&req, COOKIE), Some("xyz"));
        assert_eq!(cookie(&req, "c"), None);
        let set = set_cookie(&req, COOKIE, "v", TTL);
        assert!(
            set.contains("HttpOnly") && set.contains("SameSite=Strict"),
            "{set}"
        );
        assert!(!set.contains("Secure"), "plain HTTP: {set}");
    }

    #[test]
    fn sign_in_links_keep_where_the_visitor_was() {
        let response = SignInFirst {
            next: "/runs?pipeline=a b".into(),
        }
        .error_response();
        assert_eq!(
            response.headers().get(header::LOCATION).unwrap(),
            "/login?next=%2Fruns%3Fpipeline%3Da%20b"
        );
    }
}
