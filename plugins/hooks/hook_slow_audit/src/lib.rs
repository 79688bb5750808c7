//! Like the audit hook, but takes 20 ms per event: deliveries are in flight long enough for
//! the crash test to kill a worker in the middle of one.
use std::io::Write;

use tasker_guest_sdk::{Event, EventHook, export_event_hook, json};

struct SlowAudit;

impl EventHook for SlowAudit {
    fn on_event(event: Event) -> Result<(), String> {
        std::thread::sleep(std::time::Duration::from_millis(20));
        let line = json!({
            "name": event.name,
            "task_id": event.task_id,
            "step_id": event.step_id,
        });
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("/audit/events.jsonl")
            .map_err(|e| format!("cannot open /audit/events.jsonl: {e}"))?;
        f.write_all(format!("{line}\n").as_bytes())
            .map_err(|e| format!("cannot append: {e}"))
    }
}

export_event_hook!(SlowAudit);
