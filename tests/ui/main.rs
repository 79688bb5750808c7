//! The web page that `tasker serve` and `tasker dev` serve at `/`, in a real headless Chromium
//! driven over WebDriver (`tasker_tests::browser`), on both stores: a running task's nodes
//! turn complete live, a failed task is retried and a failed step resolved from the page,
//! a read-only token sees no action and a forged POST is refused, a plugin uploaded through
//! the page runs, a 1,000-step task renders and pans and zooms, and a step page lists its
//! attempts' HTTP requests, granted and refused. Every test ends with no console error.
//! Build the binary first (`cargo build -p tasker-cli`) and the plugins
//! (`scripts/build-plugins.sh`); screenshots go to `target/ui-screenshots/`.

mod actions;
mod auth;
mod http_calls;
mod large_dag;
mod plugins;
mod task_page;

use serde_json::{Value, json};
use tasker_tests::browser::Browser;
use tasker_tests::cli::Db;

/// `"postgres"` or `"sqlite"`, to name screenshots and browsers.
pub fn store_name(db: &Db) -> &'static str {
    match db {
        Db::Postgres(_) => "postgres",
        Db::Sqlite(_) => "sqlite",
    }
}

/// Marks the page (`window.__noReload`) and starts recording every state each DAG node
/// shows (`window.__seen[name]`: the states in the order they appeared), whether the page
/// changes a node's attribute or draws the node again.
pub async fn watch_nodes(b: &Browser) {
    b.js(
        "window.__noReload = 1;
         window.__seen = {};
         const look = () => {
           for (const n of document.querySelectorAll('svg#dag g.node[data-step]')) {
             const seen = window.__seen[n.dataset.step] || (window.__seen[n.dataset.step] = []);
             if (seen[seen.length - 1] !== n.dataset.state) seen.push(n.dataset.state);
           }
         };
         look();
         window.__watcher = new MutationObserver(look);
         window.__watcher.observe(document.body,
           {subtree: true, childList: true, attributes: true, attributeFilter: ['data-state']});
         return true",
        vec![],
    )
    .await;
}

/// What [`watch_nodes`] recorded; fails if the page was reloaded since.
pub async fn seen_states(b: &Browser) -> Value {
    let marked = b.js("return window.__noReload === 1", vec![]).await;
    assert_eq!(marked, json!(true), "the page was reloaded");
    b.js("return window.__seen", vec![]).await
}

/// `name -> data-state` of every node of `svg#dag`.
pub async fn node_states(b: &Browser) -> Value {
    b.js(
        "const out = {};
         for (const n of document.querySelectorAll('svg#dag g.node[data-step]'))
           out[n.dataset.step] = n.dataset.state;
         return out",
        vec![],
    )
    .await
}

/// Waits until the node of step `name` shows `state`.
pub async fn wait_node(b: &Browser, name: &str, state: &str) {
    b.wait_attr(
        &format!("svg#dag g.node[data-step=\"{name}\"]"),
        "data-state",
        state,
    )
    .await;
}

/// The edges of `svg#dag` as (from, to) step names, whether the page names the ends by
/// step name or by step id.
pub async fn edges(b: &Browser) -> Vec<(String, String)> {
    let v = b
        .js(
            "const names = {};
             for (const n of document.querySelectorAll('svg#dag g.node[data-step]'))
               names[n.dataset.stepId] = n.dataset.step;
             const name = (x) => names[x] || x;
             return [...document.querySelectorAll('svg#dag path.edge[data-from][data-to]')]
               .map(e => [name(e.dataset.from), name(e.dataset.to)])",
            vec![],
        )
        .await;
    let mut out: Vec<(String, String)> = v
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            (
                p[0].as_str().unwrap_or_default().to_owned(),
                p[1].as_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The operator's actions (docs/ui.md): each changes something on the server. The page
/// also marks view controls with `data-action` (zoom, filters, paging); those change nothing.
const OPERATOR_ACTIONS: [&str; 5] = ["cancel", "retry", "resolve", "upload", "redeliver"];

/// The operator's action buttons on the page (`button[data-action]` for an action that
/// changes something).
pub async fn action_buttons(b: &Browser) -> Vec<String> {
    b.js(
        "const [actions] = arguments;
         return [...document.querySelectorAll('button[data-action]')]
           .map(e => e.dataset.action).filter(a => actions.includes(a))",
        vec![json!(OPERATOR_ACTIONS)],
    )
    .await
    .as_array()
    .into_iter()
    .flatten()
    .filter_map(|a| a.as_str().map(str::to_owned))
    .collect()
}
