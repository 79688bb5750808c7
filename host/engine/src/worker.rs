//! A worker: claims ready steps in batches, runs them concurrently, records outcomes in
//! batches, heartbeats its leases and sweeps expired ones.
//!
//! Throughput never depends on the poll interval: while work exists the claim loop claims again
//! at once, and a completion that releases children wakes it locally. Other processes wake it
//! through [`Worker::wake_handle`] (fed by PostgreSQL LISTEN); the poll interval is only a
//! fallback. No transaction is held
//! while a step runs: claim and record are separate, short calls.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use chrono::{DateTime, Utc};
use tasker_core::clock::{Clock, SystemClock};
use tasker_core::events;
use tasker_core::template::Template;
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::Instrument;

use tasker_store::{
    ClaimedStep, Lease, StepCompletion, StepFailure, StepId, Store, StoreError, TaskId,
};

use crate::event::{Event, EventBus};
use crate::executor::{Execution, Executor, Outcome};
use crate::policy::{self, Policies};
use crate::record::{self, Record};
use crate::telemetry::{StepMetrics, StepMetricsCache};
use crate::traces;

/// How a worker behaves.
#[derive(Debug, Clone)]
pub struct WorkerConfig {
    /// Unique per process; recorded on attempts and leases.
    pub id: String,
    /// Steps running at once.
    pub concurrency: usize,
    /// Most steps per claim call. (The claim the recorder makes with a batch of
    /// completions may take as many steps as that batch frees slots.)
    pub claim_batch: usize,
    /// Most outcomes per complete / fail call.
    pub record_batch: usize,
    /// How long a claim is ours without a heartbeat.
    pub lease: Duration,
    pub heartbeat_every: Duration,
    /// How often expired leases (of any worker) are taken back.
    pub sweep_every: Duration,
    /// Fallback wake-up when no notification arrives.
    pub poll_every: Duration,
    /// On shutdown, how long running steps may take before their leases are released.
    pub shutdown_grace: Duration,
    /// Claim only this task's steps (`tasker run` on a shared database leaves every other
    /// task to other workers); `None`: any ready step.
    pub only_task: Option<TaskId>,
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            id: format!("worker-{}", std::process::id()),
            concurrency: 64,
            claim_batch: 64,
            record_batch: 256,
            lease: Duration::from_secs(30),
            heartbeat_every: Duration::from_secs(10),
            sweep_every: Duration::from_secs(5),
            poll_every: Duration::from_millis(500),
            shutdown_grace: Duration::from_secs(30),
            only_task: None,
        }
    }
}

/// Counters of one worker's run.
#[derive(Debug, Default)]
pub struct WorkerStats {
    pub claimed: AtomicU64,
    pub completed: AtomicU64,
    /// Failed attempts, retried or not.
    pub failed: AtomicU64,
    /// Failed attempts whose step was scheduled for another attempt.
    pub retried: AtomicU64,
    /// Outcomes refused because the lease was lost (counted apart from handler errors).
    pub lease_lost: AtomicU64,
    /// Expired leases of any worker that this worker's sweeper took back.
    pub swept: AtomicU64,
}

/// A snapshot of [`WorkerStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerTotals {
    pub claimed: u64,
    pub completed: u64,
    /// Failed attempts, retried or not.
    pub failed: u64,
    /// Failed attempts whose step was scheduled for another attempt.
    pub retried: u64,
    pub lease_lost: u64,
    pub swept: u64,
}

impl WorkerStats {
    pub fn totals(&self) -> WorkerTotals {
        WorkerTotals {
            claimed: self.claimed.load(Ordering::Relaxed),
            completed: self.completed.load(Ordering::Relaxed),
            failed: self.failed.load(Ordering::Relaxed),
            retried: self.retried.load(Ordering::Relaxed),
            lease_lost: self.lease_lost.load(Ordering::Relaxed),
            swept: self.swept.load(Ordering::Relaxed),
        }
    }
}

