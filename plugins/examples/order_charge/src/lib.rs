//! Order fulfilment: charges the order total. The demo gateway is rate limited: the first
//! `fail_times` attempts get "429, retry after `retry_after_ms`", then the charge succeeds.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, emit, export_handler, json};

#[derive(Deserialize)]
struct Config {
    #[serde(default)]
    fail_times: u32,
    #[serde(default = "default_retry_after")]
    retry_after_ms: u64,
}

fn default_retry_after() -> u64 {
    200
}

#[derive(Deserialize)]
struct Validated {
    order_id: String,
    total_cents: u64,
}

#[derive(Serialize)]
struct Charge {
    charge_id: String,
    amount_cents: u64,
    attempt: u32,
}

struct ChargePayment;

impl Handler for ChargePayment {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let cfg: Config = ctx.config_as()?;
        let order: Validated = ctx.parent_as("validate")?;
        if ctx.attempt <= cfg.fail_times {
            return Err(StepError::retry_after(
                format!(
                    "payment gateway answered 429 (attempt {} of the first {} is rate limited)",
                    ctx.attempt, cfg.fail_times
                ),
                cfg.retry_after_ms,
            ));
        }
        let charge = Charge {
            charge_id: format!("ch-{}-{}", order.order_id, ctx.attempt),
            amount_cents: order.total_cents,
            attempt: ctx.attempt,
        };
        emit(
            "payment_charged",
            &json!({"order_id": order.order_id, "amount_cents": order.total_cents}),
        );
        Ok(charge)
    }
}

export_handler!(ChargePayment);
