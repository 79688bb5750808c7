//! Event hooks and retry policy components through the real binary and the real sandbox:
//! the example workflow, a `kill -9` of a worker in the middle of hook deliveries, and
//! hostile hooks while a workflow completes on time.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::{Value, json};
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_engine::WorkerConfig;
use tasker_store::{AnyStore, NewTask, Store, TaskId};
use tasker_tests::cli::*;
use tokio_util::sync::CancellationToken;

/// The audit lines of one task, as (event name, step id), with consecutive duplicates (a
/// redelivery) removed.
fn audit_lines(file: &std::path::Path) -> BTreeMap<String, Vec<(String, Option<String>)>> {
    let text = std::fs::read_to_string(file).unwrap_or_default();
    let mut by_task: BTreeMap<String, Vec<(String, Option<String>)>> = BTreeMap::new();
    for line in text.lines() {
        let v: Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}"));
        let key = (
            v["name"].as_str().unwrap().to_owned(),
            v["step_id"].as_str().map(str::to_owned),
        );
        let seq = by_task
            .entry(v["task_id"].as_str().unwrap().to_owned())
            .or_default();
        if seq.last() != Some(&key) {
            seq.push(key);
        }
    }
    by_task
}

/// The outbox order of one hook's events for a task, as (event name, step id).
async fn outbox_order(store: &AnyStore, task: TaskId) -> Vec<(String, Option<String>)> {
    store
        .hook_outbox_of_task(task)
        .await
        .unwrap()
        .into_iter()
        .map(|r| (r.event_name, r.step_id.map(|s| s.to_string())))
        .collect()
}

async fn the_hooks_example_audits_every_event_and_its_policy_decides_retries(db: Db) {
    // A copy of the example, so its out/ directory is the test's own.
    let dir = scratch("hooks-example");
    std::fs::create_dir_all(dir.join("out")).unwrap();
    let text = std::fs::read_to_string(root().join("examples/hooks/hooks.yaml"))
        .unwrap()
        .replace(
            "host: examples/hooks/out",
            &format!("host: {}", dir.join("out").display()),
        );
    std::fs::write(dir.join("hooks.yaml"), text).unwrap();
    let yaml = dir.join("hooks.yaml");

    let mut c = tasker(&db, &plugin_dir());
    c.arg("run")
        .arg(&yaml)
        .args(["--context", "@examples/hooks/context.json", "--plain"]);
    let out = run(c);
    assert!(out.status.success(), "tasker run failed");
    assert!(stderr(&out).contains("hook audit_hook@0.1.0: 17 delivered, 0 pending, 0 dead"));

    let store = db.store().await;
    let task = TaskId::new(count(&db, "SELECT min(id) FROM tasks").await);
    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    // The audit file holds every event of the task, in outbox order, once.
    let lines = audit_lines(&dir.join("out/events.jsonl"));
    let order = outbox_order(&store, task).await;
    assert_eq!(lines[&task.to_string()], order);
    assert_eq!(order.first().unwrap().0, "task.created");
    assert_eq!(order.last().unwrap().0, "custom.api_called");
    assert!(order.iter().any(|(n, _)| n == "task.completed"));

    let steps = store.steps_of_task(task).await.unwrap();
    let attempts = |name: &str| {
        let id = steps.iter().find(|s| s.name == name).unwrap().id;
        let store = store.clone();
        async move { store.attempts_of_step(id).await.unwrap() }
    };
    // fetch_rates: two failures, both retried by the policy with backoff and jitter.
    let fr = attempts("fetch_rates").await;
    assert_eq!(fr.len(), 3);
    for (a, raw) in fr[..2].iter().zip([200i64, 400]) {
        assert_eq!(a.decided_by.as_deref(), Some("policy:smart_retry@0.1.0"));
        let wait = (a.next_ready_at.unwrap() - a.finished_at).num_milliseconds();
        assert!(
            wait >= raw * 3 / 4 && wait <= raw * 5 / 4,
            "{wait} for {raw}"
        );
    }
    // charge: rate-limited once; the policy waits exactly what the server asked.
    let ch = attempts("charge").await;
    assert_eq!(ch.len(), 2);
    assert_eq!(
        (ch[0].next_ready_at.unwrap() - ch[0].finished_at).num_milliseconds(),
        300
    );
    assert_eq!(ch[0].decision_detail.as_deref(), Some("retry after 300 ms"));

    // The same template, with a validation error: the policy gives up at once, the task
    // fails, and the notifier hook writes its notice.
    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(&yaml).args([
        "--context",
        r#"{"modes": {"refund_check": "validation"}}"#,
        "--plain",
    ]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("hook notify_hook@0.1.0: 1 delivered"));
    let failed = TaskId::new(count(&db, "SELECT max(id) FROM tasks").await);
    let steps = store.steps_of_task(failed).await.unwrap();
    let rc = steps.iter().find(|s| s.name == "refund_check").unwrap();
    let a = store.attempts_of_step(rc.id).await.unwrap();
    assert_eq!(a.len(), 1, "gave up at once, 3 attempts unused");
    assert!(
        a[0].decision_detail
            .as_deref()
            .unwrap()
            .starts_with("give up: validation error")
    );
    let notice = std::fs::read_to_string(dir.join(format!("out/task-{failed}.txt"))).unwrap();
    assert!(
        notice.contains(&format!("task {failed} failed")),
        "{notice}"
    );
}

