//! SQLite implementation: the embedded default store, with PostgreSQL's semantics.
//!
//! The schema (`migrations/sqlite/`) mirrors PostgreSQL's; the operations that PostgreSQL runs
//! as PL/pgSQL are Rust here, each in one write transaction. Writes go through a pool of one
//! connection (one writer at a time, `BEGIN IMMEDIATE` so another process on the same file
//! waits instead of failing mid-transaction); reads use a separate pool of read-only
//! connections, which WAL mode lets run beside the writer.

mod concurrency;
mod events;
mod hooks;
mod hot;
mod listing;
mod ops;
mod prune;
mod readiness;
mod rows;
mod schedules;

use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous,
};
use sqlx::{Sqlite, Transaction};
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;

use crate::attempt_log::AttemptLogRow;
use crate::error::StoreError;
use crate::events::{EventFilter, StoredEvent};
use crate::listing::{
    NewToken, OutboxFilter, Page, TaskCounts, TaskFilter, TaskPageRequest, TemplateSummary,
    TokenRow,
};
use crate::store::{Result, Store};
use crate::types::*;

/// The SQLite migrations (a separate set: sqlx does not descend into `migrations/sqlite`
/// from the PostgreSQL set).
pub static SQLITE_MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations/sqlite");

/// How long a writer waits for another process's write transaction on the same file.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// How long an open keeps retrying a lock conflict before giving up.
const OPEN_PATIENCE: Duration = Duration::from_secs(60);

/// The embedded store: one SQLite file (plus its WAL).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    path: PathBuf,
    /// Keeps a temporary store's directory alive as long as a clone of the store is.
    _temp: Option<Arc<tempfile::TempDir>>,
}

/// How a process opens the file: creating and migrating it (`tasker migrate`, `run`, `dev`,
/// tests), or only if it exists with this build's schema (every other command).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Opening {
    Migrate,
    Existing,
}

impl SqliteStore {
    /// Open (creating it and its directory if missing) the database file at `path`, apply
    /// pending migrations, and keep up to `readers` read connections. A file a newer build
    /// migrated is refused ([`StoreError::SchemaNewer`]).
    pub async fn open(path: impl AsRef<Path>, readers: u32) -> Result<Self> {
        Ok(
            Self::open_inner(path.as_ref(), readers, None, Opening::Migrate)
                .await?
                .0,
        )
    }

    /// [`SqliteStore::open`], returning also the migrations this call applied, oldest first.
    pub async fn open_and_migrate(
        path: impl AsRef<Path>,
        readers: u32,
    ) -> Result<(Self, Vec<crate::AppliedMigration>)> {
        Self::open_inner(path.as_ref(), readers, None, Opening::Migrate).await
    }

    /// Open an existing file without creating or migrating anything: a missing file is
    /// [`StoreError::DatabaseMissing`], a schema other than this build's
    /// [`StoreError::SchemaOlder`] or [`StoreError::SchemaNewer`].
    pub async fn open_existing(path: impl AsRef<Path>, readers: u32) -> Result<Self> {
        Ok(
            Self::open_inner(path.as_ref(), readers, None, Opening::Existing)
                .await?
                .0,
        )
    }

    /// The same file opened again, with pools of its own, as a restarted process opens it
    /// (a temporary store's directory lives on while either is alive).
    pub async fn reopen(&self) -> Result<Self> {
        let mut again = Self::open_existing(&self.path, 2).await?;
        again._temp = self._temp.clone();
        Ok(again)
    }

    /// A store in a fresh temporary directory, removed when the last clone is dropped.
    pub async fn temporary() -> Result<Self> {
        let dir = tempfile::Builder::new()
            .prefix("tasker-sqlite-")
            .tempdir()
            .map_err(|e| StoreError::InvalidInput(format!("temporary directory: {e}")))?;
        let path = dir.path().join("tasker.db");
        Ok(
            Self::open_inner(&path, 4, Some(Arc::new(dir)), Opening::Migrate)
                .await?
                .0,
        )
    }

