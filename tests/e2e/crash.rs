//! Crash safety. `kill -9` of a `tasker worker` in the middle of a 2,000-step run: a new
//! worker finishes every task, each step has exactly one successful attempt, and the killed
//! worker's claims are recorded as lease losses. A poisoned plugin (one that traps on every
//! call): its step fails with its kind, the rest of the DAG is untouched, and once a fixed
//! build is dropped into the plugin directory a retry finishes the task on the same worker
//! (the step is pinned `sticky`, the default: the task retry starts its pin again).
//! (A database restart: `db_restart.rs`.)

use std::io::{BufRead, BufReader, Read};
use std::process::Stdio;
use std::sync::mpsc;
use std::time::Duration;

use chrono::Utc;
use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::fixtures;
use tasker_core::state::{StepState, TaskState};
use tasker_store::{AttemptOutcome, NewTask, Store, TaskId};
use tasker_tests::cli::*;

async fn a_killed_worker_loses_its_leases_and_a_new_worker_finishes_everything(db: Db) {
    let store = db.store().await;
    let mut template = fixtures::mixed_20("slow@0.1.0");
    for step in &mut template.steps {
        step.config = json!({"ms": 15});
    }
    store.register_template(&template).await.unwrap();
    for i in 0..100 {
        store
            .create_task(&NewTask::new(template.key(), json!({"i": i})), Utc::now())
            .await
            .unwrap();
    }
    assert_eq!(count(&db, "SELECT count(*) FROM steps").await, 2_000);

    let dir = scratch("crash");
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nlease_secs = 2\n").unwrap();

    let mut first = spawn_worker(&db, &config, "doomed", 32);
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'complete'",
        400,
        Duration::from_secs(60),
    )
    .await;
    // Make sure it holds claims right now, then kill it without warning.
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress' AND worker = 'doomed'",
        1,
        Duration::from_secs(10),
    )
    .await;
    first.0.kill().expect("SIGKILL");
    first.0.wait().unwrap();
    // On PostgreSQL a statement the worker sent just before dying still runs to its end on
    // the server: count what it holds only once none of its backends is busy. (On SQLite the
    // writer was the dead process itself: its unfinished transaction is already gone.)
    if let Db::Postgres(_) = db {
        wait_for(
            &db,
            "SELECT (count(*) = 0)::int::bigint FROM pg_stat_activity
             WHERE datname = current_database() AND pid <> pg_backend_pid() AND state = 'active'",
            1,
            Duration::from_secs(10),
        )
        .await;
    }
    let held: i64 = count(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress' AND worker = 'doomed'",
    )
    .await;
    let done_before = count(&db, "SELECT count(*) FROM steps WHERE state = 'complete'").await;
    assert!(done_before < 2_000, "the kill came before the end");

    let mut second = spawn_worker(&db, &config, "rescuer", 32);
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        100,
        Duration::from_secs(120),
    )
    .await;
    // A graceful stop of the rescuer.
    stop_gracefully(&mut second.0);
    // Lease losses did not use up retry budget: every step completed, once.
    assert_each_step_completed_once(&db, 2_000).await;
    // The steps the killed worker held were taken back as lease losses, all of them its own.
    let lost = count(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost'",
    )
    .await;
    assert_eq!(
        lost, held,
        "every claim held at the kill is a recorded lease loss"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost' AND worker <> 'doomed'"
        )
        .await,
        0
    );
}

async fn a_poisoned_plugin_leaves_its_task_recoverable(db: Db) {
    let plugins = scratch("poisoned-plugins");
    let fixme = plugins.join("fixme@0.1.0.wasm");
    std::fs::copy(
        plugin_dir().join("noop@0.1.0.wasm"),
        plugins.join("noop@0.1.0.wasm"),
    )
    .unwrap();
    std::fs::copy(
        hostile_plugin_dir().join("hostile_panic@0.1.0.wasm"),
        &fixme,
    )
    .unwrap();
    let template = tasker_core::template::Template::from_yaml(
        "namespace: tests\nname: poisoned\nversion: 1.0.0\nsteps:\n\
         \x20 - {name: a, handler: noop@0.1.0}\n\
         \x20 - {name: b, handler: fixme@0.1.0, depends_on: a, retry: {max_attempts: 2, backoff: {base_ms: 10}}}\n\
         \x20 - {name: c, handler: noop@0.1.0, depends_on: a}\n\
         \x20 - {name: d, handler: noop@0.1.0, depends_on: [b, c]}\n",
    )
    .unwrap();
    let store = db.store().await;
    store.register_template(&template).await.unwrap();
    let task = store
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id;

    // The worker reports each plugin (re)load on stderr.
    let config = scratch("poisoned").join("tasker.toml");
    std::fs::write(&config, "[worker]\nlease_secs = 5\n").unwrap();
    let mut worker = KillOnDrop(
        worker_command(&db, &plugins, &config, "steady", 32)
            .env("RUST_LOG", "warn,tasker_sandbox=info")
            .env("NO_COLOR", "1")
            .stderr(Stdio::piped())
            .spawn()
            .expect("worker starts"),
    );
    let (loads_tx, loads) = mpsc::channel();
    let stderr = worker.0.stderr.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("worker: {line}");
            if line.contains("plugin loaded") && line.contains("fixme") {
                let _ = loads_tx.send(line);
            }
        }
    });
    let first = loads
        .recv_timeout(Duration::from_secs(60))
        .expect("fixme loads");

    wait_for(
        &db,
        &format!("SELECT count(*) FROM tasks WHERE id = {task} AND state = 'error'"),
        1,
        Duration::from_secs(60),
    )
    .await;
    let steps = store.steps_of_task(task).await.unwrap();
    let state = |name: &str| steps.iter().find(|s| s.name == name).unwrap().state;
    assert_eq!(
        [state("a"), state("b"), state("c"), state("d")],
        [
            StepState::Complete,
            StepState::Error,
            StepState::Complete,
            StepState::Pending
        ],
        "only the poisoned step and what depends on it are held up"
    );
    let b = steps.iter().find(|s| s.name == "b").unwrap().id;
    let tried = store.attempts_of_step(b).await.unwrap();
    assert_eq!(tried.len(), 2);
    assert!(
        tried.iter().all(|a| a.error_kind == Some(ErrorKind::Trap)),
        "{tried:?}"
    );

    // Deploy the fix as the docs say (write aside, rename in), then retry the task.
    let aside = plugins.join("fixme.tmp");
    std::fs::copy(plugin_dir().join("noop@0.1.0.wasm"), &aside).unwrap();
    std::fs::rename(&aside, &fixme).unwrap();
    let second = loads
        .recv_timeout(Duration::from_secs(60))
        .expect("the fix loads");
    assert_ne!(first, second, "a new hash");
    let out = run({
        let mut c = tasker(&db, &plugins);
        c.args(["retry", &task.to_string()]);
        c
    });
    assert!(out.status.success());
    wait_for(
        &db,
        &format!("SELECT count(*) FROM tasks WHERE id = {task} AND state = 'complete'"),
        1,
        Duration::from_secs(60),
    )
    .await;
    assert!(worker.0.try_wait().unwrap().is_none(), "the same worker");
    stop_gracefully(&mut worker.0);

    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    let tried = store.attempts_of_step(b).await.unwrap();
    assert_eq!(tried.len(), 3);
    assert_eq!(tried[2].outcome, AttemptOutcome::Completed);
    assert_ne!(
        tried[2].plugin_hash, tried[0].plugin_hash,
        "the fixed build ran"
    );
    // Nothing that had completed ran again.
    for s in store.steps_of_task(task).await.unwrap() {
        let n = store.attempts_of_step(s.id).await.unwrap().len();
        assert_eq!(n, if s.name == "b" { 3 } else { 1 }, "{}", s.name);
    }
}

