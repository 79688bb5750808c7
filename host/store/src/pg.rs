//! PostgreSQL implementation: each operation is one call of a PL/pgSQL function, whose current
//! definition is `host/store/sql/functions/<name>.sql` (the migrations install it).

use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::Value;
use sqlx::postgres::{PgListener, PgPool, PgPoolOptions, PgRow};
use sqlx::{Postgres, Row};
use tasker_core::error_kind::ErrorKind;
use tasker_core::priority::Priority;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;

use crate::attempt_log::{ATTEMPT_COLUMNS, AttemptLog, AttemptLogRow, LOGGED_OUTCOMES};
use crate::error::StoreError;
use crate::events::{EventFilter, StoredEvent};
use crate::listing::{
    NewToken, OutboxFilter, Page, TaskCounts, TaskFilter, TaskPageRequest, TemplateSummary,
    TokenRow,
};
use crate::payload::Payload;
use crate::store::{Result, Store};
use crate::types::*;

/// The NOTIFY channel that says "steps became ready". The payload is how many (a hint).
pub const READY_CHANNEL: &str = "tasker_ready";

/// The NOTIFY channel that says "a retry was scheduled for later". The payload is its instant.
pub const DUE_CHANNEL: &str = "tasker_due";

/// Lease losses after which a step ends in error (a step that kills its workers).
pub const DEFAULT_MAX_LEASE_LOSSES: u32 = 5;

/// The migrations of this crate, for `sqlx::migrate` or the binary's `migrate` command.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("../../migrations");

/// The PostgreSQL store.
#[derive(Debug, Clone)]
pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub fn new(pool: PgPool) -> Self {
        PgStore { pool }
    }

    /// Connect with a pool of `max_connections` ([`PgStore::pool_options`]).
    pub async fn connect(url: &str, max_connections: u32) -> Result<Self> {
        let pool = Self::pool_options(max_connections).connect(url).await?;
        Ok(PgStore { pool })
    }

    /// The pool settings the store is meant for. No ping before each acquire (sqlx's default):
    /// it doubled the round trips of every call, and a hop of a linear task is one call. A
    /// connection that broke meanwhile (a database restart) fails its call instead, is
    /// dropped from the pool, and the worker retries the call as it retries any error.
    pub fn pool_options(max_connections: u32) -> PgPoolOptions {
        PgPoolOptions::new()
            .max_connections(max_connections)
            .test_before_acquire(false)
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    /// A listener subscribed to [`READY_CHANNEL`]: a wake-up hint, at most one notification
    /// per statement that made steps ready. Keep polling too (`next_ready_at`).
    pub async fn ready_listener(&self) -> Result<PgListener> {
        let mut l = PgListener::connect_with(&self.pool).await?;
        l.listen(READY_CHANNEL).await?;
        Ok(l)
    }

    /// Opens a database this process will not migrate (every command but `tasker migrate`):
    /// the URL must name a database, the database must exist ([`StoreError::DatabaseMissing`],
    /// nothing is created), and its schema must be this build's ([`StoreError::SchemaOlder`],
    /// [`StoreError::SchemaNewer`]). A failed connection says why ([`StoreError::Connect`]).
    pub async fn open(url: &str, max_connections: u32) -> Result<Self> {
        let opts = connect_options(url)?;
        // One connection first: it fails at once and with the server's reason, where the
        // pool would retry a refused connection until its acquire timeout.
        let mut conn = connect_one(&opts).await?;
        let applied = applied_versions(&mut conn).await?;
        let _ = sqlx::Connection::close(conn).await;
        crate::schema::check(&applied, &MIGRATOR)?;
        let pool = Self::pool_options(max_connections)
            .connect_with(opts.clone())
            .await
            .map_err(|e| connect_error(&opts, e))?;
        Ok(PgStore { pool })
    }

    /// `tasker migrate`: creates the database if it is missing (`created`), then applies
    /// the pending migrations and returns them, oldest first. A database a newer build
    /// migrated is refused ([`StoreError::SchemaNewer`]) before anything is applied.
    pub async fn create_and_migrate(
        url: &str,
        max_connections: u32,
    ) -> Result<(Self, bool, Vec<crate::AppliedMigration>)> {
        use sqlx::migrate::MigrateDatabase;
        let opts = connect_options(url)?;
        let created = match connect_one(&opts).await {
            Ok(conn) => {
                let _ = sqlx::Connection::close(conn).await;
                false
            }
            Err(StoreError::DatabaseMissing { .. }) => {
                match sqlx::Postgres::create_database(url).await {
                    Ok(()) => true,
                    // Another `tasker migrate` created it meanwhile.
                    Err(sqlx::Error::Database(db)) if db.code().as_deref() == Some("42P04") => {
                        false
                    }
                    Err(e) => return Err(connect_error(&opts, e)),
                }
            }
            Err(e) => return Err(e),
        };
        let pool = Self::pool_options(max_connections)
            .connect_with(opts.clone())
            .await
            .map_err(|e| connect_error(&opts, e))?;
        let store = PgStore { pool };
        let applied = store.apply_migrations().await?;
        Ok((store, created, applied))
    }

    /// Apply pending migrations.
    pub async fn migrate(&self) -> Result<()> {
        self.apply_migrations().await.map(drop)
    }

    /// Apply pending migrations and return those applied, oldest first; refuses a schema a
    /// newer build migrated.
    pub async fn apply_migrations(&self) -> Result<Vec<crate::AppliedMigration>> {
        let mut conn = self.pool.acquire().await?;
        let before = applied_versions(&mut conn).await?;
        drop(conn);
        crate::schema::check_not_newer(&before, &MIGRATOR)?;
        MIGRATOR.run(&self.pool).await?;
        Ok(crate::schema::newly_applied(&before, &MIGRATOR))
    }

    /// Whether the schema is this build's ([`StoreError::SchemaOlder`],
    /// [`StoreError::SchemaNewer`] otherwise).
    pub async fn check_schema(&self) -> Result<()> {
        let mut conn = self.pool.acquire().await?;
        crate::schema::check(&applied_versions(&mut conn).await?, &MIGRATOR)
    }
}

/// The versions of the migrations a database applied successfully (none without sqlx's
/// table).
async fn applied_versions(conn: &mut sqlx::PgConnection) -> Result<Vec<i64>> {
    let has_table: bool = sqlx::query_scalar("SELECT to_regclass('_sqlx_migrations') IS NOT NULL")
        .fetch_one(&mut *conn)
        .await?;
    if !has_table {
        return Ok(Vec::new());
    }
    Ok(
        sqlx::query_scalar("SELECT version FROM _sqlx_migrations WHERE success ORDER BY version")
            .fetch_all(&mut *conn)
            .await?,
    )
}

