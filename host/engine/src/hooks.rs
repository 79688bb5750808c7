//! Event hooks: the delivery loop that hands outbox rows to hook components.
//!
//! Events reach the outbox (`hook_outbox`) in the same transaction as the state change that
//! caused them (triggers in `migrations/0005_hooks.sql`). A [`HookDeliverer`] claims the head
//! of each (hook, task) queue under a lease, runs the hook through a [`HookRunner`] with
//! bounded concurrency, and records the outcome: delivered, retried after the hook's
//! backoff, or parked as dead after its `max_attempts`. It shares nothing with the step
//! worker but the database, so a failing or slow hook never fails, blocks or slows a
//! workflow. A delivery whose worker dies is claimed again when its lease expires
//! (at-least-once); the next event of the same (hook, task) waits until then (in order).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use futures::future::BoxFuture;
use serde_json::Value;
use tasker_core::clock::{Clock, SystemClock};
use tasker_store::{DeliveryState, HookDeliveryJob, HookDeliveryResult, Store, TaskId};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::component::ComponentError;

/// Delivers one event to one hook component. Implemented with the sandbox in
/// `tasker-runtime`. Every way the hook can fail (trap, timeout, out of fuel, its own error)
/// is `Err`.
pub trait HookRunner: Send + Sync + 'static {
    fn deliver<'a>(&'a self, job: &'a HookDeliveryJob)
    -> BoxFuture<'a, Result<(), ComponentError>>;
}

/// How a delivery loop behaves.
#[derive(Debug, Clone)]
pub struct DeliveryConfig {
    pub id: String,
    /// Hook calls running at once per loop (separate from step concurrency).
    pub concurrency: usize,
    /// Most deliveries per claim.
    pub batch: usize,
    /// Independent claim-run-record loops: a slow hook holds up only its own loop's round.
    pub loops: usize,
    /// A delivery's lease; a crashed loop's deliveries are retried after it.
    pub lease: Duration,
    /// Idle poll interval.
    pub poll_every: Duration,
    /// Backstop on one hook call beyond its sandbox limits.
    pub call_timeout: Duration,
    /// Deliver only this task's events (the deliverer of a worker scoped to its task, as
    /// `tasker run` starts): other tasks' hooks are left to other deliverers.
    pub only_task: Option<TaskId>,
}

impl Default for DeliveryConfig {
    fn default() -> Self {
        DeliveryConfig {
            id: format!("hooks-{}", std::process::id()),
            concurrency: 16,
            batch: 32,
            loops: 2,
            lease: Duration::from_secs(60),
            poll_every: Duration::from_millis(100),
            call_timeout: Duration::from_secs(30),
            only_task: None,
        }
    }
}

/// Counters of one delivery loop.
#[derive(Debug, Default)]
pub struct DeliveryStats {
    pub delivered: AtomicU64,
    pub failed: AtomicU64,
    pub dead: AtomicU64,
    /// Outcomes refused because the lease was lost meanwhile.
    pub lease_lost: AtomicU64,
}

/// Claims, runs and records hook deliveries until stopped.
pub struct HookDeliverer<S: Store> {
    store: Arc<S>,
    runner: Arc<dyn HookRunner>,
    clock: Arc<dyn Clock>,
    cfg: DeliveryConfig,
    stats: Arc<DeliveryStats>,
}

/// The event as a hook sees it (also the JSON form used by tests and docs).
pub fn event_json(job: &HookDeliveryJob) -> Value {
    serde_json::json!({
        "name": job.event_name,
        "task_id": job.task_id,
        "step_id": job.step_id,
        "step_name": job.step_name,
        "timestamp_ms": job.event_at.timestamp_millis(),
        "attempt": job.attempt,
        "payload": job.payload,
    })
}

