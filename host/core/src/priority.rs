//! Priorities and the claim order.
//!
//! A task (and a step that overrides it) has a priority from 1 (lowest) to 5 (highest),
//! 3 by default. Claims take the ready step with the smallest *claim key*:
//!
//! ```text
//! claim key = ready_at − (priority − 1) × AGING_PER_LEVEL
//! ```
//!
//! then the lowest id. Within one priority that is ready time (first ready, first claimed);
//! across priorities a higher one goes first unless the lower one has waited longer than
//! the difference times `AGING_PER_LEVEL` (30 s). So a priority-1 step that has been ready
//! for two minutes goes before a priority-5 step that has just become ready: under any load a
//! low priority waits at most 4 × 30 s longer than it would at the top, and never starves.
//!
//! Both stores order claims by this key (PostgreSQL: `claim_ready_steps`, one index range per
//! priority, merged; SQLite: `sqlite/hot.rs`), and a conformance test checks them against
//! [`claim_order`].

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// How much waiting one priority level is worth, in microseconds (30 s).
pub const AGING_PER_LEVEL_US: i64 = 30_000_000;

/// A priority from 1 (lowest) to 5 (highest).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct Priority(u8);

impl Priority {
    pub const LOWEST: Priority = Priority(1);
    pub const DEFAULT: Priority = Priority(3);
    pub const HIGHEST: Priority = Priority(5);

    /// `None` outside 1..=5.
    pub fn new(p: i64) -> Option<Priority> {
        (1..=5).contains(&p).then_some(Priority(p as u8))
    }

    pub fn get(self) -> u8 {
        self.0
    }

    /// The head start this priority gives over the lowest one, in microseconds.
    pub fn head_start_us(self) -> i64 {
        (i64::from(self.0) - 1) * AGING_PER_LEVEL_US
    }
}

impl Default for Priority {
    fn default() -> Self {
        Priority::DEFAULT
    }
}

impl fmt::Display for Priority {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl std::str::FromStr for Priority {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        s.trim()
            .parse::<i64>()
            .ok()
            .and_then(Priority::new)
            .ok_or_else(|| format!("'{s}' is not a priority: expected a whole number from 1 (lowest) to 5 (highest)"))
    }
}

impl Serialize for Priority {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u8(self.0)
    }
}

impl<'de> Deserialize<'de> for Priority {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let v = i64::deserialize(d)?;
        Priority::new(v).ok_or_else(|| {
            serde::de::Error::custom(format!(
                "{v} is not a priority: expected a whole number from 1 (lowest) to 5 (highest)"
            ))
        })
    }
}

/// The claim key of a step ready at `ready_at_us` (microseconds since the epoch).
pub fn claim_key(ready_at_us: i64, priority: Priority) -> i64 {
    ready_at_us.saturating_sub(priority.head_start_us())
}

/// The order in which claims take ready steps: `(id, ready_at µs, priority)` sorted by claim
/// key, then id.
pub fn claim_order(steps: &mut [(i64, i64, Priority)]) {
    steps.sort_by_key(|&(id, at, p)| (claim_key(at, p), id));
}

#[cfg(test)]
mod tests {
    use super::*;

    fn p(n: i64) -> Priority {
        Priority::new(n).unwrap()
    }

    #[test]
    fn only_one_to_five_are_priorities() {
        assert!(Priority::new(0).is_none());
        assert!(Priority::new(6).is_none());
        assert_eq!("5".parse::<Priority>(), Ok(p(5)));
        let e = "9".parse::<Priority>().unwrap_err();
        assert!(e.contains("from 1 (lowest) to 5 (highest)"), "{e}");
        assert!(serde_json::from_str::<Priority>("0").is_err());
        assert_eq!(serde_json::to_string(&p(4)).unwrap(), "4");
    }

    #[test]
    fn higher_first_then_ready_time_then_id() {
        let mut s = vec![
            (1, 100, p(3)),
            (2, 100, p(5)),
            (3, 50, p(3)),
            (4, 100, p(3)),
        ];
        claim_order(&mut s);
        let ids: Vec<i64> = s.iter().map(|x| x.0).collect();
        assert_eq!(ids, vec![2, 3, 1, 4]);
    }

    #[test]
    fn a_low_priority_that_waited_long_enough_goes_first() {
        let now = 1_000_000_000_000;
        let old_low = (1, now - 4 * AGING_PER_LEVEL_US - 1, p(1));
        let new_high = (2, now, p(5));
        let mut s = vec![new_high, old_low];
        claim_order(&mut s);
        assert_eq!(s[0].0, 1);
        // One microsecond less waiting and the high priority wins.
        let mut s = vec![(1, now - 4 * AGING_PER_LEVEL_US + 1, p(1)), new_high];
        claim_order(&mut s);
        assert_eq!(s[0].0, 2);
    }
}
