//! Stands in for a call to a remote API, failing the way real ones do (config `mode`):
//! - `validation`: the input is rejected (`validation: ...`, retryable by its own verdict,
//!   so only a policy that understands it gives up early);
//! - `rate_limited`: the server asks to come back after `retry_after_ms` (first attempt only);
//! - `flaky`: fails the first `fail_times` attempts, then succeeds;
//! - anything else: succeeds.
//!
//! The task context may override a step's mode: `{"modes": {"<step>": "validation"}}`.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, emit, export_handler, json};

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    mode: String,
    #[serde(default)]
    retry_after_ms: Option<u64>,
    #[serde(default)]
    fail_times: u32,
}

struct Flaky;

impl Handler for Flaky {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let mut cfg: Config = ctx.config_as()?;
        if let Some(mode) = ctx.context.pointer(&format!("/modes/{}", ctx.step_name)) {
            cfg.mode = mode.as_str().unwrap_or_default().to_owned();
        }
        match cfg.mode.as_str() {
            "validation" => Err(StepError::retryable(
                "validation: field `amount` is negative",
            )),
            "rate_limited" if ctx.attempt == 1 => Err(StepError::retry_after(
                "rate-limited: 429 Too Many Requests",
                cfg.retry_after_ms.unwrap_or(1000),
            )),
            "flaky" if ctx.attempt <= cfg.fail_times => Err(StepError::retryable(format!(
                "upstream unavailable (attempt {})",
                ctx.attempt
            ))),
            _ => {
                emit(
                    "api_called",
                    &json!({ "step": ctx.step_name, "attempt": ctx.attempt }),
                );
                Ok(json!({ "ok": true, "attempt": ctx.attempt }))
            }
        }
    }
}

export_handler!(Flaky);
