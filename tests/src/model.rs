//! A reference model of the stores' scheduling semantics, in plain Rust with no I/O: the
//! state of every task and step, what each operation of the [`Store`](tasker_store::Store)
//! trait does to it, and what readiness and the execution context report.
//!
//! Written from the README (states, retries, readiness), `tasker_core` (state machines,
//! backoff) and the stores' functions. Readiness is computed from first principles (parents'
//! states, attempts, the backoff formula) while claims follow the queue of `ready_at`
//! instants, as the stores do, so the two can be checked against each other too.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::{Map, Value};
use tasker_core::backoff::{Backoff, MAX_DELAY_MS};
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_store::{
    CancelOutcome, CompletionOutcome, ExecutionContext, ExpiredLease, FailureOutcome,
    HeartbeatOutcome, Lease, ReadinessRow, Refusal, ReleaseOutcome, ResolveOutcome, RetryDecision,
    RetryOutcome, StepId, TaskId,
};

/// Lease losses a step survives before it ends in error (not a template setting).
pub const MAX_LEASE_LOSSES: u32 = tasker_store::DEFAULT_MAX_LEASE_LOSSES;

/// One step of one task.
#[derive(Debug, Clone)]
pub struct MStep {
    pub id: StepId,
    pub task_id: TaskId,
    pub name: String,
    pub parents: Vec<StepId>,
    pub children: Vec<StepId>,
    pub state: StepState,
    /// Parents neither complete nor resolved.
    pub unfinished_parents: u32,
    /// In the claim queue from this instant (set iff pending or waiting, parents done).
    pub ready_at: Option<DateTime<Utc>>,
    pub attempts: u32,
    pub max_attempts: u32,
    pub retryable: bool,
    pub backoff: Backoff,
    pub max_retry_after_ms: u64,
    /// The fencing token: claims so far.
    pub claim_count: i64,
    pub lease_losses: u32,
    pub worker: Option<String>,
    pub lease_expires_at: Option<DateTime<Utc>>,
    pub last_attempted_at: Option<DateTime<Utc>>,
    pub last_failure_at: Option<DateTime<Utc>>,
    pub backoff_request_ms: Option<i64>,
    pub result: Option<Value>,
}

#[derive(Debug, Clone)]
pub struct MTask {
    pub id: TaskId,
    pub template_key: String,
    pub context: Value,
    pub state: TaskState,
    /// Step ids, ascending.
    pub steps: Vec<StepId>,
    pub unfinished_steps: u32,
    pub error_steps: u32,
}

/// What a claim hands a worker, as far as scheduling decides it.
#[derive(Debug, Clone, PartialEq)]
pub struct MClaim {
    pub step_id: StepId,
    pub task_id: TaskId,
    pub token: i64,
    pub attempt: u32,
    pub max_attempts: u32,
    pub step_name: String,
    pub lease_expires_at: DateTime<Utc>,
    pub task_started: bool,
    pub parent_results: Value,
    pub context: Value,
    pub template_key: String,
}

/// Why an operator's call was refused as a whole.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MError {
    NotFound,
    InvalidState,
}

/// PostgreSQL's per-session claim cursor: where the last full claim ended.
#[derive(Debug, Clone, Copy)]
struct Cursor {
    at: DateTime<Utc>,
    id: StepId,
    scans: u32,
}

#[derive(Debug, Clone, Default)]
pub struct Model {
    pub tasks: BTreeMap<TaskId, MTask>,
    pub steps: BTreeMap<StepId, MStep>,
    /// Whether claims resume after the last full claim (PostgreSQL, one session) or always
    /// read the queue head (SQLite).
    claim_cursor: bool,
    cursor: Option<Cursor>,
}

/// `t + ms`.
pub fn plus_ms(t: DateTime<Utc>, ms: i64) -> DateTime<Utc> {
    t + chrono::Duration::milliseconds(ms)
}

fn plus(t: DateTime<Utc>, d: Duration) -> DateTime<Utc> {
    t + chrono::Duration::from_std(d).expect("a short lease")
}

/// `round(100 * done / total, 2)`, half away from zero; 0 without steps.
pub fn percentage(done: u32, total: u32) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let (q, total) = (10_000 * u64::from(done), u64::from(total));
    let hundredths = q / total + u64::from(2 * (q % total) >= total);
    hundredths as f64 / 100.0
}

