//! Two implementations of one rule, compared: SQLite's store against PostgreSQL's row by row
//! (`hot_path`, `reads`, `outbox`), the SQL against the Rust it mirrors (`sql_vs_rust`,
//! `readiness_vs_claim`), and the migrated database against `host/store/sql` (`sql_files`).

mod hot_path;
mod outbox;
mod readiness_vs_claim;
mod reads;
mod sql_files;
mod sql_vs_rust;
