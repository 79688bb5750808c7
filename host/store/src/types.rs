//! Rows and results of store operations. Backend-neutral: a SQLite store returns the same.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::error_kind::ErrorKind;
use tasker_core::priority::Priority;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::{Grants, HandlerRef, Limits};

use crate::attempt_log::AttemptLog;
use crate::error::StoreError;
pub use crate::ids::{StepId, TaskId};

/// A template as registered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RegisteredTemplate {
    pub template_id: i64,
    /// `namespace/name@version`.
    pub key: String,
    /// False when the same definition was already registered under this key.
    pub created: bool,
}

/// A request to run a template once.
#[derive(Debug, Clone, PartialEq)]
pub struct NewTask {
    pub template_key: String,
    /// JSON object given to every step.
    pub context: Value,
    /// Idempotency key, unique per namespace: a second create returns the first task.
    pub identity_key: Option<String>,
    /// Initiator, source system, reason, tags...
    pub metadata: Value,
    /// `None`: the template's, else 3 (`tasker_core::priority`).
    pub priority: Option<Priority>,
    /// Its first steps become ready at this instant, not before (`None`, or a past instant:
    /// at creation).
    pub run_at: Option<DateTime<Utc>>,
}

impl NewTask {
    pub fn new(template_key: impl Into<String>, context: Value) -> Self {
        NewTask {
            template_key: template_key.into(),
            context,
            identity_key: None,
            metadata: Value::Object(Default::default()),
            priority: None,
            run_at: None,
        }
    }

    pub fn with_priority(mut self, priority: Priority) -> Self {
        self.priority = Some(priority);
        self
    }

    pub fn with_run_at(mut self, at: DateTime<Utc>) -> Self {
        self.run_at = Some(at);
        self
    }

    pub fn with_identity_key(mut self, key: impl Into<String>) -> Self {
        self.identity_key = Some(key.into());
        self
    }
}

/// Result of a create: `created` is false when the identity key matched an existing task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CreatedTask {
    pub task_id: TaskId,
    pub created: bool,
}

/// A step claimed by a worker, with everything needed to run it.
#[derive(Debug, Clone, PartialEq)]
pub struct ClaimedStep {
    pub step_id: StepId,
    pub task_id: TaskId,
    /// Fencing token: present it with the completion, failure, heartbeat or release.
    pub token: i64,
    /// 1-based number of this handler attempt (lease losses and releases do not count).
    pub attempt: u32,
    pub max_attempts: u32,
    pub step_name: String,
    pub handler: HandlerRef,
    pub config: Value,
    pub limits: Limits,
    pub grants: Grants,
    /// The task's context.
    pub context: Value,
    /// `{parent step name: its result}`.
    pub parent_results: Value,
    pub template_key: String,
    pub lease_expires_at: DateTime<Utc>,
    /// This claim started the task (pending -> in_progress).
    pub task_started: bool,
    /// For a step pinned `sticky` that ran before: the plugin hash of its first attempt,
    /// which every retry must run.
    pub pinned_hash: Option<String>,
    /// Why the step's stored input could not be decoded (e.g. a parent's result nested past
    /// the decoder's depth limit). A defective claim is failed without running its handler;
    /// the fields that did not decode hold their defaults.
    pub defect: Option<String>,
}

impl ClaimedStep {
    pub fn lease(&self) -> Lease {
        Lease {
            step_id: self.step_id,
            token: self.token,
        }
    }
}

/// A held claim: the step and its fencing token.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Lease {
    pub step_id: StepId,
    pub token: i64,
}

/// What an attempt used, as reported by the sandbox.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Accounting {
    pub fuel: Option<u64>,
    pub peak_memory_bytes: Option<u64>,
    pub wall_us: Option<u64>,
    /// blake3 of the component that ran.
    pub plugin_hash: Option<String>,
}

