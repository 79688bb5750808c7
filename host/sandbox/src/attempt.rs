//! One attempt: a fresh `Store` with its limits and grants, instantiate from the
//! `InstancePre`, call `handle`, classify the outcome, account for it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use wasmtime::component::ResourceTable;
use wasmtime::{Store, Trap, UpdateDeadline, WasmBacktrace};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::WasiHttpCtx;

use crate::bindings::tasker::plugin::types as wit;
use crate::bounds::{json_depth, truncate};
use crate::caps::{self, AttemptGrants, Denial, DenialLog};
use crate::error::SandboxError;
use crate::guard::Guard;
use crate::host::{EmittedEvent, Journal, LogRecord};
use crate::http::{HttpRecord, Outbound, TlsRoots};
use crate::limits::{AttemptLimits, MemoryLimiter, ResolvedLimits};
use crate::redact;
use crate::registry::{Plugin, PluginHash, PluginRef, Pre, World};
use crate::stdio::CappedPipe;

/// What the handler sees. JSON fields are values here and text on the wire.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(default)]
pub struct StepContext {
    pub task_id: String,
    pub step_name: String,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub context: serde_json::Value,
    pub parent_results: BTreeMap<String, serde_json::Value>,
    pub config: serde_json::Value,
}

/// One attempt, as the engine asks for it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptRequest {
    pub plugin: PluginRef,
    pub ctx: StepContext,
    #[serde(default)]
    pub limits: AttemptLimits,
    #[serde(default)]
    pub grants: AttemptGrants,
}

/// Identity of the code that ran.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct PluginId {
    pub hash: PluginHash,
    pub name: String,
    pub version: String,
}

/// What the attempt cost. Present on success and on failure.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Usage {
    /// `None` when the plugin could not be resolved.
    pub plugin: Option<PluginId>,
    pub fuel_budget: u64,
    pub fuel_consumed: u64,
    /// Peak size of the largest linear memory, in bytes.
    pub peak_memory_bytes: u64,
    /// Instantiate + call, in microseconds.
    pub wall_time_us: u64,
    /// Time spent waiting for a free instance slot, in microseconds.
    pub queue_wait_us: u64,
    pub limits: Option<ResolvedLimits>,
}

/// Everything an attempt produced besides its result.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AttemptReport {
    pub accounting: Usage,
    pub logs: Vec<LogRecord>,
    pub events: Vec<EmittedEvent>,
    pub stdout: String,
    pub stderr: String,
    pub dropped: Dropped,
    /// Capability refusals seen during the attempt (also on success: a guest may
    /// survive a refusal).
    pub denials: Vec<Denial>,
    /// Outbound HTTP requests, granted and refused, in order.
    #[serde(default)]
    pub http: Vec<HttpRecord>,
}

/// Output the host threw away because of the attempt's caps.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct Dropped {
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
    pub logs: u32,
    pub events: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AttemptOutput {
    pub output: serde_json::Value,
    pub report: AttemptReport,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, thiserror::Error)]
#[error("{error}")]
pub struct AttemptFailure {
    pub error: SandboxError,
    pub report: AttemptReport,
}

impl AttemptFailure {
    pub fn kind(&self) -> &'static str {
        self.error.kind()
    }

    pub fn is_retryable(&self) -> bool {
        self.error.is_retryable()
    }
}

/// Store data of one attempt.
pub(crate) struct AttemptState {
    wasi: WasiCtx,
    table: ResourceTable,
    http_ctx: WasiHttpCtx,
    outbound: Outbound,
    pub(crate) limiter: MemoryLimiter,
    pub(crate) journal: Journal,
    guard: Guard,
    deadline: Instant,
}

impl AttemptState {
    /// The WASI context, the resource table and the guard, borrowed apart (for the
    /// guarded WASI interfaces).
    pub(crate) fn split(&mut self) -> (&mut WasiCtx, &mut ResourceTable, &mut Guard) {
        (&mut self.wasi, &mut self.table, &mut self.guard)
    }

