//! The task page of a running workflow: its DAG is drawn with every edge, each node changes
//! state live (pending, then in progress, then complete) without a reload, the timeline
//! fills with a bar per attempt, and the step page shows the attempt and its result.
//! Saves `task-page.png` and `step-page.png` (and, with `TASKER_UPDATE_SCREENSHOTS=1`, the
//! README's `docs/img/task-page.png`).

use std::process::Stdio;

use serde_json::{Value, json};
use tasker_tests::browser::{Api, Browser, listening};
use tasker_tests::cli::{Db, KillOnDrop, plugin_dir, root, tasker};

use super::{edges, node_states, seen_states, store_name, watch_nodes};

/// A small release pipeline of slow steps (600 ms each), five layers deep.
const TEMPLATE: &str = "\
namespace: ui
name: release
version: 1.0.0
description: Build, test and publish a release.
defaults:
  limits: { timeout_ms: 20000 }
steps:
  - { name: checkout, handler: slow@0.1.0, config: { ms: 600 } }
  - { name: build, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [checkout] }
  - { name: lint, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [checkout] }
  - { name: unit_tests, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [build] }
  - { name: integration_tests, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [build] }
  - { name: docs, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [lint] }
  - { name: package, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [unit_tests, integration_tests, docs] }
  - { name: publish, handler: slow@0.1.0, config: { ms: 600 }, depends_on: [package] }
";

const STEPS: [&str; 8] = [
    "checkout",
    "build",
    "lint",
    "unit_tests",
    "integration_tests",
    "docs",
    "package",
    "publish",
];

async fn running_task_nodes_turn_complete_without_a_reload(db: Db) {
    let store = store_name(&db);
    // The API and the page only: the task waits, drawn, until a worker starts.
    let (_server, base) = listening(&db, &plugin_dir(), "serve", &["--no-auth"]);
    let api = Api::new(&base, None);
    api.register(TEMPLATE).await;
    let id = api.submit("ui/release@1.0.0", json!({})).await;

    let b = Browser::start(&format!("task_page-{store}")).await;
    b.goto(&format!("{base}/ui/tasks/{id}")).await;
    b.wait_page("task").await;
    b.wait_attr("svg#dag", "data-rendered", "1").await;
    assert_eq!(b.count("svg#dag g.node[data-step][data-step-id]").await, 8);
    let mut want: Vec<(String, String)> = [
        ("checkout", "build"),
        ("checkout", "lint"),
        ("build", "unit_tests"),
        ("build", "integration_tests"),
        ("lint", "docs"),
        ("unit_tests", "package"),
        ("integration_tests", "package"),
        ("docs", "package"),
        ("package", "publish"),
    ]
    .iter()
    .map(|(a, b)| (a.to_string(), b.to_string()))
    .collect();
    want.sort();
    assert_eq!(edges(&b).await, want, "the DAG's edges");
    let states = node_states(&b).await;
    for s in STEPS {
        assert_eq!(states[s], "pending", "{s} before any worker: {states}");
    }
    watch_nodes(&b).await;

    // A worker of its own, in another process: the page hears of its work through the
    // task's event stream only.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["worker", "--id", "ui-worker", "--concurrency", "4"])
        .stdin(Stdio::null())
        .stdout(Stdio::null());
    let _worker = KillOnDrop(c.spawn().expect("tasker worker starts"));

    b.wait_js(
        "every node to turn complete",
        "const n = [...document.querySelectorAll('svg#dag g.node[data-step]')];
         return n.length === 8 && n.every(e => e.dataset.state === 'complete')",
        vec![],
    )
    .await;
    b.wait_attr("#task-state", "data-state", "complete").await;
    let seen = seen_states(&b).await;
    let mut in_progress = 0;
    for s in STEPS {
        let list: Vec<&str> = seen[s]
            .as_array()
            .unwrap_or_else(|| panic!("no states seen for {s}: {seen}"))
            .iter()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(list.first(), Some(&"pending"), "{s}: {list:?}");
        assert_eq!(list.last(), Some(&"complete"), "{s}: {list:?}");
        in_progress += usize::from(list.contains(&"in_progress"));
    }
    // 600 ms in progress each: the page showed most of them running.
    assert!(
        in_progress >= 4,
        "steps seen in progress: {in_progress} of 8 ({seen})"
    );

    // The timeline: one completed bar per step (the task is read again at most once a
    // second).
    b.wait_js(
        "a completed attempt in #timeline for each step",
        "const bars = [...document.querySelectorAll(
           '#timeline [data-attempt][data-step][data-outcome]')];
         const done = new Set(bars.filter(e => e.dataset.outcome === 'completed')
           .map(e => e.dataset.step));
         return done.size === 8",
        vec![],
    )
    .await;
    let shot = b
        .screenshot_page(&format!("task-page{}", suffix(store)))
        .await;
    if store == "sqlite" && std::env::var("TASKER_UPDATE_SCREENSHOTS").as_deref() == Ok("1") {
        let readme = root().join("docs/img/task-page.png");
        std::fs::create_dir_all(readme.parent().unwrap()).unwrap();
        std::fs::copy(&shot, &readme).expect("docs/img/task-page.png is written");
        eprintln!("updated {}", readme.display());
    }
    seen_states(&b).await;

    // The step page: its attempt, with what the sandbox measured, and its result.
    let step = api.step_id(id, "build").await;
    b.goto(&format!("{base}/ui/steps/{step}")).await;
    b.wait_page("step").await;
    b.wait_attr("#step-state", "data-state", "complete").await;
    b.wait_js(
        "one attempt in #attempts",
        "return document.querySelectorAll('#attempts tr[data-attempt]').length === 1",
        vec![],
    )
    .await;
    b.wait_js(
        "the result in #result",
        "const r = document.querySelector('#result');
         return r !== null && r.textContent.includes('slept_ms')",
        vec![],
    )
    .await;
    let hash = api.get(&format!("/v1/steps/{step}")).await["attempt_history"][0]["plugin_hash"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let hex = hash.trim_start_matches("blake3:");
    assert_eq!(hex.len(), 64, "the attempt's plugin hash: {hash}");
    let attempts = b.text("#attempts").await;
    assert!(
        attempts.contains(&hex[..8]),
        "#attempts names the plugin build that ran ({hash}): {attempts}"
    );
    for css in ["#logs", "#events", "#config"] {
        assert_eq!(b.count(css).await, 1, "{css} on the step page");
    }
    assert!(
        b.text("#config").await.contains("600"),
        "#config shows the step's config"
    );
    b.screenshot_page(&format!("step-page{}", suffix(store)))
        .await;
    b.assert_no_console_errors(&[]).await;
    b.close().await;
}

/// Screenshots of the SQLite run carry the plain name (the README's), PostgreSQL's a suffix.
pub fn suffix(store: &str) -> &'static str {
    if store == "sqlite" { "" } else { "-postgres" }
}

tasker_tests::cli_on_both_backends!(running_task_nodes_turn_complete_without_a_reload);
