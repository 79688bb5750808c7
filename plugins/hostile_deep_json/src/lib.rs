//! Attack: return a result nested deeper than the host accepts (arrays in arrays).
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, Value, export_handler};

#[derive(Deserialize)]
struct Config {
    depth: usize,
}

struct Deep;

impl Handler for Deep {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let mut v = Value::from(1);
        for _ in 0..cfg.depth {
            v = Value::Array(vec![v]);
        }
        Ok(v)
    }
}

export_handler!(Deep);
