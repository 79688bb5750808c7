//! A hook that never returns.
use tasker_guest_sdk::{Event, EventHook, export_event_hook};

struct Spin;

impl EventHook for Spin {
    fn on_event(_event: Event) -> Result<(), String> {
        let mut x: u64 = 0;
        loop {
            x = std::hint::black_box(x.wrapping_add(1));
            if x == u64::MAX {
                return Ok(());
            }
        }
    }
}

export_event_hook!(Spin);
