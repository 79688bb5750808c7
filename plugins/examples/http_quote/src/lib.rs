//! HTTP checkout: asks the shop for a price, `POST /v1/quotes` with the order's items; the
//! API adds shipping and tax and returns the quote the charge step pays.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, Value, export_handler, http, json, log};

#[derive(Deserialize)]
struct Order {
    api: String,
    items: Value,
}

#[derive(Deserialize, Serialize)]
struct Quote {
    quote_id: String,
    currency: String,
    subtotal_cents: u64,
    shipping_cents: u64,
    tax_cents: u64,
    total_cents: u64,
    lines: Value,
}

struct RequestQuote;

impl Handler for RequestQuote {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let quote: Quote = http::post(format!("{}/v1/quotes", order.api.trim_end_matches('/')))
            .header(
                "authorization",
                format!("Bearer {}", http::secret("API_TOKEN")),
            )
            .json(&json!({ "items": order.items }))
            .send()?
            .error_for_status()?
            .json()?;
        log::info(&format!(
            "{}: {} {} cents",
            quote.quote_id, quote.currency, quote.total_cents
        ));
        Ok(quote)
    }
}

export_handler!(RequestQuote);
