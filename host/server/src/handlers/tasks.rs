//! `/v1/tasks`: create, list with filters, show one (steps, readiness, execution context),
//! its transitions, cancel, retry.

use std::collections::HashMap;

use axum::Json;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, HeaderName, HeaderValue, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use tasker_core::priority::Priority;
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_core::trace::{METADATA_KEY, TraceParent};
use tasker_engine::ops;
use tasker_store::{NewTask, Store, TaskFilter, TaskId, TaskPageRequest, TaskRow};
use utoipa::{IntoParams, ToSchema};

use super::{instant, limit, path_id, query};
use crate::body::StrictJson;
use crate::openapi::{
    BadRequest, Conflict, Invalid, NotFound, TaskStateName, TooLarge, UnsupportedMediaType,
};
use crate::problem::Problem;
use crate::state::AppState;
use crate::views::{
    AttemptView, ExecutionView, PageView, ReadinessView, StepSummary, TaskAttemptView,
    TaskAttempts, TaskCountsView, TaskDetail, TaskView, TransitionView,
};

/// Set on a create answered with an existing task (same identity key): `true`.
pub const EXISTING_TASK_HEADER: HeaderName = HeaderName::from_static("tasker-existing-task");

#[derive(Debug, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateTask {
    /// `namespace/name@version` of a registered template.
    #[schema(example = "api/chain@1.0.0")]
    pub template: String,
    /// What the task runs on: an object that the template's context schema accepts.
    #[serde(default = "empty_object")]
    #[schema(value_type = Object)]
    pub context: Value,
    /// At most one task per identity key: a second create answers the first task.
    #[schema(nullable = false)]
    pub identity_key: Option<String>,
    /// Each 1 to 128 bytes.
    #[serde(default)]
    pub tags: Vec<String>,
    #[schema(nullable = false)]
    pub initiator: Option<String>,
    #[schema(nullable = false)]
    pub source_system: Option<String>,
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// 1 (lowest) to 5 (highest); default: the template's, else 3. A step's own priority in
    /// the template wins. Claims take higher priorities first, with aging (30 s per level).
    #[schema(nullable = false, minimum = 1, maximum = 5)]
    pub priority: Option<i64>,
    /// RFC 3339: the task's first steps become ready at this instant, not before.
    #[schema(nullable = false, value_type = String, format = DateTime)]
    pub run_at: Option<DateTime<Utc>>,
}

