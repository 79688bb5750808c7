//! The production step executor: each attempt runs in the WASM sandbox with the step's limits and
//! grants from its template.
//!
//! Sandbox errors map onto [`ErrorKind`]s; whether a kind retries is decided by the engine
//! from the template (`retry.by_kind`) and [`ErrorKind::default_retryable`].

use std::collections::BTreeMap;
use std::path::Path;

use serde_json::Value;
use tasker_core::error_kind::ErrorKind;
use tasker_core::template::{self, HandlerRef};
use tasker_engine::executor::{CustomEvent, Execution, Executor, Outcome};
use tasker_sandbox::{
    AttemptGrants, AttemptLimits, AttemptReport, HostDir, PluginHash, PluginRef, Sandbox,
    SandboxError, StepContext,
};
use tasker_store::{Accounting, AttemptLog, ClaimedStep, LogDropped, LogLevel, LogLine};

/// Runs steps as WASM components.
#[derive(Clone)]
pub struct WasmExecutor {
    sandbox: Sandbox,
}

impl WasmExecutor {
    pub fn new(sandbox: Sandbox) -> Self {
        WasmExecutor { sandbox }
    }

    pub fn sandbox(&self) -> &Sandbox {
        &self.sandbox
    }
}

/// Which plugin to run: a pinned hash from an earlier attempt wins over the name.
pub fn plugin_ref(step: &ClaimedStep) -> Result<PluginRef, String> {
    if let Some(hash) = &step.pinned_hash {
        return hash
            .parse::<PluginHash>()
            .map(PluginRef::Hash)
            .map_err(|e| format!("pinned hash {hash}: {e}"));
    }
    match &step.handler {
        HandlerRef::Named { name, version } => Ok(PluginRef::Name {
            name: name.clone(),
            version: Some(version.clone()),
        }),
        HandlerRef::Hash(hex) => hex
            .parse::<PluginHash>()
            .map(PluginRef::Hash)
            .map_err(|e| format!("handler hash {hex}: {e}")),
    }
}

/// The template's limits in the sandbox's terms (unset values take the host defaults).
pub fn limits(l: &template::Limits) -> AttemptLimits {
    AttemptLimits {
        fuel: l.fuel,
        timeout_ms: l.timeout_ms,
        memory_bytes: l.memory_mb.map(|mb| mb.saturating_mul(1 << 20)),
        output_bytes: l.max_output_bytes,
        // Checked against LIMIT_MAXIMA in the template, so these fit.
        http_requests: l.http_requests.map(|n| n.min(u64::from(u32::MAX)) as u32),
        http_concurrency: l
            .http_concurrency
            .map(|n| n.min(u64::from(u32::MAX)) as u32),
        http_request_bytes: l.http_request_bytes,
        http_response_bytes: l.http_response_bytes,
        http_timeout_ms: l.http_timeout_ms,
        ..AttemptLimits::default()
    }
}

/// The template's grants in the sandbox's terms. Templates keep host paths as written, so
/// a relative one is resolved here, against this host's grants base (see
/// [`Sandbox::grants_base`]).
pub fn grants(g: &template::Grants, base: &Path) -> AttemptGrants {
    AttemptGrants {
        dirs: g
            .dirs
            .iter()
            .map(|d| HostDir {
                host: base.join(&d.host),
                guest: d.guest.clone(),
                writable: d.mode == template::DirMode::ReadWrite,
            })
            .collect(),
        env: g.env.clone(),
        net: g.net.clone(),
        http: g.http.clone(),
        secrets: g.secrets.clone(),
        ..AttemptGrants::default()
    }
}

pub(crate) fn kind_of(e: &SandboxError) -> ErrorKind {
    match e {
        SandboxError::Timeout { .. } => ErrorKind::Timeout,
        SandboxError::OutOfFuel { .. } => ErrorKind::OutOfFuel,
        SandboxError::OutOfMemory { .. } => ErrorKind::OutOfMemory,
        SandboxError::Trap { .. } => ErrorKind::Trap,
        SandboxError::CapabilityDenied { .. } => ErrorKind::CapabilityDenied,
        SandboxError::BadOutput { .. } => ErrorKind::BadOutput,
        SandboxError::HandlerError { .. } => ErrorKind::HandlerError,
        // A plugin that cannot be found or read may be deployed later.
        SandboxError::Load { .. } | SandboxError::Internal { .. } => ErrorKind::Load,
        // A step whose grants cannot be honoured will not improve by retrying.
        SandboxError::Incompatible { .. } | SandboxError::Config { .. } => ErrorKind::Incompatible,
    }
}

fn accounting(report: &AttemptReport) -> Accounting {
    let a = &report.accounting;
    Accounting {
        fuel: Some(a.fuel_consumed),
        peak_memory_bytes: Some(a.peak_memory_bytes),
        wall_us: Some(a.wall_time_us),
        plugin_hash: a.plugin.as_ref().map(|p| p.hash.to_hex()),
    }
}

fn custom_events(report: &AttemptReport) -> Vec<CustomEvent> {
    report
        .events
        .iter()
        .map(|e| CustomEvent {
            name: e.name.clone(),
            payload: e.payload.clone(),
        })
        .collect()
}

