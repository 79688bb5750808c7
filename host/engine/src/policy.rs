//! Retry policies as components: the worker and the test coordinator ask a step's
//! `retry_policy` whether and when a failed attempt runs again, on one shared path
//! ([`decide_failures`]), before `fail_steps`.
//!
//! Safety rules, whatever the component does:
//! - a policy that fails in any way (trap, timeout, bad answer, missing component) is
//!   replaced by the built-in policy, with a warning recorded on the attempt;
//! - a retry delay is clamped to the host-wide [`Policies::max_delay_ms`] (and, in SQL, to
//!   the step's `max_retry_after_ms`);
//! - the template's `max_attempts` and `retryable: false` still hold: a policy is not asked
//!   when no attempt is left, and SQL ends an exhausted step whatever the policy said.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::{BoxFuture, join_all};
use tasker_core::error_kind::ErrorKind;
use tasker_core::template::{HandlerRef, StepTemplate};
use tasker_store::{ClaimedStep, FailureDecision, StepFailure, StepId, Store, TaskId};

use crate::component::ComponentError;

/// A failed attempt, as a policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyFailure {
    pub task_id: TaskId,
    pub step_id: StepId,
    pub step_name: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub max_attempts: u32,
    /// An error kind name: `handler_error`, `timeout`, `trap`, ...
    pub error_kind: ErrorKind,
    pub message: String,
    /// The handler's own requested delay.
    pub retry_after_ms: Option<u64>,
    pub since_first_attempt_ms: u64,
}

/// A policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PolicyAnswer {
    Retry { after_ms: u64 },
    GiveUp { reason: String },
}

/// Asks a policy component for a decision. Implemented with the sandbox in
/// `tasker-runtime`. Every way the component can fail must come back as `Err`.
pub trait RetryPolicyRunner: Send + Sync + 'static {
    fn decide<'a>(
        &'a self,
        policy: &'a HandlerRef,
        failure: &'a PolicyFailure,
    ) -> BoxFuture<'a, Result<PolicyAnswer, ComponentError>>;
}

/// Default host-wide maximum retry delay a policy may ask for: one hour.
pub const DEFAULT_MAX_POLICY_DELAY_MS: u64 = 3_600_000;

/// The policy runner and the host-wide limits on what a policy may decide.
#[derive(Clone)]
pub struct Policies {
    pub runner: Option<Arc<dyn RetryPolicyRunner>>,
    /// No policy may delay a retry longer than this.
    pub max_delay_ms: u64,
    /// Backstop on one decision, beyond the component's own sandbox limits.
    pub timeout: Duration,
}

impl Default for Policies {
    fn default() -> Self {
        Policies {
            runner: None,
            max_delay_ms: DEFAULT_MAX_POLICY_DELAY_MS,
            timeout: Duration::from_secs(10),
        }
    }
}

impl std::fmt::Debug for Policies {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Policies")
            .field("runner", &self.runner.is_some())
            .field("max_delay_ms", &self.max_delay_ms)
            .finish()
    }
}

impl Policies {
    pub fn with_runner(runner: Arc<dyn RetryPolicyRunner>) -> Self {
        Policies {
            runner: Some(runner),
            ..Policies::default()
        }
    }
}

fn builtin() -> FailureDecision {
    FailureDecision {
        decided_by: "builtin".into(),
        detail: None,
        warning: None,
    }
}

/// Decide each failure: `items[i]` failed as `failures[i]` (already carrying the built-in
/// verdict from [`crate::record::to_record`]). Policy answers rewrite `retryable` and
/// `retry_after_ms`; the returned decisions go to `Store::fail_decided`.
pub async fn decide_failures<S: Store>(
    store: &S,
    policies: &Policies,
    items: &[(&ClaimedStep, Option<&StepTemplate>)],
    failures: &mut [StepFailure],
    now: DateTime<Utc>,
) -> Vec<FailureDecision> {
    let mut decisions = vec![builtin(); failures.len()];
    // Only failures whose step names a policy, may retry at all, and has attempts left.
    let asks: Vec<usize> = (0..items.len())
        .filter(|&i| {
            let (job, step) = items[i];
            step.is_some_and(|s| {
                s.retry_policy.is_some() && s.retry.retryable && job.attempt < job.max_attempts
            })
        })
        .collect();
    if asks.is_empty() {
        return decisions;
    }
    let step_ids: Vec<StepId> = asks.iter().map(|&i| items[i].0.step_id).collect();
    let firsts = match store.first_attempt_at(&step_ids).await {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(error = %e, "cannot read first attempt times; policies see 0 ms");
            Vec::new()
        }
    };
    let since = |step_id: StepId| {
        firsts
            .iter()
            .find(|(id, _)| *id == step_id)
            .and_then(|(_, t)| *t)
            .map_or(0, |t| (now - t).num_milliseconds().max(0) as u64)
    };
    let calls = asks.iter().map(|&i| {
        let (job, step) = items[i];
        let policy = step
            .and_then(|s| s.retry_policy.clone())
            .expect("filtered on retry_policy");
        let f = &failures[i];
        let failure = PolicyFailure {
            task_id: job.task_id,
            step_id: job.step_id,
            step_name: job.step_name.clone(),
            attempt: job.attempt,
            max_attempts: job.max_attempts,
            error_kind: f.error_kind,
            message: f.message.clone(),
            retry_after_ms: f.retry_after_ms,
            since_first_attempt_ms: since(job.step_id),
        };
        async move {
            let answer = match &policies.runner {
                None => Err(ComponentError::NoRunner("retry-policy")),
                Some(r) => {
                    match tokio::time::timeout(policies.timeout, r.decide(&policy, &failure)).await
                    {
                        Ok(a) => a,
                        Err(_) => Err(ComponentError::NoAnswer(policies.timeout)),
                    }
                }
            };
            (i, policy, answer)
        }
    });
    for (i, policy, answer) in join_all(calls).await {
        let by = format!("policy:{policy}");
        match answer {
            Ok(PolicyAnswer::Retry { after_ms }) => {
                let clamped = after_ms.min(policies.max_delay_ms);
                let detail = if clamped < after_ms {
                    format!(
                        "retry after {after_ms} ms, clamped to the host maximum of {clamped} ms"
                    )
                } else {
                    format!("retry after {after_ms} ms")
                };
                failures[i].retryable = true;
                failures[i].retry_after_ms = Some(clamped);
                decisions[i] = FailureDecision {
                    decided_by: by,
                    detail: Some(detail),
                    warning: None,
                };
            }
            Ok(PolicyAnswer::GiveUp { reason }) => {
                failures[i].retryable = false;
                decisions[i] = FailureDecision {
                    decided_by: by,
                    detail: Some(format!("give up: {}", tasker_core::text::storable(&reason))),
                    warning: None,
                };
            }
            Err(e) => {
                let warning = format!(
                    "retry policy {policy} failed ({}); the built-in policy decided",
                    tasker_core::text::storable(&e.to_string())
                );
                tracing::warn!(step_id = items[i].0.step_id.get(), "{warning}");
                metrics::counter!(tasker_core::metrics::RETRY_POLICY_FALLBACKS).increment(1);
                decisions[i] = FailureDecision {
                    decided_by: "builtin".into(),
                    detail: None,
                    warning: Some(warning),
                };
            }
        }
    }
    decisions
}
