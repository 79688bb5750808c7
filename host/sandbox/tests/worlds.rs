//! The event-hook and retry-policy worlds: each component's world is found at load, each
//! runs sandboxed like a handler (hostile hooks get the same typed errors), and a component
//! called as the wrong world is refused as incompatible.

mod common;

use common::*;
use serde_json::json;
use tasker_sandbox::{
    AttemptGrants, AttemptLimits, HookEvent, HookRequest, HostDir, PolicyDecision, PolicyInput,
    PolicyRequest, World,
};

fn event(name: &str) -> HookEvent {
    HookEvent {
        name: name.into(),
        task_id: "7".into(),
        step_id: Some("70".into()),
        timestamp_ms: 1_700_000_000_000,
        attempt: Some(2),
        payload: json!({"kind": "trap"}),
    }
}

fn hook(plugin: &str, limits: AttemptLimits, grants: AttemptGrants) -> HookRequest {
    HookRequest {
        plugin: plugin.parse().unwrap(),
        event: event("step.failed"),
        limits,
        grants,
    }
}

fn failure(message: &str, attempt: u32, retry_after_ms: Option<u64>) -> PolicyInput {
    PolicyInput {
        step_name: "charge".into(),
        attempt,
        max_attempts: 5,
        error_kind: "handler_error".into(),
        message: message.into(),
        retry_after_ms,
        since_first_attempt_ms: 1234,
    }
}

async fn decide(plugin: &str, f: PolicyInput) -> Result<PolicyDecision, String> {
    sandbox()
        .run_policy(PolicyRequest {
            plugin: plugin.parse().unwrap(),
            failure: f,
            limits: AttemptLimits::default(),
            grants: AttemptGrants::default(),
        })
        .await
        .map(|(d, _)| d)
        .map_err(|f| format!("{}: {}", f.kind(), f.error))
}

#[tokio::test]
async fn the_registry_knows_each_components_world() {
    let sb = sandbox();
    let world = |name: &str| {
        sb.registry()
            .resolve(&name.parse().unwrap())
            .unwrap()
            .world()
    };
    assert_eq!(world("noop"), World::StepHandler);
    assert_eq!(world("hook_noop"), World::EventHook);
    assert_eq!(world("audit_hook"), World::EventHook);
    assert_eq!(world("smart_retry"), World::RetryPolicy);
}

