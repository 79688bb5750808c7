//! Event hooks and retry policies: the two other kinds of Tasker component.

use serde::de::DeserializeOwned;
use serde_json::Value;

use crate::bindings::tasker::plugin::types as wit;

/// A lifecycle event, as a hook receives it (its JSON payload parsed).
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// `task.completed`, `step.failed`, `custom.<name>`, ...
    pub name: String,
    pub task_id: String,
    pub step_id: Option<String>,
    /// Milliseconds since the Unix epoch.
    pub timestamp_ms: u64,
    /// The step's attempt, for step events.
    pub attempt: Option<u32>,
    pub payload: Value,
}

impl Event {
    /// Parse the raw event the host passed (an unparsable payload becomes `null`).
    pub fn from_wit(raw: wit::Event) -> Self {
        Event {
            payload: serde_json::from_str(&raw.payload).unwrap_or(Value::Null),
            name: raw.name,
            task_id: raw.task_id,
            step_id: raw.step_id,
            timestamp_ms: raw.timestamp_ms,
            attempt: raw.attempt,
        }
    }

    /// The payload as `T`.
    pub fn payload_as<T: DeserializeOwned>(&self) -> Result<T, String> {
        T::deserialize(&self.payload)
            .map_err(|e| format!("payload of {} has the wrong shape: {e}", self.name))
    }
}

/// An event hook. `Err` (or a trap) makes the host deliver the event again later, with
/// backoff, until the hook's `max_attempts`; then the event is parked as dead.
/// Deliveries are at least once: make the hook idempotent (e.g. by `name`, `task_id`,
/// `step_id` and `attempt`).
///
/// ```no_run
/// use tasker_guest_sdk::{Event, EventHook, export_event_hook};
///
/// struct Audit;
///
/// impl EventHook for Audit {
///     fn on_event(event: Event) -> Result<(), String> {
///         tasker_guest_sdk::log::info(&format!("{} on task {}", event.name, event.task_id));
///         Ok(())
///     }
/// }
///
/// export_event_hook!(Audit);
/// # fn main() {}
/// ```
pub trait EventHook {
    fn on_event(event: Event) -> Result<(), String>;
}

/// A failed attempt, as a retry policy sees it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Failure {
    pub step_name: String,
    /// The attempt that failed (1 for the first).
    pub attempt: u32,
    /// The template's limit; the host never runs more, whatever the policy says.
    pub max_attempts: u32,
    /// `handler_error`, `timeout`, `trap`, `out_of_fuel`, ...
    pub error_kind: String,
    pub message: String,
    /// The handler's own requested delay (e.g. a server's Retry-After).
    pub retry_after_ms: Option<u64>,
    pub since_first_attempt_ms: u64,
}

impl From<wit::Failure> for Failure {
    fn from(f: wit::Failure) -> Self {
        Failure {
            step_name: f.step_name,
            attempt: f.attempt,
            max_attempts: f.max_attempts,
            error_kind: f.error_kind,
            message: f.message,
            retry_after_ms: f.retry_after_ms,
            since_first_attempt_ms: f.since_first_attempt_ms,
        }
    }
}

/// A retry policy's answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decision {
    /// Run again after this many milliseconds (the host clamps it to its maximum).
    Retry { after_ms: u64 },
    /// Do not run again.
    GiveUp(String),
}

impl Decision {
    pub fn retry(after_ms: u64) -> Self {
        Decision::Retry { after_ms }
    }

    pub fn give_up(reason: impl Into<String>) -> Self {
        Decision::GiveUp(reason.into())
    }
}

impl From<Decision> for wit::Decision {
    fn from(d: Decision) -> Self {
        match d {
            Decision::Retry { after_ms } => wit::Decision::Retry(after_ms),
            Decision::GiveUp(reason) => wit::Decision::GiveUp(reason),
        }
    }
}

/// A retry policy. A policy that traps, times out or is missing is replaced by the host's
/// built-in exponential policy (with a warning on the attempt).
///
/// ```no_run
/// use tasker_guest_sdk::{Decision, Failure, RetryPolicy, export_retry_policy};
///
/// struct Patient;
///
/// impl RetryPolicy for Patient {
///     fn decide(f: Failure) -> Decision {
///         match f.retry_after_ms {
///             Some(ms) => Decision::retry(ms),
///             None if f.error_kind == "out_of_memory" => Decision::give_up("will not fit"),
///             None => Decision::retry(500 * u64::from(f.attempt)),
///         }
///     }
/// }
///
/// export_retry_policy!(Patient);
/// # fn main() {}
/// ```
pub trait RetryPolicy {
    fn decide(failure: Failure) -> Decision;
}

/// Export an [`EventHook`] as the component's `on-event` function.
#[macro_export]
macro_rules! export_event_hook {
    ($hook:ident) => {
        impl $crate::hook_bindings::Guest for $hook {
            fn on_event(
                event: $crate::bindings::tasker::plugin::types::Event,
            ) -> ::core::result::Result<(), ::std::string::String> {
                <$hook as $crate::EventHook>::on_event($crate::Event::from_wit(event))
            }
        }
        $crate::hook_bindings::__export_event_hook!($hook with_types_in $crate::hook_bindings);
    };
}

/// Export a [`RetryPolicy`] as the component's `decide` function.
#[macro_export]
macro_rules! export_retry_policy {
    ($policy:ident) => {
        impl $crate::policy_bindings::Guest for $policy {
            fn decide(
                failure: $crate::bindings::tasker::plugin::types::Failure,
            ) -> $crate::bindings::tasker::plugin::types::Decision {
                <$policy as $crate::RetryPolicy>::decide(failure.into()).into()
            }
        }
        $crate::policy_bindings::__export_retry_policy!($policy with_types_in $crate::policy_bindings);
    };
}