impl<S: Store + 'static> HookDeliverer<S> {
    pub fn new(store: Arc<S>, runner: Arc<dyn HookRunner>, cfg: DeliveryConfig) -> Arc<Self> {
        Self::with_clock(store, runner, cfg, Arc::new(SystemClock))
    }

    pub fn with_clock(
        store: Arc<S>,
        runner: Arc<dyn HookRunner>,
        cfg: DeliveryConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Arc::new(HookDeliverer {
            store,
            runner,
            clock,
            cfg,
            stats: Arc::new(DeliveryStats::default()),
        })
    }

    pub fn stats(&self) -> Arc<DeliveryStats> {
        self.stats.clone()
    }

    /// One claim-run-record round over at most `batch` deliveries; returns how many ran.
    /// Runs them concurrently (bounded by `concurrency`) and waits for all of them.
    pub async fn deliver_once(&self) -> Result<usize, tasker_store::StoreError> {
        let now = self.clock.now();
        let limit = u32::try_from(self.cfg.batch.max(1)).unwrap_or(u32::MAX);
        let jobs = match self.cfg.only_task {
            None => {
                self.store
                    .claim_hook_deliveries(&self.cfg.id, limit, self.cfg.lease, now)
                    .await?
            }
            Some(task) => {
                self.store
                    .claim_hook_deliveries_of_task(task, &self.cfg.id, limit, self.cfg.lease, now)
                    .await?
            }
        };
        if jobs.is_empty() {
            return Ok(0);
        }
        let sem = Semaphore::new(self.cfg.concurrency.max(1));
        let calls = jobs.iter().map(|job| {
            let sem = &sem;
            async move {
                let _permit = sem.acquire().await.expect("semaphore open");
                let outcome =
                    match tokio::time::timeout(self.cfg.call_timeout, self.runner.deliver(job))
                        .await
                    {
                        Ok(r) => r,
                        Err(_) => Err(ComponentError::NoAnswer(self.cfg.call_timeout)),
                    };
                HookDeliveryResult {
                    delivery_id: job.delivery_id,
                    token: job.token,
                    // A hook's own error text, storable (see `record::to_record`).
                    error: outcome
                        .err()
                        .map(|e| tasker_core::text::storable(&e.to_string()).into_owned()),
                }
            }
        });
        let results = futures::future::join_all(calls).await;
        let recs = self
            .store
            .finish_hook_deliveries(&results, self.clock.now())
            .await?;
        let finished = self.clock.now();
        for ((job, res), rec) in jobs.iter().zip(&results).zip(&recs) {
            if rec.accepted && res.error.is_none() {
                let lag = (finished - job.event_at)
                    .num_microseconds()
                    .unwrap_or(i64::MAX);
                metrics::histogram!(tasker_core::metrics::HOOK_LAG).record(lag.max(0) as f64 / 1e6);
            }
            let outcome = if !rec.accepted {
                self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                "lease_lost"
            } else if res.error.is_none() {
                self.stats.delivered.fetch_add(1, Ordering::Relaxed);
                "delivered"
            } else if rec.state == Some(DeliveryState::Dead) {
                self.stats.dead.fetch_add(1, Ordering::Relaxed);
                tracing::warn!(
                    hook = %job.component,
                    task_id = job.task_id.get(),
                    event = %job.event_name,
                    error = res.error.as_deref().unwrap_or(""),
                    "hook delivery dead after {} attempts",
                    job.delivery_no
                );
                "dead"
            } else {
                self.stats.failed.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(hook = %job.component, error = res.error.as_deref().unwrap_or(""), "hook delivery failed; will retry");
                "failed"
            };
            metrics::counter!(tasker_core::metrics::HOOK_DELIVERIES, "outcome" => outcome)
                .increment(1);
        }
        Ok(jobs.len())
    }

    /// Deliver until `stop` is cancelled, with `loops` loops sharing the outbox (SKIP
    /// LOCKED). Rounds follow each other at once while work exists; idle, a loop polls
    /// every `poll_every`.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) {
        let loops: Vec<_> = (0..self.cfg.loops.max(1))
            .map(|_| tokio::spawn(self.clone().run_loop(stop.clone())))
            .collect();
        for l in loops {
            let _ = l.await;
        }
    }

    async fn run_loop(self: Arc<Self>, stop: CancellationToken) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            let pause = match self.deliver_once().await {
                Ok(n) if n > 0 => {
                    failures = 0;
                    continue;
                }
                Ok(_) => {
                    failures = 0;
                    self.cfg.poll_every
                }
                Err(e) => {
                    failures += 1;
                    let p = Duration::from_millis(50 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, retry_in = ?p, "hook delivery round failed");
                    p
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(pause) => {}
                _ = stop.cancelled() => break,
            }
        }
    }
}
