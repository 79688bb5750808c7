//! Shared test helpers: where the built plugins are, one sandbox per test binary.
#![allow(dead_code)]

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::json;
use tasker_sandbox::{
    AttemptFailure, AttemptGrants, AttemptLimits, AttemptOutput, AttemptRequest, EngineConfig,
    Sandbox, SandboxConfig, StepContext,
};

/// Built components: `TASKER_PLUGIN_BUILD_DIR`, else `plugins/target/wasm32-wasip2/release`.
pub fn plugin_build_dir() -> PathBuf {
    let dir = std::env::var_os("TASKER_PLUGIN_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(env!("CARGO_MANIFEST_DIR"))
                .join("../../plugins/target/wasm32-wasip2/release")
        });
    for name in [
        "noop",
        "echo",
        "slow",
        "hostile_loop",
        "hostile_wit_version",
    ] {
        let f = dir.join(format!("{name}.wasm"));
        assert!(
            f.is_file(),
            "test plugin {} is missing: run scripts/build-plugins.sh first (or set TASKER_PLUGIN_BUILD_DIR)",
            f.display()
        );
    }
    dir
}

pub fn plugin_file(name: &str) -> PathBuf {
    plugin_build_dir().join(format!("{name}.wasm"))
}

/// Shared precompiled cache, so each test binary compiles each plugin at most once.
pub fn cache_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("tasker-cwasm-cache")
}

/// Build a sandbox outside the caller's runtime (tests run on their own runtimes).
pub fn build(config: SandboxConfig) -> Sandbox {
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(Sandbox::new(config)).expect("sandbox").0
    })
    .join()
    .unwrap()
}

/// One sandbox over the plugin build directory, for the whole test binary.
pub fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| {
        let mut cfg = SandboxConfig::new(plugin_build_dir());
        cfg.cache_dir = Some(cache_dir());
        cfg.engine = EngineConfig {
            max_concurrent_attempts: 1100,
            ..EngineConfig::default()
        };
        build(cfg)
    })
}

pub fn ctx(config: serde_json::Value) -> StepContext {
    StepContext {
        task_id: "task-1".into(),
        step_name: "step".into(),
        attempt: 1,
        context: json!({ "order": 42 }),
        parent_results: [("parent".to_string(), json!({ "ok": true }))].into(),
        config,
    }
}

pub fn request(
    plugin: &str,
    config: serde_json::Value,
    limits: AttemptLimits,
    grants: AttemptGrants,
) -> AttemptRequest {
    AttemptRequest {
        plugin: plugin.parse().unwrap(),
        ctx: ctx(config),
        limits,
        grants,
    }
}

pub async fn run_ok(sb: &Sandbox, req: AttemptRequest) -> AttemptOutput {
    match sb.run(req).await {
        Ok(o) => o,
        Err(f) => panic!(
            "expected success, got {}: {} (stderr: {})",
            f.kind(),
            f.error,
            f.report.stderr
        ),
    }
}

pub async fn run_err(sb: &Sandbox, req: AttemptRequest) -> AttemptFailure {
    match sb.run(req).await {
        Ok(o) => panic!("expected a failure, got output {}", o.output),
        Err(f) => f,
    }
}

/// A well-behaved plugin still runs correctly in this process.
pub async fn assert_good_still_runs(sb: &Sandbox) {
    let out = run_ok(
        sb,
        request(
            "echo",
            json!({ "n": 7 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(out.output["config"], json!({ "n": 7 }));
    assert_eq!(out.output["context"], json!({ "order": 42 }));
    assert_eq!(out.output["parents"]["parent"], json!({ "ok": true }));
}
