//! `/v1/tasks`: create (identity keys), list with filters and cursors, show, transitions,
//! cancel.

use std::collections::BTreeSet;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(
    tasks_are_created_once_per_identity_key,
    tasks_are_listed_by_filter_and_page,
    a_task_shows_its_steps_readiness_and_history,
    a_traceparent_header_is_kept_with_the_task_or_refused_by_name,
    a_task_starts_later_with_its_priority_or_is_refused_by_field,
    a_keyed_task_waits_for_its_slot_or_is_refused,
);

fn task(customer: i64) -> Value {
    json!({"template": "api/chain@1.0.0", "context": {"customer_id": customer}})
}

async fn tasks_are_created_once_per_identity_key<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    let mut body = task(1);
    body["identity_key"] = json!("order-1");
    body["tags"] = json!(["vip", "eu"]);
    body["initiator"] = json!("shop");
    body["source_system"] = json!("web");
    body["reason"] = json!("checkout");
    let a = srv.post("/v1/tasks", &body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let id = a.body["id"].as_i64().unwrap();
    assert_eq!(
        a.header("location"),
        Some(format!("/v1/tasks/{id}").as_str())
    );
    assert_eq!(a.header("tasker-existing-task"), None);
    assert_eq!(a.body["state"], "pending");
    assert_eq!(a.body["tags"], json!(["vip", "eu"]));
    assert_eq!(a.body["initiator"], "shop");
    assert_eq!(a.body["source_system"], "web");
    assert_eq!(a.body["reason"], "checkout");
    assert_eq!(a.body["context"], json!({"customer_id": 1}));

    // The same key again: the first task, 200, and a header saying so.
    let a = srv.post("/v1/tasks", &body).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["id"], id);
    assert_eq!(a.header("tasker-existing-task"), Some("true"));
    // Or 409 when the caller asks for it.
    let a = srv.post("/v1/tasks?on_duplicate=conflict", &body).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");
    assert_eq!(a.body["existing_task"], id);
    let a = srv.get("/v1/tasks").await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1, "{a:?}");
    srv.stop().await;
}

async fn tasks_are_listed_by_filter_and_page<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    srv.register(&crate::CHAIN.replace("version: 1.0.0", "version: 2.0.0"))
        .await;
    srv.register(crate::FAILING).await;
    let mut ids = Vec::new();
    for n in 0..7 {
        let mut body = task(n);
        if n >= 5 {
            body["template"] = json!("api/chain@2.0.0");
        }
        if n % 2 == 0 {
            body["tags"] = json!(["even"]);
        }
        body["identity_key"] = json!(format!("k{n}"));
        let a = srv.post("/v1/tasks", &body).await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
        ids.push(a.body["id"].as_i64().unwrap());
    }
    let after_creates = chrono::Utc::now();
    let cancelled = ids[1];
    let a = srv
        .post(&format!("/v1/tasks/{cancelled}/cancel"), &json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["cancelled"], true);
    assert_eq!(a.body["steps_cancelled"], 3);

    let list = |query: &str| {
        let srv = &srv;
        let query = query.to_owned();
        async move {
            let a = srv.get(&format!("/v1/tasks?{query}")).await;
            assert_eq!(a.status, StatusCode::OK, "{query}: {a:?}");
            assert!(a.body["next_cursor"].is_null(), "{query}: {a:?}");
            a.body["items"]
                .as_array()
                .unwrap()
                .iter()
                .map(|t| t["id"].as_i64().unwrap())
                .collect::<Vec<_>>()
        }
    };
    let newest_first: Vec<i64> = ids.iter().rev().copied().collect();
    assert_eq!(list("").await, newest_first);
    assert_eq!(list("state=cancelled").await, [cancelled]);
    let pending: Vec<i64> = newest_first
        .iter()
        .copied()
        .filter(|i| *i != cancelled)
        .collect();
    assert_eq!(list("state=pending").await, pending);
    assert_eq!(list("state=pending,cancelled").await, newest_first);
    assert_eq!(list("template=api/chain@2.0.0").await, [ids[6], ids[5]]);
    assert_eq!(list("template=api/chain").await, newest_first);
    assert_eq!(list("tag=even").await, [ids[6], ids[4], ids[2], ids[0]]);
    assert_eq!(list("identity_key=k3").await, [ids[3]]);
    assert_eq!(
        list("tag=even&template=api/chain@1.0.0").await,
        [ids[4], ids[2], ids[0]]
    );
    let t = urlencode(&after_creates.to_rfc3339());
    assert_eq!(list(&format!("created_after={t}")).await, Vec::<i64>::new());
    assert_eq!(list(&format!("created_before={t}")).await, newest_first);
    assert_eq!(
        list(&format!("finished_before={t}")).await,
        Vec::<i64>::new()
    );
    let later = urlencode(&(chrono::Utc::now() + chrono::Duration::hours(1)).to_rfc3339());
    assert_eq!(list(&format!("finished_before={later}")).await, [cancelled]);
    assert_eq!(list("state=error").await, Vec::<i64>::new());

    // Pages of three: 3, 3, 1, each task once, in order.
    let mut seen = Vec::new();
    let mut path = "/v1/tasks?limit=3".to_owned();
    let mut pages = 0;
    loop {
        let a = srv.get(&path).await;
        pages += 1;
        let items = a.body["items"].as_array().unwrap();
        seen.extend(items.iter().map(|t| t["id"].as_i64().unwrap()));
        match a.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/tasks?limit=3&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(seen, newest_first);
    assert_eq!(pages, 3);
    assert_eq!(seen.iter().collect::<BTreeSet<_>>().len(), 7);
    srv.stop().await;
}

