//! Tasks run by in-process workers behind the server: attempts with their sandbox costs,
//! retry of a failed task, and resolving a step by hand.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(a_run_shows_each_attempt_and_a_failed_task_is_retried_or_resolved);

const BOUND: Duration = Duration::from_secs(120);

fn state_is(s: &'static str) -> impl Fn(&Value) -> bool {
    move |t| t["state"] == s
}

async fn a_run_shows_each_attempt_and_a_failed_task_is_retried_or_resolved<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::Workers).await;
    srv.register(crate::CHAIN).await;
    srv.register(crate::FAILING).await;
    let a = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": {"customer_id": 9}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let id = a.body["id"].as_i64().unwrap();
    let done = srv
        .wait_for(&format!("/v1/tasks/{id}"), BOUND, state_is("complete"))
        .await;
    assert!(done["finished_at"].is_string(), "{done}");
    let step = done["steps"][2]["id"].as_i64().unwrap();
    let s = srv.get(&format!("/v1/steps/{step}")).await;
    assert_eq!(s.status, StatusCode::OK, "{s:?}");
    assert_eq!(s.body["state"], "complete");
    assert_eq!(s.body["task_id"], id);
    let attempt = &s.body["attempt_history"][0];
    assert_eq!(attempt["outcome"], "completed", "{s:?}");
    assert!(attempt["fuel"].as_i64().unwrap() > 0, "{s:?}");
    assert!(attempt["peak_memory_bytes"].as_i64().unwrap() > 0, "{s:?}");
    assert!(attempt["wall_us"].as_i64().unwrap() > 0, "{s:?}");
    assert!(
        attempt["plugin_hash"].as_str().unwrap().len() >= 64,
        "{s:?}"
    );
    assert_eq!(attempt["worker"], "server-test");
    let states: Vec<&str> = s.body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["to_state"].as_str().unwrap())
        .collect();
    assert_eq!(states, ["in_progress", "complete"], "{s:?}");

    // What the attempt said: echo logs one line.
    let l = srv.get(&format!("/v1/steps/{step}/logs")).await;
    assert_eq!(l.status, StatusCode::OK, "{l:?}");
    assert_eq!(l.body["step_id"], step);
    assert_eq!(l.body["state"], "complete");
    let logged = &l.body["attempts"][0];
    assert_eq!(logged["attempt"], attempt["attempt"], "{l:?}");
    assert_eq!(logged["outcome"], "completed");
    assert_eq!(logged["lines"][0]["level"], "info", "{l:?}");
    assert_eq!(logged["lines"][0]["message"], "echo c attempt 1", "{l:?}");
    assert!(logged["lines"][0]["at_us"].as_u64().is_some(), "{l:?}");
    assert_eq!(logged["stderr"], "");
    assert_eq!(
        logged["dropped"],
        json!({"lines": 0, "stdout_bytes": 0, "stderr_bytes": 0})
    );
    let one = srv
        .get(&format!(
            "/v1/steps/{step}/logs?attempt={}",
            attempt["attempt"]
        ))
        .await;
    assert_eq!(one.body["attempts"].as_array().unwrap().len(), 1, "{one:?}");
    // Bad references are named.
    let none = srv.get(&format!("/v1/steps/{step}/logs?attempt=99")).await;
    assert_eq!(none.status, StatusCode::NOT_FOUND, "{none:?}");
    assert!(
        none.body["detail"]
            .as_str()
            .unwrap()
            .contains("no attempt 99"),
        "{none:?}"
    );
    let bad = srv
        .get(&format!("/v1/steps/{step}/logs?attempt=last"))
        .await;
    assert_eq!(bad.status, StatusCode::BAD_REQUEST, "{bad:?}");
    assert_eq!(bad.pointers(), ["?attempt"], "{bad:?}");
    let unknown = srv.get(&format!("/v1/steps/{step}/logs?tail=5")).await;
    assert_eq!(unknown.status, StatusCode::BAD_REQUEST, "{unknown:?}");
    assert_eq!(unknown.pointers(), ["?tail"], "{unknown:?}");
    let missing = srv.get("/v1/steps/987654/logs").await;
    assert_eq!(missing.status, StatusCode::NOT_FOUND, "{missing:?}");

    // A permanent failure: the task ends in error, its attempt says why and who decided.
    let a = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await;
    let failing = a.body["id"].as_i64().unwrap();
    let t = srv
        .wait_for(&format!("/v1/tasks/{failing}"), BOUND, state_is("error"))
        .await;
    let only = t["steps"][0]["id"].as_i64().unwrap();
    assert_eq!(t["steps"][0]["last_error_kind"], "handler_error", "{t}");
    assert!(
        t["steps"][0]["readiness"]["reason"]
            .as_str()
            .unwrap()
            .starts_with("failed (1 of 1 attempts used)"),
        "{t}"
    );
    let s = srv.get(&format!("/v1/steps/{only}")).await;
    let attempt = &s.body["attempt_history"][0];
    assert_eq!(attempt["outcome"], "failed", "{s:?}");
    assert_eq!(attempt["error_kind"], "handler_error", "{s:?}");
    assert_eq!(attempt["decision"], "permanent", "{s:?}");
    assert_eq!(attempt["decided_by"], "builtin", "{s:?}");
    assert!(
        attempt["message"]
            .as_str()
            .unwrap()
            .contains("input rejected"),
        "{s:?}"
    );

    // Retry: a fresh budget, and it fails again the same way.
    let a = srv
        .post(&format!("/v1/tasks/{failing}/retry"), &json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["steps_reset"], 1);
    srv.wait_for(&format!("/v1/steps/{only}"), BOUND, |s| {
        s["attempt_history"]
            .as_array()
            .is_some_and(|a| a.len() == 2)
            && s["state"] == "error"
    })
    .await;
    srv.wait_for(&format!("/v1/tasks/{failing}"), BOUND, state_is("error"))
        .await;

    // Resolved by hand with a result: the task completes.
    let a = srv
        .post(
            &format!("/v1/steps/{only}/resolve"),
            &json!({"result": {"by": "operator"}}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["task_state"], "complete", "{a:?}");
    let s = srv.get(&format!("/v1/steps/{only}")).await;
    assert_eq!(s.body["state"], "resolved_manually");
    assert_eq!(s.body["result"], json!({"by": "operator"}));
    // A step that is done cannot be resolved again.
    let a = srv
        .post(&format!("/v1/steps/{step}/resolve"), &json!({}))
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");
    let a = srv.get("/v1/steps/999999").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    srv.stop().await;
}

