//! Turning an [`Execution`] into a store outcome, and recorded outcomes into events.
//!
//! Shared by the worker and the test coordinator so both take the same decisions.

use chrono::{DateTime, Utc};
use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::events;
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_core::text;

use tasker_store::{
    AttemptLog, ClaimedStep, CompletionOutcome, CustomEventRecord, ExpiredLease, FailureOutcome,
    RetryDecision, StepCompletion, StepFailure, TaskId,
};

use crate::event::{Event, EventBus};
use crate::executor::{Execution, Outcome};

/// An outcome ready for the store.
#[derive(Debug, Clone)]
pub enum Record {
    Done(StepCompletion),
    Failed(StepFailure),
}

/// Decides whether a failure retries, from the step's policy in its template. Guest text is
/// made storable here, the one path of the worker and the coordinator to the store: a NUL in
/// a message becomes U+FFFD, and a result with a NUL (which no store could keep as it is)
/// fails its attempt as `bad_output` instead of failing the whole batch call.
pub fn to_record(job: &ClaimedStep, exec: &Execution, template: Option<&Template>) -> Record {
    let nul_result;
    let outcome = match &exec.outcome {
        Outcome::Success { result } if text::json_has_nul(result) => {
            nul_result = Outcome::Failure {
                kind: ErrorKind::BadOutput,
                message: "the result contains a NUL character (U+0000), which the store cannot \
                          keep"
                    .into(),
                handler_retryable: None,
                retry_after_ms: None,
            };
            &nul_result
        }
        other => other,
    };
    match outcome {
        Outcome::Success { result } => Record::Done(StepCompletion {
            step_id: job.step_id,
            token: job.token,
            result: result.clone(),
            accounting: exec.accounting.clone(),
            log: storable_log(&exec.log),
        }),
        Outcome::Failure {
            kind,
            message,
            handler_retryable,
            retry_after_ms,
        } => {
            let retryable = match template.and_then(|t| t.step(&job.step_name)) {
                // Its stored input will not decode next time either, whatever `by_kind` says.
                _ if job.defect.is_some() => false,
                Some(step) => step.retry.should_retry(*kind, *handler_retryable),
                // Without its template (deleted?), fall back to the kind's default.
                None => kind
                    .default_retryable()
                    .or(*handler_retryable)
                    .unwrap_or(true),
            };
            Record::Failed(StepFailure {
                step_id: job.step_id,
                token: job.token,
                error_kind: *kind,
                message: text::storable(message).into_owned(),
                retryable,
                retry_after_ms: *retry_after_ms,
                accounting: exec.accounting.clone(),
                log: storable_log(&exec.log),
            })
        }
    }
}

/// A NUL in guest output becomes U+FFFD: neither store can keep one in text or JSON.
fn storable_log(log: &AttemptLog) -> AttemptLog {
    let mut log = log.clone();
    for line in &mut log.lines {
        if let std::borrow::Cow::Owned(m) = text::storable(&line.message) {
            line.message = m;
        }
    }
    for s in [&mut log.stdout, &mut log.stderr] {
        if let std::borrow::Cow::Owned(t) = text::storable(s) {
            *s = t;
        }
    }
    log
}

fn step_event(name: &str, now: DateTime<Utc>, job: &ClaimedStep) -> Event {
    Event::step(
        name,
        now,
        job.task_id,
        job.step_id,
        &job.step_name,
        job.attempt as i32,
    )
}

fn publish_refusal(bus: &EventBus, now: DateTime<Utc>, job: &ClaimedStep, refusal: &str) {
    metrics::counter!(tasker_core::metrics::LEASES_LOST).increment(1);
    bus.publish(
        step_event(events::STEP_LEASE_LOST, now, job).with_payload(json!({
            "refusal": refusal,
            "token": job.token,
        })),
    );
}

/// Task ends seen in one batch. The store reports a finished task on every item of it in
/// the batch; each task's end is published once, after the step events.
#[derive(Debug, Default)]
pub struct TaskEnds(std::collections::BTreeMap<TaskId, TaskState>);

