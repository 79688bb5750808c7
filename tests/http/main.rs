//! Outbound HTTP for guests (`wasi:http` behind `grants.http`) against a real HTTP and HTTPS
//! server on loopback ([`tasker_tests::http_server`]): what is granted reaches the server
//! and is recorded, what is not fails the attempt with the exact kind before any
//! connection, limits hold, secrets reach the server's headers and nowhere else (in the
//! sandbox's report and, through the engine, in either store), and the Python and
//! JavaScript SDKs make requests too.
//!
//! Plugins come from `plugins/dist` (`$TASKER_TEST_PLUGIN_DIR`) or, for the Rust ones,
//! `plugins/target/wasm32-wasip2/release` (`$TASKER_PLUGIN_BUILD_DIR`):
//! run `scripts/build-plugins.sh` first.

mod grants;
mod languages;
mod limits;
mod secrets;

use std::path::PathBuf;
use std::sync::OnceLock;

use serde_json::Value;
use tasker_sandbox::{
    AttemptFailure, AttemptGrants, AttemptLimits, AttemptOutput, AttemptRequest, EngineConfig,
    HttpConfig, HttpRecord, HttpRule, Sandbox, SandboxConfig, StepContext,
};
use tasker_tests::cli::{cache_dir, root, scratch};
use tasker_tests::http_server;

/// Where a built plugin `name@0.1.0` is: staged in plugins/dist, else (Rust) in the
/// plugins workspace's build directory.
pub fn plugin_file(name: &str) -> PathBuf {
    let staged = std::env::var_os("TASKER_TEST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("plugins/dist"))
        .join(format!("{name}@0.1.0.wasm"));
    if staged.is_file() {
        return staged;
    }
    let built = std::env::var_os("TASKER_PLUGIN_BUILD_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("plugins/target/wasm32-wasip2/release"))
        .join(format!("{name}.wasm"));
    assert!(
        built.is_file(),
        "plugin {name} is missing ({} nor {}): run scripts/build-plugins.sh first",
        staged.display(),
        built.display()
    );
    built
}

/// A plugin directory holding just these plugins (as `name@0.1.0.wasm`), so a sandbox
/// loads only what its tests run.
fn plugin_dir(tag: &str, names: &[&str]) -> PathBuf {
    let dir = scratch(&format!("http-plugins-{tag}"));
    for name in names {
        std::fs::copy(plugin_file(name), dir.join(format!("{name}@0.1.0.wasm")))
            .unwrap_or_else(|e| panic!("copy plugin {name}: {e}"));
    }
    dir
}

/// A sandbox built outside the caller's runtime: it is shared by tests that each run on a
/// runtime of their own.
fn build(tag: &str, names: &[&str], http: HttpConfig) -> Sandbox {
    let mut cfg = SandboxConfig::new(plugin_dir(tag, names));
    cfg.cache_dir = Some(cache_dir());
    cfg.engine = EngineConfig {
        max_concurrent_attempts: 256,
        ..EngineConfig::default()
    };
    cfg.http = http;
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(Sandbox::new(cfg)).expect("a sandbox").0
    })
    .join()
    .unwrap()
}

/// Trusting the test CA (and only it).
fn with_test_ca() -> HttpConfig {
    HttpConfig {
        extra_ca_file: Some(http_server::ca_file().to_path_buf()),
        system_roots: false,
    }
}

/// The Rust plugins, trusting the test CA.
pub fn sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| build("rust", &["noop", "echo", "http_probe"], with_test_ca()))
}

/// `http_probe` with the default roots: the test CA is not trusted.
pub fn sandbox_without_ca() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| build("no-ca", &["http_probe"], HttpConfig::default()))
}

/// The Python and JavaScript HTTP plugins (large: compiled once, apart from the Rust ones).
pub fn polyglot_sandbox() -> &'static Sandbox {
    static SB: OnceLock<Sandbox> = OnceLock::new();
    SB.get_or_init(|| build("polyglot", &["http_py", "http_js"], with_test_ca()))
}

/// A rule for `url` with these methods and paths (empty: all).
pub fn rule(url: &str, methods: &[&str], paths: &[&str]) -> HttpRule {
    HttpRule {
        url: url.into(),
        methods: methods.iter().map(|s| s.to_string()).collect(),
        paths: paths.iter().map(|s| s.to_string()).collect(),
    }
}

/// Grants of just these HTTP rules.
pub fn grants(rules: Vec<HttpRule>) -> AttemptGrants {
    AttemptGrants {
        http: rules,
        ..AttemptGrants::default()
    }
}

/// One attempt of `plugin` (`name@0.1.0`) with this step config.
pub fn request(
    plugin: &str,
    config: Value,
    limits: AttemptLimits,
    grants: AttemptGrants,
) -> AttemptRequest {
    AttemptRequest {
        plugin: format!("{plugin}@0.1.0").parse().unwrap(),
        ctx: StepContext {
            task_id: "task-http".into(),
            step_name: "call".into(),
            attempt: 1,
            config,
            ..StepContext::default()
        },
        limits,
        grants,
    }
}

pub async fn run_ok(sb: &Sandbox, req: AttemptRequest) -> AttemptOutput {
    match sb.run(req).await {
        Ok(o) => o,
        Err(f) => panic!(
            "expected success, got {}: {} (denials {:?}, http {:?}, stderr {})",
            f.kind(),
            f.error,
            f.report.denials,
            f.report.http,
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

/// The one HTTP record of an attempt.
pub fn only_record(records: &[HttpRecord]) -> &HttpRecord {
    assert_eq!(records.len(), 1, "{records:?}");
    &records[0]
}

/// The attempt failed with `kind`; its message and denials for the assertion's text.
#[track_caller]
pub fn assert_kind(f: &AttemptFailure, kind: &str) {
    assert_eq!(
        f.kind(),
        kind,
        "{} (denials {:?}, http {:?})",
        f.error,
        f.report.denials,
        f.report.http
    );
}

/// The attempt has an `http` denial whose text contains each of `parts`.
#[track_caller]
pub fn assert_http_denial(f: &AttemptFailure, parts: &[&str]) {
    let found = f
        .report
        .denials
        .iter()
        .any(|d| d.capability == "http" && parts.iter().all(|p| d.detail.contains(p)));
    assert!(
        found,
        "no http denial containing {parts:?}: {:?}",
        f.report.denials
    );
}