    /// The parts `wasi:http` works on, borrowed apart.
    pub(crate) fn http_parts(&mut self) -> (&mut ResourceTable, &mut WasiHttpCtx, &mut Outbound) {
        (&mut self.table, &mut self.http_ctx, &mut self.outbound)
    }
}

impl WasiView for AttemptState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

pub(crate) fn to_wit(ctx: &StepContext) -> wit::StepContext {
    wit::StepContext {
        task_id: ctx.task_id.clone(),
        step_name: ctx.step_name.clone(),
        attempt: ctx.attempt,
        context: ctx.context.to_string(),
        parent_results: ctx
            .parent_results
            .iter()
            .map(|(k, v)| (k.clone(), v.to_string()))
            .collect(),
        config: ctx.config.to_string(),
    }
}

/// About a millisecond of guest work between yields to the runtime.
const FUEL_YIELD: u64 = 1_000_000;

/// What to call on the instance: one export per world.
pub(crate) enum Call {
    Handle(wit::StepContext),
    OnEvent(wit::Event),
    Decide(wit::Failure),
}

impl Call {
    fn world(&self) -> World {
        match self {
            Call::Handle(_) => World::StepHandler,
            Call::OnEvent(_) => World::EventHook,
            Call::Decide(_) => World::RetryPolicy,
        }
    }
}

/// A decision as JSON text, so every world's result goes through the same output checks.
fn decision_json(d: &wit::Decision) -> String {
    match d {
        wit::Decision::Retry(ms) => serde_json::json!({ "retry": ms }).to_string(),
        wit::Decision::GiveUp(reason) => serde_json::json!({ "give_up": reason }).to_string(),
    }
}

enum Outcome {
    Returned(Result<String, wit::StepError>),
    InstantiateFailed(wasmtime::Error),
    CallFailed(wasmtime::Error),
    TimedOut,
}

