//! The operations the orchestrator needs from a store, backend-neutral.
//!
//! Every time-dependent call takes `now` from the caller's clock, so tests and the test
//! coordinator control time. Batch calls return one outcome per input item, in input order.

use std::future::Future;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;

use crate::attempt_log::AttemptLogRow;
use crate::error::StoreError;
use crate::events::{EventFilter, StoredEvent};
use crate::listing::*;
use crate::types::*;

pub type Result<T> = std::result::Result<T, StoreError>;

/// Storage for templates, tasks and steps. [`crate::PgStore`] implements it; a SQLite store
/// can implement the same contract (see docs/store.md for the invariants it must keep).
pub trait Store: Send + Sync {
    /// Register a validated template (idempotent for an identical definition).
    fn register_template(
        &self,
        template: &Template,
    ) -> impl Future<Output = Result<RegisteredTemplate>> + Send;

    /// [`Store::register_template`] at `now`: a template's `schedules:` are upserted with it
    /// (source `template`, named `namespace/name:schedule`, in the same transaction), their
    /// next instants counted from `now`; a re-registration keeps their pause state and, where
    /// the pattern did not change, their next instant. `register_template` is this at the
    /// wall clock.
    fn register_template_at(
        &self,
        template: &Template,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RegisteredTemplate>> + Send;

    /// The registered template with this `namespace/name@version` key.
    fn template(&self, key: &str) -> impl Future<Output = Result<Option<Template>>> + Send;

    /// Create a task; with an identity key, a duplicate returns the existing task.
    fn create_task(
        &self,
        task: &NewTask,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CreatedTask>> + Send;

    /// Claim up to `limit` ready steps under a lease, in `(ready_at, id)` order. SQLite reads
    /// the queue from its head; PostgreSQL resumes each session's scan where its last full
    /// claim ended (the claim cursor, docs/store.md), so a claim may take newer steps while
    /// older ones wait: a short claim, and every 64th, scans from the head again.
    fn claim(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ClaimedStep>>> + Send;

    /// The earliest time a step becomes claimable (None: nothing queued). Lets an idle
    /// worker sleep exactly until a retry is due instead of polling blindly.
    fn next_ready_at(&self) -> impl Future<Output = Result<Option<DateTime<Utc>>>> + Send;

    /// Record successful attempts; releases children and finalizes tasks.
    fn complete(
        &self,
        items: &[StepCompletion],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CompletionOutcome>>> + Send;

    /// Record failed attempts; schedules retries or ends steps in error.
    fn fail(
        &self,
        items: &[StepFailure],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<FailureOutcome>>> + Send;

    /// [`Store::complete`], and in the same transaction the attempts' custom events for
    /// event hooks (kept only for accepted items).
    fn complete_with_events(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<CompletionOutcome>>> + Send;

    /// [`Store::fail`], recording who decided each failure (`decisions[i]` for `items[i]`;
    /// missing ones: the built-in policy), with custom events as in
    /// [`Store::complete_with_events`].
    fn fail_decided(
        &self,
        items: &[StepFailure],
        decisions: &[FailureDecision],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<FailureOutcome>>> + Send;

    /// One hop of a worker: [`Store::complete_with_events`], then [`Store::claim`] of up to
    /// `claim_limit` ready steps for `worker` (none when 0), the children the completions
    /// just released among them. The parts are independent: refused completions do not stop
    /// the claim. Returns the completion outcomes (input order) and the claimed steps.
    ///
    /// Each store makes it one transaction: a claim that fails rolls the completions back
    /// with it.
    fn complete_and_claim(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        worker: &str,
        claim_limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Vec<CompletionOutcome>, Vec<ClaimedStep>)>> + Send;

    /// [`Store::claim`] of one task's steps only, in `(ready_at, id)` order from the head (no
    /// claim cursor): a worker scoped to its task (`tasker run`) leaves every other task's
    /// ready steps to other workers.
    fn claim_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ClaimedStep>>> + Send;

    /// [`Store::complete_and_claim`] whose claim takes only `task`'s steps (any completions).
    #[allow(clippy::too_many_arguments)]
    fn complete_and_claim_of_task(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        task: TaskId,
        worker: &str,
        claim_limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<(Vec<CompletionOutcome>, Vec<ClaimedStep>)>> + Send;

    /// Claim up to `limit` hook deliveries (each the oldest undelivered event of its hook
    /// and task) under a lease.
    fn claim_hook_deliveries(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<HookDeliveryJob>>> + Send;

    /// [`Store::claim_hook_deliveries`] of one task's outbox rows only: the deliverer of a
    /// worker scoped to its task (`tasker run`) runs no other task's hooks.
    fn claim_hook_deliveries_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<HookDeliveryJob>>> + Send;

    /// Record delivery outcomes (fenced by the lease token).
    fn finish_hook_deliveries(
        &self,
        results: &[HookDeliveryResult],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<HookFinishOutcome>>> + Send;

    /// Per hook: pending, delivered and dead deliveries: of every hook (zeros for one with
    /// no deliveries) when `task_id` is None, else of the hooks with deliveries for that task.
    fn hook_counts(
        &self,
        task_id: Option<TaskId>,
    ) -> impl Future<Output = Result<Vec<HookCounts>>> + Send;

    /// A task's outbox rows, in delivery order.
    fn hook_outbox_of_task(
        &self,
        task_id: TaskId,
    ) -> impl Future<Output = Result<Vec<OutboxRow>>> + Send;

    /// When each step's first attempt started (None: never attempted).
    fn first_attempt_at(
        &self,
        step_ids: &[StepId],
    ) -> impl Future<Output = Result<Vec<(StepId, Option<DateTime<Utc>>)>>> + Send;

    /// Extend leases this worker holds.
    fn heartbeat(
        &self,
        worker: &str,
        leases: &[Lease],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<HeartbeatOutcome>>> + Send;

    /// Admit the tasks that wait in a concurrency key's line and may start now (a delayed
    /// task whose run_at has passed; a head a release could not admit). Returns how many.
    /// The lease sweeper calls it (`tasker_core::concurrency`).
    fn admit_waiting(&self, now: DateTime<Utc>) -> impl Future<Output = Result<u32>> + Send;

    /// Take back steps whose lease expired before `now` (at most `limit`).
    fn expire_leases(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<ExpiredLease>>> + Send;

    /// Give back claimed steps without penalty (graceful shutdown).
    fn release(
        &self,
        worker: &str,
        leases: &[Lease],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ReleaseOutcome>>> + Send;

    /// Readiness of a task's steps (all, or the given ones), computed from the DAG.
    fn readiness(
        &self,
        task_id: TaskId,
        step_ids: Option<&[StepId]>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ReadinessRow>>> + Send;

    /// Readiness of every step of several tasks.
    fn readiness_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ReadinessRow>>> + Send;

    /// Execution context of one task (None if it does not exist).
    fn execution_context(
        &self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Option<ExecutionContext>>> + Send;

    /// Execution contexts of several tasks (unknown ids are skipped).
    fn execution_context_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<ExecutionContext>>> + Send;

    /// Longest-path level of each step of a task.
    fn dependency_levels(
        &self,
        task_id: TaskId,
    ) -> impl Future<Output = Result<Vec<DependencyLevel>>> + Send;

    /// Whole-system counts for health endpoints.
    fn health_counts(
        &self,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<HealthCounts>> + Send;

    /// Cancel a task and all its unfinished steps.
    fn cancel_task(
        &self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<CancelOutcome>> + Send;

    /// Retry a task in error: its error steps get a fresh attempt budget.
    fn retry_task(
        &self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<RetryOutcome>> + Send;

    /// Mark a pending, waiting or failed step as resolved by hand, with an optional result.
    fn resolve_step(
        &self,
        step_id: StepId,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<ResolveOutcome>> + Send;

    fn task(&self, task_id: TaskId) -> impl Future<Output = Result<Option<TaskRow>>> + Send;

    /// The steps of a task, by id (a parent's id is below its children's).
    fn steps_of_task(&self, task_id: TaskId) -> impl Future<Output = Result<Vec<StepRow>>> + Send;

    fn step(&self, step_id: StepId) -> impl Future<Output = Result<Option<StepRow>>> + Send;

    /// The attempts of a step, oldest first.
    fn attempts_of_step(
        &self,
        step_id: StepId,
    ) -> impl Future<Output = Result<Vec<AttemptRow>>> + Send;

    /// What each attempt of a step said (log records, stdout, stderr), oldest first; only
    /// `attempt_no` when given. Attempts that ended without running (lease lost, released,
    /// cancelled) are not listed.
    fn attempt_logs(
        &self,
        step_id: StepId,
        attempt_no: Option<i64>,
    ) -> impl Future<Output = Result<Vec<AttemptLogRow>>> + Send;

    /// The state history of a step, oldest first.
    fn step_transitions(
        &self,
        step_id: StepId,
    ) -> impl Future<Output = Result<Vec<TransitionRow<StepState>>>> + Send;

    /// The state history of a task, oldest first.
    fn task_transitions(
        &self,
        task_id: TaskId,
    ) -> impl Future<Output = Result<Vec<TransitionRow<TaskState>>>> + Send;

    /// Registered templates in key order, after `after` (a previous page's `next`), at most
    /// `limit` (1..=[`MAX_PAGE`]).
    fn list_templates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Page<TemplateSummary, String>>> + Send;

    /// Tasks matching `filter`, newest first, one page at a time.
    fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: TaskPageRequest,
    ) -> impl Future<Output = Result<Page<TaskRow, TaskId>>> + Send;

    /// How many tasks matching `filter` are in each state (`filter.states` is ignored).
    fn count_tasks(&self, filter: &TaskFilter) -> impl Future<Output = Result<TaskCounts>> + Send;

    /// Every attempt of every step of a task, in start order (for a timeline).
    fn attempts_of_task(
        &self,
        task_id: TaskId,
    ) -> impl Future<Output = Result<Vec<AttemptRow>>> + Send;

    /// Store a new API token; a name already used (even by a revoked token) is refused as
    /// [`StoreError::InvalidInput`] naming it.
    fn create_token(
        &self,
        token: &NewToken,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<TokenRow>> + Send;

    /// The token whose secret hashes to `hash` (revoked and expired ones too: the caller
    /// decides with [`TokenRow::is_valid_at`]).
    fn token_by_hash(&self, hash: &str) -> impl Future<Output = Result<Option<TokenRow>>> + Send;

    /// Every token, by id.
    fn list_tokens(&self) -> impl Future<Output = Result<Vec<TokenRow>>> + Send;

    /// Revoke the token of this name; false when it does not exist or was already revoked.
    fn revoke_token(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<bool>> + Send;

    /// Hook deliveries (outbox rows) matching `filter`, in id order (each (hook, task)'s
    /// delivery order), after `after` (exclusive: a previous page's `next`), at most `limit`
    /// (1..=[`MAX_PAGE`], else [`StoreError::InvalidInput`]). `next` is the page's last id
    /// when more rows follow.
    fn list_hook_outbox(
        &self,
        filter: &OutboxFilter,
        after: Option<i64>,
        limit: u32,
    ) -> impl Future<Output = Result<Page<OutboxRow, i64>>> + Send;

    /// Put dead letters back into delivery: the dead rows with these `ids` (each must be a
    /// dead row, of `hook_id` if given), or else every dead row of `hook_id`, or of every
    /// hook when both are `None`. An id that is not such a row is refused as
    /// [`StoreError::InvalidInput`] naming it, and nothing is written; `Some(&[])` redelivers
    /// nothing.
    ///
    /// In one transaction, each dead row is replaced by a new pending row of the same event
    /// (hook, task, step, name, attempt, payload, `event_at`) with no delivery attempts, due
    /// at `now`, and is deleted. The new row takes a new, higher id, so it goes through the
    /// leased delivery loop ([`Store::claim_hook_deliveries`]) after every row its (hook, task)
    /// already has; it is the head when no other row of that (hook, task) is pending, as a
    /// new event would be. One answer per row, by old id.
    fn redeliver_dead_letters(
        &self,
        hook_id: Option<i64>,
        ids: Option<&[i64]>,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<Vec<Redelivered>>> + Send;

    /// The event log (docs/store.md, "The event log"): every task transition, step
    /// transition and custom event matching `filter`, strictly after the cursor `after`
    /// (None: from the beginning), at most `limit` (1..=[`MAX_PAGE`], else
    /// [`StoreError::InvalidInput`]), in the log's one total order. Reading on from the last
    /// event's [`StoredEvent::cursor`] never skips nor repeats an event, however many are
    /// written meanwhile: PostgreSQL returns only what no open transaction can precede
    /// (its xmin horizon), SQLite orders by commit. A malformed cursor is
    /// [`StoreError::InvalidInput`] naming it; a well-formed one that matches no event is a
    /// position like any other.
    fn events_after(
        &self,
        filter: &EventFilter,
        after: Option<&str>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<StoredEvent>>> + Send;

    /// The cursor of the last event matching `filter` that [`Store::events_after`] can
    /// return now (None: none yet): where a subscriber that wants only new events starts.
    fn latest_event_cursor(
        &self,
        filter: &EventFilter,
    ) -> impl Future<Output = Result<Option<String>>> + Send;

    /// Retention (docs/store.md, "Retention"): delete finished tasks whose span has passed
    /// since they finished (`now - span`, per state; a template's own `retention:` wins when
    /// `template_overrides`), with their steps, edges, attempts and logs, transitions, custom
    /// events and outbox rows, then delivered outbox rows past `delivered`; `batch` tasks per
    /// transaction. A task that is not finished, has a step in progress or claimable, or an
    /// undelivered hook event, is never touched. `dry_run` counts the same rows and deletes
    /// nothing. On PostgreSQL one pruner runs at a time (an advisory lock): another one
    /// returns at once with `busy`.
    fn prune(
        &self,
        req: &crate::prune::PruneRequest,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<crate::prune::PruneReport>> + Send;

    /// Create or replace the schedule of this name (docs/schedules.md), made by hand (source
    /// `api`). Refused as [`StoreError::InvalidInput`] naming each field at fault (`name`,
    /// `template` when not registered, `cron`, `tz`, `context` and the pointer into it when the
    /// template's context schema refuses it), writing nothing. Replacing keeps the pause
    /// state and, where the pattern and zone did not change, the next instant; otherwise the
    /// next instant is the first after `now`.
    fn create_schedule(
        &self,
        schedule: &crate::schedules::NewSchedule,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<crate::schedules::ScheduleRow>> + Send;

    /// Every schedule, by name (byte order).
    fn list_schedules(
        &self,
    ) -> impl Future<Output = Result<Vec<crate::schedules::ScheduleRow>>> + Send;

    /// The schedule of this name.
    fn schedule(
        &self,
        name: &str,
    ) -> impl Future<Output = Result<Option<crate::schedules::ScheduleRow>>> + Send;

    /// Pause a schedule: nothing fires until it is resumed (its next instant is cleared).
    /// [`StoreError::NotFound`] for an unknown name; pausing a paused one changes nothing.
    fn pause_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<crate::schedules::ScheduleRow>> + Send;

    /// Resume a schedule from its first instant after `now` (instants that passed while it
    /// was paused never fire). Resuming a running one changes nothing.
    fn resume_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> impl Future<Output = Result<crate::schedules::ScheduleRow>> + Send;

    /// Delete a schedule (its tasks stay); false when there was none of that name.
    fn delete_schedule(&self, name: &str) -> impl Future<Output = Result<bool>> + Send;

    /// Fire up to `limit` (1..=1,000) due schedules (not paused, next instant at or before
    /// `now`), earliest first, in one transaction: each one's tick is
    /// `tasker_core::schedule::plan` (grace `DEFAULT_GRACE`); an instant it fires creates the
    /// template's task with identity key `schedule::identity_key(name, instant)` (so an
    /// instant makes one task however many schedulers race: PostgreSQL skips the rows another
    /// transaction holds, `FOR UPDATE SKIP LOCKED`), and its next instant moves past `now`.
    /// A task that cannot be created is reported in [`crate::schedules::FiredSchedule::error`]
    /// and its instant passed over.
    fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> impl Future<Output = Result<Vec<crate::schedules::FiredSchedule>>> + Send;
}
