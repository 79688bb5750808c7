//! `tasker serve`, `tasker tokens` and `tasker tasks list` through the real binary: a server
//! with in-process workers runs a task submitted over HTTP, a revoked token stops working,
//! SIGTERM stops the server cleanly, and no-auth off loopback is refused.

use std::process::Child;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tasker_tests::cli::*;
use tasker_tests::served::{Api, listening};

const TEMPLATE: &str = "namespace: e2e\nname: served\nversion: 1.0.0\nsteps:\n  - { name: a, handler: echo@0.1.0 }\n  - { name: b, handler: echo@0.1.0, depends_on: [a] }\n";

/// Starts `tasker serve` on a free loopback port; returns the child (killed on drop) and
/// its base URL, read from the line the server prints once it listens.
pub(crate) fn serve(db: &Db, args: &[&str]) -> (KillOnDrop, String) {
    listening(db, &plugin_dir(), "serve", args)
}

async fn tasker_serve_runs_tasks_over_http_and_stops_on_sigterm(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "tokens",
        "create",
        "--name",
        "ops",
        "--permissions",
        "*",
        "--expires",
        "1d",
    ]);
    let out = run(c);
    assert!(out.status.success());
    let token = stdout(&out).trim().to_owned();
    assert!(token.starts_with("tkr_"), "{token}");
    assert!(stderr(&out).contains("shown once"), "{}", stderr(&out));

    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "tokens",
        "create",
        "--name",
        "typo",
        "--permissions",
        "tasks:reed",
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("unknown permission 'tasks:reed'"),
        "{}",
        stderr(&out)
    );

    let (mut server, base) = serve(&db, &["--workers", "4"]);
    let http = reqwest::Client::new();
    let call = |method: reqwest::Method, path: &str, body: Option<Value>, yaml: Option<&str>| {
        let mut req = http
            .request(method, format!("{base}{path}"))
            .bearer_auth(&token);
        if let Some(b) = body {
            req = req.json(&b);
        }
        if let Some(y) = yaml {
            req = req
                .header("content-type", "application/yaml")
                .body(y.to_owned());
        }
        async move {
            let res = req.send().await.expect("the server answers");
            let status = res.status();
            (status, res.json::<Value>().await.unwrap_or(Value::Null))
        }
    };
    let (s, _) = call(reqwest::Method::POST, "/v1/templates", None, Some(TEMPLATE)).await;
    assert_eq!(s, StatusCode::CREATED);
    let (s, task) = call(
        reqwest::Method::POST,
        "/v1/tasks",
        Some(json!({"template": "e2e/served@1.0.0", "tags": ["e2e"]})),
        None,
    )
    .await;
    assert_eq!(s, StatusCode::CREATED, "{task}");
    let id = task["id"].as_i64().unwrap();
    Api::new(&base, Some(&token))
        .wait_task(id, "complete")
        .await;

    // The CLI lists it from the store.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["tasks", "list", "--state", "complete", "--tag", "e2e"]);
    let out = run(c);
    assert!(out.status.success());
    assert!(
        stdout(&out).contains("e2e/served@1.0.0"),
        "{}",
        stdout(&out)
    );
    assert!(
        stdout(&out).contains(&format!(" {id} ")),
        "{}",
        stdout(&out)
    );

    // The CLI through the server: --server and --token instead of the database.
    let remote = |args: &[&str]| {
        let mut c = tasker(&db, &plugin_dir());
        c.env_remove("DATABASE_URL")
            .args(["--server", &base, "--token", &token])
            .args(args);
        run(c)
    };
    let dir = scratch("serve-remote");
    std::fs::write(dir.join("t.yaml"), TEMPLATE.replace("1.0.0", "1.1.0")).unwrap();
    let file = dir.join("t.yaml").display().to_string();
    let out = remote(&["submit", &file, "--wait"]);
    assert!(out.status.success());
    // Live progress from the task's event stream, as `run` shows it.
    let progress = stderr(&out);
    for line in [
        "a: running (attempt 1)",
        "b: complete (attempt 1)",
        "] task complete",
    ] {
        assert!(progress.contains(line), "{line:?} in {progress}");
    }
    let remote_id: i64 = stdout(&out).lines().next().unwrap().trim().parse().unwrap();
    assert!(stdout(&out).contains("complete"), "{}", stdout(&out));
    let out = remote(&["status", &remote_id.to_string()]);
    assert!(stdout(&out).contains("e2e/served@1.1.0") && stdout(&out).contains("complete"));
    let out = remote(&["tasks", "list", "--template", "e2e/served"]);
    assert!(
        stdout(&out).contains(&format!(" {remote_id} "))
            && stdout(&out).contains(&format!(" {id} "))
    );
    let out = remote(&["templates", "list"]);
    assert!(stdout(&out).contains("e2e/served@1.1.0"));
    let out = remote(&["templates", "show", "e2e/served@1.1.0"]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).contains("name: served") && stdout(&out).contains("version: 1.1.0"),
        "{}",
        stdout(&out)
    );
    let out = remote(&[
        "templates",
        "show",
        "e2e/served@1.1.0",
        "--graph",
        "mermaid",
    ]);
    assert!(stdout(&out).contains("s0 --> s1"), "{}", stdout(&out));
    let out = remote(&["templates", "show", "e2e/served@9.9.9"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    // Plugins: echo's bytes under another name change nothing; inspect names its hash.
    let echo = plugin_dir().join("echo@0.1.0.wasm");
    let hash = format!(
        "blake3:{}",
        blake3::hash(&std::fs::read(&echo).unwrap()).to_hex()
    );
    let out = remote(&[
        "plugins",
        "upload",
        &echo.display().to_string(),
        "--name",
        "copy",
    ]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).trim(),
        format!("already installed as echo@0.1.0 ({hash})")
    );
    let out = remote(&["plugins", "inspect", "echo@0.1.0"]);
    assert!(stdout(&out).contains(&hash), "{}", stdout(&out));
    assert!(stdout(&out).contains("step-handler"), "{}", stdout(&out));
    let out = remote(&["plugins", "inspect", "nothing@1.0.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("404"), "{}", stderr(&out));
    // Locally, into a directory of its own: installed, then found by inspect.
    let own = scratch("serve-upload");
    let fail = plugin_dir().join("fail@0.1.0.wasm");
    let mut c = tasker(&db, &own);
    c.args(["plugins", "upload", &fail.display().to_string()]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("installed fail@0.1.0 (blake3:"),
        "{}",
        stdout(&out)
    );
    assert_eq!(
        std::fs::read(own.join("fail@0.1.0.wasm")).unwrap(),
        std::fs::read(&fail).unwrap()
    );
    let mut c = tasker(&db, &own);
    c.args([
        "plugins",
        "upload",
        &dir.join("t.yaml").display().to_string(),
    ]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("t.yaml"), "{}", stderr(&out));
    let out = remote(&["submit", "e2e/nope@1.0.0"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("422") && stderr(&out).contains("/template"),
        "{}",
        stderr(&out)
    );
    // A complete task cannot be cancelled: the server's 409 reaches the operator.
    let out = remote(&["cancel", &remote_id.to_string()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("409"), "{}", stderr(&out));
    // A server that does not exist is named.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["--server", "http://127.0.0.1:9", "status", "1"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("cannot reach the server at http://127.0.0.1:9"));

    let mut c = tasker(&db, &plugin_dir());
    c.args(["tokens", "revoke", "ops"]);
    assert!(run(c).status.success());
    let (s, _) = call(reqwest::Method::GET, "/v1/tasks", None, None).await;
    assert_eq!(s, StatusCode::UNAUTHORIZED);
    let mut c = tasker(&db, &plugin_dir());
    c.args(["tokens", "list"]);
    let out = run(c);
    assert!(stdout(&out).contains("revoked"), "{}", stdout(&out));
    assert!(!stdout(&out).contains(&token));

    stop_gracefully(&mut server.0);
    assert_not_running(&mut server.0);

    // Without auth, only loopback.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["serve", "--listen", "0.0.0.0:0", "--no-auth"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("refusing to listen on 0.0.0.0:0"),
        "{}",
        stderr(&out)
    );
}

fn assert_not_running(child: &mut Child) {
    assert!(child.try_wait().unwrap().is_some());
}

/// `tasker dev --examples`: the examples are registered, the API answers without a token
/// on loopback, and its in-process worker runs a task to its end.
async fn tasker_dev_registers_the_examples_and_runs_a_task(db: Db) {
    let (mut dev, base) = listening(&db, &plugin_dir(), "dev", &["--examples", "--workers", "4"]);
    let http = reqwest::Client::new();
    let api = Api::new(&base, None);
    let templates = api.get("/v1/templates").await;
    let keys: Vec<&str> = templates["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|t| t["key"].as_str())
        .collect();
    for key in [
        "shop/order_fulfilment@1.0.0",
        "analytics/sales_report@1.0.0",
    ] {
        assert!(keys.contains(&key), "{key} in {keys:?}");
    }
    let context: Value = serde_json::from_str(
        &std::fs::read_to_string(root().join("examples/order/context.json")).unwrap(),
    )
    .unwrap();
    let id = api.submit("shop/order_fulfilment@1.0.0", context).await;
    api.wait_task(id, "complete").await;
    // Open metrics, as a developer's Prometheus would scrape them.
    let m = http.get(format!("{base}/metrics")).send().await.unwrap();
    assert_eq!(m.status(), StatusCode::OK);
    stop_gracefully(&mut dev.0);

    // Off loopback it refuses, naming why.
    let mut c = tasker(&db, &plugin_dir());
    c.args(["dev", "--listen", "0.0.0.0:0"]);
    let out = run(c);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("loopback only"), "{}", stderr(&out));
}

tasker_tests::cli_on_both_backends!(
    tasker_serve_runs_tasks_over_http_and_stops_on_sigterm,
    tasker_dev_registers_the_examples_and_runs_a_task,
);
