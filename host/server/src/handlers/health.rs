//! `/health/live` (the process answers, no I/O), `/health/ready` (the store answers) and
//! `/health/status` (what the store holds and how its pool is used).

use axum::Json;
use axum::extract::State;
use serde::Serialize;
use tasker_store::Store;
use utoipa::ToSchema;

use crate::openapi::{StoreBackendName, Unavailable};
use crate::problem::Problem;
use crate::state::AppState;

/// The process answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Live {
    #[schema(example = "ok")]
    pub status: &'static str,
}

/// `GET /health/live`: no I/O.
#[utoipa::path(
    get,
    path = "/health/live",
    operation_id = "health_live",
    tag = "health",
    responses((status = 200, description = "The process answers", body = Live))
)]
pub async fn live() -> Json<Live> {
    Json(Live { status: "ok" })
}

/// The store answers.
#[derive(Debug, Serialize, ToSchema)]
pub struct Ready {
    #[schema(example = "ready")]
    pub status: &'static str,
    #[schema(value_type = StoreBackendName)]
    pub store: &'static str,
}

/// `GET /health/ready`: 503 while the store does not answer.
#[utoipa::path(
    get,
    path = "/health/ready",
    operation_id = "health_ready",
    tag = "health",
    responses(
        (status = 200, description = "The store answers", body = Ready),
        (status = 503, response = Unavailable),
    )
)]
pub async fn ready(State(state): State<AppState>) -> Result<Json<Ready>, Problem> {
    match state.store().next_ready_at().await {
        Ok(_) => Ok(Json(Ready {
            status: "ready",
            store: state.store().backend(),
        })),
        Err(e) => Err(Problem::unavailable(format!(
            "the store does not answer: {e}"
        ))),
    }
}

/// Tasks by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskCounts {
    pub total: i64,
    pub pending: i64,
    pub in_progress: i64,
    pub complete: i64,
    pub error: i64,
    pub cancelled: i64,
}

/// Steps by state.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepCounts {
    pub total: i64,
    pub pending: i64,
    pub in_progress: i64,
    pub waiting_for_retry: i64,
    pub complete: i64,
    pub error: i64,
    pub cancelled: i64,
    pub resolved_manually: i64,
}

/// The store's connection pool.
#[derive(Debug, Serialize, ToSchema)]
pub struct PoolUse {
    pub active: i64,
    pub max: i64,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct Status {
    #[schema(value_type = StoreBackendName)]
    pub store: &'static str,
    pub tasks: TaskCounts,
    pub steps: StepCounts,
    /// Steps claimable now.
    pub ready_backlog: i64,
    /// Seconds the oldest claimable step has waited (0 without one).
    pub oldest_ready_age_seconds: f64,
    /// Steps waiting for a retry instant.
    pub retry_backlog: i64,
    pub expired_leases: i64,
    pub pool: PoolUse,
}

/// `GET /health/status`: what the store holds; any valid token may read it.
#[utoipa::path(
    get,
    path = "/health/status",
    operation_id = "health_status",
    tag = "health",
    responses(
        (status = 200, description = "Counts of the store", body = Status),
    )
)]
pub async fn status(State(state): State<AppState>) -> Result<Json<Status>, Problem> {
    let store = state.store();
    let q = crate::metrics::queue(store, state.now()).await?;
    let (c, oldest) = (q.counts, q.oldest_ready_age_seconds);
    Ok(Json(Status {
        store: store.backend(),
        tasks: TaskCounts {
            total: c.total_tasks,
            pending: c.pending_tasks,
            in_progress: c.in_progress_tasks,
            complete: c.complete_tasks,
            error: c.error_tasks,
            cancelled: c.cancelled_tasks,
        },
        steps: StepCounts {
            total: c.total_steps,
            pending: c.pending_steps,
            in_progress: c.in_progress_steps,
            waiting_for_retry: c.waiting_for_retry_steps,
            complete: c.complete_steps,
            error: c.error_steps,
            cancelled: c.cancelled_steps,
            resolved_manually: c.resolved_steps,
        },
        ready_backlog: c.ready_steps,
        oldest_ready_age_seconds: oldest,
        retry_backlog: c.retry_backlog,
        expired_leases: c.expired_leases,
        pool: PoolUse {
            active: c.active_connections,
            max: c.max_connections,
        },
    }))
}