fn empty_object() -> Value {
    Value::Object(Map::new())
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct CreateQuery {
    /// `conflict`: an existing identity key answers 409 instead of 200 (`return`, the
    /// default).
    #[param(value_type = Option<OnDuplicate>)]
    on_duplicate: Option<String>,
}

/// What a create with an identity key already used answers.
#[derive(Debug, Clone, Copy, Serialize, ToSchema)]
#[serde(rename_all = "snake_case")]
pub enum OnDuplicate {
    /// 200 with the existing task.
    Return,
    /// 409.
    Conflict,
}

/// `POST /v1/tasks`: 201 with the new task; an identity key already used answers 200 with
/// the existing task and `Tasker-Existing-Task: true` (or 409 with `?on_duplicate=conflict`).
#[utoipa::path(
    post,
    path = "/v1/tasks",
    operation_id = "create_task",
    tag = "tasks",
    params(
        CreateQuery,
        ("traceparent" = Option<String>, Header,
            description = "A W3C trace context: the parent of the task's trace"),
    ),
    request_body = CreateTask,
    responses(
        (status = 201, description = "Created", body = TaskView,
            headers(("Location" = String, description = "The task's URL"))),
        (status = 200, description = "The existing task with this identity key", body = TaskView,
            headers(
                ("Location" = String, description = "The task's URL"),
                ("Tasker-Existing-Task" = String, description = "`true`"),
            )),
        (status = 400, response = BadRequest),
        (status = 409, response = Conflict),
        (status = 413, response = TooLarge),
        (status = 415, response = UnsupportedMediaType),
        (status = 422, response = Invalid),
    )
)]
pub async fn create(
    State(state): State<AppState>,
    uri: Uri,
    headers: HeaderMap,
    StrictJson(req): StrictJson<CreateTask>,
) -> Result<Response, Problem> {
    let q: CreateQuery = query(&uri)?;
    // A caller's W3C trace context becomes the parent of the task's trace.
    let traceparent = headers
        .get("traceparent")
        .map(|v| {
            let s = v
                .to_str()
                .map_err(|_| "the traceparent header is not visible ASCII".to_owned())?;
            s.parse::<TraceParent>().map_err(|e| e.to_string())
        })
        .transpose()
        .map_err(|why| Problem::bad_request(why.clone()).field("traceparent", why))?;
    let conflict = match q.on_duplicate.as_deref() {
        None | Some("return") => false,
        Some("conflict") => true,
        Some(other) => {
            let msg = format!("'{other}' is not return or conflict");
            return Err(
                Problem::bad_request(format!("?on_duplicate: {msg}")).field("?on_duplicate", msg)
            );
        }
    };
    if !req.context.is_object() {
        return Err(Problem::invalid("the context must be a JSON object")
            .field("/context", "not an object"));
    }
    for (i, t) in req.tags.iter().enumerate() {
        if t.is_empty() || t.len() > 128 {
            return Err(Problem::invalid("a tag is 1 to 128 bytes")
                .field(format!("/tags/{i}"), format!("{} bytes", t.len())));
        }
    }
    let priority = req
        .priority
        .map(|p| {
            Priority::new(p).ok_or_else(|| {
                let msg = format!("{p} is not from 1 (lowest) to 5 (highest)");
                Problem::invalid(format!("priority: {msg}")).field("/priority", msg)
            })
        })
        .transpose()?;
    let store = state.store();
    let template = state.template(&req.template).await?.ok_or_else(|| {
        Problem::invalid(format!("no template {} is registered", req.template))
            .field("/template", "unknown template")
    })?;
    check_components(&state, &template)?;
    let mut metadata = Map::new();
    metadata.insert("tags".into(), json!(req.tags));
    if let Some(tp) = traceparent {
        metadata.insert(METADATA_KEY.into(), json!(tp.to_string()));
    }
    for (k, v) in [
        ("initiator", &req.initiator),
        ("source_system", &req.source_system),
        ("reason", &req.reason),
    ] {
        if let Some(v) = v {
            metadata.insert(k.into(), json!(v));
        }
    }
    let mut new = NewTask {
        template_key: template.key(),
        context: req.context,
        identity_key: req.identity_key,
        metadata: Value::Object(metadata),
        priority,
        run_at: req.run_at,
    };
    // Stored instants are microseconds: the answer shows what a read will.
    let now = state.now();
    let now = DateTime::from_timestamp_micros(now.timestamp_micros()).unwrap_or(now);
    let created = ops::create_task(store, state.bus(), &template, &mut new, now).await?;
    let location = format!("/v1/tasks/{}", created.task_id);
    if created.created {
        // A new task is exactly what was asked for: answered without reading it back.
        let steps = template.steps.len() as u32;
        let task = TaskRow {
            id: created.task_id,
            template_key: new.template_key,
            state: TaskState::Pending,
            context: new.context,
            identity_key: new.identity_key,
            metadata: new.metadata,
            step_count: steps,
            unfinished_steps: steps,
            error_steps: 0,
            created_at: now,
            updated_at: now,
            started_at: None,
            finished_at: None,
        };
        return Ok((
            StatusCode::CREATED,
            [(header::LOCATION, location)],
            Json(TaskView::from(task)),
        )
            .into_response());
    }
    let task = store
        .task(created.task_id)
        .await?
        .ok_or_else(|| Problem::internal("the existing task cannot be read"))?;
    if conflict {
        return Err(Problem::conflict(format!(
            "task {} already has this identity key",
            created.task_id
        ))
        .with("existing_task", json!(created.task_id)));
    }
    let mut res = (
        StatusCode::OK,
        [(header::LOCATION, location)],
        Json(TaskView::from(task)),
    )
        .into_response();
    res.headers_mut()
        .insert(EXISTING_TASK_HEADER, HeaderValue::from_static("true"));
    Ok(res)
}

/// Every component the template runs must be in this server's plugin directory, with the
/// right world: refused at submit, naming the step and what is available, rather than
/// failing attempts later (the check of `tasker_sandbox::check_components`, as at register).
fn check_components(state: &AppState, t: &Template) -> Result<(), Problem> {
    tasker_sandbox::check_components(state.sandbox().registry(), t)
        .map_err(|m| super::templates::missing_components_problem(&m, ""))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct ListQuery {
    /// Comma-separated task states (`pending,in_progress`).
    #[param(example = "pending,in_progress")]
    state: Option<String>,
    /// A template key, `namespace/name@version`, or `namespace/name` for every version.
    template: Option<String>,
    /// Tasks with this tag.
    tag: Option<String>,
    identity_key: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    created_after: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    created_before: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    finished_after: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    finished_before: Option<String>,
    /// The `next_cursor` of the previous page.
    cursor: Option<String>,
    /// The page size (default 50).
    #[param(value_type = Option<u32>, minimum = 1, maximum = 500)]
    limit: Option<String>,
}

impl ListQuery {
    /// The filters the counts share.
    fn filter(&self) -> FilterQuery {
        FilterQuery {
            template: self.template.clone(),
            tag: self.tag.clone(),
            identity_key: self.identity_key.clone(),
            created_after: self.created_after.clone(),
            created_before: self.created_before.clone(),
            finished_after: self.finished_after.clone(),
            finished_before: self.finished_before.clone(),
        }
    }
}

/// The listing's filters but states and paging (what the counts take).
#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct FilterQuery {
    /// A template key, `namespace/name@version`, or `namespace/name` for every version.
    template: Option<String>,
    /// Tasks with this tag.
    tag: Option<String>,
    identity_key: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    created_after: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    created_before: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    finished_after: Option<String>,
    /// RFC 3339.
    #[param(value_type = Option<chrono::DateTime<chrono::Utc>>)]
    finished_before: Option<String>,
}

