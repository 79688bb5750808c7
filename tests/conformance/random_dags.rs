//! Readiness agreement on random DAGs (issue #13): a seed makes templates (up to 300 steps,
//! random edges from earlier to later steps, random retry settings) and a sequence of
//! operations (claims, completions, failures, heartbeats, releases, lease expiries, time
//! passing, manual resolves, cancels, task retries). Each operation runs on the store and on
//! the model of `tasker_tests::model`; after each one their outcomes, claims, readiness rows,
//! execution contexts, queue heads, task counters and step rows must agree.
//!
//! `TASKER_DAG_SEED=n` runs that seed alone; `TASKER_DAG_CASES=n` runs seeds 1..=n (default
//! [`CASES`]). Every case runs on one database after the previous one: its tasks are
//! cancelled at the end, so nothing of it is claimable or leased any more.

use std::any::Any;
use std::time::{Duration, Instant};

use chrono::{DateTime, TimeZone, Utc};
use rand::rngs::StdRng;
use rand::seq::{IndexedRandom, SliceRandom};
use rand::{Rng, SeedableRng};
use serde_json::{Value, json};
use sqlx::postgres::PgPoolOptions;
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::model::{MClaim, MError, Model, plus_ms};

/// Seeds per backend in CI.
const CASES: u64 = 120;
const WORKERS: [&str; 2] = ["w1", "w2"];
const LEASES_MS: [u64; 3] = [1_000, 5_000, 30_000];
/// A step id no store has.
const UNKNOWN_STEP: StepId = StepId::new(1 << 40);

fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

fn seeds() -> Vec<u64> {
    let var = |name: &str| {
        std::env::var(name).ok().map(|v| {
            v.trim()
                .parse::<u64>()
                .unwrap_or_else(|_| panic!("{name}={v} is not a number"))
        })
    };
    match var("TASKER_DAG_SEED") {
        Some(seed) => vec![seed],
        None => (1..=var("TASKER_DAG_CASES").unwrap_or(CASES)).collect(),
    }
}

#[derive(Debug, Clone)]
enum Op {
    Claim {
        worker: &'static str,
        limit: u32,
        lease_ms: u64,
    },
    Complete {
        items: Vec<Lease>,
    },
    CompleteAndClaim {
        items: Vec<Lease>,
        worker: &'static str,
        limit: u32,
        lease_ms: u64,
    },
    /// `(lease, retryable, retry_after_ms)`.
    Fail {
        items: Vec<(Lease, bool, Option<u64>)>,
    },
    Heartbeat {
        worker: &'static str,
        leases: Vec<Lease>,
        lease_ms: u64,
    },
    Release {
        worker: &'static str,
        leases: Vec<Lease>,
    },
    Advance {
        ms: i64,
    },
    ExpireLeases {
        limit: u32,
    },
    Resolve {
        step: StepId,
        result: Option<Value>,
    },
    Cancel {
        task: TaskId,
    },
    Retry {
        task: TaskId,
    },
    CreateTask {
        template: usize,
    },
}

/// Differences between two values, field by field: `what.field: model …, store …`.
macro_rules! diff {
    ($out:expr, $what:expr, $model:expr, $store:expr, [$($f:ident),+ $(,)?]) => {$(
        if $model.$f != $store.$f {
            $out.push(format!(
                "{}.{}: model {:?}, store {:?}",
                $what,
                stringify!($f),
                $model.$f,
                $store.$f
            ));
        }
    )+};
}

/// 1..=300 steps, mostly small.
fn size(rng: &mut StdRng) -> usize {
    match rng.random_range(0..100) {
        0..65 => rng.random_range(1..=10),
        65..90 => rng.random_range(11..=40),
        90..98 => rng.random_range(41..=120),
        _ => rng.random_range(121..=300),
    }
}

