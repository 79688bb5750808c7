//! The examples, run through the real `tasker` binary on both stores.

use std::collections::BTreeMap;

use serde_json::Value;
use std::path::Path;
use std::process::Command;
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::{StepState, TaskState};
use tasker_store::{AttemptOutcome, RetryDecision, Store, TaskId};
use tasker_tests::cli::*;

async fn only_task(db: &Db) -> TaskId {
    assert_eq!(count(db, "SELECT count(*) FROM tasks").await, 1);
    TaskId::new(count(db, "SELECT min(id) FROM tasks").await)
}

async fn order_fulfilment_runs_with_two_rate_limited_payment_attempts(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "run",
        "examples/order/order.yaml",
        "--context",
        "@examples/order/context.json",
        "--plain",
    ]);
    let out = run(c);
    assert!(out.status.success(), "tasker run failed");
    assert!(stdout(&out).contains("complete"));
    assert!(stderr(&out).contains("custom.payment_charged"));

    let store = db.store().await;
    let task = only_task(&db).await;
    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    let steps = store.steps_of_task(task).await.unwrap();
    for s in &steps {
        assert_eq!(s.state, StepState::Complete, "{}", s.name);
        let attempts = store.attempts_of_step(s.id).await.unwrap();
        let want = if s.name == "charge_payment" { 3 } else { 1 };
        assert_eq!(attempts.len(), want, "{}", s.name);
        // Every attempt records the plugin it ran, and a retry ran the same code.
        let hashes: Vec<_> = attempts.iter().map(|a| a.plugin_hash.clone()).collect();
        assert!(
            hashes.iter().all(|h| h.is_some() && *h == hashes[0]),
            "{hashes:?}"
        );
        assert!(attempts.iter().all(|a| a.fuel.unwrap_or(0) > 0));
    }
    let charge = steps.iter().find(|s| s.name == "charge_payment").unwrap();
    let attempts = store.attempts_of_step(charge.id).await.unwrap();
    for a in &attempts[..2] {
        assert_eq!(a.outcome, AttemptOutcome::Failed);
        assert_eq!(a.error_kind, Some(ErrorKind::HandlerError));
        assert_eq!(a.decision, Some(RetryDecision::Retry));
        // The gateway's retry-after (300 ms) became the next retry time.
        let wait = (a.next_ready_at.unwrap() - a.finished_at).num_milliseconds();
        assert_eq!(wait, 300, "{a:?}");
        assert!(a.message.as_deref().unwrap().contains("429"));
    }
    assert_eq!(attempts[2].outcome, AttemptOutcome::Completed);
    let later = attempts[1].next_ready_at.unwrap();
    assert!(attempts[2].started_at >= later);

    let notify = steps.iter().find(|s| s.name == "notify").unwrap();
    let notice = notify.result.clone().unwrap();
    assert_eq!(notice["to"], "ada@example.com");
    assert!(notice["body"].as_str().unwrap().contains("TRK-ORD-1001"));
    let ship = steps.iter().find(|s| s.name == "ship").unwrap();
    assert_eq!(ship.result.as_ref().unwrap()["charge_id"], "ch-ord-1001-3");
}

/// The report the pipeline must produce, computed here from the CSVs independently.
fn expected_totals(data: &std::path::Path) -> (u64, u64, u64, BTreeMap<String, u64>) {
    let (mut rows, mut rejected, mut revenue) = (0u64, 0u64, 0u64);
    let mut by_region = BTreeMap::new();
    let mut files: Vec<_> = std::fs::read_dir(data)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    for f in files {
        for line in std::fs::read_to_string(f).unwrap().lines().skip(1) {
            let c: Vec<&str> = line.split(',').collect();
            let region = ["North", "South", "East", "West"]
                .into_iter()
                .find(|r| r.eq_ignore_ascii_case(c[1].trim()));
            let date_ok = c[0].len() == 10
                && c[0][5..7]
                    .parse::<u32>()
                    .is_ok_and(|m| (1..=12).contains(&m))
                && c[0][8..10]
                    .parse::<u32>()
                    .is_ok_and(|d| (1..=31).contains(&d));
            let units = c[3].trim().parse::<u64>().ok().filter(|u| *u > 0);
            let price = c[4].trim().parse::<f64>().ok();
            match (region, date_ok, !c[2].trim().is_empty(), units, price) {
                (Some(r), true, true, Some(u), Some(p)) => {
                    let cents = (p * 100.0).round() as u64 * u;
                    rows += 1;
                    revenue += cents;
                    *by_region.entry(r.to_owned()).or_insert(0) += cents;
                }
                _ => rejected += 1,
            }
        }
    }
    (rows, rejected, revenue, by_region)
}

