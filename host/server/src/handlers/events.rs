//! Live events as Server-Sent Events: `GET /v1/tasks/{id}/events` (a task's whole history,
//! then what happens next) and `GET /v1/events?template=…` (new events of every task, or of
//! a template's tasks).
//!
//! Every SSE `id` is the event's cursor in the store's event log (docs/store.md, "The event
//! log"); a client that reconnects with `Last-Event-ID` (or `?after=`) gets exactly the
//! events after it, in the log's order, whichever server instance it reaches: the log is in
//! the store, not in the server. A stream reads the log again when woken (this server's own
//! events, PostgreSQL's NOTIFYs) and at least every [`POLL`]: transitions send no NOTIFY of
//! their own, since one per transition would serialize commits on PostgreSQL's notify
//! queue lock in the hot path. Streams end when the server shuts down.

use std::convert::Infallible;
use std::time::Duration;

use axum::extract::{Path, State};
use axum::http::{HeaderMap, Uri};
use axum::response::sse::{Event, KeepAlive, Sse};
use futures::Stream;
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::state::TaskState;
use tasker_store::{EventFilter, StepId, Store, StoredEvent, TaskId};
use utoipa::{IntoParams, ToSchema};

use super::{path_id, query};
use crate::openapi::{BadRequest, NotFound};
use crate::problem::Problem;
use crate::state::AppState;

/// The longest a stream waits before reading the log again when nothing woke it.
pub const POLL: Duration = Duration::from_millis(250);
/// Events read from the store at once.
const BATCH: u32 = 200;

/// The data of one SSE event (its `id` is the cursor, its `event` the name).
#[derive(Debug, Serialize, ToSchema)]
pub struct EventData {
    #[schema(value_type = i64)]
    pub task_id: TaskId,
    #[schema(value_type = Option<i64>)]
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    /// `task.transition`, `step.transition`, or a handler's `custom.<name>`.
    pub name: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub attempt: Option<i32>,
    /// A transition's metadata, or a custom event's payload.
    #[schema(value_type = Object)]
    pub payload: Value,
    pub at: chrono::DateTime<chrono::Utc>,
}

fn sse_event(e: StoredEvent) -> Event {
    let id = e.cursor.clone();
    let name = e.name.clone();
    let data = EventData {
        task_id: e.task_id,
        step_id: e.step_id,
        step_name: e.step_name,
        name: e.name,
        from_state: e.from_state,
        to_state: e.to_state,
        attempt: e.attempt,
        payload: e.payload,
        at: e.at,
    };
    Event::default()
        .id(id)
        .event(name)
        .json_data(&data)
        .unwrap_or_else(|_| Event::default().comment("unserializable event"))
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct TaskEventsQuery {
    /// Start after this cursor (as `Last-Event-ID` does; the header wins).
    after: Option<String>,
}

#[derive(Debug, Deserialize, IntoParams)]
#[serde(deny_unknown_fields)]
#[into_params(parameter_in = Query)]
pub struct EventsQuery {
    /// Only events of this template's tasks: `namespace/name@version`, or `namespace/name`.
    template: Option<String>,
    /// Start after this cursor (as `Last-Event-ID` does; the header wins). Without either,
    /// the stream starts with the next new event.
    after: Option<String>,
}

/// The cursor to resume from: `Last-Event-ID`, else `?after=`.
fn resume_point(headers: &HeaderMap, after: Option<String>) -> Option<String> {
    headers
        .get("last-event-id")
        .and_then(|v| v.to_str().ok())
        .map(str::to_owned)
        .filter(|s| !s.is_empty())
        .or(after)
}

/// `GET /v1/tasks/{id}/events`: the task's events from the beginning (or after
/// `Last-Event-ID`), then live; the stream ends after the task completes or is cancelled.
#[utoipa::path(
    get,
    path = "/v1/tasks/{id}/events",
    operation_id = "task_events",
    tag = "tasks",
    params(("id" = i64, Path, description = "The task's id"), TaskEventsQuery),
    responses(
        (status = 200, description = "An SSE stream: `id` the cursor, `event` the name, `data` an EventData", content_type = "text/event-stream", body = EventData),
        (status = 400, response = BadRequest),
        (status = 404, response = NotFound),
    )
)]
pub async fn task_events(
    State(state): State<AppState>,
    Path(id): Path<String>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let id: TaskId = path_id(&id, "task")?;
    let q: TaskEventsQuery = query(&uri)?;
    if state.store().task(id).await?.is_none() {
        return Err(Problem::not_found(format!("no task {id}")));
    }
    let filter = EventFilter {
        task_id: Some(id),
        template: None,
    };
    let after = resume_point(&headers, q.after);
    // Resumed right after the task's last transition (it completed or was cancelled):
    // nothing more will come, so the stream ends at once.
    let mut over = false;
    if let Some(c) = &after {
        let last = state.store().task_transitions(id).await?.pop();
        over = last.is_some_and(|t| {
            matches!(t.to_state, TaskState::Complete | TaskState::Cancelled)
                && tasker_store::is_task_transition(c, id, t.sort_key)
        });
    }
    follow(
        state,
        filter,
        after,
        if over { Ending::Now } else { Ending::WithTask },
    )
    .await
}

