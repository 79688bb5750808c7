//! Data pipeline, step 3: totals by region and by month, and the top products by revenue.
use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Row {
    month: String,
    region: String,
    product: String,
    units: u64,
    revenue_cents: u64,
}

#[derive(Deserialize)]
struct Clean {
    rows: Vec<Row>,
    rejected: Vec<serde_json::Value>,
}

#[derive(Serialize, Default, Clone, Copy)]
struct Totals {
    orders: u64,
    units: u64,
    revenue_cents: u64,
}

impl Totals {
    fn add(&mut self, r: &Row) {
        self.orders += 1;
        self.units += r.units;
        self.revenue_cents += r.revenue_cents;
    }
}

#[derive(Serialize)]
struct Product {
    product: String,
    #[serde(flatten)]
    totals: Totals,
}

#[derive(Serialize)]
struct Summary {
    total: Totals,
    rejected_rows: usize,
    by_region: BTreeMap<String, Totals>,
    by_month: BTreeMap<String, Totals>,
    top_products: Vec<Product>,
}

struct Aggregate;

impl Handler for Aggregate {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let clean: Clean = ctx.parent_as("clean")?;
        let top_n: usize = ctx.config_field("top_products").unwrap_or(5);
        let mut total = Totals::default();
        let mut by_region: BTreeMap<String, Totals> = BTreeMap::new();
        let mut by_month: BTreeMap<String, Totals> = BTreeMap::new();
        let mut by_product: BTreeMap<String, Totals> = BTreeMap::new();
        for r in &clean.rows {
            total.add(r);
            by_region.entry(r.region.clone()).or_default().add(r);
            by_month.entry(r.month.clone()).or_default().add(r);
            by_product.entry(r.product.clone()).or_default().add(r);
        }
        let mut top: Vec<Product> = by_product
            .into_iter()
            .map(|(product, totals)| Product { product, totals })
            .collect();
        top.sort_by(|a, b| {
            b.totals
                .revenue_cents
                .cmp(&a.totals.revenue_cents)
                .then_with(|| a.product.cmp(&b.product))
        });
        top.truncate(top_n);
        Ok(Summary {
            total,
            rejected_rows: clean.rejected.len(),
            by_region,
            by_month,
            top_products: top,
        })
    }
}

export_handler!(Aggregate);
