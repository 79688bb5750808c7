//! HTTP checkout: pays the quote, `POST /v1/charges`. The endpoint is rate limited: it may
//! answer 429 with `Retry-After`, which error_for_status turns into a retry after that delay.
//! The idempotency key is the same on every attempt, so a retry can never charge twice.
use serde::{Deserialize, Serialize};
use tasker_guest_sdk::{Context, Handler, StepError, emit, export_handler, http, json, log};

#[derive(Deserialize)]
struct Order {
    api: String,
    order_id: String,
    customer: String,
}

#[derive(Deserialize)]
struct Quote {
    quote_id: String,
    total_cents: u64,
}

#[derive(Deserialize)]
struct Charge {
    charge_id: String,
    status: String,
    amount_cents: u64,
    currency: String,
}

#[derive(Serialize)]
struct Charged {
    charge_id: String,
    amount_cents: u64,
    currency: String,
    /// The attempt that got the charge through.
    attempt: u32,
    /// The API had this charge already (an earlier attempt's response was lost).
    replayed: bool,
}

struct ChargeQuote;

impl Handler for ChargeQuote {
    fn handle(ctx: Context) -> Result<impl Serialize, StepError> {
        let order: Order = ctx.context_as()?;
        let quote: Quote = ctx.parent_as("quote")?;
        let key = format!("{}-{}", order.order_id, quote.quote_id);
        log::info(&format!(
            "charging {} cents for {} (attempt {}, key {key})",
            quote.total_cents, order.order_id, ctx.attempt
        ));
        let response = http::post(format!("{}/v1/charges", order.api.trim_end_matches('/')))
            .header(
                "authorization",
                format!("Bearer {}", http::secret("API_TOKEN")),
            )
            .header("idempotency-key", key)
            .json(&json!({
                "quote_id": quote.quote_id,
                "amount_cents": quote.total_cents,
                "customer": order.customer,
            }))
            .send()?
            // 429 + Retry-After: 1 -> StepError::retry_after(.., 1000).
            .error_for_status()?;
        let replayed = response.status() == 200;
        let charge: Charge = response.json()?;
        if charge.status != "succeeded" || charge.amount_cents != quote.total_cents {
            return Err(StepError::permanent(format!(
                "charge {} is {} for {} cents, the quote is {}",
                charge.charge_id, charge.status, charge.amount_cents, quote.total_cents
            )));
        }
        emit(
            "payment_charged",
            &json!({"order_id": order.order_id, "charge_id": charge.charge_id,
                    "amount_cents": charge.amount_cents}),
        );
        Ok(Charged {
            charge_id: charge.charge_id,
            amount_cents: charge.amount_cents,
            currency: charge.currency,
            attempt: ctx.attempt,
            replayed,
        })
    }
}

export_handler!(ChargeQuote);
