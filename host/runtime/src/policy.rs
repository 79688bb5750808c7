//! Retry policies as WASM components: the sandbox behind the engine's [`RetryPolicyRunner`].

use std::sync::Arc;

use futures::future::BoxFuture;
use tasker_core::template::HandlerRef;
use tasker_engine::ComponentError;
use tasker_engine::policy::{Policies, PolicyAnswer, PolicyFailure, RetryPolicyRunner};
use tasker_sandbox::{PolicyDecision, PolicyRequest, Sandbox};

use crate::hooks::{component_ref, failed};

/// Asks `retry-policy` components, each call in a fresh sandbox with the host's default
/// limits (tight: a decision is a few instructions) and no grants.
#[derive(Clone)]
pub struct WasmPolicyRunner {
    sandbox: Sandbox,
    limits: tasker_sandbox::AttemptLimits,
}

impl WasmPolicyRunner {
    pub fn new(sandbox: Sandbox) -> Self {
        WasmPolicyRunner {
            sandbox,
            limits: tasker_sandbox::AttemptLimits {
                timeout_ms: Some(1_000),
                fuel: Some(100_000_000),
                memory_bytes: Some(16 << 20),
                ..Default::default()
            },
        }
    }

    async fn run(
        &self,
        policy: &HandlerRef,
        f: &PolicyFailure,
    ) -> Result<PolicyAnswer, ComponentError> {
        let req = PolicyRequest {
            plugin: component_ref(policy)?,
            failure: tasker_sandbox::PolicyInput {
                step_name: f.step_name.clone(),
                attempt: f.attempt,
                max_attempts: f.max_attempts,
                error_kind: f.error_kind.as_str().to_owned(),
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
            Err(f) => Err(failed(&f.error)),
        }
    }
}

impl RetryPolicyRunner for WasmPolicyRunner {
    fn decide<'a>(
        &'a self,
        policy: &'a HandlerRef,
        failure: &'a PolicyFailure,
    ) -> BoxFuture<'a, Result<PolicyAnswer, ComponentError>> {
        Box::pin(self.run(policy, failure))
    }
}

/// Retry policies through the sandbox, with the host's limits.
pub fn policies(sandbox: &Sandbox) -> Policies {
    Policies::with_runner(Arc::new(WasmPolicyRunner::new(sandbox.clone())))
}
