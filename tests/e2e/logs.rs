//! `tasker logs`: each attempt's log records, stdout and stderr, kept with the attempt and
//! bounded by the `[limits]` settings, printed from the store, through `tasker serve`, and
//! followed live; and `--log-format json` for the host's own logs.

use std::process::Stdio;

use serde_json::Value;
use tasker_store::{StepId, Store, TaskId};
use tasker_tests::cli::*;

const TEMPLATE: &str = "namespace: e2e\nname: chatty\nversion: 1.0.0\nsteps:\n  - name: talk\n    handler: chatty@0.1.0\n    retry: { max_attempts: 2, backoff: { base_ms: 10, jitter: 0 } }\n";

/// Four log records (one over `max_logs`), a little stdout, and stderr far over
/// `stdio_bytes`; the first attempt fails.
const CONTEXT: &str =
    r#"{"lines": 4, "stdout_bytes": 40, "stderr_bytes": 1000, "fail_first": true}"#;

const LIMITS: &str = "[limits]\nmax_logs = 3\nstdio_bytes = 256\n";

fn setup(name: &str) -> std::path::PathBuf {
    let dir = scratch(name);
    std::fs::write(dir.join("t.yaml"), TEMPLATE).unwrap();
    std::fs::write(dir.join("tasker.toml"), LIMITS).unwrap();
    dir
}

async fn the_step(db: &Db) -> (TaskId, StepId) {
    let store = db.store().await;
    let task = TaskId::new(count(db, "SELECT max(id) FROM tasks").await);
    let steps = store.steps_of_task(task).await.unwrap();
    (task, steps[0].id)
}

fn logs(db: &Db, dir: &std::path::Path, args: &[&str]) -> std::process::Output {
    let mut c = tasker(db, &plugin_dir());
    c.arg("--config")
        .arg(dir.join("tasker.toml"))
        .arg("logs")
        .args(args);
    run(c)
}

/// What both attempts must show, from the store or the API.
fn assert_both_attempts(text: &str) {
    let first = text
        .find("── attempt 1 · failed")
        .unwrap_or_else(|| panic!("{text}"));
    let second = text
        .find("── attempt 2 · completed")
        .unwrap_or_else(|| panic!("{text}"));
    assert!(first < second, "oldest first: {text}");
    let (one, two) = text.split_at(second);
    for (part, n) in [(one, 1), (two, 2)] {
        for i in 0..3 {
            assert!(part.contains(&format!("line {i} of attempt {n}")), "{part}");
        }
        // The fourth record is over max_logs = 3: dropped, and counted.
        assert!(!part.contains(&format!("line 3 of attempt {n}")), "{part}");
        assert!(
            part.contains("   stdout:\n     stdout of attempt"),
            "{part}"
        );
        assert!(part.contains(&format!("stderr of attempt {n}")), "{part}");
        assert!(
            part.contains("1 log records, 744 bytes of stderr"),
            "stderr is cut at stdio_bytes = 256 of 1000: {part}"
        );
    }
    assert!(
        one.contains("trace line 0") && one.contains("debug line 1"),
        "{one}"
    );
    assert!(one.contains("info  line 2"), "{one}");
}