/// A successful attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct StepCompletion {
    pub step_id: StepId,
    pub token: i64,
    pub result: Value,
    pub accounting: Accounting,
    /// What the handler said (stored with the attempt row when not empty).
    pub log: AttemptLog,
}

/// A failed attempt to record.
#[derive(Debug, Clone, PartialEq)]
pub struct StepFailure {
    pub step_id: StepId,
    pub token: i64,
    pub error_kind: ErrorKind,
    pub message: String,
    /// The failure's own verdict (after the template's `retry.by_kind`). A retry also needs
    /// the step's policy to be retryable and attempts left.
    pub retryable: bool,
    /// A handler's retry-after: replaces the backoff, capped at the step's
    /// `max_retry_after_ms`.
    pub retry_after_ms: Option<u64>,
    pub accounting: Accounting,
    /// What the handler said (stored with the attempt row when not empty).
    pub log: AttemptLog,
}

/// Why a completion, failure, heartbeat or release was refused. A refused item changed
/// nothing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Refusal {
    /// The step is no longer held under this token: its lease was lost and it was claimed
    /// again (or it was retried since).
    StaleToken,
    /// The step is not in progress (lease expired and returned, released, finished).
    NotInProgress,
    /// The task was cancelled.
    Cancelled,
    /// No such step.
    UnknownStep,
    /// The same step appeared earlier in this batch.
    DuplicateInBatch,
    /// Held under this token by another worker.
    OtherWorker,
    Other(String),
}

impl Refusal {
    /// From PostgreSQL's `tasker_refusal` text.
    pub fn parse(s: &str) -> Refusal {
        match s {
            "stale_token" => Refusal::StaleToken,
            "not_in_progress" => Refusal::NotInProgress,
            "cancelled" => Refusal::Cancelled,
            "unknown_step" => Refusal::UnknownStep,
            "duplicate_in_batch" => Refusal::DuplicateInBatch,
            "other_worker" => Refusal::OtherWorker,
            other => Refusal::Other(other.to_owned()),
        }
    }
}

/// Outcome of one item of [`StepCompletion`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CompletionOutcome {
    pub step_id: StepId,
    /// None for an unknown step.
    pub task_id: Option<TaskId>,
    /// None when accepted.
    pub refusal: Option<Refusal>,
    /// Set when this call finalized the step's task (complete or error).
    pub task_finalized: Option<TaskState>,
}

impl CompletionOutcome {
    pub fn accepted(&self) -> bool {
        self.refusal.is_none()
    }
}

/// What a failure led to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RetryDecision {
    /// waiting_for_retry until `next_ready_at`.
    Retry,
    /// error: the failure or the step is not retryable.
    Permanent,
    /// error: no attempts (or lease losses) left.
    Exhausted,
}

impl RetryDecision {
    pub fn as_str(self) -> &'static str {
        match self {
            RetryDecision::Retry => "retry",
            RetryDecision::Permanent => "permanent",
            RetryDecision::Exhausted => "exhausted",
        }
    }

    /// From PostgreSQL's text.
    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "retry" => Ok(RetryDecision::Retry),
            "permanent" => Ok(RetryDecision::Permanent),
            "exhausted" => Ok(RetryDecision::Exhausted),
            other => Err(format!("unknown retry decision '{other}'")),
        }
    }
}

/// Outcome of one item of [`StepFailure`]s.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FailureOutcome {
    pub step_id: StepId,
    pub task_id: Option<TaskId>,
    pub refusal: Option<Refusal>,
    /// Set when accepted.
    pub decision: Option<RetryDecision>,
    /// When the step can be claimed again (decision Retry).
    pub next_ready_at: Option<DateTime<Utc>>,
    pub task_finalized: Option<TaskState>,
}

impl FailureOutcome {
    pub fn accepted(&self) -> bool {
        self.refusal.is_none()
    }
}

/// Outcome of one heartbeat item.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct HeartbeatOutcome {
    pub step_id: StepId,
    /// New expiry, or None when the lease is no longer held (stop working on the step).
    pub lease_expires_at: Option<DateTime<Utc>>,
}