async fn data_pipeline_reads_a_read_only_grant_and_writes_its_report(db: Db) {
    let dir = scratch("pipeline");
    let data = root().join("examples/pipeline/data");
    let out_dir = dir.join("out");
    std::fs::create_dir_all(&out_dir).unwrap();
    let yaml = std::fs::read_to_string(root().join("examples/pipeline/pipeline.yaml"))
        .unwrap()
        .replace(
            "host: examples/pipeline/data",
            &format!("host: {}", data.display()),
        )
        .replace(
            "host: examples/pipeline/out",
            &format!("host: {}", out_dir.display()),
        );
    std::fs::write(dir.join("pipeline.yaml"), yaml).unwrap();

    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(dir.join("pipeline.yaml")).arg("--plain");
    let out = run(c);
    assert!(out.status.success());

    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.join("report.json")).unwrap())
            .unwrap();
    let (rows, rejected, revenue, by_region) = expected_totals(&data);
    assert_eq!(report["total"]["orders"], rows);
    assert_eq!(report["rejected_rows"], rejected);
    assert_eq!(report["total"]["revenue_cents"], revenue);
    for (region, cents) in by_region {
        assert_eq!(
            report["by_region"][&region]["revenue_cents"], cents,
            "{region}"
        );
    }
    let md = std::fs::read_to_string(out_dir.join("report.md")).unwrap();
    assert!(md.starts_with("# Sales report"));
    // The data directory was granted read-only and is untouched.
    assert_eq!(std::fs::read_dir(&data).unwrap().count(), 3);

    let store = db.store().await;
    let task = only_task(&db).await;
    for s in store.steps_of_task(task).await.unwrap() {
        let attempts = store.attempts_of_step(s.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "{}", s.name);
        assert_eq!(attempts[0].outcome, AttemptOutcome::Completed);
    }
}

async fn a_hostile_plugin_fails_its_step_with_its_kind_and_status_shows_why(db: Db) {
    let dir = scratch("hostile");
    std::fs::write(
        dir.join("hostile.yaml"),
        "namespace: tests\nname: hostile\nversion: 1.0.0\nsteps:\n  - name: spin\n    handler: hostile_loop@0.1.0\n    retry: { max_attempts: 2, backoff: { base_ms: 10 } }\n    limits: { timeout_ms: 300, fuel: 1000000000000 }\n",
    )
    .unwrap();
    let mut c = tasker(&db, &hostile_plugin_dir());
    c.arg("run").arg(dir.join("hostile.yaml")).arg("--plain");
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "a failed task exits 1");
    let task = only_task(&db).await;
    let store = db.store().await;
    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Error
    );
    let step = &store.steps_of_task(task).await.unwrap()[0];
    let attempts = store.attempts_of_step(step.id).await.unwrap();
    // A timeout is retryable by default, so both attempts ran and timed out.
    assert_eq!(attempts.len(), 2);
    assert!(
        attempts
            .iter()
            .all(|a| a.error_kind == Some(ErrorKind::Timeout))
    );
    assert_eq!(attempts[1].decision, Some(RetryDecision::Exhausted));

    let mut c = tasker(&db, &hostile_plugin_dir());
    c.args(["status", &task.to_string()]);
    let out = run(c);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("error"), "{text}");
    assert!(text.contains("timeout: timed out"), "{text}");
    assert!(text.contains("failed (2 of 2 attempts used)"), "{text}");
}

/// Nothing a guest wrote reaches the terminal raw: its error message and event payload are
/// printed with control characters (ESC, NUL, C1 CSI, a bidi override) escaped.
async fn terminal_escapes_from_a_guest_are_printed_escaped(db: Db) {
    let dir = scratch("escapes");
    std::fs::write(
        dir.join("escapes.yaml"),
        "namespace: tests\nname: escapes\nversion: 1.0.0\nsteps:\n  - name: nasty\n    handler: hostile_escapes@0.1.0\n",
    )
    .unwrap();
    let mut c = tasker(&db, &hostile_plugin_dir());
    c.arg("run").arg(dir.join("escapes.yaml")).arg("--plain");
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "a failed task exits 1");
    let task = only_task(&db).await;
    let mut c = tasker(&db, &hostile_plugin_dir());
    c.args(["status", &task.to_string()]);
    let status = run(c);
    assert!(status.status.success());
    for (what, text) in [
        ("run stdout", stdout(&out)),
        ("run stderr", stderr(&out)),
        ("status", stdout(&status)),
    ] {
        for raw in ['\u{1b}', '\0', '\u{9b}', '\u{202e}', '\u{7}'] {
            assert!(!text.contains(raw), "{what} has a raw {raw:?}: {text:?}");
        }
        assert!(
            text.contains("\\u{1b}[2J"),
            "{what} shows the escape: {text}"
        );
    }
    assert!(
        stderr(&out).contains("event custom.nasty"),
        "{}",
        stderr(&out)
    );
}

