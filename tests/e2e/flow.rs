//! `tasker submit` with a priority and a delayed start (issue #19), on both stores.

use tasker_tests::cli::{Db, count, plugin_dir, run, scratch, stderr, stdout, tasker};

tasker_tests::cli_on_both_backends!(
    a_submitted_task_waits_for_its_start_with_its_priority,
    a_bad_priority_or_start_is_refused_by_flag,
);

const ECHO: &str = "namespace: e2e\nname: later\nversion: 1.0.0\nsteps:\n\
    \x20 - {name: a, handler: echo@0.1.0}\n\
    \x20 - {name: b, handler: echo@0.1.0, depends_on: a}\n";

fn migrate(db: &Db) {
    let mut c = tasker(db, &plugin_dir());
    c.arg("migrate");
    assert!(run(c).status.success());
}

async fn a_submitted_task_waits_for_its_start_with_its_priority(db: Db) {
    migrate(&db);
    let file = scratch("flow-delay").join("t.yaml");
    std::fs::write(&file, ECHO).unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.arg("submit")
        .arg(&file)
        .args(["--priority", "4", "--delay", "2h"]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let id = stdout(&out).trim().to_owned();
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM tasks WHERE priority = 4 AND run_at IS NOT NULL"
        )
        .await,
        1
    );
    let mut c = tasker(&db, &plugin_dir());
    c.args(["status", &id]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert!(text.contains("scheduled for "), "{text}");
    assert!(text.contains("waiting for parents (0 of 1 done)"), "{text}");
}

async fn a_bad_priority_or_start_is_refused_by_flag(db: Db) {
    migrate(&db);
    let file = scratch("flow-bad").join("t.yaml");
    std::fs::write(&file, ECHO).unwrap();
    for (args, says) in [
        (vec!["--priority", "7"], "'7' is not a priority"),
        (vec!["--delay", "soon"], "'soon' is not a span"),
        (vec!["--run-at", "tomorrow"], "--run-at"),
        (
            vec!["--run-at", "2030-01-01T00:00:00Z", "--delay", "1h"],
            "cannot be used with",
        ),
    ] {
        let mut c = tasker(&db, &plugin_dir());
        c.arg("submit").arg(&file).args(&args);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        assert!(stderr(&out).contains(says), "{args:?}: {}", stderr(&out));
    }
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0);
}