async fn hook_deliveries_survive_a_killed_worker_in_order_and_at_least_once(db: Db) {
    let dir = scratch("hooks-crash");
    let out = dir.join("out");
    std::fs::create_dir_all(&out).unwrap();
    let template = Template::from_yaml(&format!(
        "namespace: tests\nname: hook_crash\nversion: 1.0.0\n\
         hooks:\n  - component: hook_slow_audit@0.1.0\n    events: ['*']\n\
         \x20   grants: {{dirs: [{{host: '{}', guest: /audit, mode: rw}}]}}\n\
         steps:\n  - {{name: a, handler: noop@0.1.0}}\n  - {{name: b, handler: noop@0.1.0, depends_on: a}}\n\
         \x20 - {{name: c, handler: noop@0.1.0, depends_on: b}}\n",
        out.display()
    ))
    .unwrap();
    let store = db.store().await;
    store.register_template(&template).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..20 {
        let t = store
            .create_task(&NewTask::new(template.key(), json!({"i": i})), Utc::now())
            .await
            .unwrap();
        tasks.push(t.task_id);
    }
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nlease_secs = 2\n").unwrap();

    let mut first = spawn_worker(&db, &config, "doomed", 16);
    wait_for(
        &db,
        "SELECT count(*) FROM hook_outbox WHERE state = 'delivered'",
        40,
        Duration::from_secs(60),
    )
    .await;
    // Kill it while it holds a delivery lease.
    wait_for(
        &db,
        "SELECT count(*) FROM hook_outbox WHERE state = 'pending' AND lease_owner = 'doomed-hooks' \
         AND lease_expires_at IS NOT NULL",
        1,
        Duration::from_secs(10),
    )
    .await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    let mut in_flight: Vec<i64> = Vec::new();
    loop {
        let after = in_flight.last().copied().unwrap_or(0);
        let next = count(
            &db,
            &format!(
                "SELECT coalesce(min(id), 0) FROM hook_outbox \
                 WHERE state = 'pending' AND lease_owner = 'doomed-hooks' AND id > {after}"
            ),
        )
        .await;
        if next == 0 {
            break;
        }
        in_flight.push(next);
    }
    assert!(!in_flight.is_empty());
    let total = count(&db, "SELECT count(*) FROM hook_outbox").await;
    assert!(
        count(
            &db,
            "SELECT count(*) FROM hook_outbox WHERE state = 'delivered'"
        )
        .await
            < total,
        "the kill came before the last delivery"
    );

    let mut second = spawn_worker(&db, &config, "rescuer", 16);
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        20,
        Duration::from_secs(120),
    )
    .await;
    // Every task's events: created, started, 3 x step.completed, completed, plus a
    // step.lease_lost for each step the dead worker held.
    let total = count(&db, "SELECT count(*) FROM hook_outbox").await;
    assert!(total >= 20 * 6, "{total}");
    wait_for(
        &db,
        "SELECT count(*) FROM hook_outbox WHERE state = 'delivered'",
        total,
        Duration::from_secs(120),
    )
    .await;
    assert_eq!(count(&db, "SELECT count(*) FROM hook_outbox").await, total);
    stop_gracefully(&mut second.0);

    // The deliveries the dead worker held were claimed again by the rescuer.
    for id in &in_flight {
        let sql = format!("SELECT CAST(claims AS bigint) FROM hook_outbox WHERE id = {id}");
        let claims = count(&db, &sql).await;
        assert!(claims >= 2, "delivery {id} was claimed {claims} times");
        let sql =
            format!("SELECT count(*) FROM hook_outbox WHERE id = {id} AND lease_owner IS NULL");
        assert_eq!(count(&db, &sql).await, 1, "delivery {id} is not leased");
    }
    // Each task's audit trail is its outbox, in order: nothing lost, and the only
    // duplicates are immediate redeliveries.
    let lines = audit_lines(&out.join("events.jsonl"));
    for task in tasks {
        assert_eq!(
            lines[&task.to_string()],
            outbox_order(&store, task).await,
            "task {task}"
        );
    }
}

