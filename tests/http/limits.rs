//! The per-attempt HTTP limits: response bytes (declared and streamed), the attempt's
//! deadline against a server dripping a byte a second, the request count, and concurrency
//! (a queue, not a refusal); a well-behaved attempt beside a stuck one is not held up.

use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use serde_json::json;
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_sandbox::{AttemptGrants, AttemptLimits};
use tasker_store::{NewTask, Store};
use tasker_tests::http_server::TestHttp;
use tasker_tests::{Backend, on_both_backends, wait_until_done, worker_config};
use tokio_util::sync::CancellationToken;

use crate::*;

fn open(s: &TestHttp) -> AttemptGrants {
    grants(vec![rule(&s.http_url(""), &[], &[])])
}

#[tokio::test]
async fn a_response_over_the_byte_limit_is_capability_denied() {
    let s = TestHttp::start().await;
    let limits = AttemptLimits {
        http_response_bytes: Some(1000),
        ..AttemptLimits::default()
    };
    // At the cap: fine.
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/bytes/1000") }),
            limits.clone(),
            open(&s),
        ),
    )
    .await;
    assert_eq!(out.output["bytes"], 1000);

    // Declared over it (Content-Length).
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/bytes/100000") }),
            limits.clone(),
            open(&s),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert!(
        f.error.to_string().contains("HttpResponseBodySize"),
        "{}",
        f.error
    );
    assert_http_denial(&f, &[&s.http_url("/bytes/100000"), "http_response_bytes"]);
    assert_eq!(only_record(&f.report.http).status, Some(200));

    // Streamed past it (no Content-Length): cut while reading.
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/drip") }),
            AttemptLimits {
                http_response_bytes: Some(2),
                timeout_ms: Some(20_000),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert!(
        f.error.to_string().contains("HttpResponseBodySize"),
        "{}",
        f.error
    );
    assert_http_denial(&f, &[&s.http_url("/drip"), "http_response_bytes cap of 2"]);
    assert_eq!(s.count(), 3);
}

