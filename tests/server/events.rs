//! Live events over SSE: a running task's every transition once and in order, resumed
//! across a reconnect with `Last-Event-ID` without gaps or duplicates, the template stream,
//! and two server instances on one PostgreSQL database serving one task's stream.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_store::Store;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{SseEvent, SseStream, TestServer, With};

on_both_backends!(a_task_stream_has_every_transition_once_in_order_across_reconnects);
on_both_backends!(open_streams_end_when_the_server_stops);

const BOUND: Duration = Duration::from_secs(120);

async fn drain(s: &mut SseStream) -> Vec<SseEvent> {
    let mut out = Vec::new();
    while let Some(e) = s.next(BOUND).await {
        out.push(e);
    }
    out
}

/// The transitions of a finished task as (entity, from, to), from the store, in each
/// entity's own order; the stream must hold exactly these.
async fn history<S: Store>(store: &S, task: i64) -> Vec<(String, String, String)> {
    let task = tasker_store::TaskId::new(task);
    let mut out = Vec::new();
    for s in store.steps_of_task(task).await.unwrap() {
        for t in store.step_transitions(s.id).await.unwrap() {
            out.push((
                s.name.clone(),
                t.from_state.to_string(),
                t.to_state.to_string(),
            ));
        }
    }
    for t in store.task_transitions(task).await.unwrap() {
        out.push((
            "task".into(),
            t.from_state.to_string(),
            t.to_state.to_string(),
        ));
    }
    out.sort();
    out
}

fn as_history(events: &[SseEvent]) -> Vec<(String, String, String)> {
    let mut out: Vec<_> = events
        .iter()
        .filter(|e| e.event.ends_with(".transition"))
        .map(|e| {
            let who = if e.event == "task.transition" {
                "task".to_owned()
            } else {
                e.data["step_name"].as_str().unwrap().to_owned()
            };
            (
                who,
                e.data["from_state"].as_str().unwrap().to_owned(),
                e.data["to_state"].as_str().unwrap().to_owned(),
            )
        })
        .collect();
    out.sort();
    out
}

/// The order a chain's events must follow: a before b before c, each step's states in
/// order, and the task's completion last.
fn assert_causal(events: &[SseEvent]) {
    let pos = |who: &str, to: &str| {
        events
            .iter()
            .position(|e| {
                let name = e.data["step_name"].as_str().unwrap_or("task");
                name == who && e.data["to_state"] == to
            })
            .unwrap_or_else(|| panic!("no {who} -> {to} in {events:#?}"))
    };
    assert!(pos("a", "in_progress") < pos("a", "complete"));
    assert!(pos("a", "complete") < pos("b", "in_progress"));
    assert!(pos("b", "complete") < pos("c", "in_progress"));
    assert!(pos("c", "complete") < pos("task", "complete"));
    assert_eq!(events.last().unwrap().data["to_state"], "complete");
    assert_eq!(events.last().unwrap().event, "task.transition");
}

