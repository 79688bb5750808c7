//! OpenTelemetry traces: an OTLP/HTTP receiver on a loopback port decodes what the `tasker`
//! processes export, and one task, created under a caller's traceparent and run by two
//! workers with a retry, is one trace whose spans have the right parents and attributes.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::body::Bytes;
use axum::routing::post;
use opentelemetry_proto::tonic::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use opentelemetry_proto::tonic::common::v1::any_value::Value as Any;
use opentelemetry_proto::tonic::trace::v1::Span;
use opentelemetry_proto::tonic::trace::v1::status::StatusCode;
use prost::Message;
use tasker_tests::cli::*;

const TRACE_ID: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT_ID: &str = "00f067aa0ba902b7";

/// `a` fails its first attempt and waits an hour for its retry (the test makes it due once
/// the first worker has stopped); `b` runs after it.
const TEMPLATE: &str = "namespace: e2e\nname: traced\nversion: 1.0.0\nsteps:\n  - name: a\n    handler: chatty@0.1.0\n    retry: { max_attempts: 2, backoff: { base_ms: 3600000, cap_ms: 3600000, jitter: 0 } }\n  - { name: b, handler: echo@0.1.0, depends_on: [a] }\n";

/// One exported span with its process's pid.
#[derive(Debug, Clone)]
struct Got {
    pid: i64,
    span: Span,
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn attr(s: &Span, key: &str) -> Option<Any> {
    s.attributes
        .iter()
        .find(|kv| kv.key == key)
        .and_then(|kv| kv.value.clone())
        .and_then(|v| v.value)
}

fn text(s: &Span, key: &str) -> String {
    match attr(s, key) {
        Some(Any::StringValue(v)) => v,
        other => panic!("{key} of {}: {other:?}", s.name),
    }
}

fn int(s: &Span, key: &str) -> i64 {
    match attr(s, key) {
        Some(Any::IntValue(v)) => v,
        other => panic!("{key} of {}: {other:?}", s.name),
    }
}

/// A loopback OTLP/HTTP receiver: every span posted to /v1/traces, decoded. It runs on a
/// thread of its own: the test's runtime blocks while it waits for `tasker` processes.
fn receiver() -> (String, Arc<Mutex<Vec<Got>>>) {
    let got: Arc<Mutex<Vec<Got>>> = Arc::default();
    let sink = got.clone();
    let app = axum::Router::new().route(
        "/v1/traces",
        post(move |body: Bytes| {
            let sink = sink.clone();
            async move {
                let req = ExportTraceServiceRequest::decode(body).expect("OTLP protobuf");
                let mut out = sink.lock().unwrap();
                for rs in req.resource_spans {
                    let pid = rs
                        .resource
                        .iter()
                        .flat_map(|r| &r.attributes)
                        .find(|kv| kv.key == "process.pid")
                        .and_then(|kv| kv.value.clone())
                        .and_then(|v| v.value);
                    let Some(Any::IntValue(pid)) = pid else {
                        panic!("no process.pid on the resource")
                    };
                    for ss in rs.scope_spans {
                        for span in ss.spans {
                            out.push(Got { pid, span });
                        }
                    }
                }
                (
                    [("content-type", "application/x-protobuf")],
                    ExportTraceServiceResponse::default().encode_to_vec(),
                )
            }
        }),
    );
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let base = format!("http://{}", listener.local_addr().unwrap());
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            axum::serve(listener, app).await.unwrap()
        })
    });
    (base, got)
}