/// Random retry settings inside the validated ranges, as a YAML flow mapping (None: the
/// defaults).
fn retry_yaml(rng: &mut StdRng) -> Option<String> {
    if rng.random_bool(0.2) {
        return None;
    }
    let mut f = Vec::new();
    if rng.random_bool(0.7) {
        let max = if rng.random_bool(0.9) { 4 } else { 10 };
        f.push(format!("max_attempts: {}", rng.random_range(1..=max)));
    }
    if rng.random_bool(0.2) {
        f.push(format!("retryable: {}", rng.random_bool(0.6)));
    }
    if rng.random_bool(0.4) {
        f.push(format!(
            "max_retry_after_ms: {}",
            rng.random_range(0..=20_000u64)
        ));
    }
    if rng.random_bool(0.8) {
        let mut b = Vec::new();
        if rng.random_bool(0.7) {
            let base: u64 = if rng.random_bool(0.1) {
                0
            } else {
                rng.random_range(1..=3_000)
            };
            let cap = base + rng.random_range(0..=30_000u64);
            b.push(format!("base_ms: {base}"));
            b.push(format!("cap_ms: {cap}"));
        }
        if rng.random_bool(0.7) {
            let m = match rng.random_range(0..3) {
                0 => 1.0,
                1 => 2.0,
                _ => f64::from(rng.random_range(100..=400u32)) / 100.0,
            };
            b.push(format!("multiplier: {m:?}"));
        }
        if rng.random_bool(0.7) {
            let j = match rng.random_range(0..3) {
                0 => 0.0,
                1 => 0.1,
                _ => f64::from(rng.random_range(0..=1_000u32)) / 1_000.0,
            };
            b.push(format!("jitter: {j:?}"));
        }
        f.push(format!("backoff: {{ {} }}", b.join(", ")));
    }
    Some(format!("{{ {} }}", f.join(", ")))
}

/// A template of random shape: edges only from earlier to later steps.
fn template(rng: &mut StdRng, seed: u64, k: usize) -> Template {
    let n = size(rng);
    let window = *[1, 2, 4, 16, n].choose(rng).unwrap();
    let max_parents = *[1, 2, 3, 5].choose(rng).unwrap();
    let root_p = *[0.02, 0.15, 0.5].choose(rng).unwrap();
    let mut yaml = format!("namespace: dags\nname: g{seed}_{k}\nversion: 1.0.0\n");
    if rng.random_bool(0.3)
        && let Some(r) = retry_yaml(rng)
    {
        yaml += &format!("defaults:\n  retry: {r}\n");
    }
    yaml += "steps:\n";
    for i in 0..n {
        let mut parents = Vec::new();
        if i > 0 && !rng.random_bool(root_p) {
            let lo = i.saturating_sub(window);
            for _ in 0..rng.random_range(1..=max_parents) {
                let p = rng.random_range(lo..i);
                if !parents.contains(&p) {
                    parents.push(p);
                }
            }
        }
        let deps: Vec<String> = parents.iter().map(|p| format!("s{p}")).collect();
        yaml += &format!(
            "  - name: s{i}\n    handler: noop@1.0.0\n    depends_on: [{}]\n",
            deps.join(", ")
        );
        if let Some(r) = retry_yaml(rng) {
            yaml += &format!("    retry: {r}\n");
        }
    }
    Template::from_yaml(&yaml).unwrap_or_else(|e| panic!("generated template:\n{yaml}\n{e}"))
}

struct Case<'a, S> {
    s: &'a S,
    seed: u64,
    backend: &'static str,
    rng: StdRng,
    model: Model,
    now_ms: i64,
    templates: Vec<Template>,
    tasks: Vec<TaskId>,
    /// Every lease ever claimed, to present stale ones.
    leases: Vec<(Lease, &'static str)>,
    op_no: usize,
    op: String,
    /// Workers that rarely finish what they claim: leases expire, up to the last allowed
    /// loss.
    lazy: bool,
}

impl<'a, S: Backend> Case<'a, S> {
    fn now(&self) -> DateTime<Utc> {
        plus_ms(t0(), self.now_ms)
    }

    fn fail(&self, what: &str, details: &[String]) -> ! {
        let mut op = self.op.clone();
        if op.len() > 800 {
            op.truncate(800);
            op += "…";
        }
        panic!(
            "random_dags: seed {} on {}, operation {} at t0+{} ms: {op}\n{what}\n  {}\n\
             rerun this seed alone: TASKER_DAG_SEED={} cargo test -p tasker-tests --test \
             conformance random_dags::{}",
            self.seed,
            self.backend,
            self.op_no,
            self.now_ms,
            details.join("\n  "),
            self.seed,
            self.backend
        )
    }

    fn ok<T>(&self, r: Result<T>) -> T {
        r.unwrap_or_else(|e| self.fail("the store refused the call", &[e.to_string()]))
    }

