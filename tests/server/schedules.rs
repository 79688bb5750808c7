//! `/v1/schedules`: create (and replace), list with next fire times, show, pause, resume,
//! delete; bad input as problems naming each field, nothing written; a template's
//! `schedules:` registered through the API; the permissions.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(schedules_over_the_api);

const SCHEDULED: &str = "namespace: api
name: nightly
version: 1.0.0
context_schema:
  type: object
  required: [customer_id]
  properties:
    customer_id: { type: integer }
steps:
  - { name: a, handler: echo@0.1.0 }
schedules:
  - { name: eu, cron: '30 2 * * *', tz: Europe/Paris, context: { customer_id: 1 } }
";

async fn schedules_over_the_api<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    assert_eq!(srv.register(crate::CHAIN).await.status, StatusCode::CREATED);
    let good = json!({
        "name": "hourly", "template": "api/chain@1.0.0", "cron": "0 * * * *",
        "tz": "Europe/Paris", "context": {"customer_id": 7}, "missed": "run_once",
    });
    let a = srv.post("/v1/schedules", &good).await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    assert_eq!(a.body["name"], "hourly");
    assert_eq!(a.body["template"], "api/chain@1.0.0");
    assert_eq!(a.body["missed"], "run_once");
    assert_eq!(a.body["source"], "api");
    assert_eq!(a.body["paused"], false);
    assert!(a.body["next_fire_at"].is_string(), "{a:?}");
    assert_eq!(a.body["upcoming"].as_array().unwrap().len(), 2, "{a:?}");
    // The same name again replaces it: 200.
    let mut replaced = good.clone();
    replaced["cron"] = json!("*/30 * * * *");
    let a = srv.post("/v1/schedules", &replaced).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["cron"], "*/30 * * * *");

    // Bad input: every field at fault, nothing written.
    for (body, pointers) in [
        (
            json!({"name": "x", "template": "api/nope@1.0.0", "cron": "0 * * * *"}),
            vec!["/template"],
        ),
        (
            json!({"name": "x", "template": "api/chain@1.0.0", "cron": "61 * * * *", "tz": "Mars/Base", "context": {"customer_id": 1}}),
            vec!["/cron", "/tz"],
        ),
        (
            json!({"name": "x", "template": "api/chain@1.0.0", "cron": "0 * * * *", "context": {"customer_id": "seven"}}),
            vec!["/context/customer_id"],
        ),
        (
            json!({"name": "a b", "template": "api/chain@1.0.0", "cron": "0 * * * *", "missed": "later", "priority": 9, "context": {"customer_id": 1}}),
            vec!["/missed", "/priority", "/name"],
        ),
    ] {
        let a = srv.post("/v1/schedules", &body).await;
        assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{body}: {a:?}");
        assert_eq!(a.body["type"], "urn:tasker:problem:invalid", "{a:?}");
        assert_eq!(a.pointers(), pointers, "{body}: {a:?}");
    }
    let a = srv
        .post(
            "/v1/schedules",
            &json!({"name": "x", "cron": "0 * * * *", "oops": 1}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");

    let list = srv.get("/v1/schedules").await;
    assert_eq!(list.status, StatusCode::OK);
    let names: Vec<&str> = list.body["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["hourly"]);

    // A template's schedules come with it; its name is escaped in paths.
    assert_eq!(srv.register(SCHEDULED).await.status, StatusCode::CREATED);
    let a = srv.get("/v1/schedules/api%2Fnightly%3Aeu").await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["source"], "template");
    assert_eq!(a.body["tz"], "Europe/Paris");
    assert_eq!(a.body["context"], json!({"customer_id": 1}));

    // Pause, resume, delete.
    let admin = srv.admin.clone();
    let a = srv
        .call(
            Method::POST,
            "/v1/schedules/hourly/pause",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["paused"], true);
    assert!(a.body["next_fire_at"].is_null());
    assert_eq!(a.body["upcoming"], json!([]));
    let a = srv
        .call(
            Method::POST,
            "/v1/schedules/hourly/resume",
            Some(&admin),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["paused"], false);
    assert!(a.body["next_fire_at"].is_string());
    let a = srv
        .call(Method::DELETE, "/v1/schedules/hourly", Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["deleted"], true);
    for (method, path) in [
        (Method::DELETE, "/v1/schedules/hourly"),
        (Method::GET, "/v1/schedules/hourly"),
        (Method::POST, "/v1/schedules/hourly/pause"),
        (Method::POST, "/v1/schedules/nope/resume"),
    ] {
        let a = srv.call(method.clone(), path, Some(&admin), None).await;
        assert_eq!(a.status, StatusCode::NOT_FOUND, "{method} {path}: {a:?}");
        assert_eq!(a.body["type"], "urn:tasker:problem:not-found");
    }

    // Reading needs schedules:read, writing schedules:write.
    let reader = srv.token(&["schedules:read"]).await;
    let a = srv
        .call(Method::GET, "/v1/schedules", Some(&reader), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let a = srv
        .call(
            Method::POST,
            "/v1/schedules/api%2Fnightly%3Aeu/pause",
            Some(&reader),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert_eq!(a.body["missing_permission"], "schedules:write");
    srv.stop().await;
}