async fn hostile_hooks_never_hold_up_the_workflow(db: Db) {
    // A plugin directory with the handler, a witness hook and the hostile hooks.
    let plugins = scratch("hooks-hostile-plugins");
    for (dir, f) in [
        (plugin_dir(), "noop@0.1.0.wasm"),
        (plugin_dir(), "hook_noop@0.1.0.wasm"),
        (hostile_plugin_dir(), "hostile_hook_loop@0.1.0.wasm"),
        (hostile_plugin_dir(), "hostile_hook_memory@0.1.0.wasm"),
        (hostile_plugin_dir(), "hostile_hook_panic@0.1.0.wasm"),
    ] {
        std::fs::copy(dir.join(f), plugins.join(f)).unwrap();
    }
    let mut cfg = tasker_sandbox::SandboxConfig::new(&plugins);
    cfg.cache_dir = Some(cache_dir());
    let (sandbox, _) = tasker_sandbox::Sandbox::new(cfg).await.unwrap();

    let delivery = "delivery: {max_attempts: 2, backoff: {base_ms: 10, jitter: 0}}";
    let template = Template::from_yaml(&format!(
        "namespace: tests\nname: hostile_hooks\nversion: 1.0.0\nhooks:\n\
         \x20 - {{component: hostile_hook_loop@0.1.0, events: ['*'], limits: {{timeout_ms: 3000, fuel: 1000000000000}}, delivery: {{max_attempts: 1}}}}\n\
         \x20 - {{component: hostile_hook_memory@0.1.0, events: ['*'], limits: {{memory_mb: 16}}, {delivery}}}\n\
         \x20 - {{component: hostile_hook_panic@0.1.0, events: ['*'], {delivery}}}\n\
         \x20 - {{component: hook_noop@0.1.0, events: ['*']}}\n\
         steps:\n  - {{name: a, handler: noop@0.1.0}}\n  - {{name: b, handler: noop@0.1.0, depends_on: a}}\n\
         \x20 - {{name: c, handler: noop@0.1.0, depends_on: b}}\n  - {{name: d, handler: noop@0.1.0, depends_on: c}}\n"
    ))
    .unwrap();
    let store = Arc::new(db.store().await);
    store.register_template(&template).await.unwrap();

    let stop = CancellationToken::new();
    let wcfg = WorkerConfig {
        id: "hostile".into(),
        poll_every: Duration::from_millis(20),
        ..WorkerConfig::default()
    };
    let node = tasker_runtime::Node::wasm(store.clone(), &sandbox, wcfg).start(stop.clone());

    let task = store
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id;
    let give_up = Instant::now() + Duration::from_secs(120);
    // The loop hook's counts: a workflow held up by its hooks would wait out the loop hook's
    // 3 s timeout once per event before it could finish, so by then its step events would all
    // have ended (as dead letters).
    let loop_hook = async || {
        let counts = store.hook_counts(Some(task)).await.unwrap();
        counts
            .into_iter()
            .find(|c| c.component.starts_with("hostile_hook_loop"))
            .unwrap()
    };
    loop {
        let state = store.task(task).await.unwrap().unwrap().state;
        let looped = loop_hook().await;
        // When the task is done, the loop hook is still being dealt with.
        assert!(
            looped.delivered + looped.dead < 5 && Instant::now() < give_up,
            "task is {state}, the loop hook has ended {} deliveries",
            looped.delivered + looped.dead
        );
        if state == TaskState::Complete {
            assert!(looped.pending > 0, "{looped:?}");
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }

    // Eventually: the witness got everything, each hostile hook's events are dead letters
    // carrying the typed error.
    let deadline = Instant::now() + Duration::from_secs(240);
    loop {
        let counts = store.hook_counts(Some(task)).await.unwrap();
        if counts.iter().all(|c| c.pending == 0) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "deliveries did not finish: {counts:?}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    stop.cancel();
    node.join().await;
    let counts = store.hook_counts(Some(task)).await.unwrap();
    let by = |name: &str| {
        counts
            .iter()
            .find(|c| c.component.starts_with(name))
            .unwrap()
            .clone()
    };
    let events = by("hook_noop").delivered;
    assert_eq!(events, 7, "created, started, 4 x step.completed, completed");
    for hostile in [
        "hostile_hook_loop",
        "hostile_hook_memory",
        "hostile_hook_panic",
    ] {
        let c = by(hostile);
        assert_eq!((c.dead, c.delivered), (events, 0), "{hostile}");
    }
    let rows = store.hook_outbox_of_task(task).await.unwrap();
    let error_of = |hook: &str| {
        let id = counts
            .iter()
            .find(|c| c.component.starts_with(hook))
            .unwrap()
            .hook_id;
        rows.iter()
            .find(|r| r.hook_id == id)
            .unwrap()
            .last_error
            .clone()
            .unwrap()
    };
    assert!(
        error_of("hostile_hook_loop").starts_with("timeout"),
        "{}",
        error_of("hostile_hook_loop")
    );
    assert!(error_of("hostile_hook_memory").starts_with("out_of_memory"));
    assert!(error_of("hostile_hook_panic").starts_with("trap"));
}

tasker_tests::cli_on_both_backends!(
    hook_deliveries_survive_a_killed_worker_in_order_and_at_least_once,
    hostile_hooks_never_hold_up_the_workflow,
    the_hooks_example_audits_every_event_and_its_policy_decides_retries,
);
