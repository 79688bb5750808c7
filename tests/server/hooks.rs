//! `/v1/hooks`: counts, deliveries and dead letters, and redelivery through the delivery
//! loop of the server's in-process worker.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(dead_letters_are_listed_and_redelivered);

/// Every task event goes to a hook that refuses it, once: each becomes a dead letter.
const REFUSED: &str = "namespace: api
name: refused
version: 1.0.0
hooks:
  - { component: hook_fail@0.1.0, events: ['task.*'], delivery: { max_attempts: 1 } }
steps:
  - { name: only, handler: echo@0.1.0 }
";

const BOUND: Duration = Duration::from_secs(120);

fn ids(page: &Value) -> Vec<i64> {
    page["items"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| d["id"].as_i64().unwrap())
        .collect()
}

async fn dead_letters_are_listed_and_redelivered<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::Workers).await;
    srv.register(REFUSED).await;
    let a = srv
        .post("/v1/tasks", &json!({"template": "api/refused@1.0.0"}))
        .await;
    assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
    let task = a.body["id"].as_i64().unwrap();
    srv.wait_for(&format!("/v1/tasks/{task}"), BOUND, |t| {
        t["state"] == "complete"
    })
    .await;
    // task.created, task.started (or in_progress) and task.completed: all refused, all dead.
    let hooks = srv
        .wait_for("/v1/hooks", BOUND, |h| {
            h[0]["pending"] == 0 && h[0]["dead"].as_i64().unwrap_or(0) >= 2
        })
        .await;
    let hook = hooks[0]["hook_id"].as_i64().unwrap();
    assert_eq!(hooks[0]["component"], "hook_fail@0.1.0");
    let dead_count = hooks[0]["dead"].as_i64().unwrap();

    let dead = srv
        .get(&format!("/v1/hooks/{hook}/deliveries?state=dead"))
        .await;
    assert_eq!(dead.status, StatusCode::OK, "{dead:?}");
    let dead_ids = ids(&dead.body);
    assert_eq!(dead_ids.len() as i64, dead_count);
    let first = &dead.body["items"][0];
    assert_eq!(first["task_id"], task);
    assert_eq!(first["attempts"], 1);
    assert!(
        first["last_error"]
            .as_str()
            .unwrap()
            .contains("downstream refused"),
        "{first}"
    );
    assert!(
        first["event"].as_str().unwrap().starts_with("task."),
        "{first}"
    );
    // Pages of one walk the same rows.
    let mut walked = Vec::new();
    let mut path = format!("/v1/hooks/{hook}/deliveries?state=dead&limit=1");
    loop {
        let p = srv.get(&path).await;
        walked.extend(ids(&p.body));
        match p.body["next_cursor"].as_str() {
            Some(c) => path = format!("/v1/hooks/{hook}/deliveries?state=dead&limit=1&cursor={c}"),
            None => break,
        }
    }
    assert_eq!(walked, dead_ids);
    let none = srv
        .get(&format!(
            "/v1/hooks/{hook}/deliveries?state=delivered&task={task}"
        ))
        .await;
    assert_eq!(ids(&none.body), Vec::<i64>::new());

    // One dead letter again: a new delivery, refused again, dead again.
    let a = srv
        .post(
            &format!("/v1/hooks/{hook}/redeliver"),
            &json!({"ids": [dead_ids[0]]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    let new_id = a.body[0]["new_id"].as_i64().unwrap();
    assert_eq!(a.body[0]["old_id"], dead_ids[0]);
    assert!(new_id > *dead_ids.last().unwrap());
    srv.wait_for(
        &format!("/v1/hooks/{hook}/deliveries?state=dead"),
        BOUND,
        |p| {
            let got = ids(p);
            got.contains(&new_id) && !got.contains(&dead_ids[0])
        },
    )
    .await;

    // Refused, writing nothing: an id that is not dead, a hook that does not exist.
    let a = srv
        .post(
            &format!("/v1/hooks/{hook}/redeliver"),
            &json!({"ids": [999_999]}),
        )
        .await;
    assert_eq!(a.status, StatusCode::UNPROCESSABLE_ENTITY, "{a:?}");
    assert!(
        a.body["detail"].as_str().unwrap().contains("999999"),
        "{a:?}"
    );
    let a = srv.post("/v1/hooks/424242/redeliver", &json!({})).await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    let a = srv
        .get(&format!("/v1/hooks/{hook}/deliveries?state=lost"))
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.pointers(), ["?state"]);
    let a = srv
        .post(
            &format!("/v1/hooks/{hook}/redeliver"),
            &json!({"all": true}),
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.pointers(), ["/all"]);

    // All of them again.
    let a = srv
        .post(&format!("/v1/hooks/{hook}/redeliver"), &json!({}))
        .await;
    assert_eq!(a.status, StatusCode::OK, "{a:?}");
    assert_eq!(a.body.as_array().unwrap().len() as i64, dead_count);
    srv.wait_for("/v1/hooks", BOUND, |h| {
        h[0]["pending"] == 0 && h[0]["dead"] == dead_count
    })
    .await;
    srv.stop().await;
}