on_both_backends!(a_steps_http_requests_are_in_its_logs);

/// The outbound requests an attempt made, granted and refused, are in
/// `GET /v1/steps/{id}/logs` with the attempt (the URL without its query).
async fn a_steps_http_requests_are_in_its_logs<S: Backend>(store: S) {
    let api = tasker_tests::http_server::TestHttp::start().await;
    let srv = TestServer::start(store.any(), With::Workers).await;
    let base = api.http_url("");
    let base = base.trim_end_matches('/');
    srv.register(&format!(
        "namespace: api\nname: calls\nversion: 1.0.0\nsteps:\n  - name: call\n    handler: http_probe@0.1.0\n    retry: {{max_attempts: 1}}\n    config: {{url: '{base}/echo?token=q', keep_going: true}}\n    grants:\n      http: [{{url: '{base}', paths: ['/echo']}}]\n  - name: refused\n    handler: http_probe@0.1.0\n    retry: {{max_attempts: 1}}\n    config: {{url: '{base}/admin'}}\n    grants:\n      http: [{{url: '{base}', paths: ['/echo']}}]\n"
    ))
    .await;
    let t = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/calls@1.0.0", "context": {}}),
        )
        .await;
    assert_eq!(t.status, StatusCode::CREATED, "{t:?}");
    let id = t.body["id"].as_i64().unwrap();
    let done = srv
        .wait_for(&format!("/v1/tasks/{id}"), BOUND, |t| {
            t["steps"].as_array().is_some_and(|s| {
                s.iter()
                    .all(|s| s["state"] == "complete" || s["state"] == "error")
            })
        })
        .await;
    let step = |name: &str| {
        done["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["name"] == name)
            .unwrap_or_else(|| panic!("no step {name}: {done}"))["id"]
            .as_i64()
            .unwrap()
    };
    let l = srv.get(&format!("/v1/steps/{}/logs", step("call"))).await;
    let call = &l.body["attempts"][0]["http"][0];
    assert_eq!(call["method"], "GET", "{l:?}");
    assert_eq!(call["url"], format!("{base}/echo"), "{l:?}");
    assert_eq!(call["status"], 200, "{l:?}");
    assert_eq!(call["refused"], false, "{l:?}");
    assert!(call["response_bytes"].as_u64().unwrap() > 0, "{l:?}");
    let l = srv
        .get(&format!("/v1/steps/{}/logs", step("refused")))
        .await;
    let call = &l.body["attempts"][0]["http"][0];
    assert_eq!(call["url"], format!("{base}/admin"), "{l:?}");
    assert_eq!(call["refused"], true, "{l:?}");
    assert!(call["error"].as_str().unwrap().contains("/admin"), "{l:?}");
    assert_eq!(api.count_path("/admin"), 0);
}
