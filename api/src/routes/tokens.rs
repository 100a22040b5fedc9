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

/// Whether `c` is invisible or changes how the text around it is shown: control characters,
/// zero-width ones, bidirectional overrides and isolates, and other format characters (Unicode
/// category Cf, and the fillers and variation selectors that render as nothing). A token's name
/// is read by people in listings and audit trails: it must look like what it is.
fn hidden(c: char) -> bool {
    c.is_control()
        || matches!(
            c,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{061C}'
                | '\u{115F}'
                | '\u{1160}'
                | '\u{17B4}'
                | '\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{2028}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF9}'..='\u{FFFB}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

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
        (status = 409, description = "An active token has this name", body = Problem, content_type = "application/problem+json"),
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
    let wanted: TokenRequest = request::json(&req, payload, &state.limits, None).await?;
    let name = wanted.name.trim();
    let expected = format!(
        "1 to {MAX_NAME} visible characters (no control, invisible or text-direction characters)"
    );
    if name.is_empty() || name.chars().count() > MAX_NAME {
        return Err(ApiError::argument("`name`", &wanted.name, &expected));
    }
    if let Some((at, c)) = name.char_indices().find(|(_, c)| hidden(*c)) {
        return Err(ApiError::argument(
            "`name`",
            &format!(
                "{} (U+{:04X} at byte {at})",
                name.escape_debug(),
                u32::from(c)
            ),
            &expected,
        ));
    }
    // One creation at a time: two requests for one name cannot both find it free.
    let _creating = state.creating_token.lock().await;
    let taken = state.tokens.tokens().await?;
    if let Some(same) = taken
        .iter()
        .find(|t| t.name.trim().to_lowercase() == name.to_lowercase())
    {
        return Err(ApiError::Conflict {
            what: format!(
                "a token named `{}` (token {}; names tell tokens apart, choose another)",
                same.name, same.id
            ),
        });
    }
    let secret = auth::generate()?;
    let now = state.tree.ports.clock.now();
    let record = auth::store_token(state.tokens.as_ref(), name, wanted.role, &secret, now).await?;
    tracing::info!(token_id = record.id, role = %record.role, by = %caller.name, "Token created.");
    Ok(HttpResponse::Created().json(CreatedToken {
        id: record.id,
        name: record.name,
        role: record.role,
        created: record.created.into(),
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

/// Revoke a token: it authenticates no one from now on, and its open log and event streams
/// end (close code 1008). Role: admin.
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
    state.streams.revoked(*id);
    tracing::info!(token_id = *id, by = %caller.name, "Token revoked.");
    Ok(HttpResponse::NoContent().finish())
}