/// Every attack at once, on one `tasker worker`: each hostile step fails with its own kind,
/// the well-behaved steps beside them and a second task on the same store complete, and
/// nothing a guest did outlives its bound (the 60 MB error message is cut, the disk filler
/// stops at its quota).
async fn every_attack_fails_only_its_own_step_on_a_shared_worker(db: Db) {
    let plugins = scratch("attack-plugins");
    for name in [
        "hostile_socket_flood",
        "hostile_fd_flood",
        "hostile_disk_filler",
        "hostile_huge_error",
        "hostile_deep_json",
        "hostile_symlink",
        "hostile_escapes",
        "hostile_log_flood",
        "hostile_event_names",
    ] {
        let file = format!("{name}@0.1.0.wasm");
        std::fs::copy(hostile_plugin_dir().join(&file), plugins.join(&file)).unwrap();
    }
    std::fs::copy(
        plugin_dir().join("noop@0.1.0.wasm"),
        plugins.join("noop@0.1.0.wasm"),
    )
    .unwrap();
    let input = scratch("attack-input");
    std::fs::write(input.join("a.txt"), "one").unwrap();
    let out = scratch("attack-out");
    let (input, out_dir) = (input.display(), out.display());
    let attacks = tasker_core::template::Template::from_yaml(&format!(
        "namespace: tests\nname: attacks\nversion: 1.0.0\n\
         defaults: {{ retry: {{ max_attempts: 1 }} }}\nsteps:\n\
         \x20 - {{name: sockets, handler: hostile_socket_flood@0.1.0, config: {{addr: '127.0.0.1:9'}}}}\n\
         \x20 - {{name: descriptors, handler: hostile_fd_flood@0.1.0, config: {{path: /in/a.txt}}, grants: {{dirs: [{{host: '{input}', guest: /in}}]}}}}\n\
         \x20 - {{name: disk, handler: hostile_disk_filler@0.1.0, config: {{dir: /out, mode: write}}, grants: {{dirs: [{{host: '{out_dir}', guest: /out, mode: rw}}]}}}}\n\
         \x20 - {{name: symlink, handler: hostile_symlink@0.1.0, config: {{target: '../../etc/passwd', link: /out/evil}}, grants: {{dirs: [{{host: '{out_dir}', guest: /out, mode: rw}}]}}}}\n\
         \x20 - {{name: shout, handler: hostile_huge_error@0.1.0, config: {{bytes: 60000000}}}}\n\
         \x20 - {{name: deep, handler: hostile_deep_json@0.1.0, config: {{depth: 127}}}}\n\
         \x20 - {{name: escapes, handler: hostile_escapes@0.1.0}}\n\
         \x20 - {{name: logs, handler: hostile_log_flood@0.1.0, config: {{count: 5000, bytes: 16000}}}}\n\
         \x20 - {{name: names, handler: hostile_event_names@0.1.0}}\n\
         \x20 - {{name: good, handler: noop@0.1.0}}\n"
    ))
    .unwrap();
    let calm = tasker_core::fixtures::linear(3, "noop@0.1.0");
    let store = db.store().await;
    let mut tasks = Vec::new();
    for t in [&attacks, &calm] {
        store.register_template(t).await.unwrap();
        let created = store
            .create_task(
                &tasker_store::NewTask::new(t.key(), serde_json::json!({})),
                chrono::Utc::now(),
            )
            .await
            .unwrap();
        tasks.push(created.task_id);
    }
    let config = scratch("attack-config").join("tasker.toml");
    std::fs::write(&config, "").unwrap();
    let mut worker = KillOnDrop(
        worker_command(&db, &plugins, &config, "shared", 16)
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .expect("worker starts"),
    );
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state IN ('complete', 'error')",
        2,
        std::time::Duration::from_secs(120),
    )
    .await;
    stop_gracefully(&mut worker.0);

    assert_eq!(
        store.task(tasks[1]).await.unwrap().unwrap().state,
        TaskState::Complete,
        "the other task on the store"
    );
    let mut kinds = std::collections::BTreeMap::new();
    for s in store.steps_of_task(tasks[0]).await.unwrap() {
        let attempts = store.attempts_of_step(s.id).await.unwrap();
        assert_eq!(attempts.len(), 1, "{}: {attempts:?}", s.name);
        let a = &attempts[0];
        if s.name == "shout" {
            let len = a.message.as_deref().unwrap_or_default().len();
            assert!(len < 20_000, "the 60 MB message was cut: {len} bytes");
        }
        kinds.insert(
            s.name.clone(),
            a.error_kind.map_or("completed", |k| k.as_str()).to_owned(),
        );
    }
    let expected: std::collections::BTreeMap<String, String> = [
        ("sockets", "capability_denied"),
        ("descriptors", "capability_denied"),
        ("disk", "capability_denied"),
        ("symlink", "capability_denied"),
        ("shout", "handler_error"),
        ("deep", "bad_output"),
        ("escapes", "handler_error"),
        ("logs", "completed"),
        ("names", "completed"),
        ("good", "completed"),
    ]
    .into_iter()
    .map(|(a, b)| (a.to_owned(), b.to_owned()))
    .collect();
    assert_eq!(kinds, expected);
    let written: u64 = std::fs::read_dir(&out)
        .unwrap()
        .filter_map(|e| e.ok()?.metadata().ok())
        .map(|m| m.len())
        .sum();
    assert!(
        written <= 64 << 20,
        "the disk filler stopped at its quota: {written} bytes"
    );
}

