//! One node: a worker with its hook deliverer, retry policies, (on PostgreSQL) its LISTEN
//! wake-up and optionally the retention pruner and the scheduler loop, started and stopped
//! together.

use std::sync::Arc;

use sqlx::PgPool;
use tasker_core::clock::{Clock, SystemClock};
use tasker_engine::worker::WorkerStats;
use tasker_engine::{
    DeliveryConfig, EventBus, Executor, HookDeliverer, HookRunner, Policies, Worker, WorkerConfig,
    WorkerTotals,
};
use tasker_sandbox::Sandbox;
use tasker_store::{AnyStore, Store};
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::prune::{PrunerConfig, PrunerStats, spawn_pruner};
use crate::scheduler::{SchedulerConfig, SchedulerStats, spawn_scheduler};
use crate::{WasmExecutor, WasmHookRunner, policies};

/// What a node runs, before it starts. Built with [`Node::wasm`] (production) or
/// [`Node::new`] (any executor, no hooks), then adjusted with the `with_*` methods.
pub struct Node<S: Store, E: Executor> {
    store: Arc<S>,
    executor: Arc<E>,
    worker: WorkerConfig,
    bus: EventBus,
    clock: Arc<dyn Clock>,
    policies: Policies,
    hooks: Option<Arc<dyn HookRunner>>,
    listen: Option<PgPool>,
    pruner: Option<PrunerConfig>,
    scheduler: Option<SchedulerConfig>,
}

impl Node<AnyStore, WasmExecutor> {
    /// The production wiring: steps, hooks and retry policies run in `sandbox`; on
    /// PostgreSQL a NOTIFY from another process wakes the worker (the embedded store's other
    /// writers are found by the worker's poll).
    pub fn wasm(store: Arc<AnyStore>, sandbox: &Sandbox, worker: WorkerConfig) -> Self {
        let listen = store.postgres().map(|pg| pg.pool().clone());
        Node {
            listen,
            ..Node::new(store, WasmExecutor::new(sandbox.clone()), worker)
                .with_policies(policies(sandbox))
                .with_hooks(Arc::new(WasmHookRunner::new(sandbox.clone())))
        }
    }
}

impl<S: Store + 'static, E: Executor> Node<S, E> {
    /// A worker alone: no hook deliverer, no policy components, no listener.
    pub fn new(store: Arc<S>, executor: E, worker: WorkerConfig) -> Self {
        Node {
            store,
            executor: Arc::new(executor),
            worker,
            bus: EventBus::default(),
            clock: Arc::new(SystemClock),
            policies: Policies::default(),
            hooks: None,
            listen: None,
            pruner: None,
            scheduler: None,
        }
    }

    /// The bus the worker publishes lifecycle events on (e.g. for a progress display).
    pub fn with_bus(mut self, bus: EventBus) -> Self {
        self.bus = bus;
        self
    }

    pub fn with_clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    pub fn with_policies(mut self, policies: Policies) -> Self {
        self.policies = policies;
        self
    }

    /// Deliver hook events beside the worker through `runner`.
    pub fn with_hooks(mut self, runner: Arc<dyn HookRunner>) -> Self {
        self.hooks = Some(runner);
        self
    }

    /// No hook deliverer: another process (or a later [`spawn_deliverer`]) delivers them.
    pub fn without_hooks(mut self) -> Self {
        self.hooks = None;
        self
    }

    /// Wake the worker on NOTIFYs of this PostgreSQL database.
    pub fn with_listener(mut self, pool: PgPool) -> Self {
        self.listen = Some(pool);
        self
    }

    /// Run the retention pruner beside the worker, on the node's clock (None: none).
    pub fn with_pruner(mut self, cfg: Option<PrunerConfig>) -> Self {
        self.pruner = cfg;
        self
    }

    /// Run the scheduler loop beside the worker, on the node's clock (None: none).
    pub fn with_scheduler(mut self, cfg: Option<SchedulerConfig>) -> Self {
        self.scheduler = cfg;
        self
    }

    pub fn worker_config(&self) -> &WorkerConfig {
        &self.worker
    }

    /// Start everything; it all stops when `stop` is cancelled (see [`RunningNode::join`]).
    pub fn start(self, stop: CancellationToken) -> RunningNode {
        let mut others = Vec::new();
        if let Some(runner) = self.hooks {
            others.push(spawn_deliverer(
                self.store.clone(),
                runner,
                &self.worker,
                stop.clone(),
            ));
        }
        let pruner = self.pruner.map(|cfg| {
            let (handle, stats) =
                spawn_pruner(self.store.clone(), cfg, self.clock.clone(), stop.clone());
            others.push(handle);
            stats
        });
        let scheduler = self.scheduler.map(|cfg| {
            let (handle, stats) =
                spawn_scheduler(self.store.clone(), cfg, self.clock.clone(), stop.clone());
            others.push(handle);
            stats
        });
        let worker = Worker::with_policies(
            self.store,
            self.executor,
            self.bus,
            self.worker,
            self.clock,
            self.policies,
        );
        if let Some(pool) = self.listen {
            others.push(tasker_engine::pg::spawn_ready_listener(
                pool,
                worker.wake_handle(),
                stop.clone(),
            ));
        }
        RunningNode {
            stats: worker.stats(),
            wake: worker.wake_handle(),
            worker: tokio::spawn(worker.run(stop.clone())),
            others,
            pruner,
            scheduler,
            stop,
        }
    }
}

/// A started node.
pub struct RunningNode {
    stats: Arc<WorkerStats>,
    wake: Arc<Notify>,
    worker: JoinHandle<WorkerTotals>,
    others: Vec<JoinHandle<()>>,
    pruner: Option<Arc<PrunerStats>>,
    scheduler: Option<Arc<SchedulerStats>>,
    stop: CancellationToken,
}

impl RunningNode {
    /// The worker's live counters.
    pub fn stats(&self) -> &Arc<WorkerStats> {
        &self.stats
    }

    /// What the pruner has done (None: this node runs none).
    pub fn pruner_stats(&self) -> Option<&Arc<PrunerStats>> {
        self.pruner.as_ref()
    }

    /// What the scheduler loop has done (None: this node runs none).
    pub fn scheduler_stats(&self) -> Option<&Arc<SchedulerStats>> {
        self.scheduler.as_ref()
    }

    /// Notify this to make the worker claim at once.
    pub fn wake_handle(&self) -> Arc<Notify> {
        self.wake.clone()
    }

    /// Waits for the worker to finish (it stops claiming once the node's `stop` token is
    /// cancelled, then finishes or releases its running steps), then stops and waits for the
    /// deliverer and the listener.
    pub async fn join(self) -> WorkerTotals {
        let totals = match self.worker.await {
            Ok(totals) => totals,
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => self.stats.totals(),
        };
        self.stop.cancel();
        for h in self.others {
            let _ = h.await;
        }
        totals
    }
}

/// A hook delivery loop beside a worker (its own tasks and concurrency). It takes the
/// worker's id (suffixed `-hooks`), lease and task scope (`only_task`): a crashed worker's
/// deliveries are retried once that lease expires, and a worker scoped to its task delivers
/// that task's events alone.
pub fn spawn_deliverer<S: Store + 'static>(
    store: Arc<S>,
    runner: Arc<dyn HookRunner>,
    worker: &WorkerConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let cfg = DeliveryConfig {
        id: format!("{}-hooks", worker.id),
        lease: worker.lease,
        only_task: worker.only_task,
        ..DeliveryConfig::default()
    };
    tokio::spawn(HookDeliverer::new(store, runner, cfg).run(stop))
}
