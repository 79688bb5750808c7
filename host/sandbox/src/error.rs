//! The one error type at the crate boundary. Every variant has a stable `kind()` string
//! (also its serde tag) and says whether retrying can help.

use serde::{Deserialize, Serialize};

/// Why an attempt (or a plugin load) failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum SandboxError {
    /// The wall-clock deadline passed (epoch interruption or the async backstop).
    #[error("timed out: the attempt ran past its {limit_ms} ms deadline")]
    Timeout { limit_ms: u64 },

    /// The fuel budget ran out: the guest did too much work.
    #[error("out of fuel: the guest used its whole budget of {budget} fuel units")]
    OutOfFuel { budget: u64 },

    /// A linear memory (or table) tried to grow past the attempt's cap.
    #[error(
        "out of memory: the guest asked for {requested_bytes} bytes of linear memory, the cap is {limit_bytes} bytes"
    )]
    OutOfMemory {
        requested_bytes: u64,
        limit_bytes: u64,
    },

    /// The guest trapped: panic, abort, stack overflow, bad memory access...
    /// `message` holds the guest's panic message when it printed one on stderr.
    #[error("guest trapped: {message}")]
    Trap {
        message: String,
        /// wasmtime's trap code, e.g. "unreachable", "stack_overflow".
        trap_code: Option<String>,
        /// The guest's WebAssembly backtrace, when wasmtime captured one.
        backtrace: Option<String>,
    },

    /// The host refused something the guest tried and the attempt then failed: a path
    /// escaping a grant, a write to a read-only grant, a socket without a `net` grant, an
    /// address outside the allow-list, a resource cap or the disk quota. Only what the host
    /// itself refused counts; `detected_by` is always "host" (kept for compatibility).
    #[error("capability denied: {what} (guest error: {guest_error})")]
    CapabilityDenied {
        what: String,
        detected_by: String,
        /// How the guest failed after the denial.
        guest_error: String,
    },

    /// The handler returned something that is not JSON, or is over the output cap.
    #[error("bad output: {reason}")]
    BadOutput { reason: String },

    /// The handler's own `step-error`.
    #[error("handler error ({}): {message}", if *retryable { "retryable" } else { "permanent" })]
    HandlerError {
        message: String,
        retryable: bool,
        retry_after_ms: Option<u64>,
    },

    /// The plugin could not be found, read or parsed as a component.
    #[error("cannot load plugin: {message}")]
    Load { message: String },

    /// A valid component that does not fit the host: it needs an import the host does
    /// not provide, or its exports do not match `tasker:plugin/step-handler@0.1.1`.
    #[error("incompatible plugin: {message}")]
    Incompatible { message: String },

    /// The attempt's own settings are unusable (e.g. a granted directory does not exist).
    #[error("bad attempt configuration: {message}")]
    Config { message: String },

    /// A host-side failure unrelated to the guest (e.g. instance slots exhausted).
    #[error("internal sandbox error: {message}")]
    Internal { message: String },
}

impl SandboxError {
    /// Stable machine-readable name, equal to the serde tag.
    pub fn kind(&self) -> &'static str {
        match self {
            Self::Timeout { .. } => "timeout",
            Self::OutOfFuel { .. } => "out_of_fuel",
            Self::OutOfMemory { .. } => "out_of_memory",
            Self::Trap { .. } => "trap",
            Self::CapabilityDenied { .. } => "capability_denied",
            Self::BadOutput { .. } => "bad_output",
            Self::HandlerError { .. } => "handler_error",
            Self::Load { .. } => "load",
            Self::Incompatible { .. } => "incompatible",
            Self::Config { .. } => "config",
            Self::Internal { .. } => "internal",
        }
    }

    /// Whether running the same attempt again may succeed. The engine may override this
    /// per template; these are the sandbox's defaults:
    /// - retryable: timeout (load spikes), trap (often transient state), a handler's
    ///   retryable error, load (the file may be mid-deploy) and internal errors;
    /// - permanent: out-of-fuel, out-of-memory, capability-denied, bad-output,
    ///   incompatible, config, and a handler's permanent error. The same code on the same
    ///   input does the same thing again.
    pub fn is_retryable(&self) -> bool {
        match self {
            Self::Timeout { .. }
            | Self::Trap { .. }
            | Self::Load { .. }
            | Self::Internal { .. } => true,
            Self::HandlerError { retryable, .. } => *retryable,
            Self::OutOfFuel { .. }
            | Self::OutOfMemory { .. }
            | Self::CapabilityDenied { .. }
            | Self::BadOutput { .. }
            | Self::Incompatible { .. }
            | Self::Config { .. } => false,
        }
    }

    /// The delay the handler asked for before the next attempt, if any.
    pub fn retry_after_ms(&self) -> Option<u64> {
        match self {
            Self::HandlerError { retry_after_ms, .. } => *retry_after_ms,
            _ => None,
        }
    }

    pub(crate) fn load(message: impl Into<String>) -> Self {
        Self::Load {
            message: message.into(),
        }
    }

    pub(crate) fn internal(message: impl Into<String>) -> Self {
        Self::Internal {
            message: message.into(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_is_the_serde_tag_and_retryability_is_stable() {
        let cases = [
            (SandboxError::Timeout { limit_ms: 1 }, true),
            (SandboxError::OutOfFuel { budget: 1 }, false),
            (
                SandboxError::OutOfMemory {
                    requested_bytes: 2,
                    limit_bytes: 1,
                },
                false,
            ),
            (
                SandboxError::Trap {
                    message: "x".into(),
                    trap_code: None,
                    backtrace: None,
                },
                true,
            ),
            (
                SandboxError::CapabilityDenied {
                    what: "x".into(),
                    detected_by: "host".into(),
                    guest_error: "y".into(),
                },
                false,
            ),
            (SandboxError::BadOutput { reason: "x".into() }, false),
            (
                SandboxError::HandlerError {
                    message: "x".into(),
                    retryable: true,
                    retry_after_ms: Some(5),
                },
                true,
            ),
            (
                SandboxError::HandlerError {
                    message: "x".into(),
                    retryable: false,
                    retry_after_ms: None,
                },
                false,
            ),
            (
                SandboxError::Load {
                    message: "x".into(),
                },
                true,
            ),
            (
                SandboxError::Incompatible {
                    message: "x".into(),
                },
                false,
            ),
            (
                SandboxError::Config {
                    message: "x".into(),
                },
                false,
            ),
            (
                SandboxError::Internal {
                    message: "x".into(),
                },
                true,
            ),
        ];
        for (e, retryable) in cases {
            let v = serde_json::to_value(&e).unwrap();
            assert_eq!(v["kind"], e.kind());
            assert_eq!(e.is_retryable(), retryable, "{e:?}");
            assert_eq!(serde_json::from_value::<SandboxError>(v).unwrap(), e);
        }
    }
}
