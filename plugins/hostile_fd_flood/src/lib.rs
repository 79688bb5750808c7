//! Attack: open one granted file again and again, holding every descriptor.
use serde::Deserialize;
use std::io::Read;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    path: String,
}

struct Hoard;

impl Handler for Hoard {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let mut held = Vec::new();
        let refusal = loop {
            if held.len() >= 50_000 {
                break "no refusal".to_string();
            }
            match std::fs::File::open(&cfg.path) {
                Ok(mut f) => {
                    // Reading may also open a stream over the file.
                    let mut b = [0u8; 1];
                    let _ = f.read(&mut b);
                    held.push(f);
                }
                Err(e) => break e.to_string(),
            }
        };
        Err::<(), _>(StepError::permanent(format!(
            "held {} files, then: {refusal}",
            held.len()
        )))
    }
}

export_handler!(Hoard);
