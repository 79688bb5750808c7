//! Refuses every event: its deliveries retry, then go dead.
use tasker_guest_sdk::{Event, EventHook, export_event_hook};

struct Refuse;

impl EventHook for Refuse {
    fn on_event(event: Event) -> Result<(), String> {
        Err(format!("downstream refused {}", event.name))
    }
}

export_event_hook!(Refuse);
