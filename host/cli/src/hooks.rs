//! Event hooks and retry policies as WASM components: the sandbox behind the engine's
//! [`HookRunner`] and [`RetryPolicyRunner`] traits, and the wiring the commands share.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use crate::report::guest_text;
use anyhow::{Context as _, Result};
use futures::future::BoxFuture;
use tasker_core::template::{HandlerRef, Template};
use tasker_engine::WorkerConfig;
use tasker_engine::hooks::{DeliveryConfig, HookDeliverer, HookRunner};
use tasker_engine::policy::{Policies, PolicyAnswer, PolicyFailure, RetryPolicyRunner};
use tasker_sandbox::{
    HookEvent, HookRequest, PluginHash, PluginRef, PolicyDecision, PolicyRequest, Sandbox,
};
use tasker_store::{AnyStore, HookDeliveryJob, Store, TaskId};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::wasm::{grants, limits};

/// A `name@version` or `blake3:` reference in the registry's terms.
pub fn component_ref(h: &HandlerRef) -> Result<PluginRef, String> {
    match h {
        HandlerRef::Named { name, version } => Ok(PluginRef::Name {
            name: name.clone(),
            version: Some(version.clone()),
        }),
        HandlerRef::Hash(hex) => hex
            .parse::<PluginHash>()
            .map(PluginRef::Hash)
            .map_err(|e| format!("component hash {hex}: {e}")),
    }
}

/// Delivers events to `event-hook` components, each call in a fresh sandbox with the
/// hook's limits and grants.
#[derive(Clone)]
pub struct WasmHookRunner {
    sandbox: Sandbox,
}

impl WasmHookRunner {
    pub fn new(sandbox: Sandbox) -> Self {
        WasmHookRunner { sandbox }
    }

    async fn run(&self, job: &HookDeliveryJob) -> Result<(), String> {
        let handler: HandlerRef = job
            .component
            .parse()
            .map_err(|e| format!("hook component: {e}"))?;
        let req = HookRequest {
            plugin: component_ref(&handler)?,
            event: HookEvent {
                name: job.event_name.clone(),
                task_id: job.task_id.to_string(),
                step_id: job.step_id.map(|s| s.to_string()),
                timestamp_ms: u64::try_from(job.event_at.timestamp_millis()).unwrap_or(0),
                attempt: job.attempt,
                payload: job.payload.clone(),
            },
            limits: limits(&job.limits),
            grants: grants(&job.grants),
        };
        self.sandbox
            .run_hook(req)
            .await
            .map(|_| ())
            .map_err(|f| format!("{}: {}", f.kind(), f.error))
    }
}

impl HookRunner for WasmHookRunner {
    fn deliver<'a>(&'a self, job: &'a HookDeliveryJob) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(self.run(job))
    }
}

/// Asks `retry-policy` components, each call in a fresh sandbox with the host's default
/// limits (tight: a decision is a few instructions) and no grants.
#[derive(Clone)]
pub struct WasmPolicyRunner {
    sandbox: Sandbox,
    limits: tasker_sandbox::Limits,
}

impl WasmPolicyRunner {
    pub fn new(sandbox: Sandbox) -> Self {
        WasmPolicyRunner {
            sandbox,
            limits: tasker_sandbox::Limits {
                timeout_ms: Some(1_000),
                fuel: Some(100_000_000),
                memory_bytes: Some(16 << 20),
                ..Default::default()
            },
        }
    }

    async fn run(&self, policy: &HandlerRef, f: &PolicyFailure) -> Result<PolicyAnswer, String> {
        let req = PolicyRequest {
            plugin: component_ref(policy)?,
            failure: tasker_sandbox::PolicyFailure {
                step_name: f.step_name.clone(),
                attempt: f.attempt,
                max_attempts: f.max_attempts,
                error_kind: f.error_kind.clone(),
                message: f.message.clone(),
                retry_after_ms: f.retry_after_ms,
                since_first_attempt_ms: f.since_first_attempt_ms,
            },
            limits: self.limits.clone(),
            grants: Default::default(),
        };
        match self.sandbox.run_policy(req).await {
            Ok((PolicyDecision::Retry(ms), _)) => Ok(PolicyAnswer::Retry { after_ms: ms }),
            Ok((PolicyDecision::GiveUp(reason), _)) => Ok(PolicyAnswer::GiveUp { reason }),
            Err(f) => Err(format!("{}: {}", f.kind(), f.error)),
        }
    }
}

