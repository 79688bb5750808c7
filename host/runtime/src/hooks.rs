//! Event hooks as WASM components: the sandbox behind the engine's [`HookRunner`].

use futures::future::BoxFuture;
use tasker_core::template::HandlerRef;
use tasker_engine::ComponentError;
use tasker_engine::hooks::HookRunner;
use tasker_sandbox::{HookEvent, HookRequest, PluginHash, PluginRef, Sandbox};
use tasker_store::HookDeliveryJob;

use crate::executor::{grants, kind_of, limits};

/// A `name@version` or `blake3:` reference in the registry's terms.
pub fn component_ref(h: &HandlerRef) -> Result<PluginRef, ComponentError> {
    match h {
        HandlerRef::Named { name, version } => Ok(PluginRef::Name {
            name: name.clone(),
            version: Some(version.clone()),
        }),
        HandlerRef::Hash(hex) => hex
            .parse::<PluginHash>()
            .map(PluginRef::Hash)
            .map_err(|e| ComponentError::BadReference(format!("component hash {hex}: {e}"))),
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

    async fn run(&self, job: &HookDeliveryJob) -> Result<(), ComponentError> {
        let handler: HandlerRef = job
            .component
            .parse()
            .map_err(|e| ComponentError::BadReference(format!("hook component: {e}")))?;
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
            grants: grants(&job.grants, self.sandbox.grants_base()),
        };
        self.sandbox
            .run_hook(req)
            .await
            .map(|_| ())
            .map_err(|f| failed(&f.error))
    }
}

impl HookRunner for WasmHookRunner {
    fn deliver<'a>(
        &'a self,
        job: &'a HookDeliveryJob,
    ) -> BoxFuture<'a, Result<(), ComponentError>> {
        Box::pin(self.run(job))
    }
}

/// A sandbox failure of a hook or policy component, with its kind.
pub(crate) fn failed(e: &tasker_sandbox::SandboxError) -> ComponentError {
    ComponentError::Failed {
        kind: kind_of(e),
        message: e.to_string(),
    }
}
