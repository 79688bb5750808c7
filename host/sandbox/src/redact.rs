//! Secrets out of everything an attempt reports: a guest can learn a secret only from a
//! server that echoes it, and whatever it then logs, prints, emits, fails with or returns
//! has the value replaced by its placeholder before it leaves the sandbox.

use std::collections::BTreeMap;

use serde_json::Value;
use tasker_core::http_grant;

use crate::attempt::AttemptReport;
use crate::error::SandboxError;

fn text(s: &mut String, secrets: &BTreeMap<String, String>) {
    if let Some(clean) = http_grant::redact(s, secrets) {
        *s = clean;
    }
}

/// Every string in `v`, keys included.
pub(crate) fn value(v: Value, secrets: &BTreeMap<String, String>) -> Value {
    match v {
        Value::String(mut s) => {
            text(&mut s, secrets);
            Value::String(s)
        }
        Value::Array(items) => Value::Array(items.into_iter().map(|i| value(i, secrets)).collect()),
        Value::Object(map) => Value::Object(
            map.into_iter()
                .map(|(mut k, v)| {
                    text(&mut k, secrets);
                    (k, value(v, secrets))
                })
                .collect(),
        ),
        other => other,
    }
}

pub(crate) fn report(r: &mut AttemptReport, secrets: &BTreeMap<String, String>) {
    text(&mut r.stdout, secrets);
    text(&mut r.stderr, secrets);
    for l in &mut r.logs {
        text(&mut l.message, secrets);
    }
    for e in &mut r.events {
        text(&mut e.name, secrets);
        e.payload = value(std::mem::take(&mut e.payload), secrets);
    }
    for d in &mut r.denials {
        text(&mut d.detail, secrets);
    }
    for h in &mut r.http {
        text(&mut h.url, secrets);
        if let Some(e) = &mut h.error {
            text(e, secrets);
        }
    }
}

/// Through its JSON form, so every message field of every variant is covered.
pub(crate) fn error(e: SandboxError, secrets: &BTreeMap<String, String>) -> SandboxError {
    match serde_json::to_value(&e) {
        Ok(v) => serde_json::from_value(value(v, secrets)).unwrap_or(e),
        Err(_) => e,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::host::LogRecord;

    #[test]
    fn every_field_is_redacted() {
        let secrets: BTreeMap<String, String> = [("KEY".into(), "s3cr3t-value".into())].into();
        let mut r = AttemptReport {
            stdout: "got s3cr3t-value".into(),
            logs: vec![LogRecord {
                level: "info".into(),
                message: "auth: Bearer s3cr3t-value".into(),
                at_us: 0,
            }],
            ..AttemptReport::default()
        };
        report(&mut r, &secrets);
        let all = serde_json::to_string(&r).unwrap();
        assert!(!all.contains("s3cr3t-value"), "{all}");
        assert!(all.contains("{{secret:KEY}}"), "{all}");
        let v = value(
            serde_json::json!({"s3cr3t-value": ["x s3cr3t-value"]}),
            &secrets,
        );
        assert!(!v.to_string().contains("s3cr3t-value"), "{v}");
        let e = error(
            SandboxError::HandlerError {
                message: "echo s3cr3t-value".into(),
                retryable: true,
                retry_after_ms: None,
            },
            &secrets,
        );
        assert!(!e.to_string().contains("s3cr3t-value"), "{e}");
    }
}
