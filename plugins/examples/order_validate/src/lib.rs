//! Order fulfilment, step 1: checks the order in the task context and prices it.
//! A malformed order is a permanent error: retrying the same input cannot help.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Order {
    order_id: String,
    customer: Customer,
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Customer {
    email: String,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: u32,
    unit_price_cents: u64,
}

#[derive(Serialize)]
struct Validated {
    order_id: String,
    email: String,
    lines: usize,
    units: u32,
    total_cents: u64,
}

struct Validate;

impl Handler for Validate {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        if order.items.is_empty() {
            return Err(StepError::permanent("order has no items"));
        }
        if !order.customer.email.contains('@') {
            return Err(StepError::permanent(format!(
                "customer email {:?} is not an address",
                order.customer.email
            )));
        }
        let mut total: u64 = 0;
        let mut units = 0;
        for (i, item) in order.items.iter().enumerate() {
            if item.qty == 0 || item.sku.trim().is_empty() {
                return Err(StepError::permanent(format!(
                    "items[{i}]: needs a sku and a quantity above 0"
                )));
            }
            units += item.qty;
            total = total
                .checked_add(u64::from(item.qty) * item.unit_price_cents)
                .ok_or_else(|| StepError::permanent("order total overflows"))?;
        }
        Ok(Validated {
            order_id: order.order_id,
            email: order.customer.email,
            lines: order.items.len(),
            units,
            total_cents: total,
        })
    }
}

export_handler!(Validate);
