//! The per-step metrics (names in `tasker_core::metrics`), labelled by template, step and
//! handler. A worker keeps each label set's handles once, so that the hot path records
//! without building labels; the handles come from the recorder installed when the worker
//! was built (binaries install theirs first).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use metrics::{Counter, Histogram, Label};
use tasker_core::error_kind::ErrorKind;
use tasker_core::metrics as m;
use tasker_store::{Accounting, ClaimedStep, RetryDecision};

/// The handles of one (template, step, handler).
pub struct StepMetrics {
    labels: Vec<Label>,
    started: Counter,
    completed: Counter,
    retried: Counter,
    exhausted: Counter,
    succeeded_in: Histogram,
    failed_in: Histogram,
    fuel: Histogram,
    memory: Histogram,
    /// By error kind, registered on first use.
    failed: Mutex<HashMap<ErrorKind, Counter>>,
}

impl StepMetrics {
    /// Fresh handles for this step (the slow path: labels built here).
    pub fn of(job: &ClaimedStep) -> StepMetrics {
        let labels = vec![
            Label::new("template", job.template_key.clone()),
            Label::new("step", job.step_name.clone()),
            Label::new("handler", job.handler.to_string()),
        ];
        let with = |k: &'static str, v: &'static str| {
            let mut l = labels.clone();
            l.push(Label::new(k, v));
            l
        };
        StepMetrics {
            started: metrics::counter!(m::STEPS_STARTED, labels.clone()),
            completed: metrics::counter!(m::STEPS_COMPLETED, labels.clone()),
            retried: metrics::counter!(m::STEPS_RETRIED, labels.clone()),
            exhausted: metrics::counter!(m::STEPS_EXHAUSTED, labels.clone()),
            succeeded_in: metrics::histogram!(m::STEP_DURATION, with("outcome", "completed")),
            failed_in: metrics::histogram!(m::STEP_DURATION, with("outcome", "failed")),
            fuel: metrics::histogram!(m::STEP_FUEL, labels.clone()),
            memory: metrics::histogram!(m::STEP_MEMORY, labels.clone()),
            failed: Mutex::default(),
            labels,
        }
    }

    pub fn started(&self) {
        self.started.increment(1);
    }

    /// An attempt's wall time on the worker and its sandbox costs.
    pub fn ran(&self, seconds: f64, succeeded: bool, costs: &Accounting) {
        if succeeded {
            self.succeeded_in.record(seconds);
        } else {
            self.failed_in.record(seconds);
        }
        if let Some(f) = costs.fuel {
            self.fuel.record(f as f64);
        }
        if let Some(b) = costs.peak_memory_bytes {
            self.memory.record(b as f64);
        }
    }

    pub fn completed(&self) {
        self.completed.increment(1);
    }

    /// A recorded failure: by kind, and what the store decided.
    pub fn failed(&self, kind: ErrorKind, decision: Option<RetryDecision>) {
        let mut by_kind = self.failed.lock().unwrap_or_else(|e| e.into_inner());
        by_kind
            .entry(kind)
            .or_insert_with(|| {
                let mut l = self.labels.clone();
                l.push(Label::new("kind", kind.as_str()));
                metrics::counter!(m::STEPS_FAILED, l)
            })
            .increment(1);
        match decision {
            Some(RetryDecision::Retry) => self.retried.increment(1),
            Some(RetryDecision::Exhausted | RetryDecision::Permanent) => {
                self.exhausted.increment(1)
            }
            None => {}
        }
    }
}

/// A worker's handles by template and step (a template's step has one handler: templates
/// are immutable). Bounded: cleared when it would pass [`MAX_STEPS`].
#[derive(Default)]
pub struct StepMetricsCache(Mutex<HashMap<String, HashMap<String, Arc<StepMetrics>>>>);

/// Label sets a worker keeps at most.
const MAX_STEPS: usize = 10_000;

impl StepMetricsCache {
    pub fn get(&self, job: &ClaimedStep) -> Arc<StepMetrics> {
        let mut all = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(s) = all
            .get(&job.template_key)
            .and_then(|t| t.get(&job.step_name))
        {
            return s.clone();
        }
        if all.values().map(HashMap::len).sum::<usize>() >= MAX_STEPS {
            all.clear();
        }
        let s = Arc::new(StepMetrics::of(job));
        all.entry(job.template_key.clone())
            .or_default()
            .insert(job.step_name.clone(), s.clone());
        s
    }
}