async fn tasker_logs_prints_every_attempt_bounded_by_the_limits(db: Db) {
    let dir = setup("logs-local");
    let mut c = tasker(&db, &plugin_dir());
    c.arg("--config")
        .arg(dir.join("tasker.toml"))
        .arg("run")
        .arg(dir.join("t.yaml"))
        .args(["--plain", "--context", CONTEXT]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let (_, step) = the_step(&db).await;

    let out = logs(&db, &dir, &[&step.to_string()]);
    assert!(out.status.success(), "{}", stderr(&out));
    let text = stdout(&out);
    assert_both_attempts(&text);
    // What is kept is bounded: 256 bytes of stderr per attempt, not the 1000 written.
    let store = db.store().await;
    for a in store.attempt_logs(step, None).await.unwrap() {
        assert_eq!(a.log.stderr.len(), 256, "attempt {}", a.attempt_no);
        assert_eq!(a.log.lines.len(), 3);
        assert!(a.log.lines.windows(2).all(|w| w[0].at_us <= w[1].at_us));
    }

    // One attempt.
    let out = logs(&db, &dir, &[&step.to_string(), "--attempt", "2"]);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("── attempt 2 · completed"), "{text}");
    assert!(!text.contains("attempt 1"), "{text}");
    // Bad references say what is wrong.
    let out = logs(&db, &dir, &[&step.to_string(), "--attempt", "7"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("no attempt 7 of this step ran"),
        "{}",
        stderr(&out)
    );
    let out = logs(&db, &dir, &["987654"]);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no step 987654"), "{}", stderr(&out));

    // Through a server: the same text from GET /v1/steps/{id}/logs.
    let (_server, base) = super::serve::serve(&db, &["--no-auth"]);
    let mut c = tasker(&db, &plugin_dir());
    c.args(["--server", &base, "logs", &step.to_string()]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_both_attempts(&stdout(&out));
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "--server",
        &base,
        "logs",
        &step.to_string(),
        "--attempt",
        "7",
    ]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("no attempt 7"), "{}", stderr(&out));
}

async fn tasker_logs_follow_prints_attempts_as_they_are_recorded(db: Db) {
    let dir = setup("logs-follow");
    let mut c = tasker(&db, &plugin_dir());
    c.arg("submit")
        .arg(dir.join("t.yaml"))
        .args(["--context", CONTEXT]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let (task, step) = the_step(&db).await;

    // Following a step that has not run: it waits for attempts.
    let mut follow = tasker(&db, &plugin_dir());
    follow
        .arg("--config")
        .arg(dir.join("tasker.toml"))
        .args(["logs", &step.to_string(), "--follow"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut follow = KillOnDrop(follow.spawn().unwrap());

    let mut c = tasker(&db, &plugin_dir());
    c.arg("--config").arg(dir.join("tasker.toml")).args([
        "run",
        "--task",
        &task.to_string(),
        "--plain",
    ]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));

    // It ends by itself once the step is done, having printed both attempts.
    let status = wait_bounded(&mut follow.0, CALL_BOUND).expect("logs --follow ends with the step");
    let mut text = String::new();
    std::io::Read::read_to_string(follow.0.stdout.as_mut().unwrap(), &mut text).unwrap();
    assert!(status.success(), "{text}");
    assert_both_attempts(&text);
    assert!(!text.contains("no attempt has run yet"), "{text}");
}

async fn log_format_json_writes_one_object_per_line_without_colour(db: Db) {
    let dir = setup("logs-json");
    let mut c = tasker(&db, &plugin_dir());
    c.arg("--log-format")
        .arg("json")
        .env("RUST_LOG", "tasker::event=info")
        .arg("run")
        .arg(dir.join("t.yaml"))
        .args(["--plain", "--context", r#"{"lines": 1}"#]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        !err.contains('\u{1b}'),
        "no colour codes into a pipe: {err:?}"
    );
    let events: Vec<Value> = err
        .lines()
        .filter(|l| l.starts_with('{'))
        .map(|l| serde_json::from_str(l).unwrap_or_else(|e| panic!("{l}: {e}")))
        .collect();
    let completed = events
        .iter()
        .find(|e| e["fields"]["event"] == "step.completed")
        .unwrap_or_else(|| panic!("a step.completed record: {err}"));
    assert_eq!(completed["level"], "INFO");
    assert_eq!(completed["target"], "tasker::event");
    assert_eq!(completed["fields"]["step"], "talk");
    assert!(completed["timestamp"].is_string(), "{completed}");

    // A format it does not know is refused by name.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["--log-format", "xml", "migrate"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid value 'xml'"),
        "{}",
        stderr(&out)
    );
}

tasker_tests::cli_on_both_backends!(
    tasker_logs_prints_every_attempt_bounded_by_the_limits,
    tasker_logs_follow_prints_attempts_as_they_are_recorded,
    log_format_json_writes_one_object_per_line_without_colour,
);
