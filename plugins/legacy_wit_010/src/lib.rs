//! A step handler built against `tasker:plugin@0.1.0` (the WIT before outbound HTTP, frozen
//! in `wit/`): hosts that moved on to a newer minor version must keep loading it.
//! Returns `{"legacy": true, "echo": <config>}` and logs one line through the 0.1.0 host.
#![allow(clippy::too_many_arguments)] // generated bindings

wit_bindgen::generate!({ world: "step-handler", path: "wit" });

use tasker::plugin::host;
use tasker::plugin::types::LogLevel;

struct Legacy;

impl Guest for Legacy {
    fn handle(ctx: StepContext) -> Result<Json, StepError> {
        let config: serde_json::Value = serde_json::from_str(&ctx.config)
            .map_err(|e| StepError::Permanent(format!("config is not JSON: {e}")))?;
        host::log(
            LogLevel::Info,
            &format!("legacy 0.1.0 handler, attempt {}", ctx.attempt),
        );
        Ok(serde_json::json!({ "legacy": true, "echo": config }).to_string())
    }
}

export!(Legacy);