/// A URL's connect options; refused when it does not name a database (PostgreSQL would take
/// the role's name, and the tables would land in a database nobody chose).
fn connect_options(url: &str) -> Result<sqlx::postgres::PgConnectOptions> {
    let opts: sqlx::postgres::PgConnectOptions = url.parse().map_err(|e| {
        StoreError::InvalidInput(format!(
            "database URL {} is not a PostgreSQL URL: {e}",
            redact_url(url)
        ))
    })?;
    if !names_a_database(url) {
        return Err(StoreError::InvalidInput(format!(
            "database URL {} names no database: add one, as in postgres://user@host:5432/tasker",
            redact_url(url)
        )));
    }
    Ok(opts)
}

/// Whether the URL itself names a database: a path, or a `dbname` parameter (not the
/// environment's PGDATABASE, which sqlx would fall back on).
fn names_a_database(url: &str) -> bool {
    let rest = url.split_once("://").map_or(url, |(_, r)| r);
    let rest = rest.split_once('#').map_or(rest, |(r, _)| r);
    let (main, query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = main.split_once('/').map_or("", |(_, p)| p);
    !path.trim_matches('/').is_empty()
        || query
            .split('&')
            .any(|kv| kv.strip_prefix("dbname=").is_some_and(|v| !v.is_empty()))
}

/// Hides a URL's password in messages.
pub(crate) fn redact_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => match url[s + 3..at].split_once(':') {
            Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
            None => url.to_owned(),
        },
        _ => url.to_owned(),
    }
}

/// One connection, its failure said in words.
async fn connect_one(opts: &sqlx::postgres::PgConnectOptions) -> Result<sqlx::PgConnection> {
    use sqlx::ConnectOptions;
    opts.clone()
        .disable_statement_logging()
        .connect()
        .await
        .map_err(|e| connect_error(opts, e))
}

/// Where a connection went, without its password.
fn target(opts: &sqlx::postgres::PgConnectOptions) -> String {
    format!(
        "postgres://{}@{}:{}/{}",
        opts.get_username(),
        opts.get_host(),
        opts.get_port(),
        opts.get_database().unwrap_or("")
    )
}

/// What a failed connection means: refused, unreachable, an unknown role, a wrong password,
/// a missing database or TLS, from the driver's error and the server's SQLSTATE, with the
/// server's own words (never a guess).
fn connect_error(opts: &sqlx::postgres::PgConnectOptions, e: sqlx::Error) -> StoreError {
    use crate::error::ConnectFailure as F;
    let (failure, detail) = match &e {
        sqlx::Error::Io(io) if io.kind() == std::io::ErrorKind::ConnectionRefused => {
            (F::Refused, io.to_string())
        }
        // A refused handshake (e.g. a certificate that does not verify) comes as I/O.
        sqlx::Error::Io(io)
            if io
                .get_ref()
                .is_some_and(|inner| inner.is::<rustls::Error>()) =>
        {
            (F::Tls, io.to_string())
        }
        sqlx::Error::Io(io) => (F::Unreachable, io.to_string()),
        sqlx::Error::Tls(t) => (F::Tls, t.to_string()),
        sqlx::Error::Database(db) => match db.code().as_deref() {
            Some("3D000") => {
                return StoreError::DatabaseMissing {
                    what: format!(
                        "database {} on {}:{}",
                        opts.get_database().unwrap_or(""),
                        opts.get_host(),
                        opts.get_port()
                    ),
                };
            }
            Some("28000") => (F::UnknownRole, db.message().to_owned()),
            Some("28P01") => (F::WrongPassword, db.message().to_owned()),
            _ => (F::Refusal, db.message().to_owned()),
        },
        _ => return StoreError::from(e),
    };
    StoreError::Connect {
        target: target(opts),
        failure,
        detail,
    }
}

pub(crate) fn col<'r, T>(row: &'r PgRow, name: &str) -> Result<T>
where
    T: sqlx::Decode<'r, Postgres> + sqlx::Type<Postgres>,
{
    row.try_get(name)
        .map_err(|e| StoreError::decode(format!("column {name}"), e))
}

/// An `error_kind` column as an [`ErrorKind`].
fn kind_col(row: &PgRow, name: &str) -> Result<Option<ErrorKind>> {
    stored_error_kind(name, col(row, name)?)
}

pub(crate) fn u32_col(row: &PgRow, name: &str) -> Result<u32> {
    let v: i32 = col(row, name)?;
    u32::try_from(v).map_err(|_| StoreError::decode(format!("column {name}"), "negative"))
}

fn count_col(row: &PgRow, name: &str) -> Result<u32> {
    u32_col(row, name)
}

fn step_state(s: &str) -> Result<StepState> {
    s.parse()
        .map_err(|e: tasker_core::state::UnknownState| StoreError::decode("step state", e))
}

pub(crate) fn task_state(s: &str) -> Result<TaskState> {
    s.parse()
        .map_err(|e: tasker_core::state::UnknownState| StoreError::decode("task state", e))
}

fn opt_task_state(s: Option<String>) -> Result<Option<TaskState>> {
    s.as_deref().map(task_state).transpose()
}

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::InvalidInput(format!("{what} {v} is too large")))
}

fn opt_i64(v: Option<u64>, what: &str) -> Result<Option<i64>> {
    v.map(|x| to_i64(x, what)).transpose()
}

pub(crate) fn interval(d: Duration, what: &str) -> Result<sqlx::postgres::types::PgInterval> {
    Ok(sqlx::postgres::types::PgInterval {
        months: 0,
        days: 0,
        microseconds: crate::rules::micros(what, d)?,
    })
}

fn refusal(row: &PgRow) -> Result<Option<Refusal>> {
    let accepted: bool = col(row, "accepted")?;
    if accepted {
        return Ok(None);
    }
    let r: Option<String> = col(row, "refusal")?;
    Ok(Some(Refusal::parse(r.as_deref().unwrap_or("refused"))))
}

