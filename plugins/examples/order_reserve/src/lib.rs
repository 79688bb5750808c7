//! Order fulfilment: reserves stock for every line of the validated order.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, export_handler, log};

#[derive(Deserialize)]
struct Order {
    items: Vec<Item>,
}

#[derive(Deserialize)]
struct Item {
    sku: String,
    qty: u32,
}

#[derive(Deserialize)]
struct Validated {
    order_id: String,
}

#[derive(Deserialize, Default)]
struct Config {
    #[serde(default)]
    warehouse: Option<String>,
}

#[derive(Serialize)]
struct Reservation {
    reservation_id: String,
    warehouse: String,
    skus: Vec<String>,
    units: u32,
}

struct Reserve;

impl Handler for Reserve {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let validated: Validated = ctx.parent_as("validate")?;
        let cfg: Config = ctx.config_as().unwrap_or_default();
        let warehouse = cfg.warehouse.unwrap_or_else(|| "main".into());
        let units = order.items.iter().map(|i| i.qty).sum();
        log::info(&format!("reserving {units} units in {warehouse}"));
        Ok(Reservation {
            reservation_id: format!("res-{}-{warehouse}", validated.order_id),
            warehouse,
            skus: order.items.into_iter().map(|i| i.sku).collect(),
            units,
        })
    }
}

export_handler!(Reserve);