    async fn create_task(&mut self, template: usize) {
        let t = self.templates[template].clone();
        let context = json!({ "seed": self.seed, "n": self.tasks.len() });
        let now = self.now();
        let created = self.ok(self
            .s
            .create_task(&NewTask::new(t.key(), context.clone()), now)
            .await);
        let rows = self.ok(self.s.steps_of_task(created.task_id).await);
        let id_of = |name: &str| rows.iter().find(|r| r.name == name).map(|r| r.id);
        let mut ids = Vec::new();
        for st in &t.steps {
            match id_of(&st.name) {
                Some(id) => ids.push(id),
                None => self.fail("a created step is missing", std::slice::from_ref(&st.name)),
            }
            for d in &st.depends_on {
                if id_of(d) >= id_of(&st.name) {
                    self.fail(
                        "a parent's id is not below its child's",
                        std::slice::from_ref(&st.name),
                    );
                }
            }
        }
        if rows.len() != t.steps.len() {
            self.fail("step count", &[format!("{} rows", rows.len())]);
        }
        self.model
            .create_task(created.task_id, &t, &ids, context, now);
        self.tasks.push(created.task_id);
    }

    /// Live leases (the model's in-progress steps), of one worker or all.
    fn live(&self, worker: Option<&str>) -> Vec<(Lease, &'static str)> {
        self.model
            .steps
            .values()
            .filter(|s| s.state == StepState::InProgress)
            .filter_map(|s| {
                let w = WORKERS
                    .into_iter()
                    .find(|w| s.worker.as_deref() == Some(*w))?;
                (worker.is_none_or(|x| x == w)).then_some((
                    Lease {
                        step_id: s.id,
                        token: s.claim_count,
                    },
                    w,
                ))
            })
            .collect()
    }

    /// A random batch: some live leases (of `worker`, mostly), sometimes a stale one, a
    /// duplicate, an unknown step.
    fn pick(&mut self, worker: Option<&str>) -> Vec<Lease> {
        let mut live = self.live(None);
        if let Some(w) = worker
            && !self.rng.random_bool(0.1)
        {
            live.retain(|(_, lw)| *lw == w);
        }
        let p = *[0.25, 0.5, 1.0].choose(&mut self.rng).unwrap();
        let mut items: Vec<Lease> = live
            .iter()
            .filter(|_| self.rng.random_bool(p))
            .map(|(l, _)| *l)
            .collect();
        if items.is_empty()
            && let Some((l, _)) = live.choose(&mut self.rng)
        {
            items.push(*l);
        }
        if self.rng.random_bool(0.15) && !self.leases.is_empty() {
            let (l, _) = self.leases[self.rng.random_range(0..self.leases.len())];
            if !self.live(None).iter().any(|(x, _)| *x == l) {
                items.push(l);
            }
        }
        if self.rng.random_bool(0.05)
            && let Some(&l) = items.choose(&mut self.rng)
        {
            let token = if self.rng.random_bool(0.5) {
                l.token
            } else {
                l.token - 1
            };
            items.push(Lease {
                step_id: l.step_id,
                token,
            });
        }
        if self.rng.random_bool(0.02) {
            items.push(Lease {
                step_id: UNKNOWN_STEP,
                token: 1,
            });
        }
        items.shuffle(&mut self.rng);
        items
    }

    fn task_in(&self, state: TaskState) -> Option<TaskId> {
        self.tasks
            .iter()
            .copied()
            .find(|t| self.model.tasks[t].state == state)
    }