impl RetryPolicyRunner for WasmPolicyRunner {
    fn decide<'a>(
        &'a self,
        policy: &'a HandlerRef,
        failure: &'a PolicyFailure,
    ) -> BoxFuture<'a, Result<PolicyAnswer, String>> {
        Box::pin(self.run(policy, failure))
    }
}

/// Retry policies through the sandbox, with the host's limits.
pub fn policies(sandbox: &Sandbox) -> Policies {
    Policies::with_runner(Arc::new(WasmPolicyRunner::new(sandbox.clone())))
}

/// Start a hook delivery loop beside a worker (its own tasks and concurrency). It takes
/// the worker's id (suffixed `-hooks`) and lease: a crashed worker's deliveries are retried
/// once that lease expires.
pub fn spawn_deliverer(
    store: Arc<AnyStore>,
    sandbox: &Sandbox,
    worker: &WorkerConfig,
    stop: CancellationToken,
) -> JoinHandle<()> {
    let cfg = DeliveryConfig {
        id: format!("{}-hooks", worker.id),
        lease: worker.lease,
        ..DeliveryConfig::default()
    };
    let d = HookDeliverer::new(store, Arc::new(WasmHookRunner::new(sandbox.clone())), cfg);
    tokio::spawn(d.run(stop))
}

/// Wait until no delivery of `task` is pending (or `timeout` passes); `tasker run` uses it so
/// the hooks have seen the task's last events before the command returns.
pub async fn drain(store: &AnyStore, task: TaskId, timeout: Duration) -> Result<bool> {
    let deadline = tokio::time::Instant::now() + timeout;
    loop {
        let counts = store.hook_counts(Some(task)).await?;
        if counts.iter().all(|c| c.pending == 0) {
            return Ok(true);
        }
        if tokio::time::Instant::now() >= deadline {
            return Ok(false);
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Relative `hooks[].grants.dirs[].host` paths become absolute, relative to the template
/// file (as for steps).
pub fn absolutize_hook_grants(t: &mut Template, base: &Path) -> Result<()> {
    for (i, hook) in t.hooks.iter_mut().enumerate() {
        for dir in &mut hook.grants.dirs {
            let host = Path::new(&dir.host);
            let full = if host.is_absolute() {
                host.to_path_buf()
            } else {
                base.join(host)
            };
            let full = full.canonicalize().with_context(|| {
                format!(
                    "hooks[{i}] ({}): granted directory {} does not exist",
                    hook.component,
                    full.display()
                )
            })?;
            dir.host = full.display().to_string();
        }
    }
    Ok(())
}

/// One line per hook of a task (delivered, pending and dead deliveries), then one per dead
/// letter with its last error.
pub async fn summary_lines(store: &AnyStore, task: TaskId) -> Result<Vec<String>> {
    let counts = store.hook_counts(Some(task)).await?;
    let mut lines: Vec<String> = counts
        .iter()
        .map(|c| {
            format!(
                "hook {}: {} delivered, {} pending, {} dead",
                guest_text(&c.component, 120),
                c.delivered,
                c.pending,
                c.dead
            )
        })
        .collect();
    if counts.iter().any(|c| c.dead > 0) {
        for row in store.hook_outbox_of_task(task).await? {
            if row.state != "dead" {
                continue;
            }
            let hook = counts
                .iter()
                .find(|c| c.hook_id == row.hook_id)
                .map_or("?", |c| c.component.as_str());
            let step = row
                .step_id
                .map(|s| format!(" (step {s})"))
                .unwrap_or_default();
            let error = guest_text(row.last_error.as_deref().unwrap_or_default(), 160);
            lines.push(format!(
                "  dead: {hook} {}{step} after {} attempts: {error}",
                guest_text(&row.event_name, 120),
                row.attempts
            ));
        }
    }
    Ok(lines)
}
