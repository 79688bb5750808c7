//! Sleeps `config.ms` milliseconds (in a host call, where epochs do not reach), then
//! returns. Used to keep a call in flight across a hot reload and to test the deadline
//! backstop for guests blocked in the host.
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, json};

struct Slow;

impl Handler for Slow {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let ms: u64 = ctx.config_field("ms")?;
        std::thread::sleep(std::time::Duration::from_millis(ms));
        Ok(json!({ "slept_ms": ms }))
    }
}

export_handler!(Slow);
