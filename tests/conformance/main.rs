//! Store and engine scenarios that run on both backends (`on_both_backends!`), a module per
//! area; the few that only one backend has (PostgreSQL's claim cursor, SQLite's schema
//! triggers) say so in their module docs.

mod attempt_logs;
mod claim_cursor;
mod complete_and_claim;
mod concurrency;
mod coordinator;
mod dropped_calls;
mod events;
mod fencing;
mod guest_data;
mod hook_deliveries;
mod hooks_policy;
mod listing;
mod operations;
mod outbox;
mod pinning;
mod priorities;
mod random_dags;
mod readiness;
mod retention;
mod schedules;
mod scoped_claim;
mod scoped_hooks;
mod sqlite_schema;
mod store_concurrency;
mod worker;
mod worker_hops;
