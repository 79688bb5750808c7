//! `/health/live`, `/health/ready` and `/health/status`.

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(health_answers_without_a_token_and_counts_with_one);

async fn health_answers_without_a_token_and_counts_with_one<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    for path in ["/health/live", "/health/ready"] {
        let a = srv.call(Method::GET, path, None, None).await;
        assert_eq!(a.status, StatusCode::OK, "{path}: {a:?}");
    }
    let a = srv.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(a.body["store"], store.backend());

    let a = srv.call(Method::GET, "/health/status", None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED, "{a:?}");

    srv.register(crate::CHAIN).await;
    for n in 0..2 {
        let a = srv
            .post(
                "/v1/tasks",
                &json!({"template": "api/chain@1.0.0", "context": {"customer_id": n}}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    }
    // Any valid token may read the status.
    let t = srv.token(&["plugins:read"]).await;
    let a = srv
        .call(Method::GET, "/health/status", Some(&t), None)
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body["tasks"]["total"], 2, "{a:?}");
    assert_eq!(a.body["tasks"]["pending"], 2, "{a:?}");
    assert_eq!(a.body["steps"]["total"], 6, "{a:?}");
    assert_eq!(a.body["ready_backlog"], 2, "{a:?}");
    assert!(
        a.body["oldest_ready_age_seconds"].as_f64().unwrap() >= 0.0,
        "{a:?}"
    );
    assert!(a.body["pool"]["max"].as_i64().unwrap() >= 1, "{a:?}");
    srv.stop().await;
}

/// A store that does not answer makes the server not ready (503), still live.
#[sqlx::test(migrator = "::tasker_store::MIGRATOR")]
async fn ready_is_503_when_the_database_is_gone(pool: sqlx::PgPool) {
    let srv = TestServer::start(tasker_store::PgStore::new(pool.clone()), With::ApiOnly).await;
    pool.close().await;
    let a = srv.call(Method::GET, "/health/ready", None, None).await;
    assert_eq!(a.status, StatusCode::SERVICE_UNAVAILABLE, "{a:?}");
    assert_eq!(a.body["type"], "urn:tasker:problem:unavailable", "{a:?}");
    let a = srv.call(Method::GET, "/health/live", None, None).await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    srv.stop().await;
}
