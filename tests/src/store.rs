//! Store drivers for the suites: fixed instants, fixtures, claims, completions and failures.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use chrono::{DateTime, TimeZone, Utc};
use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures;
use tasker_core::template::Template;
use tasker_store::*;

use crate::Backend;

pub const LEASE: Duration = Duration::from_secs(30);

/// The test epoch: every test's time starts here.
pub fn t0() -> DateTime<Utc> {
    Utc.with_ymd_and_hms(2030, 1, 1, 0, 0, 0).unwrap()
}

/// `t0 + ms`.
pub fn at(ms: i64) -> DateTime<Utc> {
    t0() + chrono::Duration::milliseconds(ms)
}

/// A template from YAML (validated by tasker-core).
pub fn template(yaml: &str) -> Template {
    Template::from_yaml(yaml).expect("test template is valid")
}

/// A single-step template with the given retry settings (jitter 0 unless set).
pub fn one_step(name: &str, retry: &str) -> Template {
    template(&format!(
        "namespace: tests\nname: {name}\nversion: 1.0.0\nsteps:\n  - name: only\n    handler: noop@1.0.0\n    retry: {retry}\n"
    ))
}

/// Register a template and create one task from it; returns the task id.
pub async fn start<S: Store>(s: &S, t: &Template, now: DateTime<Utc>) -> TaskId {
    s.register_template(t).await.expect("register");
    s.create_task(&NewTask::new(t.key(), json!({"n": 1})), now)
        .await
        .expect("create")
        .task_id
}

/// Step ids of a task by name.
pub async fn ids<S: Store>(s: &S, task: TaskId) -> BTreeMap<String, StepId> {
    s.steps_of_task(task)
        .await
        .unwrap()
        .into_iter()
        .map(|st| (st.name, st.id))
        .collect()
}

/// Names of the steps `get_step_readiness_status` says are ready at `now`.
pub async fn ready_names<S: Store>(s: &S, task: TaskId, now: DateTime<Utc>) -> BTreeSet<String> {
    s.readiness(task, None, now)
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.ready_for_execution)
        .map(|r| r.name)
        .collect()
}

pub async fn claim_all<S: Store>(s: &S, now: DateTime<Utc>) -> Vec<ClaimedStep> {
    s.claim("w1", 10_000, LEASE, now).await.unwrap()
}

pub fn completion(c: &ClaimedStep) -> StepCompletion {
    StepCompletion {
        step_id: c.step_id,
        token: c.token,
        result: json!({"step": c.step_name}),
        accounting: Accounting {
            fuel: Some(1_000),
            peak_memory_bytes: Some(65_536),
            wall_us: Some(3000),
            plugin_hash: Some("blake3:00".into()),
        },
        log: Default::default(),
    }
}

pub fn failure(c: &ClaimedStep, retryable: bool, retry_after_ms: Option<u64>) -> StepFailure {
    StepFailure {
        step_id: c.step_id,
        token: c.token,
        error_kind: if retryable {
            ErrorKind::Trap
        } else {
            ErrorKind::BadOutput
        },
        message: format!("{} failed", c.step_name),
        retryable,
        retry_after_ms,
        accounting: Accounting::default(),
        log: Default::default(),
    }
}

/// Claim everything ready at `now` and complete it at `now`; returns the names claimed.
pub async fn run_ready<S: Store>(s: &S, now: DateTime<Utc>) -> BTreeSet<String> {
    let claimed = claim_all(s, now).await;
    let items: Vec<_> = claimed.iter().map(completion).collect();
    for o in s.complete(&items, now).await.unwrap() {
        assert!(o.accepted(), "{o:?}");
    }
    claimed.into_iter().map(|c| c.step_name).collect()
}

pub fn names(v: &[&str]) -> BTreeSet<String> {
    v.iter().map(|s| (*s).to_owned()).collect()
}

pub fn all_fixtures() -> Vec<Template> {
    fixtures::all(fixtures::NOOP)
}

/// Everything the store holds about its tasks (rows, steps, attempts, transitions) and the
/// system counts, for "nothing changed" comparisons on any backend.
pub async fn snapshot<S: Store>(s: &S) -> String {
    let health = s.health_counts(t0()).await.unwrap();
    let mut out = format!("{:?}\n", (health.total_tasks, health.total_steps));
    // Task ids are ascending but may have gaps (a refused insert can use one up).
    let (mut found, mut id) = (0, 0);
    while found < health.total_tasks && id < 2 * health.total_tasks + 100 {
        id += 1;
        let id = TaskId::new(id);
        let Some(task) = s.task(id).await.unwrap() else {
            continue;
        };
        found += 1;
        out += &format!("{task:?}\n{:?}\n", s.task_transitions(id).await.unwrap());
        for step in s.steps_of_task(id).await.unwrap() {
            out += &format!(
                "{step:?}\n{:?}\n{:?}\n",
                s.attempts_of_step(step.id).await.unwrap(),
                s.step_transitions(step.id).await.unwrap()
            );
        }
    }
    assert_eq!(found, health.total_tasks, "snapshot found every task");
    out
}

/// The outbox's cursor invariant: every (hook, task) with pending rows has exactly one head,
/// its lowest pending row, and no other row is a head.
pub async fn assert_hook_heads<S: Backend>(s: &S) {
    let bad = s
        .count(
            "SELECT count(*) FROM (
             SELECT count(*) FILTER (WHERE head) AS heads, min(id) AS lowest,
                    min(id) FILTER (WHERE head) AS head_id
             FROM hook_outbox WHERE state = 'pending' GROUP BY hook_id, task_id) g
         WHERE heads <> 1 OR head_id <> lowest",
        )
        .await
        .unwrap();
    assert_eq!(
        bad, 0,
        "a (hook, task) queue without exactly one head at its front"
    );
    let stray = s
        .count("SELECT count(*) FROM hook_outbox WHERE head AND state <> 'pending'")
        .await
        .unwrap();
    assert_eq!(stray, 0, "a head that is not pending");
}
