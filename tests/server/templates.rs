//! `/v1/templates`: register as YAML or JSON, idempotence, conflicts, listing, the graph.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{Body, TestServer, With};

on_both_backends!(templates_register_list_and_show_with_their_graph);

fn version(v: &str) -> String {
    crate::CHAIN.replace("version: 1.0.0", &format!("version: {v}"))
}

async fn templates_register_list_and_show_with_their_graph<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    let a = srv.register(crate::CHAIN).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.body["key"], "api/chain@1.0.0");
    assert_eq!(a.header("location"), Some("/v1/templates/api/chain/1.0.0"));
    // The same definition again: 200, nothing new.
    let a = srv.register(crate::CHAIN).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["created"], false);

    // Another definition under the same key is a conflict, and changes nothing.
    let changed = crate::CHAIN.replace("three steps in a row", "changed");
    let admin = srv.admin.clone();
    let a = srv
        .call(
            Method::POST,
            "/v1/templates",
            Some(&admin),
            Some(Body::Raw("application/yaml", changed.as_bytes())),
        )
        .await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");
    let shown = srv.get("/v1/templates/api/chain/1.0.0").await;
    assert_eq!(
        shown.body["definition"]["description"],
        "three steps in a row"
    );

    // JSON bodies are templates too.
    let json_body = json!({
        "namespace": "api", "name": "solo", "version": "2.0.0",
        "steps": [{"name": "only", "handler": "noop@0.1.0"}]
    });
    let a = srv.post("/v1/templates", &json_body).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");

    for v in ["1.1.0", "1.2.0", "1.3.0"] {
        srv.register(&version(v)).await;
    }
    // Pages of two, in key order, every template once.
    let mut keys = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/templates?limit=2&cursor={c}"),
            None => "/v1/templates?limit=2".to_owned(),
        };
        let a = srv.get(&path).await;
        assert_eq!(a.status, StatusCode::OK, "{a:?}");
        let items = a.body["items"].as_array().unwrap();
        assert!(items.len() <= 2);
        keys.extend(items.iter().map(|t| t["key"].as_str().unwrap().to_owned()));
        match a.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(
        keys,
        [
            "api/chain@1.0.0",
            "api/chain@1.1.0",
            "api/chain@1.2.0",
            "api/chain@1.3.0",
            "api/solo@2.0.0"
        ]
    );

    // One version with its graph: nodes with levels, edges, the levels.
    let g = &shown.body["graph"];
    assert_eq!(g["nodes"].as_array().unwrap().len(), 3, "{g}");
    assert_eq!(g["nodes"][2]["name"], "c");
    assert_eq!(g["nodes"][2]["level"], 2);
    assert_eq!(g["nodes"][2]["depends_on"], json!(["b"]));
    assert_eq!(
        g["edges"],
        json!([{"from": "a", "to": "b"}, {"from": "b", "to": "c"}])
    );
    assert_eq!(g["levels"], json!([["a"], ["b"], ["c"]]));
    assert_eq!(
        shown.body["definition"]["steps"][0]["handler"],
        "echo@0.1.0"
    );

    let a = srv.get("/v1/templates/api/chain/9.9.9").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    assert_eq!(a.body["type"], "urn:tasker:problem:not-found");
    srv.stop().await;
}