async fn a_bad_template_is_refused_before_anything_is_written(db: Db) {
    let dir = scratch("bad-template");
    std::fs::write(
        dir.join("bad.yaml"),
        "namespace: tests\nname: bad\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop@0.1.0, depends_on: b}\n  - {name: b, handler: noop@0.1.0, depends_on: a}\n",
    )
    .unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(dir.join("bad.yaml"));
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("bad.yaml"), "{err}");
    assert!(err.contains("dependency cycle: "), "{err}");
    // The binary never wrote: no template, no task.
    assert!(db.untouched().await);
}

async fn an_invalid_context_is_refused_with_its_path(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "run",
        "examples/order/order.yaml",
        "--context",
        r#"{"order_id": "x", "customer": {"email": "a@b"}, "items": [], "address": "here"}"#,
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(err.contains("/items"), "{err}");
    assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0);
}

/// The README's first command: no database URL, no server: the embedded store, said once.
#[test]
fn without_a_database_url_the_embedded_store_runs_the_example() {
    let data = scratch("embedded-default");
    let mut c = Command::new(tasker_bin());
    c.current_dir(root())
        .env_remove("DATABASE_URL")
        .env_remove("TASKER_CONFIG")
        .env("TASKER_DATA_DIR", &data)
        .env("TASKER_PLUGIN_DIR", plugin_dir())
        .env("TASKER_CACHE_DIR", cache_dir())
        .args([
            "run",
            "examples/order/order.yaml",
            "--context",
            "@examples/order/context.json",
            "--plain",
        ]);
    let out = run(c);
    assert!(out.status.success(), "tasker run failed");
    let err = stderr(&out);
    let line = format!("store: embedded SQLite {}/tasker.db", data.display());
    assert_eq!(err.matches(&line).count(), 1, "{err}");
    assert!(data.join("tasker.db").is_file());
    assert!(stdout(&out).contains("complete"));
}

/// The README's first command, as a newcomer runs it (with this build of tasker): it stages
/// exactly the plugins the order example's template names, installs no guest toolchain (its
/// handlers are Rust), runs the example to completion and says how long it took.
/// Processes that create one new embedded store at the same moment (`tasker migrate` in
/// several CI jobs) all get it: creating the file, switching it to WAL and migrating happen
/// one process at a time, so none is refused with "database is locked".
#[test]
fn processes_opening_one_new_embedded_store_at_once_all_succeed() {
    for round in 0..8 {
        let db = Db::sqlite("concurrent_open");
        let commands: [&[&str]; 4] = [&["migrate"], &["migrate"], &["migrate"], &["migrate"]];
        let mut children: Vec<_> = commands
            .iter()
            .map(|args| {
                let mut c = tasker(&db, &plugin_dir());
                c.args(*args)
                    .stdout(std::process::Stdio::null())
                    .stderr(std::process::Stdio::piped());
                KillOnDrop(c.spawn().expect("tasker starts"))
            })
            .collect();
        for (args, child) in commands.iter().zip(&mut children) {
            let status = wait_bounded(&mut child.0, CALL_BOUND);
            let mut err = String::new();
            if let Some(mut pipe) = child.0.stderr.take() {
                let _ = std::io::Read::read_to_string(&mut pipe, &mut err);
            }
            assert!(
                status.is_some_and(|s| s.success()),
                "round {round}: tasker {args:?} failed ({status:?}): {err}"
            );
        }
    }
}

#[test]
fn the_default_example_stages_exactly_what_its_template_names() {
    let stage = scratch("example-stage");
    let data = scratch("example-data");
    let out = run({
        let mut c = Command::new(root().join("scripts/example.sh"));
        c.current_dir(root())
            .env("TASKER_BIN", tasker_bin())
            .env("TASKER_STAGE_DIR", &stage)
            .env("TASKER_DATA_DIR", &data)
            .env("TASKER_CACHE_DIR", cache_dir())
            .env_remove("DATABASE_URL")
            .env_remove("TASKER_CONFIG")
            .env_remove("TASKER_PLUGIN_DIR");
        c
    });
    assert!(out.status.success(), "scripts/example.sh failed");
    let template = tasker_core::template::Template::from_yaml(
        &std::fs::read_to_string(root().join("examples/order/order.yaml")).unwrap(),
    )
    .unwrap();
    let named: std::collections::BTreeSet<String> = template
        .components()
        .iter()
        .map(|c| format!("{c}.wasm"))
        .collect();
    let staged: std::collections::BTreeSet<String> = std::fs::read_dir(&stage)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .collect();
    assert_eq!(staged, named);
    let err = stderr(&out);
    assert!(
        !err.contains("toolchain"),
        "no guest toolchain for Rust handlers: {err}"
    );
    let said = format!("{}{err}", stdout(&out));
    assert!(said.contains("==> done in "), "{said}");
    assert!(stdout(&out).contains("complete"), "the example ran");
}

