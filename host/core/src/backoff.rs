//! Retry backoff: a pure, deterministic function.
//!
//! The same formula is computed in SQL (`tasker_backoff_ms` in `migrations/`); a store test
//! checks that both agree on a grid of inputs. Jitter is seeded by the step id and the failure
//! number, so a given failure always gets the same delay and tests can assert exact instants.
//!
//! ```text
//! raw    = base_ms * multiplier^(failure - 1)
//! capped = min(raw, cap_ms)
//! u      = jitter_unit(seed, failure)          in [0, 1)
//! delay  = floor(capped * (1 - jitter + 2 * jitter * u)), at most cap_ms
//! ```
//!
//! A server-requested delay (a handler's `retry-after-ms`) replaces the backoff, capped at
//! `max_retry_after_ms`. There is one `ready_at` per step, so the two can never be ORed.

use serde::{Deserialize, Serialize};

/// Default maximum for a server-requested delay: one hour.
pub const DEFAULT_MAX_RETRY_AFTER_MS: u64 = 3_600_000;

/// The longest delay the scheduler applies: 30 days. Templates above it are refused at
/// validation; a larger stored value (an older row, a template built in code) is clamped to
/// it, so `now + delay` can never overflow on either store (`tasker_ms` in SQL clamps alike).
pub const MAX_DELAY_MS: u64 = 30 * 24 * 3_600_000;

/// The largest `multiplier` a template may set (growth past it only reaches `cap_ms` sooner).
pub const MAX_MULTIPLIER: f64 = 1_000.0;

/// Exponential backoff parameters of one step.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Backoff {
    /// Delay after the first failure, before jitter.
    pub base_ms: u64,
    /// Growth per failure.
    pub multiplier: f64,
    /// Upper bound of any computed delay.
    pub cap_ms: u64,
    /// Fraction in `[0, 1]`: the delay varies by ± this share.
    pub jitter: f64,
}

impl Default for Backoff {
    fn default() -> Self {
        Backoff {
            base_ms: 1_000,
            multiplier: 2.0,
            cap_ms: 300_000,
            jitter: 0.1,
        }
    }
}

/// A number in `[0, 1)` derived from `seed` and `failure`, identical in SQL.
///
/// An LCG step on 31 bits: all intermediate values fit in an `i64` (and a PostgreSQL
/// `bigint`) for any seed.
pub fn jitter_unit(seed: i64, failure: u32) -> f64 {
    const M: i64 = 2_147_483_648; // 2^31
    let s = seed.rem_euclid(M);
    let f = i64::from(failure).rem_euclid(M);
    let x = (s * 1_103_515_245 + f * 12_345 + 1_013_904_223).rem_euclid(M);
    x as f64 / M as f64
}

impl Backoff {
    /// The delay in ms before retrying after failure number `failure` (1-based).
    pub fn delay_ms(&self, seed: i64, failure: u32) -> u64 {
        let exp = failure.saturating_sub(1) as f64;
        let raw = self.base_ms as f64 * self.multiplier.powf(exp);
        let capped = raw.min(self.cap_ms as f64);
        let u = jitter_unit(seed, failure);
        let jitter = self.jitter.clamp(0.0, 1.0);
        let delay = (capped * (1.0 - jitter + 2.0 * jitter * u)).floor();
        (delay.max(0.0) as u64).min(self.cap_ms)
    }

    /// The delay to apply: a server-requested one wins, capped at `max_retry_after_ms`.
    pub fn next_delay_ms(
        &self,
        seed: i64,
        failure: u32,
        retry_after_ms: Option<u64>,
        max_retry_after_ms: u64,
    ) -> u64 {
        match retry_after_ms {
            Some(ms) => ms.min(max_retry_after_ms),
            None => self.delay_ms(seed, failure),
        }
        .min(MAX_DELAY_MS)
    }