/// The server sends its headers, then a byte a second: the request is cut at the attempt's
/// deadline (before its own, longer one) and the attempt is a `timeout`, on time.
#[tokio::test]
async fn a_drip_past_the_deadline_is_a_timeout_on_time() {
    let s = TestHttp::start().await;
    let started = Instant::now();
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/drip") }),
            AttemptLimits {
                timeout_ms: Some(2000),
                http_timeout_ms: Some(60_000),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    let took = started.elapsed();
    assert_kind(&f, "timeout");
    assert!(
        took >= Duration::from_millis(1900) && took < Duration::from_secs(10),
        "took {took:?}"
    );
    assert_eq!(s.count_path("/drip"), 1);
    let r = only_record(&f.report.http);
    assert_eq!(r.status, Some(200), "{r:?}");
    assert!(r.response_bytes >= 1 && r.response_bytes <= 4, "{r:?}");
}

/// The server holds back its headers past the attempt's deadline: a `timeout` too.
#[tokio::test]
async fn headers_later_than_the_deadline_are_a_timeout() {
    let s = TestHttp::start().await;
    let started = Instant::now();
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/slow-headers?ms=30000") }),
            AttemptLimits {
                timeout_ms: Some(1500),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    let took = started.elapsed();
    assert_kind(&f, "timeout");
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert_eq!(s.count_path("/slow-headers"), 1);
    assert_eq!(only_record(&f.report.http).status, None);
}

/// `http_timeout_ms` shorter than the attempt: the request fails and the guest decides
/// (http_probe returns a retryable error naming the wasi:http code); not a `timeout`.
#[tokio::test]
async fn a_request_past_its_own_timeout_fails_the_request_not_the_attempt() {
    let s = TestHttp::start().await;
    let started = Instant::now();
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/drip") }),
            AttemptLimits {
                timeout_ms: Some(20_000),
                http_timeout_ms: Some(1000),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    let took = started.elapsed();
    assert_kind(&f, "handler_error");
    assert!(f.is_retryable());
    assert!(f.error.to_string().contains("Timeout"), "{}", f.error);
    assert!(took < Duration::from_secs(10), "took {took:?}");
    assert!(only_record(&f.report.http).error.is_some());
}

/// A request body over `http_request_bytes` is refused before it is sent.
#[tokio::test]
async fn a_request_body_over_the_byte_limit_is_capability_denied() {
    let s = TestHttp::start().await;
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "method": "POST", "url": s.http_url("/echo"), "body_bytes": 5000 }),
            AttemptLimits {
                http_request_bytes: Some(1000),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert_http_denial(&f, &[&s.http_url("/echo"), "http_request_bytes"]);
    assert_eq!(s.count(), 0, "the body over the cap was not sent");
    // Its declared length is over the cap: refused before any connection.
    assert_eq!(s.connections(), 0);
}

#[tokio::test]
async fn a_flood_past_the_request_count_is_refused_after_exactly_the_cap() {
    let s = TestHttp::start().await;
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/echo"), "repeat": 20 }),
            AttemptLimits {
                http_requests: Some(5),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert_http_denial(
        &f,
        &["the attempt made its 5 requests, the http_requests cap"],
    );
    assert_eq!(s.count(), 5, "exactly the cap reached the server");
    let recs = &f.report.http;
    assert_eq!(recs.len(), 6, "{recs:?}");
    assert!(
        recs[..5]
            .iter()
            .all(|r| r.status == Some(200) && !r.refused)
    );
    assert!(recs[5].refused, "{:?}", recs[5]);

    // With keep_going the guest goes on after the refusals: every one past the cap is
    // refused too, and still only 5 reach the server.
    let s = TestHttp::start().await;
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/echo"), "repeat": 20, "keep_going": true }),
            AttemptLimits {
                http_requests: Some(5),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    assert_eq!(out.output["statuses"].as_array().unwrap().len(), 5);
    assert_eq!(out.output["errors"].as_array().unwrap().len(), 15);
    assert_eq!(s.count(), 5);
    assert_eq!(out.report.http.iter().filter(|r| r.refused).count(), 15);
}

/// `http_concurrency` is a queue: 8 parallel requests with 2 slots all complete, never more
/// than 2 at the server at once, so they take at least 4 rounds.
#[tokio::test]
async fn parallel_requests_wait_for_a_concurrency_slot() {
    let s = TestHttp::start().await;
    let started = Instant::now();
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/slow-headers?ms=300"), "parallel": 8 }),
            AttemptLimits {
                http_concurrency: Some(2),
                ..AttemptLimits::default()
            },
            open(&s),
        ),
    )
    .await;
    let took = started.elapsed();
    assert_eq!(
        out.output["statuses"],
        json!(vec![200; 8]),
        "{}",
        out.output
    );
    assert_eq!(s.count(), 8);
    assert!(
        (1..=2).contains(&s.max_in_flight()),
        "{} in flight at once",
        s.max_in_flight()
    );
    assert!(took >= Duration::from_millis(1200), "took {took:?}");
    assert!(out.report.denials.is_empty(), "{:?}", out.report.denials);

    // Without the cap they overlap.
    let s = TestHttp::start().await;
    run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/slow-headers?ms=300"), "parallel": 8 }),
            AttemptLimits::default(),
            open(&s),
        ),
    )
    .await;
    assert!(
        s.max_in_flight() > 2,
        "{} in flight at once",
        s.max_in_flight()
    );
}

