//! The background pruner (retention, docs/store.md): any worker or server may run one; on
//! PostgreSQL an advisory lock lets one at a time delete, the others find it busy and wait for
//! their next turn.

use std::sync::Arc;
use std::sync::Mutex;
use std::time::Duration;

use chrono::{DateTime, Utc};
use tasker_core::clock::Clock;
use tasker_store::{PruneCounts, PruneRequest, Store};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How a node prunes.
#[derive(Debug, Clone)]
pub struct PrunerConfig {
    pub request: PruneRequest,
    /// Time between runs, on the node's clock.
    pub interval: Duration,
    /// How often the loop looks at the clock (wall time): `interval` itself on the system
    /// clock, shorter in tests that move a manual clock.
    pub tick: Duration,
}

impl PrunerConfig {
    pub fn new(request: PruneRequest, interval: Duration) -> PrunerConfig {
        PrunerConfig {
            request,
            interval,
            tick: interval.min(Duration::from_secs(60)),
        }
    }
}

/// What a node's pruner has done so far.
#[derive(Debug, Default)]
pub struct PrunerStats {
    inner: Mutex<PrunerTotals>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct PrunerTotals {
    /// Completed runs (busy ones included).
    pub runs: u64,
    /// Runs that found another pruner at work.
    pub busy: u64,
    /// Runs that failed (logged; the next run tries again).
    pub errors: u64,
    pub removed: PruneCounts,
}

impl PrunerStats {
    pub fn totals(&self) -> PrunerTotals {
        *self.inner.lock().expect("pruner stats")
    }
}

/// Starts the loop: the first run a minute after start (or one `interval`, if shorter), then
/// every `interval` of `clock` (a run that takes longer delays the next, never overlaps it). Stops with `stop`
/// (a batch in flight is rolled back).
pub fn spawn_pruner<S: Store + 'static>(
    store: Arc<S>,
    cfg: PrunerConfig,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) -> (JoinHandle<()>, Arc<PrunerStats>) {
    let stats = Arc::new(PrunerStats::default());
    let out = stats.clone();
    let handle = tokio::spawn(async move {
        let interval = chrono::Duration::from_std(cfg.interval).unwrap_or(chrono::Duration::MAX);
        // Soon after start, so that a node restarted more often than `interval` still prunes.
        let first = interval.min(chrono::Duration::minutes(1));
        let after = |d: chrono::Duration| {
            clock
                .now()
                .checked_add_signed(d)
                .unwrap_or(DateTime::<Utc>::MAX_UTC)
        };
        let mut next = after(first);
        let tick = cfg.tick.max(Duration::from_millis(1));
        loop {
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(tick) => {}
            }
            let now = clock.now();
            if now < next {
                continue;
            }
            let result = tokio::select! {
                _ = stop.cancelled() => return,
                r = store.prune(&cfg.request, now) => r,
            };
            let mut t = stats.inner.lock().expect("pruner stats");
            t.runs += 1;
            match result {
                Ok(report) => {
                    t.removed.add(&report.removed);
                    if report.busy {
                        t.busy += 1;
                    }
                    if report.removed.tasks > 0 || report.removed.hook_outbox > 0 {
                        tracing::info!(
                            tasks = report.removed.tasks,
                            steps = report.removed.steps,
                            attempts = report.removed.attempts,
                            hook_outbox = report.removed.hook_outbox,
                            batches = report.batches,
                            "pruned finished tasks"
                        );
                    }
                }
                Err(e) => {
                    t.errors += 1;
                    tracing::warn!(error = %e, "pruning failed; trying again next interval");
                }
            }
            drop(t);
            next = after(interval);
        }
    });
    (handle, out)
}
