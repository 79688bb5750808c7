//! Order fulfilment, last step: composes the customer's shipping notice.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Shipment {
    tracking_number: String,
}

#[derive(Deserialize)]
struct Order {
    order_id: String,
    customer: Customer,
}

#[derive(Deserialize)]
struct Customer {
    email: String,
}

#[derive(Serialize)]
struct Notice {
    to: String,
    subject: String,
    body: String,
}

struct Notify;

impl Handler for Notify {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let shipment: Shipment = ctx.parent_as("ship")?;
        Ok(Notice {
            to: order.customer.email,
            subject: format!("Order {} has shipped", order.order_id),
            body: format!(
                "Your order {} is on its way. Tracking number: {}.",
                order.order_id, shipment.tracking_number
            ),
        })
    }
}

export_handler!(Notify);
