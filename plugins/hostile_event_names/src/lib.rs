//! Attack: emit events whose names carry terminal escapes, newlines or megabytes.
use tasker_guest_sdk::{Context, Handler, StepError, emit, export_handler, json};

struct Inject;

impl Handler for Inject {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let long = "n".repeat(10_000);
        for name in [
            "order.checked",
            "\u{1b}[2J\u{1b}[31mpwned",
            "fake\nlog line",
            "nul\0byte",
            "",
            long.as_str(),
        ] {
            emit(name, &json!({ "ok": true }));
        }
        Ok("emitted")
    }
}

export_handler!(Inject);
