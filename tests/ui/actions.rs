//! The operator's actions from the page, each confirmed first: retry a failed task and see
//! it run to completion live; resolve a failed step by hand with a result and see its task
//! move on.

use serde_json::{Value, json};
use tasker_tests::browser::{Api, Browser, listening};
use tasker_tests::cli::{Db, plugin_dir, scratch};

use super::{seen_states, store_name, wait_node, watch_nodes};

/// `read` fails (permanently) while its input directory holds no CSV file: the test adds
/// one before it retries, so the retry succeeds.
fn retry_template(input: &std::path::Path) -> String {
    format!(
        "namespace: ui\nname: retried\nversion: 1.0.0\nsteps:\n\
         \x20 - name: read\n\
         \x20   handler: csv_read@0.1.0\n\
         \x20   retry: {{ max_attempts: 1 }}\n\
         \x20   grants: {{ dirs: [{{ host: '{}', guest: /input, mode: ro }}] }}\n\
         \x20   config: {{ input: /input }}\n\
         \x20 - {{ name: report, handler: noop@0.1.0, depends_on: [read] }}\n",
        input.display()
    )
}

async fn retry_a_failed_task_from_its_page(db: Db) {
    let store = store_name(&db);
    let input = scratch("ui-retry-input");
    let (_server, base) = listening(&db, &plugin_dir(), "dev", &["--workers", "2"]);
    let api = Api::new(&base, None);
    api.register(&retry_template(&input)).await;
    let id = api.submit("ui/retried@1.0.0", json!({})).await;
    api.wait_task(id, "error").await;

    let b = Browser::start(&format!("retry-{store}")).await;
    b.goto(&format!("{base}/ui/tasks/{id}")).await;
    b.wait_page("task").await;
    b.wait_attr("svg#dag", "data-rendered", "1").await;
    b.wait_attr("#task-state", "data-state", "error").await;
    wait_node(&b, "read", "error").await;
    wait_node(&b, "report", "pending").await;
    watch_nodes(&b).await;

    // Asked first: "no" changes nothing.
    b.click("button[data-action=\"retry\"]").await;
    b.confirm(false).await;
    assert_eq!(api.task(id).await["state"], "error", "a declined retry");

    std::fs::write(input.join("sales.csv"), "sku,qty\nWIDGET-1,3\n").unwrap();
    b.click("button[data-action=\"retry\"]").await;
    b.confirm(true).await;
    b.wait_attr("#task-state", "data-state", "complete").await;
    wait_node(&b, "read", "complete").await;
    wait_node(&b, "report", "complete").await;
    let seen = seen_states(&b).await;
    assert_eq!(
        seen["read"][0], "error",
        "read was seen failed first: {seen}"
    );
    // The timeline keeps the failed attempt next to the one that succeeded.
    b.wait_js(
        "a failed and a completed attempt of read in #timeline",
        "const bars = [...document.querySelectorAll('#timeline [data-step=\"read\"][data-outcome]')];
         const outcomes = bars.map(e => e.dataset.outcome);
         return outcomes.includes('failed') && outcomes.includes('completed')",
        vec![],
    )
    .await;
    assert_eq!(api.task(id).await["state"], "complete");
    b.assert_no_console_errors(&[]).await;
    b.close().await;
}

async fn resolve_a_failed_step_by_hand(db: Db) {
    let store = store_name(&db);
    let (_server, base) = listening(&db, &plugin_dir(), "dev", &["--workers", "2"]);
    let api = Api::new(&base, None);
    api.register(
        "namespace: ui\nname: resolved\nversion: 1.0.0\nsteps:\n\
         \x20 - { name: charge, handler: fail@0.1.0, config: { mode: permanent } }\n\
         \x20 - { name: ship, handler: noop@0.1.0, depends_on: [charge] }\n",
    )
    .await;
    let id = api.submit("ui/resolved@1.0.0", json!({})).await;
    api.wait_task(id, "error").await;
    let charge = api.step_id(id, "charge").await;

    let b = Browser::start(&format!("resolve-{store}")).await;
    b.goto(&format!("{base}/ui/steps/{charge}")).await;
    b.wait_page("step").await;
    b.wait_attr("#step-state", "data-state", "error").await;
    b.wait_js(
        "the failed attempt in #attempts",
        "const rows = document.querySelectorAll('#attempts tr[data-attempt]');
         return rows.length === 1 && rows[0].textContent.includes('input rejected')",
        vec![],
    )
    .await;
    b.wait_for("form#resolve-form textarea[name=\"result\"]")
        .await;
    b.js("window.__noReload = 1; return true", vec![]).await;
    b.type_into(
        "form#resolve-form textarea[name=\"result\"]",
        r#"{"charged_by": "hand", "amount_cents": 1995}"#,
    )
    .await;
    b.click("form#resolve-form button[data-action=\"resolve\"]")
        .await;
    b.confirm(true).await;
    b.wait_attr("#step-state", "data-state", "resolved_manually")
        .await;
    b.wait_js(
        "the given result in #result",
        "const r = document.querySelector('#result');
         return r !== null && r.textContent.includes('charged_by')",
        vec![],
    )
    .await;
    assert_eq!(
        b.js("return window.__noReload === 1", vec![]).await,
        json!(true),
        "resolving reloaded the page"
    );
    b.screenshot(&format!(
        "step-page-resolved{}",
        super::task_page::suffix(store)
    ))
    .await;
    let step = api.get(&format!("/v1/steps/{charge}")).await;
    assert_eq!(step["state"], "resolved_manually");
    assert_eq!(
        step["result"],
        json!({"charged_by": "hand", "amount_cents": 1995})
    );

    // Its child ran: the task completed.
    api.wait_task(id, "complete").await;
    b.goto(&format!("{base}/ui/tasks/{id}")).await;
    b.wait_page("task").await;
    b.wait_attr("#task-state", "data-state", "complete").await;
    wait_node(&b, "charge", "resolved_manually").await;
    wait_node(&b, "ship", "complete").await;
    let ship = api.step_id(id, "ship").await;
    let ship: Value = api.get(&format!("/v1/steps/{ship}")).await;
    assert_eq!(ship["state"], "complete");
    b.assert_no_console_errors(&[]).await;
    b.close().await;
}

tasker_tests::cli_on_both_backends!(
    retry_a_failed_task_from_its_page,
    resolve_a_failed_step_by_hand,
);
