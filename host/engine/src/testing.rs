//! In-process executors for engine tests and the test coordinator. Nothing shipped runs
//! handlers this way: production uses the WASM sandbox.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::template::HandlerRef;
use tasker_store::ClaimedStep;

use crate::executor::{Execution, Executor, Outcome};

/// A handler written as a Rust closure.
pub type HandlerFn = Arc<dyn Fn(&ClaimedStep) -> Execution + Send + Sync>;

/// Runs handlers as closures, chosen by handler name (`name` of `name@version`). Unknown
/// handlers behave as no-ops that return `{"step": <name>, "attempt": <n>}`.
#[derive(Clone, Default)]
pub struct InProcessExecutor {
    handlers: HashMap<String, HandlerFn>,
}

impl InProcessExecutor {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn handler(
        mut self,
        name: &str,
        f: impl Fn(&ClaimedStep) -> Execution + Send + Sync + 'static,
    ) -> Self {
        self.handlers.insert(name.to_owned(), Arc::new(f));
        self
    }
}

fn handler_name(h: &HandlerRef) -> &str {
    match h {
        HandlerRef::Named { name, .. } => name,
        HandlerRef::Hash(hash) => hash,
    }
}

impl Executor for InProcessExecutor {
    async fn execute(&self, step: &ClaimedStep) -> Execution {
        match self.handlers.get(handler_name(&step.handler)) {
            Some(f) => f(step),
            None => Execution::success(json!({"step": step.step_name, "attempt": step.attempt})),
        }
    }
}

/// A planned failure: "fail this step N times".
#[derive(Debug, Clone, PartialEq)]
pub struct Fault {
    pub times: u32,
    pub kind: ErrorKind,
    pub message: String,
    /// The handler's own verdict (used for `handler_error`).
    pub retryable: bool,
    pub retry_after_ms: Option<u64>,
}

impl Fault {
    /// A handler error the handler calls retryable.
    pub fn retryable(times: u32) -> Fault {
        Fault {
            times,
            kind: ErrorKind::HandlerError,
            message: "injected retryable failure".into(),
            retryable: true,
            retry_after_ms: None,
        }
    }

    /// A handler error the handler calls permanent.
    pub fn permanent() -> Fault {
        Fault {
            times: 1,
            kind: ErrorKind::HandlerError,
            message: "injected permanent failure".into(),
            retryable: false,
            retry_after_ms: None,
        }
    }

    /// A sandbox failure of the given kind (its retryability follows the kind's default).
    pub fn of_kind(kind: ErrorKind, times: u32) -> Fault {
        Fault {
            times,
            kind,
            message: format!("injected {kind}"),
            retryable: kind.default_retryable().unwrap_or(true),
            retry_after_ms: None,
        }
    }

    pub fn with_retry_after(mut self, ms: u64) -> Fault {
        self.retry_after_ms = Some(ms);
        self
    }
}

/// Wraps an executor and makes chosen steps (by step name) fail their first N attempts.
pub struct FaultInjector<E> {
    inner: E,
    faults: Mutex<HashMap<String, (u32, Fault)>>,
}

impl<E: Executor> FaultInjector<E> {
    pub fn new(inner: E) -> Self {
        FaultInjector {
            inner,
            faults: Mutex::new(HashMap::new()),
        }
    }

    pub fn fail(self, step: &str, fault: Fault) -> Self {
        self.faults
            .lock()
            .expect("faults")
            .insert(step.to_owned(), (0, fault));
        self
    }

    /// How many faults were injected into `step` so far.
    pub fn injected(&self, step: &str) -> u32 {
        self.faults
            .lock()
            .expect("faults")
            .get(step)
            .map_or(0, |(n, _)| *n)
    }
}

impl<E: Executor> Executor for FaultInjector<E> {
    async fn execute(&self, step: &ClaimedStep) -> Execution {
        let fault = {
            let mut faults = self.faults.lock().expect("faults");
            match faults.get_mut(&step.step_name) {
                Some((used, f)) if *used < f.times => {
                    *used += 1;
                    Some(f.clone())
                }
                _ => None,
            }
        };
        match fault {
            Some(f) => Execution {
                outcome: Outcome::Failure {
                    kind: f.kind,
                    message: f.message,
                    handler_retryable: Some(f.retryable),
                    retry_after_ms: f.retry_after_ms,
                },
                accounting: Default::default(),
                events: Vec::new(),
                log: Default::default(),
            },
            None => self.inner.execute(step).await,
        }
    }
}

/// Echoes its inputs, for tests that check what a step was given.
pub fn echo(step: &ClaimedStep) -> Execution {
    Execution::success(json!({
        "step": step.step_name,
        "context": step.context,
        "parents": step.parent_results,
        "config": step.config,
    }))
}
