//! Order fulfilment: ships once stock is reserved and payment is taken.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler};

#[derive(Deserialize)]
struct Reservation {
    reservation_id: String,
    units: u32,
}

#[derive(Deserialize)]
struct Charge {
    charge_id: String,
}

#[derive(Deserialize)]
struct Order {
    order_id: String,
    address: String,
}

#[derive(Serialize)]
struct Shipment {
    tracking_number: String,
    parcels: u32,
    address: String,
    reservation_id: String,
    charge_id: String,
}

struct Ship;

impl Handler for Ship {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let reservation: Reservation = ctx.parent_as("reserve_inventory")?;
        let charge: Charge = ctx.parent_as("charge_payment")?;
        Ok(Shipment {
            tracking_number: format!("TRK-{}", order.order_id.to_uppercase()),
            parcels: reservation.units.div_ceil(10),
            address: order.address,
            reservation_id: reservation.reservation_id,
            charge_id: charge.charge_id,
        })
    }
}

export_handler!(Ship);