#[test]
fn version_names_the_commit_and_the_wit_package_and_completions_print() {
    let out = run({
        let mut c = Command::new(tasker_bin());
        c.arg("--version");
        c
    });
    assert!(out.status.success());
    let v = stdout(&out);
    let wit = std::fs::read_to_string(root().join("wit/worlds.wit")).unwrap();
    let package = wit
        .lines()
        .find_map(|l| l.trim().strip_prefix("package ")?.strip_suffix(';'))
        .unwrap();
    assert!(
        v.starts_with(&format!("tasker {} (commit ", env!("CARGO_PKG_VERSION"))),
        "{v}"
    );
    assert!(v.contains(&format!("hosts WIT {package})")), "{v}");
    for shell in ["bash", "zsh", "fish"] {
        let out = run({
            let mut c = Command::new(tasker_bin());
            c.args(["completions", shell]);
            c
        });
        assert!(out.status.success(), "{shell}");
        assert!(
            stdout(&out).contains("templates"),
            "{shell} completes subcommands"
        );
    }
}

#[test]
fn a_bad_database_url_and_a_missing_plugin_dir_each_get_one_clear_sentence() {
    let mut c = Command::new(tasker_bin());
    c.current_dir(root())
        .env("DATABASE_URL", "mysql://root@127.0.0.1/test")
        .env("TASKER_PLUGIN_DIR", plugin_dir())
        .args(["run", "examples/order/order.yaml"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("database URL mysql://root@127.0.0.1/test is not supported"),
        "{}",
        stderr(&out)
    );

    let mut c = tasker(&Db::sqlite("no-plugins"), Path::new("/nonexistent/plugins"));
    c.args(["plugins", "list"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    assert!(
        err.contains("plugin directory /nonexistent/plugins does not exist: build the plugins with scripts/build-plugins.sh"),
        "{err}"
    );
}

async fn templates_show_prints_the_dag(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "templates",
        "show",
        "examples/order/order.yaml",
        "--graph",
        "mermaid",
    ]);
    let out = run(c);
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.starts_with("flowchart TD"));
    assert_eq!(text.matches("-->").count(), 5, "{text}");

    let mut c = tasker(&db, &plugin_dir());
    c.args(["templates", "register", "examples/order/order.yaml"]);
    assert!(run(c).status.success());
    let mut c = tasker(&db, &plugin_dir());
    c.args(["templates", "list"]);
    let listed = stdout(&run(c));
    let row = listed
        .lines()
        .find(|l| l.contains("shop/order_fulfilment@1.0.0"))
        .unwrap_or_else(|| panic!("{listed}"));
    assert!(row.contains(" 5 "), "five steps: {row}");
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "templates",
        "show",
        "shop/order_fulfilment@1.0.0",
        "--graph",
        "dot",
    ]);
    let out = run(c);
    assert!(stdout(&out).contains("\"charge_payment\" -> \"ship\";"));
}

fn write_template(dir: &std::path::Path, name: &str, yaml: &str) -> std::path::PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, yaml).unwrap();
    p
}

async fn operations_resolve_cancel_and_retry_through_the_cli(db: Db) {
    let dir = scratch("operations");
    let failing = write_template(
        &dir,
        "failing.yaml",
        "namespace: tests\nname: ops\nversion: 1.0.0\nsteps:\n  - {name: charge, handler: fail@0.1.0, config: {mode: permanent}}\n  - {name: after, handler: noop@0.1.0, depends_on: charge}\n",
    );
    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(&failing).arg("--plain");
    assert_eq!(run(c).status.code(), Some(1));
    let store = db.store().await;
    let task = only_task(&db).await;
    let steps = store.steps_of_task(task).await.unwrap();
    let charge = steps.iter().find(|s| s.name == "charge").unwrap();
    assert_eq!(charge.state, StepState::Error);

    // An operator resolves the failed step by hand; its child becomes ready.
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "resolve",
        &charge.id.to_string(),
        "--result",
        r#"{"manual": true}"#,
    ]);
    let out = run(c);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("1 children are ready"),
        "{}",
        stdout(&out)
    );
    let charge_now = store.step(charge.id).await.unwrap().unwrap();
    assert_eq!(charge_now.state, StepState::ResolvedManually);
    assert_eq!(charge_now.result, Some(serde_json::json!({"manual": true})));

    // Submit without a worker, then cancel: the task is cancelled with its steps.
    let mut c = tasker(&db, &plugin_dir());
    c.arg("submit").arg(&failing);
    let out = run(c);
    assert!(out.status.success());
    let second: i64 = stdout(&out)
        .trim()
        .parse()
        .expect("submit prints the task id");
    let mut c = tasker(&db, &plugin_dir());
    c.args(["cancel", &second.to_string()]);
    assert!(stdout(&run(c)).contains("cancelled (2 steps)"));
    assert_eq!(
        store
            .task(TaskId::new(second))
            .await
            .unwrap()
            .unwrap()
            .state,
        TaskState::Cancelled
    );

    // Retrying a task that is not in error is refused with a clear message.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["retry", &second.to_string()]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains(&second.to_string()),
        "{}",
        stderr(&out)
    );
}

