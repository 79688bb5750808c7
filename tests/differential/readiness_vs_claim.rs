//! The agreement test: at every instant of a seeded run of every fixture, the steps that
//! `get_step_readiness_status` (which evaluates the DAG from scratch) calls ready are exactly
//! the steps `claim_ready_steps` (which trusts the per-step counters and ready_at) claims.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Duration;

use serde_json::json;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

/// xorshift64*: deterministic choices without a dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const STEP_LEASE: Duration = Duration::from_secs(5);

fn jittered(t: &Template) -> Template {
    let mut t = t.clone();
    t.name = format!("{}_jitter", t.name);
    for s in &mut t.steps {
        s.retry.backoff.jitter = 0.3;
        s.retry.backoff.base_ms = 700;
        s.retry.max_attempts = 4;
    }
    t
}

struct Run {
    checks: usize,
    claims: usize,
    finished: BTreeMap<String, usize>,
}

async fn drive<S: Store>(s: &S, templates: &[Template], tasks_each: usize, seed: u64) -> Run {
    let mut rng = Rng(seed);
    let mut tasks = Vec::new();
    for t in templates {
        s.register_template(t).await.unwrap();
        for i in 0..tasks_each {
            let c = s
                .create_task(&NewTask::new(t.key(), json!({"i": i})), at(0))
                .await
                .unwrap();
            tasks.push(c.task_id);
        }
    }
    let mut now: i64 = 0;
    let mut held: Vec<ClaimedStep> = Vec::new();
    // Operators retry or resolve a failed task 0 to 2 times.
    let mut retries_left: BTreeMap<TaskId, u32> =
        tasks.iter().map(|t| (*t, rng.below(3) as u32)).collect();
    let mut run = Run {
        checks: 0,
        claims: 0,
        finished: BTreeMap::new(),
    };

    for round in 0..5_000 {
        s.expire_leases(at(now), 10_000).await.unwrap();

        // The two views of readiness at this instant.
        let rows = s.readiness_batch(&tasks, at(now)).await.unwrap();
        let by_readiness: BTreeSet<StepId> = rows
            .iter()
            .filter(|r| r.ready_for_execution)
            .map(|r| r.step_id)
            .collect();
        // The counters the claim path trusts agree with the DAG for every waiting step.
        let steps: BTreeMap<StepId, StepRow> = {
            let mut m = BTreeMap::new();
            for t in &tasks {
                for st in s.steps_of_task(*t).await.unwrap() {
                    m.insert(st.id, st);
                }
            }
            m
        };
        for r in &rows {
            let st = &steps[&r.step_id];
            if matches!(st.state, StepState::Pending | StepState::WaitingForRetry) {
                assert_eq!(
                    st.unfinished_parents,
                    r.total_parents - r.completed_parents,
                    "round {round} step {}",
                    r.name
                );
            }
        }
        let claimed = s.claim("agree", 10_000, STEP_LEASE, at(now)).await.unwrap();
        let by_claim: BTreeSet<StepId> = claimed.iter().map(|c| c.step_id).collect();
        assert_eq!(by_readiness, by_claim, "round {round} at +{now} ms");
        run.checks += 1;
        run.claims += claimed.len();
        let after = s.readiness_batch(&tasks, at(now)).await.unwrap();
        assert!(
            after.iter().all(|r| !r.ready_for_execution),
            "claim left a ready step"
        );

        // Outcomes for what is held: some finish now, some later, some are abandoned.
        let mut completions = Vec::new();
        let mut failures = Vec::new();
        let mut keep = Vec::new();
        for c in held.drain(..).chain(claimed) {
            match rng.below(100) {
                0..=64 => completions.push(completion(&c)),
                65..=76 => failures.push(failure(&c, true, None)),
                77..=81 => failures.push(failure(&c, true, Some(rng.below(3_000)))),
                82..=84 => failures.push(failure(&c, false, None)),
                85..=89 => {} // abandoned: the lease will expire
                _ => keep.push(c),
            }
        }
        held = keep;
        for o in s.complete(&completions, at(now)).await.unwrap() {
            assert!(o.accepted(), "{o:?}");
        }
        for o in s.fail(&failures, at(now)).await.unwrap() {
            assert!(o.accepted(), "{o:?}");
        }

        // Operators retry failed tasks a couple of times, or resolve a failed step.
        for t in &tasks {
            let row = s.task(*t).await.unwrap().unwrap();
            if row.state == TaskState::Error && retries_left[t] > 0 {
                *retries_left.get_mut(t).unwrap() -= 1;
                if rng.below(2) == 0 {
                    s.retry_task(*t, at(now)).await.unwrap();
                } else {
                    let failed = s
                        .steps_of_task(*t)
                        .await
                        .unwrap()
                        .into_iter()
                        .find(|x| x.state == StepState::Error)
                        .unwrap();
                    s.resolve_step(failed.id, Some(json!("resolved")), at(now))
                        .await
                        .unwrap();
                }
            }
        }

        // Done when every task is finished and nothing is held.
        let mut open = false;
        for t in &tasks {
            let row = s.task(*t).await.unwrap().unwrap();
            let finished = row.state == TaskState::Complete
                || (row.state == TaskState::Error && retries_left[t] == 0);
            open |= !finished;
        }
        if !open && held.is_empty() {
            for t in &tasks {
                let st = s.task(*t).await.unwrap().unwrap().state;
                *run.finished.entry(st.to_string()).or_default() += 1;
            }
            return run;
        }

        // Next instant: the exact next event, 1 ms before it, or a random step.
        let mut next_events: Vec<i64> = Vec::new();
        for st in steps.values() {
            for t in [st.ready_at, st.lease_expires_at].into_iter().flatten() {
                let ms = (t - t0()).num_milliseconds();
                if ms > now {
                    next_events.push(ms);
                }
            }
        }
        let next = next_events.iter().min().copied();
        now = match (rng.below(3), next) {
            (0, Some(n)) => n,
            (1, Some(n)) if n - 1 > now => n - 1,
            (_, Some(n)) if held.is_empty() && rng.below(2) == 0 => n + 1,
            _ => now + 1 + rng.below(1_500) as i64,
        };
    }
    panic!("the run did not finish");
}