async fn a_task_stream_has_every_transition_once_in_order_across_reconnects<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::Workers).await;
    srv.register(crate::CHAIN).await;
    srv.register(&crate::CHAIN.replace("name: chain", "name: other"))
        .await;
    // The template stream, opened before anything runs: it sees only new events.
    let mut of_template = srv.sse("/v1/events?template=api/chain", None).await;

    let a = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": {"customer_id": 1}}),
        )
        .await;
    let id = a.body["id"].as_i64().unwrap();
    let other = srv
        .post(
            "/v1/tasks",
            &json!({"template": "api/other@1.0.0", "context": {"customer_id": 2}}),
        )
        .await;
    let other = other.body["id"].as_i64().unwrap();

    // Followed live from the start: ends by itself once the task completes.
    let mut live = srv.sse(&format!("/v1/tasks/{id}/events"), None).await;
    let all = drain(&mut live).await;
    assert_causal(&all);
    assert!(all.iter().all(|e| e.data["task_id"] == id), "{all:#?}");
    let ids: Vec<&str> = all.iter().map(|e| e.id.as_str()).collect();
    let mut unique = ids.clone();
    unique.dedup();
    assert_eq!(unique.len(), ids.len(), "an event came twice: {ids:?}");
    assert_eq!(
        as_history(&all),
        history(&store, id).await,
        "the stream is the history"
    );
    // And each step's custom event (echo emits one per run), with its step.
    let custom: Vec<&str> = all
        .iter()
        .filter(|e| e.event == "custom.echoed")
        .map(|e| e.data["step_name"].as_str().unwrap())
        .collect();
    assert_eq!(custom, ["a", "b", "c"], "{all:#?}");

    // Reconnect after every event in turn: the rest follows exactly.
    for k in 0..all.len() {
        let mut resumed = srv
            .sse(&format!("/v1/tasks/{id}/events"), Some(&all[k].id))
            .await;
        let rest = drain(&mut resumed).await;
        assert_eq!(rest, all[k + 1..], "resumed after event {k}");
    }
    // ?after= is the same as the header.
    let a = srv
        .call(
            Method::GET,
            &format!("/v1/tasks/{id}/events?after={}", all[2].id),
            Some(&srv.admin.clone()),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::OK);

    // The template stream got this task's events, in the same order, and none of the other
    // template's task.
    let mut seen = Vec::new();
    while seen.len() < all.len() {
        let e = of_template
            .next(BOUND)
            .await
            .expect("the template stream stays open");
        assert_ne!(e.data["task_id"], other, "{e:?}");
        seen.push(e);
    }
    assert_eq!(seen, all);

    // A malformed cursor is refused before the stream starts; an unknown task is a 404.
    let a = srv
        .call(
            Method::GET,
            &format!("/v1/tasks/{id}/events?after=nonsense"),
            Some(&srv.admin.clone()),
            None,
        )
        .await;
    assert_eq!(a.status, StatusCode::BAD_REQUEST, "{a:?}");
    assert_eq!(a.pointers(), ["Last-Event-ID"], "{a:?}");
    let a = srv.get("/v1/tasks/999999/events").await;
    assert_eq!(a.status, StatusCode::NOT_FOUND, "{a:?}");
    srv.stop().await;
}

/// Two servers on one database: one runs the workers, the other only answers; a client of
/// the second follows a task the first runs, and resumes on the first.
#[sqlx::test(migrator = "::tasker_store::MIGRATOR")]
async fn two_servers_on_one_database_serve_one_tasks_stream(pool: sqlx::PgPool) {
    let store = tasker_store::PgStore::new(pool);
    let runner = TestServer::start(store.clone(), With::Workers).await;
    let other = tasker_tests::own_pool(&store).await;
    let reader = TestServer::start(other, With::ApiOnly).await;
    runner.register(crate::CHAIN).await;
    let a = runner
        .post(
            "/v1/tasks",
            &json!({"template": "api/chain@1.0.0", "context": {"customer_id": 3}}),
        )
        .await;
    let id = a.body["id"].as_i64().unwrap();
    let mut s = reader.sse(&format!("/v1/tasks/{id}/events"), None).await;
    let first = s.next(BOUND).await.unwrap();
    drop(s);
    let mut rest = runner
        .sse(&format!("/v1/tasks/{id}/events"), Some(&first.id))
        .await;
    let mut all = vec![first];
    all.extend(drain(&mut rest).await);
    assert_causal(&all);
    assert_eq!(as_history(&all), history(&store, id).await);
    reader.stop().await;
    runner.stop().await;
}

/// A client that never disconnects does not hold the graceful shutdown open: its stream
/// ends when the server stops.
async fn open_streams_end_when_the_server_stops<S: Backend>(store: S) {
    let srv = TestServer::start(store.any(), With::ApiOnly).await;
    let mut s = srv.sse("/v1/events", None).await;
    tokio::time::timeout(BOUND, srv.stop())
        .await
        .expect("the server stops with a stream open");
    assert_eq!(s.next(BOUND).await, None, "the stream ended");
}
