//! One store type for binaries that pick the backend at run time (the `Store` trait has
//! async methods, so it is not object-safe): every call is passed to the backend inside.

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;

use tracing::Instrument;

use crate::attempt_log::AttemptLogRow;
use crate::events::{EventFilter, StoredEvent};
use crate::listing::{
    NewToken, OutboxFilter, Page, TaskCounts, TaskFilter, TaskPageRequest, TemplateSummary,
    TokenRow,
};
use crate::store::{Result, Store};
use crate::types::*;
use crate::{PgStore, SqliteStore};

/// PostgreSQL or the embedded SQLite store.
#[derive(Debug, Clone)]
pub enum AnyStore {
    Postgres(PgStore),
    Sqlite(SqliteStore),
}

/// Passes a call to the backend, timing it as `tasker_store_call_seconds{op, backend}` (and
/// counting errors) under the method's name.
macro_rules! delegate {
    ($self:ident, $s:ident => $obj:ident . $method:ident ( $($arg:expr),* $(,)? )) => {{
        let started = std::time::Instant::now();
        // A span per call for the trace exporter (disabled, and nearly free, without one).
        let span = tracing::info_span!(
            target: tasker_core::trace::TARGET,
            "store",
            otel.name = concat!("store.", stringify!($method)),
            db.system = $self.backend(),
        );
        let out = match $self {
            AnyStore::Postgres($s) => $obj.$method($($arg),*).instrument(span).await,
            AnyStore::Sqlite($s) => $obj.$method($($arg),*).instrument(span).await,
        };
        metered(stringify!($method), $self.backend(), started, out.is_err());
        out
    }};
}

fn metered(op: &'static str, backend: &'static str, started: std::time::Instant, failed: bool) {
    use tasker_core::metrics::{STORE_CALL, STORE_CALL_ERRORS};
    metrics::histogram!(STORE_CALL, "op" => op, "backend" => backend)
        .record(started.elapsed().as_secs_f64());
    if failed {
        metrics::counter!(STORE_CALL_ERRORS, "op" => op, "backend" => backend).increment(1);
    }
}

impl AnyStore {
    /// `"postgres"` or `"sqlite"`.
    pub fn backend(&self) -> &'static str {
        match self {
            AnyStore::Postgres(_) => "postgres",
            AnyStore::Sqlite(_) => "sqlite",
        }
    }

    /// Each connection pool's (name, open connections, idle connections).
    pub fn pool_use(&self) -> Vec<(&'static str, u32, usize)> {
        match self {
            AnyStore::Postgres(s) => vec![("postgres", s.pool().size(), s.pool().num_idle())],
            AnyStore::Sqlite(s) => vec![
                ("sqlite_writer", s.writer().size(), s.writer().num_idle()),
                ("sqlite_reader", s.reader().size(), s.reader().num_idle()),
            ],
        }
    }

    /// The PostgreSQL store, if that is the backend (for LISTEN/NOTIFY wake-ups).
    pub fn postgres(&self) -> Option<&PgStore> {
        match self {
            AnyStore::Postgres(s) => Some(s),
            AnyStore::Sqlite(_) => None,
        }
    }
}

impl From<PgStore> for AnyStore {
    fn from(s: PgStore) -> Self {
        AnyStore::Postgres(s)
    }
}

impl From<SqliteStore> for AnyStore {
    fn from(s: SqliteStore) -> Self {
        AnyStore::Sqlite(s)
    }
}

impl Store for AnyStore {
    async fn register_template(&self, template: &Template) -> Result<RegisteredTemplate> {
        delegate!(self, s => s.register_template(template))
    }

    async fn template(&self, key: &str) -> Result<Option<Template>> {
        delegate!(self, s => s.template(key))
    }

    async fn create_task(&self, task: &NewTask, now: DateTime<Utc>) -> Result<CreatedTask> {
        delegate!(self, s => s.create_task(task, now))
    }

