//! A hook that panics on every event.
use tasker_guest_sdk::{Event, EventHook, export_event_hook};

struct Boom;

impl EventHook for Boom {
    fn on_event(event: Event) -> Result<(), String> {
        if !event.name.is_empty() {
            panic!("boom: the hook gave up on {}", event.name);
        }
        Ok(())
    }
}

export_event_hook!(Boom);
