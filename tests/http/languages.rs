//! A granted request from each guest language's SDK: Python (`tasker_sdk.http`) and
//! JavaScript (`fetch`); both get the response, the server saw it, and the host recorded
//! it; an ungranted one is `capability_denied` there too. (Rust: the `grants` module.)

use serde_json::{Value, json};
use tasker_sandbox::AttemptLimits;
use tasker_tests::http_server::TestHttp;

use crate::*;

async fn a_granted_get_and_a_refusal(plugin: &str) {
    let s = TestHttp::start().await;
    let g = || grants(vec![rule(&s.http_url(""), &["GET", "POST"], &["/echo"])]);
    let out = run_ok(
        polyglot_sandbox(),
        request(
            plugin,
            json!({ "url": s.http_url("/echo?lang=1"), "headers": { "x-lang": plugin } }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_eq!(out.output["status"], 200, "{plugin}: {}", out.output);
    let echo: Value = serde_json::from_str(out.output["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&echo["method"], &echo["query"], &echo["headers"]["x-lang"]),
        (&json!("GET"), &json!("lang=1"), &json!(plugin)),
        "{plugin}"
    );
    assert_eq!(s.headers_seen("x-lang"), vec![plugin.to_string()]);
    let r = only_record(&out.report.http);
    assert_eq!(
        (r.method.as_str(), r.url.clone(), r.status, r.refused),
        ("GET", s.http_url("/echo"), Some(200), false),
        "{plugin}"
    );

    // A POST with a body, over HTTPS.
    let tls = grants(vec![rule(&s.https_url(""), &[], &[])]);
    let out = run_ok(
        polyglot_sandbox(),
        request(
            plugin,
            json!({ "method": "POST", "url": s.https_url("/echo"), "body": "from the guest" }),
            AttemptLimits::default(),
            tls,
        ),
    )
    .await;
    let echo: Value = serde_json::from_str(out.output["body"].as_str().unwrap()).unwrap();
    assert_eq!(echo["body"], "from the guest", "{plugin}");
    assert!(s.requests()[1].tls);

    let f = run_err(
        polyglot_sandbox(),
        request(
            plugin,
            json!({ "url": s.http_url("/bytes/10") }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert_http_denial(&f, &[&s.http_url("/bytes/10"), "the path /bytes/10"]);
    assert_eq!(
        s.count(),
        2,
        "{plugin}: the refused request never reached the server"
    );

    // A body cut by the request's own timeout: the SDK's error, retryable, not a trap.
    let f = run_err(
        polyglot_sandbox(),
        request(
            plugin,
            json!({ "url": s.http_url("/drip") }),
            AttemptLimits {
                http_timeout_ms: Some(1000),
                timeout_ms: Some(20_000),
                ..AttemptLimits::default()
            },
            grants(vec![rule(&s.http_url(""), &[], &[])]),
        ),
    )
    .await;
    assert_kind(&f, "handler_error");
    assert!(f.is_retryable(), "{plugin}: {}", f.error);
    assert_eq!(s.count_path("/drip"), 1);
}

#[tokio::test]
async fn python_makes_a_granted_request() {
    a_granted_get_and_a_refusal("http_py").await;
}

#[tokio::test]
async fn javascript_makes_a_granted_request() {
    a_granted_get_and_a_refusal("http_js").await;
}
