//! HTTP checkout: reads the charge back, `GET /v1/charges/{id}`, checks that the API holds
//! it as succeeded for the amount charged, and writes the receipt.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, http};

#[derive(Deserialize)]
struct Order {
    api: String,
    order_id: String,
    customer: String,
}

#[derive(Deserialize)]
struct Products {
    products: Vec<Line>,
}

#[derive(Deserialize, Serialize)]
struct Line {
    name: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Charged {
    charge_id: String,
    amount_cents: u64,
}

#[derive(Deserialize)]
struct Charge {
    charge_id: String,
    status: String,
    amount_cents: u64,
    currency: String,
}

#[derive(Serialize)]
struct Receipt {
    order_id: String,
    customer: String,
    charge_id: String,
    status: String,
    amount_cents: u64,
    currency: String,
    items: Vec<Line>,
    summary: String,
}

struct Confirm;

impl Handler for Confirm {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let charged: Charged = ctx.parent_as("charge")?;
        let products: Products = ctx.parent_as("products")?;
        let charge: Charge = http::get(format!(
            "{}/v1/charges/{}",
            order.api.trim_end_matches('/'),
            charged.charge_id
        ))
        .header(
            "authorization",
            format!("Bearer {}", http::secret("API_TOKEN")),
        )
        .send()?
        .error_for_status()?
        .json()?;
        if charge.status != "succeeded" || charge.amount_cents != charged.amount_cents {
            return Err(StepError::permanent(format!(
                "the API holds charge {} as {} for {} cents, not succeeded for {}",
                charge.charge_id, charge.status, charge.amount_cents, charged.amount_cents
            )));
        }
        let items: Vec<String> = products
            .products
            .iter()
            .map(|l| format!("{} x {}", l.qty, l.name))
            .collect();
        let summary = format!(
            "{} {}.{:02} charged to {} for {}: {}",
            charge.currency,
            charge.amount_cents / 100,
            charge.amount_cents % 100,
            order.customer,
            order.order_id,
            items.join(", ")
        );
        Ok(Receipt {
            order_id: order.order_id,
            customer: order.customer,
            charge_id: charge.charge_id,
            status: charge.status,
            amount_cents: charge.amount_cents,
            currency: charge.currency,
            items: products.products,
            summary,
        })
    }
}

export_handler!(Confirm);