/// Templates by key: a claimed step's retry policy without a query per step.
#[derive(Debug, Default)]
pub(crate) struct TemplateCache(Mutex<HashMap<String, Arc<Template>>>);

impl TemplateCache {
    pub(crate) async fn get<S: Store>(&self, store: &S, key: &str) -> Option<Arc<Template>> {
        if let Some(t) = self.0.lock().expect("template cache").get(key) {
            return Some(t.clone());
        }
        match store.template(key).await {
            Ok(Some(t)) => {
                let t = Arc::new(t);
                self.0
                    .lock()
                    .expect("template cache")
                    .insert(key.to_owned(), t.clone());
                Some(t)
            }
            Ok(None) => {
                tracing::warn!(
                    template = key,
                    "template not found; using default retry rules"
                );
                None
            }
            Err(e) => {
                tracing::warn!(template = key, error = %e, "cannot load template; using default retry rules");
                None
            }
        }
    }
}

/// One worker. Build it, then [`Worker::run`] until the token is cancelled.
pub struct Worker<S: Store, E: Executor> {
    store: Arc<S>,
    executor: Arc<E>,
    bus: EventBus,
    clock: Arc<dyn Clock>,
    cfg: WorkerConfig,
    stats: Arc<WorkerStats>,
    templates: TemplateCache,
    /// Retry policy components and the host's limits on them.
    policies: Policies,
    /// Leases held: step id -> token.
    held: Mutex<HashMap<StepId, i64>>,
    /// Pokes the claim loop when work may be ready.
    wake: Arc<Notify>,
    /// Earliest retry instant this worker has scheduled, to wake for it without polling.
    next_due: Mutex<Option<DateTime<Utc>>>,
    /// Metric handles per (template, step).
    step_metrics: StepMetricsCache,
    /// Trace parents of the tasks whose steps ran here (used only with a tracer).
    trace_parents: traces::ParentCache,
}

/// What an attempt's span says about how it went.
fn record_attempt(span: &tracing::Span, exec: &Execution) {
    let a = &exec.accounting;
    if let Some(h) = &a.plugin_hash {
        span.record("plugin_hash", h.as_str());
    }
    let int = |v: u64| i64::try_from(v).unwrap_or(i64::MAX);
    if let Some(f) = a.fuel {
        span.record("fuel", int(f));
    }
    if let Some(m) = a.peak_memory_bytes {
        span.record("peak_memory_bytes", int(m));
    }
    match &exec.outcome {
        Outcome::Success { .. } => {
            span.record("outcome", "completed");
        }
        Outcome::Failure { kind, .. } => {
            span.record("outcome", "failed");
            span.record("error_kind", kind.as_str());
            span.record("otel.status_code", "error");
        }
    }
}

struct Finished {
    job: ClaimedStep,
    exec: Execution,
    /// The step's metric handles, looked up once when it started.
    metrics: Arc<StepMetrics>,
    /// Its concurrency slot: freed once the outcome is recorded, or handed to a step the
    /// recorder claims in the same call.
    permit: OwnedSemaphorePermit,
}

/// What the recorder needs to start the steps it claims along with its completions.
struct Relay {
    sem: Arc<Semaphore>,
    /// Weak, so that the recorder alone never keeps the channel (and itself) alive.
    tx: mpsc::WeakUnboundedSender<Finished>,
    stop: CancellationToken,
}