    /// Problems with these parameters, as `(field, message)`.
    pub fn problems(&self) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !(self.multiplier.is_finite() && self.multiplier >= 1.0) {
            out.push((
                "multiplier",
                format!("must be >= 1, got {}", self.multiplier),
            ));
        }
        if !(0.0..=1.0).contains(&self.jitter) {
            out.push((
                "jitter",
                format!("must be within 0..=1, got {}", self.jitter),
            ));
        }
        if self.multiplier.is_finite() && self.multiplier > MAX_MULTIPLIER {
            out.push((
                "multiplier",
                format!("must be at most {MAX_MULTIPLIER}, got {}", self.multiplier),
            ));
        }
        for (field, v) in [("base_ms", self.base_ms), ("cap_ms", self.cap_ms)] {
            if v > MAX_DELAY_MS {
                out.push((
                    field,
                    format!("{v} is over the maximum of {MAX_DELAY_MS} (30 days)"),
                ));
            }
        }
        if self.cap_ms < self.base_ms {
            out.push((
                "cap_ms",
                format!("{} is below base_ms {}", self.cap_ms, self.base_ms),
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn no_jitter() -> Backoff {
        Backoff {
            base_ms: 1_000,
            multiplier: 2.0,
            cap_ms: 10_000,
            jitter: 0.0,
        }
    }

    #[test]
    fn grows_exponentially_then_caps() {
        let b = no_jitter();
        let got: Vec<u64> = (1..=6).map(|n| b.delay_ms(7, n)).collect();
        assert_eq!(got, vec![1_000, 2_000, 4_000, 8_000, 10_000, 10_000]);
    }

    #[test]
    fn jitter_is_bounded_and_deterministic() {
        let b = Backoff {
            jitter: 0.25,
            ..no_jitter()
        };
        for seed in [0, 1, 42, i64::MAX, i64::MIN, -5] {
            for n in 1..=4 {
                let d = b.delay_ms(seed, n);
                let center = no_jitter().delay_ms(seed, n) as f64;
                assert!(d as f64 >= center * 0.75 - 1.0 && d as f64 <= center * 1.25);
                assert_eq!(d, b.delay_ms(seed, n));
            }
        }
    }

    #[test]
    fn jitter_unit_matches_known_values() {
        // Pinned so the SQL copy of the formula can be checked against the same numbers.
        assert_eq!(jitter_unit(0, 0), 1_013_904_223.0 / 2_147_483_648.0);
        assert_eq!(jitter_unit(1, 1), 2_117_431_813.0 / 2_147_483_648.0);
        // 7 * 1103515245 + 2 * 12345 + 1013904223 = 8738535628, mod 2^31 = 148601036.
        assert_eq!(jitter_unit(7, 2), 148_601_036.0 / 2_147_483_648.0);
        for seed in [-1, 0, 1, 1 << 40, i64::MIN] {
            let u = jitter_unit(seed, 3);
            assert!((0.0..1.0).contains(&u));
        }
    }

    #[test]
    fn jitter_spreads_neighbouring_steps() {
        let us: Vec<f64> = (1..=100).map(|id| jitter_unit(id, 1)).collect();
        let below_half = us.iter().filter(|u| **u < 0.5).count();
        assert!((25..=75).contains(&below_half), "{below_half}");
    }

    #[test]
    fn server_requested_delay_wins_and_is_capped() {
        let b = no_jitter();
        assert_eq!(b.next_delay_ms(1, 1, Some(250), 60_000), 250);
        assert_eq!(b.next_delay_ms(1, 1, Some(7_200_000), 60_000), 60_000);
        assert_eq!(b.next_delay_ms(1, 3, None, 60_000), 4_000);
    }

    #[test]
    fn huge_failure_numbers_do_not_overflow() {
        let b = Backoff::default();
        assert_eq!(
            b.delay_ms(3, u32::MAX),
            b.cap_ms.min(b.delay_ms(3, u32::MAX))
        );
        assert!(b.delay_ms(3, 10_000) <= b.cap_ms);
    }

    #[test]
    fn bad_parameters_are_named() {
        let b = Backoff {
            multiplier: 0.5,
            jitter: 2.0,
            cap_ms: 10,
            base_ms: 100,
        };
        let fields: Vec<_> = b.problems().into_iter().map(|(f, _)| f).collect();
        assert_eq!(fields, vec!["multiplier", "jitter", "cap_ms"]);
    }
}
