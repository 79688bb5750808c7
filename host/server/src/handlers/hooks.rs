//! `/v1/hooks`: event hooks with their delivery counts, each hook's deliveries (dead letters
//! among them), and redelivery of dead letters through the same leased delivery loop.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_store::{DeliveryState, OutboxFilter, OutboxRow, StepId, Store, TaskId};
use utoipa::{IntoParams, ToSchema};

use super::{limit, number, path_id, query};
use crate::body::StrictJson;
use crate::openapi::{BadRequest, Invalid, NotFound};
use crate::problem::Problem;
use crate::state::AppState;
use crate::views::PageView;

/// A hook (one `hooks:` entry of a template) and its deliveries by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct HookView {
    pub hook_id: i64,
    /// The `event-hook` component, `name@version`.
    pub component: String,
    pub pending: i64,
    pub delivered: i64,
    /// Dead letters: deliveries that failed `max_attempts` times.
    pub dead: i64,
}

/// `GET /v1/hooks`: every hook, by id.
#[utoipa::path(
    get,
    path = "/v1/hooks",
    operation_id = "list_hooks",
    tag = "hooks",
    responses((status = 200, description = "Every hook with its counts", body = Vec<HookView>))
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<Vec<HookView>>, Problem> {
    let mut rows = state.store().hook_counts(None).await?;
    rows.sort_by_key(|r| r.hook_id);
    Ok(Json(
        rows.into_iter()
            .map(|r| HookView {
                hook_id: r.hook_id,
                component: r.component,
                pending: r.pending,
                delivered: r.delivered,
                dead: r.dead,
            })
            .collect(),
    ))
}

/// How a delivery stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
#[schema(as = DeliveryState)]
pub enum DeliveryStateName {
    Pending,
    Delivered,
    Dead,
}

/// One event for one hook, and how its delivery went.
#[derive(Debug, Serialize, ToSchema)]
pub struct DeliveryView {
    /// Deliveries of one (hook, task) go in this order.
    pub id: i64,
    pub hook_id: i64,
    #[schema(value_type = i64)]
    pub task_id: TaskId,
    #[schema(value_type = Option<i64>)]
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    pub event: String,
    pub attempt: Option<u32>,
    #[schema(value_type = Object)]
    pub payload: Value,
    pub event_at: DateTime<Utc>,
    #[schema(value_type = DeliveryStateName)]
    pub state: &'static str,
    pub attempts: i32,
    pub next_attempt_at: DateTime<Utc>,
    /// Why the last delivery failed (a dead letter's reason).
    pub last_error: Option<String>,
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<OutboxRow> for DeliveryView {
    fn from(r: OutboxRow) -> Self {
        DeliveryView {
            id: r.id,
            hook_id: r.hook_id,
            task_id: r.task_id,
            step_id: r.step_id,
            step_name: r.step_name,
            event: r.event_name,
            attempt: r.attempt,
            payload: r.payload,
            event_at: r.event_at,
            state: r.state.as_str(),
            attempts: r.attempts,
            next_attempt_at: r.next_attempt_at,
            last_error: r.last_error,
            finished_at: r.finished_at,
        }
    }
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct DeliveriesQuery {
    /// Comma-separated: pending, delivered, dead (`dead` lists the dead letters).
    state: Option<String>,
    /// Only the deliveries of this task.
    #[param(value_type = Option<i64>)]
    task: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

/// `GET /v1/hooks/{id}/deliveries`: in delivery id order.
#[utoipa::path(
    get,
    path = "/v1/hooks/{id}/deliveries",
    operation_id = "list_hook_deliveries",
    tag = "hooks",
    params(("id" = i64, Path, description = "The hook's id"), DeliveriesQuery),
    responses(
        (status = 200, description = "A page of deliveries", body = PageView<DeliveryView>),
        (status = 400, response = BadRequest),
    )
)]
pub async fn deliveries(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<PageView<DeliveryView>>, Problem> {
    let hook: i64 = path_id(&id, "hook")?;
    let q: DeliveriesQuery = query(&uri)?;
    let mut states = Vec::new();
    for s in q
        .state
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        states.push(DeliveryState::parse(s).map_err(|_| {
            let msg = format!("'{s}' is not a delivery state (pending, delivered, dead)");
            Problem::bad_request(format!("?state: {msg}")).field("?state", msg)
        })?);
    }
    let filter = OutboxFilter {
        hook_id: Some(hook),
        task_id: number("task", q.task.as_deref())?,
        states,
    };
    let after = number::<i64>("cursor", q.cursor.as_deref())?;
    let page = state
        .store()
        .list_hook_outbox(&filter, after, limit(q.limit.as_deref())?)
        .await?;
    Ok(Json(PageView {
        items: page.items.into_iter().map(DeliveryView::from).collect(),
        next_cursor: page.next.map(|n| n.to_string()),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Redeliver {
    /// The dead letters to send again; absent: every dead letter of the hook.
    pub ids: Option<Vec<i64>>,
}

/// One dead letter sent again, as a new delivery.
#[derive(Debug, Serialize, ToSchema)]
pub struct RedeliveredView {
    pub old_id: i64,
    pub new_id: i64,
    #[schema(value_type = i64)]
    pub task_id: TaskId,
}

/// `POST /v1/hooks/{id}/redeliver`: dead letters of this hook (all, or the given ids) go back
/// to the end of their (hook, task) queue, with a fresh attempt budget.
#[utoipa::path(
    post,
    path = "/v1/hooks/{id}/redeliver",
    operation_id = "redeliver_dead_letters",
    tag = "hooks",
    params(("id" = i64, Path, description = "The hook's id")),
    request_body = Redeliver,
    responses(
        (status = 200, description = "What was sent again", body = Vec<RedeliveredView>),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 422, response = Invalid),
    )
)]
pub async fn redeliver(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<Redeliver>,
) -> Result<Json<Vec<RedeliveredView>>, Problem> {
    let hook: i64 = path_id(&id, "hook")?;
    let store = state.store();
    if !store
        .hook_counts(None)
        .await?
        .iter()
        .any(|h| h.hook_id == hook)
    {
        return Err(Problem::not_found(format!("no hook {hook}")));
    }
    let out = store
        .redeliver_dead_letters(Some(hook), req.ids.as_deref(), state.now())
        .await?;
    Ok(Json(
        out.into_iter()
            .map(|r| RedeliveredView {
                old_id: r.old_id,
                new_id: r.new_id,
                task_id: r.task_id,
            })
            .collect(),
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_schema_names_every_delivery_state() {
        for s in [
            DeliveryState::Pending,
            DeliveryState::Delivered,
            DeliveryState::Dead,
        ] {
            let named = match s {
                DeliveryState::Pending => DeliveryStateName::Pending,
                DeliveryState::Delivered => DeliveryStateName::Delivered,
                DeliveryState::Dead => DeliveryStateName::Dead,
            };
            assert_eq!(serde_json::to_value(named).unwrap(), s.as_str());
        }
    }
}