    fn gen_op(&mut self) -> Op {
        let now = self.now();
        let live = !self.live(None).is_empty();
        let ready = !self.model.queue(now).is_empty();
        let expired = self
            .model
            .steps
            .values()
            .any(|s| s.lease_expires_at.is_some_and(|t| t < now));
        let error_task = self.task_in(TaskState::Error);
        let done = if self.lazy { 1 } else { 4 };
        let sweep = match (expired, self.lazy) {
            (true, true) => 30,
            (true, false) => 10,
            _ => 2,
        };
        let more_tasks = u32::from(self.model.steps.len() < 100 && self.tasks.len() < 4);
        let weights = [
            if ready { 30 } else { 3 },                // claim
            if live { 5 * done } else { 0 },           // complete
            if live { 3 * done } else { 0 },           // complete and claim
            if live { 3 * done } else { 0 },           // fail
            if live && !self.lazy { 4 } else { 0 },    // heartbeat
            if live { 3 } else { 0 },                  // release
            if ready && !self.lazy { 6 } else { 25 },  // time passes
            sweep,                                     // sweep
            if error_task.is_some() { 8 } else { 2 },  // resolve
            1,                                         // cancel
            if error_task.is_some() { 10 } else { 1 }, // retry the task
            more_tasks,                                // one more task
        ];
        let total: u32 = weights.iter().sum();
        let mut r = self.rng.random_range(0..total);
        let kind = weights
            .iter()
            .position(|w| {
                if r < *w {
                    true
                } else {
                    r -= w;
                    false
                }
            })
            .unwrap();
        let rng = &mut self.rng;
        let worker = *WORKERS.choose(rng).unwrap();
        let lease_ms = if self.lazy {
            LEASES_MS[0]
        } else {
            *LEASES_MS.choose(rng).unwrap()
        };
        let limit = if self.lazy {
            1000
        } else {
            *[1, 2, 3, 5, 8, 64, 1000].choose(rng).unwrap()
        };
        match kind {
            0 => Op::Claim {
                worker,
                limit,
                lease_ms,
            },
            1 => Op::Complete {
                items: self.pick(None),
            },
            2 => {
                let limit = *[0, 1, 2, 4, 64].choose(&mut self.rng).unwrap();
                Op::CompleteAndClaim {
                    items: self.pick(Some(worker)),
                    worker,
                    limit,
                    lease_ms,
                }
            }
            3 => {
                let items = self.pick(None);
                let items = items
                    .into_iter()
                    .map(|l| {
                        let retryable = self.rng.random_bool(0.8);
                        let after = self
                            .rng
                            .random_bool(0.25)
                            .then(|| self.rng.random_range(0..=15_000u64));
                        (l, retryable, after)
                    })
                    .collect();
                Op::Fail { items }
            }
            4 => Op::Heartbeat {
                worker,
                leases: self.pick(Some(worker)),
                lease_ms,
            },
            5 => Op::Release {
                worker,
                leases: self.pick(Some(worker)),
            },
            6 => Op::Advance {
                ms: self.advance_ms(),
            },
            7 => Op::ExpireLeases {
                limit: *[1, 2, 1000].choose(&mut self.rng).unwrap(),
            },
            8 => {
                let task = match error_task {
                    Some(t) if self.rng.random_bool(0.7) => t,
                    _ => *self.tasks.choose(&mut self.rng).unwrap(),
                };
                let steps = &self.model.tasks[&task].steps;
                let open: Vec<StepId> = steps
                    .iter()
                    .copied()
                    .filter(|id| {
                        matches!(
                            self.model.step(*id).state,
                            StepState::Pending | StepState::WaitingForRetry | StepState::Error
                        )
                    })
                    .collect();
                let errors: Vec<StepId> = open
                    .iter()
                    .copied()
                    .filter(|id| self.model.step(*id).state == StepState::Error)
                    .collect();
                let step = if self.rng.random_bool(0.02) {
                    UNKNOWN_STEP
                } else if !errors.is_empty() && self.rng.random_bool(0.6) {
                    *errors.choose(&mut self.rng).unwrap()
                } else if !open.is_empty() && self.rng.random_bool(0.85) {
                    *open.choose(&mut self.rng).unwrap()
                } else {
                    *steps.choose(&mut self.rng).unwrap()
                };
                let result = self
                    .rng
                    .random_bool(0.5)
                    .then(|| json!({ "resolved": step }));
                Op::Resolve { step, result }
            }
            9 => Op::Cancel {
                task: *self.tasks.choose(&mut self.rng).unwrap(),
            },
            10 => Op::Retry {
                task: match error_task {
                    Some(t) if self.rng.random_bool(0.9) => t,
                    _ => *self.tasks.choose(&mut self.rng).unwrap(),
                },
            },
            _ => Op::CreateTask {
                template: self.rng.random_range(0..self.templates.len()),
            },
        }
    }

    /// A little, a lot, or exactly to the next instant something becomes due (a retry's
    /// ready_at, or just past a lease's expiry).
    fn advance_ms(&mut self) -> i64 {
        let now = self.now();
        let mut due: Vec<DateTime<Utc>> = self
            .model
            .steps
            .values()
            .flat_map(|s| {
                [
                    s.ready_at.filter(|t| *t > now),
                    s.lease_expires_at.map(|t| plus_ms(t, 1)),
                ]
            })
            .flatten()
            .filter(|t| *t > now)
            .collect();
        due.sort_unstable();
        let to = |t: DateTime<Utc>| (t - t0()).num_milliseconds();
        match self.rng.random_range(0..10) {
            0..4 if !due.is_empty() => to(due[0]) - self.now_ms,
            4..6 if !due.is_empty() => to(*due.choose(&mut self.rng).unwrap()) - self.now_ms,
            6..9 => self.rng.random_range(1..=300),
            _ => self.rng.random_range(1_000..=60_000),
        }
    }

    fn completion(l: &Lease) -> (StepCompletion, Value) {
        let result = json!({ "step": l.step_id, "token": l.token });
        (
            StepCompletion {
                step_id: l.step_id,
                token: l.token,
                result: result.clone(),
                accounting: Accounting::default(),
                log: Default::default(),
            },
            result,
        )
    }

