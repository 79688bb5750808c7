//! Attack: terminal escapes in everything a guest can get printed: its error message, a log
//! line and an event payload (clear the screen, set the window title, NUL, a C1 CSI, a
//! right-to-left override that reorders what the operator reads).
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, json, log};

struct Escapes;

const NASTY: &str = "\u{1b}[2J\u{1b}]0;pwned\u{7}\0\u{9b}31m\u{202e}desrever";

impl Handler for Escapes {
    fn handle(_ctx: Context) -> Result<impl serde::Serialize, StepError> {
        log::error(NASTY);
        tasker_guest_sdk::emit("nasty", &json!({ "text": NASTY }));
        if NASTY.is_empty() {
            return Ok(());
        }
        Err(StepError::permanent(format!("screen cleared{NASTY}")))
    }
}

export_handler!(Escapes);
