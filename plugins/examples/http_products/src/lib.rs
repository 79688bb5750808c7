//! HTTP checkout: looks up every item of the order at `GET /v1/products/{id}`, all requests
//! in flight at once, and fails for good when one is unknown or short of stock.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, http, log};

#[derive(Deserialize)]
struct Order {
    api: String,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    product_id: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Product {
    id: String,
    name: String,
    unit_price_cents: u64,
    currency: String,
    stock: u32,
}

#[derive(Serialize)]
struct Line {
    product_id: String,
    name: String,
    qty: u32,
    unit_price_cents: u64,
    currency: String,
}

#[derive(Serialize)]
struct Products {
    products: Vec<Line>,
}

struct LookUpProducts;

impl Handler for LookUpProducts {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let api = order.api.trim_end_matches('/');
        // The host replaces the placeholder with the granted secret; the guest never sees it.
        let auth = format!("Bearer {}", http::secret("API_TOKEN"));
        let requests = order
            .items
            .iter()
            .map(|i| {
                http::get(format!("{api}/v1/products/{}", i.product_id))
                    .header("authorization", auth.clone())
            })
            .collect();
        let mut products = Vec::new();
        for (item, response) in order.items.iter().zip(http::send_all(requests)) {
            // A 404 (unknown product) is permanent, a 5xx retryable: error_for_status decides.
            let p: Product = response?.error_for_status()?.json()?;
            if p.stock < item.qty {
                return Err(StepError::permanent(format!(
                    "{} ({}): {} ordered, {} in stock",
                    p.id, p.name, item.qty, p.stock
                )));
            }
            log::info(&format!("{}: {} in stock", p.id, p.stock));
            products.push(Line {
                product_id: p.id,
                name: p.name,
                qty: item.qty,
                unit_price_cents: p.unit_price_cents,
                currency: p.currency,
            });
        }
        Ok(Products { products })
    }
}

export_handler!(LookUpProducts);