async fn submit_wait_follows_a_task_run_by_a_separate_worker(db: Db) {
    let mut worker = tasker(&db, &plugin_dir());
    worker
        .args(["worker", "--id", "submit-test"])
        .stdout(std::process::Stdio::null());
    let mut worker = worker.spawn().unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "submit",
        "examples/order/order.yaml",
        "--context",
        "@examples/order/context.json",
        "--identity-key",
        "order-1001",
        "--wait",
    ]);
    let out = run(c);
    let _ = worker.kill();
    let _ = worker.wait();
    assert!(out.status.success());
    let text = stdout(&out);
    assert!(text.contains("charge_payment"), "{text}");
    assert!(text.contains(": complete"), "{text}");
    // Live progress from the store's event log, as `run` shows it.
    let progress = stderr(&out);
    for line in [
        "charge_payment: running (attempt 1)",
        "charge_payment: attempt 1 failed: ",
        "charge_payment: waiting for retry at ",
        "charge_payment: complete (attempt ",
        "] task complete",
    ] {
        assert!(progress.contains(line), "{line:?} in {progress}");
    }
    // The same identity key returns the same task instead of a new one.
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "submit",
        "shop/order_fulfilment@1.0.0",
        "--context",
        "@examples/order/context.json",
        "--identity-key",
        "order-1001",
    ]);
    let again = run(c);
    let first_id = text.lines().next().unwrap().trim().to_owned();
    assert_eq!(stdout(&again).trim(), first_id);
    assert!(stderr(&again).contains("already exists for this identity key"));
}

async fn plugins_list_and_inspect_show_hash_world_and_cache(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args(["plugins", "inspect", "audit_hook@0.1.0"]);
    let out = run(c);
    assert!(out.status.success());
    let text = stdout(&out);
    let bytes = std::fs::read(plugin_dir().join("audit_hook@0.1.0.wasm")).unwrap();
    let hash = blake3_hex(&bytes);
    assert!(text.contains(&format!("blake3:{hash}")), "{text}");
    assert!(
        text.contains("tasker:plugin/event-hook@0.1.1 (export: on-event)"),
        "{text}"
    );

    let mut c = tasker(&db, &plugin_dir());
    c.args(["plugins", "list"]);
    let text = stdout(&run(c));
    assert!(text.contains("order_charge@0.1.0"), "{text}");
    assert!(text.contains("step-handler"), "{text}");
    assert!(text.contains("retry-policy"), "{text}");
}

fn blake3_hex(bytes: &[u8]) -> String {
    tasker_sandbox::PluginHash::of(bytes).to_hex()
}

/// `tasker status` shows each step's result, attempts made, timing and worker, clears the
/// last error once a step is done (here resolved by hand), and with `--attempts` and
/// `--transitions` every attempt (kind, decision, fuel, hash, worker) and every state change.
async fn status_shows_results_attempts_and_transitions(db: Db) {
    let dir = scratch("status-history");
    std::fs::write(
        dir.join("t.yaml"),
        "namespace: tests\nname: history\nversion: 1.0.0\nsteps:\n  - { name: ok, handler: echo@0.1.0, config: { said: hello } }\n  - name: bad\n    handler: fail@0.1.0\n    config: { mode: retryable }\n    retry: { max_attempts: 2, backoff: { base_ms: 10, jitter: 0 } }\n",
    )
    .unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(dir.join("t.yaml")).arg("--plain");
    let out = run(c);
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    let task = only_task(&db).await;
    let store = db.store().await;
    let steps = store.steps_of_task(task).await.unwrap();
    let bad = steps.iter().find(|s| s.name == "bad").unwrap().id;

    let status = |extra: &[&str]| {
        let mut c = tasker(&db, &plugin_dir());
        c.args(["status", &task.to_string()]).args(extra);
        let out = run(c);
        assert!(out.status.success(), "{}", stderr(&out));
        stdout(&out)
    };
    let row = |text: &str, name: &str| {
        text.lines()
            .find(|l| l.contains(&format!(" {name} ")))
            .unwrap_or_else(|| panic!("no row {name}: {text}"))
            .to_owned()
    };
    let text = status(&[]);
    let ok = row(&text, "ok");
    assert!(ok.contains("1/3"), "attempts made: {ok}");
    assert!(ok.contains("hello"), "the result: {ok}");
    let failed = row(&text, "bad");
    assert!(failed.contains("2/2"), "{failed}");
    assert!(failed.contains("handler_error"), "{failed}");

    // Resolved by hand: the step is done, so its old error leaves the table...
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "resolve",
        &bad.to_string(),
        "--result",
        "{\"by\": \"hand\"}",
    ]);
    assert!(run(c).status.success());
    let text = status(&[]);
    let resolved = row(&text, "bad");
    assert!(!resolved.contains("handler_error"), "{resolved}");
    assert!(resolved.contains("hand"), "{resolved}");

    // ...and stays in the history.
    let text = status(&["--attempts", "--transitions"]);
    let echo = std::fs::read(plugin_dir().join("echo@0.1.0.wasm")).unwrap();
    let hash: String = blake3::hash(&echo).to_hex().chars().take(12).collect();
    let attempts: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("completed ") || l.contains("failed "))
        .filter(|l| l.contains(" ok ") || l.contains(" bad "))
        .collect();
    assert_eq!(attempts.len(), 3, "{text}");
    assert!(
        attempts.iter().any(|l| l.contains(&hash)),
        "the echo hash: {text}"
    );
    assert!(
        attempts
            .iter()
            .any(|l| l.contains("handler_error") && l.contains("retry")),
        "{text}"
    );
    assert!(attempts.iter().any(|l| l.contains("exhausted")), "{text}");
    assert!(
        text.contains("resolved_manually"),
        "a transition row: {text}"
    );
    assert!(text.contains("waiting_for_retry"), "{text}");

    // Through a server these read the store: refused, saying so.
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "--server",
        "http://127.0.0.1:9",
        "status",
        &task.to_string(),
        "--attempts",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("without --server"),
        "{}",
        stderr(&out)
    );
}

