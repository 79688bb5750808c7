//! Tasker core: templates, the DAG, state machines, backoff and event names.
//!
//! This crate does no I/O. Storage (`tasker-store`), the sandbox (`tasker-sandbox`) and the
//! binary build on it.

pub mod backoff;
pub mod clock;
pub mod concurrency;
pub mod dag;
pub mod error_kind;
pub mod events;
pub mod fixtures;
pub mod http_grant;
pub mod http_record;
pub mod metrics;
pub mod priority;
pub mod retention;
pub mod schedule;
pub mod state;
pub mod template;
pub mod text;
pub mod trace;