    fn check_claims(&self, model: &[MClaim], store: &[ClaimedStep]) {
        let m: Vec<StepId> = model.iter().map(|c| c.step_id).collect();
        let s: Vec<StepId> = store.iter().map(|c| c.step_id).collect();
        if m != s {
            let names = |ids: &[StepId]| -> Vec<String> {
                ids.iter()
                    .map(|id| match self.model.steps.get(id) {
                        Some(st) => format!("{id} ({}/{})", st.task_id, st.name),
                        None => id.to_string(),
                    })
                    .collect()
            };
            self.fail(
                "claimed steps differ",
                &[
                    format!("model {:?}", names(&m)),
                    format!("store {:?}", names(&s)),
                ],
            );
        }
        let mut out = Vec::new();
        for (m, s) in model.iter().zip(store) {
            let what = format!("claim of step {} ({})", m.step_id, m.step_name);
            diff!(
                out,
                what,
                m,
                s,
                [
                    task_id,
                    token,
                    attempt,
                    max_attempts,
                    step_name,
                    lease_expires_at,
                    task_started,
                    parent_results,
                    context,
                    template_key,
                ]
            );
            if s.defect.is_some() {
                out.push(format!("{what}: defect {:?}", s.defect));
            }
        }
        if !out.is_empty() {
            self.fail("claims differ", &out);
        }
    }

    fn same<T: PartialEq + std::fmt::Debug>(&self, what: &str, model: &T, store: &T) {
        if model != store {
            self.fail(
                what,
                &[format!("model {model:?}"), format!("store {store:?}")],
            );
        }
    }

    /// Outcome lists, item by item.
    fn same_items<T: PartialEq + std::fmt::Debug>(&self, what: &str, model: &[T], store: &[T]) {
        let mut out = Vec::new();
        if model.len() != store.len() {
            out.push(format!(
                "{} items in the model, {} in the store",
                model.len(),
                store.len()
            ));
        }
        for (i, (m, s)) in model.iter().zip(store).enumerate() {
            if m != s {
                out.push(format!("item {i}: model {m:?}"));
                out.push(format!("item {i}: store {s:?}"));
            }
        }
        if !out.is_empty() {
            self.fail(what, &out);
        }
    }

    fn same_result<T: PartialEq + std::fmt::Debug>(
        &self,
        what: &str,
        model: std::result::Result<T, MError>,
        store: Result<T>,
    ) {
        match (model, store) {
            (Ok(m), Ok(s)) => self.same(what, &m, &s),
            (Err(MError::NotFound), Err(StoreError::NotFound(_)))
            | (Err(MError::InvalidState), Err(StoreError::InvalidState(_))) => {}
            (m, s) => self.fail(what, &[format!("model {m:?}"), format!("store {s:?}")]),
        }
    }