async fn readiness_and_claim_agree_on_every_fixture<S: Backend>(s: S) {
    let mut total = 0;
    for (i, t) in all_fixtures().iter().enumerate() {
        let run = drive(
            &s,
            std::slice::from_ref(t),
            5,
            0x9E37_79B9_7F4A_7C15 ^ i as u64,
        )
        .await;
        eprintln!(
            "{}: checks {} claims {} finished {:?}",
            t.key(),
            run.checks,
            run.claims,
            run.finished
        );
        assert_eq!(run.finished.values().sum::<usize>(), 5);
        assert!(
            run.finished.contains_key("complete"),
            "{}: {:?}",
            t.key(),
            run.finished
        );
        total += run.checks;
    }
    assert!(total > 50, "{total} instants checked");
}

async fn readiness_and_claim_agree_with_jitter_and_all_fixtures_at_once<S: Backend>(s: S) {
    let templates: Vec<Template> = all_fixtures().iter().map(jittered).collect();
    let run = drive(&s, &templates, 4, 42).await;
    eprintln!(
        "checks {} claims {} finished {:?}",
        run.checks, run.claims, run.finished
    );
    assert!(run.checks > 20, "{} checks", run.checks);
    // This seed ends some tasks complete and some in error.
    assert_eq!(run.finished.values().sum::<usize>(), 20);
    assert!(run.finished.contains_key("complete") && run.finished.contains_key("error"));
}

tasker_tests::on_both_backends!(
    readiness_and_claim_agree_on_every_fixture,
    readiness_and_claim_agree_with_jitter_and_all_fixtures_at_once,
);
