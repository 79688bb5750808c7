//! Attack: panic with a recognisable message.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

struct Boom;

impl Handler for Boom {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        if ctx.attempt < u32::MAX {
            panic!("boom: the guest gave up on attempt {}", ctx.attempt);
        }
        Ok(())
    }
}

export_handler!(Boom);
