//! Retention: how long finished tasks are kept, per final state.
//!
//! Spans are written like `7d`, `12h`, `30m` or `45s` (a whole number and one unit), in
//! `tasker.toml` (`[retention]`) and in a template's `retention:`; a template's span for a
//! state wins over the setting's. The pruner (`Store::prune`) deletes a finished task once
//! its span has passed since it finished.

use std::fmt;
use std::str::FromStr;
use std::time::Duration;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// The longest span accepted: 100 years (keeps `now - span` far from chrono's limits).
const MAX_SPAN_SECS: u64 = 100 * 365 * 86_400;

/// A retention span: a whole number of days, hours, minutes or seconds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Span(Duration);

impl Span {
    pub fn from_secs(secs: u64) -> Span {
        Span(Duration::from_secs(secs))
    }

    pub fn duration(self) -> Duration {
        self.0
    }
}

impl FromStr for Span {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let bad = || {
            format!("'{s}' is not a span: expected a number and d, h, m or s (like 7d, 12h, 30m)")
        };
        let t = s.trim();
        let split = t.find(|c: char| !c.is_ascii_digit()).ok_or_else(bad)?;
        let (digits, unit) = t.split_at(split);
        let n: u64 = digits.parse().map_err(|_| bad())?;
        let unit_secs = match unit {
            "d" => 86_400,
            "h" => 3_600,
            "m" => 60,
            "s" => 1,
            _ => return Err(bad()),
        };
        let secs = n
            .checked_mul(unit_secs)
            .filter(|&v| v <= MAX_SPAN_SECS)
            .ok_or_else(|| format!("'{s}' is over the maximum span of 100 years"))?;
        Ok(Span(Duration::from_secs(secs)))
    }
}

impl fmt::Display for Span {
    /// The largest unit that divides the span exactly, so `7d` prints as `7d`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let s = self.0.as_secs();
        match s {
            0 => write!(f, "0s"),
            _ if s.is_multiple_of(86_400) => write!(f, "{}d", s / 86_400),
            _ if s.is_multiple_of(3_600) => write!(f, "{}h", s / 3_600),
            _ if s.is_multiple_of(60) => write!(f, "{}m", s / 60),
            _ => write!(f, "{s}s"),
        }
    }
}

impl Serialize for Span {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for Span {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

/// Spans per final state; `None` keeps that state's tasks (or defers to the setting, in a
/// template).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Retention {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub complete: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancelled: Option<Span>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<Span>,
}

/// The final states retention applies to, in this order everywhere.
pub const FINAL_STATES: [&str; 3] = ["complete", "cancelled", "error"];

impl Retention {
    /// The defaults of `tasker.toml`: a week for complete and cancelled tasks, 30 days for
    /// tasks in error (kept longer: someone may still want to look at them).
    pub fn defaults() -> Retention {
        Retention {
            complete: Some(Span::from_secs(7 * 86_400)),
            cancelled: Some(Span::from_secs(7 * 86_400)),
            error: Some(Span::from_secs(30 * 86_400)),
        }
    }

    pub fn is_empty(&self) -> bool {
        self.complete.is_none() && self.cancelled.is_none() && self.error.is_none()
    }

    /// The span of a final state (`complete`, `cancelled`, `error`), else `None`.
    pub fn of(&self, state: &str) -> Option<Span> {
        match state {
            "complete" => self.complete,
            "cancelled" => self.cancelled,
            "error" => self.error,
            _ => None,
        }
    }

    /// These spans, with `over`'s wherever it has one.
    pub fn overridden_by(&self, over: &Retention) -> Retention {
        Retention {
            complete: over.complete.or(self.complete),
            cancelled: over.cancelled.or(self.cancelled),
            error: over.error.or(self.error),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spans_parse_and_print() {
        for (text, secs) in [
            ("7d", 604_800),
            ("12h", 43_200),
            ("30m", 1_800),
            ("45s", 45),
        ] {
            let span: Span = text.parse().unwrap();
            assert_eq!(span.duration().as_secs(), secs);
            assert_eq!(span.to_string(), text);
        }
        assert_eq!("90m".parse::<Span>().unwrap().to_string(), "90m");
        assert_eq!("120m".parse::<Span>().unwrap().to_string(), "2h");
    }

    #[test]
    fn bad_spans_are_refused_with_the_text() {
        for text in ["", "7", "d", "7w", "-1d", "1.5d", "7 d", "99999999999d"] {
            let err = text.parse::<Span>().unwrap_err();
            assert!(err.contains(&format!("'{text}'")), "{text}: {err}");
        }
    }

    #[test]
    fn a_template_overrides_per_state() {
        let over = Retention {
            error: Some(Span::from_secs(60)),
            ..Retention::default()
        };
        let r = Retention::defaults().overridden_by(&over);
        assert_eq!(r.error, Some(Span::from_secs(60)));
        assert_eq!(r.complete, Retention::defaults().complete);
    }

    const TEMPLATE: &str =
        "namespace: n\nname: t\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop@1.0.0}\n";

    #[test]
    fn a_template_keeps_its_retention() {
        let yaml = format!("{TEMPLATE}retention: {{ complete: 1d, error: 90d }}\n");
        let t = crate::template::Template::from_yaml(&yaml).unwrap();
        assert_eq!(t.retention.complete, Some(Span::from_secs(86_400)));
        assert_eq!(t.retention.cancelled, None);
        let json = serde_json::to_value(&t).unwrap();
        assert_eq!(
            json["retention"],
            serde_json::json!({"complete": "1d", "error": "90d"})
        );
        // Without `retention:` the definition is what it was before the field existed.
        let plain = crate::template::Template::from_yaml(TEMPLATE).unwrap();
        assert!(
            serde_json::to_value(&plain)
                .unwrap()
                .get("retention")
                .is_none()
        );
    }

    #[test]
    fn a_bad_template_span_names_its_field() {
        let yaml = format!("{TEMPLATE}retention: {{ cancelled: 7 weeks }}\n");
        let err = crate::template::Template::from_yaml(&yaml).unwrap_err();
        assert!(err.mentions("retention.cancelled"), "{err}");
        assert!(err.mentions("'7 weeks'"), "{err}");
        let yaml = format!("{TEMPLATE}retention: {{ done: 7d }}\n");
        let err = crate::template::Template::from_yaml(&yaml).unwrap_err();
        assert!(err.mentions("done"), "{err}");
    }
}
