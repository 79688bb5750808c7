//! Counts words in every file of a granted input directory and, when an output
//! directory is granted too, writes a report there.
//!
//! Config: `{"input": "/input", "output": "/output"}` (`output` optional).
use std::collections::BTreeMap;

use serde::Deserialize;
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, json};

#[derive(Deserialize)]
struct Config {
    input: String,
    output: Option<String>,
}

struct WordCount;

impl Handler for WordCount {
    fn handle(ctx: Context) -> Result<impl serde::Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let mut files = BTreeMap::new();
        let mut total = 0usize;
        let mut entries: Vec<_> = std::fs::read_dir(&cfg.input)?.collect::<Result<_, _>>()?;
        entries.sort_by_key(|e| e.file_name());
        for entry in entries {
            let text = std::fs::read_to_string(entry.path())?;
            let words = text.split_whitespace().count();
            total += words;
            files.insert(entry.file_name().to_string_lossy().into_owned(), words);
        }
        let report = json!({ "files": files, "total": total });
        if let Some(out) = cfg.output {
            std::fs::write(format!("{out}/report.json"), report.to_string())?;
        }
        Ok(report)
    }
}

export_handler!(WordCount);
