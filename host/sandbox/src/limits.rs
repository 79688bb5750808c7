//! Per-attempt limits: what the step may use, with host defaults, and the
//! `ResourceLimiter` that enforces the memory cap and records denials.

use serde::{Deserialize, Serialize};

use crate::error::SandboxError;

/// AttemptLimits for one attempt as the engine passes them: `None` means "host default".
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AttemptLimits {
    /// Fuel budget (roughly one unit per WebAssembly instruction).
    pub fuel: Option<u64>,
    /// Wall-clock deadline for instantiate + call, in milliseconds.
    pub timeout_ms: Option<u64>,
    /// Cap on each linear memory, in bytes. Clamped to the engine's `max_memory_bytes`.
    pub memory_bytes: Option<u64>,
    /// Cap on the handler's JSON result, in bytes.
    pub output_bytes: Option<u64>,
    /// Cap on captured stdout and on captured stderr (each), in bytes. Excess is dropped.
    pub stdio_bytes: Option<u64>,
    /// Cap on log records kept for the attempt; excess is dropped and counted.
    pub max_logs: Option<u32>,
    /// Cap on custom events kept for the attempt; excess is dropped and counted.
    pub max_events: Option<u32>,
    /// Cap on one event payload or log message, in bytes.
    pub max_message_bytes: Option<u64>,
    /// Cap on the JSON nesting depth of the handler's result (and of event payloads).
    /// At most [`MAX_OUTPUT_DEPTH`].
    pub output_depth: Option<u32>,
    /// Cap on a handler's error message, a trap message and a backtrace, in bytes (each).
    /// Longer ones are truncated with a marker.
    pub error_message_bytes: Option<u64>,
    /// Cap on the total bytes of log messages kept for the attempt; excess is dropped and
    /// counted.
    pub log_bytes: Option<u64>,
    /// Cap on an event name, in bytes.
    pub event_name_bytes: Option<u32>,
    /// Cap on sockets the guest holds open at once (needs a `net` grant to open any).
    pub max_sockets: Option<u32>,
    /// Cap on host descriptors the guest holds at once: files and directories it opened,
    /// streams over files, sockets.
    pub max_descriptors: Option<u32>,
    /// Cap on bytes written into `rw` grants during the attempt (every write counts,
    /// and each new directory entry costs [`ENTRY_COST`]).
    pub disk_write_bytes: Option<u64>,
    /// Cap on outbound HTTP requests the attempt may make (`grants.http`).
    pub http_requests: Option<u32>,
    /// Cap on HTTP requests in flight at once; more wait for a slot.
    pub http_concurrency: Option<u32>,
    /// Cap on one HTTP request body, in bytes.
    pub http_request_bytes: Option<u64>,
    /// Cap on one HTTP response body, in bytes.
    pub http_response_bytes: Option<u64>,
    /// Deadline of one HTTP request, connect to last byte; never past the attempt's.
    pub http_timeout_ms: Option<u64>,
}

/// Highest accepted `output_depth`: the store wraps a result one or two levels deeper
/// when it hands it to a child step, and serde_json refuses more than 128 levels.
pub const MAX_OUTPUT_DEPTH: u32 = 100;

/// Quota charged for each new file, directory or link, so a guest cannot flood a grant
/// with empty entries.
pub const ENTRY_COST: u64 = 4096;

/// AttemptLimits with every value decided. Fields missing when deserialized take the built-in
/// defaults (so configs written before a limit existed still load).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ResolvedLimits {
    pub fuel: u64,
    pub timeout_ms: u64,
    pub memory_bytes: u64,
    pub output_bytes: u64,
    pub stdio_bytes: u64,
    pub max_logs: u32,
    pub max_events: u32,
    pub max_message_bytes: u64,
    pub output_depth: u32,
    pub error_message_bytes: u64,
    pub log_bytes: u64,
    pub event_name_bytes: u32,
    pub max_sockets: u32,
    pub max_descriptors: u32,
    pub disk_write_bytes: u64,
    pub http_requests: u32,
    pub http_concurrency: u32,
    pub http_request_bytes: u64,
    pub http_response_bytes: u64,
    pub http_timeout_ms: u64,
}

impl Default for ResolvedLimits {
    /// Built-in host defaults: generous for real handlers, small enough that a hostile
    /// one costs little.
    fn default() -> Self {
        Self {
            fuel: 2_000_000_000,
            timeout_ms: 10_000,
            memory_bytes: 64 << 20,
            output_bytes: 1 << 20,
            stdio_bytes: 64 << 10,
            max_logs: 256,
            max_events: 64,
            max_message_bytes: 16 << 10,
            output_depth: 64,
            error_message_bytes: 16 << 10,
            log_bytes: 256 << 10,
            event_name_bytes: 128,
            max_sockets: 16,
            max_descriptors: 128,
            disk_write_bytes: 64 << 20,
            http_requests: 64,
            http_concurrency: 8,
            http_request_bytes: 8 << 20,
            http_response_bytes: 16 << 20,
            http_timeout_ms: 30_000,
        }
    }
}

