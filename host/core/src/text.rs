//! Text that came from a guest, made safe to show on a terminal.

use std::borrow::Cow;
use std::fmt::Write;

/// Would this character change what a terminal shows beyond itself? C0 and C1 controls
/// (ESC starts escape sequences, NUL, newlines that forge lines) and the bidirectional
/// overrides that reorder what a reader sees.
fn is_unsafe(c: char) -> bool {
    c.is_control() || matches!(c, '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}')
}

/// `s` with every unsafe character written as a Rust-style escape (`\u{1b}`, `\n`); borrowed
/// when there is nothing to escape.
pub fn escape_control(s: &str) -> Cow<'_, str> {
    if !s.chars().any(is_unsafe) {
        return Cow::Borrowed(s);
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if is_unsafe(c) => {
                let _ = write!(out, "\\u{{{:x}}}", c as u32);
            }
            c => out.push(c),
        }
    }
    Cow::Owned(out)
}

/// `s` as a store can keep it: PostgreSQL refuses NUL in `text` and `jsonb`, and one such
/// value would fail a whole batch call. NUL becomes U+FFFD; both stores get the same text.
pub fn storable(s: &str) -> Cow<'_, str> {
    if s.contains('\0') {
        Cow::Owned(s.replace('\0', "\u{fffd}"))
    } else {
        Cow::Borrowed(s)
    }
}

/// Does any string or key of `v` contain NUL?
pub fn json_has_nul(v: &serde_json::Value) -> bool {
    use serde_json::Value;
    match v {
        Value::String(s) => s.contains('\0'),
        Value::Array(a) => a.iter().any(json_has_nul),
        Value::Object(o) => o.iter().any(|(k, v)| k.contains('\0') || json_has_nul(v)),
        _ => false,
    }
}

/// `v` with NUL replaced in every string and key, as [`storable`] does for text.
pub fn storable_json(v: &serde_json::Value) -> serde_json::Value {
    use serde_json::Value;
    match v {
        Value::String(s) => Value::String(storable(s).into_owned()),
        Value::Array(a) => Value::Array(a.iter().map(storable_json).collect()),
        Value::Object(o) => Value::Object(
            o.iter()
                .map(|(k, v)| (storable(k).into_owned(), storable_json(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn controls_are_escaped_and_the_rest_kept() {
        assert!(matches!(
            escape_control("plain ünïcode ✓"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escape_control("a\u{1b}[2Jb\0c\nd\u{9b}e\u{202e}f"),
            "a\\u{1b}[2Jb\\u{0}c\\nd\\u{9b}e\\u{202e}f"
        );
    }

    #[test]
    fn nul_is_replaced_for_the_store() {
        assert!(matches!(storable("fine"), Cow::Borrowed(_)));
        assert_eq!(storable("a\0b"), "a\u{fffd}b");
        let v = serde_json::json!({"k\0": ["x\0", 1, {"y": "ok"}]});
        assert!(json_has_nul(&v));
        let clean = storable_json(&v);
        assert!(!json_has_nul(&clean));
        assert_eq!(
            clean,
            serde_json::json!({"k\u{fffd}": ["x\u{fffd}", 1, {"y": "ok"}]})
        );
    }
}
