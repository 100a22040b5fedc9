//! The audit trail: every domain event, numbered in the order it was recorded.

use actix_web::{HttpResponse, web};
use hodei_domain::model::Role;
use serde::Deserialize;
use utoipa::IntoParams;

use crate::ApiState;
use crate::auth::Caller;
use crate::error::ApiError;
use crate::request::page_limit;
use crate::views::{ApiEvent, EventPage, EventView};

/// Paging of events.
#[derive(Debug, Deserialize, IntoParams)]
#[into_params(parameter_in = Query)]
#[serde(deny_unknown_fields)]
pub struct EventQuery {
    /// Events numbered after this one (default 0: from the first).
    after: Option<u64>,
    /// Items per page, 1 to 500 (default 50).
    #[param(minimum = 1, maximum = 500)]
    limit: Option<u32>,
}

/// Read the audit trail, oldest first. Role: viewer.
#[utoipa::path(
    get,
    path = "/api/v1/events",
    tag = "events",
    params(EventQuery),
    responses((status = 200, body = EventPage)),
    security(("bearer" = []))
)]
pub async fn list_events(
    state: web::Data<ApiState>,
    caller: Caller,
    query: web::Query<EventQuery>,
) -> Result<HttpResponse, ApiError> {
    caller.require(Role::Viewer)?;
    let limit = page_limit(query.limit)?;
    let after = query.after.unwrap_or(0);
    let events = state.tree.ports.store.events(after, limit).await?;
    let next_after = events.last().map_or(after, |(seq, _)| *seq);
    Ok(HttpResponse::Ok().json(EventPage {
        items: events
            .into_iter()
            .map(|(seq, event)| EventView {
                seq,
                event: ApiEvent(event),
            })
            .collect(),
        next_after,
    }))
}
