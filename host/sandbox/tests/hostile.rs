//! One test per attack: each asserts the exact error kind, then that a well-behaved
//! plugin still runs in the same process.

mod common;

use common::*;
use serde_json::json;
use tasker_sandbox::{DirGrant, Grants, Limits, SandboxConfig, SandboxError};

fn limits() -> Limits {
    Limits::default()
}

#[tokio::test]
async fn infinite_loop_times_out() {
    let sb = sandbox();
    // A budget far beyond what 300 ms can burn: the deadline must stop it.
    let l = Limits {
        timeout_ms: Some(300),
        fuel: Some(100_000_000_000),
        ..limits()
    };
    let f = run_err(sb, request("hostile_loop", json!({}), l, Grants::default())).await;
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
    let l = Limits {
        fuel: Some(5_000_000),
        timeout_ms: Some(20_000),
        ..limits()
    };
    let f = run_err(sb, request("hostile_loop", json!({}), l, Grants::default())).await;
    assert_eq!(f.kind(), "out_of_fuel", "{}", f.error);
    assert!(!f.is_retryable());
    assert_eq!(f.report.accounting.fuel_consumed, 5_000_000);
    assert_good_still_runs(sb).await;
}

#[tokio::test]
async fn memory_bomb_is_out_of_memory() {
    let sb = sandbox();
    let l = Limits {
        memory_bytes: Some(32 << 20),
        ..limits()
    };
    let f = run_err(
        sb,
        request("hostile_memory", json!({}), l, Grants::default()),
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
        request("hostile_recursion", json!({}), limits(), Grants::default()),
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
        request("hostile_panic", json!({}), limits(), Grants::default()),
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

fn ro_input(root: &tempfile::TempDir) -> Grants {
    Grants {
        dirs: vec![DirGrant {
            host: root.path().join("input"),
            guest: "/input".into(),
            writable: false,
        }],
        ..Grants::default()
    }
}

#[tokio::test]
async fn reading_outside_the_grant_is_denied() {
    let sb = sandbox();
    let root = input_dir();
    for path in ["/etc/passwd", "/input/../secret.txt", "../secret.txt"] {
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
        assert_eq!(f.kind(), "capability_denied", "{path}: {}", f.error);
        let SandboxError::CapabilityDenied { detected_by, .. } = &f.error else {
            unreachable!()
        };
        assert_eq!(detected_by, "guest_evidence");
    }
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
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
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
async fn ungranted_env_var_is_denied() {
    let sb = sandbox();
    // PATH exists on the host; it must not leak into a guest without a grant.
    let f = run_err(
        sb,
        request(
            "hostile_env",
            json!({ "var": "PATH" }),
            limits(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
    assert!(!f.is_retryable());
    // Granted by name (inherited) and by value.
    let g = Grants {
        env: vec!["PATH".into()],
        env_values: [("GREETING".to_string(), "hi".to_string())].into(),
        ..Grants::default()
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
    let f = run_err(
        sb,
        request(
            "hostile_net",
            json!({ "addr": addr }),
            limits(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
    let SandboxError::CapabilityDenied {
        detected_by, what, ..
    } = &f.error
    else {
        unreachable!()
    };
    assert_eq!(detected_by, "host");
    assert!(what.contains(&addr), "{what}");
    assert_eq!(f.report.denials.len(), 1);
    // An allow-listed address connects.
    let g = Grants {
        net: vec![addr.clone()],
        ..Grants::default()
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
    // Another port on the same host is still refused.
    let other = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .to_string();
    let g = Grants {
        net: vec![addr],
        ..Grants::default()
    };
    let f = run_err(
        sb,
        request("hostile_net", json!({ "addr": other }), limits(), g),
    )
    .await;
    assert_eq!(f.kind(), "capability_denied", "{}", f.error);
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
            Grants::default(),
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
        request("hostile_not_json", json!({}), limits(), Grants::default()),
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
            Grants::default(),
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
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "incompatible", "{}", f.error);
    assert!(
        f.error.to_string().contains("step-handler@0.1.0"),
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
        request("broken", json!({}), limits(), Grants::default()),
    )
    .await;
    assert_eq!(f.kind(), "load", "{}", f.error);
    assert_good_still_runs(&sb).await;
}

#[tokio::test]
async fn guest_blocked_in_a_host_call_times_out() {
    let sb = sandbox();
    let l = Limits {
        timeout_ms: Some(200),
        ..limits()
    };
    let f = run_err(
        sb,
        request("slow", json!({ "ms": 60_000 }), l, Grants::default()),
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
            Grants::default(),
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
            Grants::default(),
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
        request("echo", json!({ "x": 1 }), limits(), Grants::default()),
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
    let g = Grants {
        dirs: vec![
            DirGrant {
                host: root.path().join("input"),
                guest: "/input".into(),
                writable: false,
            },
            DirGrant {
                host: out_dir.path().to_path_buf(),
                guest: "/output".into(),
                writable: true,
            },
        ],
        ..Grants::default()
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
    let g = Grants {
        dirs: vec![DirGrant {
            host: "/nonexistent/tasker".into(),
            guest: "/input".into(),
            writable: false,
        }],
        ..Grants::default()
    };
    let f = run_err(sb, request("echo", json!({}), limits(), g)).await;
    assert_eq!(f.kind(), "config", "{}", f.error);
    assert!(f.error.to_string().contains("/nonexistent/tasker"));
}

#[tokio::test]
async fn captured_output_logs_and_events_are_capped() {
    let sb = sandbox();
    let l = Limits {
        stdio_bytes: Some(16),
        ..limits()
    };
    let f = run_err(
        sb,
        request("hostile_panic", json!({}), l, Grants::default()),
    )
    .await;
    assert_eq!(f.kind(), "trap");
    assert!(f.report.stderr.len() <= 16, "{:?}", f.report.stderr);
    assert!(f.report.dropped.stderr_bytes > 0);
    let l = Limits {
        max_logs: Some(0),
        max_events: Some(0),
        ..limits()
    };
    let out = run_ok(sb, request("echo", json!({}), l, Grants::default())).await;
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
    run_ok(&sb, request("noop", json!({}), limits(), Grants::default())).await;
}
