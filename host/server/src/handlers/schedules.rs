//! `/v1/schedules` (docs/schedules.md): create or replace, list with next fire times, show,
//! pause, resume, delete. The server's scheduler loop (and every worker's) fires them.

use axum::Json;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::priority::Priority;
use tasker_core::schedule::Missed;
use tasker_store::{NewSchedule, ScheduleRow, Store, check_schedule};
use utoipa::ToSchema;

use crate::body::StrictJson;
use crate::openapi::{BadRequest, Invalid, NotFound, TooLarge, UnsupportedMediaType};
use crate::problem::Problem;
use crate::state::AppState;

/// How many upcoming instants a schedule shows.
const UPCOMING: usize = 3;

/// A schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleView {
    /// Made by hand: letters, digits, `_`, `-`, `.`; a template's: `namespace/name:schedule`.
    pub name: String,
    /// `namespace/name@version` of the template each instant runs.
    #[schema(example = "shop/report@1.0.0")]
    pub template: String,
    /// Five-field cron pattern.
    #[schema(example = "0 * * * *")]
    pub cron: String,
    /// IANA time zone the pattern is read in.
    #[schema(example = "Europe/Paris")]
    pub tz: String,
    /// The context of every task it creates.
    pub context: Value,
    /// `skip` or `run_once`.
    #[schema(example = "skip")]
    pub missed: String,
    /// The tasks' priority (1 to 5; null: the template's).
    pub priority: Option<u8>,
    pub paused: bool,
    /// The next instant it fires (null: paused, or never again).
    pub next_fire_at: Option<DateTime<Utc>>,
    /// The instants after that one.
    pub upcoming: Vec<DateTime<Utc>>,
    pub last_fired_at: Option<DateTime<Utc>>,
    /// `api` or `template` (a template's `schedules:` section).
    #[schema(example = "api")]
    pub source: String,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
}

impl From<ScheduleRow> for ScheduleView {
    fn from(r: ScheduleRow) -> Self {
        let upcoming = match (r.next_fire_at, r.cron()) {
            (Some(next), Ok(c)) => c.upcoming(next, UPCOMING - 1),
            _ => Vec::new(),
        };
        ScheduleView {
            template: r.template_key(),
            missed: r.missed.as_str().to_owned(),
            priority: r.priority.map(Priority::get),
            source: r.source.as_str().to_owned(),
            upcoming,
            name: r.name,
            cron: r.cron,
            tz: r.tz,
            context: r.context,
            paused: r.paused,
            next_fire_at: r.next_fire_at,
            last_fired_at: r.last_fired_at,
            created_at: r.created_at,
            updated_at: r.updated_at,
        }
    }
}

/// Every schedule.
#[derive(Debug, Serialize, ToSchema)]
pub struct ScheduleList {
    pub items: Vec<ScheduleView>,
}

/// A schedule to create, or to replace the one of its name with (keeping whether it is
/// paused).
#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateSchedule {
    #[schema(min_length = 1, max_length = 64, example = "hourly-report")]
    pub name: String,
    /// `namespace/name@version` of a registered template.
    #[schema(example = "shop/report@1.0.0")]
    pub template: String,
    #[schema(example = "0 * * * *")]
    pub cron: String,
    /// IANA time zone [default: UTC].
    #[serde(default)]
    #[schema(nullable = false, example = "Europe/Paris")]
    pub tz: Option<String>,
    /// The tasks' context, an object the template's context schema accepts [default: {}].
    #[serde(default)]
    #[schema(nullable = false)]
    pub context: Option<Value>,
    /// `skip` (default) or `run_once`.
    #[serde(default)]
    #[schema(nullable = false, example = "skip")]
    pub missed: Option<String>,
    /// 1 (lowest) to 5 (highest) [default: the template's].
    #[serde(default)]
    #[schema(nullable = false, minimum = 1, maximum = 5)]
    pub priority: Option<i64>,
}

