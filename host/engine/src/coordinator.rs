//! The test coordinator: runs a task synchronously to its end on a fake clock.
//!
//! Each round claims every step that is ready at the clock's `now`, runs them, and records
//! their outcomes through the same decision code as the worker. When nothing is ready, the
//! clock jumps to the earliest future `ready_at` of the task's steps, so backoff and
//! server-requested delays are honoured at their exact instants without sleeping.
//!
//! It claims whatever is ready in the database, so give each test its own database.

use std::sync::Arc;
use std::time::Duration;

use chrono::{DateTime, Utc};
use futures::future::join_all;
use serde_json::Value;
use tasker_core::clock::{Clock, ManualClock};
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_store::{
    ClaimedStep, NewTask, RetryDecision, StepCompletion, StepFailure, StepRow, Store, StoreError,
    TaskId,
};
use thiserror::Error;

use crate::event::EventBus;
use crate::executor::{Execution, Executor};
use crate::policy::{self, Policies};
use crate::record::{self, Record};
use crate::worker::TemplateCache;

/// Why a coordinated run could not finish.
#[derive(Debug, Error)]
pub enum CoordinatorError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("task {0} does not exist")]
    NoSuchTask(TaskId),
    #[error("task {task_id} is {state} but no step can ever run: {steps}")]
    Stuck {
        task_id: TaskId,
        state: TaskState,
        steps: String,
    },
    #[error("task {0} did not finish within {1} rounds")]
    TooManyRounds(TaskId, usize),
    #[error("the task context is invalid: {0}")]
    Context(String),
}

/// One attempt as the coordinator saw it.
#[derive(Debug, Clone, PartialEq)]
pub struct AttemptRecord {
    /// The fake-clock instant the attempt ran at.
    pub at: DateTime<Utc>,
    /// The claim round it ran in (0-based). Without failures, a step runs in the round equal
    /// to its dependency level.
    pub round: usize,
    pub task_id: TaskId,
    pub step: String,
    pub attempt: u32,
    /// `None` for success; otherwise the error kind.
    pub error_kind: Option<ErrorKind>,
    pub decision: Option<RetryDecision>,
    pub next_ready_at: Option<DateTime<Utc>>,
    /// The store refused the outcome (stale token...).
    pub refused: bool,
}

/// The end of a coordinated run.
#[derive(Debug, Clone)]
pub struct RunReport {
    pub task_id: TaskId,
    pub state: TaskState,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub attempts: Vec<AttemptRecord>,
    pub steps: Vec<StepRow>,
}

impl RunReport {
    /// The attempts of one step, in order.
    pub fn attempts_of(&self, step: &str) -> Vec<&AttemptRecord> {
        self.attempts.iter().filter(|a| a.step == step).collect()
    }

    pub fn step(&self, name: &str) -> Option<&StepRow> {
        self.steps.iter().find(|s| s.name == name)
    }
}

/// Drives tasks to their end in-process, with a [`ManualClock`].
pub struct Coordinator<S: Store, E: Executor> {
    store: Arc<S>,
    executor: Arc<E>,
    clock: ManualClock,
    bus: EventBus,
    templates: TemplateCache,
    policies: Policies,
    max_rounds: usize,
}

const WORKER: &str = "test-coordinator";
const LEASE: Duration = Duration::from_secs(300);