fn readiness_row(row: &PgRow) -> Result<ReadinessRow> {
    Ok(ReadinessRow {
        step_id: col(row, "step_id")?,
        task_id: col(row, "task_id")?,
        name: col(row, "name")?,
        state: step_state(&col::<String>(row, "current_state")?)?,
        dependencies_satisfied: col(row, "dependencies_satisfied")?,
        total_parents: count_col(row, "total_parents")?,
        completed_parents: count_col(row, "completed_parents")?,
        retry_eligible: col(row, "retry_eligible")?,
        attempts: u32_col(row, "attempts")?,
        max_attempts: u32_col(row, "max_attempts")?,
        retryable: col(row, "retryable")?,
        next_retry_at: col(row, "next_retry_at")?,
        last_attempted_at: col(row, "last_attempted_at")?,
        last_failure_at: col(row, "last_failure_at")?,
        backoff_request_ms: col(row, "backoff_request_ms")?,
        ready_for_execution: col(row, "ready_for_execution")?,
        priority: priority_col(row, "priority")?,
        not_before: col(row, "not_before")?,
        ahead: col::<Option<i32>>(row, "ahead")?.map(|n| n.max(0) as u32),
        concurrency: match col::<Option<String>>(row, "concurrency_key")? {
            Some(key) => Some(ConcurrencyWait {
                key,
                holding: u32_col(row, "concurrency_holding")?,
                limit: u32_col(row, "concurrency_limit")?,
            }),
            None => None,
        },
    })
}

fn priority_col(row: &PgRow, name: &str) -> Result<Priority> {
    let v: i32 = col(row, name)?;
    Priority::new(i64::from(v))
        .ok_or_else(|| StoreError::decode(format!("column {name}"), format!("priority {v}")))
}

fn context_row(row: &PgRow) -> Result<ExecutionContext> {
    Ok(ExecutionContext {
        task_id: col(row, "task_id")?,
        task_state: task_state(&col::<String>(row, "task_state")?)?,
        total_steps: count_col(row, "total_steps")?,
        pending_steps: count_col(row, "pending_steps")?,
        in_progress_steps: count_col(row, "in_progress_steps")?,
        waiting_for_retry_steps: count_col(row, "waiting_for_retry_steps")?,
        completed_steps: count_col(row, "completed_steps")?,
        resolved_steps: count_col(row, "resolved_steps")?,
        failed_steps: count_col(row, "failed_steps")?,
        cancelled_steps: count_col(row, "cancelled_steps")?,
        ready_steps: count_col(row, "ready_steps")?,
        execution_status: col(row, "execution_status")?,
        recommended_action: col(row, "recommended_action")?,
        completion_percentage: col(row, "completion_percentage")?,
        health_status: col(row, "health_status")?,
    })
}

/// `ready_at` 'infinity' (its task waits for a concurrency slot) reads as not ready.
const STEP_COLUMNS: &str = "id, task_id, position, name, state, unfinished_parents, \
    nullif(ready_at, 'infinity') AS ready_at, \
    attempts, max_attempts, retryable, claim_count, lease_losses, max_lease_losses, worker, \
    lease_expires_at, last_attempted_at, last_failure_at, backoff_request_ms, last_error_kind, \
    result, finished_at";

fn step_row(row: &PgRow) -> Result<StepRow> {
    Ok(StepRow {
        id: col(row, "id")?,
        task_id: col(row, "task_id")?,
        position: u32_col(row, "position")?,
        name: col(row, "name")?,
        state: step_state(&col::<String>(row, "state")?)?,
        unfinished_parents: u32_col(row, "unfinished_parents")?,
        ready_at: col(row, "ready_at")?,
        attempts: u32_col(row, "attempts")?,
        max_attempts: u32_col(row, "max_attempts")?,
        retryable: col(row, "retryable")?,
        claim_count: i64::from(col::<i32>(row, "claim_count")?),
        lease_losses: u32_col(row, "lease_losses")?,
        max_lease_losses: u32_col(row, "max_lease_losses")?,
        worker: col(row, "worker")?,
        lease_expires_at: col(row, "lease_expires_at")?,
        last_attempted_at: col(row, "last_attempted_at")?,
        last_failure_at: col(row, "last_failure_at")?,
        backoff_request_ms: col(row, "backoff_request_ms")?,
        last_error_kind: kind_col(row, "last_error_kind")?,
        result: col(row, "result")?,
        finished_at: col(row, "finished_at")?,
    })
}

pub(crate) const TASK_COLUMNS: &str = "t.id, tp.template_key, t.state, t.context, t.identity_key, \
    t.metadata, t.step_count, t.unfinished_steps, t.error_steps, t.created_at, t.updated_at, \
    t.started_at, t.finished_at";

pub(crate) fn task_row(row: &PgRow) -> Result<TaskRow> {
    Ok(TaskRow {
        id: col(row, "id")?,
        template_key: col(row, "template_key")?,
        state: task_state(&col::<String>(row, "state")?)?,
        context: col(row, "context")?,
        identity_key: col(row, "identity_key")?,
        metadata: col(row, "metadata")?,
        step_count: u32_col(row, "step_count")?,
        unfinished_steps: u32_col(row, "unfinished_steps")?,
        error_steps: u32_col(row, "error_steps")?,
        created_at: col(row, "created_at")?,
        updated_at: col(row, "updated_at")?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
    })
}

fn attempt_row(row: &PgRow) -> Result<AttemptRow> {
    let outcome: String = col(row, "outcome")?;
    let decision: Option<String> = col(row, "decision")?;
    Ok(AttemptRow {
        step_id: col(row, "step_id")?,
        attempt_no: i64::from(col::<i32>(row, "attempt_no")?),
        task_id: col(row, "task_id")?,
        worker: col(row, "worker")?,
        started_at: col(row, "started_at")?,
        finished_at: col(row, "finished_at")?,
        outcome: AttemptOutcome::parse(&outcome)
            .map_err(|e| StoreError::decode("attempts.outcome", e))?,
        error_kind: kind_col(row, "error_kind")?,
        message: col(row, "message")?,
        retryable: col(row, "retryable")?,
        decision: decision
            .as_deref()
            .map(RetryDecision::parse)
            .transpose()
            .map_err(|e| StoreError::decode("attempts.decision", e))?,
        next_ready_at: col(row, "next_ready_at")?,
        fuel: col(row, "fuel")?,
        peak_memory_bytes: col(row, "peak_memory_bytes")?,
        wall_us: col(row, "wall_us")?,
        plugin_hash: col(row, "plugin_hash")?,
        decided_by: col(row, "decided_by")?,
        decision_detail: col(row, "decision_detail")?,
        policy_warning: col(row, "policy_warning")?,
    })
}

fn transition_row<S>(
    row: &PgRow,
    id_col: &str,
    parse: fn(&str) -> Result<S>,
) -> Result<TransitionRow<S>> {
    Ok(TransitionRow {
        id: col(row, id_col)?,
        sort_key: u32_col(row, "sort_key")?,
        from_state: parse(&col::<String>(row, "from_state")?)?,
        to_state: parse(&col::<String>(row, "to_state")?)?,
        metadata: col(row, "metadata")?,
        most_recent: col(row, "most_recent")?,
        created_at: col(row, "created_at")?,
    })
}

