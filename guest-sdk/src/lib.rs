//! Write a Tasker step handler in Rust.
//!
//! A handler is a type implementing [`Handler`], exported with [`export_handler!`], in a
//! `cdylib` crate built for `wasm32-wasip2`. JSON fields arrive parsed, the result is any
//! `Serialize` value, and failures are a [`StepError`] (retryable or permanent).
//!
//! ```no_run
//! use tasker_guest_sdk::{Context, Handler, StepError, export_handler, json};
//!
//! struct Greet;
//!
//! impl Handler for Greet {
//!     fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
//!         let name: String = ctx.config_field("name")?;
//!         tasker_guest_sdk::log::info(&format!("greeting {name}"));
//!         tasker_guest_sdk::emit("greeted", &json!({ "name": name }));
//!         Ok(json!({ "greeting": format!("hello, {name}"), "attempt": ctx.attempt }))
//!     }
//! }
//!
//! export_handler!(Greet);
//! # fn main() {}
//! ```
//!
//! Build it with `cargo build --release --target wasm32-wasip2`; the component is
//! `target/wasm32-wasip2/release/<crate>.wasm`.
//!
//! The same crate also writes the two other kinds of component: an event hook
//! ([`EventHook`], [`export_event_hook!`]) and a retry policy ([`RetryPolicy`],
//! [`export_retry_policy!`]). A component exports exactly one of the three.
//!
//! Outbound HTTP (behind the step's `grants.http`) is in [`http`]: `http::get(url).send()?`.

use std::collections::BTreeMap;

use serde::de::DeserializeOwned;

pub use serde;
pub use serde_json::{self, Value, json};

/// The generated bindings of the `tasker:plugin/step-handler` world.
#[allow(clippy::too_many_arguments)] // generated code
pub mod bindings {
    wit_bindgen::generate!({
        world: "step-handler",
        path: "../wit",
        // wasi:http and what it uses (io, clocks): the hook and policy worlds reuse them.
        generate_all,
        pub_export_macro: true,
        export_macro_name: "__export_step_handler",
        default_bindings_module: "tasker_guest_sdk::bindings",
    });
}

use bindings::tasker::plugin::types as wit;

/// The generated bindings of the `tasker:plugin/event-hook` world (types shared with
/// [`bindings`]).
#[allow(clippy::too_many_arguments)] // generated code
pub mod hook_bindings {
    wit_bindgen::generate!({
        world: "event-hook",
        path: "../wit",
        with: {
            "tasker:plugin/types@0.1.1": crate::bindings::tasker::plugin::types,
            "tasker:plugin/host@0.1.1": crate::bindings::tasker::plugin::host,
            "wasi:http/types@0.2.12": crate::bindings::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
        },
        pub_export_macro: true,
        export_macro_name: "__export_event_hook",
        default_bindings_module: "tasker_guest_sdk::hook_bindings",
    });
}

/// The generated bindings of the `tasker:plugin/retry-policy` world.
#[allow(clippy::too_many_arguments)] // generated code
pub mod policy_bindings {
    wit_bindgen::generate!({
        world: "retry-policy",
        path: "../wit",
        with: {
            "tasker:plugin/types@0.1.1": crate::bindings::tasker::plugin::types,
            "tasker:plugin/host@0.1.1": crate::bindings::tasker::plugin::host,
            "wasi:http/types@0.2.12": crate::bindings::wasi::http::types,
            "wasi:http/outgoing-handler@0.2.12": crate::bindings::wasi::http::outgoing_handler,
            "wasi:io/error@0.2.12": crate::bindings::wasi::io::error,
            "wasi:io/poll@0.2.12": crate::bindings::wasi::io::poll,
            "wasi:io/streams@0.2.12": crate::bindings::wasi::io::streams,
            "wasi:clocks/monotonic-clock@0.2.12": crate::bindings::wasi::clocks::monotonic_clock,
        },
        pub_export_macro: true,
        export_macro_name: "__export_retry_policy",
        default_bindings_module: "tasker_guest_sdk::policy_bindings",
    });
}

mod extensions;
pub mod http;
pub use extensions::{Decision, Event, EventHook, Failure, RetryPolicy};

/// What one attempt sees, with its JSON fields parsed.
#[derive(Debug, Clone)]
pub struct Context {
    pub task_id: String,
    pub step_name: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    /// The task's context.
    pub context: Value,
    /// Results of the parent steps, by step name.
    pub parents: BTreeMap<String, Value>,
    /// The step's handler config from the template.
    pub config: Value,
}

impl Context {
    /// Parse the raw context the host passed. Invalid JSON is a permanent error.
    pub fn from_wit(raw: wit::StepContext) -> Result<Self, StepError> {
        let parse = |what: &str, text: &str| {
            serde_json::from_str::<Value>(text)
                .map_err(|e| StepError::permanent(format!("host sent invalid JSON in {what}: {e}")))
        };
        let mut parents = BTreeMap::new();
        for (name, text) in &raw.parent_results {
            parents.insert(
                name.clone(),
                parse(&format!("parent result `{name}`"), text)?,
            );
        }
        Ok(Self {
            context: parse("context", &raw.context)?,
            config: parse("config", &raw.config)?,
            task_id: raw.task_id,
            step_name: raw.step_name,
            attempt: raw.attempt,
            parents,
        })
    }