impl<S: Store + 'static, E: Executor> Coordinator<S, E> {
    pub fn new(store: Arc<S>, executor: E) -> Self {
        Coordinator {
            store,
            executor: Arc::new(executor),
            clock: ManualClock::at_epoch(),
            bus: EventBus::default(),
            templates: TemplateCache::default(),
            policies: Policies::default(),
            max_rounds: 10_000,
        }
    }

    pub fn with_clock(mut self, clock: ManualClock) -> Self {
        self.clock = clock;
        self
    }

    /// Ask steps' `retry_policy` components through `policies` (the worker's decision path).
    pub fn with_policies(mut self, policies: Policies) -> Self {
        self.policies = policies;
        self
    }

    pub fn with_bus(mut self, bus: EventBus) -> Self {
        self.bus = bus;
        self
    }

    pub fn clock(&self) -> &ManualClock {
        &self.clock
    }

    pub fn bus(&self) -> &EventBus {
        &self.bus
    }

    pub fn executor(&self) -> &E {
        &self.executor
    }

    pub fn store(&self) -> &S {
        &self.store
    }

    /// Registers `template` and creates a task for `context` at the clock's `now`.
    pub async fn submit(
        &self,
        template: &Template,
        context: Value,
    ) -> Result<TaskId, CoordinatorError> {
        template
            .validate_context(&context)
            .map_err(|e| CoordinatorError::Context(e.to_string()))?;
        self.store.register_template(template).await?;
        let mut req = NewTask::new(template.key(), context);
        let created = crate::ops::create_task(
            &*self.store,
            &self.bus,
            template,
            &mut req,
            self.clock.now(),
        )
        .await
        .map_err(|e| match e {
            crate::ops::OpsError::Store(e) => CoordinatorError::Store(e),
            crate::ops::OpsError::Context(e) => CoordinatorError::Context(e.to_string()),
        })?;
        Ok(created.task_id)
    }

    /// Submits and runs to the end.
    pub async fn run(
        &self,
        template: &Template,
        context: Value,
    ) -> Result<RunReport, CoordinatorError> {
        let id = self.submit(template, context).await?;
        self.run_task(id).await
    }

    /// Runs rounds until the task is complete, in error or cancelled.
    pub async fn run_task(&self, task_id: TaskId) -> Result<RunReport, CoordinatorError> {
        let started_at = self.clock.now();
        let mut attempts = Vec::new();
        let mut round = 0;
        for _ in 0..self.max_rounds {
            let now = self.clock.now();
            let claimed = self.store.claim(WORKER, 1000, LEASE, now).await?;
            if !claimed.is_empty() {
                attempts.extend(self.round(claimed, now, round).await?);
                round += 1;
                continue;
            }
            let task = self
                .store
                .task(task_id)
                .await?
                .ok_or(CoordinatorError::NoSuchTask(task_id))?;
            let steps = self.store.steps_of_task(task_id).await?;
            if matches!(
                task.state,
                TaskState::Complete | TaskState::Error | TaskState::Cancelled
            ) {
                return Ok(RunReport {
                    task_id,
                    state: task.state,
                    started_at,
                    finished_at: now,
                    attempts,
                    steps,
                });
            }
            match steps
                .iter()
                .filter_map(|s| s.ready_at)
                .filter(|t| *t > now)
                .min()
            {
                Some(next) => self.clock.set(next),
                None => {
                    let summary = steps
                        .iter()
                        .map(|s| format!("{}={}", s.name, s.state))
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(CoordinatorError::Stuck {
                        task_id,
                        state: task.state,
                        steps: summary,
                    });
                }
            }
        }
        Err(CoordinatorError::TooManyRounds(task_id, self.max_rounds))
    }

    async fn round(
        &self,
        claimed: Vec<ClaimedStep>,
        now: DateTime<Utc>,
        round: usize,
    ) -> Result<Vec<AttemptRecord>, CoordinatorError> {
        for job in claimed.iter().filter(|j| j.task_started) {
            self.bus.publish(crate::event::Event::task(
                tasker_core::events::TASK_STARTED,
                now,
                job.task_id,
            ));
        }
        let execs: Vec<Execution> = join_all(
            claimed
                .iter()
                .map(|c| crate::executor::execute_claimed(&*self.executor, c)),
        )
        .await;
        let mut done: Vec<(usize, StepCompletion)> = Vec::new();
        let mut failed: Vec<(usize, StepFailure)> = Vec::new();
        let mut failed_templates = Vec::new();
        for (i, (job, exec)) in claimed.iter().zip(&execs).enumerate() {
            let template = self.templates.get(&*self.store, &job.template_key).await;
            match record::to_record(job, exec, template.as_deref()) {
                Record::Done(d) => done.push((i, d)),
                Record::Failed(f) => {
                    failed.push((i, f));
                    failed_templates.push(template);
                }
            }
        }
        let base = |job: &ClaimedStep| AttemptRecord {
            at: now,
            round,
            task_id: job.task_id,
            step: job.step_name.clone(),
            attempt: job.attempt,
            error_kind: None,
            decision: None,
            next_ready_at: None,
            refused: false,
        };
        let mut out = Vec::new();
        let mut ends = record::TaskEnds::default();
        if !done.is_empty() {
            let items: Vec<_> = done.iter().map(|(_, d)| d.clone()).collect();
            let events: Vec<_> = done
                .iter()
                .flat_map(|(i, _)| record::custom_records(&claimed[*i], &execs[*i]))
                .collect();
            let recs = self
                .store
                .complete_with_events(&items, &events, now)
                .await?;
            for ((i, _), rec) in done.iter().zip(&recs) {
                let job = &claimed[*i];
                record::publish_custom(&self.bus, now, job, &execs[*i]);
                record::publish_completed(&self.bus, now, job, rec, &mut ends);
                out.push(AttemptRecord {
                    refused: rec.refusal.is_some(),
                    ..base(job)
                });
            }
        }
        if !failed.is_empty() {
            let mut items: Vec<_> = failed.iter().map(|(_, f)| f.clone()).collect();
            let steps: Vec<_> = failed
                .iter()
                .zip(&failed_templates)
                .map(|((i, _), t)| {
                    let job = &claimed[*i];
                    (job, t.as_deref().and_then(|t| t.step(&job.step_name)))
                })
                .collect();
            let decisions =
                policy::decide_failures(&*self.store, &self.policies, &steps, &mut items, now)
                    .await;
            let events: Vec<_> = failed
                .iter()
                .flat_map(|(i, _)| record::custom_records(&claimed[*i], &execs[*i]))
                .collect();
            let recs = self
                .store
                .fail_decided(&items, &decisions, &events, now)
                .await?;
            for (((i, _), f), rec) in failed.iter().zip(&items).zip(&recs) {
                let job = &claimed[*i];
                record::publish_custom(&self.bus, now, job, &execs[*i]);
                record::publish_failed(&self.bus, now, job, f, rec, &mut ends);
                out.push(AttemptRecord {
                    error_kind: Some(f.error_kind),
                    decision: rec.decision,
                    next_ready_at: rec.next_ready_at,
                    refused: rec.refusal.is_some(),
                    ..base(job)
                });
            }
        }
        ends.publish(&self.bus, now);
        out.sort_by(|a, b| a.step.cmp(&b.step));
        Ok(out)
    }
}