    async fn open_inner(
        path: &Path,
        readers: u32,
        temp: Option<Arc<tempfile::TempDir>>,
        opening: Opening,
    ) -> Result<(Self, Vec<crate::AppliedMigration>)> {
        // A conflict at open is another process holding a lock SQLite would not wait for (one
        // that opened the file without `init_lock`, e.g. an older tasker): wait it out.
        let deadline = tokio::time::Instant::now() + OPEN_PATIENCE;
        let mut pause = Duration::from_millis(20);
        loop {
            match Self::open_once(path, readers, temp.clone(), opening).await {
                Err(StoreError::Conflict { .. }) if tokio::time::Instant::now() < deadline => {
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_millis(500));
                }
                other => return other,
            }
        }
    }

    async fn open_once(
        path: &Path,
        readers: u32,
        temp: Option<Arc<tempfile::TempDir>>,
        opening: Opening,
    ) -> Result<(Self, Vec<crate::AppliedMigration>)> {
        if opening == Opening::Existing && !path.is_file() {
            // Nothing is created: not the file, its directory or its lock.
            return Err(StoreError::DatabaseMissing {
                what: format!("the embedded store {}", path.display()),
            });
        }
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| {
                StoreError::InvalidInput(format!("database directory {}: {e}", dir.display()))
            })?;
        }
        let base = SqliteConnectOptions::new()
            .filename(path)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT);
        // Creating the file, switching it to WAL and migrating happen one opener at a time:
        // a worker and a `submit` starting together on a new file would otherwise race for
        // the exclusive lock the WAL switch needs, and SQLite refuses the loser at once
        // ("database is locked") instead of waiting. An opener that only checks the schema
        // waits here too, for a migration in progress to end.
        let init = init_lock(path).await?;
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .connect_with(base.clone().create_if_missing(opening == Opening::Migrate))
            .await?;
        let before = applied_versions(&writer).await?;
        let applied = match opening {
            Opening::Existing => {
                crate::schema::check(&before, &SQLITE_MIGRATOR)?;
                Vec::new()
            }
            Opening::Migrate => {
                crate::schema::check_not_newer(&before, &SQLITE_MIGRATOR)?;
                SQLITE_MIGRATOR.run(&writer).await?;
                crate::schema::newly_applied(&before, &SQLITE_MIGRATOR)
            }
        };
        drop(init);
        let reader = SqlitePoolOptions::new()
            .max_connections(readers.max(1))
            .connect_with(base.read_only(true))
            .await?;
        let store = SqliteStore {
            writer,
            reader,
            path: path.to_path_buf(),
            _temp: temp,
        };
        Ok((store, applied))
    }

    /// Open the store named by a `sqlite:` URL (`sqlite:path/to/file.db` or
    /// `sqlite:///abs/path.db`).
    pub async fn connect(url: &str, readers: u32) -> Result<Self> {
        let opts = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::InvalidInput(format!("database url {url}: {e}")))?;
        Self::open(opts.get_filename(), readers).await
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The single write connection's pool.
    pub fn writer(&self) -> &SqlitePool {
        &self.writer
    }

    /// The read-only pool.
    pub fn reader(&self) -> &SqlitePool {
        &self.reader
    }

    /// A write transaction. `BEGIN IMMEDIATE` takes the file's write lock up front, so a
    /// transaction never fails half-way because another process began writing.
    ///
    /// Every write transaction starts here, and here only it bumps the event log's
    /// transaction counter (`tasker_ctx.tx_seq`, which the audit triggers and the custom
    /// events write as `tx`), exactly once: with one writer at a time the counter follows
    /// commit order (docs/store.md, "The event log"). Bumping per `set_reason` instead would
    /// split one transaction's events over several values (an operation sets its reason
    /// several times), and so order them unlike PostgreSQL's single xid.
    ///
    /// The `BEGIN` runs in a task of its own: sqlx's SQLite begin is not drop-safe
    /// (transact-rs/sqlx#3932), and a caller dropped inside it (a client gone, a `select!`)
    /// left the one write connection in a transaction that nothing owned, so every later
    /// write failed. Run to its end, it yields a `Transaction`, whose drop rolls back.
    pub(crate) async fn write(&self) -> Result<Transaction<'static, Sqlite>> {
        let writer = self.writer.clone();
        let mut tx = tokio::spawn(async move { writer.begin_with("BEGIN IMMEDIATE").await })
            .await
            .map_err(|_| StoreError::Unavailable(sqlx::Error::WorkerCrashed))??;
        sqlx::query("UPDATE tasker_ctx SET tx_seq = tx_seq + 1 WHERE id = 1")
            .execute(&mut *tx)
            .await?;
        Ok(tx)
    }
}

