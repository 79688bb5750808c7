//! Graceful shutdown of `tasker worker` with the `[worker] shutdown_grace` setting of
//! tasker.toml: on SIGTERM it stops claiming and a running step finishes within the grace
//! and is recorded complete; with a grace shorter than the step, the step's lease is
//! released at once, so another worker claims it without waiting for the lease to expire;
//! `tasker serve --workers N` and `tasker run` do the same with the same setting.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use tasker_tests::cli::*;

/// A one-step template whose step sleeps `ms`.
fn slow_template(dir: &Path, ms: u64) -> PathBuf {
    let file = dir.join("slow.yaml");
    std::fs::write(
        &file,
        format!(
            "namespace: tests\nname: shutdown\nversion: 1.0.0\nsteps:\n\
             \x20 - {{name: long, handler: slow@0.1.0, config: {{ms: {ms}}}, limits: {{timeout_ms: 120000}}}}\n"
        ),
    )
    .unwrap();
    file
}

/// A config file with this grace, a lease far longer than the test (an expired lease
/// would show as a hang, not pass) and a short poll.
fn config(dir: &Path, name: &str, grace: &str) -> PathBuf {
    let file = dir.join(name);
    std::fs::write(
        &file,
        format!("[worker]\nshutdown_grace = \"{grace}\"\nlease_secs = 600\n"),
    )
    .unwrap();
    file
}

fn submit(db: &Db, template: &Path) {
    let mut c = tasker(db, &plugin_dir());
    c.arg("submit").arg(template);
    assert!(run(c).status.success(), "submit");
}

fn sigterm(child: &std::process::Child) {
    assert!(
        std::process::Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
}

/// Waits for the process to end (bounded), and says how long it took.
async fn exit_within(child: &mut std::process::Child, bound: Duration) -> Duration {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().unwrap() {
            assert!(status.success(), "the worker ends cleanly: {status}");
            return t.elapsed();
        }
        assert!(
            t.elapsed() < bound,
            "the worker did not stop within {bound:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn sigterm_lets_a_running_step_finish_within_the_grace(db: Db) {
    let dir = scratch("shutdown-finish");
    let template = slow_template(&dir, 3000);
    let cfg = config(&dir, "tasker.toml", "60s");
    drop(db.store().await);
    submit(&db, &template);
    let mut worker = spawn_worker(&db, &cfg, "grace-worker", 2);
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress'",
        1,
        Duration::from_secs(120),
    )
    .await;
    sigterm(&worker.0);
    exit_within(&mut worker.0, Duration::from_secs(120)).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM steps WHERE state = 'complete'").await,
        1,
        "the step finished before the worker stopped"
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'completed' AND worker = 'grace-worker'"
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome <> 'completed'"
        )
        .await,
        0
    );
    assert_eq!(
        count(&db, "SELECT count(*) FROM tasks WHERE state = 'complete'").await,
        1
    );
}

async fn a_grace_shorter_than_the_step_releases_its_lease_at_once(db: Db) {
    let dir = scratch("shutdown-release");
    let template = slow_template(&dir, 6000);
    let short = config(&dir, "short.toml", "300ms");
    let long = config(&dir, "long.toml", "60s");
    drop(db.store().await);
    submit(&db, &template);
    let mut first = spawn_worker(&db, &short, "short-grace", 2);
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress'",
        1,
        Duration::from_secs(120),
    )
    .await;
    sigterm(&first.0);
    let took = exit_within(&mut first.0, Duration::from_secs(60)).await;
    assert!(
        took < Duration::from_secs(5),
        "a 300ms grace stopped a 6s step only after {took:?}"
    );
    // Released, recorded, and claimable now: not in progress, no lease left to expire.
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM steps WHERE state = 'in_progress'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'released' AND worker = 'short-grace'"
        )
        .await,
        1
    );
    // Another worker claims it long before the 600 s lease could have expired.
    let mut second = spawn_worker(&db, &long, "second", 2);
    wait_for(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome = 'completed' AND worker = 'second'",
        1,
        Duration::from_secs(120),
    )
    .await;
    stop_gracefully(&mut second.0);
    assert_eq!(
        count(&db, "SELECT count(*) FROM tasks WHERE state = 'complete'").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'lease_lost'"
        )
        .await,
        0
    );
}

/// `tasker serve --workers N` (and `tasker dev`, which is `serve`) reads the same setting.
async fn serve_with_workers_uses_the_grace_setting(db: Db) {
    let dir = scratch("shutdown-serve");
    let template = slow_template(&dir, 6000);
    let short = config(&dir, "short.toml", "300ms");
    drop(db.store().await);
    submit(&db, &template);
    let mut c = tasker(&db, &plugin_dir());
    c.arg("--config")
        .arg(&short)
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--no-auth",
            "--workers",
            "2",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let mut server = KillOnDrop(c.spawn().expect("tasker serve starts"));
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress'",
        1,
        Duration::from_secs(120),
    )
    .await;
    sigterm(&server.0);
    let took = exit_within(&mut server.0, Duration::from_secs(60)).await;
    assert!(took < Duration::from_secs(5), "stopped only after {took:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM steps WHERE state = 'in_progress'"
        )
        .await,
        0
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome = 'released'"
        )
        .await,
        1
    );
}

/// Ctrl-C of `tasker run` waits the same setting (not its own 2 s default when it is set): a
/// 4 s step finishes, is recorded complete, and the run ends as the task did.
async fn ctrl_c_of_run_uses_the_grace_setting(db: Db) {
    let dir = scratch("shutdown-run");
    let template = slow_template(&dir, 4000);
    let long = config(&dir, "long.toml", "60s");
    drop(db.store().await);
    let mut c = tasker(&db, &plugin_dir());
    c.arg("--config")
        .arg(&long)
        .arg("run")
        .arg(&template)
        .arg("--plain")
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::inherit());
    let mut child = KillOnDrop(c.spawn().expect("tasker run starts"));
    wait_for(
        &db,
        "SELECT count(*) FROM steps WHERE state = 'in_progress'",
        1,
        Duration::from_secs(120),
    )
    .await;
    assert!(
        std::process::Command::new("kill")
            .args(["-INT", &child.0.id().to_string()])
            .status()
            .unwrap()
            .success()
    );
    // Exits 0: the task completed within the grace (130 if the step had been released).
    exit_within(&mut child.0, Duration::from_secs(120)).await;
    assert_eq!(
        count(&db, "SELECT count(*) FROM tasks WHERE state = 'complete'").await,
        1
    );
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM attempts WHERE outcome <> 'completed'"
        )
        .await,
        0,
        "nothing was released"
    );
}

tasker_tests::cli_on_both_backends!(
    sigterm_lets_a_running_step_finish_within_the_grace,
    a_grace_shorter_than_the_step_releases_its_lease_at_once,
    serve_with_workers_uses_the_grace_setting,
    ctrl_c_of_run_uses_the_grace_setting,
);
