//! Appends every event it receives, as one JSON line, to `/audit/events.jsonl` (a
//! directory the template grants read-write). Idempotence is left to the reader: each line
//! carries the event's identity (name, task, step, attempt).
use std::io::Write;

use tasker_guest_sdk::{Event, EventHook, export_event_hook, json};

struct Audit;

impl EventHook for Audit {
    fn on_event(event: Event) -> Result<(), String> {
        let line = json!({
            "name": event.name,
            "task_id": event.task_id,
            "step_id": event.step_id,
            "attempt": event.attempt,
            "timestamp_ms": event.timestamp_ms,
            "payload": event.payload,
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/audit/events.jsonl")
            .map_err(|e| format!("cannot open /audit/events.jsonl: {e}"))?;
        // One write per line, so a crash never leaves half a line behind.
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("cannot append: {e}"))
    }
}

export_event_hook!(Audit);
