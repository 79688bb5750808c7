//! Tasker's store: templates, tasks and steps in PostgreSQL or in an embedded SQLite file.
//!
//! Two backends behind one `Store` trait: `PgStore`, whose logic is PL/pgSQL (readiness,
//! execution context, the batched claim / complete / fail hot path, leases, task operations;
//! the current definitions in `host/store/sql/`), and `SqliteStore`, the embedded default,
//! which runs the same operations as Rust in one write transaction each. `AnyStore` is
//! either, chosen at run time. See `docs/store.md` for the schema and invariants.

mod any;
mod attempt_log;
mod error;
mod events;
mod ids;
mod listing;
mod payload;
mod pg;
mod pg_events;
mod pg_hooks;
mod pg_listing;
mod pg_schedules;
mod prune;
pub mod rules;
mod schedules;
mod schema;
mod sqlite;
mod store;
mod types;
mod wire;

pub use any::AnyStore;
pub use attempt_log::{AttemptLog, AttemptLogRow, HttpRecord, LogDropped, LogLevel, LogLine};
pub use error::{ConnectFailure, StoreError};
pub use events::{EventFilter, STEP_TRANSITION, StoredEvent, TASK_TRANSITION, is_task_transition};
pub use listing::{
    MAX_PAGE, NewToken, OutboxFilter, Page, TaskCounts, TaskFilter, TaskPageRequest,
    TemplateSummary, TokenRow,
};
pub use pg::{DEFAULT_MAX_LEASE_LOSSES, DUE_CHANNEL, MIGRATOR, PgStore, READY_CHANNEL};
pub use prune::{DEFAULT_IDLE_RATIO, DEFAULT_PRUNE_BATCH, PruneCounts, PruneReport, PruneRequest};
pub use schedules::{
    FiredSchedule, MAX_FIRE_BATCH, NewSchedule, ScheduleProblem, ScheduleRow, ScheduleSource,
    check_schedule,
};
pub use schema::AppliedMigration;
pub use sqlite::{SQLITE_MIGRATOR, SqliteStore};
pub use store::{Result, Store};
pub use types::*;