fn filter_of(q: FilterQuery) -> Result<TaskFilter, Problem> {
    Ok(TaskFilter {
        states: Vec::new(),
        template: q.template,
        tag: q.tag,
        identity_key: q.identity_key,
        created_after: instant("created_after", q.created_after.as_deref())?,
        created_before: instant("created_before", q.created_before.as_deref())?,
        finished_after: instant("finished_after", q.finished_after.as_deref())?,
        finished_before: instant("finished_before", q.finished_before.as_deref())?,
    })
}

/// `GET /v1/tasks/counts`: how many tasks the listing's filters match, in each state.
#[utoipa::path(
    get,
    path = "/v1/tasks/counts",
    operation_id = "count_tasks",
    tag = "tasks",
    params(FilterQuery),
    responses(
        (status = 200, description = "Tasks by state", body = TaskCountsView),
        (status = 400, response = BadRequest),
    )
)]
pub async fn counts(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<TaskCountsView>, Problem> {
    let q: FilterQuery = query(&uri)?;
    let counts = state.store().count_tasks(&filter_of(q)?).await?;
    Ok(Json(TaskCountsView::from(counts)))
}

/// `GET /v1/tasks/{id}/attempts`: every attempt of the task's steps, in start order.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/attempts",
    operation_id = "task_attempts",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task's attempts", body = TaskAttempts),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn attempts(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskAttempts>, Problem> {
    let task = task_or_404(&state, &id).await?;
    let store = state.store();
    let (steps, attempts) = tokio::try_join!(
        store.steps_of_task(task.id),
        store.attempts_of_task(task.id)
    )?;
    let names: HashMap<_, _> = steps.into_iter().map(|s| (s.id, s.name)).collect();
    let attempts = attempts
        .into_iter()
        .map(|a| TaskAttemptView {
            step_id: a.step_id,
            step_name: names.get(&a.step_id).cloned().unwrap_or_default(),
            attempt: AttemptView::from(a),
        })
        .collect();
    Ok(Json(TaskAttempts { attempts }))
}

/// `GET /v1/tasks`: newest first; `next_cursor` continues the listing.
#[utoipa::path(
    get,
    path = "/v1/tasks",
    operation_id = "list_tasks",
    tag = "tasks",
    params(ListQuery),
    responses(
        (status = 200, description = "A page of tasks", body = PageView<TaskView>),
        (status = 400, response = BadRequest),
    )
)]
pub async fn list(
    State(state): State<AppState>,
    uri: Uri,
) -> Result<Json<PageView<TaskView>>, Problem> {
    let q: ListQuery = query(&uri)?;
    let mut states = Vec::new();
    for s in q
        .state
        .iter()
        .flat_map(|s| s.split(','))
        .filter(|s| !s.is_empty())
    {
        let st: TaskState = s.parse().map_err(|_| {
            let msg = format!(
                "'{s}' is not a task state (pending, in_progress, complete, error, cancelled)"
            );
            Problem::bad_request(format!("?state: {msg}")).field("?state", msg)
        })?;
        states.push(st);
    }
    let before = match q.cursor.as_deref() {
        None => None,
        Some(c) => Some(c.parse::<i64>().map(TaskId::new).map_err(|_| {
            let msg = format!("'{c}' is not a cursor of this listing");
            Problem::bad_request(format!("?cursor: {msg}")).field("?cursor", msg)
        })?),
    };
    let filter = TaskFilter {
        states,
        ..filter_of(q.filter())?
    };
    let page = TaskPageRequest {
        before,
        limit: limit(q.limit.as_deref())?,
    };
    let page = state.store().list_tasks(&filter, page).await?;
    Ok(Json(PageView {
        items: page.items.into_iter().map(TaskView::from).collect(),
        next_cursor: page.next.map(|id| id.to_string()),
    }))
}

