//! A retry policy:
//! - a validation error (a message mentioning `validation`; the host prefixes the handler's
//!   own message with the error kind) gives up at once: the same input will fail again;
//! - a rate-limited failure (the handler asked for a delay) waits exactly that long;
//! - anything else backs off exponentially from 200 ms, with ±25 % jitter.
use tasker_guest_sdk::{Decision, Failure, RetryPolicy, export_retry_policy};

struct SmartRetry;

const BASE_MS: u64 = 200;
const CAP_MS: u64 = 60_000;

/// A deterministic jitter unit in [0, 1) from the failure, so decisions are reproducible.
fn unit(f: &Failure) -> f64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in f.step_name.bytes().chain(f.attempt.to_le_bytes()) {
        h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
    }
    (h >> 11) as f64 / (1u64 << 53) as f64
}

impl RetryPolicy for SmartRetry {
    fn decide(f: Failure) -> Decision {
        if f.message.to_ascii_lowercase().contains("validation") {
            return Decision::give_up(format!("validation error: {}", f.message));
        }
        if let Some(ms) = f.retry_after_ms {
            return Decision::retry(ms);
        }
        let exp = f.attempt.saturating_sub(1).min(20);
        let raw = BASE_MS.saturating_mul(1u64 << exp).min(CAP_MS);
        let jittered = raw as f64 * (0.75 + 0.5 * unit(&f));
        Decision::retry(jittered as u64)
    }
}

export_retry_policy!(SmartRetry);
