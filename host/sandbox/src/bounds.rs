//! Checks on values the guest hands to the host, before they are kept or printed.

/// At most `max` bytes of `s` (on a character boundary), with a marker saying how much
/// was cut.
pub(crate) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        let cut_bytes = s.len() - cut;
        s.truncate(cut);
        s.push_str(&format!("…[truncated {cut_bytes} bytes]"));
    }
    s
}

/// Nesting depth of a JSON text (arrays and objects), without parsing it. Brackets inside
/// strings do not count. Invalid JSON gets some depth; parsing rejects it later.
pub(crate) fn json_depth(text: &str) -> usize {
    let (mut depth, mut max) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in text.bytes() {
        if in_string {
            match b {
                _ if escaped => escaped = false,
                b'\\' => escaped = true,
                b'"' => in_string = false,
                _ => {}
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                max = max.max(depth);
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    max
}

/// A name fit to keep and print: no control characters (terminal escapes, newlines).
pub(crate) fn printable(name: &str) -> bool {
    !name.is_empty() && !name.chars().any(char::is_control)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncation_keeps_char_boundaries_and_says_how_much() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("abcdef".into(), 4), "abcd…[truncated 2 bytes]");
        // "é" is two bytes: the cut moves back to the boundary.
        assert_eq!(truncate("aé".into(), 2), "a…[truncated 2 bytes]");
    }

    #[test]
    fn depth_counts_brackets_outside_strings() {
        assert_eq!(json_depth("1"), 0);
        assert_eq!(json_depth(r#"{"a":[1,{"b":2}]}"#), 3);
        assert_eq!(json_depth(r#"["[[[[\"{{"]"#), 1);
        assert_eq!(json_depth(&"[".repeat(500)), 500);
    }

    #[test]
    fn control_characters_are_not_printable() {
        assert!(printable("order.shipped"));
        assert!(printable("café ✓"));
        for bad in ["", "a\nb", "\u{1b}[31mred", "nul\0"] {
            assert!(!printable(bad), "{bad:?}");
        }
    }
}
