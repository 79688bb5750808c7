//! The narrow interface between the orchestrator and whatever runs a step.
//!
//! Production uses the WASM sandbox (`tasker-cli`'s `WasmExecutor`); engine tests may use the
//! in-process executor of [`crate::testing`]. The orchestrator only sees a claimed step in and
//! an [`Execution`] out.

use std::future::Future;

use serde_json::Value;
use tasker_core::error_kind::ErrorKind;
use tasker_store::{Accounting, AttemptLog, ClaimedStep};

/// How an attempt ended.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Success {
        result: Value,
    },
    Failure {
        kind: ErrorKind,
        message: String,
        /// The handler's own verdict, for [`ErrorKind::HandlerError`].
        handler_retryable: Option<bool>,
        /// A server-requested delay before the next attempt.
        retry_after_ms: Option<u64>,
    },
}

/// A custom event a handler emitted during its attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomEvent {
    pub name: String,
    pub payload: Value,
}

/// The result of running one attempt.
#[derive(Debug, Clone, PartialEq)]
pub struct Execution {
    pub outcome: Outcome,
    pub accounting: Accounting,
    pub events: Vec<CustomEvent>,
    /// What the handler said: log records, stdout, stderr.
    pub log: AttemptLog,
}

impl Execution {
    pub fn success(result: Value) -> Execution {
        Execution {
            outcome: Outcome::Success { result },
            accounting: Accounting::default(),
            events: Vec::new(),
            log: AttemptLog::default(),
        }
    }

    pub fn failure(kind: ErrorKind, message: impl Into<String>) -> Execution {
        Execution {
            outcome: Outcome::Failure {
                kind,
                message: message.into(),
                handler_retryable: None,
                retry_after_ms: None,
            },
            accounting: Accounting::default(),
            events: Vec::new(),
            log: AttemptLog::default(),
        }
    }
}

/// Runs step attempts. Implementations must not panic on bad handlers: every way a handler
/// can fail is an [`Outcome::Failure`].
pub trait Executor: Send + Sync + 'static {
    fn execute(&self, step: &ClaimedStep) -> impl Future<Output = Execution> + Send;
}

/// Run `step` on `executor`, unless its stored input could not be decoded: then it fails
/// permanently (`bad_output`: a parent or the task wrote data the store cannot hand back)
/// without running, and no other claim of the batch is affected.
pub async fn execute_claimed<E: Executor>(executor: &E, step: &ClaimedStep) -> Execution {
    match &step.defect {
        Some(defect) => Execution::failure(ErrorKind::BadOutput, defect.clone()),
        None => executor.execute(step).await,
    }
}
