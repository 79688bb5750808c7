//! `/v1/steps/{id}`: one step with its attempts and history; resolve by hand.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::Uri;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::state::TaskState;
use tasker_engine::ops;
use tasker_store::{StepId, Store, TaskId};
use utoipa::{IntoParams, ToSchema};

use super::{number, path_id, query};
use crate::body::StrictJson;
use crate::openapi::{
    BadRequest, Conflict, Invalid, NotFound, TaskStateName, TooLarge, UnsupportedMediaType,
};
use crate::problem::Problem;
use crate::state::AppState;
use crate::views::{StepDetail, StepLogs};

/// `GET /v1/steps/{id}`: a step with every attempt and its history.
#[utoipa::path(
    get,
    path = "/v1/steps/{id}",
    operation_id = "show_step",
    tag = "steps",
    params(("id" = i64, Path, description = "The step's id")),
    responses(
        (status = 200, description = "The step", body = StepDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<StepDetail>, Problem> {
    let id: StepId = path_id(&id, "step")?;
    let store = state.store();
    let step = store
        .step(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no step {id}")))?;
    let (attempts, transitions) =
        tokio::try_join!(store.attempts_of_step(id), store.step_transitions(id))?;
    Ok(Json(StepDetail::of(step, attempts, transitions)))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct LogsQuery {
    /// Only this attempt (its number in the step's `attempt_history`).
    #[param(value_type = Option<i64>)]
    attempt: Option<String>,
}

/// `GET /v1/steps/{id}/logs`: what each attempt's handler said (log records, stdout,
/// stderr), bounded per attempt.
#[utoipa::path(
    get,
    path = "/v1/steps/{id}/logs",
    operation_id = "step_logs",
    tag = "steps",
    params(("id" = i64, Path, description = "The step's id"), LogsQuery),
    responses(
        (status = 200, description = "The step's attempts with their output", body = StepLogs),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn logs(
    State(state): State<AppState>,
    Path(id): Path<String>,
    uri: Uri,
) -> Result<Json<StepLogs>, Problem> {
    let id: StepId = path_id(&id, "step")?;
    let q: LogsQuery = query(&uri)?;
    let attempt: Option<i64> = number("attempt", q.attempt.as_deref())?;
    let store = state.store();
    let step = store
        .step(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no step {id}")))?;
    let attempts = store.attempt_logs(id, attempt).await?;
    if let Some(n) = attempt
        && attempts.is_empty()
    {
        return Err(Problem::not_found(format!(
            "step {id} has no attempt {n} that ran"
        )));
    }
    Ok(Json(StepLogs {
        step_id: id,
        state: step.state,
        attempts: attempts.into_iter().map(Into::into).collect(),
    }))
}

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Resolve {
    /// The step's result, as its children will see it.
    #[schema(value_type = Value)]
    pub result: Option<Value>,
}

/// What resolving a step did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Resolved {
    #[schema(value_type = i64)]
    pub step_id: StepId,
    #[schema(value_type = i64)]
    pub task_id: TaskId,
    /// Children of the step that became ready.
    pub ready_children: u32,
    /// The task's state afterwards.
    #[schema(value_type = TaskStateName)]
    pub task_state: TaskState,
}

/// `POST /v1/steps/{id}/resolve`: a pending, waiting or failed step counts as done.
#[utoipa::path(
    post,
    path = "/v1/steps/{id}/resolve",
    operation_id = "resolve_step",
    tag = "steps",
    params(("id" = i64, Path, description = "The step's id")),
    request_body = Resolve,
    responses(
        (status = 200, description = "Resolved", body = Resolved),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn resolve(
    State(state): State<AppState>,
    Path(id): Path<String>,
    StrictJson(req): StrictJson<Resolve>,
) -> Result<Json<Resolved>, Problem> {
    let id: StepId = path_id(&id, "step")?;
    let out = ops::resolve_step(state.store(), state.bus(), id, req.result, state.now()).await?;
    Ok(Json(Resolved {
        step_id: out.step_id,
        task_id: out.task_id,
        ready_children: out.ready_children,
        task_state: out.task_state,
    }))
}