fn urlencode(s: &str) -> String {
    s.replace('+', "%2B").replace(':', "%3A")
}

async fn a_task_shows_its_steps_readiness_and_history<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    let a = srv.post("/v1/tasks", &task(5)).await;
    let id = a.body["id"].as_i64().unwrap();
    let a = srv.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let steps = a.body["steps"].as_array().unwrap();
    let names: Vec<&str> = steps.iter().map(|s| s["name"].as_str().unwrap()).collect();
    assert_eq!(names, ["a", "b", "c"]);
    assert_eq!(steps[0]["readiness"]["ready"], true, "{a:?}");
    assert_eq!(steps[0]["readiness"]["reason"], "ready");
    assert_eq!(steps[1]["readiness"]["ready"], false);
    assert_eq!(
        steps[1]["readiness"]["reason"],
        "waiting for parents (0 of 1 done)"
    );
    assert_eq!(steps[2]["level"], 2);
    assert_eq!(a.body["execution"]["total_steps"], 3);
    assert_eq!(a.body["execution"]["ready_steps"], 1);
    assert_eq!(a.body["execution"]["execution_status"], "has_ready_steps");

    let a = srv
        .post(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    // Cancelling twice is no error, and says nothing changed.
    let a = srv
        .post(&format!("/v1/tasks/{id}/cancel"), &json!({}))
        .await;
    assert_eq!(a.body["cancelled"], false, "{a:?}");
    let a = srv.get(&format!("/v1/tasks/{id}/transitions")).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let last = a.body.as_array().unwrap().last().unwrap().clone();
    assert_eq!(last["to_state"], "cancelled", "{a:?}");
    // Retrying a task that is not in error is a conflict.
    let a = srv.post(&format!("/v1/tasks/{id}/retry"), &json!({})).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");

    for path in ["/v1/tasks/999999", "/v1/tasks/999999/transitions"] {
        let a = srv.get(path).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{path}: {a:?}");
    }
    let a = srv.post("/v1/tasks/999999/cancel", &json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    let a = srv.get("/v1/tasks/abc").await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    srv.stop().await;
}

async fn a_traceparent_header_is_kept_with_the_task_or_refused_by_name<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    let post = |tp: &'static str| {
        srv.client
            .post(format!("{}/v1/tasks", srv.base))
            .bearer_auth(&srv.admin)
            .header("traceparent", tp)
            .json(&task(1))
            .send()
    };
    let good = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
    let res = post(good).await.unwrap();
    assert_eq!(res.status(), StatusCode::CREATED);
    let body: Value = res.json().await.unwrap();
    // This server exports no traces: the caller's context is stored as it came.
    assert_eq!(body["traceparent"], good, "{body}");
    let id = body["id"].as_i64().unwrap();
    let read = srv.get(&format!("/v1/tasks/{id}")).await;
    assert_eq!(read.body["traceparent"], good, "{read:?}");

    let res = post("00-4bf92f3577b34da6a3ce929d0e0e4736-zz-01")
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::BAD_REQUEST);
    let body: Value = res.json().await.unwrap();
    assert_eq!(body["errors"][0]["pointer"], "traceparent", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("the parent id is not 16 lower-case hex digits"),
        "{body}"
    );
    // Nothing was written for the refused one.
    let list = srv.get("/v1/tasks").await;
    assert_eq!(list.body["items"].as_array().unwrap().len(), 1, "{list:?}");
}

