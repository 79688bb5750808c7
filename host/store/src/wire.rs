//! What both backends store for a template's steps, built once so their defaults and
//! conversions agree (a non-finite float becomes JSON null, then the store's default).

use serde_json::{Value, json};
use tasker_core::template::Template;

use crate::error::StoreError;
use crate::pg::DEFAULT_MAX_LEASE_LOSSES;
use crate::store::Result;

fn to_i64(v: u64, what: &str) -> Result<i64> {
    i64::try_from(v).map_err(|_| StoreError::InvalidInput(format!("{what} {v} is too large")))
}

fn to_value<T: serde::Serialize>(v: &T) -> Result<Value> {
    serde_json::to_value(v).map_err(|e| StoreError::InvalidInput(e.to_string()))
}

/// The per-step settings a template registers (retry settings are copied onto each step row
/// at task creation).
pub(crate) fn steps_json(t: &Template) -> Result<Vec<Value>> {
    let mut out = Vec::with_capacity(t.steps.len());
    for s in &t.steps {
        let b = &s.retry.backoff;
        let what = |field: &str| format!("step {}: {field}", s.name);
        out.push(json!({
            "name": s.name,
            "handler": s.handler.to_string(),
            "depends_on": s.depends_on,
            "config": s.config,
            "limits": to_value(&s.limits)?,
            "grants": to_value(&s.grants)?,
            "max_attempts": s.retry.max_attempts,
            "retryable": s.retry.retryable,
            "backoff_base_ms": to_i64(b.base_ms, &what("backoff base_ms"))?,
            "backoff_multiplier": b.multiplier,
            "backoff_cap_ms": to_i64(b.cap_ms, &what("backoff cap_ms"))?,
            "backoff_jitter": b.jitter,
            "max_retry_after_ms": to_i64(s.retry.max_retry_after_ms, &what("max_retry_after_ms"))?,
            "max_lease_losses": DEFAULT_MAX_LEASE_LOSSES,
            "pin": s.pin,
            "priority": s.priority,
        }));
    }
    Ok(out)
}