/// `scripts/example.sh http`: the steps call the shop API that the script starts on a loopback
/// port, with the token as a host-held secret. The charge is rate limited once: attempt 1
/// fails with the server's `Retry-After: 1` as its retry delay, attempt 2 charges. The token
/// reaches the server (no 401) but neither the script's output nor `tasker status --attempts`.
async fn the_http_example_calls_its_api_and_retries_the_rate_limited_charge(db: Db) {
    let stage = scratch("http-example-stage");
    let token = format!("tok_e2e_{}_do_not_print", std::process::id());
    let out = run({
        let mut c = Command::new(root().join("scripts/example.sh"));
        c.arg("http")
            .current_dir(root())
            .env("TASKER_BIN", tasker_bin())
            .env("TASKER_STAGE_DIR", &stage)
            .env("TASKER_CACHE_DIR", cache_dir())
            .env("DATABASE_URL", db.url())
            .env("EXAMPLE_API_TOKEN", &token)
            .env_remove("TASKER_CONFIG")
            .env_remove("TASKER_PLUGIN_DIR")
            .env_remove("RUST_BACKTRACE");
        c
    });
    let said = format!("{}{}", stdout(&out), stderr(&out));
    assert!(
        out.status.success(),
        "scripts/example.sh http failed: {said}"
    );
    assert!(
        !said.contains(&token),
        "the token in the script's output: {said}"
    );
    // The server's request log, printed at the end: one 429, then the charge.
    let log = said
        .split("==> what the API served")
        .nth(1)
        .unwrap_or_else(|| panic!("no request log: {said}"));
    assert!(log.contains("POST /v1/charges -> 429"), "{log}");
    assert!(log.contains("POST /v1/charges -> 201"), "{log}");
    assert!(
        !log.contains("-> 401"),
        "every request was authorised: {log}"
    );

    let store = db.store().await;
    let task = only_task(&db).await;
    assert_eq!(
        store.task(task).await.unwrap().unwrap().state,
        TaskState::Complete
    );
    let steps = store.steps_of_task(task).await.unwrap();
    assert_eq!(steps.len(), 4);
    for s in &steps {
        assert_eq!(s.state, StepState::Complete, "{}", s.name);
        let attempts = store.attempts_of_step(s.id).await.unwrap();
        let want = if s.name == "charge" { 2 } else { 1 };
        assert_eq!(attempts.len(), want, "{}: {attempts:?}", s.name);
        for a in &attempts {
            let text = format!("{a:?} {:?}", s.result);
            assert!(!text.contains(&token), "the token in {}: {text}", s.name);
        }
    }
    let charge = steps.iter().find(|s| s.name == "charge").unwrap();
    let attempts = store.attempts_of_step(charge.id).await.unwrap();
    let first = &attempts[0];
    assert_eq!(first.outcome, AttemptOutcome::Failed);
    assert_eq!(first.error_kind, Some(ErrorKind::HandlerError));
    assert_eq!(first.retryable, Some(true));
    assert_eq!(first.decision, Some(RetryDecision::Retry));
    assert!(
        first.message.as_deref().unwrap_or_default().contains("429"),
        "{first:?}"
    );
    // The server's Retry-After (1 s) became the retry time.
    let wait = (first.next_ready_at.unwrap() - first.finished_at).num_milliseconds();
    assert_eq!(wait, 1000, "{first:?}");
    assert_eq!(attempts[1].outcome, AttemptOutcome::Completed);
    assert!(attempts[1].started_at >= first.next_ready_at.unwrap());

    // The quote the API priced (2 x 24.50 + 89.00, free shipping, 19 % tax), charged once.
    let result = |name: &str| {
        steps
            .iter()
            .find(|s| s.name == name)
            .and_then(|s| s.result.clone())
            .unwrap_or_else(|| panic!("no result for {name}"))
    };
    assert_eq!(result("quote")["total_cents"], 16422);
    let receipt = result("confirm");
    assert_eq!(receipt["status"], "succeeded", "{receipt}");
    assert_eq!(receipt["amount_cents"], 16422, "{receipt}");
    assert_eq!(receipt["charge_id"], result("charge")["charge_id"]);

    let mut c = tasker(&db, &stage);
    c.args(["status", &task.to_string(), "--attempts"]);
    let status = run(c);
    assert!(status.status.success(), "{}", stderr(&status));
    let text = stdout(&status);
    assert!(
        !text.contains(&token),
        "the token in status --attempts: {text}"
    );
    // Each attempt's requests are listed, the rate-limited one with its 429.
    let requests: Vec<&str> = text
        .lines()
        .filter(|l| l.contains("http://127.0.0.1:"))
        .filter(|l| l.contains(" GET ") || l.contains(" POST "))
        .collect();
    assert_eq!(requests.len(), 6, "{text}");
    assert!(
        requests
            .iter()
            .any(|l| l.contains("/v1/charges ") && l.contains(" 429 ")),
        "{text}"
    );
}

