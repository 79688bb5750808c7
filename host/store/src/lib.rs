//! Tasker's store: templates, tasks and steps in PostgreSQL or in an embedded SQLite file.
//!
//! The logic lives in PL/pgSQL functions in `migrations/` (readiness, execution context, the
//! batched claim / complete / fail hot path, leases, task operations); this crate calls them
//! and maps rows to typed results. See `docs/store.md` for the schema and invariants.

mod any;
mod error;
mod ids;
mod payload;
mod pg;
mod pg_hooks;
mod sqlite;
mod store;
mod types;
mod wire;

pub use any::AnyStore;
pub use error::StoreError;
pub use pg::{DEFAULT_MAX_LEASE_LOSSES, DUE_CHANNEL, MIGRATOR, PgStore, READY_CHANNEL};
pub use sqlite::{SQLITE_MIGRATOR, SqliteStore};
pub use store::{Result, Store};
pub use types::*;