/// What the guest said, as the store keeps it (the sandbox bounded it already), moved out
/// of the report.
fn attempt_log(report: &mut AttemptReport) -> AttemptLog {
    AttemptLog {
        lines: std::mem::take(&mut report.logs)
            .into_iter()
            .map(|l| LogLine {
                at_us: l.at_us,
                // The sandbox writes only the five level names.
                level: LogLevel::parse(&l.level).unwrap_or(LogLevel::Info),
                message: l.message,
            })
            .collect(),
        stdout: std::mem::take(&mut report.stdout),
        stderr: std::mem::take(&mut report.stderr),
        dropped: LogDropped {
            lines: report.dropped.logs,
            stdout_bytes: report.dropped.stdout_bytes,
            stderr_bytes: report.dropped.stderr_bytes,
        },
        // The sandbox and the store share the record type.
        http: std::mem::take(&mut report.http),
    }
}

fn parent_results(v: &Value) -> BTreeMap<String, Value> {
    match v {
        Value::Object(m) => m.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        _ => BTreeMap::new(),
    }
}

impl Executor for WasmExecutor {
    async fn execute(&self, step: &ClaimedStep) -> Execution {
        let plugin = match plugin_ref(step) {
            Ok(p) => p,
            Err(message) => return Execution::failure(ErrorKind::Incompatible, message),
        };
        let req = tasker_sandbox::AttemptRequest {
            plugin,
            ctx: StepContext {
                task_id: step.task_id.to_string(),
                step_name: step.step_name.clone(),
                attempt: step.attempt,
                context: step.context.clone(),
                parent_results: parent_results(&step.parent_results),
                config: step.config.clone(),
            },
            limits: limits(&step.limits),
            grants: grants(&step.grants, self.sandbox.grants_base()),
        };
        match self.sandbox.run(req).await {
            Ok(mut out) => Execution {
                log: attempt_log(&mut out.report),
                accounting: accounting(&out.report),
                events: custom_events(&out.report),
                outcome: Outcome::Success { result: out.output },
            },
            Err(mut failure) => {
                let log = attempt_log(&mut failure.report);
                let e = &failure.error;
                let handler_retryable = match e {
                    SandboxError::HandlerError { retryable, .. } => Some(*retryable),
                    _ => None,
                };
                Execution {
                    outcome: Outcome::Failure {
                        kind: kind_of(e),
                        message: e.to_string(),
                        handler_retryable,
                        retry_after_ms: e.retry_after_ms(),
                    },
                    accounting: accounting(&failure.report),
                    events: custom_events(&failure.report),
                    log,
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn step(handler: &str, pinned: Option<&str>) -> ClaimedStep {
        ClaimedStep {
            step_id: 1.into(),
            task_id: 1.into(),
            token: 2,
            attempt: 2,
            max_attempts: 3,
            step_name: "s".into(),
            handler: handler.parse().unwrap(),
            config: json!({}),
            limits: Default::default(),
            grants: Default::default(),
            context: json!({}),
            parent_results: json!({}),
            template_key: "t/t@1.0.0".into(),
            lease_expires_at: chrono::Utc::now(),
            task_started: false,
            pinned_hash: pinned.map(str::to_owned),
            defect: None,
        }
    }

    #[test]
    fn a_pinned_hash_wins_over_the_name() {
        let hash = "ab".repeat(32);
        let r = plugin_ref(&step("noop@0.1.0", Some(&hash))).unwrap();
        assert_eq!(r.to_string(), format!("blake3:{hash}"));
        let r = plugin_ref(&step("noop@0.1.0", None)).unwrap();
        assert_eq!(r.to_string(), "noop@0.1.0");
        assert!(plugin_ref(&step("noop@0.1.0", Some("zz"))).is_err());
    }

    #[test]
    fn template_limits_and_grants_map_onto_the_sandbox() {
        let l = limits(&template::Limits {
            timeout_ms: Some(5),
            fuel: Some(7),
            memory_mb: Some(2),
            max_output_bytes: Some(9),
            http_requests: Some(3),
            http_concurrency: Some(2),
            http_request_bytes: Some(10),
            http_response_bytes: Some(11),
            http_timeout_ms: Some(12),
        });
        assert_eq!(
            (l.timeout_ms, l.fuel, l.memory_bytes, l.output_bytes),
            (Some(5), Some(7), Some(2 << 20), Some(9))
        );
        assert_eq!(
            (
                l.http_requests,
                l.http_concurrency,
                l.http_request_bytes,
                l.http_response_bytes,
                l.http_timeout_ms
            ),
            (Some(3), Some(2), Some(10), Some(11), Some(12))
        );
        let g = grants(
            &template::Grants {
                dirs: vec![
                    template::DirGrant {
                        host: "/data".into(),
                        guest: "/in".into(),
                        mode: template::DirMode::ReadWrite,
                    },
                    template::DirGrant {
                        host: "shared/out".into(),
                        guest: "/out".into(),
                        mode: template::DirMode::ReadOnly,
                    },
                ],
                env: vec!["A".into()],
                net: vec!["h:1".into()],
                http: vec![tasker_core::http_grant::HttpRule {
                    url: "https://x.test".into(),
                    methods: vec![],
                    paths: vec![],
                }],
                secrets: [("K".to_string(), "env:K".to_string())].into(),
            },
            Path::new("/srv/tasker"),
        );
        assert!(g.dirs[0].writable && !g.dirs[1].writable);
        // An absolute path stays; a relative one is the host's base joined with it.
        assert_eq!(g.dirs[0].host, Path::new("/data"));
        assert_eq!(g.dirs[1].host, Path::new("/srv/tasker/shared/out"));
        assert_eq!((g.env.len(), g.net.len()), (1, 1));
        assert_eq!(
            (g.http[0].url.as_str(), g.secrets["K"].as_str()),
            ("https://x.test", "env:K")
        );
    }
}