    /// The whole config as `T`. A mismatch is a permanent error naming the step.
    pub fn config_as<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        from_value(&self.config, "config")
    }

    /// The whole task context as `T`.
    pub fn context_as<T: DeserializeOwned>(&self) -> Result<T, StepError> {
        from_value(&self.context, "context")
    }

    /// One required field of the config.
    pub fn config_field<T: DeserializeOwned>(&self, field: &str) -> Result<T, StepError> {
        let v = self
            .config
            .get(field)
            .ok_or_else(|| StepError::permanent(format!("config field `{field}` is missing")))?;
        from_value(v, &format!("config field `{field}`"))
    }

    /// A parent's result as `T`.
    pub fn parent_as<T: DeserializeOwned>(&self, step: &str) -> Result<T, StepError> {
        let v = self
            .parents
            .get(step)
            .ok_or_else(|| StepError::permanent(format!("no result from parent step `{step}`")))?;
        from_value(v, &format!("result of parent `{step}`"))
    }
}

fn from_value<T: DeserializeOwned>(v: &Value, what: &str) -> Result<T, StepError> {
    T::deserialize(v).map_err(|e| StepError::permanent(format!("{what} has the wrong shape: {e}")))
}

/// A handler's own failure.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StepError {
    /// Run again later; `retry_after_ms` asks the host to wait that long first.
    Retryable {
        message: String,
        retry_after_ms: Option<u64>,
    },
    /// Never retry.
    Permanent(String),
}

impl StepError {
    pub fn retryable(message: impl Into<String>) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after_ms: None,
        }
    }

    /// Retryable, and the host should wait `ms` milliseconds first.
    pub fn retry_after(message: impl Into<String>, ms: u64) -> Self {
        Self::Retryable {
            message: message.into(),
            retry_after_ms: Some(ms),
        }
    }

    pub fn permanent(message: impl Into<String>) -> Self {
        Self::Permanent(message.into())
    }

    /// The message, whatever the variant.
    pub fn message(&self) -> &str {
        match self {
            Self::Retryable { message, .. } | Self::Permanent(message) => message,
        }
    }
}

impl std::fmt::Display for StepError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.message())
    }
}

/// I/O failures are often transient: retryable by default. Map them yourself when not.
impl From<std::io::Error> for StepError {
    fn from(e: std::io::Error) -> Self {
        Self::retryable(format!("I/O error: {e}"))
    }
}

impl From<serde_json::Error> for StepError {
    fn from(e: serde_json::Error) -> Self {
        Self::permanent(format!("JSON error: {e}"))
    }
}

impl From<StepError> for wit::StepError {
    fn from(e: StepError) -> Self {
        match e {
            StepError::Retryable {
                message,
                retry_after_ms,
            } => wit::StepError::Retryable(wit::RetryableError {
                message,
                retry_after_ms,
            }),
            StepError::Permanent(message) => wit::StepError::Permanent(message),
        }
    }
}

/// A step handler. Implement it on a unit struct and pass that to [`export_handler!`].
pub trait Handler {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError>;
}

/// Read an environment variable the step was granted. A variable that is not granted
/// looks absent to the guest (the host cannot see it looked); this turns that into a
/// permanent, clearly named error of the handler's own (`handler_error`).
pub fn env_var(name: &str) -> Result<String, StepError> {
    std::env::var(name).map_err(|_| {
        StepError::permanent(format!(
            "capability denied: environment variable `{name}` is not granted to this step"
        ))
    })
}

/// Emit a custom event onto the task's event bus. Payloads that fail to serialize are dropped.
pub fn emit(name: &str, payload: &impl serde::Serialize) {
    if let Ok(text) = serde_json::to_string(payload) {
        bindings::tasker::plugin::host::emit_event(name, &text);
    }
}

/// Log lines recorded on the attempt.
pub mod log {
    use crate::bindings::tasker::plugin::{host, types::LogLevel};

    pub fn trace(msg: &str) {
        host::log(LogLevel::Trace, msg)
    }
    pub fn debug(msg: &str) {
        host::log(LogLevel::Debug, msg)
    }
    pub fn info(msg: &str) {
        host::log(LogLevel::Info, msg)
    }
    pub fn warn(msg: &str) {
        host::log(LogLevel::Warn, msg)
    }
    pub fn error(msg: &str) {
        host::log(LogLevel::Error, msg)
    }
}

#[doc(hidden)]
pub mod __private {
    use super::*;

    /// Glue between the generated `Guest::handle` and [`Handler::handle`].
    pub fn run<H: Handler>(raw: wit::StepContext) -> Result<String, wit::StepError> {
        let ctx = Context::from_wit(raw)?;
        let out = H::handle(ctx)?;
        serde_json::to_string(&out).map_err(|e| {
            StepError::permanent(format!("handler output is not serializable: {e}")).into()
        })
    }
}

/// Export a [`Handler`] as the component's `handle` function.
#[macro_export]
macro_rules! export_handler {
    ($handler:ident) => {
        impl $crate::bindings::Guest for $handler {
            fn handle(
                ctx: $crate::bindings::tasker::plugin::types::StepContext,
            ) -> ::core::result::Result<
                ::std::string::String,
                $crate::bindings::tasker::plugin::types::StepError,
            > {
                $crate::__private::run::<$handler>(ctx)
            }
        }
        $crate::bindings::__export_step_handler!($handler with_types_in $crate::bindings);
    };
}
