//! The permission matrix: every route of the route table without a token (401), with a
//! token holding every permission but its own (403 naming it), and with a token holding
//! only its own (2xx).

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::{Value, json};
use tasker_server::Permission;
use tasker_server::routes::{Access, ROUTES};
use tasker_tests::Backend;
use tasker_tests::cli::plugin_dir;
use tasker_tests::on_both_backends;
use tasker_tests::server::{Body, TestServer, With};
use tasker_tests::store::{LEASE, failure};

on_both_backends!(every_route_checks_its_permission);

async fn every_route_checks_its_permission<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    srv.register(crate::CHAIN).await;
    srv.register(crate::FAILING).await;
    // A task in error (its only step failed permanently), for retry.
    let failed = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await
        .body["id"]
        .as_i64()
        .unwrap();
    let claimed = store.claim("w", 10, LEASE, Utc::now()).await.unwrap();
    assert_eq!(claimed.len(), 1);
    store
        .fail(&[failure(&claimed[0], false, None)], Utc::now())
        .await
        .unwrap();
    // A hook (id 1) with a delivery, for the hook routes.
    srv.register(
        "namespace: api\nname: hooked\nversion: 1.0.0\nhooks:\n  - { component: hook_noop@0.1.0, events: ['task.*'] }\nsteps:\n  - { name: only, handler: echo@0.1.0 }\n",
    )
    .await;
    let hooked = srv
        .post("/v1/tasks", &json!({"template": "api/hooked@1.0.0"}))
        .await;
    assert_eq!(hooked.status, StatusCode::CREATED, "{hooked:?}");
    let chain = json!({"template": "api/chain@1.0.0", "context": {"customer_id": 1}});
    let shown = srv.post("/v1/tasks", &chain).await.body["id"]
        .as_i64()
        .unwrap();
    let other = srv.post("/v1/tasks", &chain).await;
    let step = srv
        .get(&format!("/v1/tasks/{}", other.body["id"]))
        .await
        .body["steps"][0]["id"]
        .as_i64()
        .unwrap();

    tasker_server::issue_token(&srv.store, "victim", vec!["*".into()], None, Utc::now())
        .await
        .unwrap();
    let (_, page) = tasker_server::issue_token(
        &srv.store,
        "page",
        vec!["tasks:read".into()],
        None,
        Utc::now(),
    )
    .await
    .unwrap();

    for route in ROUTES {
        let method: Method = route.method.to_ascii_uppercase().parse().unwrap();
        let (path, body) = request_for(route.path, route.method, shown, failed, step, &page);
        let send = |token: Option<String>| {
            let (srv, method, path, body) = (&srv, method.clone(), path.clone(), body.clone());
            async move {
                let body = match &body {
                    Req::Json(v) => Some(Body::Json(v)),
                    Req::Yaml(y) => Some(Body::Raw("application/yaml", y.as_bytes())),
                    Req::Wasm(b) => Some(Body::Raw("application/wasm", b)),
                    Req::None => None,
                };
                srv.call(method, &path, token.as_deref(), body).await
            }
        };
        let what = format!("{} {}", route.method, route.path);
        match route.access {
            Access::Public => {
                let a = send(None).await;
                assert!(a.status.is_success(), "{what} without a token: {a:?}");
            }
            Access::Authenticated => {
                let a = send(None).await;
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {a:?}");
                let any = srv.token(&["plugins:read"]).await;
                let a = send(Some(any)).await;
                assert!(a.status.is_success(), "{what} with a token: {a:?}");
            }
            Access::Need(p) => {
                let a = send(None).await;
                assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{what}: {a:?}");
                let others: Vec<&str> = Permission::ALL
                    .iter()
                    .filter(|o| **o != p)
                    .map(|o| o.as_str())
                    .collect();
                let lacking = srv.token(&others).await;
                let a = send(Some(lacking)).await;
                assert_eq!(a.status, StatusCode::FORBIDDEN, "{what}: {a:?}");
                assert_eq!(a.body["missing_permission"], p.as_str(), "{what}: {a:?}");
                assert!(
                    a.body["detail"].as_str().unwrap().contains(p.as_str()),
                    "{a:?}"
                );
                let only = srv.token(&[p.as_str()]).await;
                let a = send(Some(only)).await;
                assert!(a.status.is_success(), "{what} with {p}: {a:?}");
            }
        }
    }
    srv.stop().await;
}