/// Outcome of one release item.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReleaseOutcome {
    pub step_id: StepId,
    pub refusal: Option<Refusal>,
}

/// A step whose lease expired and was taken back by the sweeper.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ExpiredLease {
    pub step_id: StepId,
    pub task_id: TaskId,
    /// The worker that lost it.
    pub worker: Option<String>,
    /// The token that is now stale.
    pub token: i64,
    /// waiting_for_retry (claimable now) or error (too many lease losses).
    pub state: StepState,
    pub lease_losses: u32,
    pub task_finalized: Option<TaskState>,
}

/// `get_step_readiness_status`: one step and why it is or is not ready.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReadinessRow {
    pub step_id: StepId,
    pub task_id: TaskId,
    pub name: String,
    pub state: StepState,
    pub dependencies_satisfied: bool,
    pub total_parents: u32,
    pub completed_parents: u32,
    pub retry_eligible: bool,
    pub attempts: u32,
    pub max_attempts: u32,
    pub retryable: bool,
    pub next_retry_at: Option<DateTime<Utc>>,
    pub last_attempted_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub backoff_request_ms: Option<i64>,
    pub ready_for_execution: bool,
    /// The step's priority in effect.
    pub priority: Priority,
    /// A delayed start: the instant a pending step becomes ready, while it is ahead.
    pub not_before: Option<DateTime<Utc>>,
    /// For a ready step: how many ready steps of higher priority claims take before it
    /// (counted up to 1,000 per priority).
    pub ahead: Option<u32>,
    /// Set while the step's task waits in its concurrency key's line.
    pub concurrency: Option<ConcurrencyWait>,
}

/// A task waiting for a slot of its concurrency key (`tasker_core::concurrency`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ConcurrencyWait {
    pub key: String,
    /// Slots the key's tasks hold now.
    pub holding: u32,
    /// The waiting task's limit for the key.
    pub limit: u32,
}

impl ReadinessRow {
    /// Why the step has not run yet, in words ("ready" when it may run now; empty when it is
    /// running or finished). The one wording of the CLI's status and the API.
    pub fn reason(&self, now: DateTime<Utc>) -> String {
        if self.state.is_terminal() || self.state == StepState::InProgress {
            return String::new();
        }
        if self.ready_for_execution {
            return match self.ahead {
                Some(n) if n > 0 => format!(
                    "ready: priority {} behind {n}{} ready steps of higher priority",
                    self.priority,
                    if n >= 1000 { "+" } else { "" }
                ),
                _ => "ready".into(),
            };
        }
        if !self.dependencies_satisfied {
            return format!(
                "waiting for parents ({} of {} done)",
                self.completed_parents, self.total_parents
            );
        }
        if !self.retry_eligible {
            return if self.state == StepState::Error {
                format!(
                    "failed ({} of {} attempts used)",
                    self.attempts, self.max_attempts
                )
            } else {
                format!("not retryable ({} attempts)", self.attempts)
            };
        }
        if let Some(t) = self.not_before.filter(|t| *t > now) {
            return format!("scheduled for {}", t.format("%Y-%m-%d %H:%M:%S%.3f UTC"));
        }
        if let Some(w) = &self.concurrency {
            return if w.holding >= w.limit {
                format!(
                    "concurrency key {} at limit ({}/{})",
                    w.key, w.holding, w.limit
                )
            } else {
                format!(
                    "concurrency key {}: waiting behind earlier tasks ({}/{})",
                    w.key, w.holding, w.limit
                )
            };
        }
        match self.next_retry_at {
            Some(t) if t > now => format!("retry at {}", t.format("%H:%M:%S%.3f")),
            _ => "ready".into(),
        }
    }
}

