//! `/v1/plugins`: list and show; upload checks a component and installs it atomically,
//! where the server's workers pick it up and run it.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::cli::{hostile_plugin_dir, plugin_dir, scratch};
use tasker_tests::on_both_backends;
use tasker_tests::server::{Body, TestServer, With};

on_both_backends!(an_uploaded_plugin_is_checked_installed_and_runs);

async fn an_uploaded_plugin_is_checked_installed_and_runs<S: Backend>(store: S) {
    // A plugin directory of its own, holding only echo.
    let dir = scratch("server-plugins");
    std::fs::copy(
        plugin_dir().join("echo@0.1.0.wasm"),
        dir.join("echo@0.1.0.wasm"),
    )
    .unwrap();
    let srv = TestServer::start_in(store.any(), With::Workers, &dir).await;
    let admin = srv.admin.clone();
    let upload = |query: &'static str, bytes: Vec<u8>| {
        let (srv, admin) = (&srv, admin.clone());
        async move {
            srv.call(
                Method::POST,
                &format!("/v1/plugins?{query}"),
                Some(&admin),
                Some(Body::Raw("application/wasm", &bytes)),
            )
            .await
        }
    };
    let list = srv.get("/v1/plugins").await;
    assert_eq!(list.body.as_array().unwrap().len(), 1, "{list:?}");

    // A template needing fail@0.1.0, registered ahead of the upload, and a task of it is
    // refused before the upload...
    let a = srv
        .call(
            Method::POST,
            "/v1/templates?allow_missing_handlers=true",
            Some(&srv.admin.clone()),
            Some(Body::Raw("application/yaml", crate::FAILING.as_bytes())),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let a = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:?}");

    // ...uploaded: 201, installed under its name, listed with its hash and world.
    let fail = std::fs::read(plugin_dir().join("fail@0.1.0.wasm")).unwrap();
    let before = chrono::Utc::now() - chrono::Duration::seconds(1);
    let a = upload("name=fail&version=0.1.0", fail.clone()).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let hash = format!("blake3:{}", blake3::hash(&fail).to_hex());
    assert_eq!(a.body["hash"], hash.as_str(), "{a:?}");
    assert_eq!(a.body["world"], "step-handler");
    assert_eq!(a.body["size_bytes"], fail.len());
    let found: chrono::DateTime<chrono::Utc> =
        serde_json::from_value(a.body["found_at"].clone()).expect("found_at is an instant");
    assert!(found >= before, "found {found}, uploaded after {before}");
    assert_eq!(std::fs::read(dir.join("fail@0.1.0.wasm")).unwrap(), fail);
    let leftovers: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".tmp"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
    let shown = srv.get(&format!("/v1/plugins/{hash}")).await;
    assert_eq!(shown.status, StatusCode::OK, "{shown:?}");
    assert_eq!(shown.body["name"], "fail");

    // The same bytes again (under any name) change nothing.
    let a = upload("name=fail_again&version=1.0.0", fail.clone()).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["name"], "fail");
    assert!(!dir.join("fail_again@1.0.0.wasm").exists());

    // ...and the task now runs on it (permanent failure by its config).
    let a = srv
        .post("/v1/tasks", &json!({"template": "api/failing@1.0.0"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let id = a.body["id"].as_i64().unwrap();
    let t = srv
        .wait_for(&format!("/v1/tasks/{id}"), Duration::from_secs(120), |t| {
            t["state"] == "error"
        })
        .await;
    let step = t["steps"][0]["id"].as_i64().unwrap();
    let s = srv.get(&format!("/v1/steps/{step}")).await;
    assert_eq!(
        s.body["attempt_history"][0]["plugin_hash"],
        hash.trim_start_matches("blake3:")
    );

    // Refused, each naming why, and nothing is written.
    let noop = std::fs::read(plugin_dir().join("noop@0.1.0.wasm")).unwrap();
    let a = upload("name=fail&version=0.1.0", noop.clone()).await;
    assert_eq!(a.status, StatusCode::CONFLICT, "{a:?}");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("publish a new version"),
        "{a:?}"
    );
    let a = upload("name=junk&version=1.0.0", b"not wasm at all".to_vec()).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:?}");
    assert!(
        a.body["detail"]
            .as_str()
            .unwrap()
            .contains("not a valid WebAssembly component"),
        "{a:?}"
    );
    let missing =
        std::fs::read(hostile_plugin_dir().join("hostile_missing_import@0.1.0.wasm")).unwrap();
    let a = upload("name=needy&version=1.0.0", missing).await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:?}");
    assert!(
        a.body["detail"].as_str().unwrap().contains("import"),
        "{a:?}"
    );
    for q in [
        "name=../x&version=1.0.0",
        "name=x&version=one",
        "version=1.0.0",
    ] {
        let a = upload(q, noop.clone()).await;
        assert_eq!(a.status, StatusCode::BAD_REQUEST, "{q}: {a:?}");
    }
    let a = srv
        .call(
            Method::POST,
            "/v1/plugins?name=x&version=1.0.0",
            Some(&admin),
            Some(Body::Raw("application/json", b"{}")),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNSUPPORTED_MEDIA_TYPE, "{a:?}");
    let files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    let mut files = files;
    files.sort();
    assert_eq!(files, ["echo@0.1.0.wasm", "fail@0.1.0.wasm"]);
    let a = srv.get("/v1/plugins/nothing@1.0.0").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    srv.stop().await;
}
