//! Task operations, publishing their events: create, cancel, retry, resolve.

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasker_core::events;
use tasker_core::template::Template;
use tasker_core::trace::METADATA_KEY;
use tasker_store::{
    CancelOutcome, CreatedTask, NewTask, ResolveOutcome, RetryOutcome, StepId, Store, StoreError,
    TaskId,
};
use thiserror::Error;
use tracing::Instrument;

use crate::event::{Event, EventBus};
use crate::traces;

#[derive(Debug, Error)]
pub enum OpsError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Context(#[from] tasker_core::template::ContextError),
}

impl OpsError {
    pub fn is_retryable(&self) -> bool {
        match self {
            OpsError::Store(e) => e.is_retryable(),
            OpsError::Context(_) => false,
        }
    }
}

/// Creates a task after checking its context against the template's schema, so an invalid
/// context writes nothing. With a tracer, the creation is the task's root span (a child of
/// a traceparent in `req.metadata`) and its context replaces that traceparent in
/// `req.metadata`, which is what is stored: every attempt of the task is its child.
pub async fn create_task<S: Store>(
    store: &S,
    bus: &EventBus,
    template: &Template,
    req: &mut NewTask,
    now: DateTime<Utc>,
) -> Result<CreatedTask, OpsError> {
    template.validate_context(&req.context)?;
    let span = tracing::info_span!(
        target: traces::TARGET,
        "task.create",
        otel.name = "task.create",
        template = %template.key(),
        task_id = tracing::field::Empty,
        created = tracing::field::Empty,
    );
    if let Some(t) = traces::tracer() {
        if let Some(parent) = traces::stored(&req.metadata) {
            t.set_parent(&span, &parent);
        }
        if let (Some(cx), Value::Object(m)) = (t.context_of(&span), &mut req.metadata) {
            m.insert(METADATA_KEY.into(), Value::String(cx.to_string()));
        }
    }
    let created = store.create_task(req, now).instrument(span.clone()).await?;
    span.record("task_id", created.task_id.get());
    span.record("created", created.created);
    if created.created {
        bus.publish(
            Event::task(events::TASK_CREATED, now, created.task_id)
                .with_payload(json!({"template": template.key()})),
        );
    }
    Ok(created)
}

pub async fn cancel_task<S: Store>(
    store: &S,
    bus: &EventBus,
    task: TaskId,
    now: DateTime<Utc>,
) -> Result<CancelOutcome, OpsError> {
    let out = store.cancel_task(task, now).await?;
    if out.cancelled {
        bus.publish(
            Event::task(events::TASK_CANCELLED, now, task)
                .with_payload(json!({"steps_cancelled": out.steps_cancelled})),
        );
    }
    Ok(out)
}

pub async fn retry_task<S: Store>(
    store: &S,
    bus: &EventBus,
    task: TaskId,
    now: DateTime<Utc>,
) -> Result<RetryOutcome, OpsError> {
    let out = store.retry_task(task, now).await?;
    bus.publish(
        Event::task(events::TASK_RETRY_REQUESTED, now, task)
            .with_payload(json!({"steps_reset": out.steps_reset})),
    );
    Ok(out)
}

pub async fn resolve_step<S: Store>(
    store: &S,
    bus: &EventBus,
    step: StepId,
    result: Option<Value>,
    now: DateTime<Utc>,
) -> Result<ResolveOutcome, OpsError> {
    let out = store.resolve_step(step, result, now).await?;
    let mut ev = Event::task(events::STEP_RESOLVED_MANUALLY, now, out.task_id)
        .with_payload(json!({"ready_children": out.ready_children}));
    ev.step_id = Some(step);
    bus.publish(ev);
    crate::record::publish_task_end(
        bus,
        now,
        out.task_id,
        Some(out.task_state).filter(|s| s.is_terminal()),
    );
    Ok(out)
}
