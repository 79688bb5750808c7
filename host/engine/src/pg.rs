//! PostgreSQL LISTEN as a wake-up hint for workers.
//!
//! The store NOTIFYs once per statement that makes steps ready (`tasker_ready`) or schedules a
//! retry for later (`tasker_due`). A notification only wakes the
//! claim loop; missing one costs at most a poll interval, so the listener reconnects quietly
//! and wakes the worker after every reconnect in case something was missed.

use std::sync::Arc;
use std::time::Duration;

use sqlx::PgPool;
use sqlx::postgres::PgListener;
use tasker_store::{DUE_CHANNEL, READY_CHANNEL};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// Spawns a listener that pokes `wake` on every ready notification until `stop`.
pub fn spawn_ready_listener(
    pool: PgPool,
    wake: Arc<Notify>,
    stop: CancellationToken,
) -> JoinHandle<()> {
    tokio::spawn(async move {
        let mut pause = Duration::from_millis(100);
        while !stop.is_cancelled() {
            let mut listener = match PgListener::connect_with(&pool).await {
                Ok(l) => l,
                Err(e) => {
                    tracing::warn!(error = %e, "LISTEN connection failed; polling meanwhile");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => return,
                    }
                    pause = (pause * 2).min(Duration::from_secs(5));
                    continue;
                }
            };
            // A due notice wakes an idle worker so it asks the store when to look again.
            if let Err(e) = listener.listen_all([READY_CHANNEL, DUE_CHANNEL]).await {
                tracing::warn!(error = %e, "LISTEN failed; polling meanwhile");
                continue;
            }
            pause = Duration::from_millis(100);
            wake.notify_one();
            loop {
                tokio::select! {
                    msg = listener.try_recv() => match msg {
                        Ok(Some(_)) => wake.notify_one(),
                        // The connection dropped: reconnect, then wake in case we missed one.
                        Ok(None) => break,
                        Err(e) => {
                            tracing::warn!(error = %e, "LISTEN connection lost");
                            break;
                        }
                    },
                    _ = stop.cancelled() => return,
                }
            }
        }
    })
}
