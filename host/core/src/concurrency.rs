//! Concurrency keys: at most `limit` tasks of one key run at once.
//!
//! A template's `concurrency: { key, limit, strategy }` gives each of its tasks a key: the
//! value at a JSON pointer into the task's context (`key: /customer_id` → `/customer_id=42`)
//! or a constant (`key: stripe` → `stripe`). Keys are shared across templates: two
//! workflows keyed by `/customer_id` share each customer's slots (the limit applied is the
//! one of the task being admitted). A task *holds* a slot of its key from admission until
//! it finishes (complete, error or cancelled); a task retried from `error` is admitted
//! again. Until it is admitted none of its steps is ready. The strategies decide what a new
//! task does when its key is at the limit:
//!
//! - `queue`: it waits; when a slot frees, the waiting task with the smallest claim key
//!   (`priority.rs`: priority with aging, over its creation time) is admitted;
//! - `cancel_in_progress`: the oldest unfinished tasks of the key are cancelled until there
//!   is room, then it is admitted;
//! - `cancel_newest`: it is refused (nothing is written).
//!
//! A delayed task (`run_at`) waits in its key's line until its instant, without a slot.
//! Both stores admit by this rule (PostgreSQL: `create_task` and the trigger
//! `tasker_concurrency_release`; SQLite: `sqlite/concurrency.rs`); the key itself is
//! resolved by [`resolve_key`], which a test checks against PostgreSQL's
//! `tasker_concurrency_key`.

use std::fmt;

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The largest limit a key may have.
pub const MAX_LIMIT: u32 = 10_000;

/// Where a task's key comes from.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Concurrency {
    /// A JSON pointer into the context (starts with `/`), or a constant.
    pub key: String,
    /// At most this many tasks of one key hold a slot at once (1..=[`MAX_LIMIT`]).
    pub limit: u32,
    #[serde(default)]
    pub strategy: Strategy,
}

/// What a new task does when its key is at the limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Strategy {
    #[default]
    Queue,
    CancelInProgress,
    CancelNewest,
}

impl Strategy {
    pub const ALL: [Strategy; 3] = [
        Strategy::Queue,
        Strategy::CancelInProgress,
        Strategy::CancelNewest,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Strategy::Queue => "queue",
            Strategy::CancelInProgress => "cancel_in_progress",
            Strategy::CancelNewest => "cancel_newest",
        }
    }

    pub fn parse(s: &str) -> Option<Strategy> {
        Strategy::ALL.into_iter().find(|x| x.as_str() == s)
    }
}

impl fmt::Display for Strategy {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Why a context gives no key.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("concurrency key {pointer}: the context has no value there")]
    Missing { pointer: String },
    #[error(
        "concurrency key {pointer}: the context's value there is {found}, expected a string, \
         an integer or a boolean"
    )]
    NotScalar {
        pointer: String,
        found: &'static str,
    },
}

impl Concurrency {
    /// Whether the key is a pointer into the context.
    pub fn is_pointer(&self) -> bool {
        self.key.starts_with('/')
    }

    /// This task's key.
    pub fn resolve(&self, context: &Value) -> Result<String, KeyError> {
        resolve_key(&self.key, context)
    }

    /// Problems with the spec as written (for template validation).
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if self.key.is_empty() {
            out.push((
                "key",
                "must be a JSON pointer into the context (like /customer_id) or a constant"
                    .to_owned(),
            ));
        } else if self.key == "/" {
            out.push(("key", "the pointer / names no field".to_owned()));
        }
        if self.key.len() > 200 {
            out.push(("key", "is longer than 200 bytes".to_owned()));
        }
        if self.limit == 0 || self.limit > MAX_LIMIT {
            out.push((
                "limit",
                format!("{} is not a limit: expected 1 to {MAX_LIMIT}", self.limit),
            ));
        }
        out
    }
}

/// The key for `spec` (a pointer or a constant) and `context`: `pointer=value` for a
/// pointer (a string as it is, an integer or a boolean as JSON), the constant itself.
pub fn resolve_key(spec: &str, context: &Value) -> Result<String, KeyError> {
    if !spec.starts_with('/') {
        return Ok(spec.to_owned());
    }
    let missing = || KeyError::Missing {
        pointer: spec.to_owned(),
    };
    let value = context.pointer(spec).ok_or_else(missing)?;
    let text = match value {
        Value::String(s) => s.clone(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) if n.is_i64() || n.is_u64() => n.to_string(),
        Value::Null => return Err(missing()),
        other => {
            return Err(KeyError::NotScalar {
                pointer: spec.to_owned(),
                found: json_kind(other),
            });
        }
    };
    Ok(format!("{spec}={text}"))
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "a boolean",
        Value::Number(_) => "a fractional number",
        Value::String(_) => "a string",
        Value::Array(_) => "an array",
        Value::Object(_) => "an object",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pointers_and_constants_resolve() {
        let ctx = json!({"customer_id": 42, "region": "eu", "a/b": {"~x": true}, "list": ["z"]});
        assert_eq!(
            resolve_key("/customer_id", &ctx).unwrap(),
            "/customer_id=42"
        );
        assert_eq!(resolve_key("/region", &ctx).unwrap(), "/region=eu");
        assert_eq!(resolve_key("/a~1b/~0x", &ctx).unwrap(), "/a~1b/~0x=true");
        assert_eq!(resolve_key("/list/0", &ctx).unwrap(), "/list/0=z");
        assert_eq!(resolve_key("stripe", &ctx).unwrap(), "stripe");
    }

    #[test]
    fn a_missing_or_structured_value_is_named() {
        let ctx = json!({"n": null, "f": 1.5, "o": {}, "l": []});
        for p in ["/nope", "/n"] {
            assert_eq!(
                resolve_key(p, &ctx),
                Err(KeyError::Missing { pointer: p.into() })
            );
        }
        let e = resolve_key("/f", &ctx).unwrap_err();
        assert_eq!(
            e.to_string(),
            "concurrency key /f: the context's value there is a fractional number, expected a \
             string, an integer or a boolean"
        );
        assert!(matches!(
            resolve_key("/o", &ctx),
            Err(KeyError::NotScalar {
                found: "an object",
                ..
            })
        ));
        assert!(matches!(
            resolve_key("/l", &ctx),
            Err(KeyError::NotScalar {
                found: "an array",
                ..
            })
        ));
    }

    #[test]
    fn bad_specs_are_problems() {
        let spec = |key: &str, limit| Concurrency {
            key: key.into(),
            limit,
            strategy: Strategy::Queue,
        };
        assert!(spec("/customer_id", 2).problems().is_empty());
        assert_eq!(spec("", 1).problems()[0].0, "key");
        assert_eq!(spec("/", 1).problems()[0].0, "key");
        assert_eq!(spec("k", 0).problems()[0].0, "limit");
        assert_eq!(spec("k", MAX_LIMIT + 1).problems()[0].0, "limit");
        for s in Strategy::ALL {
            assert_eq!(Strategy::parse(s.as_str()), Some(s));
        }
    }
}