/// `get_task_execution_context`.
#[derive(Debug, Clone, PartialEq)]
pub struct ExecutionContext {
    pub task_id: TaskId,
    pub task_state: TaskState,
    pub total_steps: u32,
    pub pending_steps: u32,
    pub in_progress_steps: u32,
    pub waiting_for_retry_steps: u32,
    pub completed_steps: u32,
    pub resolved_steps: u32,
    pub failed_steps: u32,
    pub cancelled_steps: u32,
    pub ready_steps: u32,
    /// has_ready_steps, processing, blocked_by_failures, all_complete, cancelled,
    /// waiting_for_dependencies.
    pub execution_status: String,
    /// execute_ready_steps, wait_for_completion, handle_failures, finalize_task,
    /// wait_for_dependencies, none.
    pub recommended_action: String,
    pub completion_percentage: f64,
    /// healthy, recovering, blocked, unknown.
    pub health_status: String,
}

/// `calculate_dependency_levels`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DependencyLevel {
    pub step_id: StepId,
    pub name: String,
    pub level: u32,
}

/// `get_system_health_counts`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HealthCounts {
    pub total_tasks: i64,
    pub pending_tasks: i64,
    pub in_progress_tasks: i64,
    pub complete_tasks: i64,
    pub error_tasks: i64,
    pub cancelled_tasks: i64,
    pub total_steps: i64,
    pub pending_steps: i64,
    pub in_progress_steps: i64,
    pub waiting_for_retry_steps: i64,
    pub complete_steps: i64,
    pub error_steps: i64,
    pub cancelled_steps: i64,
    pub resolved_steps: i64,
    /// Claimable now.
    pub ready_steps: i64,
    /// Claimable later (retry backoff).
    pub retry_backlog: i64,
    pub expired_leases: i64,
    pub active_connections: i64,
    pub max_connections: i64,
}

/// Result of cancelling a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CancelOutcome {
    pub task_id: TaskId,
    /// False when it was already cancelled.
    pub cancelled: bool,
    pub steps_cancelled: u32,
}

/// Result of retrying a task in error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryOutcome {
    pub task_id: TaskId,
    pub steps_reset: u32,
}

/// Result of resolving a step by hand.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ResolveOutcome {
    pub step_id: StepId,
    pub task_id: TaskId,
    pub ready_children: u32,
    pub task_state: TaskState,
}

/// A task row.
#[derive(Debug, Clone, PartialEq)]
pub struct TaskRow {
    pub id: TaskId,
    pub template_key: String,
    pub state: TaskState,
    pub context: Value,
    pub identity_key: Option<String>,
    pub metadata: Value,
    pub step_count: u32,
    pub unfinished_steps: u32,
    pub error_steps: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// A step row.
#[derive(Debug, Clone, PartialEq)]
pub struct StepRow {
    pub id: StepId,
    pub task_id: TaskId,
    pub position: u32,
    pub name: String,
    pub state: StepState,
    pub unfinished_parents: u32,
    pub ready_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub retryable: bool,
    /// The current fencing token (number of claims so far).
    pub claim_count: i64,
    pub lease_losses: u32,
    pub max_lease_losses: u32,
    pub worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_attempted_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub backoff_request_ms: Option<i64>,
    /// The kind of the last failure (None after a release, which is no failure).
    pub last_error_kind: Option<ErrorKind>,
    pub result: Option<Value>,
    pub finished_at: Option<DateTime<Utc>>,
}

/// How an attempt ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AttemptOutcome {
    Completed,
    Failed,
    LeaseLost,
    Released,
    Cancelled,
}

impl AttemptOutcome {
    pub fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Completed => "completed",
            AttemptOutcome::Failed => "failed",
            AttemptOutcome::LeaseLost => "lease_lost",
            AttemptOutcome::Released => "released",
            AttemptOutcome::Cancelled => "cancelled",
        }
    }

    pub(crate) fn parse(s: &str) -> Result<Self, String> {
        Ok(match s {
            "completed" => AttemptOutcome::Completed,
            "failed" => AttemptOutcome::Failed,
            "lease_lost" => AttemptOutcome::LeaseLost,
            "released" => AttemptOutcome::Released,
            "cancelled" => AttemptOutcome::Cancelled,
            other => return Err(format!("unknown attempt outcome '{other}'")),
        })
    }
}

