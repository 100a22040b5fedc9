//! API tokens: create (the secret is shown once), list, revoke. Admin only.

use actix_web::{HttpRequest, HttpResponse, web};
use hodei_domain::model::Role;

use crate::ApiState;
use crate::auth::{self, Caller};
use crate::error::{ApiError, Problem};
use crate::request;
use crate::views::{CreatedToken, TokenList, TokenRequest, TokenView};

/// The longest token name.
const MAX_NAME: usize = 100;

/// Create a token. Its secret is in the answer, once; only its digest is stored. Role: admin.
#[utoipa::path(
    post,
    path = "/api/v1/tokens",
    tag = "tokens",
    request_body(content = TokenRequest, content_type = "application/json"),
    responses(
        (status = 201, body = CreatedToken),
        (status = 400, body = Problem, content_type = "application/problem+json"),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn create_token(
    state: web::Data<ApiState>,
    caller: Caller,
    req: HttpRequest,
    payload: web::Payload,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let wanted: TokenRequest = request::json(&req, payload, state.limits.max_body, None).await?;
    let name = wanted.name.trim();
    if name.is_empty() || name.chars().count() > MAX_NAME || name.chars().any(char::is_control) {
        return Err(ApiError::argument(
            "`name`",
            &wanted.name,
            &format!("1 to {MAX_NAME} printable characters"),
        ));
    }
    let secret = auth::generate()?;
    let now = state.tree.ports.clock.now();
    let record = auth::store_token(state.tokens.as_ref(), name, wanted.role, &secret, now).await?;
    tracing::info!(token_id = record.id, role = %record.role, by = %caller.name, "Token created.");
    Ok(HttpResponse::Created().json(CreatedToken {
        id: record.id,
        name: record.name,
        role: record.role,
        created: record.created.0,
        token: secret,
    }))
}

/// List the tokens that are not revoked, without their secrets. Role: admin.
#[utoipa::path(
    get,
    path = "/api/v1/tokens",
    tag = "tokens",
    responses(
        (status = 200, body = TokenList),
        (status = 403, body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn list_tokens(
    state: web::Data<ApiState>,
    caller: Caller,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let tokens = state.tokens.tokens().await?;
    Ok(HttpResponse::Ok().json(TokenList {
        items: tokens.iter().map(TokenView::from).collect(),
    }))
}

/// Revoke a token: it authenticates no one from now on. Role: admin.
#[utoipa::path(
    delete,
    path = "/api/v1/tokens/{id}",
    tag = "tokens",
    params(("id" = u64, Path, description = "The token's id")),
    responses(
        (status = 204, description = "Revoked"),
        (status = 404, description = "No such token, or already revoked", body = Problem, content_type = "application/problem+json"),
    ),
    security(("bearer" = []))
)]
pub async fn revoke_token(
    state: web::Data<ApiState>,
    caller: Caller,
    id: web::Path<u64>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Admin)?;
    let now = state.tree.ports.clock.now();
    if !state.tokens.revoke_token(*id, now).await? {
        return Err(ApiError::NotFound {
            what: format!("token {id} (or it was already revoked)"),
        });
    }
    tracing::info!(token_id = *id, by = %caller.name, "Token revoked.");
    Ok(HttpResponse::NoContent().finish())
}