/// While one attempt is stuck on a dripping server, others on the same sandbox (the
/// worker's) run and end promptly: a plain step and one making its own request.
#[tokio::test]
async fn a_well_behaved_attempt_beside_a_stuck_one_completes_promptly() {
    let s = Arc::new(TestHttp::start().await);
    let stuck = tokio::spawn({
        let s = s.clone();
        async move {
            let started = Instant::now();
            let f = run_err(
                sandbox(),
                request(
                    "http_probe",
                    json!({ "url": s.http_url("/drip") }),
                    AttemptLimits {
                        timeout_ms: Some(8000),
                        ..AttemptLimits::default()
                    },
                    open(&s),
                ),
            )
            .await;
            (f.kind(), started.elapsed())
        }
    });
    assert!(
        s.wait_for_count(1, Duration::from_secs(30)).await,
        "the drip never started"
    );
    let started = Instant::now();
    let out = run_ok(
        sandbox(),
        request(
            "echo",
            json!({ "n": 1 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(out.output["config"], json!({ "n": 1 }));
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/echo") }),
            AttemptLimits::default(),
            open(&s),
        ),
    )
    .await;
    assert_eq!(out.output["status"], 200);
    let neighbours = started.elapsed();
    assert!(
        neighbours < Duration::from_secs(5),
        "the neighbours took {neighbours:?}"
    );
    assert!(!stuck.is_finished(), "the drip ended before its deadline");
    let (kind, took) = stuck.await.unwrap();
    assert_eq!(kind, "timeout");
    assert!(
        took >= Duration::from_millis(7900),
        "the drip took {took:?}"
    );
}

/// Through the engine, on one worker: a step stuck on the dripping server times out at its
/// deadline while its neighbour (no dependency between them) completes at once, and a step
/// whose secret's variable is unset fails permanently naming it; the task ends in error.
async fn a_stuck_step_does_not_hold_up_its_neighbour_on_the_worker<S: Backend>(store: S) {
    let s = TestHttp::start().await;
    let grant = format!("{{http: [{{url: \"{}\"}}]}}", s.http_url(""));
    let yaml = format!(
        "namespace: tests\nname: http_neighbours\nversion: 1.0.0\nsteps:\n\
         \x20 - name: stuck\n    handler: http_probe@0.1.0\n    grants: {grant}\n\
         \x20   retry: {{max_attempts: 1}}\n    limits: {{timeout_ms: 4000}}\n\
         \x20   config: {{url: \"{drip}\"}}\n\
         \x20 - name: quick\n    handler: noop@0.1.0\n\
         \x20 - name: unset\n    handler: http_probe@0.1.0\n\
         \x20   grants: {{http: [{{url: \"{origin}\"}}], secrets: {{K: \"env:TASKER_TEST_HTTP_UNSET_VAR\"}}}}\n\
         \x20   config: {{url: \"{echo}\", headers: {{authorization: \"{{{{secret:K}}}}\"}}}}\n",
        drip = s.http_url("/drip"),
        origin = s.http_url(""),
        echo = s.http_url("/echo"),
    );
    let template = Template::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let any = Arc::new(store.any());
    any.register_template(&template).await.unwrap();
    let stop = CancellationToken::new();
    let node = tasker_runtime::Node::wasm(any.clone(), sandbox(), worker_config("http"))
        .start(stop.clone());
    let task = any
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id;
    wait_until_done(&store, &[task], Duration::from_secs(120)).await;
    stop.cancel();
    node.join().await;

    assert_eq!(
        any.task(task).await.unwrap().unwrap().state,
        TaskState::Error
    );
    let steps = any.steps_of_task(task).await.unwrap();
    let step = |name: &str| steps.iter().find(|st| st.name == name).unwrap();
    let (stuck, quick, unset) = (step("stuck"), step("quick"), step("unset"));
    assert_eq!(quick.state, StepState::Complete, "{quick:?}");
    assert_eq!(stuck.state, StepState::Error, "{stuck:?}");
    assert_eq!(stuck.last_error_kind, Some(ErrorKind::Timeout), "{stuck:?}");
    let (q, st) = (quick.finished_at.unwrap(), stuck.finished_at.unwrap());
    assert!(
        st - q >= chrono::Duration::seconds(2),
        "the neighbour finished at {q}, the stuck step at {st}"
    );
    assert_eq!(unset.state, StepState::Error, "{unset:?}");
    let attempts = any.attempts_of_step(unset.id).await.unwrap();
    let message = attempts[0].message.clone().unwrap_or_default();
    assert!(
        message.contains("TASKER_TEST_HTTP_UNSET_VAR"),
        "{:?}: {message}",
        attempts[0].error_kind
    );
    assert_eq!(unset.attempts, 1, "a missing secret is not retried");
    assert_eq!(s.count_path("/echo"), 0);
    assert_eq!(s.count_path("/drip"), 1);
}

on_both_backends!(a_stuck_step_does_not_hold_up_its_neighbour_on_the_worker);