    async fn apply(&mut self, op: Op) {
        self.op_no += 1;
        self.op = format!("{op:?}");
        let now = self.now();
        let s = self.s;
        match op {
            Op::Claim {
                worker,
                limit,
                lease_ms,
            } => {
                let lease = Duration::from_millis(lease_ms);
                let got = self.ok(s.claim(worker, limit, lease, now).await);
                let want = self.model.claim(worker, limit, lease, now);
                self.check_claims(&want, &got);
                self.record(&got, worker);
            }
            Op::Complete { items } => {
                let (c, r): (Vec<_>, Vec<_>) = items.iter().map(Self::completion).unzip();
                let got = self.ok(s.complete(&c, now).await);
                let pairs: Vec<_> = items.iter().copied().zip(r).collect();
                let want = self.model.complete(&pairs, now);
                self.same_items("completion outcomes", &want, &got);
            }
            Op::CompleteAndClaim {
                items,
                worker,
                limit,
                lease_ms,
            } => {
                let lease = Duration::from_millis(lease_ms);
                let (c, r): (Vec<_>, Vec<_>) = items.iter().map(Self::completion).unzip();
                let (got, claimed) = self.ok(s
                    .complete_and_claim(&c, &[], worker, limit, lease, now)
                    .await);
                let pairs: Vec<_> = items.iter().copied().zip(r).collect();
                let want = self.model.complete(&pairs, now);
                self.same_items("completion outcomes", &want, &got);
                let want = if limit > 0 {
                    self.model.claim(worker, limit, lease, now)
                } else {
                    Vec::new()
                };
                self.check_claims(&want, &claimed);
                self.record(&claimed, worker);
            }
            Op::Fail { items } => {
                let f: Vec<StepFailure> = items
                    .iter()
                    .map(|(l, retryable, after)| StepFailure {
                        step_id: l.step_id,
                        token: l.token,
                        error_kind: if *retryable {
                            ErrorKind::Trap
                        } else {
                            ErrorKind::BadOutput
                        },
                        message: "failed on purpose".into(),
                        retryable: *retryable,
                        retry_after_ms: *after,
                        accounting: Accounting::default(),
                        log: Default::default(),
                    })
                    .collect();
                let got = self.ok(s.fail(&f, now).await);
                let want = self.model.fail(&items, now);
                self.same_items("failure outcomes", &want, &got);
            }
            Op::Heartbeat {
                worker,
                leases,
                lease_ms,
            } => {
                let lease = Duration::from_millis(lease_ms);
                let got = self.ok(s.heartbeat(worker, &leases, lease, now).await);
                let want = self.model.heartbeat(worker, &leases, lease, now);
                self.same_items("heartbeat outcomes", &want, &got);
            }
            Op::Release { worker, leases } => {
                let got = self.ok(s.release(worker, &leases, now).await);
                let want = self.model.release(worker, &leases, now);
                self.same_items("release outcomes", &want, &got);
            }
            Op::Advance { ms } => self.now_ms += ms,
            Op::ExpireLeases { limit } => {
                let got = self.ok(s.expire_leases(now, limit).await);
                let want = self.model.expire_leases(now, limit);
                self.same_items("expired leases", &want, &got);
            }
            Op::Resolve { step, result } => {
                let got = s.resolve_step(step, result.clone(), now).await;
                let want = self.model.resolve_step(step, result, now);
                self.same_result("resolve", want, got);
            }
            Op::Cancel { task } => {
                let got = s.cancel_task(task, now).await;
                let want = self.model.cancel_task(task);
                self.same_result("cancel", want, got);
            }
            Op::Retry { task } => {
                let got = s.retry_task(task, now).await;
                let want = self.model.retry_task(task, now);
                self.same_result("task retry", want, got);
            }
            Op::CreateTask { template } => self.create_task(template).await,
        }
    }

    fn record(&mut self, claimed: &[ClaimedStep], worker: &'static str) {
        self.leases
            .extend(claimed.iter().map(|c| (c.lease(), worker)));
    }

    /// Readiness rows and execution contexts of every task at `at`, against the model.
    async fn check_readiness(&self, at: DateTime<Utc>, label: &str) {
        let s = self.s;
        let want = self.model.readiness(&self.tasks, at);
        let got = self.ok(s.readiness_batch(&self.tasks, at).await);
        let mut out = Vec::new();
        if want.len() != got.len() {
            out.push(format!(
                "{} rows in the model, {} in the store",
                want.len(),
                got.len()
            ));
        }
        for (m, g) in want.iter().zip(&got) {
            if m.step_id != g.step_id {
                out.push(format!(
                    "row order: model {}, store {}",
                    m.step_id, g.step_id
                ));
                break;
            }
            let what = format!("task {} step {} ({})", m.task_id, m.step_id, m.name);
            diff!(
                out,
                what,
                m,
                g,
                [
                    task_id,
                    name,
                    state,
                    dependencies_satisfied,
                    total_parents,
                    completed_parents,
                    retry_eligible,
                    attempts,
                    max_attempts,
                    retryable,
                    next_retry_at,
                    last_attempted_at,
                    last_failure_at,
                    backoff_request_ms,
                    ready_for_execution,
                ]
            );
        }
        if !out.is_empty() {
            self.fail(&format!("readiness {label}"), &out);
        }

        let got = self.ok(s.execution_context_batch(&self.tasks, at).await);
        let mut out = Vec::new();
        if got.len() != self.tasks.len() {
            out.push(format!(
                "{} contexts for {} tasks",
                got.len(),
                self.tasks.len()
            ));
        }
        for (t, g) in self.tasks.iter().zip(&got) {
            let m = self.model.execution_context(*t, at);
            let what = format!("task {t}");
            diff!(
                out,
                what,
                m,
                g,
                [
                    task_id,
                    task_state,
                    total_steps,
                    pending_steps,
                    in_progress_steps,
                    waiting_for_retry_steps,
                    completed_steps,
                    resolved_steps,
                    failed_steps,
                    cancelled_steps,
                    ready_steps,
                    execution_status,
                    recommended_action,
                    completion_percentage,
                    health_status,
                ]
            );
        }
        if !out.is_empty() {
            self.fail(&format!("execution context {label}"), &out);
        }
    }