fn claimed_step(row: &PgRow) -> Result<ClaimedStep> {
    let handler: String = col(row, "handler")?;
    let mut p = Payload::default();
    let limits = p.typed(
        "limits",
        "template_steps.limits",
        col::<Value>(row, "limits"),
    );
    let grants = p.typed(
        "grants",
        "template_steps.grants",
        col::<Value>(row, "grants"),
    );
    Ok(ClaimedStep {
        step_id: col(row, "step_id")?,
        task_id: col(row, "task_id")?,
        token: col(row, "token")?,
        attempt: u32_col(row, "attempt")?,
        max_attempts: u32_col(row, "max_attempts")?,
        step_name: col(row, "step_name")?,
        handler: handler
            .parse()
            .map_err(|e| StoreError::decode("template_steps.handler", e))?,
        config: p.field("config", col(row, "config")),
        limits,
        grants,
        context: p.field("context", col(row, "context")),
        parent_results: p.field("parent results", col(row, "parent_results")),
        template_key: col(row, "template_key")?,
        lease_expires_at: col(row, "lease_expires_at")?,
        task_started: col(row, "task_started")?,
        pinned_hash: col(row, "pinned_hash")?,
        defect: p.defect(),
    })
}

fn completion_outcome(row: &PgRow) -> Result<CompletionOutcome> {
    Ok(CompletionOutcome {
        step_id: col(row, "step_id")?,
        task_id: col(row, "task_id")?,
        refusal: refusal(row)?,
        task_finalized: opt_task_state(col(row, "task_state")?)?,
    })
}

impl Store for PgStore {
    async fn register_template(&self, template: &Template) -> Result<RegisteredTemplate> {
        self.register_template_at(template, Utc::now()).await
    }

    async fn register_template_at(
        &self,
        template: &Template,
        now: DateTime<Utc>,
    ) -> Result<RegisteredTemplate> {
        let definition = serde_json::to_value(template)
            .map_err(|e| StoreError::InvalidInput(format!("template {}: {e}", template.key())))?;
        let mut tx = self.pool.begin().await?;
        let row = sqlx::query("SELECT * FROM register_template($1, $2, $3, $4, $5, $6, $7)")
            .bind(&template.namespace)
            .bind(&template.name)
            .bind(template.version.to_string())
            .bind(&template.description)
            .bind(&template.context_schema)
            .bind(&definition)
            .bind(Value::Array(crate::wire::steps_json(template)?))
            .fetch_one(&mut *tx)
            .await?;
        crate::pg_schedules::upsert_of_template(&mut tx, template, now).await?;
        tx.commit().await?;
        Ok(RegisteredTemplate {
            template_id: col(&row, "template_id")?,
            key: col(&row, "template_key")?,
            created: col(&row, "created")?,
        })
    }

