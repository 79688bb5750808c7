//! A broken retry policy: it panics, so the host falls back to its built-in policy.
use tasker_guest_sdk::{Decision, Failure, RetryPolicy, export_retry_policy};

struct Broken;

impl RetryPolicy for Broken {
    fn decide(failure: Failure) -> Decision {
        if failure.attempt > 0 {
            panic!("policy bug on attempt {}", failure.attempt);
        }
        Decision::retry(0)
    }
}

export_retry_policy!(Broken);