impl Model {
    pub fn new(claim_cursor: bool) -> Self {
        Model {
            claim_cursor,
            ..Model::default()
        }
    }

    pub fn step(&self, id: StepId) -> &MStep {
        &self.steps[&id]
    }

    /// A new task whose steps got `ids` (by template position): roots are queued now.
    pub fn create_task(
        &mut self,
        task_id: TaskId,
        t: &Template,
        ids: &[StepId],
        context: Value,
        now: DateTime<Utc>,
    ) {
        let pos: BTreeMap<&str, usize> = t
            .steps
            .iter()
            .enumerate()
            .map(|(i, s)| (s.name.as_str(), i))
            .collect();
        for (i, s) in t.steps.iter().enumerate() {
            let parents: Vec<StepId> = s.depends_on.iter().map(|d| ids[pos[d.as_str()]]).collect();
            let step = MStep {
                id: ids[i],
                task_id,
                name: s.name.clone(),
                unfinished_parents: parents.len() as u32,
                ready_at: parents.is_empty().then_some(now),
                parents,
                children: Vec::new(),
                state: StepState::Pending,
                attempts: 0,
                max_attempts: s.retry.max_attempts,
                retryable: s.retry.retryable,
                backoff: s.retry.backoff,
                max_retry_after_ms: s.retry.max_retry_after_ms,
                claim_count: 0,
                lease_losses: 0,
                worker: None,
                lease_expires_at: None,
                last_attempted_at: None,
                last_failure_at: None,
                backoff_request_ms: None,
                result: None,
            };
            self.steps.insert(ids[i], step);
        }
        for (i, s) in t.steps.iter().enumerate() {
            for d in &s.depends_on {
                let p = ids[pos[d.as_str()]];
                let children = &mut self.steps.get_mut(&p).expect("parent").children;
                if !children.contains(&ids[i]) {
                    children.push(ids[i]);
                }
            }
        }
        let mut steps: Vec<StepId> = ids.to_vec();
        steps.sort_unstable();
        self.tasks.insert(
            task_id,
            MTask {
                id: task_id,
                template_key: t.key(),
                context,
                state: TaskState::Pending,
                unfinished_steps: steps.len() as u32,
                error_steps: 0,
                steps,
            },
        );
    }

    /// Steps in the claim queue at `now`, oldest `ready_at` first, then by id.
    pub fn queue(&self, now: DateTime<Utc>) -> Vec<(DateTime<Utc>, StepId)> {
        let mut q: Vec<_> = self
            .steps
            .values()
            .filter_map(|s| s.ready_at.filter(|t| *t <= now).map(|t| (t, s.id)))
            .collect();
        q.sort_unstable();
        q
    }

    /// The earliest `ready_at` of any step, due or not.
    pub fn next_ready_at(&self) -> Option<DateTime<Utc>> {
        self.steps.values().filter_map(|s| s.ready_at).min()
    }

