//! Polyglot example, step 1 (Rust): accept a batch of raw records from the task context.
//! Checks the envelope only (batch id, currency, a non-empty list of objects within the
//! configured size) and numbers the rows; the records themselves are validated by the
//! Python `normalise` step.
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, log};

#[derive(Deserialize)]
struct Batch {
    batch_id: String,
    #[serde(default = "default_currency")]
    currency: String,
    records: Vec<Value>,
}

fn default_currency() -> String {
    "EUR".into()
}

#[derive(Deserialize)]
#[serde(default)]
struct Config {
    max_records: usize,
}

impl Default for Config {
    fn default() -> Self {
        Self {
            max_records: 10_000,
        }
    }
}

#[derive(Serialize)]
struct Ingested {
    batch_id: String,
    currency: String,
    received: usize,
    records: Vec<Map<String, Value>>,
}

struct Ingest;

impl Handler for Ingest {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let batch: Batch = ctx.context_as()?;
        let cfg: Config = ctx.config_as()?;
        if batch.batch_id.trim().is_empty() {
            return Err(StepError::permanent("batch_id is empty"));
        }
        if batch.currency.len() != 3 || !batch.currency.chars().all(|c| c.is_ascii_uppercase()) {
            return Err(StepError::permanent(format!(
                "currency {:?} is not an ISO 4217 code",
                batch.currency
            )));
        }
        if batch.records.is_empty() || batch.records.len() > cfg.max_records {
            return Err(StepError::permanent(format!(
                "records: {} given, expected 1 to {}",
                batch.records.len(),
                cfg.max_records
            )));
        }
        let mut records = Vec::with_capacity(batch.records.len());
        for (i, r) in batch.records.into_iter().enumerate() {
            let Value::Object(mut obj) = r else {
                return Err(StepError::permanent(format!(
                    "records[{i}] is not an object"
                )));
            };
            obj.insert("row".into(), Value::from(i + 1));
            records.push(obj);
        }
        log::info(&format!(
            "batch {}: {} records",
            batch.batch_id,
            records.len()
        ));
        Ok(Ingested {
            batch_id: batch.batch_id,
            currency: batch.currency,
            received: records.len(),
            records,
        })
    }
}

export_handler!(Ingest);