    /// Everything observable, after an operation.
    async fn check(&mut self) {
        let s = self.s;
        let now = self.now();

        // The model's own two views: the claim queue and readiness from first principles.
        let queued: Vec<StepId> = {
            let mut q: Vec<StepId> = self.model.queue(now).into_iter().map(|e| e.1).collect();
            q.sort_unstable();
            q
        };
        let ready: Vec<StepId> = self
            .model
            .readiness(&self.tasks, now)
            .into_iter()
            .filter(|r| r.ready_for_execution)
            .map(|r| r.step_id)
            .collect();
        if queued != ready {
            self.fail(
                "model: the claim queue and readiness disagree",
                &[format!("queued {queued:?}"), format!("ready {ready:?}")],
            );
        }

        self.check_readiness(now, "now").await;

        // The single-task forms, on a random task and subset of its steps.
        if self.rng.random_bool(0.05) {
            let task = *self.tasks.choose(&mut self.rng).unwrap();
            let ids: Vec<StepId> = self.model.tasks[&task]
                .steps
                .iter()
                .copied()
                .filter(|_| self.rng.random_bool(0.3))
                .collect();
            let got = self.ok(s.readiness(task, Some(&ids), now).await);
            let want: Vec<ReadinessRow> = ids
                .iter()
                .map(|id| self.model.readiness_row(*id, now))
                .collect();
            self.same_items("readiness of some steps", &want, &got);
            let got = self.ok(s.execution_context(task, now).await);
            self.same(
                "execution context of one task",
                &Some(self.model.execution_context(task, now)),
                &got,
            );
        }

        // At an instant a retry becomes due, and a millisecond before.
        if self.rng.random_bool(0.1) {
            let due: Vec<DateTime<Utc>> = self
                .model
                .steps
                .values()
                .filter_map(|s| s.ready_at.filter(|t| *t > now))
                .collect();
            if let Some(&t) = due.choose(&mut self.rng) {
                let t = if self.rng.random_bool(0.5) {
                    t
                } else {
                    plus_ms(t, -1)
                };
                self.check_readiness(t, "at a later instant").await;
            }
        }

        // The rest every few operations, for time.
        if self.op_no.is_multiple_of(4) {
            self.check_step_rows().await;
        }
        if self.op_no.is_multiple_of(8) {
            self.check_health(now).await;
        }
    }

    /// The queue head, the tasks' counters, and the queue and lease columns of each step
    /// (behind readiness and claims).
    async fn check_step_rows(&self) {
        let s = self.s;
        let got = self.ok(s.next_ready_at().await);
        self.same("next_ready_at", &self.model.next_ready_at(), &got);
        for t in &self.tasks {
            let m = &self.model.tasks[t];
            let Some(g) = self.ok(s.task(*t).await) else {
                self.fail("task row missing", &[t.to_string()]);
            };
            let mut out = Vec::new();
            let what = format!("task row {t}");
            diff!(out, what, m, g, [state, unfinished_steps, error_steps]);
            if !out.is_empty() {
                self.fail("task counters differ", &out);
            }
        }
        let mut out = Vec::new();
        for t in &self.tasks {
            for g in self.ok(self.s.steps_of_task(*t).await) {
                let m = self.model.step(g.id);
                let what = format!("step row {} ({})", g.id, g.name);
                diff!(
                    out,
                    what,
                    m,
                    g,
                    [
                        state,
                        unfinished_parents,
                        ready_at,
                        attempts,
                        claim_count,
                        lease_losses,
                        worker,
                        lease_expires_at,
                        last_failure_at,
                        backoff_request_ms,
                        result,
                    ]
                );
            }
        }
        if !out.is_empty() {
            self.fail("step rows differ", &out);
        }
    }

