//! The harness the cross-crate suites share: running a scenario on both backends
//! ([`on_both_backends!`]), the store drivers at fixed instants ([`store`]), workers with test
//! timings, their own connections, polling for tasks to end, the `tasker` binary against a
//! test database on either backend ([`cli`]), the reference model of the stores'
//! scheduling semantics ([`model`]), a real HTTP server with its client ([`server`]),
//! reading the event log whole ([`events`]), and headless Chromium over WebDriver for the web
//! page ([`browser`]).

pub mod backends;
pub mod browser;
pub mod cli;
pub mod events;
pub mod http_server;
pub mod model;
pub mod served;
pub mod server;
pub mod store;

pub use backends::Backend;

use std::time::Duration;

use tasker_engine::WorkerConfig;
use tasker_store::TaskId;

/// Another handle on the same test database: on PostgreSQL each worker gets its own
/// connections.
pub async fn own_pool<S: Backend>(s: &S) -> S {
    s.sibling(4)
        .await
        .expect("a second handle on the test database")
}

/// A worker that sweeps and polls often, so tests end soon after their work does.
pub fn worker_config(id: &str) -> WorkerConfig {
    WorkerConfig {
        id: id.to_owned(),
        concurrency: 64,
        claim_batch: 64,
        record_batch: 128,
        lease: Duration::from_secs(30),
        heartbeat_every: Duration::from_secs(5),
        sweep_every: Duration::from_millis(200),
        poll_every: Duration::from_millis(50),
        shutdown_grace: Duration::from_secs(10),
        only_task: None,
    }
}

/// Polls until none of `tasks` is open any more, failing the test after `limit`.
pub async fn wait_until_done<S: Backend>(store: &S, tasks: &[TaskId], limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    let ids: Vec<String> = tasks.iter().map(TaskId::to_string).collect();
    let sql = format!(
        "SELECT count(*) FROM tasks WHERE id IN ({}) AND state NOT IN ('complete','error','cancelled')",
        ids.join(",")
    );
    loop {
        let open = store.count(&sql).await.expect("count open tasks");
        if open == 0 {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "{open} tasks still open after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}
