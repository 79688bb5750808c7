//! The scheduler loop (docs/schedules.md): any worker, server or dev process may run one,
//! every one polls `Store::fire_due` on its clock. The store makes each instant fire once
//! however many loops race (one transaction per call, the instant the task's identity key),
//! so the loop holds no state: a process that dies loses nothing another one, or its own
//! restart, does not pick up.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use tasker_core::clock::Clock;
use tasker_store::Store;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

/// How often a scheduler asks, by default: well within `schedule::DEFAULT_GRACE`, so an
/// instant is fired on time under `skip` by any one live scheduler.
pub const DEFAULT_POLL: Duration = Duration::from_secs(5);

/// Schedules fired per store call (more are fired by the next call at once).
pub const BATCH: u32 = 100;

/// How a node runs its scheduler.
#[derive(Debug, Clone, Copy)]
pub struct SchedulerConfig {
    /// Wall time between calls when nothing was due.
    pub poll: Duration,
    pub batch: u32,
}

impl Default for SchedulerConfig {
    fn default() -> Self {
        SchedulerConfig {
            poll: DEFAULT_POLL,
            batch: BATCH,
        }
    }
}

/// What a scheduler loop has done so far.
#[derive(Debug, Default)]
pub struct SchedulerStats {
    inner: Mutex<SchedulerTotals>,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct SchedulerTotals {
    /// Calls of `fire_due` that answered.
    pub ticks: u64,
    /// Tasks this loop created (an instant another scheduler had created is not counted).
    pub created: u64,
    /// Instants passed over by the missed policy.
    pub missed: u64,
    /// Instants whose task could not be created, and failed calls (logged).
    pub errors: u64,
}

impl SchedulerStats {
    pub fn totals(&self) -> SchedulerTotals {
        *self.inner.lock().expect("scheduler stats")
    }
}

/// Starts the loop: a call at once, then one every `poll` (at once again while a full batch
/// came back). Stops with `stop` (after the call in flight, if any, finishes).
pub fn spawn_scheduler<S: Store + 'static>(
    store: Arc<S>,
    cfg: SchedulerConfig,
    clock: Arc<dyn Clock>,
    stop: CancellationToken,
) -> (JoinHandle<()>, Arc<SchedulerStats>) {
    let stats = Arc::new(SchedulerStats::default());
    let out = stats.clone();
    let poll = cfg.poll.max(Duration::from_millis(1));
    let batch = cfg.batch.clamp(1, tasker_store::MAX_FIRE_BATCH);
    let handle = tokio::spawn(async move {
        loop {
            if stop.is_cancelled() {
                return;
            }
            // Not cancelled half-way: a store call dropped mid-transaction can leave the
            // embedded store's one write connection inside it. A stop waits for this call.
            let result = store.fire_due(clock.now(), batch).await;
            let mut again = false;
            {
                let mut t = stats.inner.lock().expect("scheduler stats");
                match result {
                    Ok(fired) => {
                        t.ticks += 1;
                        again = fired.len() >= batch as usize;
                        for f in &fired {
                            t.missed += u64::from(f.missed);
                            if let Some(e) = &f.error {
                                t.errors += 1;
                                tracing::warn!(schedule = %f.name, instant = ?f.instant, error = %e,
                                    "a schedule's task could not be created");
                            } else if f.created {
                                t.created += 1;
                                tracing::info!(schedule = %f.name, instant = ?f.instant,
                                    task = ?f.task_id, "schedule fired");
                            }
                            if f.missed > 0 {
                                tracing::info!(schedule = %f.name, missed = f.missed,
                                    policy_fired = ?f.instant, "schedule missed instants");
                            }
                        }
                    }
                    Err(e) => {
                        t.errors += 1;
                        tracing::warn!(error = %e, "firing schedules failed; trying again");
                    }
                }
            }
            if again {
                continue;
            }
            tokio::select! {
                _ = stop.cancelled() => return,
                _ = tokio::time::sleep(poll) => {}
            }
        }
    });
    (handle, out)
}