    /// Claim up to `limit` steps: the queue head on SQLite; on PostgreSQL from the session's
    /// cursor on, then from the head for the rest (`claim_ready_steps`).
    pub fn claim(
        &mut self,
        worker: &str,
        limit: u32,
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Vec<MClaim> {
        let limit = limit as usize;
        let queue = self.queue(now);
        let mut after = if self.claim_cursor {
            self.cursor.filter(|c| c.scans < 64 && c.at <= now)
        } else {
            None
        };
        let mut scans = after.map_or(0, |c| c.scans);
        let mut picked: Vec<StepId> = Vec::new();
        let mut last = None;
        loop {
            let batch: Vec<(DateTime<Utc>, StepId)> = queue
                .iter()
                .filter(|e| after.is_none_or(|c| **e > (c.at, c.id)) && !picked.contains(&e.1))
                .take(limit - picked.len())
                .copied()
                .collect();
            if let Some(l) = batch.last() {
                last = Some(*l);
            }
            picked.extend(batch.iter().map(|e| e.1));
            if picked.len() >= limit || after.is_none() {
                break;
            }
            after = None;
            scans = 0;
        }
        if self.claim_cursor {
            self.cursor = match last {
                Some((at, id)) if picked.len() >= limit => Some(Cursor {
                    at,
                    id,
                    scans: scans + 1,
                }),
                _ => None,
            };
        }
        picked.sort_unstable();

        let mut started = BTreeSet::new();
        for id in &picked {
            let task_id = self.steps[id].task_id;
            let task = self.tasks.get_mut(&task_id).expect("task");
            if task.state == TaskState::Pending {
                task.state = TaskState::InProgress;
                started.insert(task_id);
            }
        }
        let expires = plus(now, lease);
        let mut out = Vec::with_capacity(picked.len());
        for id in picked {
            let s = self.steps.get_mut(&id).expect("step");
            s.state = StepState::InProgress;
            s.ready_at = None;
            s.claim_count += 1;
            s.worker = Some(worker.to_owned());
            s.last_attempted_at = Some(now);
            s.lease_expires_at = Some(expires);
            let s = &self.steps[&id];
            let task = &self.tasks[&s.task_id];
            let parent_results: Map<String, Value> = s
                .parents
                .iter()
                .map(|p| {
                    let p = &self.steps[p];
                    (p.name.clone(), p.result.clone().unwrap_or(Value::Null))
                })
                .collect();
            out.push(MClaim {
                step_id: id,
                task_id: s.task_id,
                token: s.claim_count,
                attempt: s.attempts + 1,
                max_attempts: s.max_attempts,
                step_name: s.name.clone(),
                lease_expires_at: expires,
                task_started: started.contains(&s.task_id),
                parent_results: Value::Object(parent_results),
                context: task.context.clone(),
                template_key: task.template_key.clone(),
            });
        }
        out
    }

    /// Why an item naming `id` under `token` is refused.
    fn refusal(&self, id: StepId, token: i64, duplicate: bool) -> Refusal {
        match self.steps.get(&id) {
            _ if duplicate => Refusal::DuplicateInBatch,
            None => Refusal::UnknownStep,
            Some(s) if s.state == StepState::Cancelled => Refusal::Cancelled,
            Some(s) if s.claim_count != token => Refusal::StaleToken,
            Some(s) if s.state != StepState::InProgress => Refusal::NotInProgress,
            Some(_) => Refusal::Other("refused".into()),
        }
    }

    fn held(&self, id: StepId, token: i64) -> bool {
        self.steps
            .get(&id)
            .is_some_and(|s| s.state == StepState::InProgress && s.claim_count == token)
    }

    /// Children of steps that just finished lose a parent; those left with none are queued.
    /// Returns how many were.
    fn release_children(&mut self, parents: &[StepId], now: DateTime<Utc>) -> u32 {
        let mut ready = 0;
        for p in parents {
            for c in self.steps[p].children.clone() {
                let c = self.steps.get_mut(&c).expect("child");
                c.unfinished_parents -= 1;
                if c.unfinished_parents == 0
                    && matches!(c.state, StepState::Pending | StepState::WaitingForRetry)
                {
                    c.ready_at = Some(now);
                    ready += 1;
                }
            }
        }
        ready
    }

    /// Could anything of the task still move without an operator?
    fn can_move(&self, task: TaskId) -> bool {
        self.tasks[&task].steps.iter().any(|id| {
            let s = &self.steps[id];
            matches!(s.state, StepState::InProgress | StepState::WaitingForRetry)
                || s.ready_at.is_some()
        })
    }

    /// Complete when no step is unfinished; error when a step is in error and nothing can
    /// move. Returns the tasks that finished.
    fn finalize(&mut self, tasks: &BTreeSet<TaskId>) -> BTreeMap<TaskId, TaskState> {
        let mut out = BTreeMap::new();
        for &id in tasks {
            let t = &self.tasks[&id];
            if !matches!(t.state, TaskState::Pending | TaskState::InProgress) {
                continue;
            }
            let to = if t.unfinished_steps == 0 {
                TaskState::Complete
            } else if t.error_steps > 0 && !self.can_move(id) {
                TaskState::Error
            } else {
                continue;
            };
            self.tasks.get_mut(&id).expect("task").state = to;
            out.insert(id, to);
        }
        out
    }

    fn first_occurrences(ids: impl Iterator<Item = StepId>) -> Vec<bool> {
        let mut seen = BTreeSet::new();
        ids.map(|id| seen.insert(id)).collect()
    }

    pub fn complete(
        &mut self,
        items: &[(Lease, Value)],
        now: DateTime<Utc>,
    ) -> Vec<CompletionOutcome> {
        let first = Self::first_occurrences(items.iter().map(|(l, _)| l.step_id));
        let accepted: Vec<bool> = items
            .iter()
            .zip(&first)
            .map(|((l, _), f)| *f && self.held(l.step_id, l.token))
            .collect();
        let refusals: Vec<Option<Refusal>> = items
            .iter()
            .zip(&first)
            .zip(&accepted)
            .map(|(((l, _), f), a)| (!a).then(|| self.refusal(l.step_id, l.token, !f)))
            .collect();
        let mut done = Vec::new();
        let mut tasks = BTreeSet::new();
        for ((l, result), a) in items.iter().zip(&accepted) {
            if !a {
                continue;
            }
            let s = self.steps.get_mut(&l.step_id).expect("step");
            s.state = StepState::Complete;
            s.result = Some(result.clone());
            s.attempts += 1;
            s.lease_expires_at = None;
            let task = s.task_id;
            self.tasks.get_mut(&task).expect("task").unfinished_steps -= 1;
            tasks.insert(task);
            done.push(l.step_id);
        }
        self.release_children(&done, now);
        let finalized = self.finalize(&tasks);
        items
            .iter()
            .zip(refusals)
            .map(|((l, _), refusal)| {
                let task_id = self.steps.get(&l.step_id).map(|s| s.task_id);
                CompletionOutcome {
                    step_id: l.step_id,
                    task_id,
                    task_finalized: match refusal {
                        None => task_id.and_then(|t| finalized.get(&t).copied()),
                        Some(_) => None,
                    },
                    refusal,
                }
            })
            .collect()
    }

    /// Failures `(lease, retryable, retry_after_ms)`: retry, permanent or exhausted.
    pub fn fail(
        &mut self,
        items: &[(Lease, bool, Option<u64>)],
        now: DateTime<Utc>,
    ) -> Vec<FailureOutcome> {
        let first = Self::first_occurrences(items.iter().map(|(l, _, _)| l.step_id));
        let mut out = Vec::with_capacity(items.len());
        let mut tasks = BTreeSet::new();
        for ((l, retryable, retry_after), f) in items.iter().zip(&first) {
            if !(*f && self.held(l.step_id, l.token)) {
                out.push(FailureOutcome {
                    step_id: l.step_id,
                    task_id: self.steps.get(&l.step_id).map(|s| s.task_id),
                    refusal: Some(self.refusal(l.step_id, l.token, !f)),
                    decision: None,
                    next_ready_at: None,
                    task_finalized: None,
                });
                continue;
            }
            let s = self.steps.get_mut(&l.step_id).expect("step");
            let decision = if !(*retryable && s.retryable) {
                RetryDecision::Permanent
            } else if s.attempts + 1 >= s.max_attempts {
                RetryDecision::Exhausted
            } else {
                RetryDecision::Retry
            };
            let requested = retry_after.map(|ms| ms.min(s.max_retry_after_ms) as i64);
            let backoff = s.backoff.delay_ms(s.id.get(), s.attempts + 1) as i64;
            s.attempts += 1;
            s.lease_expires_at = None;
            s.last_failure_at = Some(now);
            if decision == RetryDecision::Retry {
                let delay = requested.unwrap_or(backoff).clamp(0, MAX_DELAY_MS as i64);
                s.state = StepState::WaitingForRetry;
                s.ready_at = Some(plus_ms(now, delay));
                s.backoff_request_ms = requested;
            } else {
                s.state = StepState::Error;
                s.ready_at = None;
                s.backoff_request_ms = None;
            }
            let (task, state, ready_at) = (s.task_id, s.state, s.ready_at);
            if state == StepState::Error {
                self.tasks.get_mut(&task).expect("task").error_steps += 1;
            }
            tasks.insert(task);
            out.push(FailureOutcome {
                step_id: l.step_id,
                task_id: Some(task),
                refusal: None,
                decision: Some(decision),
                next_ready_at: ready_at,
                task_finalized: None,
            });
        }
        let finalized = self.finalize(&tasks);
        for o in &mut out {
            if o.refusal.is_none() {
                o.task_finalized = o.task_id.and_then(|t| finalized.get(&t).copied());
            }
        }
        out
    }

    pub fn heartbeat(
        &mut self,
        worker: &str,
        leases: &[Lease],
        lease: Duration,
        now: DateTime<Utc>,
    ) -> Vec<HeartbeatOutcome> {
        let expires = plus(now, lease);
        let mut extended = BTreeSet::new();
        for l in leases {
            if self.held(l.step_id, l.token)
                && self.steps[&l.step_id].worker.as_deref() == Some(worker)
            {
                self.steps
                    .get_mut(&l.step_id)
                    .expect("step")
                    .lease_expires_at = Some(expires);
                extended.insert(l.step_id);
            }
        }
        // Answered per step: every item of an extended step reports its new expiry.
        leases
            .iter()
            .map(|l| HeartbeatOutcome {
                step_id: l.step_id,
                lease_expires_at: extended.contains(&l.step_id).then_some(expires),
            })
            .collect()
    }

    /// Steps whose lease ended before `now` (oldest lease first, at most `limit`) go back to
    /// waiting_for_retry, claimable at once, or to error on their last allowed loss.
    pub fn expire_leases(&mut self, now: DateTime<Utc>, limit: u32) -> Vec<ExpiredLease> {
        let mut due: Vec<(DateTime<Utc>, StepId)> = self
            .steps
            .values()
            .filter_map(|s| s.lease_expires_at.filter(|t| *t < now).map(|t| (t, s.id)))
            .collect();
        due.sort_unstable();
        due.truncate(limit as usize);
        let mut ids: Vec<StepId> = due.into_iter().map(|(_, id)| id).collect();
        ids.sort_unstable();
        let mut out = Vec::new();
        let mut errors = false;
        for id in ids {
            let s = self.steps.get_mut(&id).expect("step");
            s.lease_losses += 1;
            let last = s.lease_losses >= MAX_LEASE_LOSSES;
            s.state = if last {
                StepState::Error
            } else {
                StepState::WaitingForRetry
            };
            s.ready_at = (!last).then_some(now);
            s.backoff_request_ms = Some(0);
            s.lease_expires_at = None;
            s.last_failure_at = Some(now);
            out.push(ExpiredLease {
                step_id: id,
                task_id: s.task_id,
                worker: s.worker.clone(),
                token: s.claim_count,
                state: s.state,
                lease_losses: s.lease_losses,
                task_finalized: None,
            });
            if last {
                errors = true;
                let task = s.task_id;
                self.tasks.get_mut(&task).expect("task").error_steps += 1;
            }
        }
        if errors {
            let tasks = out.iter().map(|e| e.task_id).collect();
            let finalized = self.finalize(&tasks);
            for e in &mut out {
                e.task_finalized = finalized.get(&e.task_id).copied();
            }
        }
        out
    }

    pub fn release(
        &mut self,
        worker: &str,
        leases: &[Lease],
        now: DateTime<Utc>,
    ) -> Vec<ReleaseOutcome> {
        let first = Self::first_occurrences(leases.iter().map(|l| l.step_id));
        let mut out = Vec::with_capacity(leases.len());
        let mut released = Vec::new();
        for (l, f) in leases.iter().zip(&first) {
            let mine = self
                .steps
                .get(&l.step_id)
                .is_some_and(|s| s.worker.as_deref() == Some(worker));
            let held = self.held(l.step_id, l.token);
            let refusal = if *f && held && mine {
                released.push(l.step_id);
                None
            } else if held && !mine {
                Some(Refusal::OtherWorker)
            } else {
                Some(self.refusal(l.step_id, l.token, !f))
            };
            out.push(ReleaseOutcome {
                step_id: l.step_id,
                refusal,
            });
        }
        for id in released {
            let s = self.steps.get_mut(&id).expect("step");
            s.state = StepState::WaitingForRetry;
            s.ready_at = Some(now);
            s.backoff_request_ms = Some(0);
            s.lease_expires_at = None;
            s.last_failure_at = Some(now);
        }
        out
    }

    pub fn cancel_task(&mut self, task_id: TaskId) -> Result<CancelOutcome, MError> {
        let task = self.tasks.get(&task_id).ok_or(MError::NotFound)?;
        match task.state {
            TaskState::Cancelled => {
                return Ok(CancelOutcome {
                    task_id,
                    cancelled: false,
                    steps_cancelled: 0,
                });
            }
            TaskState::Complete => return Err(MError::InvalidState),
            _ => {}
        }
        let mut n = 0;
        for id in task.steps.clone() {
            let s = self.steps.get_mut(&id).expect("step");
            if matches!(
                s.state,
                StepState::Pending
                    | StepState::InProgress
                    | StepState::WaitingForRetry
                    | StepState::Error
            ) {
                s.state = StepState::Cancelled;
                s.ready_at = None;
                s.lease_expires_at = None;
                n += 1;
            }
        }
        self.tasks.get_mut(&task_id).expect("task").state = TaskState::Cancelled;
        Ok(CancelOutcome {
            task_id,
            cancelled: true,
            steps_cancelled: n,
        })
    }

    /// A task in error: its error steps start afresh.
    pub fn retry_task(
        &mut self,
        task_id: TaskId,
        now: DateTime<Utc>,
    ) -> Result<RetryOutcome, MError> {
        let task = self.tasks.get(&task_id).ok_or(MError::NotFound)?;
        if task.state != TaskState::Error {
            return Err(MError::InvalidState);
        }
        let mut n = 0;
        for id in task.steps.clone() {
            let s = self.steps.get_mut(&id).expect("step");
            if s.state == StepState::Error {
                s.state = StepState::Pending;
                s.attempts = 0;
                s.lease_losses = 0;
                s.ready_at = (s.unfinished_parents == 0).then_some(now);
                s.backoff_request_ms = None;
                n += 1;
            }
        }
        let task = self.tasks.get_mut(&task_id).expect("task");
        task.state = TaskState::Pending;
        task.error_steps = 0;
        Ok(RetryOutcome {
            task_id,
            steps_reset: n,
        })
    }

    /// An operator marks a pending, waiting or failed step done; its children are released.
    pub fn resolve_step(
        &mut self,
        step_id: StepId,
        result: Option<Value>,
        now: DateTime<Utc>,
    ) -> Result<ResolveOutcome, MError> {
        let s = self.steps.get_mut(&step_id).ok_or(MError::NotFound)?;
        let was = s.state;
        if !matches!(
            was,
            StepState::Pending | StepState::WaitingForRetry | StepState::Error
        ) {
            return Err(MError::InvalidState);
        }
        s.state = StepState::ResolvedManually;
        s.ready_at = None;
        s.result = result;
        let task_id = s.task_id;
        let ready = self.release_children(&[step_id], now);
        let task = self.tasks.get_mut(&task_id).expect("task");
        task.unfinished_steps -= 1;
        if was == StepState::Error {
            task.error_steps -= 1;
        }
        if task.state == TaskState::Error {
            let (unfinished, errors) = (task.unfinished_steps, task.error_steps);
            if unfinished == 0 || errors == 0 || self.can_move(task_id) {
                self.tasks.get_mut(&task_id).expect("task").state = TaskState::Pending;
            }
        }
        self.finalize(&BTreeSet::from([task_id]));
        Ok(ResolveOutcome {
            step_id,
            task_id,
            ready_children: ready,
            task_state: self.tasks[&task_id].state,
        })
    }

    /// `get_step_readiness_status` of one step, from the DAG and the step's history.
    pub fn readiness_row(&self, id: StepId, now: DateTime<Utc>) -> ReadinessRow {
        let s = &self.steps[&id];
        let total = s.parents.len() as u32;
        let done = s
            .parents
            .iter()
            .filter(|p| self.steps[p].state.is_finished())
            .count() as u32;
        let waiting = matches!(s.state, StepState::Pending | StepState::WaitingForRetry);
        let retry_eligible = waiting && s.attempts < s.max_attempts;
        // Waiting for a retry: the last interruption plus the requested delay, else the
        // backoff of the failure count.
        let next_retry_at = match (s.state, s.last_failure_at) {
            (StepState::WaitingForRetry, Some(at)) => {
                let delay = s
                    .backoff_request_ms
                    .unwrap_or_else(|| s.backoff.delay_ms(s.id.get(), s.attempts) as i64);
                Some(plus_ms(at, delay.clamp(0, MAX_DELAY_MS as i64)))
            }
            _ => None,
        };
        let ready =
            waiting && total == done && retry_eligible && next_retry_at.is_none_or(|t| t <= now);
        ReadinessRow {
            step_id: id,
            task_id: s.task_id,
            name: s.name.clone(),
            state: s.state,
            dependencies_satisfied: total == done,
            total_parents: total,
            completed_parents: done,
            retry_eligible,
            attempts: s.attempts,
            max_attempts: s.max_attempts,
            retryable: s.retryable,
            next_retry_at,
            last_attempted_at: s.last_attempted_at,
            last_failure_at: s.last_failure_at,
            backoff_request_ms: s.backoff_request_ms,
            ready_for_execution: ready,
            // The model's tasks all have the default priority and start at creation, so no
            // ready step has one of higher priority ahead of it.
            priority: tasker_core::priority::Priority::DEFAULT,
            not_before: None,
            ahead: ready.then_some(0),
            // The model's templates have no concurrency key.
            concurrency: None,
        }
    }

    /// Readiness of every step of the tasks, by task then step id.
    pub fn readiness(&self, tasks: &[TaskId], now: DateTime<Utc>) -> Vec<ReadinessRow> {
        let mut tasks: Vec<TaskId> = tasks.to_vec();
        tasks.sort_unstable();
        tasks.dedup();
        tasks
            .iter()
            .filter_map(|t| self.tasks.get(t))
            .flat_map(|t| t.steps.iter().map(|id| self.readiness_row(*id, now)))
            .collect()
    }

    /// `get_task_execution_context`: counts by state, then the status by precedence (ready >
    /// processing > blocked > all complete > cancelled > waiting for dependencies).
    pub fn execution_context(&self, task_id: TaskId, now: DateTime<Utc>) -> ExecutionContext {
        let task = &self.tasks[&task_id];
        let rows = self.readiness(&[task_id], now);
        let count = |st: StepState| rows.iter().filter(|r| r.state == st).count() as u32;
        let total = rows.len() as u32;
        let pending = count(StepState::Pending);
        let in_progress = count(StepState::InProgress);
        let waiting = count(StepState::WaitingForRetry);
        let complete = count(StepState::Complete);
        let resolved = count(StepState::ResolvedManually);
        let failed = count(StepState::Error);
        let cancelled = count(StepState::Cancelled);
        let ready = rows.iter().filter(|r| r.ready_for_execution).count() as u32;
        let status = if ready > 0 {
            "has_ready_steps"
        } else if in_progress > 0 || waiting > 0 {
            "processing"
        } else if failed > 0 {
            "blocked_by_failures"
        } else if complete + resolved == total {
            "all_complete"
        } else if cancelled > 0 || task.state == TaskState::Cancelled {
            "cancelled"
        } else {
            "waiting_for_dependencies"
        };
        let action = match status {
            "has_ready_steps" => "execute_ready_steps",
            "processing" => "wait_for_completion",
            "blocked_by_failures" => "handle_failures",
            "all_complete" if task.state == TaskState::Complete => "none",
            "all_complete" => "finalize_task",
            "cancelled" => "none",
            _ => "wait_for_dependencies",
        };
        let health = match status {
            "blocked_by_failures" => "blocked",
            "cancelled" => "unknown",
            _ if waiting > 0 || failed > 0 => "recovering",
            _ => "healthy",
        };
        ExecutionContext {
            task_id,
            task_state: task.state,
            total_steps: total,
            pending_steps: pending,
            in_progress_steps: in_progress,
            waiting_for_retry_steps: waiting,
            completed_steps: complete,
            resolved_steps: resolved,
            failed_steps: failed,
            cancelled_steps: cancelled,
            ready_steps: ready,
            execution_status: status.to_owned(),
            recommended_action: action.to_owned(),
            completion_percentage: percentage(complete + resolved, total),
            health_status: health.to_owned(),
        }
    }
}