impl TaskEnds {
    pub fn note(&mut self, task_id: TaskId, state: Option<TaskState>) {
        if let Some(s) = state {
            self.0.insert(task_id, s);
        }
    }

    pub fn publish(self, bus: &EventBus, now: DateTime<Utc>) {
        for (task_id, state) in self.0 {
            publish_task_end(bus, now, task_id, Some(state));
        }
    }
}

/// Publishes what the store recorded for a successful attempt.
pub fn publish_completed(
    bus: &EventBus,
    now: DateTime<Utc>,
    job: &ClaimedStep,
    rec: &CompletionOutcome,
    ends: &mut TaskEnds,
) {
    if let Some(refusal) = &rec.refusal {
        return publish_refusal(bus, now, job, &format!("{refusal:?}"));
    }
    bus.publish(step_event(events::STEP_COMPLETED, now, job));
    ends.note(job.task_id, rec.task_finalized);
}

/// Publishes what the store recorded for a failed attempt.
pub fn publish_failed(
    bus: &EventBus,
    now: DateTime<Utc>,
    job: &ClaimedStep,
    failure: &StepFailure,
    rec: &FailureOutcome,
    ends: &mut TaskEnds,
) {
    if let Some(refusal) = &rec.refusal {
        return publish_refusal(bus, now, job, &format!("{refusal:?}"));
    }
    let kind = failure.error_kind.as_str();
    bus.publish(
        step_event(events::STEP_FAILED, now, job).with_payload(json!({
            "kind": kind,
            "message": failure.message,
            "retryable": failure.retryable,
        })),
    );
    match rec.decision {
        Some(RetryDecision::Retry) => bus.publish(
            step_event(events::STEP_RETRY_SCHEDULED, now, job).with_payload(json!({
                "next_ready_at": rec.next_ready_at,
                "retry_after_ms": failure.retry_after_ms,
            })),
        ),
        Some(RetryDecision::Exhausted) => bus.publish(step_event(events::STEP_EXHAUSTED, now, job)),
        _ => {}
    }
    ends.note(job.task_id, rec.task_finalized);
}

/// Publishes a lease the sweeper took back.
pub fn publish_expired(bus: &EventBus, now: DateTime<Utc>, x: &ExpiredLease) {
    metrics::counter!(tasker_core::metrics::LEASES_EXPIRED).increment(1);
    let mut ev = Event::task(events::STEP_LEASE_LOST, now, x.task_id).with_payload(json!({
        "worker": x.worker,
        "token": x.token,
        "state": x.state.as_str(),
        "lease_losses": x.lease_losses,
    }));
    ev.step_id = Some(x.step_id);
    bus.publish(ev);
    publish_task_end(bus, now, x.task_id, x.task_finalized);
}

/// `task.completed` / `task.failed` when a call finished the task.
pub fn publish_task_end(
    bus: &EventBus,
    now: DateTime<Utc>,
    task_id: TaskId,
    state: Option<TaskState>,
) {
    let name = match state {
        Some(TaskState::Complete) => events::TASK_COMPLETED,
        Some(TaskState::Error) => events::TASK_FAILED,
        Some(TaskState::Cancelled) => events::TASK_CANCELLED,
        _ => return,
    };
    metrics::counter!(tasker_core::metrics::TASKS_FINISHED, "state" => name).increment(1);
    bus.publish(Event::task(name, now, task_id));
}

/// Handler-emitted events go onto the bus as `custom.<name>`.
pub fn publish_custom(bus: &EventBus, now: DateTime<Utc>, job: &ClaimedStep, exec: &Execution) {
    for ev in &exec.events {
        let name = format!("{}{}", events::CUSTOM_PREFIX, ev.name);
        bus.publish(step_event(&name, now, job).with_payload(ev.payload.clone()));
    }
}

/// A handler's custom events, for the hook outbox (recorded with the attempt's outcome).
pub fn custom_records(job: &ClaimedStep, exec: &Execution) -> Vec<CustomEventRecord> {
    exec.events
        .iter()
        .map(|ev| CustomEventRecord {
            step_id: job.step_id,
            token: job.token,
            name: text::storable(&ev.name).into_owned(),
            payload: text::storable_json(&ev.payload),
        })
        .collect()
}