/// Run one call of any world in a fresh store. An event hook's `Ok` is JSON `null` and its
/// `Err(message)` a retryable handler error; a policy's decision is
/// `{"retry": ms}` / `{"give_up": reason}`.
pub(crate) async fn run_call(
    engine: &wasmtime::Engine,
    plugin: &Plugin,
    call: Call,
    grants: &AttemptGrants,
    limits: ResolvedLimits,
    queue_wait: Duration,
    tls: &Arc<TlsRoots>,
) -> Result<AttemptOutput, AttemptFailure> {
    let started = Instant::now();
    let mut report = AttemptReport {
        accounting: Usage {
            plugin: Some(PluginId {
                hash: plugin.hash,
                name: plugin.name.clone(),
                version: plugin.version.clone(),
            }),
            fuel_budget: limits.fuel,
            queue_wait_us: queue_wait.as_micros() as u64,
            limits: Some(limits.clone()),
            ..Usage::default()
        },
        ..AttemptReport::default()
    };

    if let Err(error) = limits.validate() {
        return Err(AttemptFailure { error, report });
    }
    if plugin.world() != call.world() {
        let error = SandboxError::Incompatible {
            message: format!(
                "{}@{} is a {} component, not a {}",
                plugin.name,
                plugin.version,
                plugin.world(),
                call.world()
            ),
        };
        return Err(AttemptFailure { error, report });
    }

    let stdout = CappedPipe::new(limits.stdio_bytes);
    let stderr = CappedPipe::new(limits.stdio_bytes);
    let mut b = WasiCtxBuilder::new();
    b.stdout(stdout.clone()).stderr(stderr.clone());
    let denials = DenialLog::default();
    if let Err(error) = caps::apply(grants, &mut b, &denials).await {
        return Err(AttemptFailure { error, report });
    }

    let timeout = Duration::from_millis(limits.timeout_ms);
    // Saturating: a deadline past the end of time is no deadline, never a panic.
    let deadline = started
        .checked_add(timeout)
        .unwrap_or(started + Duration::from_secs(86_400));
    let outbound = match Outbound::new(
        grants,
        &limits,
        tls.clone(),
        denials.clone(),
        started,
        deadline,
    ) {
        Ok(o) => o,
        Err(error) => return Err(AttemptFailure { error, report }),
    };
    let state = AttemptState {
        wasi: b.build(),
        table: ResourceTable::new(),
        http_ctx: WasiHttpCtx::new(),
        outbound,
        limiter: MemoryLimiter::new(limits.memory_bytes),
        journal: Journal {
            max_logs: limits.max_logs,
            max_events: limits.max_events,
            max_message_bytes: usize::try_from(limits.max_message_bytes).unwrap_or(usize::MAX),
            max_log_bytes: usize::try_from(limits.log_bytes).unwrap_or(usize::MAX),
            max_event_name_bytes: limits.event_name_bytes as usize,
            max_depth: limits.output_depth as usize,
            started: Some(started),
            ..Journal::default()
        },
        guard: Guard::new(&limits, !grants.net.is_empty(), denials.clone()),
        deadline,
    };
    let mut store = Store::new(engine, state);
    store.limiter(|s| &mut s.limiter);
    // Fuel yields also write the guest's fuel counter back to the store: without them a
    // spinning guest stopped by the deadline would report almost no fuel used.
    if let Err(e) = store
        .set_fuel(limits.fuel)
        .and_then(|()| store.fuel_async_yield_interval(Some(FUEL_YIELD)))
    {
        return Err(AttemptFailure {
            error: SandboxError::internal(format!("set_fuel: {e:#}")),
            report,
        });
    }
    // Check every tick: yield to the runtime (so a spinning guest cannot hold a worker)
    // until the wall deadline, then interrupt.
    store.set_epoch_deadline(1);
    store.epoch_deadline_callback(|ctx| {
        Ok(if Instant::now() >= ctx.data().deadline {
            UpdateDeadline::Interrupt
        } else {
            UpdateDeadline::Yield(1)
        })
    });

    let outcome = {
        let call = async {
            match (&plugin.compiled.pre, &call) {
                (Pre::StepHandler(pre), Call::Handle(ctx)) => {
                    let handler = match pre.instantiate_async(&mut store).await {
                        Ok(h) => h,
                        Err(e) => return Outcome::InstantiateFailed(e),
                    };
                    match handler.call_handle(&mut store, ctx).await {
                        Ok(r) => Outcome::Returned(r),
                        Err(e) => Outcome::CallFailed(e),
                    }
                }
                (Pre::EventHook(pre), Call::OnEvent(event)) => {
                    let hook = match pre.instantiate_async(&mut store).await {
                        Ok(h) => h,
                        Err(e) => return Outcome::InstantiateFailed(e),
                    };
                    match hook.call_on_event(&mut store, event).await {
                        Ok(Ok(())) => Outcome::Returned(Ok("null".to_owned())),
                        Ok(Err(message)) => {
                            Outcome::Returned(Err(wit::StepError::Retryable(wit::RetryableError {
                                message,
                                retry_after_ms: None,
                            })))
                        }
                        Err(e) => Outcome::CallFailed(e),
                    }
                }
                (Pre::RetryPolicy(pre), Call::Decide(failure)) => {
                    let policy = match pre.instantiate_async(&mut store).await {
                        Ok(h) => h,
                        Err(e) => return Outcome::InstantiateFailed(e),
                    };
                    match policy.call_decide(&mut store, failure).await {
                        Ok(d) => Outcome::Returned(Ok(decision_json(&d))),
                        Err(e) => Outcome::CallFailed(e),
                    }
                }
                // Checked before the store was built; kept total rather than panicking.
                _ => Outcome::InstantiateFailed(wasmtime::Error::msg("world mismatch")),
            }
        };
        // Backstop for a guest blocked in a host call, where epochs do not reach. It fires
        // a little after the epoch deadline so a spinning guest is interrupted by the epoch
        // (which keeps its fuel accounting) rather than dropped.
        let backstop = timeout + Duration::from_millis(50) + timeout / 20;
        match tokio::time::timeout(backstop, call).await {
            Ok(o) => o,
            Err(_) => Outcome::TimedOut,
        }
    };

    let fuel_left = store.get_fuel().unwrap_or(0);
    let state = store.into_data();
    let acc = &mut report.accounting;
    acc.fuel_consumed = limits.fuel.saturating_sub(fuel_left);
    acc.peak_memory_bytes = state.limiter.peak;
    acc.wall_time_us = started.elapsed().as_micros() as u64;
    let stderr_text = stderr.peek();
    let (out_text, out_dropped) = stdout.take();
    let (_, err_dropped) = stderr.take();
    report.stdout = out_text;
    report.stderr = stderr_text;
    report.dropped = Dropped {
        stdout_bytes: out_dropped,
        stderr_bytes: err_dropped,
        logs: state.journal.logs_dropped,
        events: state.journal.events_dropped,
    };
    report.logs = state.journal.logs;
    report.events = state.journal.events;
    report.denials = denials.snapshot();
    let (http, cut_by_deadline) = state.outbound.finish();
    report.http = http;

    let result = classify(
        outcome,
        &limits,
        state.limiter.denied,
        cut_by_deadline,
        &report,
    );
    let secrets = state.outbound.secrets();
    let result = if secrets.is_empty() {
        result
    } else {
        redact::report(&mut report, secrets);
        result
            .map(|v| redact::value(v, secrets))
            .map_err(|e| redact::error(e, secrets))
    };
    match result {
        Ok(output) => Ok(AttemptOutput { output, report }),
        Err(error) => Err(AttemptFailure { error, report }),
    }
}