/// The versions of the migrations the file applied successfully (none without sqlx's
/// table).
async fn applied_versions(pool: &SqlitePool) -> Result<Vec<i64>> {
    let has_table: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = '_sqlx_migrations')",
    )
    .fetch_one(pool)
    .await?;
    if !has_table {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(pool)
            .await?,
    )
}

/// An exclusive lock on `<file>.lock`, held while a process opens and migrates the file.
/// SQLite has no advisory lock (sqlx takes none for it), so two processes opening a new file
/// at once would both run migration 1; the second waits here instead and then finds nothing
/// to do.
async fn init_lock(path: &Path) -> Result<std::fs::File> {
    let mut lock_path = path.as_os_str().to_owned();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    tokio::task::spawn_blocking(move || {
        let file = std::fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)?;
        file.lock()?;
        Ok::<_, std::io::Error>(file)
    })
    .await
    .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(std::io::Error::other(e))))?
    .map_err(|e| StoreError::Unavailable(sqlx::Error::Io(e)))
}

/// Set the reason that the audit triggers write into transition metadata (PostgreSQL's
/// transaction-local `tasker.reason`). Call it in each write transaction before changing
/// states; `None` clears it.
pub(crate) async fn set_reason(
    tx: &mut Transaction<'static, Sqlite>,
    reason: Option<&str>,
) -> Result<()> {
    sqlx::query("UPDATE tasker_ctx SET reason = ? WHERE id = 1")
        .bind(reason)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

/// An instant as stored: microseconds since the Unix epoch.
pub(crate) fn us(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

/// A stored instant back to chrono.
pub(crate) fn ts(v: i64) -> Result<DateTime<Utc>> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::decode("instant", v))
}

/// An optional stored instant back to chrono.
pub(crate) fn opt_ts(v: Option<i64>) -> Result<Option<DateTime<Utc>>> {
    v.map(ts).transpose()
}

/// A stored JSON text back to a value.
pub(crate) fn json(v: &str, what: &str) -> Result<Value> {
    serde_json::from_str(v).map_err(|e| StoreError::decode(what, e))
}

impl Store for SqliteStore {
    async fn register_template(&self, template: &Template) -> Result<RegisteredTemplate> {
        hot::register_template(self, template, Utc::now()).await
    }

    async fn register_template_at(
        &self,
        template: &Template,
        now: DateTime<Utc>,
    ) -> Result<RegisteredTemplate> {
        hot::register_template(self, template, now).await
    }

    async fn template(&self, key: &str) -> Result<Option<Template>> {
        rows::template(self, key).await
    }

    async fn create_task(&self, task: &NewTask, now: DateTime<Utc>) -> Result<CreatedTask> {
        hot::create_task(self, task, now).await
    }