impl AttemptLimits {
    /// Fill unset values from `defaults`; clamp memory to what the engine can give.
    pub fn resolve(&self, defaults: &ResolvedLimits, engine_max_memory: u64) -> ResolvedLimits {
        ResolvedLimits {
            fuel: self.fuel.unwrap_or(defaults.fuel),
            timeout_ms: self.timeout_ms.unwrap_or(defaults.timeout_ms),
            memory_bytes: self
                .memory_bytes
                .unwrap_or(defaults.memory_bytes)
                .min(engine_max_memory),
            output_bytes: self.output_bytes.unwrap_or(defaults.output_bytes),
            stdio_bytes: self.stdio_bytes.unwrap_or(defaults.stdio_bytes),
            max_logs: self.max_logs.unwrap_or(defaults.max_logs),
            max_events: self.max_events.unwrap_or(defaults.max_events),
            max_message_bytes: self.max_message_bytes.unwrap_or(defaults.max_message_bytes),
            output_depth: self.output_depth.unwrap_or(defaults.output_depth),
            error_message_bytes: self
                .error_message_bytes
                .unwrap_or(defaults.error_message_bytes),
            log_bytes: self.log_bytes.unwrap_or(defaults.log_bytes),
            event_name_bytes: self.event_name_bytes.unwrap_or(defaults.event_name_bytes),
            max_sockets: self.max_sockets.unwrap_or(defaults.max_sockets),
            max_descriptors: self.max_descriptors.unwrap_or(defaults.max_descriptors),
            disk_write_bytes: self.disk_write_bytes.unwrap_or(defaults.disk_write_bytes),
            http_requests: self.http_requests.unwrap_or(defaults.http_requests),
            http_concurrency: self.http_concurrency.unwrap_or(defaults.http_concurrency),
            http_request_bytes: self
                .http_request_bytes
                .unwrap_or(defaults.http_request_bytes),
            http_response_bytes: self
                .http_response_bytes
                .unwrap_or(defaults.http_response_bytes),
            http_timeout_ms: self.http_timeout_ms.unwrap_or(defaults.http_timeout_ms),
        }
    }
}

impl ResolvedLimits {
    /// Refuse settings the host cannot honour safely.
    pub fn validate(&self) -> Result<(), SandboxError> {
        if self.output_depth == 0 || self.output_depth > MAX_OUTPUT_DEPTH {
            return Err(SandboxError::Config {
                message: format!(
                    "output_depth {} is out of range: it must be 1..={MAX_OUTPUT_DEPTH} (results \
                     are nested deeper when handed to child steps; JSON parsing stops at 128)",
                    self.output_depth
                ),
            });
        }
        if self.timeout_ms == 0 || self.timeout_ms > MAX_TIMEOUT_MS {
            return Err(SandboxError::Config {
                message: format!(
                    "timeout_ms {} is out of range: it must be 1..={MAX_TIMEOUT_MS} (a day)",
                    self.timeout_ms
                ),
            });
        }
        if self.http_concurrency == 0 {
            return Err(SandboxError::Config {
                message: "http_concurrency must be at least 1".into(),
            });
        }
        Ok(())
    }
}

/// The longest wall deadline of one attempt: a day (as templates are checked in
/// `tasker_core::template::LIMIT_MAXIMA`), so `start + timeout` never overflows.
pub const MAX_TIMEOUT_MS: u64 = 86_400_000;

/// Enforces the memory cap itself (instead of `StoreLimits`) so that a denied growth is
/// recorded: a guest whose allocator fails usually aborts with a bare `unreachable` trap,
/// and only this record tells it apart from a panic.
pub(crate) struct MemoryLimiter {
    pub cap: u64,
    pub peak: u64,
    /// The first denied request, in bytes.
    pub denied: Option<u64>,
    table_elements_cap: usize,
}

impl MemoryLimiter {
    pub fn new(cap: u64) -> Self {
        Self {
            cap,
            peak: 0,
            denied: None,
            table_elements_cap: 1 << 20,
        }
    }
}

impl wasmtime::ResourceLimiter for MemoryLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        let desired = desired as u64;
        if desired > self.cap {
            self.denied.get_or_insert(desired);
            return Ok(false);
        }
        self.peak = self.peak.max(desired);
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.table_elements_cap {
            // Tables hold 8-byte references: report the denial as memory.
            self.denied.get_or_insert(desired as u64 * 8);
            return Ok(false);
        }
        Ok(true)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use wasmtime::ResourceLimiter;

    #[test]
    fn unset_limits_take_defaults_and_memory_is_clamped() {
        let d = ResolvedLimits::default();
        let r = AttemptLimits {
            fuel: Some(5),
            memory_bytes: Some(1 << 40),
            ..AttemptLimits::default()
        }
        .resolve(&d, 256 << 20);
        assert_eq!(r.fuel, 5);
        assert_eq!(r.memory_bytes, 256 << 20);
        assert_eq!(r.timeout_ms, d.timeout_ms);
        let err = serde_json::from_str::<AttemptLimits>(r#"{"fuel": 1, "memory": 2}"#).unwrap_err();
        assert!(err.to_string().contains("memory"), "{err}");
    }

    #[test]
    fn output_depth_leaves_headroom_below_serde_json() {
        let d = ResolvedLimits::default();
        assert!(d.validate().is_ok());
        for bad in [0, MAX_OUTPUT_DEPTH + 1, 128] {
            let r = AttemptLimits {
                output_depth: Some(bad),
                ..AttemptLimits::default()
            }
            .resolve(&d, 1 << 30);
            let e = r.validate().unwrap_err();
            assert_eq!(e.kind(), "config");
            assert!(e.to_string().contains("output_depth"), "{e}");
        }
        // Configs written before a limit existed still load.
        let old: ResolvedLimits = serde_json::from_str(r#"{"fuel": 7}"#).unwrap();
        assert_eq!((old.fuel, old.max_sockets), (7, d.max_sockets));
    }

    #[test]
    fn limiter_records_peak_and_first_denial() {
        let mut l = MemoryLimiter::new(100);
        assert!(l.memory_growing(0, 60, None).unwrap());
        assert!(!l.memory_growing(60, 200, None).unwrap());
        assert!(!l.memory_growing(60, 300, None).unwrap());
        assert_eq!((l.peak, l.denied), (60, Some(200)));
    }
}
