//! Attack: return a result far larger than any sane output cap (4 MiB string).
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

struct Flood;

impl Handler for Flood {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        Ok("x".repeat(4 << 20))
    }
}

export_handler!(Flood);
