//! Attack: write into a directory granted read-only.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    path: String,
}

struct Scribble;

impl Handler for Scribble {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        std::fs::write(&cfg.path, b"defaced").expect("write into the granted directory");
        Ok("written")
    }
}

export_handler!(Scribble);
