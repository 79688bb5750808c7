//! 1,000 concurrent attempts, good and hostile mixed, on a 2-thread runtime.

mod common;

use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tasker_sandbox::{AttemptGrants, AttemptLimits};

const LOOP_DEADLINE_MS: u64 = 3_000;

/// (plugin, config, limits, expected kind or None for success)
fn case(
    i: usize,
) -> (
    &'static str,
    serde_json::Value,
    AttemptLimits,
    Option<&'static str>,
) {
    let d = AttemptLimits::default();
    match i % 10 {
        // Spins with a budget it cannot exhaust: only the 3 s deadline stops it.
        0 => (
            "hostile_loop",
            json!({}),
            AttemptLimits {
                timeout_ms: Some(LOOP_DEADLINE_MS),
                fuel: Some(100_000_000_000),
                ..d
            },
            Some("timeout"),
        ),
        1 => (
            "hostile_memory",
            json!({}),
            AttemptLimits {
                memory_bytes: Some(16 << 20),
                ..d
            },
            Some("out_of_memory"),
        ),
        2 => ("hostile_panic", json!({}), d, Some("trap")),
        3 => (
            "hostile_net",
            json!({ "addr": "127.0.0.1:9" }),
            d,
            Some("capability_denied"),
        ),
        4 => (
            "hostile_loop",
            json!({}),
            AttemptLimits {
                fuel: Some(2_000_000),
                ..d
            },
            Some("out_of_fuel"),
        ),
        5 => ("hostile_not_json", json!({}), d, Some("bad_output")),
        6 | 7 => ("noop", json!({}), d, None),
        _ => ("echo", json!({ "i": i }), d, None),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn thousand_mixed_attempts_on_two_threads() {
    let sb = sandbox();
    // Compile before the clock: first-use compiles are not what this measures.
    let _ = sb.registry().load_all().await;
    let start = Instant::now();
    let mut tasks = Vec::new();
    for i in 0..1000 {
        let (plugin, config, limits, expect) = case(i);
        let req = request(plugin, config, limits, AttemptGrants::default());
        tasks.push(tokio::spawn(async move {
            let res = sb.run(req).await;
            (i, plugin, expect, res, start.elapsed())
        }));
    }
    let (mut good, mut hostile) = (0, 0);
    let mut slowest_good = Duration::ZERO;
    let mut slowest_timeout = Duration::ZERO;
    for t in tasks {
        let (i, plugin, expect, res, finished) = t.await.unwrap();
        match (expect, res) {
            (None, Ok(out)) => {
                good += 1;
                slowest_good = slowest_good.max(finished);
                if plugin == "echo" {
                    assert_eq!(out.output["config"], json!({ "i": i }));
                }
            }
            (Some(kind), Err(f)) => {
                hostile += 1;
                assert_eq!(f.kind(), kind, "attempt {i} ({plugin}): {}", f.error);
                if kind == "timeout" {
                    slowest_timeout = slowest_timeout.max(finished);
                }
            }
            (None, Err(f)) => panic!(
                "good attempt {i} ({plugin}) failed: {} {}",
                f.kind(),
                f.error
            ),
            (Some(kind), Ok(o)) => panic!(
                "hostile attempt {i} ({plugin}) succeeded, expected {kind}: {}",
                o.output
            ),
        }
    }
    assert_eq!((good, hostile), (400, 600));
    // 100 guests spin until their 3 s deadline on the same two worker threads. If they
    // did not yield, they would hold both workers and the good attempts (and the tokio
    // timers) would wait for those deadlines. They must instead finish well inside the
    // spinners' deadline, and every deadline must fire close to when it is due.
    assert!(
        slowest_good < Duration::from_millis(LOOP_DEADLINE_MS / 2),
        "slowest good attempt finished after {slowest_good:?}: starved by spinning guests"
    );
    assert!(
        slowest_timeout < Duration::from_millis(LOOP_DEADLINE_MS + 2_000),
        "slowest timeout fired after {slowest_timeout:?}"
    );
    eprintln!(
        "1000 attempts: slowest good {slowest_good:?}, slowest timeout {slowest_timeout:?}, total {:?}",
        start.elapsed()
    );
    assert_good_still_runs(sb).await;
}
