//! Data pipeline, step 1: reads every `*.csv` file of the granted input directory.
//! Config: `{"input": "/input"}`. The directory must be granted (read-only is enough).
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, log};

#[derive(Deserialize)]
struct Config {
    input: String,
}

#[derive(Serialize)]
struct File {
    name: String,
    bytes: usize,
    text: String,
}

#[derive(Serialize)]
struct Files {
    files: Vec<File>,
}

struct Read;

impl Handler for Read {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let mut names: Vec<String> = std::fs::read_dir(&cfg.input)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .filter(|n| n.ends_with(".csv"))
            .collect();
        names.sort();
        if names.is_empty() {
            return Err(StepError::permanent(format!(
                "no .csv files in {}",
                cfg.input
            )));
        }
        let mut files = Vec::with_capacity(names.len());
        for name in names {
            let text = std::fs::read_to_string(format!("{}/{name}", cfg.input))?;
            log::info(&format!("read {name}: {} bytes", text.len()));
            files.push(File {
                bytes: text.len(),
                name,
                text,
            });
        }
        Ok(Files { files })
    }
}

export_handler!(Read);