fn classify(
    outcome: Outcome,
    limits: &ResolvedLimits,
    memory_denied: Option<u64>,
    http_cut_by_deadline: bool,
    report: &AttemptReport,
) -> Result<serde_json::Value, SandboxError> {
    let max_message = usize::try_from(limits.error_message_bytes).unwrap_or(usize::MAX);
    let failure = match outcome {
        Outcome::Returned(Ok(text)) => {
            if text.len() as u64 > limits.output_bytes {
                return Err(SandboxError::BadOutput {
                    reason: format!(
                        "output is {} bytes, over the {} byte cap",
                        text.len(),
                        limits.output_bytes
                    ),
                });
            }
            // Checked before parsing: the store nests a result deeper when it hands it on.
            let depth = json_depth(&text);
            if depth > limits.output_depth as usize {
                return Err(SandboxError::BadOutput {
                    reason: format!(
                        "output nests {depth} levels deep, over the {} level cap",
                        limits.output_depth
                    ),
                });
            }
            return serde_json::from_str(&text).map_err(|e| {
                let head: String = text.chars().take(80).collect();
                SandboxError::BadOutput {
                    reason: format!("output is not valid JSON ({e}); it starts with {head:?}"),
                }
            });
        }
        // A guest that caught its failed allocation (JS "out of memory", a NULL from
        // malloc) and returned an error: the memory cap is still the cause.
        Outcome::Returned(Err(_)) if memory_denied.is_some() => SandboxError::OutOfMemory {
            requested_bytes: memory_denied.unwrap_or(0),
            limit_bytes: limits.memory_bytes,
        },
        Outcome::Returned(Err(wit::StepError::Retryable(r))) => SandboxError::HandlerError {
            message: truncate(r.message, max_message),
            retryable: true,
            retry_after_ms: r.retry_after_ms,
        },
        Outcome::Returned(Err(wit::StepError::Permanent(message))) => SandboxError::HandlerError {
            message: truncate(message, max_message),
            retryable: false,
            retry_after_ms: None,
        },
        Outcome::TimedOut => SandboxError::Timeout {
            limit_ms: limits.timeout_ms,
        },
        // A denied growth is the cause, whatever trap the guest's allocator turned it into.
        Outcome::InstantiateFailed(_) | Outcome::CallFailed(_) if memory_denied.is_some() => {
            SandboxError::OutOfMemory {
                requested_bytes: memory_denied.unwrap_or(0),
                limit_bytes: limits.memory_bytes,
            }
        }
        Outcome::InstantiateFailed(e) if e.downcast_ref::<Trap>().is_none() => {
            SandboxError::internal(format!("cannot instantiate: {e:#}"))
        }
        Outcome::InstantiateFailed(e) | Outcome::CallFailed(e) => {
            trap_error(e, limits, &report.stderr, max_message)
        }
    };
    Err(host_cause(failure, limits, http_cut_by_deadline, report))
}

