//! The `tasker:plugin/host` interface: logging and custom events, kept on the attempt
//! with bounds (each message, all logs together, event names and payloads) so a chatty
//! guest cannot grow host memory or inject control characters into what is printed.

use serde::{Deserialize, Serialize};

use crate::attempt::AttemptState;
use crate::bindings::tasker::plugin::{host, types};
use crate::bounds::{json_depth, printable, truncate};

/// One `log` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogRecord {
    /// "trace", "debug", "info", "warn" or "error".
    pub level: String,
    pub message: String,
    /// Microseconds since the attempt started.
    #[serde(default)]
    pub at_us: u64,
}

/// One `emit-event` call.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EmittedEvent {
    pub name: String,
    pub payload: serde_json::Value,
}

/// What the guest sent through the host interface, bounded.
#[derive(Debug, Default)]
pub(crate) struct Journal {
    pub logs: Vec<LogRecord>,
    pub events: Vec<EmittedEvent>,
    pub logs_dropped: u32,
    pub events_dropped: u32,
    pub max_logs: u32,
    pub max_events: u32,
    pub max_message_bytes: usize,
    /// Cap on all kept log messages together, in bytes.
    pub max_log_bytes: usize,
    pub log_bytes: usize,
    pub max_event_name_bytes: usize,
    pub max_depth: usize,
    /// When the attempt started (log records carry their offset from it).
    pub started: Option<std::time::Instant>,
}

fn level_name(level: types::LogLevel) -> &'static str {
    match level {
        types::LogLevel::Trace => "trace",
        types::LogLevel::Debug => "debug",
        types::LogLevel::Info => "info",
        types::LogLevel::Warn => "warn",
        types::LogLevel::Error => "error",
    }
}

impl types::Host for AttemptState {}

impl host::Host for AttemptState {
    fn log(&mut self, level: types::LogLevel, message: String) {
        let j = &mut self.journal;
        if j.logs.len() >= j.max_logs as usize {
            j.logs_dropped = j.logs_dropped.saturating_add(1);
            return;
        }
        let message = truncate(message, j.max_message_bytes);
        // Over the total: dropped whole (counted), so kept records are never cut twice.
        if j.log_bytes + message.len() > j.max_log_bytes {
            j.logs_dropped = j.logs_dropped.saturating_add(1);
            return;
        }
        j.log_bytes += message.len();
        j.logs.push(LogRecord {
            level: level_name(level).to_string(),
            message,
            at_us: j.started.map_or(0, |t| {
                u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX)
            }),
        });
    }

    fn emit_event(&mut self, name: String, payload: String) {
        let j = &mut self.journal;
        // Oversized or invalid events are dropped (counted), never half-kept.
        if j.events.len() >= j.max_events as usize
            || payload.len() > j.max_message_bytes
            || name.len() > j.max_event_name_bytes
            || !printable(&name)
            || json_depth(&payload) > j.max_depth
        {
            j.events_dropped = j.events_dropped.saturating_add(1);
            return;
        }
        match serde_json::from_str(&payload) {
            Ok(payload) => j.events.push(EmittedEvent { name, payload }),
            Err(_) => j.events_dropped = j.events_dropped.saturating_add(1),
        }
    }
}
