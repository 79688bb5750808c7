//! Fails the way its config says: `{"mode": "retryable", "retry_after_ms": 250}` or
//! `{"mode": "permanent"}`; any other mode succeeds. Used to test HandlerError.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    mode: String,
    retry_after_ms: Option<u64>,
}

struct Fail;

impl Handler for Fail {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        match (cfg.mode.as_str(), cfg.retry_after_ms) {
            ("retryable", Some(ms)) => Err(StepError::retry_after("upstream busy", ms)),
            ("retryable", None) => Err(StepError::retryable("upstream busy")),
            ("permanent", _) => Err(StepError::permanent("input rejected")),
            _ => Ok("ok"),
        }
    }
}

export_handler!(Fail);
