//! Attack: allocate (and touch) memory until something gives.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

struct Hog;

impl Handler for Hog {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let mut hoard: Vec<Vec<u8>> = Vec::new();
        loop {
            hoard.push(vec![0xA5; 1 << 20]);
            std::hint::black_box(&hoard);
            if hoard.len() == usize::MAX {
                break;
            }
        }
        Ok(hoard.len())
    }
}

export_handler!(Hog);
