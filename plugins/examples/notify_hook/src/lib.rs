//! Subscribed to `task.failed`: writes a notice for the operator to `/outbox/<task>.txt` (a
//! granted directory standing in for a mail or chat API) and logs it.
use tasker_guest_sdk::{Event, EventHook, export_event_hook, log};

struct Notify;

impl EventHook for Notify {
    fn on_event(event: Event) -> Result<(), String> {
        if event.name != "task.failed" {
            return Ok(());
        }
        let text = format!(
            "task {} failed (reason: {})\n",
            event.task_id,
            event
                .payload
                .get("reason")
                .and_then(|r| r.as_str())
                .unwrap_or("unknown")
        );
        log::warn(text.trim_end());
        std::fs::write(format!("/outbox/task-{}.txt", event.task_id), text)
            .map_err(|e| format!("cannot write the notice: {e}"))
    }
}

export_event_hook!(Notify);