    async fn claim(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedStep>> {
        delegate!(self, s => s.claim(worker, limit, lease, now))
    }

    async fn admit_waiting(&self, now: DateTime<Utc>) -> Result<u32> {
        delegate!(self, s => s.admit_waiting(now))
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        delegate!(self, s => s.next_ready_at())
    }

    async fn complete(
        &self,
        items: &[StepCompletion],
        now: DateTime<Utc>,
    ) -> Result<Vec<CompletionOutcome>> {
        delegate!(self, s => s.complete(items, now))
    }

    async fn fail(&self, items: &[StepFailure], now: DateTime<Utc>) -> Result<Vec<FailureOutcome>> {
        delegate!(self, s => s.fail(items, now))
    }

    async fn complete_with_events(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<CompletionOutcome>> {
        delegate!(self, s => s.complete_with_events(items, events, now))
    }

    async fn fail_decided(
        &self,
        items: &[StepFailure],
        decisions: &[FailureDecision],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<FailureOutcome>> {
        delegate!(self, s => s.fail_decided(items, decisions, events, now))
    }

    async fn claim_hook_deliveries(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HookDeliveryJob>> {
        delegate!(self, s => s.claim_hook_deliveries(worker, limit, lease, now))
    }

    async fn claim_hook_deliveries_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HookDeliveryJob>> {
        delegate!(self, s => s.claim_hook_deliveries_of_task(task, worker, limit, lease, now))
    }

    async fn finish_hook_deliveries(
        &self,
        results: &[HookDeliveryResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<HookFinishOutcome>> {
        delegate!(self, s => s.finish_hook_deliveries(results, now))
    }

    async fn hook_counts(&self, task_id: Option<TaskId>) -> Result<Vec<HookCounts>> {
        delegate!(self, s => s.hook_counts(task_id))
    }

    async fn hook_outbox_of_task(&self, task_id: TaskId) -> Result<Vec<OutboxRow>> {
        delegate!(self, s => s.hook_outbox_of_task(task_id))
    }

    async fn first_attempt_at(
        &self,
        step_ids: &[StepId],
    ) -> Result<Vec<(StepId, Option<DateTime<Utc>>)>> {
        delegate!(self, s => s.first_attempt_at(step_ids))
    }

    async fn heartbeat(
        &self,
        worker: &str,
        leases: &[Lease],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HeartbeatOutcome>> {
        delegate!(self, s => s.heartbeat(worker, leases, lease, now))
    }

    async fn expire_leases(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ExpiredLease>> {
        delegate!(self, s => s.expire_leases(now, limit))
    }

    async fn release(
        &self,
        worker: &str,
        leases: &[Lease],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReleaseOutcome>> {
        delegate!(self, s => s.release(worker, leases, now))
    }

    async fn readiness(
        &self,
        task_id: TaskId,
        step_ids: Option<&[StepId]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReadinessRow>> {
        delegate!(self, s => s.readiness(task_id, step_ids, now))
    }

    async fn readiness_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReadinessRow>> {
        delegate!(self, s => s.readiness_batch(task_ids, now))
    }

    async fn execution_context(
        &self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<ExecutionContext>> {
        delegate!(self, s => s.execution_context(task_id, now))
    }

    async fn execution_context_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ExecutionContext>> {
        delegate!(self, s => s.execution_context_batch(task_ids, now))
    }

    async fn dependency_levels(&self, task_id: TaskId) -> Result<Vec<DependencyLevel>> {
        delegate!(self, s => s.dependency_levels(task_id))
    }

    async fn health_counts(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        delegate!(self, s => s.health_counts(now))
    }

    async fn cancel_task(&self, task_id: TaskId, now: DateTime<Utc>) -> Result<CancelOutcome> {
        delegate!(self, s => s.cancel_task(task_id, now))
    }

    async fn retry_task(&self, task_id: TaskId, now: DateTime<Utc>) -> Result<RetryOutcome> {
        delegate!(self, s => s.retry_task(task_id, now))
    }

    async fn resolve_step(
        &self,
        step_id: StepId,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Result<ResolveOutcome> {
        delegate!(self, s => s.resolve_step(step_id, result, now))
    }

    async fn task(&self, task_id: TaskId) -> Result<Option<TaskRow>> {
        delegate!(self, s => s.task(task_id))
    }

    async fn steps_of_task(&self, task_id: TaskId) -> Result<Vec<StepRow>> {
        delegate!(self, s => s.steps_of_task(task_id))
    }

    async fn step(&self, step_id: StepId) -> Result<Option<StepRow>> {
        delegate!(self, s => s.step(step_id))
    }

    async fn attempts_of_step(&self, step_id: StepId) -> Result<Vec<AttemptRow>> {
        delegate!(self, s => s.attempts_of_step(step_id))
    }

    async fn attempt_logs(
        &self,
        step_id: StepId,
        attempt_no: Option<i64>,
    ) -> Result<Vec<AttemptLogRow>> {
        delegate!(self, s => s.attempt_logs(step_id, attempt_no))
    }

    async fn step_transitions(&self, step_id: StepId) -> Result<Vec<TransitionRow<StepState>>> {
        delegate!(self, s => s.step_transitions(step_id))
    }

    async fn task_transitions(&self, task_id: TaskId) -> Result<Vec<TransitionRow<TaskState>>> {
        delegate!(self, s => s.task_transitions(task_id))
    }

    async fn complete_and_claim(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        worker: &str,
        claim_limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<(Vec<CompletionOutcome>, Vec<ClaimedStep>)> {
        delegate!(self, s => s.complete_and_claim(items, events, worker, claim_limit, lease, now))
    }

    async fn claim_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedStep>> {
        delegate!(self, s => s.claim_of_task(task, worker, limit, lease, now))
    }

    async fn complete_and_claim_of_task(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        task: TaskId,
        worker: &str,
        claim_limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<(Vec<CompletionOutcome>, Vec<ClaimedStep>)> {
        delegate!(self, s => s.complete_and_claim_of_task(items, events, task, worker, claim_limit, lease, now))
    }

    async fn list_templates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<TemplateSummary, String>> {
        delegate!(self, s => s.list_templates(after, limit))
    }

    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: TaskPageRequest,
    ) -> Result<Page<TaskRow, TaskId>> {
        delegate!(self, s => s.list_tasks(filter, page))
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<TaskCounts> {
        delegate!(self, s => s.count_tasks(filter))
    }

    async fn attempts_of_task(&self, task_id: TaskId) -> Result<Vec<AttemptRow>> {
        delegate!(self, s => s.attempts_of_task(task_id))
    }

    async fn create_token(&self, token: &NewToken, now: DateTime<Utc>) -> Result<TokenRow> {
        delegate!(self, s => s.create_token(token, now))
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        delegate!(self, s => s.token_by_hash(hash))
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        delegate!(self, s => s.list_tokens())
    }

    async fn revoke_token(&self, name: &str, now: DateTime<Utc>) -> Result<bool> {
        delegate!(self, s => s.revoke_token(name, now))
    }

    async fn list_hook_outbox(
        &self,
        filter: &OutboxFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<OutboxRow, i64>> {
        delegate!(self, s => s.list_hook_outbox(filter, after, limit))
    }

    async fn redeliver_dead_letters(
        &self,
        hook_id: Option<i64>,
        ids: Option<&[i64]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Redelivered>> {
        delegate!(self, s => s.redeliver_dead_letters(hook_id, ids, now))
    }

    async fn events_after(
        &self,
        filter: &EventFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        delegate!(self, s => s.events_after(filter, after, limit))
    }

    async fn prune(
        &self,
        req: &crate::prune::PruneRequest,
        now: DateTime<Utc>,
    ) -> Result<crate::prune::PruneReport> {
        delegate!(self, s => s.prune(req, now))
    }

    async fn register_template_at(
        &self,
        template: &Template,
        now: DateTime<Utc>,
    ) -> Result<RegisteredTemplate> {
        delegate!(self, s => s.register_template_at(template, now))
    }

    async fn create_schedule(
        &self,
        schedule: &crate::schedules::NewSchedule,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        delegate!(self, s => s.create_schedule(schedule, now))
    }

    async fn list_schedules(&self) -> Result<Vec<crate::schedules::ScheduleRow>> {
        delegate!(self, s => s.list_schedules())
    }

    async fn schedule(&self, name: &str) -> Result<Option<crate::schedules::ScheduleRow>> {
        delegate!(self, s => s.schedule(name))
    }

    async fn pause_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        delegate!(self, s => s.pause_schedule(name, now))
    }

    async fn resume_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        delegate!(self, s => s.resume_schedule(name, now))
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        delegate!(self, s => s.delete_schedule(name))
    }

    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<crate::schedules::FiredSchedule>> {
        delegate!(self, s => s.fire_due(now, limit))
    }

    async fn latest_event_cursor(&self, filter: &EventFilter) -> Result<Option<String>> {
        delegate!(self, s => s.latest_event_cursor(filter))
    }
}