fn trap_error(
    e: wasmtime::Error,
    limits: &ResolvedLimits,
    stderr: &str,
    max_message: usize,
) -> SandboxError {
    // Function names come from the guest's name section: bounded like its messages.
    let backtrace = e
        .downcast_ref::<WasmBacktrace>()
        .map(|bt| truncate(bt.to_string(), max_message));
    match e.downcast_ref::<Trap>() {
        Some(Trap::OutOfFuel) => SandboxError::OutOfFuel {
            budget: limits.fuel,
        },
        Some(Trap::Interrupt) => SandboxError::Timeout {
            limit_ms: limits.timeout_ms,
        },
        trap => {
            let code = trap.map(|t| format!("{t:?}"));
            let message = match panic_message(stderr) {
                Some(panic) => panic,
                None => {
                    let m = match trap {
                        Some(t) => t.to_string(),
                        None => format!("{e:#}"),
                    };
                    // What the guest said first, if anything: the cause comes before
                    // stacks and abort notices (e.g. why a JS runtime aborted).
                    match stderr.lines().map(str::trim).find(|l| !l.is_empty()) {
                        Some(first) => {
                            let said: String = first.chars().take(500).collect();
                            format!("{m} (stderr: {said})")
                        }
                        None => m,
                    }
                }
            };
            SandboxError::Trap {
                message: truncate(message, max_message),
                trap_code: code,
                backtrace,
            }
        }
    }
}

/// The guest's own account of a crash, from stderr: the exception line of a Python
/// traceback (componentize-py's runtime then panics with a generic message), else a Rust
/// panic ("panicked at src/lib.rs:9:13:\nboom").
fn panic_message(stderr: &str) -> Option<String> {
    if let Some(tb) = stderr.rfind("Traceback (most recent call last):")
        && let Some(line) = stderr[tb..]
            .lines()
            .skip(1)
            .find(|l| !l.is_empty() && !l.starts_with(char::is_whitespace))
    {
        let line: String = line.chars().take(2000).collect();
        return Some(format!("uncaught Python exception: {line}"));
    }
    let start = stderr.find("panicked at")?;
    let msg: String = stderr[start..]
        .lines()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ");
    Some(msg.chars().take(2000).collect())
}

/// A guest's failure (trap or handler error) after the host stopped something is reported
/// as what the host did, whatever the guest made of it: an HTTP request cut by the
/// attempt's deadline is a `Timeout`, a refusal is `CapabilityDenied`. Only the host's own
/// records count; what the guest says in its error is its own error.
fn host_cause(
    failure: SandboxError,
    limits: &ResolvedLimits,
    http_cut_by_deadline: bool,
    report: &AttemptReport,
) -> SandboxError {
    if !matches!(
        failure,
        SandboxError::Trap { .. } | SandboxError::HandlerError { .. }
    ) {
        return failure;
    }
    if http_cut_by_deadline {
        return SandboxError::Timeout {
            limit_ms: limits.timeout_ms,
        };
    }
    match report.denials.first() {
        Some(d) => SandboxError::CapabilityDenied {
            what: format!("{}: {}", d.capability, d.detail),
            detected_by: d.detected_by.clone(),
            guest_error: failure.to_string(),
        },
        None => failure,
    }
}
