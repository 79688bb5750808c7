//! Attack: read files outside the granted directory (absolute path, then `..` escape).
use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Config {
    /// Paths to try, e.g. ["/etc/passwd", "/input/../secret.txt"].
    paths: Vec<String>,
}

struct Escape;

impl Handler for Escape {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let mut stolen = Vec::new();
        for p in &cfg.paths {
            // Propagate the OS error text: it is the evidence of the denial.
            let text = std::fs::read_to_string(p)
                .map_err(|e| StepError::permanent(format!("reading {p}: {e}")))?;
            stolen.push(text);
        }
        Ok(stolen)
    }
}

export_handler!(Escape);