async fn one_task_on_two_workers_with_a_retry_is_one_trace(db: Db) {
    let (otlp, got) = receiver();
    let dir = scratch("traces");
    std::fs::write(dir.join("t.yaml"), TEMPLATE).unwrap();
    std::fs::write(dir.join("tasker.toml"), "").unwrap();
    let traceparent = format!("00-{TRACE_ID}-{PARENT_ID}-01");

    // Created under the caller's trace, by a process that exports its creation span.
    let mut c = tasker(&db, &plugin_dir());
    c.args([
        "--otlp-endpoint",
        &otlp,
        "--traceparent",
        &traceparent,
        "submit",
    ])
    .arg(dir.join("t.yaml"))
    .args(["--context", r#"{"fail_first": true, "lines": 1}"#]);
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));

    // Worker one runs the failing first attempt of `a`, then stops.
    let mut w1 = worker_command(&db, &plugin_dir(), &dir.join("tasker.toml"), "w1", 4);
    w1.args(["--otlp-endpoint", &otlp]);
    let mut w1 = KillOnDrop(w1.spawn().unwrap());
    let bound = Duration::from_secs(300);
    wait_for(
        &db,
        "SELECT count(*) FROM attempts WHERE outcome = 'failed'",
        1,
        bound,
    )
    .await;
    stop_gracefully(&mut w1.0);
    // The retry is due an hour later: made due now, for the second worker.
    let due = match db {
        Db::Postgres(_) => "UPDATE steps SET ready_at = now() WHERE state = 'waiting_for_retry'",
        Db::Sqlite(_) => "UPDATE steps SET ready_at = 0 WHERE state = 'waiting_for_retry'",
    };
    assert_eq!(execute(&db, due).await, 1);

    // Worker two runs the retry and `b`.
    let mut w2 = worker_command(&db, &plugin_dir(), &dir.join("tasker.toml"), "w2", 4);
    w2.args(["--otlp-endpoint", &otlp]);
    let mut w2 = KillOnDrop(w2.spawn().unwrap());
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        1,
        bound,
    )
    .await;
    stop_gracefully(&mut w2.0);

    // Each process sent what it had when it stopped; the receiver may still be decoding.
    let t = Instant::now();
    let spans = loop {
        let spans = got.lock().unwrap().clone();
        let attempts = spans
            .iter()
            .filter(|g| g.span.name == "step.attempt")
            .count();
        let created = spans.iter().any(|g| g.span.name == "task.create");
        if (attempts >= 3 && created) || t.elapsed() > bound {
            break spans;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    let named = |n: &str| -> Vec<&Got> { spans.iter().filter(|g| g.span.name == n).collect() };

    let create = named("task.create");
    assert_eq!(create.len(), 1, "{create:?}");
    let create = &create[0].span;
    assert_eq!(hex(&create.trace_id), TRACE_ID, "the caller's trace");
    assert_eq!(
        hex(&create.parent_span_id),
        PARENT_ID,
        "the caller's span is the parent"
    );
    assert_eq!(text(create, "template"), "e2e/traced@1.0.0");

    let attempts = named("step.attempt");
    let by: BTreeMap<(String, i64), &Got> = attempts
        .iter()
        .map(|g| ((text(&g.span, "step"), int(&g.span, "attempt")), *g))
        .collect();
    let keys: Vec<_> = by.keys().cloned().collect();
    assert_eq!(
        keys,
        [
            ("a".to_owned(), 1),
            ("a".to_owned(), 2),
            ("b".to_owned(), 1)
        ],
        "one span per attempt: {attempts:?}"
    );
    for g in &attempts {
        let s = &g.span;
        assert_eq!(hex(&s.trace_id), TRACE_ID, "{s:?}");
        assert_eq!(
            s.parent_span_id, create.span_id,
            "a child of the creation: {s:?}"
        );
        assert_eq!(text(s, "template"), "e2e/traced@1.0.0");
        assert!(
            int(s, "fuel") > 0 && int(s, "peak_memory_bytes") > 0,
            "{s:?}"
        );
        assert_eq!(text(s, "plugin_hash").len(), 64, "{s:?}");
    }
    let first = &by[&("a".to_owned(), 1)].span;
    assert_eq!(text(first, "worker"), "w1");
    assert_eq!(text(first, "outcome"), "failed");
    assert_eq!(text(first, "error_kind"), "handler_error");
    assert_eq!(
        first.status.as_ref().map(|s| s.code),
        Some(StatusCode::Error as i32),
        "{first:?}"
    );
    for key in [("a".to_owned(), 2), ("b".to_owned(), 1)] {
        let s = &by[&key].span;
        assert_eq!(text(s, "worker"), "w2", "{key:?}");
        assert_eq!(text(s, "outcome"), "completed", "{key:?}");
        assert!(attr(s, "error_kind").is_none(), "{key:?}");
    }
    // Three processes took part: the submitter and the two workers.
    let pids: BTreeSet<i64> = create_and(&spans, &attempts);
    assert_eq!(pids.len(), 3, "{pids:?}");

    // Each worker's store calls are spans too.
    let store_pids: BTreeSet<i64> = spans
        .iter()
        .filter(|g| g.span.name.starts_with("store."))
        .map(|g| g.pid)
        .collect();
    assert!(
        by.values().all(|g| store_pids.contains(&g.pid)),
        "store call spans from every worker: {store_pids:?}"
    );
    assert!(
        spans
            .iter()
            .any(|g| g.span.name == "store.complete_and_claim"
                && text(&g.span, "db.system") == db_system(&db)),
        "a worker's hop"
    );
}

fn create_and(spans: &[Got], attempts: &[&Got]) -> BTreeSet<i64> {
    spans
        .iter()
        .filter(|g| g.span.name == "task.create")
        .chain(attempts.iter().copied())
        .map(|g| g.pid)
        .collect()
}

fn db_system(db: &Db) -> &'static str {
    match db {
        Db::Postgres(_) => "postgres",
        Db::Sqlite(_) => "sqlite",
    }
}

/// A bad traceparent is refused by name, before anything is written.
async fn a_bad_traceparent_is_refused_before_anything_is_written(db: Db) {
    let mut c = tasker(&db, &plugin_dir());
    c.args(["--traceparent", "00-abc-def-01", "submit", "e2e/none@1.0.0"]);
    let out = run(c);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr(&out).contains("invalid traceparent '00-abc-def-01': the trace id is not 32"),
        "{}",
        stderr(&out)
    );
    assert!(db.untouched().await, "nothing was written");
}

tasker_tests::cli_on_both_backends!(
    one_task_on_two_workers_with_a_retry_is_one_trace,
    a_bad_traceparent_is_refused_before_anything_is_written,
);
