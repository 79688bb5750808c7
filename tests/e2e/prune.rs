//! `tasker prune` and `tasker export` (retention, docs/store.md): a dry run says what would go
//! and removes nothing, a run removes the finished task with every row it owns and says so
//! per table, `--state` narrows it, bad spans are refused naming the flag, and the export
//! holds the task, its transitions and each step's attempts, logs and transitions; a server
//! without workers prunes too.

use serde_json::Value;
use tasker_tests::cli::*;

const TEMPLATE: &str = "namespace: e2e\nname: prune_chatty\nversion: 1.0.0\nsteps:\n  - name: talk\n    handler: chatty@0.1.0\n    retry: { max_attempts: 2, backoff: { base_ms: 10, jitter: 0 } }\n";

/// Two log records and a little output per attempt; the first attempt fails.
const CONTEXT: &str = r#"{"lines": 2, "stdout_bytes": 8, "stderr_bytes": 8, "fail_first": true}"#;

fn tasker_in(db: &Db, args: &[&str]) -> std::process::Output {
    let mut c = tasker(db, &plugin_dir());
    c.args(args);
    run(c)
}

/// `table  rows` lines of the report.
fn rows_of(text: &str, table: &str) -> i64 {
    text.lines()
        .find_map(|l| {
            let mut w = l.split_whitespace();
            (w.next() == Some(table)).then(|| w.next().unwrap().parse().unwrap())
        })
        .unwrap_or_else(|| panic!("no {table} line in {text}"))
}

async fn prune_dry_run_removes_nothing_then_prune_removes_the_task(db: Db) {
    let dir = scratch("prune-e2e");
    std::fs::write(dir.join("t.yaml"), TEMPLATE).unwrap();
    let out = tasker_in(&db, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tasker_in(
        &db,
        &[
            "run",
            dir.join("t.yaml").to_str().unwrap(),
            "--plain",
            "--context",
            CONTEXT,
        ],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let task = count(&db, "SELECT max(id) FROM tasks").await;
    let attempts = count(&db, "SELECT count(*) FROM attempts").await;
    assert_eq!(attempts, 2);

    // Export first: one JSON document with everything.
    let out = tasker_in(&db, &["export", &task.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let doc: Value = serde_json::from_slice(&out.stdout).expect("export is JSON");
    assert_eq!(doc["format"], "tasker.export/1");
    assert_eq!(doc["task"]["id"], task);
    assert_eq!(doc["task"]["state"], "complete");
    assert!(!doc["transitions"].as_array().unwrap().is_empty(), "{doc}");
    let step = &doc["steps"][0];
    assert_eq!(step["name"], "talk");
    assert_eq!(
        step["attempt_history"].as_array().unwrap().len(),
        2,
        "{step}"
    );
    assert!(
        !step["transitions"].as_array().unwrap().is_empty(),
        "{step}"
    );
    let logs = step["logs"].as_array().unwrap();
    assert_eq!(logs.len(), 2, "{step}");
    assert!(
        logs[0]["lines"][0]["message"]
            .as_str()
            .unwrap()
            .contains("line 0 of attempt 1"),
        "{step}"
    );

    // The default retention (7 days) keeps a task that just finished.
    let out = tasker_in(&db, &["prune"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("removed 0 finished tasks"),
        "{}",
        stdout(&out)
    );
    // Narrowed to cancelled tasks, nothing either.
    let out = tasker_in(
        &db,
        &["prune", "--older-than", "0s", "--state", "cancelled,error"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(rows_of(&stdout(&out), "tasks"), 0);

    let out = tasker_in(&db, &["prune", "--older-than", "0s", "--dry-run"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let dry = stdout(&out);
    assert!(dry.contains("would remove 1 finished tasks"), "{dry}");
    assert!(dry.contains("dry run: nothing was deleted"), "{dry}");
    assert_eq!(rows_of(&dry, "attempts"), 2);
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 1);
    assert_eq!(count(&db, "SELECT count(*) FROM attempts").await, 2);

    let out = tasker_in(&db, &["prune", "--older-than", "0s"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let real = stdout(&out);
    assert!(real.contains("removed 1 finished tasks"), "{real}");
    for table in [
        "tasks",
        "steps",
        "attempts",
        "step_transitions",
        "task_transitions",
    ] {
        assert_eq!(rows_of(&real, table), rows_of(&dry, table), "{table}");
        assert_eq!(
            count(&db, &format!("SELECT count(*) FROM {table}")).await,
            0,
            "{table}"
        );
    }

    let out = tasker_in(&db, &["export", &task.to_string()]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains(&format!("task {task} does not exist")),
        "{}",
        stderr(&out)
    );
}

async fn prune_refuses_a_bad_span_naming_the_flag(db: Db) {
    let out = tasker_in(&db, &["prune", "--older-than", "7w"]);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("--older-than") && err.contains("'7w' is not a span"),
        "{err}"
    );
    let out = tasker_in(&db, &["prune", "--state", "done"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("--state"), "{}", stderr(&out));
}

/// `tasker serve --workers 0` (the API alone) still runs the pruner when `[retention]` sets
/// an interval: a finished task past its span goes without any worker running.
async fn serve_without_workers_still_prunes(db: Db) {
    let dir = scratch("prune-serve");
    std::fs::write(dir.join("t.yaml"), TEMPLATE).unwrap();
    let config = dir.join("tasker.toml");
    std::fs::write(
        &config,
        "[retention]\ncomplete = \"1s\"\ninterval = \"1s\"\n",
    )
    .unwrap();
    let out = tasker_in(&db, &["migrate"]);
    assert!(out.status.success(), "{}", stderr(&out));
    let out = tasker_in(
        &db,
        &["run", dir.join("t.yaml").to_str().unwrap(), "--plain"],
    );
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 1);

    let mut c = tasker(&db, &plugin_dir());
    c.arg("--config")
        .arg(&config)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--workers",
            "0",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let mut server = KillOnDrop(c.spawn().expect("tasker serve starts"));
    wait_for(
        &db,
        "SELECT CAST(CASE WHEN count(*) = 0 THEN 1 ELSE 0 END AS BIGINT) FROM tasks",
        1,
        std::time::Duration::from_secs(60),
    )
    .await;
    stop_gracefully(&mut server.0);
    assert_eq!(count(&db, "SELECT count(*) FROM steps").await, 0);
    assert_eq!(count(&db, "SELECT count(*) FROM attempts").await, 0);
}

tasker_tests::cli_on_both_backends!(
    prune_dry_run_removes_nothing_then_prune_removes_the_task,
    prune_refuses_a_bad_span_naming_the_flag,
    serve_without_workers_still_prunes,
);
