//! Requests and answers of the `event-hook` and `retry-policy` worlds, in host types.

use serde::{Deserialize, Serialize};

use crate::bindings::tasker::plugin::types as wit;
use crate::caps::AttemptGrants;
use crate::limits::AttemptLimits;
use crate::registry::PluginRef;

/// A lifecycle event, as an `event-hook` receives it.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct HookEvent {
    pub name: String,
    pub task_id: String,
    pub step_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    pub attempt: Option<u32>,
    pub payload: serde_json::Value,
}

impl HookEvent {
    pub(crate) fn to_wit(&self) -> wit::Event {
        wit::Event {
            name: self.name.clone(),
            task_id: self.task_id.clone(),
            step_id: self.step_id.clone(),
            timestamp_ms: self.timestamp_ms,
            attempt: self.attempt,
            payload: self.payload.to_string(),
        }
    }
}

/// One delivery of one event to one hook component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct HookRequest {
    pub plugin: PluginRef,
    pub event: HookEvent,
    #[serde(default)]
    pub limits: AttemptLimits,
    #[serde(default)]
    pub grants: AttemptGrants,
}

/// A failed attempt, as a `retry-policy` sees it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct PolicyInput {
    pub step_name: String,
    pub attempt: u32,
    pub max_attempts: u32,
    /// An error kind name: `handler_error`, `timeout`, `trap`, ...
    pub error_kind: String,
    pub message: String,
    pub retry_after_ms: Option<u64>,
    pub since_first_attempt_ms: u64,
}

impl PolicyInput {
    pub(crate) fn to_wit(&self) -> wit::Failure {
        wit::Failure {
            step_name: self.step_name.clone(),
            attempt: self.attempt,
            max_attempts: self.max_attempts,
            error_kind: self.error_kind.clone(),
            message: self.message.clone(),
            retry_after_ms: self.retry_after_ms,
            since_first_attempt_ms: self.since_first_attempt_ms,
        }
    }
}

/// One question to a retry policy component.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct PolicyRequest {
    pub plugin: PluginRef,
    pub failure: PolicyInput,
    #[serde(default)]
    pub limits: AttemptLimits,
    #[serde(default)]
    pub grants: AttemptGrants,
}

/// A retry policy's answer.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum PolicyDecision {
    /// Run again after this many milliseconds.
    Retry(u64),
    /// Do not retry, for this reason.
    GiveUp(String),
}

impl PolicyDecision {
    /// From the JSON form the attempt produces (`{"retry": ms}` / `{"give_up": reason}`).
    pub(crate) fn from_json(v: &serde_json::Value) -> Option<Self> {
        if let Some(ms) = v.get("retry") {
            return ms.as_u64().map(PolicyDecision::Retry);
        }
        v.get("give_up")
            .and_then(|r| r.as_str())
            .map(|r| PolicyDecision::GiveUp(r.to_owned()))
    }
}