tasker_tests::cli_on_both_backends!(
    status_shows_results_attempts_and_transitions,
    order_fulfilment_runs_with_two_rate_limited_payment_attempts,
    the_http_example_calls_its_api_and_retries_the_rate_limited_charge,
    data_pipeline_reads_a_read_only_grant_and_writes_its_report,
    a_hostile_plugin_fails_its_step_with_its_kind_and_status_shows_why,
    terminal_escapes_from_a_guest_are_printed_escaped,
    every_attack_fails_only_its_own_step_on_a_shared_worker,
    a_bad_template_is_refused_before_anything_is_written,
    an_invalid_context_is_refused_with_its_path,
    templates_show_prints_the_dag,
    operations_resolve_cancel_and_retry_through_the_cli,
    submit_wait_follows_a_task_run_by_a_separate_worker,
    plugins_list_and_inspect_show_hash_world_and_cache,
    a_closed_pipe_ends_a_listing_quietly,
);

/// A reader that went away ends a listing quietly: no panic, no error message.
async fn a_closed_pipe_ends_a_listing_quietly(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args(["templates", "register", "examples/order/order.yaml"]);
    assert!(run(c).status.success());
    // The reading end is closed before the command writes anything.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let mut c = tasker(&db, &plugin_dir());
    c.args(["templates", "list"])
        .stdin(std::process::Stdio::null())
        .stdout(writer)
        .stderr(std::process::Stdio::piped());
    let mut child = c.spawn().unwrap();
    let status = wait_bounded(&mut child, CALL_BOUND).expect("it ends");
    let mut err = String::new();
    std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
    assert!(
        !err.contains("panicked") && !err.contains("Broken pipe"),
        "{err}"
    );
    use std::os::unix::process::ExitStatusExt;
    // SIGPIPE (13) ends it, as it ends any Unix tool whose reader left.
    assert!(
        status.success() || status.signal() == Some(13),
        "{status:?}: {err}"
    );
}

/// Connection errors say what failed instead of guessing (PostgreSQL only: the embedded
/// store has no server to refuse).
#[tokio::test]
async fn connection_errors_say_what_failed() {
    let status = |url: &str| {
        let mut c = Command::new(tasker_bin());
        c.current_dir(root())
            .env("DATABASE_URL", url)
            .env_remove("TASKER_CONFIG")
            .args(["status", "1"]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2));
        stderr(&out)
    };
    let host = std::env::var("DATABASE_URL")
        .ok()
        .and_then(|u| {
            u.split('@')
                .nth(1)
                .map(|h| h.split('/').next().unwrap_or("").to_owned())
        })
        .unwrap_or_else(|| "127.0.0.1:5432".into());
    let err = status(&format!("postgres://tasker_no_such_role@{host}/postgres"));
    assert!(err.contains("the role is unknown or not allowed"), "{err}");
    assert!(
        err.contains("tasker_no_such_role"),
        "the server's own words: {err}"
    );
    assert!(!err.contains("is PostgreSQL running"), "{err}");
    // Nothing listens on port 1.
    let err = status("postgres://postgres@127.0.0.1:1/postgres");
    assert!(err.contains("connection refused"), "{err}");
}