/// Ctrl-C of `tasker run`: it stops claiming, gives the running step back at once (its
/// lease is released and recorded, not left to expire), says how to resume, and
/// `tasker run --task <id>` then finishes the task.
async fn ctrl_c_of_run_releases_running_steps_and_run_task_resumes(db: Db) {
    let dir = scratch("ctrl-c");
    let file = dir.join("interrupted.yaml");
    std::fs::write(
        &file,
        "namespace: tests\nname: interrupted\nversion: 1.0.0\nsteps:\n\
         \x20 - {name: first, handler: noop@0.1.0}\n\
         \x20 - {name: long, handler: slow@0.1.0, depends_on: first, config: {ms: 8000}, limits: {timeout_ms: 60000}}\n\
         \x20 - {name: last, handler: noop@0.1.0, depends_on: long}\n",
    )
    .unwrap();
    // The schema, so that the test can watch the run from the start.
    drop(db.store().await);
    let mut c = tasker(&db, &plugin_dir());
    c.arg("run")
        .arg(&file)
        .arg("--plain")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(c.spawn().expect("tasker run starts"));
    // Drain both pipes while it runs, so that it never blocks on a full one.
    let drain = |r: Box<dyn std::io::Read + Send>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = BufReader::new(r).read_to_string(&mut text);
            text
        })
    };
    let out_reader = drain(Box::new(child.0.stdout.take().unwrap()));
    let err_reader = drain(Box::new(child.0.stderr.take().unwrap()));
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE name = 'long' AND state = 'in_progress'",
        1,
        Duration::from_secs(120),
    )
    .await;
    let pid = child.0.id().to_string();
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &pid])
            .status()
            .unwrap()
            .success()
    );
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    let status = loop {
        if let Some(status) = child.0.try_wait().unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "tasker run did not stop after Ctrl-C"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let (out, err) = (out_reader.join().unwrap(), err_reader.join().unwrap());
    eprintln!("--- stdout\n{out}\n--- stderr\n{err}");
    assert_eq!(status.code(), Some(130), "interrupted, not finished");
    let task = count(&db, "SELECT max(id) FROM tasks").await;
    assert!(err.contains(&format!("tasker run --task {task}")), "{err}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM steps WHERE state = 'in_progress'"
        )
        .await,
        0,
        "no lease is left to expire"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts a JOIN steps s ON s.id = a.step_id \
             WHERE s.name = 'long' AND a.outcome = 'released'"
        )
        .await,
        1
    );

    let mut c = tasker(&db, &plugin_dir());
    c.args(["run", "--task", &task.to_string(), "--plain"]);
    let out = run(c);
    assert!(out.status.success(), "the resumed task completes");
    let store = db.store().await;
    assert_eq!(
        store.task(TaskId::new(task)).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    for s in store.steps_of_task(TaskId::new(task)).await.unwrap() {
        let outcomes: Vec<AttemptOutcome> = store
            .attempts_of_step(s.id)
            .await
            .unwrap()
            .iter()
            .map(|a| a.outcome)
            .collect();
        let expected = if s.name == "long" {
            vec![AttemptOutcome::Released, AttemptOutcome::Completed]
        } else {
            vec![AttemptOutcome::Completed]
        };
        assert_eq!(outcomes, expected, "{}", s.name);
    }
}

tasker_tests::cli_on_both_backends!(
    a_killed_worker_loses_its_leases_and_a_new_worker_finishes_everything,
    a_poisoned_plugin_leaves_its_task_recoverable,
    ctrl_c_of_run_releases_running_steps_and_run_task_resumes
);