async fn a_task_starts_later_with_its_priority_or_is_refused_by_field<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    let mut body = task(7);
    body["priority"] = json!(5);
    body["run_at"] = json!("2999-01-01T00:00:00Z");
    let a = srv.post("/v1/tasks", &body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let id = a.body["id"].as_i64().unwrap();
    let a = srv.get(&format!("/v1/tasks/{id}")).await;
    let root = &a.body["steps"][0]["readiness"];
    assert_eq!(root["ready"], false, "{a:?}");
    assert_eq!(root["priority"], 5);
    assert_eq!(root["not_before"], "2999-01-01T00:00:00Z");
    assert_eq!(root["reason"], "scheduled for 2999-01-01 00:00:00.000 UTC");

    // Out of range, or not an instant: refused by field, and nothing is written.
    for (field, value, pointer) in [
        ("priority", json!(9), "/priority"),
        ("priority", json!(0), "/priority"),
        ("run_at", json!("tomorrow"), "/run_at"),
    ] {
        let mut bad = task(8);
        bad[field] = value.clone();
        let a = srv.post("/v1/tasks", &bad).await;
        assert!(a.status.is_client_error(), "{field}={value}: {a:?}");
        assert_eq!(a.pointers(), [pointer], "{field}={value}: {a:?}");
    }
    let a = srv.get("/v1/tasks").await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 1, "{a:?}");
    srv.stop().await;
}

const KEYED: &str = "namespace: api\nname: keyed\nversion: 1.0.0\n\
    concurrency: { key: /customer_id, limit: 1, strategy: queue }\n\
    steps:\n  - name: only\n    handler: echo@0.1.0\n";

const ONCE: &str = "namespace: api\nname: once\nversion: 1.0.0\n\
    concurrency: { key: /customer_id, limit: 1, strategy: cancel_newest }\n\
    steps:\n  - name: only\n    handler: echo@0.1.0\n";

async fn a_keyed_task_waits_for_its_slot_or_is_refused<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(KEYED).await;
    srv.register(ONCE).await;
    let keyed = |customer: Value| json!({"template": "api/keyed@1.0.0", "context": {"customer_id": customer}});
    let first = srv.post("/v1/tasks", &keyed(json!(42))).await;
    assert_eq!(first.status, StatusCode::CREATED, "{first:?}");
    let second = srv.post("/v1/tasks", &keyed(json!(42))).await;
    let id = second.body["id"].as_i64().unwrap();
    let a = srv.get(&format!("/v1/tasks/{id}")).await;
    let r = &a.body["steps"][0]["readiness"];
    assert_eq!(r["ready"], false, "{a:?}");
    assert_eq!(
        r["reason"],
        "concurrency key /customer_id=42 at limit (1/1)"
    );
    assert_eq!(
        r["concurrency"],
        json!({"key": "/customer_id=42", "holding": 1, "limit": 1})
    );

    // A context without a usable key: 422 naming the pointer; the key at its limit under
    // cancel_newest: 409. Neither writes anything.
    let bad = srv.post("/v1/tasks", &keyed(json!({"id": 1}))).await;
    assert_eq!(bad.status, StatusCode::UNPROCESSABLE_ENTITY, "{bad:?}");
    assert!(
        bad.body["detail"].as_str().unwrap().contains(
            "concurrency key /customer_id: the context's value there is an object, expected a \
             string, an integer or a boolean"
        ),
        "{bad:?}"
    );
    let once = json!({"template": "api/once@1.0.0", "context": {"customer_id": 1}});
    assert_eq!(
        srv.post("/v1/tasks", &once).await.status,
        StatusCode::CREATED
    );
    let refused = srv.post("/v1/tasks", &once).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{refused:?}");
    assert!(
        refused.body["detail"]
            .as_str()
            .unwrap()
            .contains("concurrency key /customer_id=1 is at its limit (1/1): template api/once@1.0.0 refuses new tasks (strategy cancel_newest)"),
        "{refused:?}"
    );
    let a = srv.get("/v1/tasks").await;
    assert_eq!(a.body["items"].as_array().unwrap().len(), 3, "{a:?}");
    srv.stop().await;
}
