//! `/v1/tokens` and token validity: created once, used, revoked, expired.

use chrono::{Duration, Utc};
use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{Body, TestServer, With};

on_both_backends!(tokens_are_shown_once_and_stop_working_when_revoked_or_expired);

async fn tokens_are_shown_once_and_stop_working_when_revoked_or_expired<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    let a = srv
        .post(
            "/v1/tokens",
            &json!({"name": "ci", "permissions": ["tasks:read", "templates:*"]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let secret = a.body["token"].as_str().unwrap().to_owned();
    assert!(secret.starts_with("tkr_"), "{a:?}");

    // The listing never shows a secret or its hash.
    let list = srv.get("/v1/tokens").await;
    assert_eq!(list.status, StatusCode::OK);
    let text = list.body.to_string();
    assert!(!text.contains(&secret) && !text.contains("hash"), "{text}");
    let ci = list
        .body
        .as_array()
        .unwrap()
        .iter()
        .find(|t| t["name"] == "ci")
        .unwrap();
    assert_eq!(ci["permissions"], json!(["tasks:read", "templates:*"]));

    let a = srv
        .call(Method::GET, "/v1/templates", Some(&secret), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let a = srv
        .call(Method::GET, "/v1/tokens", Some(&secret), None)
        .await;
    assert_eq!(a.status, StatusCode::FORBIDDEN, "{a:?}");
    assert_eq!(a.body["missing_permission"], "tokens:admin", "{a:?}");

    // A duplicate name, an unknown permission, a past expiry: refused, nothing written.
    for (body, pointer) in [
        (json!({"name": "ci", "permissions": ["*"]}), "/name"),
        (
            json!({"name": "x", "permissions": ["tasks:reed"]}),
            "/permissions",
        ),
        (json!({"name": "x", "permissions": []}), "/permissions"),
        (
            json!({"name": "x", "permissions": ["*"], "expires_at": (Utc::now() - Duration::hours(1)).to_rfc3339()}),
            "/expires_at",
        ),
    ] {
        let a = srv.post("/v1/tokens", &body).await;
        assert!(
            a.status == StatusCode::UNPROCESSABLE_ENTITY,
            "{body}: {a:?}"
        );
        if pointer != "/name" {
            assert_eq!(a.pointers(), [pointer], "{body}: {a:?}");
        } else {
            assert!(a.body["detail"].as_str().unwrap().contains("'ci'"), "{a:?}");
        }
    }
    assert_eq!(
        srv.get("/v1/tokens").await.body.as_array().unwrap().len(),
        2
    );

    // Revoked: 401 at once, on every route; revoking again is 404.
    let admin = srv.admin.clone();
    let a = srv
        .call(Method::DELETE, "/v1/tokens/ci", Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let a = srv
        .call(Method::GET, "/v1/templates", Some(&secret), None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");
    assert!(a.header("www-authenticate").unwrap().starts_with("Bearer"));
    let a = srv
        .call(Method::DELETE, "/v1/tokens/ci", Some(&admin), None)
        .await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");

    // Expired: a token whose expiry has passed is refused (the store keeps it, listed as such).
    let soon = Utc::now() + Duration::milliseconds(300);
    let a = srv
        .post(
            "/v1/tokens",
            &json!({"name": "short", "permissions": ["*"], "expires_at": soon.to_rfc3339()}),
        )
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let short = a.body["token"].as_str().unwrap().to_owned();
    // Wait for the expiry instant itself (a condition on the clock, not a guess).
    while Utc::now() <= soon {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let a = srv
        .call(Method::GET, "/v1/templates", Some(&short), None)
        .await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");

    // Garbage and a missing scheme are 401 too.
    for h in ["tkr_nope", ""] {
        let a = srv.call(Method::GET, "/v1/templates", Some(h), None).await;
        assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{h}: {a:?}");
    }
    let a = srv
        .call(
            Method::POST,
            "/v1/tokens",
            Some(&admin),
            Some(Body::Raw(
                "application/json",
                b"{\"name\": \"y\", \"permissions\": [\"*\"], \"admin\": true}",
            )),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.pointers(), ["/admin"], "{a:?}");
    srv.stop().await;
}