    /// The system counts that only this case's tasks contribute to (earlier cases left
    /// only complete and cancelled rows).
    async fn check_health(&self, now: DateTime<Utc>) {
        let h = self.ok(self.s.health_counts(now).await);
        let tasks = || self.model.tasks.values();
        let steps = || self.model.steps.values();
        let t = |st: TaskState| tasks().filter(|t| t.state == st).count() as i64;
        let s = |st: StepState| steps().filter(|s| s.state == st).count() as i64;
        let want = [
            t(TaskState::Pending),
            t(TaskState::InProgress),
            t(TaskState::Error),
            s(StepState::Pending),
            s(StepState::InProgress),
            s(StepState::WaitingForRetry),
            s(StepState::Error),
            steps()
                .filter(|s| s.ready_at.is_some_and(|r| r <= now))
                .count() as i64,
            steps()
                .filter(|s| s.ready_at.is_some_and(|r| r > now))
                .count() as i64,
            steps()
                .filter(|s| s.lease_expires_at.is_some_and(|l| l < now))
                .count() as i64,
        ];
        let got = [
            h.pending_tasks,
            h.in_progress_tasks,
            h.error_tasks,
            h.pending_steps,
            h.in_progress_steps,
            h.waiting_for_retry_steps,
            h.error_steps,
            h.ready_steps,
            h.retry_backlog,
            h.expired_leases,
        ];
        self.same(
            "health counts (pending, in progress, error tasks; pending, in progress, \
             waiting, error, ready, backlog, expired steps)",
            &want,
            &got,
        );
    }
}

/// One seed: templates, tasks, operations until every task is finished or the budget is
/// spent, then the tasks left are cancelled.
async fn run_case<S: Backend>(s: &S, seed: u64) -> usize {
    let mut rng = StdRng::seed_from_u64(seed);
    let templates: Vec<Template> = (0..if rng.random_bool(0.2) { 2 } else { 1 })
        .map(|k| template(&mut rng, seed, k))
        .collect();
    let mut c = Case {
        s,
        seed,
        backend: s.backend(),
        rng,
        model: Model::new(s.backend() == "postgres"),
        now_ms: 0,
        templates,
        tasks: Vec::new(),
        leases: Vec::new(),
        op_no: 0,
        op: "setup".into(),
        lazy: false,
    };
    c.lazy = c.rng.random_bool(0.2);
    for t in &c.templates {
        c.ok(s.register_template(t).await);
    }
    let big = c.templates.iter().any(|t| t.steps.len() > 40);
    let tasks = match c.rng.random_range(0..20) {
        _ if big => 1,
        0..11 => 1,
        11..17 => 2,
        _ => 3,
    };
    for _ in 0..tasks {
        let k = c.rng.random_range(0..c.templates.len());
        c.create_task(k).await;
        c.now_ms += c.rng.random_range(0..=2);
    }
    c.check().await;

    let steps: usize = c.model.steps.len();
    let budget = 20 + steps.min(40) + if c.lazy { 60 } else { 0 };
    let open = |c: &Case<S>| {
        c.tasks
            .iter()
            .any(|t| !c.model.tasks[t].state.is_terminal())
    };
    while c.op_no < budget && open(&c) {
        let op = c.gen_op();
        c.apply(op).await;
        c.check().await;
    }
    for t in c.tasks.clone() {
        if !c.model.tasks[&t].state.is_terminal() {
            c.apply(Op::Cancel { task: t }).await;
            c.check().await;
        }
    }
    // Nothing is left to claim, and on PostgreSQL the short claim clears the cursor, so the
    // next seed starts as it would alone.
    c.apply(Op::Claim {
        worker: "w1",
        limit: 1,
        lease_ms: 1_000,
    })
    .await;
    c.check_step_rows().await;
    if c.model.next_ready_at().is_some() {
        c.fail("steps left in the queue after the cancels", &[]);
    }
    c.op_no
}

async fn random_dags<S: Backend>(store: S) {
    // One connection: PostgreSQL's claim cursor lives in the session, and the model follows
    // one session's. No ping before each call, as in PgStore's own pool.
    if let Some(pg) = (&store as &dyn Any).downcast_ref::<PgStore>() {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with((*pg.pool().connect_options()).clone())
            .await
            .expect("a one-connection pool");
        run_all(&PgStore::new(pool.clone()), Some(&pool)).await;
        pool.close().await;
    } else {
        run_all(&store, None).await;
    }
}

/// `pg`: the PostgreSQL pool, to refresh the planner's statistics as autovacuum would (the
/// tables of a fresh database grow from empty, and plans made for empty tables scan them).
async fn run_all<S: Backend>(s: &S, pg: Option<&sqlx::PgPool>) {
    let started = Instant::now();
    let seeds = seeds();
    let mut ops = 0;
    for (i, seed) in seeds.iter().enumerate() {
        if i.is_multiple_of(10)
            && let Some(pool) = pg
        {
            sqlx::query("ANALYZE steps, edges, tasks")
                .execute(pool)
                .await
                .expect("analyze");
        }
        ops += run_case(s, *seed).await;
    }
    eprintln!(
        "random_dags on {}: {} cases, {ops} operations in {:.1?}",
        s.backend(),
        seeds.len(),
        started.elapsed()
    );
}

tasker_tests::on_both_backends!(random_dags);
