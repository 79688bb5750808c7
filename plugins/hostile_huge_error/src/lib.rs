//! Attack: fail with an error message of many megabytes.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    bytes: usize,
}

struct Shout;

impl Handler for Shout {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        Err::<(), _>(StepError::permanent("e".repeat(cfg.bytes)))
    }
}

export_handler!(Shout);