/// The `error_kind` column of steps and attempts: an [`ErrorKind`] name, or `released` /
/// `cancelled`, which the outcome already says and which are no error kind.
pub(crate) fn stored_error_kind(
    column: &str,
    text: Option<String>,
) -> Result<Option<ErrorKind>, StoreError> {
    match text.as_deref() {
        None | Some("released") | Some("cancelled") => Ok(None),
        Some(k) => k
            .parse()
            .map(Some)
            .map_err(|e| StoreError::decode(format!("column {column}"), e)),
    }
}

/// One claim of a step that ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptRow {
    pub step_id: StepId,
    /// The claim's fencing token.
    pub attempt_no: i64,
    pub task_id: TaskId,
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub outcome: AttemptOutcome,
    /// Why a failed or lost attempt failed (None when it completed, was released or was
    /// cancelled: `outcome` says which).
    pub error_kind: Option<ErrorKind>,
    pub message: Option<String>,
    pub retryable: Option<bool>,
    pub decision: Option<RetryDecision>,
    pub next_ready_at: Option<DateTime<Utc>>,
    pub fuel: Option<i64>,
    pub peak_memory_bytes: Option<i64>,
    pub wall_us: Option<i64>,
    pub plugin_hash: Option<String>,
    /// For failures: `builtin` or `policy:<component>` (who decided the retry).
    pub decided_by: Option<String>,
    /// What a retry policy answered (and any clamp applied to it).
    pub decision_detail: Option<String>,
    /// Why a configured retry policy was not used (it failed; the built-in policy decided).
    pub policy_warning: Option<String>,
}

/// One audit row of a task's or a step's state history.
#[derive(Debug, Clone, PartialEq)]
pub struct TransitionRow<S> {
    /// The task or step id.
    pub id: i64,
    pub sort_key: u32,
    pub from_state: S,
    pub to_state: S,
    pub metadata: Value,
    pub most_recent: bool,
    pub created_at: DateTime<Utc>,
}

/// Who decided a failure's retry, recorded on its attempt (see [`crate::Store::fail_decided`]).
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct FailureDecision {
    /// `builtin` or `policy:<component>`.
    pub decided_by: String,
    /// The policy's answer, e.g. `retry after 1500 ms` or `give up: bad input`.
    pub detail: Option<String>,
    /// Set when a configured policy failed and the built-in policy decided instead.
    pub warning: Option<String>,
}

/// A handler's custom event, recorded for hooks with its attempt's outcome.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEventRecord {
    pub step_id: StepId,
    /// The attempt's claim token: events of a refused attempt are dropped with it.
    pub token: i64,
    /// Without the `custom.` prefix.
    pub name: String,
    pub payload: Value,
}

/// One claimed delivery of one event to one hook.
#[derive(Debug, Clone, PartialEq)]
pub struct HookDeliveryJob {
    pub delivery_id: i64,
    /// The delivery lease's fencing token.
    pub token: i32,
    pub hook_id: i64,
    /// The hook component (`name@version` or `blake3:<hash>`).
    pub component: String,
    pub limits: Limits,
    pub grants: Grants,
    pub max_attempts: u32,
    pub template_key: String,
    pub task_id: TaskId,
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    pub event_name: String,
    pub attempt: Option<u32>,
    pub payload: Value,
    pub event_at: DateTime<Utc>,
    /// 1 for the first delivery of this event to this hook.
    pub delivery_no: u32,
}

/// How one delivery ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookDeliveryResult {
    pub delivery_id: i64,
    pub token: i32,
    /// `None`: delivered. `Some(error)`: failed (retried with backoff, then dead).
    pub error: Option<String>,
}