#[tokio::test]
async fn a_component_of_another_world_is_incompatible() {
    let sb = sandbox();
    let f = sb
        .run_hook(hook(
            "noop",
            AttemptLimits::default(),
            AttemptGrants::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(f.kind(), "incompatible");
    assert!(
        f.error
            .to_string()
            .contains("step-handler component, not a event-hook"),
        "{}",
        f.error
    );
    let f = run_err(
        sb,
        request(
            "hook_noop",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "incompatible", "{}", f.error);
    let e = decide("hook_noop", failure("x", 1, None))
        .await
        .unwrap_err();
    assert!(e.starts_with("incompatible"), "{e}");
}

#[tokio::test]
async fn hooks_run_with_their_grants_and_report_their_errors() {
    let sb = sandbox();
    sb.run_hook(hook(
        "hook_noop",
        AttemptLimits::default(),
        AttemptGrants::default(),
    ))
    .await
    .unwrap();
    let f = sb
        .run_hook(hook(
            "hook_fail",
            AttemptLimits::default(),
            AttemptGrants::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(f.kind(), "handler_error");
    assert!(
        f.error
            .to_string()
            .contains("downstream refused step.failed")
    );

    // The audit hook without its grant cannot write; with it, appends one JSON line. Without
    // the grant `/audit` is no preopen: the guest's libc fails the open itself (ENOENT) and
    // the host never sees a call, so this is the hook's own error, not a capability denial.
    let f = sb
        .run_hook(hook(
            "audit_hook",
            AttemptLimits::default(),
            AttemptGrants::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(f.kind(), "handler_error", "{}", f.error);
    assert!(f.report.denials.is_empty(), "{:?}", f.report.denials);
    let dir = tempdir();
    let grants = AttemptGrants {
        dirs: vec![HostDir {
            host: dir.clone(),
            guest: "/audit".into(),
            writable: true,
        }],
        ..AttemptGrants::default()
    };
    for _ in 0..2 {
        sb.run_hook(hook("audit_hook", AttemptLimits::default(), grants.clone()))
            .await
            .unwrap();
    }
    let text = std::fs::read_to_string(dir.join("events.jsonl")).unwrap();
    let lines: Vec<serde_json::Value> = text
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(lines[0]["name"], "step.failed");
    assert_eq!(lines[0]["task_id"], "7");
    assert_eq!(lines[0]["attempt"], 2);
    assert_eq!(lines[0]["payload"], json!({"kind": "trap"}));
}

fn tempdir() -> std::path::PathBuf {
    let d = std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR"))
        .join(format!("worlds-audit-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

#[tokio::test]
async fn hostile_hooks_get_typed_errors() {
    let sb = sandbox();
    let l = AttemptLimits {
        timeout_ms: Some(300),
        fuel: Some(100_000_000_000),
        ..AttemptLimits::default()
    };
    let f = sb
        .run_hook(hook("hostile_hook_loop", l, AttemptGrants::default()))
        .await
        .unwrap_err();
    assert_eq!(f.kind(), "timeout", "{}", f.error);
    let l = AttemptLimits {
        memory_bytes: Some(16 << 20),
        ..AttemptLimits::default()
    };
    let f = sb
        .run_hook(hook("hostile_hook_memory", l, AttemptGrants::default()))
        .await
        .unwrap_err();
    assert_eq!(f.kind(), "out_of_memory", "{}", f.error);
    let f = sb
        .run_hook(hook(
            "hostile_hook_panic",
            AttemptLimits::default(),
            AttemptGrants::default(),
        ))
        .await
        .unwrap_err();
    assert_eq!(f.kind(), "trap", "{}", f.error);
    assert!(
        f.error
            .to_string()
            .contains("boom: the hook gave up on step.failed"),
        "{}",
        f.error
    );
    // The host is fine: a good hook still runs.
    sb.run_hook(hook(
        "hook_noop",
        AttemptLimits::default(),
        AttemptGrants::default(),
    ))
    .await
    .unwrap();
}

#[tokio::test]
async fn the_example_policy_decides_each_case() {
    // Validation: give up at once.
    let d = decide(
        "smart_retry",
        failure("validation: amount is negative", 1, None),
    )
    .await;
    assert_eq!(
        d.unwrap(),
        PolicyDecision::GiveUp("validation error: validation: amount is negative".into())
    );
    // Rate limited: exactly the server's delay.
    let d = decide("smart_retry", failure("rate-limited", 1, Some(4321))).await;
    assert_eq!(d.unwrap(), PolicyDecision::Retry(4321));
    // Otherwise exponential from 200 ms with ±25 % jitter, deterministic.
    for (attempt, raw) in [(1u32, 200u64), (2, 400), (3, 800)] {
        let a = decide("smart_retry", failure("upstream down", attempt, None))
            .await
            .unwrap();
        let b = decide("smart_retry", failure("upstream down", attempt, None))
            .await
            .unwrap();
        assert_eq!(a, b);
        match a {
            PolicyDecision::Retry(ms) => {
                assert!(
                    ms >= raw * 3 / 4 && ms <= raw * 5 / 4,
                    "attempt {attempt}: {ms}"
                )
            }
            other => panic!("{other:?}"),
        }
    }
    // A broken policy is a typed trap (the engine then falls back).
    let e = decide("policy_panic", failure("x", 1, None))
        .await
        .unwrap_err();
    assert!(
        e.starts_with("trap") && e.contains("policy bug on attempt 1"),
        "{e}"
    );
}
