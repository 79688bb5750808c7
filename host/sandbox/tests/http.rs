//! Outbound HTTP in the sandbox, against a minimal loopback server in this process: a
//! granted request is sent and recorded; ungranted ones and names resolving to loopback
//! are refused before any connection; a component of the 0.1.0 WIT still loads. The full
//! matrix (HTTPS, limits, secrets through the engine, every language) is in `tests/http`.

mod common;

use std::io::{Read, Write};
use std::net::TcpListener;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use common::{request, run_err, run_ok, sandbox};
use serde_json::json;
use tasker_sandbox::{AttemptGrants, AttemptLimits, HttpRule};

/// Answers every connection with one small response; counts connections.
fn server() -> (u16, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = l.local_addr().unwrap().port();
    let seen = Arc::new(AtomicUsize::new(0));
    let count = seen.clone();
    std::thread::spawn(move || {
        for conn in l.incoming() {
            let Ok(mut c) = conn else { continue };
            count.fetch_add(1, Ordering::SeqCst);
            std::thread::spawn(move || {
                let mut buf = [0u8; 4096];
                let mut got = Vec::new();
                while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                    match c.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => got.extend_from_slice(&buf[..n]),
                    }
                }
                let body = b"{\"hello\":\"guest\"}";
                let _ = write!(
                    c,
                    "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
                    body.len()
                );
                let _ = c.write_all(body);
            });
        }
    });
    (port, seen)
}

fn grant(url: &str, methods: &[&str], paths: &[&str]) -> AttemptGrants {
    AttemptGrants {
        http: vec![HttpRule {
            url: url.into(),
            methods: methods.iter().map(|s| s.to_string()).collect(),
            paths: paths.iter().map(|s| s.to_string()).collect(),
        }],
        ..AttemptGrants::default()
    }
}

#[tokio::test]
async fn a_granted_request_is_sent_and_recorded() {
    let (port, seen) = server();
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": format!("http://127.0.0.1:{port}/v1/items?secret=q") }),
            AttemptLimits::default(),
            grant(&format!("http://127.0.0.1:{port}"), &["GET"], &["/v1/*"]),
        ),
    )
    .await;
    assert_eq!(out.output["status"], 200, "{}", out.output);
    assert!(out.output["body"].as_str().unwrap().contains("guest"));
    assert_eq!(seen.load(Ordering::SeqCst), 1);
    let rec = &out.report.http;
    assert_eq!(rec.len(), 1, "{rec:?}");
    assert_eq!(
        (rec[0].method.as_str(), rec[0].url.clone(), rec[0].status),
        (
            "GET",
            format!("http://127.0.0.1:{port}/v1/items"),
            Some(200)
        )
    );
    assert!(!rec[0].refused && rec[0].response_bytes == 17, "{rec:?}");
    assert!(out.report.denials.is_empty(), "{:?}", out.report.denials);
}

#[tokio::test]
async fn ungranted_requests_are_refused_before_any_connection() {
    let (port, seen) = server();
    let base = format!("http://127.0.0.1:{port}");
    let cases = [
        // Another port: another origin.
        (
            format!("http://127.0.0.1:{}/v1/x", port.wrapping_add(1).max(1)),
            "GET",
            "no http grant names",
        ),
        (format!("{base}/v1/x"), "POST", "do not allow POST"),
        (
            format!("{base}/admin"),
            "GET",
            "do not allow the path /admin",
        ),
        (format!("{base}/v1/../admin"), "GET", ". or .. segment"),
    ];
    for (url, method, why) in cases {
        let f = run_err(
            sandbox(),
            request(
                "http_probe",
                json!({ "url": url, "method": method }),
                AttemptLimits::default(),
                grant(&base, &["GET"], &["/v1/*"]),
            ),
        )
        .await;
        assert_eq!(f.kind(), "capability_denied", "{method} {url}: {}", f.error);
        let d = &f.report.denials[0];
        assert_eq!(d.capability, "http");
        assert!(d.detail.contains(why), "{method} {url}: {}", d.detail);
        assert!(
            d.detail.contains("a grant that would allow it"),
            "{}",
            d.detail
        );
        assert!(f.report.http[0].refused, "{:?}", f.report.http);
    }
    assert_eq!(
        seen.load(Ordering::SeqCst),
        0,
        "a refused request connected"
    );
}

#[tokio::test]
async fn a_name_resolving_to_loopback_is_refused() {
    let (port, seen) = server();
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": format!("http://localhost:{port}/") }),
            AttemptLimits::default(),
            grant(&format!("http://localhost:{port}"), &[], &[]),
        ),
    )
    .await;
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
    assert!(
        f.report.denials[0].detail.contains("loopback"),
        "{:?}",
        f.report.denials
    );
    assert!(
        f.error.to_string().contains("DestinationIpProhibited"),
        "{}",
        f.error
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_step_without_an_http_grant_gets_nothing() {
    let (port, seen) = server();
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": format!("http://127.0.0.1:{port}/") }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
    assert!(
        f.report.denials[0].detail.contains("no http grant"),
        "{:?}",
        f.report.denials
    );
    assert_eq!(seen.load(Ordering::SeqCst), 0);
}

#[tokio::test]
async fn a_missing_secret_is_a_config_error_naming_it() {
    let mut g = grant("https://api.test", &[], &[]);
    g.secrets
        .insert("KEY".into(), "env:TASKER_TEST_SURELY_UNSET_VAR".into());
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": "https://api.test/" }),
            AttemptLimits::default(),
            g,
        ),
    )
    .await;
    assert_eq!(f.kind(), "config");
    assert!(
        f.error.to_string().contains("TASKER_TEST_SURELY_UNSET_VAR"),
        "{}",
        f.error
    );
}

/// Built against the frozen `tasker:plugin@0.1.0` WIT (plugins/legacy_wit_010/wit): the
/// 0.1.1 host still instantiates and calls it.
#[tokio::test]
async fn a_component_of_the_previous_minor_version_still_runs() {
    let out = run_ok(
        sandbox(),
        request(
            "legacy_wit_010",
            json!({ "n": 1 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(out.output["legacy"], true, "{}", out.output);
}
