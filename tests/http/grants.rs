//! What `grants.http` lets through: granted requests over HTTP and HTTPS reach the server
//! and are recorded; an ungranted host, method or path, a name resolving to loopback and a
//! redirect to an ungranted host are refused before any connection, as `capability_denied`.

use serde_json::json;
use tasker_sandbox::AttemptLimits;
use tasker_tests::http_server::TestHttp;

use crate::*;

#[tokio::test]
async fn a_granted_get_and_post_reach_the_server_and_are_recorded() {
    let s = TestHttp::start().await;
    let origin = s.http_url("");
    let g = || grants(vec![rule(&origin, &["GET", "POST"], &["/echo*"])]);

    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/echo?order=42"), "headers": { "x-step": "call" } }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_eq!(out.output["status"], 200, "{}", out.output);
    let echoed: serde_json::Value =
        serde_json::from_str(out.output["body"].as_str().unwrap()).unwrap();
    assert_eq!(echoed["method"], "GET");
    assert_eq!(echoed["query"], "order=42");
    assert_eq!(echoed["headers"]["x-step"], "call");
    let seen = s.requests();
    assert_eq!(seen.len(), 1);
    assert_eq!(
        (seen[0].method.as_str(), seen[0].path.as_str()),
        ("GET", "/echo")
    );
    let r = only_record(&out.report.http);
    assert_eq!(r.method, "GET");
    assert_eq!(r.url, s.http_url("/echo"), "the query is not recorded");
    assert_eq!(r.status, Some(200));
    assert!(!r.refused && r.error.is_none(), "{r:?}");
    assert_eq!(r.response_bytes, out.output["bytes"].as_u64().unwrap());
    assert!(r.response_bytes > 0 && r.request_bytes == 0, "{r:?}");
    assert!(out.report.denials.is_empty(), "{:?}", out.report.denials);

    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "method": "POST", "url": s.http_url("/echo"), "body": "charge 42" }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    let echoed: serde_json::Value =
        serde_json::from_str(out.output["body"].as_str().unwrap()).unwrap();
    assert_eq!(
        (&echoed["method"], &echoed["body"]),
        (&json!("POST"), &json!("charge 42"))
    );
    let r = only_record(&out.report.http);
    assert_eq!(
        (r.method.as_str(), r.status, r.request_bytes, r.refused),
        ("POST", Some(200), 9, false)
    );
    assert_eq!(s.count(), 2);
}

/// Hyper drops a request body once its declared length is sent; a guest that flushes and
/// finishes it after that (a busy host can deschedule a guest between its write and its
/// flush) must not see a closed stream. This broke a real POST to a `Connection: close` API.
#[tokio::test]
async fn a_body_finished_after_the_response_arrived_is_not_an_error() {
    let s = TestHttp::start().await;
    let g = grants(vec![rule(&s.http_url(""), &["POST"], &["/echo*"])]);
    for bytes in [9, 100_000] {
        let out = run_ok(
            sandbox(),
            request(
                "http_probe",
                json!({
                    "method": "POST",
                    "url": s.http_url("/echo"),
                    "body_bytes": bytes,
                    "finish_after_response": true,
                }),
                AttemptLimits::default(),
                g.clone(),
            ),
        )
        .await;
        assert_eq!(
            (&out.output["status"], &out.output["finish"]),
            (&json!(200), &json!("ok")),
            "{bytes} bytes: {}",
            out.output
        );
        let r = out.report.http.last().expect("a record");
        assert_eq!((r.status, r.request_bytes), (Some(200), bytes), "{r:?}");
    }
}

