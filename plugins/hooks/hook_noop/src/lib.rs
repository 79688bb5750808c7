//! Accepts every event and does nothing: the benchmark's hook and a delivery witness.
use tasker_guest_sdk::{Event, EventHook, export_event_hook};

struct Noop;

impl EventHook for Noop {
    fn on_event(_event: Event) -> Result<(), String> {
        Ok(())
    }
}

export_event_hook!(Noop);
