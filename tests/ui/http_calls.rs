//! The step page lists the outbound HTTP requests of each attempt: a granted call with its
//! method, its URL without the query, its status and its bytes, and a refused call marked
//! as refused with the reason, while the server never saw it.

use serde_json::json;
use tasker_tests::browser::{Api, Browser, listening};
use tasker_tests::cli::{Db, plugin_dir};
use tasker_tests::http_server::TestHttp;

use super::store_name;

/// The cells of the HTTP table's rows in `#logs`, row by row.
const ROWS: &str = "return [...document.querySelectorAll('#logs .http-calls tbody tr')]
  .map(r => ({ refused: r.classList.contains('http-refused'), status: r.dataset.httpStatus,
               cells: [...r.querySelectorAll('td')].map(td => td.textContent) }))";

async fn the_step_page_shows_each_http_request(db: Db) {
    let store = store_name(&db);
    let server = TestHttp::start().await;
    let base = server.http_url("");
    let base = base.trim_end_matches('/');
    let (_dev, url) = listening(&db, &plugin_dir(), "dev", &["--workers", "2"]);
    let api = Api::new(&url, None);
    api.register(&format!(
        "namespace: ui\nname: calls\nversion: 1.0.0\nsteps:\n  - name: call\n    handler: http_probe@0.1.0\n    retry: {{max_attempts: 1}}\n    config: {{url: '{base}/echo?token=q'}}\n    grants:\n      http: [{{url: '{base}', paths: ['/echo']}}]\n  - name: refused\n    handler: http_probe@0.1.0\n    retry: {{max_attempts: 1}}\n    config: {{url: '{base}/admin'}}\n    grants:\n      http: [{{url: '{base}', paths: ['/echo']}}]\n"
    ))
    .await;
    let id = api.submit("ui/calls@1.0.0", json!({})).await;
    api.wait_task(id, "error").await;

    let b = Browser::start(&format!("http_calls-{store}")).await;
    let call = api.step_id(id, "call").await;
    b.goto(&format!("{url}/ui/steps/{call}")).await;
    b.wait_page("step").await;
    let rows = b
        .wait_js(
            "a row in the step's HTTP table",
            &format!("const rows = (() => {{ {ROWS} }})(); return rows.length ? rows : null"),
            vec![],
        )
        .await;
    let rows = rows.as_array().unwrap();
    assert_eq!(rows.len(), 1, "one request: {rows:?}");
    let row = &rows[0];
    assert_eq!(row["refused"], false, "{row}");
    assert_eq!(row["status"], "200", "{row}");
    let cells: Vec<&str> = row["cells"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c.as_str().unwrap())
        .collect();
    assert_eq!(cells[1], "GET", "{cells:?}");
    assert_eq!(
        cells[2],
        format!("{base}/echo"),
        "no query in the URL: {cells:?}"
    );
    assert_eq!(cells[3], "200", "{cells:?}");
    assert_ne!(cells[5], "0 B", "bytes received: {cells:?}");

    let refused = api.step_id(id, "refused").await;
    b.goto(&format!("{url}/ui/steps/{refused}")).await;
    b.wait_page("step").await;
    let rows = b
        .wait_js(
            "a refused row in the step's HTTP table",
            &format!(
                "const rows = (() => {{ {ROWS} }})(); return rows.some(r => r.refused) ? rows : null"
            ),
            vec![],
        )
        .await;
    let row = &rows.as_array().unwrap()[0];
    let note = row["cells"][7].as_str().unwrap();
    assert!(
        note.starts_with("refused") && note.contains("/admin"),
        "the refusal says why: {row}"
    );
    assert_eq!(
        row["cells"][3], "-",
        "no status for a refused request: {row}"
    );
    assert_eq!(
        server.count_path("/admin"),
        0,
        "the refused request never left"
    );
    b.screenshot_page(&format!("step-http-{store}")).await;
    b.assert_no_console_errors(&[]).await;
    b.close().await;
}

tasker_tests::cli_on_both_backends!(the_step_page_shows_each_http_request);
