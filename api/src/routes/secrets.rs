//! Stored secrets: set (create or replace), list, delete. A value goes in and never comes out:
//! no endpoint answers one. Values are sealed at rest by the [`SecretVault`] behind
//! [`ApiState::secrets`]; runs get them by name (`secrets:` of the pipeline).
//!
//! [`SecretVault`]: hodei_domain::ports::SecretVault

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::model::{Name, Role};
use hodei_domain::ports::SecretScope;
use hodei_domain::validate::is_secret_name;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::{ApiError, Problem};
use crate::request;
use crate::views::{SecretList, SecretRequest, SecretView};

/// The largest value, in bytes.
pub const MAX_SECRET_BYTES: usize = 64 * 1024;

/// The scope of a path `{scope}/{owner}`: `pipeline` or `repository`, and a valid name.
fn scope(kind: &str, owner: &str) -> Result<SecretScope, ApiError> {
    let Some(scope) = SecretScope::new(kind, owner) else {
        return Err(ApiError::argument(
            "the scope",
            kind,
            "`pipeline` or `repository`",
        ));
    };
    if let Err(err) = owner.parse::<Name>() {
        return Err(ApiError::argument(
            &format!("the {kind}'s name"),
            owner,
            err.expected,
        ));
    }
    Ok(scope)
}

fn secret_name(name: &str) -> Result<(), ApiError> {
    match is_secret_name(name) {
        true => Ok(()),
        false => Err(ApiError::argument(
            "the secret's name",
            name,
            "a letter or `_`, then letters, digits or `_`, not starting with `HODEI_` (steps get it as that variable)",
        )),
    }
}

/// Set a secret: create it, or replace its value.
///
/// 201 when it is new, 200 when its value was replaced; the answer never holds the value.
/// Role: admin.
#[utoipa::path(
    put,
    path = "/api/v1/secrets/{scope}/{owner}/{name}",
    tag = "secrets",
    params(
        ("scope" = String, Path, description = "`pipeline` or `repository`"),
        ("owner" = String, Path, description = "The pipeline's or the repository's name"),
        ("name" = String, Path, description = "The secret's name: the variable steps get it as"),
    ),
    request_body(content = SecretRequest, content_type = "application/json"),
    responses(
        (status = 201, description = "Stored, new", body = SecretView),
        (status = 200, description = "Its value replaced", body = SecretView),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn put_secret(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (kind, owner, name) = path.into_inner();
    let scope = scope(&kind, &owner)?;
    secret_name(&name)?;
    let limits = crate::Limits {
        max_body: state.limits.max_body.max(MAX_SECRET_BYTES * 2),
        ..state.limits
    };
    let body: SecretRequest = request::json(&req, payload, &limits, None).await?;
    if body.value.is_empty() || body.value.len() > MAX_SECRET_BYTES || body.value.contains('\0') {
        return Err(ApiError::InvalidArgument {
            name: "`value`".into(),
            value: format!("({} bytes, not shown)", body.value.len()),
            expected: format!("1 to {MAX_SECRET_BYTES} bytes of UTF-8 without NUL"),
        });
    }
    let now = state.tree.ports.clock.now();
    let (info, new) = state
        .secrets
        .put_secret(&scope, &name, &body.value, now)
        .await?;
    tracing::info!(scope = %scope, secret = %name, new, by = %caller.name, "Secret stored.");
    let view = SecretView::from(&info);
    Ok(match new {
        true => HttpResponse::Created().json(view),
        false => HttpResponse::Ok().json(view),
    })
}

/// Which secrets to list.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct SecretQuery {
    /// Only this scope: `pipeline` or `repository` (with `owner`).
    scope: Option<String>,
    /// Only the secrets of this pipeline or repository (with `scope`).
    owner: Option<String>,
}

/// List stored secrets: their scopes, names and times, never their values. Role: operator.
#[utoipa::path(
    get,
    path = "/api/v1/secrets",
    tag = "secrets",
    params(SecretQuery),
    responses(
        (status = 200, body = SecretList),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_secrets(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<SecretQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Operator)?;
    let scope = match (&query.scope, &query.owner) {
        (Some(kind), Some(owner)) => Some(scope(kind, owner)?),
        (None, None) => None,
        (Some(_), None) | (None, Some(_)) => {
            return Err(ApiError::argument(
                "`scope` and `owner`",
                "one of them",
                "both (`?scope=pipeline&owner=web`) or neither",
            ));
        }
    };
    let found = state.secrets.secrets(scope.as_ref()).await?;
    Ok(HttpResponse::Ok().json(SecretList {
        items: found.iter().map(SecretView::from).collect(),
    }))
}

/// Delete a secret. Runs that name it can no longer start. Role: admin.
#[utoipa::path(
    delete,
    path = "/api/v1/secrets/{scope}/{owner}/{name}",
    tag = "secrets",
    params(
        ("scope" = String, Path, description = "`pipeline` or `repository`"),
        ("owner" = String, Path, description = "The pipeline's or the repository's name"),
        ("name" = String, Path, description = "The secret's name"),
    ),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn delete_secret(
    state: web::Data<ApiState>,
    caller: Caller,
    path: web::Path<(String, String, String)>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let (kind, owner, name) = path.into_inner();
    let scope = scope(&kind, &owner)?;
    secret_name(&name)?;
    if !state.secrets.delete_secret(&scope, &name).await? {
        return Err(ApiError::NotFound {
            what: format!("secret `{name}` of {scope}"),
        });
    }
    tracing::info!(scope = %scope, secret = %name, by = %caller.name, "Secret deleted.");
    Ok(HttpResponse::NoContent().finish())
}

/// The secrets of `names` that neither scope of a run of `pipeline` (from `repository`) holds.
pub(crate) async fn missing(
    state: &ApiState,
    pipeline: &str,
    repository: Option<&str>,
    names: &[String],
) -> Result<Vec<String>, ApiError> {
    let scopes = SecretScope::of_run(pipeline, repository);
    let mut missing = Vec::new();
    for name in names {
        if state.tree.ports.secrets.get(&scopes, name).await?.is_none() {
            missing.push(name.clone());
        }
    }
    Ok(missing)
}