    async fn claim(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedStep>> {
        hot::claim(self, None, worker, limit, lease, now).await
    }

    async fn claim_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedStep>> {
        hot::claim(self, Some(task), worker, limit, lease, now).await
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
        let claim = hot::ClaimOf {
            task: Some(task),
            worker,
            limit: claim_limit,
            lease,
        };
        hot::complete_and_claim(self, items, events, claim, now).await
    }

    async fn admit_waiting(&self, now: DateTime<Utc>) -> Result<u32> {
        let mut tx = self.write().await?;
        let n = concurrency::admit_waiting(&mut tx, us(now)).await?;
        hot::commit(tx).await?;
        Ok(n)
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        hot::next_ready_at(self).await
    }

    async fn complete(
        &self,
        items: &[StepCompletion],
        now: DateTime<Utc>,
    ) -> Result<Vec<CompletionOutcome>> {
        hot::complete(self, items, &[], now).await
    }

    async fn fail(&self, items: &[StepFailure], now: DateTime<Utc>) -> Result<Vec<FailureOutcome>> {
        hot::fail(self, items, &[], &[], now).await
    }

    async fn complete_with_events(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<CompletionOutcome>> {
        hot::complete(self, items, events, now).await
    }

    async fn fail_decided(
        &self,
        items: &[StepFailure],
        decisions: &[FailureDecision],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<FailureOutcome>> {
        hot::fail(self, items, decisions, events, now).await
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
        let claim = hot::ClaimOf {
            task: None,
            worker,
            limit: claim_limit,
            lease,
        };
        hot::complete_and_claim(self, items, events, claim, now).await
    }

    async fn claim_hook_deliveries(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HookDeliveryJob>> {
        hooks::claim_deliveries(self, None, worker, limit, lease, now).await
    }

    async fn claim_hook_deliveries_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HookDeliveryJob>> {
        hooks::claim_deliveries(self, Some(task), worker, limit, lease, now).await
    }

    async fn finish_hook_deliveries(
        &self,
        results: &[HookDeliveryResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<HookFinishOutcome>> {
        hooks::finish_deliveries(self, results, now).await
    }

    async fn hook_counts(&self, task_id: Option<TaskId>) -> Result<Vec<HookCounts>> {
        hooks::counts(self, task_id).await
    }

    async fn hook_outbox_of_task(&self, task_id: TaskId) -> Result<Vec<OutboxRow>> {
        hooks::outbox_of_task(self, task_id).await
    }

    async fn first_attempt_at(
        &self,
        step_ids: &[StepId],
    ) -> Result<Vec<(StepId, Option<DateTime<Utc>>)>> {
        rows::first_attempt_at(self, step_ids).await
    }

    async fn heartbeat(
        &self,
        worker: &str,
        leases: &[Lease],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HeartbeatOutcome>> {
        hot::heartbeat(self, worker, leases, lease, now).await
    }

    async fn expire_leases(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ExpiredLease>> {
        hot::expire_leases(self, now, limit).await
    }

    async fn release(
        &self,
        worker: &str,
        leases: &[Lease],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReleaseOutcome>> {
        hot::release(self, worker, leases, now).await
    }

    async fn readiness(
        &self,
        task_id: TaskId,
        step_ids: Option<&[StepId]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReadinessRow>> {
        readiness::readiness(self, task_id, step_ids, now).await
    }

    async fn readiness_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReadinessRow>> {
        readiness::readiness_batch(self, task_ids, now).await
    }

    async fn execution_context(
        &self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<ExecutionContext>> {
        Ok(readiness::execution_context_batch(self, &[task_id], now)
            .await?
            .into_iter()
            .next())
    }

    async fn execution_context_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ExecutionContext>> {
        readiness::execution_context_batch(self, task_ids, now).await
    }

    async fn dependency_levels(&self, task_id: TaskId) -> Result<Vec<DependencyLevel>> {
        readiness::dependency_levels(self, task_id).await
    }

    async fn health_counts(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        readiness::health_counts(self, now).await
    }

    async fn cancel_task(&self, task_id: TaskId, now: DateTime<Utc>) -> Result<CancelOutcome> {
        ops::cancel_task(self, task_id, now).await
    }

    async fn retry_task(&self, task_id: TaskId, now: DateTime<Utc>) -> Result<RetryOutcome> {
        ops::retry_task(self, task_id, now).await
    }

    async fn resolve_step(
        &self,
        step_id: StepId,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Result<ResolveOutcome> {
        ops::resolve_step(self, step_id, result, now).await
    }

    async fn task(&self, task_id: TaskId) -> Result<Option<TaskRow>> {
        rows::task(self, task_id).await
    }

    async fn steps_of_task(&self, task_id: TaskId) -> Result<Vec<StepRow>> {
        rows::steps_of_task(self, task_id).await
    }

    async fn step(&self, step_id: StepId) -> Result<Option<StepRow>> {
        rows::step(self, step_id).await
    }

    async fn attempts_of_step(&self, step_id: StepId) -> Result<Vec<AttemptRow>> {
        rows::attempts_of_step(self, step_id).await
    }

    async fn attempt_logs(
        &self,
        step_id: StepId,
        attempt_no: Option<i64>,
    ) -> Result<Vec<AttemptLogRow>> {
        rows::attempt_logs(self, step_id, attempt_no).await
    }

    async fn step_transitions(&self, step_id: StepId) -> Result<Vec<TransitionRow<StepState>>> {
        rows::step_transitions(self, step_id).await
    }

    async fn task_transitions(&self, task_id: TaskId) -> Result<Vec<TransitionRow<TaskState>>> {
        rows::task_transitions(self, task_id).await
    }

    async fn list_templates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<TemplateSummary, String>> {
        listing::list_templates(self, after, limit).await
    }

    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: TaskPageRequest,
    ) -> Result<Page<TaskRow, TaskId>> {
        listing::list_tasks(self, filter, page).await
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<TaskCounts> {
        listing::count_tasks(self, filter).await
    }

    async fn attempts_of_task(&self, task_id: TaskId) -> Result<Vec<AttemptRow>> {
        rows::attempts_of_task(self, task_id).await
    }

    async fn create_token(&self, token: &NewToken, now: DateTime<Utc>) -> Result<TokenRow> {
        listing::create_token(self, token, now).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        listing::token_by_hash(self, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        listing::list_tokens(self).await
    }

    async fn revoke_token(&self, name: &str, now: DateTime<Utc>) -> Result<bool> {
        listing::revoke_token(self, name, now).await
    }

    async fn list_hook_outbox(
        &self,
        filter: &OutboxFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<OutboxRow, i64>> {
        hooks::list_outbox(self, filter, after, limit).await
    }

    async fn redeliver_dead_letters(
        &self,
        hook_id: Option<i64>,
        ids: Option<&[i64]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Redelivered>> {
        hooks::redeliver(self, hook_id, ids, now).await
    }

    async fn events_after(
        &self,
        filter: &EventFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        events::events_after(self, filter, after, limit).await
    }

    async fn latest_event_cursor(&self, filter: &EventFilter) -> Result<Option<String>> {
        events::latest_event_cursor(self, filter).await
    }

    async fn prune(
        &self,
        req: &crate::prune::PruneRequest,
        now: DateTime<Utc>,
    ) -> Result<crate::prune::PruneReport> {
        prune::prune(self, req, now).await
    }
    async fn create_schedule(
        &self,
        schedule: &crate::schedules::NewSchedule,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        schedules::create_schedule(self, schedule, now).await
    }

    async fn list_schedules(&self) -> Result<Vec<crate::schedules::ScheduleRow>> {
        schedules::list_schedules(self).await
    }

    async fn schedule(&self, name: &str) -> Result<Option<crate::schedules::ScheduleRow>> {
        schedules::schedule(self, name).await
    }

    async fn pause_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        schedules::set_paused(self, name, true, now).await
    }

    async fn resume_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        schedules::set_paused(self, name, false, now).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        schedules::delete_schedule(self, name).await
    }

    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<crate::schedules::FiredSchedule>> {
        schedules::fire_due(self, now, limit).await
    }
}
