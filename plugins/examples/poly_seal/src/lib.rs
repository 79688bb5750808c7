//! Polyglot example, last step (Rust): cross-check the other languages' work and seal the
//! batch. Recomputes the CRC-32 of the Python step's canonical lines and compares it with
//! the C step's, and checks the JavaScript summary's total against the records. Any
//! disagreement is a permanent error: rerunning the same inputs cannot fix it.
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use tasker_guest_sdk::{Context, Handler, StepError, emit, export_handler};

#[derive(Deserialize)]
struct Normalised {
    batch_id: String,
    valid: Vec<Record>,
    rejected: Vec<serde_json::Value>,
    canonical: String,
}

#[derive(Deserialize)]
struct Record {
    amount_cents: u64,
}

#[derive(Deserialize)]
struct Checksum {
    crc32: String,
    bytes: u64,
    lines: u64,
}

#[derive(Deserialize)]
struct Summary {
    text: String,
    total_cents: u64,
    by_country: BTreeMap<String, serde_json::Value>,
}

#[derive(Serialize)]
struct Sealed {
    batch_id: String,
    crc32: String,
    records: usize,
    rejected: usize,
    total_cents: u64,
    countries: Vec<String>,
    report: String,
}

/// CRC-32 (IEEE 802.3, reflected, poly 0xEDB88320): the same function the C step uses,
/// written independently here so the two implementations check each other.
fn crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc ^= u32::from(b);
        for _ in 0..8 {
            crc = (crc >> 1) ^ (0xEDB8_8320 & (crc & 1).wrapping_neg());
        }
    }
    !crc
}

struct Seal;

impl Handler for Seal {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let norm: Normalised = ctx.parent_as("normalise")?;
        let sums: Checksum = ctx.parent_as("checksum")?;
        let summary: Summary = ctx.parent_as("summary")?;

        let ours = format!("{:08x}", crc32(norm.canonical.as_bytes()));
        if sums.crc32 != ours || sums.bytes != norm.canonical.len() as u64 {
            return Err(StepError::permanent(format!(
                "checksum mismatch: the C step says {} over {} bytes, Rust computes {ours} over {}",
                sums.crc32,
                sums.bytes,
                norm.canonical.len()
            )));
        }
        if sums.lines != norm.valid.len() as u64 {
            return Err(StepError::permanent(format!(
                "the C step counted {} lines for {} records",
                sums.lines,
                norm.valid.len()
            )));
        }
        let total: u64 = norm.valid.iter().map(|r| r.amount_cents).sum();
        if summary.total_cents != total {
            return Err(StepError::permanent(format!(
                "the summary's total {} differs from the records' {total}",
                summary.total_cents
            )));
        }
        emit(
            "batch_sealed",
            &serde_json::json!({ "batch_id": norm.batch_id, "crc32": ours }),
        );
        let report = format!(
            "{}\nSealed: CRC-32 `{ours}` over {} bytes ({} lines), computed in C and checked in Rust.\n",
            summary.text, sums.bytes, sums.lines
        );
        Ok(Sealed {
            batch_id: norm.batch_id,
            crc32: ours,
            records: norm.valid.len(),
            rejected: norm.rejected.len(),
            total_cents: total,
            countries: summary.by_country.into_keys().collect(),
            report,
        })
    }
}

export_handler!(Seal);