    async fn template(&self, key: &str) -> Result<Option<Template>> {
        let row = sqlx::query("SELECT definition FROM templates WHERE template_key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        row.map(|r| {
            let v: Value = col(&r, "definition")?;
            serde_json::from_value(v).map_err(|e| StoreError::decode(format!("template {key}"), e))
        })
        .transpose()
    }

    async fn create_task(&self, task: &NewTask, now: DateTime<Utc>) -> Result<CreatedTask> {
        let row = sqlx::query("SELECT * FROM create_task($1, $2, $3, $4, $5, $6, $7)")
            .bind(&task.template_key)
            .bind(&task.context)
            .bind(&task.identity_key)
            .bind(&task.metadata)
            .bind(now)
            .bind(task.priority.map(|p| i32::from(p.get())))
            .bind(task.run_at)
            .fetch_one(&self.pool)
            .await?;
        Ok(CreatedTask {
            task_id: col(&row, "task_id")?,
            created: col(&row, "created")?,
        })
    }

    async fn claim(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedStep>> {
        let limit = i32::try_from(limit)
            .map_err(|_| StoreError::InvalidInput(format!("claim limit {limit} is too large")))?;
        let rows = sqlx::query("SELECT * FROM claim_ready_steps($1, $2, $3, $4)")
            .bind(worker)
            .bind(limit)
            .bind(interval(lease, "lease")?)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(claimed_step).collect()
    }

    async fn claim_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<ClaimedStep>> {
        let limit = i32::try_from(limit)
            .map_err(|_| StoreError::InvalidInput(format!("claim limit {limit} is too large")))?;
        let rows = sqlx::query("SELECT * FROM claim_ready_steps($1, $2, $3, $4, $5)")
            .bind(worker)
            .bind(limit)
            .bind(interval(lease, "lease")?)
            .bind(now)
            .bind(task)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(claimed_step).collect()
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
        let claim = ClaimOf {
            worker,
            limit: claim_limit,
            lease,
            task: Some(task),
        };
        if events.is_empty() {
            return complete_and_claim_on(&self.pool, items, claim, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let out = complete_and_claim_on(&mut *tx, items, claim, now).await?;
        crate::pg_hooks::enqueue_custom(&mut *tx, events, now).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn admit_waiting(&self, now: DateTime<Utc>) -> Result<u32> {
        let n: i32 = sqlx::query_scalar("SELECT admit_waiting_tasks($1)")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(n.max(0) as u32)
    }

    async fn next_ready_at(&self) -> Result<Option<DateTime<Utc>>> {
        Ok(sqlx::query_scalar("SELECT next_ready_at()")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn complete(
        &self,
        items: &[StepCompletion],
        now: DateTime<Utc>,
    ) -> Result<Vec<CompletionOutcome>> {
        complete_on(&self.pool, items, now).await
    }

    async fn complete_with_events(
        &self,
        items: &[StepCompletion],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<CompletionOutcome>> {
        if events.is_empty() {
            return complete_on(&self.pool, items, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let out = complete_on(&mut *tx, items, now).await?;
        crate::pg_hooks::enqueue_custom(&mut *tx, events, now).await?;
        tx.commit().await?;
        Ok(out)
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
        let claim = ClaimOf {
            worker,
            limit: claim_limit,
            lease,
            task: None,
        };
        if events.is_empty() {
            return complete_and_claim_on(&self.pool, items, claim, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let out = complete_and_claim_on(&mut *tx, items, claim, now).await?;
        crate::pg_hooks::enqueue_custom(&mut *tx, events, now).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn fail(&self, items: &[StepFailure], now: DateTime<Utc>) -> Result<Vec<FailureOutcome>> {
        fail_on(&self.pool, items, &[], now).await
    }

    async fn fail_decided(
        &self,
        items: &[StepFailure],
        decisions: &[FailureDecision],
        events: &[CustomEventRecord],
        now: DateTime<Utc>,
    ) -> Result<Vec<FailureOutcome>> {
        if events.is_empty() {
            return fail_on(&self.pool, items, decisions, now).await;
        }
        let mut tx = self.pool.begin().await?;
        let out = fail_on(&mut *tx, items, decisions, now).await?;
        crate::pg_hooks::enqueue_custom(&mut *tx, events, now).await?;
        tx.commit().await?;
        Ok(out)
    }

    async fn claim_hook_deliveries(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HookDeliveryJob>> {
        crate::pg_hooks::claim(&self.pool, None, worker, limit, lease, now).await
    }

    async fn claim_hook_deliveries_of_task(
        &self,
        task: TaskId,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HookDeliveryJob>> {
        crate::pg_hooks::claim(&self.pool, Some(task), worker, limit, lease, now).await
    }

    async fn finish_hook_deliveries(
        &self,
        results: &[HookDeliveryResult],
        now: DateTime<Utc>,
    ) -> Result<Vec<HookFinishOutcome>> {
        crate::pg_hooks::finish(&self.pool, results, now).await
    }

    async fn hook_counts(&self, task_id: Option<TaskId>) -> Result<Vec<HookCounts>> {
        crate::pg_hooks::counts(&self.pool, task_id).await
    }

    async fn hook_outbox_of_task(&self, task_id: TaskId) -> Result<Vec<OutboxRow>> {
        crate::pg_hooks::outbox_of_task(&self.pool, task_id).await
    }

    async fn first_attempt_at(
        &self,
        step_ids: &[StepId],
    ) -> Result<Vec<(StepId, Option<DateTime<Utc>>)>> {
        crate::pg_hooks::first_attempt_at(&self.pool, step_ids).await
    }

    async fn heartbeat(
        &self,
        worker: &str,
        leases: &[Lease],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Result<Vec<HeartbeatOutcome>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.step_id.get()).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let rows = sqlx::query("SELECT * FROM heartbeat_steps($1, $2, $3, $4, $5)")
            .bind(worker)
            .bind(&ids)
            .bind(&tokens)
            .bind(interval(lease, "lease")?)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(HeartbeatOutcome {
                    step_id: col(row, "step_id")?,
                    lease_expires_at: col(row, "lease_expires_at")?,
                })
            })
            .collect()
    }

    async fn expire_leases(&self, now: DateTime<Utc>, limit: u32) -> Result<Vec<ExpiredLease>> {
        let limit = i32::try_from(limit).unwrap_or(i32::MAX);
        let rows = sqlx::query("SELECT * FROM expire_leases($1, $2)")
            .bind(now)
            .bind(limit)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ExpiredLease {
                    step_id: col(row, "step_id")?,
                    task_id: col(row, "task_id")?,
                    worker: col(row, "worker")?,
                    token: col(row, "token")?,
                    state: step_state(&col::<String>(row, "state")?)?,
                    lease_losses: u32_col(row, "lease_losses")?,
                    task_finalized: opt_task_state(col(row, "task_state")?)?,
                })
            })
            .collect()
    }

    async fn release(
        &self,
        worker: &str,
        leases: &[Lease],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReleaseOutcome>> {
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let ids: Vec<i64> = leases.iter().map(|l| l.step_id.get()).collect();
        let tokens: Vec<i64> = leases.iter().map(|l| l.token).collect();
        let rows = sqlx::query("SELECT * FROM release_steps($1, $2, $3, $4)")
            .bind(worker)
            .bind(&ids)
            .bind(&tokens)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(ReleaseOutcome {
                    step_id: col(row, "step_id")?,
                    refusal: refusal(row)?,
                })
            })
            .collect()
    }

    async fn readiness(
        &self,
        task_id: TaskId,
        step_ids: Option<&[StepId]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<ReadinessRow>> {
        let rows = sqlx::query("SELECT * FROM get_step_readiness_status($1, $2, $3)")
            .bind(task_id)
            .bind(step_ids)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(readiness_row).collect()
    }

    async fn readiness_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ReadinessRow>> {
        let rows = sqlx::query(
            "SELECT * FROM get_step_readiness_status_batch($1, $2) ORDER BY task_id, step_id",
        )
        .bind(task_ids)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(readiness_row).collect()
    }

    async fn execution_context(
        &self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<Option<ExecutionContext>> {
        Ok(self
            .execution_context_batch(&[task_id], now)
            .await?
            .into_iter()
            .next())
    }

    async fn execution_context_batch(
        &self,
        task_ids: &[TaskId],
        now: DateTime<Utc>,
    ) -> Result<Vec<ExecutionContext>> {
        let rows = sqlx::query(
            "SELECT task_id, task_state, total_steps, pending_steps, in_progress_steps, \
             waiting_for_retry_steps, completed_steps, resolved_steps, failed_steps, \
             cancelled_steps, ready_steps, execution_status, recommended_action, \
             completion_percentage::float8 AS completion_percentage, health_status \
             FROM get_task_execution_context_batch($1, $2)",
        )
        .bind(task_ids)
        .bind(now)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(context_row).collect()
    }

    async fn dependency_levels(&self, task_id: TaskId) -> Result<Vec<DependencyLevel>> {
        let rows = sqlx::query("SELECT * FROM calculate_dependency_levels($1)")
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                Ok(DependencyLevel {
                    step_id: col(row, "step_id")?,
                    name: col(row, "name")?,
                    level: u32_col(row, "dependency_level")?,
                })
            })
            .collect()
    }

    async fn health_counts(&self, now: DateTime<Utc>) -> Result<HealthCounts> {
        let row = sqlx::query("SELECT * FROM get_system_health_counts($1)")
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(HealthCounts {
            total_tasks: col(&row, "total_tasks")?,
            pending_tasks: col(&row, "pending_tasks")?,
            in_progress_tasks: col(&row, "in_progress_tasks")?,
            complete_tasks: col(&row, "complete_tasks")?,
            error_tasks: col(&row, "error_tasks")?,
            cancelled_tasks: col(&row, "cancelled_tasks")?,
            total_steps: col(&row, "total_steps")?,
            pending_steps: col(&row, "pending_steps")?,
            in_progress_steps: col(&row, "in_progress_steps")?,
            waiting_for_retry_steps: col(&row, "waiting_for_retry_steps")?,
            complete_steps: col(&row, "complete_steps")?,
            error_steps: col(&row, "error_steps")?,
            cancelled_steps: col(&row, "cancelled_steps")?,
            resolved_steps: col(&row, "resolved_steps")?,
            ready_steps: col(&row, "ready_steps")?,
            retry_backlog: col(&row, "retry_backlog")?,
            expired_leases: col(&row, "expired_leases")?,
            active_connections: col(&row, "active_connections")?,
            max_connections: col(&row, "max_connections")?,
        })
    }

    async fn cancel_task(&self, task_id: TaskId, now: DateTime<Utc>) -> Result<CancelOutcome> {
        let row = sqlx::query("SELECT * FROM cancel_task($1, $2)")
            .bind(task_id)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(CancelOutcome {
            task_id: col(&row, "task_id")?,
            cancelled: col(&row, "cancelled")?,
            steps_cancelled: u32_col(&row, "steps_cancelled")?,
        })
    }

    async fn retry_task(&self, task_id: TaskId, now: DateTime<Utc>) -> Result<RetryOutcome> {
        let row = sqlx::query("SELECT * FROM retry_task($1, $2)")
            .bind(task_id)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(RetryOutcome {
            task_id: col(&row, "task_id")?,
            steps_reset: u32_col(&row, "steps_reset")?,
        })
    }

    async fn resolve_step(
        &self,
        step_id: StepId,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Result<ResolveOutcome> {
        let row = sqlx::query("SELECT * FROM resolve_step($1, $2, $3)")
            .bind(step_id)
            .bind(result)
            .bind(now)
            .fetch_one(&self.pool)
            .await?;
        Ok(ResolveOutcome {
            step_id: col(&row, "step_id")?,
            task_id: col(&row, "task_id")?,
            ready_children: u32_col(&row, "ready_children")?,
            task_state: task_state(&col::<String>(&row, "task_state")?)?,
        })
    }

    async fn task(&self, task_id: TaskId) -> Result<Option<TaskRow>> {
        let row = sqlx::query(&format!(
            "SELECT {TASK_COLUMNS} FROM tasks t JOIN templates tp ON tp.id = t.template_id \
             WHERE t.id = $1"
        ))
        .bind(task_id)
        .fetch_optional(&self.pool)
        .await?;
        row.as_ref().map(task_row).transpose()
    }

    async fn steps_of_task(&self, task_id: TaskId) -> Result<Vec<StepRow>> {
        let rows = sqlx::query(&format!(
            "SELECT {STEP_COLUMNS} FROM steps WHERE task_id = $1 ORDER BY id"
        ))
        .bind(task_id)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(step_row).collect()
    }

    async fn step(&self, step_id: StepId) -> Result<Option<StepRow>> {
        let row = sqlx::query(&format!("SELECT {STEP_COLUMNS} FROM steps WHERE id = $1"))
            .bind(step_id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(step_row).transpose()
    }

    async fn attempts_of_step(&self, step_id: StepId) -> Result<Vec<AttemptRow>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts WHERE step_id = $1 ORDER BY attempt_no"
        );
        let rows = sqlx::query(&sql)
            .bind(step_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_row).collect()
    }

    async fn attempt_logs(
        &self,
        step_id: StepId,
        attempt_no: Option<i64>,
    ) -> Result<Vec<AttemptLogRow>> {
        let sql = format!(
            "SELECT step_id, attempt_no, outcome, started_at, finished_at, logs FROM attempts \
             WHERE step_id = $1 AND ($2::bigint IS NULL OR attempt_no = $2) \
               AND outcome IN {LOGGED_OUTCOMES} ORDER BY attempt_no"
        );
        let rows = sqlx::query(&sql)
            .bind(step_id)
            .bind(attempt_no)
            .fetch_all(&self.pool)
            .await?;
        rows.iter()
            .map(|row| {
                let outcome: String = col(row, "outcome")?;
                Ok(AttemptLogRow {
                    step_id: col(row, "step_id")?,
                    attempt_no: i64::from(col::<i32>(row, "attempt_no")?),
                    outcome: AttemptOutcome::parse(&outcome)
                        .map_err(|e| StoreError::decode("attempts.outcome", e))?,
                    started_at: col(row, "started_at")?,
                    finished_at: col(row, "finished_at")?,
                    log: AttemptLog::from_json(col(row, "logs")?)?,
                })
            })
            .collect()
    }

    async fn step_transitions(&self, step_id: StepId) -> Result<Vec<TransitionRow<StepState>>> {
        let rows =
            sqlx::query("SELECT * FROM step_transitions WHERE step_id = $1 ORDER BY sort_key")
                .bind(step_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| transition_row(r, "step_id", step_state))
            .collect()
    }

    async fn task_transitions(&self, task_id: TaskId) -> Result<Vec<TransitionRow<TaskState>>> {
        let rows =
            sqlx::query("SELECT * FROM task_transitions WHERE task_id = $1 ORDER BY sort_key")
                .bind(task_id)
                .fetch_all(&self.pool)
                .await?;
        rows.iter()
            .map(|r| transition_row(r, "task_id", task_state))
            .collect()
    }

    async fn list_templates(
        &self,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Page<TemplateSummary, String>> {
        crate::pg_listing::list_templates(&self.pool, after, limit).await
    }

    async fn list_tasks(
        &self,
        filter: &TaskFilter,
        page: TaskPageRequest,
    ) -> Result<Page<TaskRow, TaskId>> {
        crate::pg_listing::list_tasks(&self.pool, filter, page).await
    }

    async fn count_tasks(&self, filter: &TaskFilter) -> Result<TaskCounts> {
        crate::pg_listing::count_tasks(&self.pool, filter).await
    }

    async fn attempts_of_task(&self, task_id: TaskId) -> Result<Vec<AttemptRow>> {
        let sql = format!(
            "SELECT {ATTEMPT_COLUMNS} FROM attempts \
             WHERE step_id IN (SELECT id FROM steps WHERE task_id = $1) \
             ORDER BY started_at, step_id, attempt_no"
        );
        let rows = sqlx::query(&sql)
            .bind(task_id)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(attempt_row).collect()
    }

    async fn create_token(&self, token: &NewToken, now: DateTime<Utc>) -> Result<TokenRow> {
        crate::pg_listing::create_token(&self.pool, token, now).await
    }

    async fn token_by_hash(&self, hash: &str) -> Result<Option<TokenRow>> {
        crate::pg_listing::token_by_hash(&self.pool, hash).await
    }

    async fn list_tokens(&self) -> Result<Vec<TokenRow>> {
        crate::pg_listing::list_tokens(&self.pool).await
    }

    async fn revoke_token(&self, name: &str, now: DateTime<Utc>) -> Result<bool> {
        crate::pg_listing::revoke_token(&self.pool, name, now).await
    }

    async fn list_hook_outbox(
        &self,
        filter: &OutboxFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<OutboxRow, i64>> {
        crate::pg_hooks::list_outbox(&self.pool, filter, after, limit).await
    }

    async fn redeliver_dead_letters(
        &self,
        hook_id: Option<i64>,
        ids: Option<&[i64]>,
        now: DateTime<Utc>,
    ) -> Result<Vec<Redelivered>> {
        crate::pg_hooks::redeliver(&self.pool, hook_id, ids, now).await
    }

    async fn events_after(
        &self,
        filter: &EventFilter,
        after: Option<&str>,
        limit: u32,
    ) -> Result<Vec<StoredEvent>> {
        crate::pg_events::events_after(&self.pool, filter, after, limit).await
    }

    async fn latest_event_cursor(&self, filter: &EventFilter) -> Result<Option<String>> {
        crate::pg_events::latest_event_cursor(&self.pool, filter).await
    }

    async fn prune(
        &self,
        req: &crate::prune::PruneRequest,
        now: DateTime<Utc>,
    ) -> Result<crate::prune::PruneReport> {
        crate::prune::pg_prune(&self.pool, req, now).await
    }
    async fn create_schedule(
        &self,
        schedule: &crate::schedules::NewSchedule,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        crate::pg_schedules::create_schedule(&self.pool, schedule, now).await
    }

    async fn list_schedules(&self) -> Result<Vec<crate::schedules::ScheduleRow>> {
        crate::pg_schedules::list_schedules(&self.pool).await
    }

    async fn schedule(&self, name: &str) -> Result<Option<crate::schedules::ScheduleRow>> {
        crate::pg_schedules::schedule(&self.pool, name).await
    }

    async fn pause_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        crate::pg_schedules::set_paused(&self.pool, name, true, now).await
    }

    async fn resume_schedule(
        &self,
        name: &str,
        now: DateTime<Utc>,
    ) -> Result<crate::schedules::ScheduleRow> {
        crate::pg_schedules::set_paused(&self.pool, name, false, now).await
    }

    async fn delete_schedule(&self, name: &str) -> Result<bool> {
        crate::pg_schedules::delete_schedule(&self.pool, name).await
    }

    async fn fire_due(
        &self,
        now: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<crate::schedules::FiredSchedule>> {
        crate::pg_schedules::fire_due(&self.pool, now, limit).await
    }
}

/// complete_steps' array arguments, one element per item.
struct CompletionArgs {
    ids: Vec<i64>,
    tokens: Vec<i64>,
    results: Vec<Value>,
    fuel: Vec<Option<i64>>,
    mem: Vec<Option<i64>>,
    wall: Vec<Option<i64>>,
    hash: Vec<Option<String>>,
    logs: Vec<Option<Value>>,
}

impl CompletionArgs {
    fn new(items: &[StepCompletion]) -> Result<Self> {
        let mut a = CompletionArgs {
            ids: Vec::with_capacity(items.len()),
            tokens: Vec::with_capacity(items.len()),
            results: Vec::with_capacity(items.len()),
            fuel: Vec::with_capacity(items.len()),
            mem: Vec::with_capacity(items.len()),
            wall: Vec::with_capacity(items.len()),
            hash: Vec::with_capacity(items.len()),
            logs: Vec::with_capacity(items.len()),
        };
        for c in items {
            a.ids.push(c.step_id.get());
            a.tokens.push(c.token);
            a.results.push(c.result.clone());
            a.fuel.push(opt_i64(c.accounting.fuel, "fuel")?);
            a.mem.push(opt_i64(
                c.accounting.peak_memory_bytes,
                "peak_memory_bytes",
            )?);
            a.wall.push(opt_i64(c.accounting.wall_us, "wall_us")?);
            a.hash.push(c.accounting.plugin_hash.clone());
            a.logs.push(c.log.to_json());
        }
        Ok(a)
    }

    /// Binds the seven arrays, in complete_steps' order, after the query's earlier ones.
    fn bind<'q>(
        &'q self,
        q: sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments>,
    ) -> sqlx::query::Query<'q, Postgres, sqlx::postgres::PgArguments> {
        q.bind(&self.ids)
            .bind(&self.tokens)
            .bind(&self.results)
            .bind(&self.fuel)
            .bind(&self.mem)
            .bind(&self.wall)
            .bind(&self.hash)
    }
}

async fn complete_on<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    items: &[StepCompletion],
    now: DateTime<Utc>,
) -> Result<Vec<CompletionOutcome>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let args = CompletionArgs::new(items)?;
    let rows = args
        .bind(sqlx::query(
            "SELECT * FROM complete_steps($1, $2, $3, $4, $5, $6, $7, $8, $9)",
        ))
        .bind(now)
        .bind(&args.logs)
        .fetch_all(db)
        .await?;
    rows.iter().map(completion_outcome).collect()
}

/// The claim half of a hop: for `worker`, up to `limit` steps under `lease`, of `task` only
/// when given.
#[derive(Clone, Copy)]
struct ClaimOf<'a> {
    worker: &'a str,
    limit: u32,
    lease: Duration,
    task: Option<TaskId>,
}

/// complete_and_claim_steps: completion outcomes (input order), then the claimed steps.
async fn complete_and_claim_on<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    items: &[StepCompletion],
    claim: ClaimOf<'_>,
    now: DateTime<Utc>,
) -> Result<(Vec<CompletionOutcome>, Vec<ClaimedStep>)> {
    let claim_limit = claim.limit;
    let limit = i32::try_from(claim_limit)
        .map_err(|_| StoreError::InvalidInput(format!("claim limit {claim_limit} is too large")))?;
    let args = CompletionArgs::new(items)?;
    // The unscoped hop keeps its statement (and its plan) as it was.
    let sql = match claim.task {
        None => {
            "SELECT * FROM complete_and_claim_steps($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)"
        }
        Some(_) => {
            "SELECT * FROM complete_and_claim_steps($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
        }
    };
    let mut query = args
        .bind(sqlx::query(sql))
        .bind(claim.worker)
        .bind(limit)
        .bind(interval(claim.lease, "lease")?)
        .bind(now)
        .bind(&args.logs);
    if let Some(task) = claim.task {
        query = query.bind(task);
    }
    let rows = query.fetch_all(db).await?;
    let mut outcomes = Vec::with_capacity(items.len());
    let mut claimed = Vec::new();
    for row in &rows {
        if col::<bool>(row, "claimed")? {
            claimed.push(claimed_step(row)?);
        } else {
            outcomes.push(completion_outcome(row)?);
        }
    }
    Ok((outcomes, claimed))
}

/// `decisions[i]` says who decided `items[i]` (missing: the built-in policy).
async fn fail_on<'c, E: sqlx::PgExecutor<'c>>(
    db: E,
    items: &[StepFailure],
    decisions: &[FailureDecision],
    now: DateTime<Utc>,
) -> Result<Vec<FailureOutcome>> {
    if items.is_empty() {
        return Ok(Vec::new());
    }
    let ids: Vec<i64> = items.iter().map(|f| f.step_id.get()).collect();
    let tokens: Vec<i64> = items.iter().map(|f| f.token).collect();
    let kinds: Vec<String> = items
        .iter()
        .map(|f| f.error_kind.as_str().to_owned())
        .collect();
    let messages: Vec<String> = items.iter().map(|f| f.message.clone()).collect();
    let retryable: Vec<bool> = items.iter().map(|f| f.retryable).collect();
    // A retry-after beyond i64 is capped by max_retry_after_ms anyway.
    let retry_after: Vec<Option<i64>> = items
        .iter()
        .map(|f| {
            f.retry_after_ms
                .map(|ms| i64::try_from(ms).unwrap_or(i64::MAX))
        })
        .collect();
    // Without an explicit decision, the built-in policy decided.
    let decision = |i: usize| decisions.get(i);
    let decided_by: Vec<String> = (0..items.len())
        .map(|i| decision(i).map_or_else(|| "builtin".to_owned(), |d| d.decided_by.clone()))
        .collect();
    let details: Vec<Option<String>> = (0..items.len())
        .map(|i| decision(i).and_then(|d| d.detail.clone()))
        .collect();
    let warnings: Vec<Option<String>> = (0..items.len())
        .map(|i| decision(i).and_then(|d| d.warning.clone()))
        .collect();
    let mut fuel = Vec::with_capacity(items.len());
    let mut mem = Vec::with_capacity(items.len());
    let mut wall = Vec::with_capacity(items.len());
    let mut hash = Vec::with_capacity(items.len());
    for f in items {
        fuel.push(opt_i64(f.accounting.fuel, "fuel")?);
        mem.push(opt_i64(
            f.accounting.peak_memory_bytes,
            "peak_memory_bytes",
        )?);
        wall.push(opt_i64(f.accounting.wall_us, "wall_us")?);
        hash.push(f.accounting.plugin_hash.clone());
    }
    let logs: Vec<Option<Value>> = items.iter().map(|f| f.log.to_json()).collect();
    let rows =
            sqlx::query(
                "SELECT * FROM fail_steps_decided($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)",
            )
                .bind(&ids)
                .bind(&tokens)
                .bind(&kinds)
                .bind(&messages)
                .bind(&retryable)
                .bind(&retry_after)
                .bind(&fuel)
                .bind(&mem)
                .bind(&wall)
                .bind(&hash)
                .bind(&decided_by)
                .bind(&details)
                .bind(&warnings)
                .bind(now)
                .bind(&logs)
                .fetch_all(db)
                .await?;
    rows.iter()
        .map(|row| {
            let decision: Option<String> = col(row, "decision")?;
            Ok(FailureOutcome {
                step_id: col(row, "step_id")?,
                task_id: col(row, "task_id")?,
                refusal: refusal(row)?,
                decision: decision
                    .as_deref()
                    .map(RetryDecision::parse)
                    .transpose()
                    .map_err(|e| StoreError::decode("fail_steps.decision", e))?,
                next_ready_at: col(row, "next_ready_at")?,
                task_finalized: opt_task_state(col(row, "task_state")?)?,
            })
        })
        .collect()
}

#[cfg(test)]
mod connect_tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        assert_eq!(
            redact_url("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
    }

    /// A server's refusal with this SQLSTATE.
    #[derive(Debug)]
    struct Refused(&'static str, &'static str);

    impl std::fmt::Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.1)
        }
    }

    impl std::error::Error for Refused {}

    impl sqlx::error::DatabaseError for Refused {
        fn message(&self) -> &str {
            self.1
        }
        fn code(&self) -> Option<std::borrow::Cow<'_, str>> {
            Some(self.0.into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> sqlx::error::ErrorKind {
            sqlx::error::ErrorKind::Other
        }
    }

    /// Each SQLSTATE of a refused login is said in words, with the server's message; the
    /// password never appears (trust authentication on the test server cannot refuse one).
    #[test]
    fn connection_failures_are_named_by_their_sqlstate() {
        let opts = connect_options("postgres://bob:secret@db.example:6543/tasker").unwrap();
        let said =
            |code, msg| connect_error(&opts, sqlx::Error::Database(Box::new(Refused(code, msg))));
        let e = said("28P01", "password authentication failed for user \"bob\"");
        assert!(
            matches!(
                e,
                StoreError::Connect {
                    failure: crate::ConnectFailure::WrongPassword,
                    ..
                }
            ),
            "{e}"
        );
        assert_eq!(
            e.to_string(),
            "cannot connect to postgres://bob@db.example:6543/tasker: wrong password: \
             password authentication failed for user \"bob\""
        );
        assert!(!e.is_retryable());
        let e = said("28000", "role \"bob\" does not exist");
        assert!(
            e.to_string()
                .contains("the role is unknown or not allowed: role"),
            "{e}"
        );
        let e = said("3D000", "database \"tasker\" does not exist");
        assert_eq!(
            e.to_string(),
            "database tasker on db.example:6543 does not exist: `tasker migrate` creates it"
        );
        let e = connect_error(
            &opts,
            sqlx::Error::Io(std::io::ErrorKind::ConnectionRefused.into()),
        );
        assert!(e.to_string().contains(": connection refused"), "{e}");
        assert!(e.is_retryable());
        let e = connect_error(&opts, sqlx::Error::Tls("bad certificate".into()));
        assert!(
            e.to_string().ends_with(": TLS failed: bad certificate"),
            "{e}"
        );
        // As a refused handshake reaches sqlx: an I/O error around rustls's.
        let bad_cert = rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer);
        let e = connect_error(
            &opts,
            sqlx::Error::Io(std::io::Error::new(
                std::io::ErrorKind::InvalidData,
                bad_cert,
            )),
        );
        assert!(
            e.to_string()
                .contains(": TLS failed: invalid peer certificate: UnknownIssuer"),
            "{e}"
        );
        assert!(!e.is_retryable());
        assert!(!e.to_string().contains("secret"));
    }

    #[test]
    fn a_url_must_name_its_database() {
        for url in [
            "postgres://u@h:5432/tasker",
            "postgresql://u:p@h/tasker?sslmode=disable",
            "postgres:///tasker",
            "postgres://u@h/?dbname=tasker",
        ] {
            assert!(names_a_database(url), "{url}");
            assert!(connect_options(url).is_ok(), "{url}");
        }
        for url in [
            "postgres://u@h:5432",
            "postgres://u@h:5432/",
            "postgres://u:secret@h/?sslmode=disable",
            "postgres://u@h/?dbname=",
        ] {
            assert!(!names_a_database(url), "{url}");
            let e = connect_options(url).unwrap_err().to_string();
            assert!(e.contains("names no database"), "{e}");
            assert!(!e.contains("secret"), "{e}");
        }
    }
}
