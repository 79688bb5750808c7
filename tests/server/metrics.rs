//! `GET /metrics`: the Prometheus exposition of a server running workers, with the step
//! counters and duration histogram of the tasks it ran (labelled by template, step and
//! handler), the failures by kind with their retry decisions, the store's queue gauges and
//! store call latencies.

use std::time::Duration;

use reqwest::{Method, StatusCode};
use serde_json::json;
use tasker_tests::Backend;
use tasker_tests::on_both_backends;
use tasker_tests::server::{TestServer, With};

on_both_backends!(metrics_count_what_the_workers_ran);

/// The sum of a metric's samples whose labels include every `label="value"` given.
fn sum(text: &str, metric: &str, labels: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| {
            let (name_labels, value) = l.rsplit_once(' ')?;
            let (name, rest) = match name_labels.split_once('{') {
                Some((n, r)) => (n, r),
                None => (name_labels, ""),
            };
            (name == metric
                && labels
                    .iter()
                    .all(|(k, v)| rest.contains(&format!("{k}=\"{v}\""))))
            .then(|| value.parse::<f64>().ok())?
        })
        .sum()
}

async fn metrics_count_what_the_workers_ran<S: Backend>(store: S) {
    let backend = store.any().backend();
    let srv = TestServer::start(store.any(), With::Workers).await;
    // Names of their own: the recorder is the process's, shared by every test in it.
    let chain = format!("metered_{backend}");
    let failing = format!("metered_failing_{backend}");
    srv.register(&crate::CHAIN.replace("name: chain", &format!("name: {chain}")))
        .await;
    let retrying = format!(
        "namespace: api\nname: {failing}\nversion: 1.0.0\nsteps:\n  - name: only\n    handler: fail@0.1.0\n    config: {{ mode: retryable }}\n    retry: {{ max_attempts: 2, backoff: {{ base_ms: 10, jitter: 0 }} }}\n"
    );
    srv.register(&retrying).await;
    for (t, ctx) in [(&chain, json!({"customer_id": 1})), (&failing, json!({}))] {
        let a = srv
            .post(
                "/v1/tasks",
                &json!({"template": format!("api/{t}@1.0.0"), "context": ctx}),
            )
            .await;
        assert_eq!(a.status, StatusCode::CREATED, "{a:?}");
        let id = a.body["id"].as_i64().unwrap();
        srv.wait_for(&format!("/v1/tasks/{id}"), Duration::from_secs(120), |t| {
            t["state"] == "complete" || t["state"] == "error"
        })
        .await;
    }

    let res = reqwest::Client::new()
        .get(format!("{}/metrics", srv.base))
        .bearer_auth(&srv.admin)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), StatusCode::OK);
    let ct = res.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(ct.starts_with("text/plain; version=0.0.4"), "{ct}");
    let text = res.text().await.unwrap();

    let key = format!("api/{chain}@1.0.0");
    let of_chain = [("template", key.as_str()), ("handler", "echo@0.1.0")];
    assert_eq!(
        sum(&text, "tasker_steps_started_total", &of_chain),
        3.0,
        "{text}"
    );
    assert_eq!(sum(&text, "tasker_steps_completed_total", &of_chain), 3.0);
    let step_b = [("template", key.as_str()), ("step", "b")];
    assert_eq!(sum(&text, "tasker_steps_completed_total", &step_b), 1.0);
    let completed = [("template", key.as_str()), ("outcome", "completed")];
    assert_eq!(
        sum(&text, "tasker_step_duration_seconds_count", &completed),
        3.0
    );
    let all_buckets = [("template", key.as_str()), ("le", "+Inf")];
    assert_eq!(
        sum(&text, "tasker_step_duration_seconds_bucket", &all_buckets),
        3.0
    );
    assert!(sum(&text, "tasker_sandbox_fuel_consumed_count", &of_chain) == 3.0);

    // Two attempts of the failing step: both failed as handler errors, one retried, then
    // the step was exhausted.
    let fkey = format!("api/{failing}@1.0.0");
    let of_failing = [("template", fkey.as_str())];
    let kind = [("template", fkey.as_str()), ("kind", "handler_error")];
    assert_eq!(
        sum(&text, "tasker_steps_failed_total", &kind),
        2.0,
        "{text}"
    );
    assert_eq!(sum(&text, "tasker_steps_retried_total", &of_failing), 1.0);
    assert_eq!(sum(&text, "tasker_steps_exhausted_total", &of_failing), 1.0);
    assert_eq!(sum(&text, "tasker_steps_completed_total", &of_failing), 0.0);

    // The store's side: the queue sampled at scrape, and call latencies by operation.
    for state in ["ready", "waiting_for_retry", "in_progress"] {
        assert!(
            text.contains(&format!("tasker_queue_steps{{state=\"{state}\"}}")),
            "{state}: {text}"
        );
    }
    assert!(
        text.contains("tasker_queue_oldest_ready_age_seconds "),
        "{text}"
    );
    let create = [("op", "create_task"), ("backend", backend)];
    assert!(sum(&text, "tasker_store_call_seconds_count", &create) >= 2.0);
    assert!(text.contains("# HELP tasker_steps_completed_total Step attempts that succeeded"));
    assert!(text.contains("# TYPE tasker_step_duration_seconds histogram"));
    assert!(
        !text.contains("task_id") && !text.contains("step_id"),
        "no unbounded labels"
    );

    // Every metric exported is in the catalogue, with its kind.
    for line in text.lines().filter(|l| l.starts_with("# TYPE ")) {
        let mut parts = line["# TYPE ".len()..].split(' ');
        let (name, kind) = (parts.next().unwrap(), parts.next().unwrap());
        let m = tasker_core::metrics::find(name)
            .unwrap_or_else(|| panic!("{name} is not in tasker_core::metrics::CATALOGUE"));
        assert_eq!(format!("{:?}", m.kind).to_lowercase(), kind, "{name}");
    }

    // The route needs metrics:read.
    let a = srv.call(Method::GET, "/metrics", None, None).await;
    assert_eq!(a.status, StatusCode::UNAUTHORIZED);
    srv.stop().await;
}
