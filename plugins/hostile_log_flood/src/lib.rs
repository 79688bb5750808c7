//! Attack: log far more than any sane total, each message just under the per-message cap.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, log};

#[derive(Deserialize)]
struct Config {
    count: usize,
    bytes: usize,
}

struct Chatter;

impl Handler for Chatter {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let line = "l".repeat(cfg.bytes);
        for _ in 0..cfg.count {
            log::info(&line);
        }
        Ok(cfg.count)
    }
}

export_handler!(Chatter);