/// `GET /v1/events`: every new event (of a template's tasks with `?template=`), live.
#[utoipa::path(
    get,
    path = "/v1/events",
    operation_id = "events",
    tag = "tasks",
    params(EventsQuery),
    responses(
        (status = 200, description = "An SSE stream: `id` the cursor, `event` the name, `data` an EventData", content_type = "text/event-stream", body = EventData),
        (status = 400, response = BadRequest),
    )
)]
pub async fn events(
    State(state): State<AppState>,
    headers: HeaderMap,
    uri: Uri,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    let q: EventsQuery = query(&uri)?;
    let filter = EventFilter {
        task_id: None,
        template: q.template,
    };
    let after = match resume_point(&headers, q.after) {
        Some(c) => Some(c),
        None => state.store().latest_event_cursor(&filter).await?,
    };
    follow(state, filter, after, Ending::Never).await
}

/// When a stream ends by itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Ending {
    /// After the task's transition to complete or cancelled.
    WithTask,
    /// At once: the client already has the task's last event.
    Now,
    /// Never (the client closes it).
    Never,
}

/// Whether this event ends a task's stream: a task that completed or was cancelled has no
/// more events (one in error may be retried, so its stream stays open).
fn ends_task(e: &StoredEvent) -> bool {
    e.name == tasker_store::TASK_TRANSITION
        && matches!(e.to_state.as_deref(), Some("complete" | "cancelled"))
}

struct Follow {
    state: AppState,
    filter: EventFilter,
    cursor: Option<String>,
    buffer: std::collections::VecDeque<StoredEvent>,
    wake: tokio::sync::watch::Receiver<u64>,
    ending: Ending,
    ended: bool,
}

async fn follow(
    state: AppState,
    filter: EventFilter,
    after: Option<String>,
    ending: Ending,
) -> Result<Sse<impl Stream<Item = Result<Event, Infallible>>>, Problem> {
    // A bad cursor is refused before the stream starts.
    let first = state
        .store()
        .events_after(&filter, after.as_deref(), BATCH)
        .await
        .map_err(|e| match e {
            tasker_store::StoreError::InvalidInput(m) => {
                Problem::bad_request(format!("bad cursor: {m}")).field("Last-Event-ID", m)
            }
            e => e.into(),
        })?;
    let wake = state.event_wake();
    let f = Follow {
        state,
        filter,
        cursor: after,
        buffer: first.into(),
        wake,
        ending,
        ended: ending == Ending::Now,
    };
    let stream = futures::stream::unfold(f, |mut f| async move {
        loop {
            if f.ended || f.state.closing().is_cancelled() {
                return None;
            }
            if let Some(e) = f.buffer.pop_front() {
                f.cursor = Some(e.cursor.clone());
                f.ended = f.ending == Ending::WithTask && ends_task(&e);
                return Some((Ok(sse_event(e)), f));
            }
            // Mark the wake-ups seen before reading, so one that comes during the read is
            // not lost.
            f.wake.borrow_and_update();
            match f
                .state
                .store()
                .events_after(&f.filter, f.cursor.as_deref(), BATCH)
                .await
            {
                Ok(events) if !events.is_empty() => f.buffer.extend(events),
                Ok(_) => {
                    let closing = f.state.closing().clone();
                    tokio::select! {
                        _ = tokio::time::timeout(POLL, f.wake.changed()) => {}
                        () = closing.cancelled() => {}
                    }
                }
                Err(e) => {
                    // The store is away: say so on the stream and try again after a pause.
                    tracing::warn!(error = %e, "event stream cannot read the log");
                    tokio::time::sleep(POLL).await;
                    return Some((Ok(Event::default().comment(format!("store: {e}"))), f));
                }
            }
        }
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::default()))
}
