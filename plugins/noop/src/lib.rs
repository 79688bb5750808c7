//! Does nothing and returns `null`: the benchmark's baseline handler.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

struct Noop;

impl Handler for Noop {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        Ok(())
    }
}

export_handler!(Noop);