#[tokio::test]
async fn https_with_the_extra_ca_works_and_without_it_fails() {
    let s = TestHttp::start().await;
    let g = || grants(vec![rule(&s.https_url(""), &[], &[])]);
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.https_url("/echo") }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_eq!(out.output["status"], 200, "{}", out.output);
    assert!(s.requests()[0].tls, "came over TLS");
    let r = only_record(&out.report.http);
    assert_eq!((r.url.clone(), r.status), (s.https_url("/echo"), Some(200)));

    // Default roots: the test CA is unknown, the handshake fails, no request is made.
    let f = run_err(
        sandbox_without_ca(),
        request(
            "http_probe",
            json!({ "url": s.https_url("/echo") }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_kind(&f, "handler_error");
    assert!(f.error.to_string().contains("Tls"), "{}", f.error);
    assert_eq!(s.count(), 1, "only the trusted request reached the server");
    let r = only_record(&f.report.http);
    assert!(
        !r.refused && r.status.is_none() && r.error.is_some(),
        "{r:?}"
    );
}

/// Each case is refused before any connection, with the URL (no query) recorded.
#[tokio::test]
async fn an_ungranted_host_method_or_path_is_refused_before_any_connection() {
    let s = TestHttp::start().await;
    let other = TestHttp::start().await;
    let granted = grants(vec![rule(&s.http_url(""), &["GET"], &["/echo*"])]);
    let cases = [
        // Another origin: the same IP, another port.
        ("GET", other.http_url("/echo"), "no http grant"),
        (
            "GET",
            "http://api.tasker.test/echo".to_string(),
            "no http grant",
        ),
        ("POST", s.http_url("/echo"), "POST"),
        ("DELETE", s.http_url("/echo/1"), "DELETE"),
        ("GET", s.http_url("/bytes/10"), "/bytes/10"),
    ];
    for (method, url, why) in cases {
        let f = run_err(
            sandbox(),
            request(
                "http_probe",
                json!({ "method": method, "url": format!("{url}?q=1") }),
                AttemptLimits::default(),
                granted.clone(),
            ),
        )
        .await;
        assert_kind(&f, "capability_denied");
        assert!(
            f.error.to_string().contains("HttpRequestDenied"),
            "{method} {url}: {}",
            f.error
        );
        assert_http_denial(&f, &[method, &url, why, "a grant that would allow it"]);
        let r = only_record(&f.report.http);
        assert!(r.refused && r.status.is_none(), "{method} {url}: {r:?}");
        assert_eq!((r.method.as_str(), r.url.as_str()), (method, url.as_str()));
    }
    assert_eq!(
        (s.count(), s.connections(), other.connections()),
        (0, 0, 0),
        "a refused request connected"
    );
}

/// `localhost` resolves to 127.0.0.1: granted by name, it is still refused, since only a
/// rule naming the IP itself reaches loopback.
#[tokio::test]
async fn a_name_resolving_to_a_private_address_is_refused() {
    let s = TestHttp::start().await;
    let url = format!("http://localhost:{}/echo", s.port());
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": url }),
            AttemptLimits::default(),
            grants(vec![rule(
                &format!("http://localhost:{}", s.port()),
                &[],
                &[],
            )]),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert!(
        f.error.to_string().contains("DestinationIpProhibited"),
        "{}",
        f.error
    );
    assert_http_denial(&f, &[&url, "loopback"]);
    assert!(only_record(&f.report.http).refused);
    assert_eq!((s.count(), s.connections()), (0, 0));
}

#[tokio::test]
async fn a_redirect_is_seen_by_the_guest_and_its_target_is_checked() {
    let s = TestHttp::start().await;
    let g = || grants(vec![rule(&s.http_url(""), &[], &[])]);
    let target = format!("http://api.tasker.test:{}/echo", s.port());
    let url = s.http_url(&format!("/redirect?to={target}"));

    // Not followed: the host hands the 302 to the guest as it is.
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": url }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_eq!(out.output["status"], 302, "{}", out.output);
    assert_eq!(out.output["headers"]["location"], target.as_str());
    assert_eq!(only_record(&out.report.http).status, Some(302));
    assert_eq!(s.count(), 1);

    // Followed by the guest: the target is another host, refused like any request.
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": url, "follow_redirects": 1 }),
            AttemptLimits::default(),
            g(),
        ),
    )
    .await;
    assert_kind(&f, "capability_denied");
    assert_http_denial(&f, &[&target, "no http grant"]);
    let recs = &f.report.http;
    assert_eq!(recs.len(), 2, "{recs:?}");
    assert_eq!((recs[0].status, recs[0].refused), (Some(302), false));
    assert_eq!(
        (recs[1].url.as_str(), recs[1].refused),
        (target.as_str(), true)
    );
    assert_eq!(s.count_path("/redirect"), 2);
    assert_eq!(
        s.count_path("/echo"),
        0,
        "the redirect target was never asked"
    );
}