impl<S: Store + 'static, E: Executor> Worker<S, E> {
    pub fn new(store: Arc<S>, executor: Arc<E>, bus: EventBus, cfg: WorkerConfig) -> Arc<Self> {
        Self::with_clock(store, executor, bus, cfg, Arc::new(SystemClock))
    }

    pub fn with_clock(
        store: Arc<S>,
        executor: Arc<E>,
        bus: EventBus,
        cfg: WorkerConfig,
        clock: Arc<dyn Clock>,
    ) -> Arc<Self> {
        Self::with_policies(store, executor, bus, cfg, clock, Policies::default())
    }

    /// A worker whose steps' `retry_policy` components are asked through `policies`.
    pub fn with_policies(
        store: Arc<S>,
        executor: Arc<E>,
        bus: EventBus,
        cfg: WorkerConfig,
        clock: Arc<dyn Clock>,
        policies: Policies,
    ) -> Arc<Self> {
        Arc::new(Worker {
            store,
            executor,
            bus,
            clock,
            cfg,
            stats: Arc::new(WorkerStats::default()),
            templates: TemplateCache::default(),
            policies,
            held: Mutex::new(HashMap::new()),
            wake: Arc::new(Notify::new()),
            next_due: Mutex::new(None),
            step_metrics: StepMetricsCache::default(),
            trace_parents: traces::ParentCache::default(),
        })
    }

    /// Notify this to make the worker claim at once (e.g. on a NOTIFY from another process).
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    pub fn stats(&self) -> Arc<WorkerStats> {
        self.stats.clone()
    }

    pub fn config(&self) -> &WorkerConfig {
        &self.cfg
    }

    /// Runs until `stop` is cancelled, then finishes or releases what it holds.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> WorkerTotals {
        let sem = Arc::new(Semaphore::new(self.cfg.concurrency.max(1)));
        let (tx, rx) = mpsc::unbounded_channel::<Finished>();
        // Background loops stop with `bg`, after the claim loop and the recorder are done.
        let bg = CancellationToken::new();
        let heartbeat = tokio::spawn(self.clone().heartbeat_loop(bg.clone()));
        let sweeper = tokio::spawn(self.clone().sweep_loop(bg.clone()));
        let relay = Relay {
            sem: sem.clone(),
            tx: tx.downgrade(),
            stop: stop.clone(),
        };
        let recorder = tokio::spawn(self.clone().record_loop(rx, relay));

        self.claim_loop(&sem, &tx, &stop).await;
        drop(tx);

        // Let running steps finish within the grace period; the recorder ends once every
        // step's sender is gone.
        let max = u32::try_from(self.cfg.concurrency.max(1)).unwrap_or(u32::MAX);
        let drained = tokio::time::timeout(self.cfg.shutdown_grace, sem.acquire_many(max)).await;
        if drained.is_err() {
            let leases = self.held_leases();
            tracing::warn!(
                steps = leases.len(),
                "shutdown grace expired; releasing leases of running steps"
            );
            if let Err(e) = self
                .store
                .release(&self.cfg.id, &leases, self.clock.now())
                .await
            {
                tracing::error!(error = %e, "could not release leases; they will expire");
            }
        } else {
            let _ = recorder.await;
        }
        bg.cancel();
        let _ = tokio::join!(heartbeat, sweeper);
        self.stats.totals()
    }

    async fn claim_loop(
        self: &Arc<Self>,
        sem: &Arc<Semaphore>,
        tx: &mpsc::UnboundedSender<Finished>,
        stop: &CancellationToken,
    ) {
        let mut failures = 0u32;
        while !stop.is_cancelled() {
            // Wait for a free slot, then take as many as are free (up to a batch).
            let first = tokio::select! {
                p = sem.clone().acquire_owned() => p.expect("semaphore open"),
                _ = stop.cancelled() => break,
            };
            let extra = sem
                .available_permits()
                .min(self.cfg.claim_batch.saturating_sub(1));
            let mut permits = first;
            if extra > 0
                && let Ok(more) = sem.clone().try_acquire_many_owned(extra as u32)
            {
                permits.merge(more);
            }
            let want = permits.num_permits();
            let now = self.clock.now();
            let limit = u32::try_from(want).unwrap_or(u32::MAX);
            let claimed = match self.cfg.only_task {
                None => {
                    self.store
                        .claim(&self.cfg.id, limit, self.cfg.lease, now)
                        .await
                }
                Some(task) => {
                    self.store
                        .claim_of_task(task, &self.cfg.id, limit, self.cfg.lease, now)
                        .await
                }
            };
            let jobs = match claimed {
                Ok(jobs) => {
                    failures = 0;
                    jobs
                }
                Err(e) => {
                    drop(permits);
                    failures += 1;
                    let pause = Duration::from_millis(50 * 2u64.pow(failures.min(6)));
                    tracing::warn!(error = %e, retry_in = ?pause, "claim failed");
                    tokio::select! {
                        _ = tokio::time::sleep(pause) => {}
                        _ = stop.cancelled() => break,
                    }
                    continue;
                }
            };
            let got = jobs.len();
            self.start_jobs(jobs, &mut permits, tx, now);
            drop(permits);
            // Idle: a retry another worker scheduled may fall due before the next poll. (Not
            // for a worker scoped to its task: the instant may be another task's, and its own
            // retries it learns when it records them.)
            if got == 0
                && self.cfg.only_task.is_none()
                && let Ok(Some(t)) = self.store.next_ready_at().await
            {
                self.note_due(t);
            }
            if got < want {
                // The queue looked empty: sleep until woken, a retry falls due, or the poll.
                let wait = self.idle_wait();
                tokio::select! {
                    _ = self.wake.notified() => {}
                    _ = tokio::time::sleep(wait) => {}
                    _ = stop.cancelled() => break,
                }
            }
        }
    }

    /// Takes claimed steps on: holds their leases, publishes their claim, and runs each on
    /// one of `permits`.
    fn start_jobs(
        self: &Arc<Self>,
        jobs: Vec<ClaimedStep>,
        permits: &mut OwnedSemaphorePermit,
        tx: &mpsc::UnboundedSender<Finished>,
        now: DateTime<Utc>,
    ) {
        self.stats
            .claimed
            .fetch_add(jobs.len() as u64, Ordering::Relaxed);
        for job in jobs {
            let permit = permits.split(1).expect("one permit per claimed step");
            self.held
                .lock()
                .expect("held leases")
                .insert(job.step_id, job.token);
            if job.task_started {
                self.bus
                    .publish(Event::task(events::TASK_STARTED, now, job.task_id));
            }
            self.bus.publish(Event::step(
                events::STEP_CLAIMED,
                now,
                job.task_id,
                job.step_id,
                &job.step_name,
                job.attempt as i32,
            ));
            tokio::spawn(self.clone().run_step(job, permit, tx.clone()));
        }
    }

    /// Remembers the earliest instant a step becomes claimable.
    fn note_due(&self, t: DateTime<Utc>) {
        let mut due = self.next_due.lock().expect("next due");
        if due.is_none_or(|d| t < d) {
            *due = Some(t);
        }
    }

    fn idle_wait(&self) -> Duration {
        let mut due = self.next_due.lock().expect("next due");
        let now = self.clock.now();
        match *due {
            Some(t) if t <= now => {
                *due = None;
                // Claimable rows may still be locked by another claim: don't spin.
                Duration::from_millis(1)
            }
            Some(t) => (t - now)
                .to_std()
                .unwrap_or(Duration::ZERO)
                .min(self.cfg.poll_every),
            None => self.cfg.poll_every,
        }
    }

    async fn run_step(
        self: Arc<Self>,
        job: ClaimedStep,
        permit: OwnedSemaphorePermit,
        tx: mpsc::UnboundedSender<Finished>,
    ) {
        // One span per attempt, in the task's trace (see `traces`); what it cost and how it
        // ended are recorded when it returns.
        let span = tracing::info_span!(
            target: traces::TARGET,
            "step",
            otel.name = "step.attempt",
            task_id = job.task_id.get(),
            step_id = job.step_id.get(),
            template = %job.template_key,
            step = %job.step_name,
            // Integers as i64: the OpenTelemetry layer exports u64 fields as text.
            attempt = i64::from(job.attempt),
            handler = %job.handler,
            worker = %self.cfg.id,
            plugin_hash = tracing::field::Empty,
            fuel = tracing::field::Empty,
            peak_memory_bytes = tracing::field::Empty,
            outcome = tracing::field::Empty,
            error_kind = tracing::field::Empty,
            otel.status_code = tracing::field::Empty,
        );
        if let Some(t) = traces::tracer()
            && let Some(parent) = self.trace_parents.get(&*self.store, job.task_id).await
        {
            t.set_parent(&span, &parent);
        }
        self.bus.publish(Event::step(
            events::STEP_STARTED,
            self.clock.now(),
            job.task_id,
            job.step_id,
            &job.step_name,
            job.attempt as i32,
        ));
        let sm = self.step_metrics.get(&job);
        sm.started();
        let started = std::time::Instant::now();
        let exec = crate::executor::execute_claimed(&*self.executor, &job)
            .instrument(span.clone())
            .await;
        let ok = matches!(exec.outcome, Outcome::Success { .. });
        if !span.is_disabled() {
            record_attempt(&span, &exec);
        }
        drop(span);
        sm.ran(started.elapsed().as_secs_f64(), ok, &exec.accounting);
        let _ = tx.send(Finished {
            job,
            exec,
            metrics: sm,
            permit,
        });
    }

    async fn record_loop(self: Arc<Self>, mut rx: mpsc::UnboundedReceiver<Finished>, relay: Relay) {
        let mut buf = Vec::with_capacity(self.cfg.record_batch);
        while rx.recv_many(&mut buf, self.cfg.record_batch).await > 0 {
            let batch = std::mem::take(&mut buf);
            self.record_batch(batch, &relay).await;
        }
    }

    async fn record_batch(self: &Arc<Self>, batch: Vec<Finished>, relay: &Relay) {
        // The batch's slots, all in one: the steps claimed along with the completions run on
        // them, and the rest are freed when this returns.
        let mut slots: Option<OwnedSemaphorePermit> = None;
        let mut step_metrics = Vec::with_capacity(batch.len());
        let batch: Vec<(ClaimedStep, Execution)> = batch
            .into_iter()
            .map(|f| {
                match slots.as_mut() {
                    Some(s) => s.merge(f.permit),
                    None => slots = Some(f.permit),
                }
                step_metrics.push(f.metrics);
                (f.job, f.exec)
            })
            .collect();
        let mut done: Vec<(usize, StepCompletion)> = Vec::new();
        let mut failed: Vec<(usize, StepFailure)> = Vec::new();
        let mut failed_templates = Vec::new();
        for (i, (job, exec)) in batch.iter().enumerate() {
            let template = self.templates.get(&*self.store, &job.template_key).await;
            match record::to_record(job, exec, template.as_deref()) {
                Record::Done(d) => done.push((i, d)),
                Record::Failed(x) => {
                    failed.push((i, x));
                    failed_templates.push(template);
                }
            }
        }
        let now = self.clock.now();
        let mut released_children = false;
        // A failure made its step claimable at once.
        let mut retry_now = false;
        // Some(true): the claim made with the completions took all it asked for, so more
        // steps may be ready; Some(false): it left nothing claimable.
        let mut claim_full = None;
        let mut ends = record::TaskEnds::default();
        if !done.is_empty() {
            let items: Vec<StepCompletion> = done.iter().map(|(_, d)| d.clone()).collect();
            let events: Vec<_> = done
                .iter()
                .flat_map(|(i, _)| record::custom_records(&batch[*i].0, &batch[*i].1))
                .collect();
            let mut claimed = None;
            // Not once stopping: shutdown finishes what it holds and takes nothing new.
            let tx = if relay.stop.is_cancelled() {
                None
            } else {
                relay.tx.upgrade()
            };
            let mut recs = None;
            if let (Some(tx), Some(slots)) = (&tx, slots.as_mut()) {
                // All the slots this batch frees, topped up with free ones to a claim batch:
                // one call refills what the batch emptied.
                let extra = relay
                    .sem
                    .available_permits()
                    .min(self.cfg.claim_batch.saturating_sub(slots.num_permits()));
                if extra > 0
                    && let Ok(more) = relay.sem.clone().try_acquire_many_owned(extra as u32)
                {
                    slots.merge(more);
                }
                let limit = slots.num_permits();
                let claim_limit = u32::try_from(limit).unwrap_or(u32::MAX);
                let hop = match self.cfg.only_task {
                    None => {
                        self.store
                            .complete_and_claim(
                                &items,
                                &events,
                                &self.cfg.id,
                                claim_limit,
                                self.cfg.lease,
                                now,
                            )
                            .await
                    }
                    Some(task) => {
                        self.store
                            .complete_and_claim_of_task(
                                &items,
                                &events,
                                task,
                                &self.cfg.id,
                                claim_limit,
                                self.cfg.lease,
                                now,
                            )
                            .await
                    }
                };
                match hop {
                    Ok((outcomes, jobs)) => {
                        recs = Some(outcomes);
                        claim_full = Some(jobs.len() >= limit);
                        claimed = Some((jobs, tx));
                    }
                    // Its transaction rolled back: record alone, as without it, and leave
                    // the claiming to the claim loop.
                    Err(e) => tracing::warn!(error = %e, "complete and claim failed"),
                }
            }
            if recs.is_none() {
                recs = self
                    .retrying("complete", || {
                        self.store.complete_with_events(&items, &events, now)
                    })
                    .await;
            }
            if let Some(recs) = recs {
                for ((i, _), rec) in done.iter().zip(&recs) {
                    let (job, exec) = &batch[*i];
                    record::publish_custom(&self.bus, now, job, exec);
                    record::publish_completed(&self.bus, now, job, rec, &mut ends);
                    if rec.refusal.is_some() {
                        self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                    } else {
                        step_metrics[*i].completed();
                        self.stats.completed.fetch_add(1, Ordering::Relaxed);
                        released_children = true;
                    }
                }
            }
            // Their leases are over; then the new ones start (a step can come back with a
            // new token).
            self.drop_leases(done.iter().map(|(i, _)| &batch[*i].0));
            if let (Some((jobs, tx)), Some(slots)) = (claimed, slots.as_mut()) {
                self.start_jobs(jobs, slots, tx, now);
            }
        }
        if !failed.is_empty() {
            let mut items: Vec<StepFailure> = failed.iter().map(|(_, x)| x.clone()).collect();
            let steps: Vec<_> = failed
                .iter()
                .zip(&failed_templates)
                .map(|((i, _), t)| {
                    let job = &batch[*i].0;
                    (job, t.as_deref().and_then(|t| t.step(&job.step_name)))
                })
                .collect();
            let decisions =
                policy::decide_failures(&*self.store, &self.policies, &steps, &mut items, now)
                    .await;
            let events: Vec<_> = failed
                .iter()
                .flat_map(|(i, _)| record::custom_records(&batch[*i].0, &batch[*i].1))
                .collect();
            if let Some(recs) = self
                .retrying("fail", || {
                    self.store.fail_decided(&items, &decisions, &events, now)
                })
                .await
            {
                for (((i, _), x), rec) in failed.iter().zip(&items).zip(&recs) {
                    let (job, exec) = &batch[*i];
                    record::publish_custom(&self.bus, now, job, exec);
                    record::publish_failed(&self.bus, now, job, x, rec, &mut ends);
                    if rec.refusal.is_some() {
                        self.stats.lease_lost.fetch_add(1, Ordering::Relaxed);
                    } else {
                        step_metrics[*i].failed(x.error_kind, rec.decision);
                        self.stats.failed.fetch_add(1, Ordering::Relaxed);
                        if rec.decision == Some(tasker_store::RetryDecision::Retry) {
                            self.stats.retried.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                    if let Some(t) = rec.next_ready_at {
                        self.note_due(t);
                        retry_now |= t <= now;
                    }
                }
            }
            self.drop_leases(failed.iter().map(|(i, _)| &batch[*i].0));
        }
        ends.publish(&self.bus, now);
        // Children were released: claim them, unless the claim above already took every
        // claimable step (it ran before the failures, whose retries may be due at once).
        if claim_full.unwrap_or(released_children) || retry_now {
            self.wake.notify_one();
        }
        // Dropping `slots` frees the concurrency permits not handed on.
    }

    /// Forgets the leases of these claims (a lease since renewed under a new token stays).
    fn drop_leases<'a>(&self, jobs: impl Iterator<Item = &'a ClaimedStep>) {
        let mut held = self.held.lock().expect("held leases");
        for job in jobs {
            if held.get(&job.step_id) == Some(&job.token) {
                held.remove(&job.step_id);
            }
        }
    }

    /// Retries a store call that failed retryably until the lease would be gone anyway; the
    /// steps are then recovered by the lease sweeper.
    async fn retrying<T, F, Fut>(&self, what: &str, mut call: F) -> Option<T>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, StoreError>>,
    {
        let deadline = tokio::time::Instant::now() + self.cfg.lease;
        let mut pause = Duration::from_millis(20);
        loop {
            match call().await {
                Ok(v) => return Some(v),
                Err(e) if e.is_retryable() && tokio::time::Instant::now() + pause < deadline => {
                    tracing::warn!(error = %e, call = what, "store call failed; retrying");
                    tokio::time::sleep(pause).await;
                    pause = (pause * 2).min(Duration::from_secs(2));
                }
                Err(e) => {
                    tracing::error!(error = %e, call = what, "store call failed; leases will expire and the steps rerun");
                    return None;
                }
            }
        }
    }

    fn held_leases(&self) -> Vec<Lease> {
        self.held
            .lock()
            .expect("held leases")
            .iter()
            .map(|(s, t)| Lease {
                step_id: *s,
                token: *t,
            })
            .collect()
    }

    async fn heartbeat_loop(self: Arc<Self>, bg: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.heartbeat_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = bg.cancelled() => return,
            }
            let leases = self.held_leases();
            if leases.is_empty() {
                continue;
            }
            match self
                .store
                .heartbeat(&self.cfg.id, &leases, self.cfg.lease, self.clock.now())
                .await
            {
                Ok(outcomes) => {
                    // A step recorded while the heartbeat was on its way is refused too, and
                    // one whose result is being recorded right now may be: a refusal is only
                    // a hint (debug). A real loss shows when its result is refused
                    // (`step.lease_lost`, counted and published).
                    let held = self.held.lock().expect("held leases");
                    let lost: Vec<StepId> = outcomes
                        .iter()
                        .zip(&leases)
                        .filter(|(o, l)| {
                            o.lease_expires_at.is_none() && held.get(&l.step_id) == Some(&l.token)
                        })
                        .map(|(o, _)| o.step_id)
                        .collect();
                    drop(held);
                    if !lost.is_empty() {
                        tracing::debug!(steps = ?lost, "heartbeat refused: these leases may be lost");
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }

    async fn sweep_loop(self: Arc<Self>, bg: CancellationToken) {
        let mut tick = tokio::time::interval(self.cfg.sweep_every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = bg.cancelled() => return,
            }
            let now = self.clock.now();
            match self.store.expire_leases(now, 1000).await {
                Ok(expired) if !expired.is_empty() => {
                    self.stats
                        .swept
                        .fetch_add(expired.len() as u64, Ordering::Relaxed);
                    for x in &expired {
                        record::publish_expired(&self.bus, now, x);
                    }
                    self.wake.notify_one();
                }
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "lease sweep failed"),
            }
            // Concurrency lines: delayed tasks whose time has come (`tasker_core::concurrency`).
            match self.store.admit_waiting(now).await {
                Ok(0) => {}
                Ok(_) => self.wake.notify_one(),
                Err(e) => tracing::warn!(error = %e, "concurrency admission failed"),
            }
        }
    }
}
