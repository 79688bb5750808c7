//! W3C trace context (`traceparent`) as Tasker stores it with a task: the parent of every
//! span of the task, whichever worker runs it.

use std::fmt;
use std::str::FromStr;

/// The `tracing` target of every span meant for the trace exporter.
pub const TARGET: &str = "tasker::trace";

/// The task metadata key that holds the task's traceparent.
pub const METADATA_KEY: &str = "traceparent";

/// A W3C `traceparent`: `00-<trace id: 32 hex>-<parent span id: 16 hex>-<flags: 2 hex>`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct TraceParent {
    pub trace_id: [u8; 16],
    pub span_id: [u8; 8],
    pub flags: u8,
}

/// Why a traceparent was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error(
    "invalid traceparent '{value}': {reason} (expected 00-<32 hex trace id>-<16 hex span id>-<2 hex flags>)"
)]
pub struct TraceParentError {
    pub value: String,
    pub reason: &'static str,
}

fn hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

impl FromStr for TraceParent {
    type Err = TraceParentError;

    fn from_str(value: &str) -> Result<Self, Self::Err> {
        let err = |reason| TraceParentError {
            value: value.chars().take(80).collect(),
            reason,
        };
        let parts: Vec<&str> = value.trim().split('-').collect();
        let [version, trace, span, flags] = parts[..] else {
            return Err(err("it does not have four dash-separated fields"));
        };
        // Version 00 is the only one defined; ff is forbidden.
        if version != "00" {
            return Err(err("only version 00 is supported"));
        }
        let trace_id =
            hex::<16>(trace).ok_or_else(|| err("the trace id is not 32 lower-case hex digits"))?;
        let span_id =
            hex::<8>(span).ok_or_else(|| err("the parent id is not 16 lower-case hex digits"))?;
        let [flags] =
            hex::<1>(flags).ok_or_else(|| err("the flags are not 2 lower-case hex digits"))?;
        if trace_id == [0; 16] {
            return Err(err("the trace id is all zeros"));
        }
        if span_id == [0; 8] {
            return Err(err("the parent id is all zeros"));
        }
        Ok(TraceParent {
            trace_id,
            span_id,
            flags,
        })
    }
}

impl fmt::Display for TraceParent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "00-")?;
        for b in self.trace_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-")?;
        for b in self.span_id {
            write!(f, "{b:02x}")?;
        }
        write!(f, "-{:02x}", self.flags)
    }
}

impl TraceParent {
    /// Sampled (flag bit 0).
    pub fn sampled(&self) -> bool {
        self.flags & 1 == 1
    }

    /// The parent of a task created without tracing: the same on every worker, from what
    /// every worker reads of the task (its id and creation instant in microseconds).
    pub fn derived(task_id: i64, created_at_us: i64) -> TraceParent {
        // splitmix64: well spread ids from two numbers; no secrecy is needed.
        let mut x = (task_id as u64) ^ (created_at_us as u64).rotate_left(32);
        let mut next = || {
            x = x.wrapping_add(0x9e37_79b9_7f4a_7c15);
            let mut z = x;
            z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
            z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
            z ^ (z >> 31)
        };
        let (a, b, c) = (next(), next(), next());
        let mut trace_id = [0u8; 16];
        trace_id[..8].copy_from_slice(&a.to_be_bytes());
        trace_id[8..].copy_from_slice(&b.to_be_bytes());
        // Never the invalid all-zero ids.
        trace_id[15] |= 1;
        let mut span_id = c.to_be_bytes();
        span_id[7] |= 1;
        TraceParent {
            trace_id,
            span_id,
            flags: 1,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn a_w3c_example_round_trips() {
        let t: TraceParent = GOOD.parse().unwrap();
        assert_eq!(t.trace_id[0], 0x4b);
        assert_eq!(t.span_id[7], 0xb7);
        assert!(t.sampled());
        assert_eq!(t.to_string(), GOOD);
    }

    #[test]
    fn derived_parents_are_valid_stable_and_distinct() {
        let a = TraceParent::derived(7, 1_700_000_000_000_000);
        assert_eq!(a, TraceParent::derived(7, 1_700_000_000_000_000));
        assert_ne!(
            a.trace_id,
            TraceParent::derived(8, 1_700_000_000_000_000).trace_id
        );
        assert_ne!(
            a.trace_id,
            TraceParent::derived(7, 1_700_000_000_000_001).trace_id
        );
        assert_eq!(a.to_string().parse::<TraceParent>().unwrap(), a);
        assert!(a.sampled());
    }

    #[test]
    fn bad_values_say_what_is_wrong() {
        let reason = |v: &str| v.parse::<TraceParent>().unwrap_err().reason;
        assert_eq!(
            reason("nope"),
            "it does not have four dash-separated fields"
        );
        assert_eq!(
            reason("01-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"),
            "only version 00 is supported"
        );
        assert_eq!(
            reason("00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"),
            "the trace id is not 32 lower-case hex digits"
        );
        assert_eq!(
            reason("00-00000000000000000000000000000000-00f067aa0ba902b7-01"),
            "the trace id is all zeros"
        );
        assert_eq!(
            reason("00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01"),
            "the parent id is all zeros"
        );
        assert_eq!(
            reason("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-1"),
            "the flags are not 2 lower-case hex digits"
        );
        let e = "x".parse::<TraceParent>().unwrap_err().to_string();
        assert!(
            e.contains("invalid traceparent 'x'") && e.contains("00-<32 hex"),
            "{e}"
        );
    }
}
