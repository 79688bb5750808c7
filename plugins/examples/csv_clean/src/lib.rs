//! Data pipeline, step 2: parses the sales CSVs and cleans them. Rows with a bad date,
//! region, product or number are dropped with a reason; names are trimmed and normalised.
//! Columns: order_date (YYYY-MM-DD), region, product, units, unit_price.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct File {
    name: String,
    text: String,
}

#[derive(Deserialize)]
struct Files {
    files: Vec<File>,
}

#[derive(Serialize)]
struct Row {
    date: String,
    month: String,
    region: String,
    product: String,
    units: u32,
    revenue_cents: u64,
}

#[derive(Serialize)]
struct Rejected {
    file: String,
    line: u64,
    reason: String,
}

#[derive(Serialize)]
struct Clean {
    rows: Vec<Row>,
    rejected: Vec<Rejected>,
}

const REGIONS: [&str; 4] = ["North", "South", "East", "West"];

fn date_ok(d: &str) -> bool {
    let parts: Vec<&str> = d.split('-').collect();
    let num = |s: &str, len: usize, lo: u32, hi: u32| {
        s.len() == len && s.parse::<u32>().is_ok_and(|v| (lo..=hi).contains(&v))
    };
    parts.len() == 3
        && num(parts[0], 4, 1900, 2100)
        && num(parts[1], 2, 1, 12)
        && num(parts[2], 2, 1, 31)
}

fn region(r: &str) -> Option<&'static str> {
    REGIONS
        .iter()
        .copied()
        .find(|known| known.eq_ignore_ascii_case(r.trim()))
}

fn cents(price: &str) -> Option<u64> {
    let p: f64 = price.trim().trim_start_matches('$').parse().ok()?;
    (p.is_finite() && p >= 0.0).then(|| (p * 100.0).round() as u64)
}

fn clean_row(rec: &csv::StringRecord) -> Result<Row, String> {
    if rec.len() != 5 {
        return Err(format!("expected 5 fields, found {}", rec.len()));
    }
    let date = rec[0].trim();
    if !date_ok(date) {
        return Err(format!("bad date {date:?}"));
    }
    let region = region(&rec[1]).ok_or_else(|| format!("unknown region {:?}", &rec[1]))?;
    let product = rec[2].trim();
    if product.is_empty() {
        return Err("missing product".into());
    }
    let units: u32 = rec[3]
        .trim()
        .parse()
        .map_err(|_| format!("bad units {:?}", &rec[3]))?;
    if units == 0 {
        return Err("zero units".into());
    }
    let price = cents(&rec[4]).ok_or_else(|| format!("bad unit_price {:?}", &rec[4]))?;
    Ok(Row {
        date: date.to_owned(),
        month: date[..7].to_owned(),
        region: region.to_owned(),
        product: product.to_lowercase(),
        units,
        revenue_cents: price * u64::from(units),
    })
}

struct CleanStep;

impl Handler for CleanStep {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let input: Files = ctx.parent_as("read")?;
        let mut out = Clean {
            rows: Vec::new(),
            rejected: Vec::new(),
        };
        for file in &input.files {
            let mut reader = csv::ReaderBuilder::new()
                .flexible(true)
                .from_reader(file.text.as_bytes());
            for rec in reader.records() {
                let (line, result) = match rec {
                    Ok(rec) => (rec.position().map_or(0, |p| p.line()), clean_row(&rec)),
                    Err(e) => (
                        e.position().map_or(0, |p| p.line()),
                        Err(format!("unreadable row: {e}")),
                    ),
                };
                match result {
                    Ok(row) => out.rows.push(row),
                    Err(reason) => out.rejected.push(Rejected {
                        file: file.name.clone(),
                        line,
                        reason,
                    }),
                }
            }
        }
        if out.rows.is_empty() {
            return Err(StepError::permanent("no valid rows in the input"));
        }
        Ok(out)
    }
}

export_handler!(CleanStep);