/// Where one hook delivery (an outbox row) stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum DeliveryState {
    /// Not delivered yet: waiting for its turn, its lease, or its next attempt.
    Pending,
    Delivered,
    /// Failed `max_attempts` times: a dead letter.
    Dead,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryState::Pending => "pending",
            DeliveryState::Delivered => "delivered",
            DeliveryState::Dead => "dead",
        }
    }

    pub fn parse(s: &str) -> Result<Self, String> {
        match s {
            "pending" => Ok(DeliveryState::Pending),
            "delivered" => Ok(DeliveryState::Delivered),
            "dead" => Ok(DeliveryState::Dead),
            other => Err(format!("unknown delivery state '{other}'")),
        }
    }
}

/// A stored delivery state (the `state` column); anything else is a decode error.
pub(crate) fn stored_delivery_state(text: &str) -> Result<DeliveryState, StoreError> {
    DeliveryState::parse(text).map_err(|e| StoreError::decode("column state", e))
}

impl std::fmt::Display for DeliveryState {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What the store recorded for a delivery.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookFinishOutcome {
    pub delivery_id: i64,
    /// False: the lease was lost (another worker took the delivery over).
    pub accepted: bool,
    /// Delivered, pending (will retry at `next_attempt_at`) or dead; `None` when refused.
    pub state: Option<DeliveryState>,
    pub next_attempt_at: Option<DateTime<Utc>>,
}

/// Delivery counts of one hook.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HookCounts {
    pub hook_id: i64,
    pub component: String,
    pub pending: i64,
    pub delivered: i64,
    pub dead: i64,
}

/// One outbox row (one event for one hook): for status, listings of deliveries and dead
/// letters, and tests.
#[derive(Debug, Clone, PartialEq)]
pub struct OutboxRow {
    /// The delivery order within a (hook, task).
    pub id: i64,
    pub hook_id: i64,
    pub task_id: TaskId,
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    pub event_name: String,
    /// The step's attempt the event is about (step events only).
    pub attempt: Option<u32>,
    pub payload: Value,
    /// When the change that made the event happened (the event's timestamp).
    pub event_at: DateTime<Utc>,
    pub state: DeliveryState,
    /// Finished deliveries of this row that failed or succeeded (a lost lease does not count).
    pub attempts: i32,
    /// Claims of this row (the delivery lease's fencing token).
    pub claims: i32,
    /// When a pending row is due; a finished row keeps the instant its last delivery was due.
    pub next_attempt_at: DateTime<Utc>,
    /// The delivery loop holding a pending row's lease, and until when.
    pub lease_owner: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    /// The last failure's error (a dead letter's reason).
    pub last_error: Option<String>,
    /// When the row was delivered or parked as dead.
    pub finished_at: Option<DateTime<Utc>>,
    /// The lowest pending row of its (hook, task): the only one that may be claimed.
    pub head: bool,
}

/// A dead letter put back into delivery ([`crate::Store::redeliver_dead_letters`]): the dead
/// row `old_id` was replaced by the new pending row `new_id` of the same event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Redelivered {
    pub old_id: i64,
    pub new_id: i64,
    pub hook_id: i64,
    pub task_id: TaskId,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_stored_error_kind_is_a_kind_an_outcome_or_a_decode_error() {
        assert_eq!(
            stored_error_kind("error_kind", Some("trap".into())),
            Ok(Some(ErrorKind::Trap))
        );
        for outcome in [None, Some("released".into()), Some("cancelled".into())] {
            assert_eq!(stored_error_kind("error_kind", outcome), Ok(None));
        }
        let err = stored_error_kind("last_error_kind", Some("oops".into())).unwrap_err();
        assert!(
            matches!(&err, StoreError::Decode { what, message }
                if what == "column last_error_kind" && message.contains("unknown error kind 'oops'")),
            "{err}"
        );
        assert!(matches!(
            stored_delivery_state("gone"),
            Err(StoreError::Decode { .. })
        ));
    }
}