/// `POST /v1/schedules`: 201 with the schedule (200 when it replaced one of that name).
#[utoipa::path(
    post,
    path = "/v1/schedules",
    operation_id = "create_schedule",
    tag = "schedules",
    request_body = CreateSchedule,
    responses(
        (status = 201, description = "Created", body = ScheduleView),
        (status = 200, description = "Replaced the schedule of that name", body = ScheduleView),
        (status = 400, response = BadRequest),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    StrictJson(req): StrictJson<CreateSchedule>,
) -> Result<(StatusCode, Json<ScheduleView>), Problem> {
    let mut bad = Problem::invalid(format!("schedule '{}' is refused", req.name));
    let missed = match req.missed.as_deref().map(str::parse::<Missed>).transpose() {
        Ok(m) => m.unwrap_or_default(),
        Err(e) => {
            bad = bad.field("/missed", e.to_string());
            Missed::Skip
        }
    };
    let priority = match req.priority {
        None => None,
        Some(p) => match Priority::new(p) {
            Some(p) => Some(p),
            None => {
                bad = bad.field(
                    "/priority",
                    format!("{p} is not from 1 (lowest) to 5 (highest)"),
                );
                None
            }
        },
    };
    let new = NewSchedule {
        priority,
        ..NewSchedule::new(
            &req.name,
            &req.template,
            &req.cron,
            req.tz.as_deref().unwrap_or("UTC"),
        )
        .with_context(
            req.context
                .unwrap_or_else(|| Value::Object(Default::default())),
        )
        .with_missed(missed)
    };
    let template = state.store().template(&new.template_key).await?;
    for p in check_schedule(&new, template.as_ref()) {
        bad = bad.field(format!("/{}", p.field), p.message);
    }
    if !bad.errors.is_empty() {
        return Err(bad);
    }
    let existed = state.store().schedule(&new.name).await?.is_some();
    let row = state.store().create_schedule(&new, state.now()).await?;
    let status = if existed {
        StatusCode::OK
    } else {
        StatusCode::CREATED
    };
    Ok((status, Json(row.into())))
}

/// `GET /v1/schedules`: every schedule by name, with its next fire times.
#[utoipa::path(
    get,
    path = "/v1/schedules",
    operation_id = "list_schedules",
    tag = "schedules",
    responses(
        (status = 200, description = "Every schedule", body = ScheduleList),
    )
)]
pub async fn list(State(state): State<AppState>) -> Result<Json<ScheduleList>, Problem> {
    let rows = state.store().list_schedules().await?;
    Ok(Json(ScheduleList {
        items: rows.into_iter().map(ScheduleView::from).collect(),
    }))
}

fn missing(name: &str) -> Problem {
    Problem::not_found(format!("no schedule named '{name}'"))
}

/// `GET /v1/schedules/{name}`.
#[utoipa::path(
    get,
    path = "/v1/schedules/{name}",
    operation_id = "show_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name (a template's escaped: sched%2Fnightly%3Aeu)")),
    responses(
        (status = 200, description = "The schedule", body = ScheduleView),
        (status = 404, response = NotFound),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    match state.store().schedule(&name).await? {
        Some(row) => Ok(Json(row.into())),
        None => Err(missing(&name)),
    }
}

/// A deletion.
#[derive(Debug, Serialize, ToSchema)]
pub struct Deleted {
    pub name: String,
    pub deleted: bool,
}

/// `DELETE /v1/schedules/{name}`: nothing fires any more; the tasks it created stay.
#[utoipa::path(
    delete,
    path = "/v1/schedules/{name}",
    operation_id = "delete_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Deleted", body = Deleted),
        (status = 404, response = NotFound),
    )
)]
pub async fn delete(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<Deleted>, Problem> {
    if state.store().delete_schedule(&name).await? {
        Ok(Json(Deleted {
            name,
            deleted: true,
        }))
    } else {
        Err(missing(&name))
    }
}

/// `POST /v1/schedules/{name}/pause`: nothing fires until it is resumed.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/pause",
    operation_id = "pause_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Paused (or already paused)", body = ScheduleView),
        (status = 404, response = NotFound),
    )
)]
pub async fn pause(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    let row = state.store().pause_schedule(&name, state.now()).await?;
    Ok(Json(row.into()))
}

/// `POST /v1/schedules/{name}/resume`: from its next instant; what passed while it was
/// paused does not fire.
#[utoipa::path(
    post,
    path = "/v1/schedules/{name}/resume",
    operation_id = "resume_schedule",
    tag = "schedules",
    params(("name" = String, Path, description = "The schedule's name")),
    responses(
        (status = 200, description = "Resumed (or already running)", body = ScheduleView),
        (status = 404, response = NotFound),
    )
)]
pub async fn resume(
    State(state): State<AppState>,
    Path(name): Path<String>,
) -> Result<Json<ScheduleView>, Problem> {
    let row = state.store().resume_schedule(&name, state.now()).await?;
    Ok(Json(row.into()))
}
