//! Data pipeline, last step: writes the summary as `report.json` and `report.md` into the
//! granted output directory. Config: `{"output": "/output"}` (must be granted read-write).
use std::fmt::Write as _;

use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, Value, export_handler};

#[derive(Deserialize)]
struct Config {
    output: String,
}

#[derive(Serialize)]
struct Written {
    files: Vec<String>,
    bytes: usize,
}

fn dollars(cents: &Value) -> String {
    let c = cents.as_u64().unwrap_or(0);
    format!("${}.{:02}", c / 100, c % 100)
}

fn markdown(s: &Value) -> String {
    let mut md = String::from("# Sales report\n\n");
    let t = &s["total"];
    let _ = writeln!(
        md,
        "{} orders, {} units, {} revenue; {} rows rejected.\n",
        t["orders"],
        t["units"],
        dollars(&t["revenue_cents"]),
        s["rejected_rows"]
    );
    for (title, key) in [("Region", "by_region"), ("Month", "by_month")] {
        let _ = writeln!(
            md,
            "| {title} | Orders | Units | Revenue |\n|---|---:|---:|---:|"
        );
        if let Some(map) = s[key].as_object() {
            for (k, v) in map {
                let _ = writeln!(
                    md,
                    "| {k} | {} | {} | {} |",
                    v["orders"],
                    v["units"],
                    dollars(&v["revenue_cents"])
                );
            }
        }
        md.push('\n');
    }
    md.push_str("## Top products\n\n");
    for (i, p) in s["top_products"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        let _ = writeln!(
            md,
            "{}. {} ({})",
            i + 1,
            p["product"].as_str().unwrap_or("?"),
            dollars(&p["revenue_cents"])
        );
    }
    md
}

struct Write;

impl Handler for Write {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let summary: Value = ctx.parent_as("aggregate")?;
        let json = serde_json_pretty(&summary)?;
        let md = markdown(&summary);
        let mut files = Vec::new();
        for (name, body) in [("report.json", &json), ("report.md", &md)] {
            let path = format!("{}/{name}", cfg.output);
            std::fs::write(&path, body)?;
            files.push(path);
        }
        Ok(Written {
            files,
            bytes: json.len() + md.len(),
        })
    }
}

fn serde_json_pretty(v: &Value) -> Result<String, StepError> {
    tasker_guest_sdk::serde_json::to_string_pretty(v)
        .map_err(|e| StepError::permanent(format!("cannot render the report: {e}")))
}

export_handler!(Write);
