//! One test per attack: each asserts the exact error kind, then that a well-behaved
//! plugin still runs in the same process.

mod common;

use common::*;
use serde_json::json;
use tasker_sandbox::{AttemptGrants, AttemptLimits, HostDir, SandboxConfig, SandboxError};

fn limits() -> AttemptLimits {
    AttemptLimits::default()
}

#[tokio::test]
async fn infinite_loop_times_out() {
    let sb = sandbox();
    // A budget far beyond what 300 ms can burn: the deadline must stop it.
    let l = AttemptLimits {
        timeout_ms: Some(300),
        fuel: Some(100_000_000_000),
        ..limits()
    };
    let f = run_err(
        sb,
        request("hostile_loop", json!({}), l, AttemptGrants::default()),
    )
    .await;
    assert_eq!(f.kind(), "timeout", "{}", f.error);
    assert!(f.is_retryable());
    let wall = f.report.accounting.wall_time_us;
    assert!(
        (300_000..5_000_000).contains(&wall),
        "deadline 300 ms, took {wall} µs"
    );
    assert!(
        f.report.accounting.fuel_consumed > 1_000_000,
        "a spinning guest burns fuel: {:?}",
        f.report.accounting
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn infinite_loop_runs_out_of_fuel() {
    let sb = sandbox();
    let l = AttemptLimits {
        fuel: Some(5_000_000),
        timeout_ms: Some(20_000),
        ..limits()
    };
    let f = run_err(
        sb,
        request("hostile_loop", json!({}), l, AttemptGrants::default()),
    )
    .await;
    assert_eq!(f.kind(), "out_of_fuel", "{}", f.error);
    assert!(!f.is_retryable());
    assert_eq!(f.report.accounting.fuel_consumed, 5_000_000);
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn memory_bomb_is_out_of_memory() {
    let sb = sandbox();
    let l = AttemptLimits {
        memory_bytes: Some(32 << 20),
        ..limits()
    };
    let f = run_err(
        sb,
        request("hostile_memory", json!({}), l, AttemptGrants::default()),
    )
    .await;
    assert_eq!(f.kind(), "out_of_memory", "{}", f.error);
    match &f.error {
        SandboxError::OutOfMemory {
            requested_bytes,
            limit_bytes,
        } => {
            assert_eq!(*limit_bytes, 32 << 20);
            assert!(*requested_bytes > 32 << 20);
        }
        other => panic!("{other:?}"),
    }
    let peak = f.report.accounting.peak_memory_bytes;
    assert!(peak > 16 << 20 && peak <= 32 << 20, "peak {peak}");
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn deep_recursion_traps() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "hostile_recursion",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "trap", "{}", f.error);
    let SandboxError::Trap { trap_code, .. } = &f.error else {
        unreachable!()
    };
    assert_eq!(trap_code.as_deref(), Some("StackOverflow"), "{}", f.error);
    assert!(
        f.error.to_string().contains("call stack exhausted"),
        "{}",
        f.error
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn panic_is_a_trap_with_its_message() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "hostile_panic",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "trap", "{}", f.error);
    assert!(f.is_retryable());
    let SandboxError::Trap { message, .. } = &f.error else {
        unreachable!()
    };
    assert!(
        message.contains("boom: the guest gave up on attempt 1"),
        "message: {message}"
    );
    assert_good_still_runs(sb).await;
}

fn input_dir() -> tempfile::TempDir {
    let root = tempfile::tempdir().unwrap();
    std::fs::create_dir(root.path().join("input")).unwrap();
    std::fs::write(root.path().join("input/a.txt"), "one two three").unwrap();
    std::fs::write(root.path().join("secret.txt"), "the host's secret").unwrap();
    root
}

fn ro_input(root: &tempfile::TempDir) -> AttemptGrants {
    AttemptGrants {
        dirs: vec![HostDir {
            host: root.path().join("input"),
            guest: "/input".into(),
            writable: false,
        }],
        ..AttemptGrants::default()
    }
}

/// The first denial the host recorded, asserting the attempt is `capability_denied` as
/// the host saw it.
fn host_denial(f: &tasker_sandbox::AttemptFailure) -> String {
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
    assert!(!f.is_retryable());
    let SandboxError::CapabilityDenied {
        detected_by, what, ..
    } = &f.error
    else {
        unreachable!()
    };
    assert_eq!(detected_by, "host");
    assert!(!f.report.denials.is_empty());
    what.clone()
}

#[tokio::test]
async fn escaping_a_grant_is_denied_by_the_host() {
    let sb = sandbox();
    let root = input_dir();
    // The guest's libc hands `../secret.txt` to the /input preopen; cap-std refuses it.
    let f = run_err(
        sb,
        request(
            "hostile_read_outside",
            json!({ "paths": ["/input/../secret.txt"] }),
            limits(),
            ro_input(&root),
        ),
    )
    .await;
    let what = host_denial(&f);
    assert!(what.contains("secret.txt"), "{what}");
    assert!(!f.error.to_string().contains("the host's secret"));
    // The grant itself works.
    let out = run_ok(
        sb,
        request(
            "hostile_read_outside",
            json!({ "paths": ["/input/a.txt"] }),
            limits(),
            ro_input(&root),
        ),
    )
    .await;
    assert_eq!(out.output, json!(["one two three"]));
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn a_harmless_enoent_message_is_not_a_denial() {
    let sb = sandbox();
    let root = input_dir();
    // A path outside every preopen fails inside the guest's libc with ENOENT: the host
    // never sees the call, so it is the guest's own error, whatever its message names.
    // (The secret is not reachable either way.)
    for path in ["/etc/passwd", "/input/missing.txt"] {
        let f = run_err(
            sb,
            request(
                "hostile_read_outside",
                json!({ "paths": [path] }),
                limits(),
                ro_input(&root),
            ),
        )
        .await;
        assert_eq!(f.kind(), "handler_error", "{path}: {}", f.error);
        assert!(
            f.error.to_string().contains("No such file or directory"),
            "{}",
            f.error
        );
        assert!(f.report.denials.is_empty(), "{:?}", f.report.denials);
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn writing_to_a_read_only_grant_is_denied() {
    let sb = sandbox();
    let root = input_dir();
    let f = run_err(
        sb,
        request(
            "hostile_write_ro",
            json!({ "path": "/input/new.txt" }),
            limits(),
            ro_input(&root),
        ),
    )
    .await;
    let what = host_denial(&f);
    assert!(what.contains("new.txt"), "{what}");
    assert!(!root.path().join("input/new.txt").exists());
    // Writable grant: the same plugin succeeds.
    let mut g = ro_input(&root);
    g.dirs[0].writable = true;
    let out = run_ok(
        sb,
        request(
            "hostile_write_ro",
            json!({ "path": "/input/new.txt" }),
            limits(),
            g,
        ),
    )
    .await;
    assert_eq!(out.output, json!("written"));
    assert_eq!(
        std::fs::read_to_string(root.path().join("input/new.txt")).unwrap(),
        "defaced"
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn an_ungranted_env_var_is_absent_not_a_denial() {
    let sb = sandbox();
    // PATH exists on the host; it must not leak into a guest without a grant. An ungranted
    // variable is simply absent: the host cannot see the guest look, so the SDK's
    // "capability denied" wording is the guest's own (permanent) error.
    let f = run_err(
        sb,
        request(
            "hostile_env",
            json!({ "var": "PATH" }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "handler_error", "{}", f.error);
    assert!(!f.is_retryable());
    assert!(f.report.denials.is_empty());
    assert!(!f.error.to_string().contains("/usr"), "{}", f.error);
    // Granted by name (inherited) and by value.
    let g = AttemptGrants {
        env: vec!["PATH".into()],
        env_values: [("GREETING".to_string(), "hi".to_string())].into(),
        ..AttemptGrants::default()
    };
    let out = run_ok(
        sb,
        request("hostile_env", json!({ "var": "PATH" }), limits(), g.clone()),
    )
    .await;
    assert_eq!(out.output, json!(std::env::var("PATH").unwrap()));
    let out = run_ok(
        sb,
        request("hostile_env", json!({ "var": "GREETING" }), limits(), g),
    )
    .await;
    assert_eq!(out.output, json!("hi"));
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn network_is_denied_by_default_and_recorded_by_the_host() {
    let sb = sandbox();
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // No grant: not even a socket is created.
    let f = run_err(
        sb,
        request(
            "hostile_net",
            json!({ "addr": addr }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    let what = host_denial(&f);
    assert!(what.contains("no network grant"), "{what}");
    assert_eq!(f.report.denials.len(), 1);
    // An allow-listed address connects.
    let g = AttemptGrants {
        net: vec![addr.clone()],
        ..AttemptGrants::default()
    };
    let out = run_ok(
        sb,
        request("hostile_net", json!({ "addr": addr }), limits(), g),
    )
    .await;
    assert!(
        out.output.as_str().unwrap().starts_with("connected"),
        "{}",
        out.output
    );
    // Another port on the same host is still refused, at the address.
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let g = AttemptGrants {
        net: vec![addr],
        ..AttemptGrants::default()
    };
    let f = run_err(
        sb,
        request("hostile_net", json!({ "addr": other }), limits(), g),
    )
    .await;
    let what = host_denial(&f);
    assert!(what.contains(&other), "{what}");
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn huge_output_is_bad_output() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "hostile_huge_output",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "bad_output", "{}", f.error);
    assert!(
        f.error.to_string().contains("over the 1048576 byte cap"),
        "{}",
        f.error
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn non_json_output_is_bad_output() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "hostile_not_json",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "bad_output", "{}", f.error);
    assert!(
        f.error.to_string().contains("not valid JSON"),
        "{}",
        f.error
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn missing_import_is_incompatible() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "hostile_missing_import",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "incompatible", "{}", f.error);
    assert!(
        f.error.to_string().contains("tasker:backdoor/shell"),
        "{}",
        f.error
    );
    assert!(!f.is_retryable());
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn incompatible_wit_version_is_incompatible() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "hostile_wit_version",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "incompatible", "{}", f.error);
    assert!(
        f.error.to_string().contains("step-handler@0.1.1"),
        "{}",
        f.error
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn malformed_wasm_is_a_load_error() {
    let dir = tempfile::tempdir().unwrap();
    // Written at test time: .wasm files are never checked in.
    std::fs::write(
        dir.path().join("broken.wasm"),
        b"\0asm this is not a component",
    )
    .unwrap();
    std::fs::write(dir.path().join("text.wasm"), b"plain text pretending").unwrap();
    std::fs::copy(plugin_file("echo"), dir.path().join("echo.wasm")).unwrap();
    let mut cfg = SandboxConfig::new(dir.path());
    cfg.cache_dir = Some(cache_dir());
    cfg.engine.max_concurrent_attempts = 8;
    let sb = build(cfg);
    let rejected = sb.registry().rejected();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    for (path, e) in &rejected {
        assert_eq!(e.kind(), "load", "{e}");
        assert!(
            e.to_string().contains(&path.display().to_string()),
            "error names the file: {e}"
        );
    }
    let f = run_err(
        &sb,
        request("broken", json!({}), limits(), AttemptGrants::default()),
    )
    .await;
    assert_eq!(f.kind(), "load", "{}", f.error);
    assert_good_still_runs(&sb).await;
}

#[tokio::test]
async fn guest_blocked_in_a_host_call_times_out() {
    let sb = sandbox();
    let l = AttemptLimits {
        timeout_ms: Some(200),
        ..limits()
    };
    let f = run_err(
        sb,
        request("slow", json!({ "ms": 60_000 }), l, AttemptGrants::default()),
    )
    .await;
    assert_eq!(f.kind(), "timeout", "{}", f.error);
    assert!(f.report.accounting.wall_time_us < 5_000_000);
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn handler_errors_keep_their_retryability() {
    let sb = sandbox();
    let f = run_err(
        sb,
        request(
            "fail",
            json!({ "mode": "retryable", "retry_after_ms": 250 }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "handler_error");
    assert!(f.is_retryable());
    assert_eq!(f.error.retry_after_ms(), Some(250));
    let f = run_err(
        sb,
        request(
            "fail",
            json!({ "mode": "permanent" }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "handler_error");
    assert!(!f.is_retryable());
    assert_eq!(
        f.error.to_string(),
        "handler error (permanent): input rejected"
    );
}

#[tokio::test]
async fn good_plugin_reports_accounting_logs_and_events() {
    let sb = sandbox();
    let out = run_ok(
        sb,
        request(
            "echo",
            json!({ "x": 1 }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    let acc = &out.report.accounting;
    let plugin = acc.plugin.as_ref().unwrap();
    assert_eq!(plugin.name, "echo");
    assert_eq!(
        plugin.hash,
        tasker_sandbox::PluginHash::of(&std::fs::read(plugin_file("echo")).unwrap())
    );
    assert!(acc.fuel_consumed > 0 && acc.fuel_consumed < acc.fuel_budget);
    assert!(acc.peak_memory_bytes >= 64 << 10);
    assert!(acc.wall_time_us > 0);
    assert_eq!(out.report.logs.len(), 1);
    assert_eq!(out.report.logs[0].level, "info");
    assert_eq!(out.report.logs[0].message, "echo step attempt 1");
    assert_eq!(out.report.events.len(), 1);
    assert_eq!(out.report.events[0].name, "echoed");
    assert_eq!(out.report.events[0].payload, json!({ "step": "step" }));
    assert_eq!(out.output["task_id"], "task-1");
}

#[tokio::test]
async fn granted_directories_read_and_write() {
    let sb = sandbox();
    let root = input_dir();
    std::fs::write(root.path().join("input/b.txt"), "four five").unwrap();
    let out_dir = tempfile::tempdir().unwrap();
    let g = AttemptGrants {
        dirs: vec![
            HostDir {
                host: root.path().join("input"),
                guest: "/input".into(),
                writable: false,
            },
            HostDir {
                host: out_dir.path().to_path_buf(),
                guest: "/output".into(),
                writable: true,
            },
        ],
        ..AttemptGrants::default()
    };
    let out = run_ok(
        sb,
        request(
            "wordcount",
            json!({ "input": "/input", "output": "/output" }),
            limits(),
            g,
        ),
    )
    .await;
    assert_eq!(
        out.output,
        json!({ "files": { "a.txt": 3, "b.txt": 2 }, "total": 5 })
    );
    let report: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out_dir.path().join("report.json")).unwrap())
            .unwrap();
    assert_eq!(report["total"], 5);
}

#[tokio::test]
async fn a_missing_granted_directory_is_a_config_error() {
    let sb = sandbox();
    let g = AttemptGrants {
        dirs: vec![HostDir {
            host: "/nonexistent/tasker".into(),
            guest: "/input".into(),
            writable: false,
        }],
        ..AttemptGrants::default()
    };
    let f = run_err(sb, request("echo", json!({}), limits(), g)).await;
    assert_eq!(f.kind(), "config", "{}", f.error);
    assert!(f.error.to_string().contains("/nonexistent/tasker"));
}

#[tokio::test]
async fn captured_output_logs_and_events_are_capped() {
    let sb = sandbox();
    let l = AttemptLimits {
        stdio_bytes: Some(16),
        ..limits()
    };
    let f = run_err(
        sb,
        request("hostile_panic", json!({}), l, AttemptGrants::default()),
    )
    .await;
    assert_eq!(f.kind(), "trap");
    assert!(f.report.stderr.len() <= 16, "{:?}", f.report.stderr);
    assert!(f.report.dropped.stderr_bytes > 0);
    let l = AttemptLimits {
        max_logs: Some(0),
        max_events: Some(0),
        ..limits()
    };
    let out = run_ok(sb, request("echo", json!({}), l, AttemptGrants::default())).await;
    assert!(out.report.logs.is_empty() && out.report.events.is_empty());
    assert_eq!((out.report.dropped.logs, out.report.dropped.events), (1, 1));
}

#[tokio::test]
async fn pooling_falls_back_to_on_demand_when_the_pool_cannot_be_reserved() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_file("noop"), dir.path().join("noop.wasm")).unwrap();
    let mut cfg = SandboxConfig::new(dir.path());
    cfg.cache_dir = Some(cache_dir());
    // 50M slots of 4 GiB reservations each: far beyond a 47-bit address space.
    cfg.engine.max_concurrent_attempts = 50_000_000;
    let sb = build(cfg);
    match sb.engine().allocator() {
        tasker_sandbox::AllocatorInUse::OnDemand { reason } => {
            assert!(reason.contains("pooling"), "{reason}")
        }
        other => panic!("expected the on-demand fallback, got {other:?}"),
    }
    run_ok(
        &sb,
        request("noop", json!({}), limits(), AttemptGrants::default()),
    )
    .await;
}

/// Open descriptors of this process (the host): sockets and files the guests hold.
fn host_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").unwrap().count()
}

/// Poll `cond` until it holds, for up to a minute.
async fn wait_for(what: &str, mut cond: impl FnMut() -> bool) {
    for _ in 0..6000 {
        if cond() {
            return;
        }
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    panic!("gave up waiting for {what}");
}

#[tokio::test]
async fn sockets_without_a_grant_are_refused() {
    let sb = sandbox();
    for proto in ["tcp", "udp"] {
        let f = run_err(
            sb,
            request(
                "hostile_socket_flood",
                json!({ "addr": "127.0.0.1:9", "proto": proto }),
                limits(),
                AttemptGrants::default(),
            ),
        )
        .await;
        let what = host_denial(&f);
        assert!(what.contains("no network grant"), "{proto}: {what}");
        assert!(
            f.error.to_string().contains("opened 0 sockets"),
            "{proto}: {}",
            f.error
        );
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_socket_flood_is_capped_and_good_steps_keep_running() {
    const FLOODS: usize = 8;
    let sb = sandbox();
    let cap = sb.resolve_limits(&limits()).max_sockets as usize;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    // Accept and hold every connection until the test lets go.
    let held = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
    let acceptor = {
        let held = held.clone();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                held.lock().unwrap().push(s);
            }
        })
    };
    let before = host_fds();
    let floods: Vec<_> = (0..FLOODS)
        .map(|_| {
            let req = request(
                "hostile_socket_flood",
                json!({ "addr": addr, "hold": true }),
                AttemptLimits {
                    timeout_ms: Some(120_000),
                    ..limits()
                },
                AttemptGrants {
                    net: vec![addr.clone()],
                    ..AttemptGrants::default()
                },
            );
            tokio::spawn(async move { sb.run(req).await })
        })
        .collect();
    // The worst case: every flood holds as many sockets as it may.
    wait_for("every flood to hold its sockets", || {
        held.lock().unwrap().len() >= FLOODS * cap
    })
    .await;
    // Each connection is two descriptors here (guest side and accepted side); the slack
    // is for the other tests of this binary running meanwhile.
    assert!(
        host_fds() <= before + FLOODS * cap * 2 + 512,
        "{before} -> {}",
        host_fds()
    );
    // Meanwhile well-behaved attempts run and complete.
    let good: Vec<_> = (0..50)
        .map(|i| {
            let req = request(
                "echo",
                json!({ "i": i }),
                limits(),
                AttemptGrants::default(),
            );
            tokio::spawn(async move { sb.run(req).await })
        })
        .collect();
    for (i, g) in good.into_iter().enumerate() {
        let out = g.await.unwrap().expect("a good step runs beside the flood");
        assert_eq!(out.output["config"], json!({ "i": i }));
    }
    assert_eq!(
        held.lock().unwrap().len(),
        FLOODS * cap,
        "no flood got more"
    );
    // Let go: each flood's read ends and it reports what it opened.
    held.lock().unwrap().clear();
    for f in floods {
        let f = f.await.unwrap().expect_err("the flood fails");
        let what = host_denial(&f);
        assert!(what.contains("max_sockets"), "{what}");
        assert!(
            f.error
                .to_string()
                .contains(&format!("opened {cap} sockets")),
            "{}",
            f.error
        );
    }
    // Closed sockets are given back: one at a time, far more than the cap.
    let out = run_ok(
        sb,
        request(
            "hostile_socket_flood",
            json!({ "addr": addr, "churn": cap * 3 }),
            limits(),
            AttemptGrants {
                net: vec![addr.clone()],
                ..AttemptGrants::default()
            },
        ),
    )
    .await;
    assert_eq!(out.output, json!(cap * 3));
    acceptor.abort();
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn a_descriptor_flood_is_capped() {
    let sb = sandbox();
    let root = input_dir();
    let l = AttemptLimits {
        max_descriptors: Some(32),
        ..limits()
    };
    let f = run_err(
        sb,
        request(
            "hostile_fd_flood",
            json!({ "path": "/input/a.txt" }),
            l,
            ro_input(&root),
        ),
    )
    .await;
    let what = host_denial(&f);
    assert!(what.contains("max_descriptors"), "{what}");
    // Each held file is a descriptor, plus a stream if its read made one.
    let msg = f.error.to_string();
    let held: usize = msg
        .split("held ")
        .nth(1)
        .and_then(|r| r.split(' ').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("{msg}"));
    assert!((16..=32).contains(&held), "{msg}");
    // Closed files are given back: one at a time, far more than the cap.
    let out = run_ok(
        sb,
        request(
            "hostile_read_outside",
            json!({ "paths": vec!["/input/a.txt"; 100] }),
            AttemptLimits {
                max_descriptors: Some(4),
                ..limits()
            },
            ro_input(&root),
        ),
    )
    .await;
    assert_eq!(out.output.as_array().unwrap().len(), 100);
    assert_good_still_runs(sb).await;
}

/// Bytes and entries under `dir`, as the host sees them.
fn disk_use(dir: &std::path::Path) -> (u64, usize) {
    let (mut bytes, mut entries) = (0, 0);
    for e in std::fs::read_dir(dir).unwrap() {
        let e = e.unwrap();
        entries += 1;
        bytes += e.metadata().unwrap().len();
    }
    (bytes, entries)
}

#[tokio::test]
async fn disk_quota_stops_a_disk_filler() {
    let sb = sandbox();
    const QUOTA: u64 = 4 << 20;
    for mode in ["write", "append", "set_len", "entries", "creates"] {
        let out = tempfile::tempdir().unwrap();
        let g = AttemptGrants {
            dirs: vec![HostDir {
                host: out.path().to_path_buf(),
                guest: "/out".into(),
                writable: true,
            }],
            ..AttemptGrants::default()
        };
        let l = AttemptLimits {
            disk_write_bytes: Some(QUOTA),
            ..limits()
        };
        let f = run_err(
            sb,
            request(
                "hostile_disk_filler",
                json!({ "dir": "/out", "mode": mode }),
                l,
                g,
            ),
        )
        .await;
        let what = host_denial(&f);
        assert!(what.contains("disk_write_bytes"), "{mode}: {what}");
        let (bytes, entries) = disk_use(out.path());
        assert!(bytes <= QUOTA, "{mode}: {bytes} bytes on disk");
        assert!(
            entries as u64 <= QUOTA / tasker_sandbox::ENTRY_COST,
            "{mode}: {entries} entries"
        );
    }
    // 20,000 creates refused past the quota gave back every descriptor they reserved: the
    // host-wide budget (half the file limit) is intact, so a descriptor flood still stops at
    // its own per-attempt cap.
    let root = tempfile::tempdir().unwrap();
    std::fs::write(root.path().join("a.txt"), "x").unwrap();
    let g = AttemptGrants {
        dirs: vec![HostDir {
            host: root.path().to_path_buf(),
            guest: "/in".into(),
            writable: false,
        }],
        ..AttemptGrants::default()
    };
    let f = run_err(
        sb,
        request(
            "hostile_fd_flood",
            json!({ "path": "/in/a.txt" }),
            limits(),
            g,
        ),
    )
    .await;
    let what = host_denial(&f);
    assert!(what.contains("max_descriptors"), "{what}");
    assert_good_still_runs(sb).await;
}

fn rw_out(root: &tempfile::TempDir) -> AttemptGrants {
    std::fs::create_dir_all(root.path().join("out")).unwrap();
    std::fs::write(root.path().join("out/a.txt"), "inside").unwrap();
    AttemptGrants {
        dirs: vec![HostDir {
            host: root.path().join("out"),
            guest: "/out".into(),
            writable: true,
        }],
        ..AttemptGrants::default()
    }
}

#[tokio::test]
async fn a_symlink_out_of_a_grant_is_refused() {
    let sb = sandbox();
    let root = input_dir();
    let g = rw_out(&root);
    for target in ["../secret.txt", "/etc/passwd", "sub/../../secret.txt", ".."] {
        let f = run_err(
            sb,
            request(
                "hostile_symlink",
                json!({ "target": target, "link": "/out/evil" }),
                limits(),
                g.clone(),
            ),
        )
        .await;
        let what = host_denial(&f);
        assert!(what.contains("symlink-at"), "{target}: {what}");
        assert!(
            std::fs::symlink_metadata(root.path().join("out/evil")).is_err(),
            "{target}: the link exists on the host"
        );
    }
    // A link below its own directory is fine, and works.
    let out = run_ok(
        sb,
        request(
            "hostile_symlink",
            json!({ "target": "a.txt", "link": "/out/ok" }),
            limits(),
            g,
        ),
    )
    .await;
    assert_eq!(out.output, json!("inside"));
    assert_eq!(
        std::fs::read_link(root.path().join("out/ok")).unwrap(),
        std::path::Path::new("a.txt")
    );
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn an_escaping_symlink_cannot_be_followed() {
    let sb = sandbox();
    let root = input_dir();
    // Planted by the host (e.g. by an earlier process): relative and absolute escapes.
    std::os::unix::fs::symlink("../secret.txt", root.path().join("input/evil")).unwrap();
    std::os::unix::fs::symlink(
        root.path().join("secret.txt"),
        root.path().join("input/abs"),
    )
    .unwrap();
    for path in ["/input/evil", "/input/abs"] {
        let f = run_err(
            sb,
            request(
                "hostile_read_outside",
                json!({ "paths": [path] }),
                limits(),
                ro_input(&root),
            ),
        )
        .await;
        let what = host_denial(&f);
        assert!(what.contains("open-at"), "{path}: {what}");
        assert!(!f.error.to_string().contains("the host's secret"));
        assert!(!format!("{:?}", f.report).contains("the host's secret"));
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn deep_json_result_is_bad_output() {
    let sb = sandbox();
    let depth = sb.resolve_limits(&limits()).output_depth as usize;
    let f = run_err(
        sb,
        request(
            "hostile_deep_json",
            json!({ "depth": depth + 1 }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "bad_output", "{}", f.error);
    assert!(
        f.error.to_string().contains(&format!(
            "{} levels deep, over the {depth} level cap",
            depth + 1
        )),
        "{}",
        f.error
    );
    // At the cap it is accepted; a lower cap refuses less deep results.
    let out = run_ok(
        sb,
        request(
            "hostile_deep_json",
            json!({ "depth": depth }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert!(out.output.is_array());
    let l = AttemptLimits {
        output_depth: Some(8),
        ..limits()
    };
    let f = run_err(
        sb,
        request(
            "hostile_deep_json",
            json!({ "depth": 9 }),
            l,
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "bad_output", "{}", f.error);
    // A cap without headroom below serde_json's 128 levels is refused up front.
    let l = AttemptLimits {
        output_depth: Some(tasker_sandbox::MAX_OUTPUT_DEPTH + 1),
        ..limits()
    };
    let f = run_err(
        sb,
        request(
            "hostile_deep_json",
            json!({ "depth": 1 }),
            l,
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "config", "{}", f.error);
    assert!(f.error.to_string().contains("output_depth"), "{}", f.error);
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn huge_error_message_is_truncated() {
    let sb = sandbox();
    const BYTES: usize = 4 << 20;
    let cap = sb.resolve_limits(&limits()).error_message_bytes as usize;
    let f = run_err(
        sb,
        request(
            "hostile_huge_error",
            json!({ "bytes": BYTES }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "handler_error", "{}", f.error);
    let SandboxError::HandlerError { message, .. } = &f.error else {
        unreachable!()
    };
    let marker = format!("…[truncated {} bytes]", BYTES - cap);
    assert!(message.ends_with(&marker), "{}", &message[cap - 10..]);
    assert_eq!(message.len(), cap + marker.len());
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn log_flood_is_capped_in_total() {
    let sb = sandbox();
    let r = sb.resolve_limits(&limits());
    let (total, per) = (r.log_bytes as usize, r.max_message_bytes as usize);
    // Messages under the per-message cap: kept whole until the total is reached.
    let bytes = 8 << 10;
    let out = run_ok(
        sb,
        request(
            "hostile_log_flood",
            json!({ "count": 200, "bytes": bytes }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    let kept: usize = out.report.logs.iter().map(|l| l.message.len()).sum();
    assert_eq!(out.report.logs.len(), total / bytes);
    assert_eq!(out.report.dropped.logs as usize, 200 - total / bytes);
    assert!(kept <= total);
    // Oversized messages are truncated with a marker and still count toward the total.
    let out = run_ok(
        sb,
        request(
            "hostile_log_flood",
            json!({ "count": 40, "bytes": per * 2 }),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    let kept: usize = out.report.logs.iter().map(|l| l.message.len()).sum();
    assert!(kept <= total, "{kept}");
    assert!(out.report.dropped.logs > 0);
    for l in &out.report.logs {
        assert!(
            l.message.ends_with(&format!("…[truncated {per} bytes]")),
            "{}",
            &l.message[per - 10..]
        );
    }
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn control_characters_in_event_names_are_dropped() {
    let sb = sandbox();
    let out = run_ok(
        sb,
        request(
            "hostile_event_names",
            json!({}),
            limits(),
            AttemptGrants::default(),
        ),
    )
    .await;
    let names: Vec<_> = out.report.events.iter().map(|e| e.name.as_str()).collect();
    assert_eq!(names, ["order.checked"]);
    // The escape, the newline, the NUL, the empty and the 10 KB name.
    assert_eq!(out.report.dropped.events, 5);
    assert_good_still_runs(sb).await;
}