#[derive(Clone)]
enum Req {
    /// An installed component's bytes (an upload that changes nothing).
    Wasm(Vec<u8>),
    Json(Value),
    Yaml(&'static str),
    None,
}

/// A request each route answers with 2xx, given the objects made above. A route added to
/// the table without a case here fails the test: add one.
fn request_for(
    path: &str,
    method: &str,
    task: i64,
    failed: i64,
    step: i64,
    sign_in: &str,
) -> (String, Req) {
    let t = |p: &str| p.replace("{id}", &task.to_string());
    match (method, path) {
        (
            "get",
            "/health/live" | "/health/ready" | "/health/status" | "/openapi.json" | "/metrics",
        ) => (path.into(), Req::None),
        ("post", "/v1/templates") => (path.into(), Req::Yaml(crate::CHAIN)),
        ("get", "/v1/templates") => (path.into(), Req::None),
        ("get", "/v1/templates/{namespace}/{name}/{version}") => {
            ("/v1/templates/api/chain/1.0.0".into(), Req::None)
        }
        ("post", "/v1/tasks") => (
            path.into(),
            Req::Json(json!({"template": "api/chain@1.0.0", "context": {"customer_id": 2}})),
        ),
        (
            "get",
            "/v1/tasks"
            | "/v1/tasks/counts"
            | "/v1/tasks/{id}"
            | "/v1/tasks/{id}/attempts"
            | "/v1/tasks/{id}/transitions",
        ) => (t(path), Req::None),
        ("post", "/v1/tasks/{id}/cancel") => (t(path), Req::None),
        // Streams: the harness reads only their status and headers.
        ("get", "/v1/tasks/{id}/events") => (t(path), Req::None),
        ("get", "/v1/events") => (path.into(), Req::None),
        ("post", "/v1/tasks/{id}/retry") => (path.replace("{id}", &failed.to_string()), Req::None),
        ("get", "/v1/steps/{id}" | "/v1/steps/{id}/logs") => {
            (path.replace("{id}", &step.to_string()), Req::None)
        }
        ("post", "/v1/steps/{id}/resolve") => (
            path.replace("{id}", &step.to_string()),
            Req::Json(json!({"result": {"ok": true}})),
        ),
        ("get", "/v1/plugins") => (path.into(), Req::None),
        ("post", "/v1/plugins") => (
            "/v1/plugins?name=echo&version=0.1.0".into(),
            Req::Wasm(std::fs::read(plugin_dir().join("echo@0.1.0.wasm")).unwrap()),
        ),
        ("get", "/v1/plugins/{plugin}") => ("/v1/plugins/echo@0.1.0".into(), Req::None),
        ("get", "/v1/hooks") => (path.into(), Req::None),
        ("get", "/v1/hooks/{id}/deliveries") => ("/v1/hooks/1/deliveries".into(), Req::None),
        ("post", "/v1/hooks/{id}/redeliver") => {
            ("/v1/hooks/1/redeliver".into(), Req::Json(json!({})))
        }
        ("get" | "delete", "/ui/session") => (path.into(), Req::None),
        ("post", "/ui/session") => (path.into(), Req::Json(json!({ "token": sign_in }))),
        ("post", "/v1/schedules") => (
            path.into(),
            Req::Json(json!({"name": "made", "template": "api/chain@1.0.0",
                             "cron": "0 * * * *", "context": {"customer_id": 1}})),
        ),
        ("get", "/v1/schedules") => (path.into(), Req::None),
        // Made by the route above (the table lists create first, delete last).
        ("get" | "delete", "/v1/schedules/{name}") => ("/v1/schedules/made".into(), Req::None),
        ("post", "/v1/schedules/{name}/pause" | "/v1/schedules/{name}/resume") => {
            (path.replace("{name}", "made"), Req::None)
        }
        ("get", "/v1/tokens") => (path.into(), Req::None),
        ("post", "/v1/tokens") => (
            path.into(),
            Req::Json(json!({"name": "made", "permissions": ["tasks:read"]})),
        ),
        // A token made for it (revoking the admin token would end the test).
        ("delete", "/v1/tokens/{name}") => ("/v1/tokens/victim".into(), Req::None),
        _ => panic!("no request for {method} {path}: add a case to request_for"),
    }
}
