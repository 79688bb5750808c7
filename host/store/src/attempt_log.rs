//! What a handler said during one attempt: its log records, stdout and stderr, kept with the
//! attempt's row (`attempts.logs`, JSON; absent when the attempt said nothing). Bounded by
//! the sandbox's per-attempt limits (`[limits] max_logs`, `log_bytes`, `stdio_bytes`), which
//! also count what they dropped.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;

pub use tasker_core::http_record::HttpRecord;

use crate::error::StoreError;
use crate::ids::StepId;
use crate::types::AttemptOutcome;

/// The `attempts` columns that `attempts_of_step` reads: all but `logs`, which only
/// `attempt_logs` reads, so a status listing never carries every attempt's output.
pub(crate) const ATTEMPT_COLUMNS: &str = "step_id, attempt_no, task_id, worker, started_at, \
    finished_at, outcome, error_kind, message, retryable, decision, next_ready_at, fuel, \
    peak_memory_bytes, wall_us, plugin_hash, decided_by, decision_detail, policy_warning";

/// Which attempts have output to show: the ones that ran (lease losses, releases and
/// cancellations record no handler output).
pub(crate) const LOGGED_OUTCOMES: &str = "('completed', 'failed')";

/// A log record's level, as the guest's `log` call gave it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum LogLevel {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl LogLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            LogLevel::Trace => "trace",
            LogLevel::Debug => "debug",
            LogLevel::Info => "info",
            LogLevel::Warn => "warn",
            LogLevel::Error => "error",
        }
    }

    pub fn parse(s: &str) -> Option<LogLevel> {
        Some(match s {
            "trace" => LogLevel::Trace,
            "debug" => LogLevel::Debug,
            "info" => LogLevel::Info,
            "warn" => LogLevel::Warn,
            "error" => LogLevel::Error,
            _ => return None,
        })
    }
}

/// One `log` call.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    /// Microseconds since the attempt started.
    pub at_us: u64,
    pub level: LogLevel,
    pub message: String,
}

/// What the bounds threw away.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct LogDropped {
    pub lines: u32,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

impl LogDropped {
    pub fn any(&self) -> bool {
        self.lines > 0 || self.stdout_bytes > 0 || self.stderr_bytes > 0
    }
}

/// Everything one attempt said, and the HTTP requests it made.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct AttemptLog {
    pub lines: Vec<LogLine>,
    pub stdout: String,
    pub stderr: String,
    pub dropped: LogDropped,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRecord>,
}

impl AttemptLog {
    pub fn is_empty(&self) -> bool {
        self.lines.is_empty()
            && self.stdout.is_empty()
            && self.stderr.is_empty()
            && !self.dropped.any()
            && self.http.is_empty()
    }

    /// The stored form: `None` for an attempt that said nothing, so quiet steps store nothing.
    pub fn to_json(&self) -> Option<Value> {
        if self.is_empty() {
            return None;
        }
        Some(serde_json::to_value(self).expect("an attempt log serializes"))
    }

    /// From the stored form (`None`: the attempt said nothing).
    pub fn from_json(v: Option<Value>) -> Result<AttemptLog, StoreError> {
        match v {
            None | Some(Value::Null) => Ok(AttemptLog::default()),
            Some(v) => {
                serde_json::from_value(v).map_err(|e| StoreError::decode("attempts.logs", e))
            }
        }
    }
}

/// One attempt's log, as `tasker logs` and `GET /v1/steps/{id}/logs` read it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AttemptLogRow {
    pub step_id: StepId,
    /// The claim's fencing token, as in [`crate::AttemptRow::attempt_no`].
    pub attempt_no: i64,
    pub outcome: AttemptOutcome,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub log: AttemptLog,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_quiet_attempt_stores_nothing_and_reads_back_empty() {
        assert_eq!(AttemptLog::default().to_json(), None);
        assert_eq!(AttemptLog::from_json(None).unwrap(), AttemptLog::default());
    }

    #[test]
    fn the_stored_form_round_trips_and_counts_what_was_dropped() {
        let log = AttemptLog {
            lines: vec![LogLine {
                at_us: 12,
                level: LogLevel::Warn,
                message: "careful".into(),
            }],
            stdout: String::new(),
            stderr: "boom\n".into(),
            dropped: LogDropped {
                lines: 3,
                ..LogDropped::default()
            },
            http: Vec::new(),
        };
        let stored = log.to_json().unwrap();
        assert_eq!(stored["lines"][0]["level"], "warn");
        // Logs stored before HTTP records existed have no `http` field.
        assert!(stored.get("http").is_none(), "{stored}");
        assert_eq!(AttemptLog::from_json(Some(stored)).unwrap(), log);
        let with_http = AttemptLog {
            http: vec![HttpRecord {
                method: "GET".into(),
                url: "https://x.test/".into(),
                status: Some(200),
                ..HttpRecord::default()
            }],
            ..AttemptLog::default()
        };
        let stored = with_http.to_json().unwrap();
        assert_eq!(stored["http"][0]["status"], 200);
        assert_eq!(AttemptLog::from_json(Some(stored)).unwrap(), with_http);
        // Only drops: still worth storing, so the reader learns output was cut.
        let only_drops = AttemptLog {
            dropped: LogDropped {
                stdout_bytes: 1,
                ..LogDropped::default()
            },
            ..AttemptLog::default()
        };
        assert!(only_drops.to_json().is_some());
    }

    #[test]
    fn a_corrupt_stored_log_is_a_decode_error_naming_the_column() {
        let e = AttemptLog::from_json(Some(serde_json::json!({"lines": 5}))).unwrap_err();
        assert!(e.to_string().contains("attempts.logs"), "{e}");
    }

    #[test]
    fn levels_parse_what_they_print() {
        for l in [
            LogLevel::Trace,
            LogLevel::Debug,
            LogLevel::Info,
            LogLevel::Warn,
            LogLevel::Error,
        ] {
            assert_eq!(LogLevel::parse(l.as_str()), Some(l));
        }
        assert_eq!(LogLevel::parse("loud"), None);
    }
}
