//! Attack: read an environment variable that was not granted.
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, env_var, export_handler};

#[derive(Deserialize)]
struct Config {
    var: String,
}

struct Snoop;

impl Handler for Snoop {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        env_var(&cfg.var)
    }
}

export_handler!(Snoop);
