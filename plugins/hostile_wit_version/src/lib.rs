//! Attack: a component built against another, incompatible version of the
//! Tasker WIT package (0.2.0: a different context record and error type).
wit_bindgen::generate!({ world: "step-handler", path: "wit" });

struct Future;

impl Guest for Future {
    fn handle(ctx: StepContext) -> Result<String, String> {
        Ok(format!("{{\"deadline\": {}}}", ctx.deadline_ms))
    }
}

export!(Future);
