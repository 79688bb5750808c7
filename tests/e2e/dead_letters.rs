//! Dead letters from the CLI: `tasker hooks dead-letters` lists them (hook, event, task,
//! attempts, last error), `tasker hooks redeliver` sends them again through the workers'
//! leased delivery loop, locally and through `--server`, and each redelivered letter
//! arrives exactly once.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

use tasker_tests::cli::*;

/// The audit hook appends one line per event to `<out>/events.jsonl`; while that path is a
/// directory every delivery fails (and, with one attempt, goes dead at once).
fn template(dir: &Path, out: &Path) -> std::path::PathBuf {
    let file = dir.join("dead.yaml");
    std::fs::write(
        &file,
        format!(
            "namespace: tests\nname: dead_letters\nversion: 1.0.0\nhooks:\n\
             \x20 - component: hook_slow_audit@0.1.0\n    events: ['task.completed']\n\
             \x20   grants: {{dirs: [{{host: '{}', guest: /audit, mode: rw}}]}}\n\
             \x20   delivery: {{max_attempts: 1}}\n\
             steps:\n  - {{name: a, handler: noop@0.1.0}}\n",
            out.display()
        ),
    )
    .unwrap();
    file
}

fn lines(file: &Path) -> Vec<String> {
    std::fs::read_to_string(file)
        .unwrap_or_default()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn cli(db: &Db, args: &[&str]) -> (bool, String, String) {
    let mut c = tasker(db, &plugin_dir());
    c.args(args);
    let out = run(c);
    (out.status.success(), stdout(&out), stderr(&out))
}

/// A `tasker serve` without auth or workers on a free loopback port, and its URL.
pub(crate) fn serve(db: &Db) -> (KillOnDrop, String) {
    let mut c = tasker(db, &plugin_dir());
    c.args(["serve", "--listen", "127.0.0.1:0", "--no-auth"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = KillOnDrop(c.spawn().expect("tasker serve starts"));
    let mut err = BufReader::new(child.0.stderr.take().unwrap());
    let mut line = String::new();
    let url = loop {
        line.clear();
        assert!(
            err.read_line(&mut line).unwrap() > 0,
            "tasker serve ended before serving"
        );
        eprint!("serve: {line}");
        if let Some(rest) = line.strip_prefix("serving ") {
            break rest.split_whitespace().next().unwrap().to_owned();
        }
    };
    // Keep draining, so that the server never blocks on a full pipe.
    std::thread::spawn(move || {
        let mut sink = String::new();
        while err.read_line(&mut sink).unwrap_or(0) > 0 {
            sink.clear();
        }
    });
    (child, url)
}

async fn a_redelivered_dead_letter_arrives_exactly_once(db: Db) {
    let dir = scratch("dead-letters");
    let out = dir.join("out");
    let events = out.join("events.jsonl");
    std::fs::create_dir_all(&events).unwrap();
    let yaml = template(&dir, &out);
    drop(db.store().await);

    // Two tasks, each with a dead `task.completed` letter.
    for _ in 0..2 {
        let (ok, _, err) = cli(&db, &["run", yaml.to_str().unwrap(), "--plain"]);
        assert!(ok, "tasker run");
        assert!(
            err.contains("hook hook_slow_audit@0.1.0: 0 delivered, 0 pending, 1 dead"),
            "{err}"
        );
    }
    let (ok, listed, _) = cli(&db, &["hooks", "dead-letters"]);
    assert!(ok);
    assert!(listed.contains("2 dead letters"), "{listed}");
    assert!(
        listed.contains("hook_slow_audit@0.1.0") && listed.contains("task.completed"),
        "{listed}"
    );
    assert!(
        listed.contains("cannot open /audit/events.jsonl"),
        "{listed}"
    );
    let dead_ids: Vec<i64> = {
        let n = count(&db, "SELECT count(*) FROM hook_outbox WHERE state = 'dead'").await;
        assert_eq!(n, 2);
        let first = count(&db, "SELECT min(id) FROM hook_outbox WHERE state = 'dead'").await;
        let last = count(&db, "SELECT max(id) FROM hook_outbox WHERE state = 'dead'").await;
        vec![first, last]
    };
    let (ok, listed, _) = cli(&db, &["hooks", "dead-letters", "--hook", "hook_slow_audit"]);
    assert!(ok && listed.contains("2 dead letters"), "{listed}");
    let (ok, _, err) = cli(&db, &["hooks", "dead-letters", "--hook", "nope"]);
    assert!(!ok && err.contains("no hook \"nope\""), "{err}");

    // The downstream is fixed.
    std::fs::remove_dir(&events).unwrap();

    // One locally, by id; an id that is not a dead letter is refused and changes nothing.
    let (ok, _, err) = cli(&db, &["hooks", "redeliver", "999999"]);
    assert!(!ok && err.contains("999999"), "{err}");
    let first = dead_ids[0].to_string();
    let (ok, said, _) = cli(&db, &["hooks", "redeliver", &first]);
    assert!(ok, "redeliver");
    assert!(
        said.contains(&format!("dead letter {first} sent again")) && said.contains("1 redelivered"),
        "{said}"
    );
    // Nothing delivers without a worker: it is pending, not dead.
    assert_eq!(
        count(&db, "SELECT count(*) FROM hook_outbox WHERE state = 'dead'").await,
        1
    );
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nshutdown_grace = \"10s\"\n").unwrap();
    let mut worker = spawn_worker(&db, &config, "deliverer", 2);
    wait_for(
        &db,
        "SELECT count(*) FROM hook_outbox WHERE state = 'delivered'",
        1,
        Duration::from_secs(120),
    )
    .await;

    // The other through the API, with --all.
    let (server, url) = serve(&db);
    let (ok, listed, _) = cli(&db, &["--server", &url, "hooks", "dead-letters"]);
    assert!(ok && listed.contains("1 dead letters"), "{listed}");
    assert!(listed.contains(&dead_ids[1].to_string()), "{listed}");
    let (ok, said, _) = cli(
        &db,
        &[
            "--server",
            &url,
            "hooks",
            "redeliver",
            "--all",
            "--hook",
            "hook_slow_audit@0.1.0",
        ],
    );
    assert!(ok && said.contains("1 redelivered"), "{said}");
    wait_for(
        &db,
        "SELECT count(*) FROM hook_outbox WHERE state = 'delivered'",
        2,
        Duration::from_secs(120),
    )
    .await;
    drop(server);
    stop_gracefully(&mut worker.0);

    // Each letter arrived once: one line per task, nothing pending or dead.
    let got = lines(&events);
    assert_eq!(got.len(), 2, "{got:?}");
    let tasks: std::collections::BTreeSet<String> = got
        .iter()
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).unwrap();
            assert_eq!(v["name"], "task.completed");
            v["task_id"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(tasks.len(), 2, "{got:?}");
    assert_eq!(
        count(
            &db,
            "SELECT count(*) FROM hook_outbox WHERE state <> 'delivered'"
        )
        .await,
        0
    );
    let (ok, listed, _) = cli(&db, &["hooks", "dead-letters"]);
    assert!(ok && listed.contains("no dead letters"), "{listed}");
}

tasker_tests::cli_on_both_backends!(a_redelivered_dead_letter_arrives_exactly_once);