async fn task_or_404(state: &AppState, raw: &str) -> Result<tasker_store::TaskRow, Problem> {
    let id: TaskId = path_id(raw, "task")?;
    state
        .store()
        .task(id)
        .await?
        .ok_or_else(|| Problem::not_found(format!("no task {id}")))
}

/// `GET /v1/tasks/{id}`: a task with its steps, their readiness, and its execution context.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}",
    operation_id = "show_task",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task", body = TaskDetail),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn show(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<TaskDetail>, Problem> {
    let task = task_or_404(&state, &id).await?;
    let store = state.store();
    let now = state.now();
    // A step's level is its template's (templates are immutable, and cached here), so
    // the store need not walk the task's edges; the execution context is counted from the
    // readiness rows, so the store need not evaluate the DAG twice.
    let (steps, readiness, template) = tokio::try_join!(
        store.steps_of_task(task.id),
        store.readiness(task.id, None, now),
        state.template(&task.template_key),
    )?;
    let execution = tasker_store::rules::execution_context(task.id, task.state, &readiness);
    let readiness: HashMap<_, _> = readiness.into_iter().map(|r| (r.step_id, r)).collect();
    let levels: HashMap<String, u32> = match &template {
        Some(t) => {
            let of = t.dag().map(|d| d.levels()).unwrap_or_default();
            t.steps
                .iter()
                .zip(of)
                .map(|(s, l)| (s.name.clone(), l))
                .collect()
        }
        None => store
            .dependency_levels(task.id)
            .await?
            .into_iter()
            .map(|l| (l.name, l.level))
            .collect(),
    };
    let steps = steps
        .into_iter()
        .map(|s| StepSummary {
            level: levels.get(&s.name).copied().unwrap_or(0),
            readiness: readiness.get(&s.id).map(|r| ReadinessView::of(r, now)),
            id: s.id,
            name: s.name,
            state: s.state,
            attempts: s.attempts,
            max_attempts: s.max_attempts,
            last_error_kind: s.last_error_kind,
            finished_at: s.finished_at,
        })
        .collect();
    Ok(Json(TaskDetail {
        task: task.into(),
        steps,
        execution: Some(ExecutionView::from(execution)),
    }))
}

/// `GET /v1/tasks/{id}/transitions`: oldest first.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/transitions",
    operation_id = "task_transitions",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "The task's state changes",
            body = [TransitionView<TaskStateName>]),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn transitions(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Vec<TransitionView<TaskState>>>, Problem> {
    let task = task_or_404(&state, &id).await?;
    let rows = state.store().task_transitions(task.id).await?;
    Ok(Json(rows.into_iter().map(TransitionView::from).collect()))
}

/// What a cancel did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Cancelled {
    #[schema(value_type = i64)]
    pub task_id: TaskId,
    /// False when it was already cancelled.
    pub cancelled: bool,
    pub steps_cancelled: u32,
}

/// `POST /v1/tasks/{id}/cancel`: the task and its unfinished steps are cancelled.
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/cancel",
    operation_id = "cancel_task",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Cancelled (or it already was)", body = Cancelled),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn cancel(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Cancelled>, Problem> {
    let id: TaskId = path_id(&id, "task")?;
    let out = ops::cancel_task(state.store(), state.bus(), id, state.now()).await?;
    Ok(Json(Cancelled {
        task_id: out.task_id,
        cancelled: out.cancelled,
        steps_cancelled: out.steps_cancelled,
    }))
}

/// What a retry did.
#[derive(Debug, Serialize, ToSchema)]
pub struct Retried {
    #[schema(value_type = i64)]
    pub task_id: TaskId,
    /// The failed steps given a fresh attempt budget.
    pub steps_reset: u32,
}

/// `POST /v1/tasks/{id}/retry`: a task in error gets a fresh attempt budget for its failed
/// steps (409 in any other state).
#[utoipa::path(
    post,
    path = "/v1/tasks/{id}/retry",
    operation_id = "retry_task",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id")),
    responses(
        (status = 200, description = "Retried", body = Retried),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
        (status = 409, response = Conflict),
    )
)]
pub async fn retry(
    State(state): State<AppState>,
    Path(id): Path<String>,
) -> Result<Json<Retried>, Problem> {
    let id: TaskId = path_id(&id, "task")?;
    let out = ops::retry_task(state.store(), state.bus(), id, state.now()).await?;
    Ok(Json(Retried {
        task_id: out.task_id,
        steps_reset: out.steps_reset,
    }))
}
