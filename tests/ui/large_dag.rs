//! A 1,000-step task stays usable (issue #16, point 5): its page draws every node and edge,
//! the wheel zooms the DAG and a drag pans it, without scrolling or leaving the page. No
//! timing goal here: `cargo bench -p tasker-tests --bench ui` measures.

use serde_json::{Value, json};
use tasker_tests::browser::{Api, Browser, layered_edges, layered_template, listening};
use tasker_tests::cli::{Db, plugin_dir};

use super::store_name;

const STEPS: usize = 1000;
const WIDTH: usize = 40;

/// The bounding box (x, y, width, height) of the node of `s0000` on the screen.
async fn reference_box(b: &Browser) -> (f64, f64, f64, f64) {
    let r = b
        .js(
            "const r = document.querySelector('svg#dag g.node[data-step=\"s0000\"]')
               .getBoundingClientRect();
             return [r.x, r.y, r.width, r.height]",
            vec![],
        )
        .await;
    let f = |i: usize| r[i].as_f64().unwrap_or(f64::NAN);
    (f(0), f(1), f(2), f(3))
}

async fn a_thousand_step_task_renders_and_pans_and_zooms(db: Db) {
    let store = store_name(&db);
    let (_server, base) = listening(&db, &plugin_dir(), "serve", &["--no-auth"]);
    let api = Api::new(&base, None);
    api.register(&layered_template("large", STEPS, WIDTH, "noop@0.1.0"))
        .await;
    let id = api.submit("ui/large@1.0.0", json!({})).await;

    let b = Browser::start(&format!("large_dag-{store}")).await;
    b.goto(&format!("{base}/ui/tasks/{id}")).await;
    b.wait_page("task").await;
    b.wait_attr("svg#dag", "data-rendered", "1").await;
    assert_eq!(b.count("svg#dag g.node[data-step]").await, STEPS);
    assert_eq!(
        b.count("svg#dag path.edge[data-from][data-to]").await,
        layered_edges(STEPS, WIDTH)
    );
    b.js("window.__noReload = 1; return true", vec![]).await;

    // A point of the drawing's background (no node under it) to wheel and drag from.
    let at = b
        .js(
            "const svg = document.querySelector('svg#dag');
             const r = svg.getBoundingClientRect();
             const top = Math.max(r.top, 0), bottom = Math.min(r.bottom, window.innerHeight);
             for (let fy = 0.5; fy < 0.95; fy += 0.07)
               for (let fx = 0.5; fx < 0.95; fx += 0.05) {
                 const x = r.left + r.width * fx, y = top + (bottom - top) * fy;
                 const e = document.elementFromPoint(x, y);
                 if (e && svg.contains(e) && !e.closest('g.node')) return [x, y];
               }
             return null",
            vec![],
        )
        .await;
    let (x, y) = match &at {
        Value::Array(p) => (p[0].as_f64().unwrap(), p[1].as_f64().unwrap()),
        _ => b.fail("a background point of svg#dag in view", None).await,
    };
    let scroll = b.js("return window.scrollY", vec![]).await;
    let before = reference_box(&b).await;

    // Zoom in with the wheel.
    b.wheel(x, y, -600).await;
    b.wait_js(
        "the wheel to zoom the DAG (a node's drawn size changes)",
        "const [w] = arguments;
         const r = document.querySelector('svg#dag g.node[data-step=\"s0000\"]')
           .getBoundingClientRect();
         return Math.abs(r.width - w) > w * 0.05",
        vec![json!(before.2)],
    )
    .await;
    let zoomed = reference_box(&b).await;
    assert!(
        zoomed.2 > before.2,
        "zooming in enlarges: {before:?} -> {zoomed:?}"
    );
    assert_eq!(
        b.js("return window.scrollY", vec![]).await,
        scroll,
        "the wheel zooms the DAG, it does not scroll the page"
    );

    // Pan by dragging the background.
    b.drag(x, y, -150.0, -90.0).await;
    b.wait_js(
        "a drag to pan the DAG (a node moves)",
        "const [x0, y0] = arguments;
         const r = document.querySelector('svg#dag g.node[data-step=\"s0000\"]')
           .getBoundingClientRect();
         return Math.abs(r.x - x0) > 50 || Math.abs(r.y - y0) > 30",
        vec![json!(zoomed.0), json!(zoomed.1)],
    )
    .await;
    let panned = reference_box(&b).await;
    assert!(
        (panned.2 - zoomed.2).abs() <= zoomed.2 * 0.02,
        "panning keeps the scale: {zoomed:?} -> {panned:?}"
    );
    assert!(
        panned.0 < zoomed.0,
        "dragging left moves the drawing left: {zoomed:?} -> {panned:?}"
    );
    let still = b
        .js(
            "return window.__noReload === 1 && document.body.dataset.page === 'task'",
            vec![],
        )
        .await;
    assert_eq!(still, json!(true), "still on the same task page");
    b.screenshot(&format!("large-dag-{store}")).await;
    b.assert_no_console_errors(&[]).await;
    b.close().await;
}

tasker_tests::cli_on_both_backends!(a_thousand_step_task_renders_and_pans_and_zooms);
