//! A hook that allocates until it is stopped.
use tasker_guest_sdk::{Event, EventHook, export_event_hook};

struct Hog;

impl EventHook for Hog {
    fn on_event(_event: Event) -> Result<(), String> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
            if hoard.len() == usize::MAX {
                return Ok(());
            }
        }
    }
}

export_event_hook!(Hog);
