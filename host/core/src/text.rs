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
}
