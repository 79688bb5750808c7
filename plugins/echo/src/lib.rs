//! Returns what it was given, logs a line and emits one event.
use tasker_guest_sdk::{Context, Handler, StepError, emit, export_handler, json, log};

struct Echo;

impl Handler for Echo {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        log::info(&format!("echo {} attempt {}", ctx.step_name, ctx.attempt));
        emit("echoed", &json!({ "step": ctx.step_name }));
        Ok(json!({
            "task_id": ctx.task_id,
            "step": ctx.step_name,
            "attempt": ctx.attempt,
            "context": ctx.context,
            "parents": ctx.parents,
            "config": ctx.config,
        }))
    }
}

export_handler!(Echo);
