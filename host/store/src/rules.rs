//! The decisions both stores make about one item, written once. The SQLite store calls these;
//! PostgreSQL's functions of the same names (`tasker_refusal`, `tasker_retry_decision`,
//! `tasker_finalize_decision` in `host/store/sql/functions/`) mirror them, and
//! `tests/differential/sql_vs_rust.rs` checks on random inputs that the two agree.

use std::time::Duration;

use tasker_core::state::{StepState, TaskState};

use crate::error::StoreError;
use crate::types::{Refusal, RetryDecision};

/// A lease (or any duration a store keeps) in whole microseconds, the resolution of both
/// stores' instants; anything finer, or too long for 64 bits, is refused the same on both.
pub fn micros(what: &str, d: Duration) -> Result<i64, StoreError> {
    if !d.as_nanos().is_multiple_of(1000) {
        return Err(StoreError::InvalidInput(format!(
            "{what}: {d:?} is not a whole number of microseconds"
        )));
    }
    i64::try_from(d.as_micros())
        .map_err(|_| StoreError::InvalidInput(format!("{what}: {d:?} is too long")))
}

/// Why an item of a batch (a completion, failure, heartbeat or release) was refused, given
/// the step's state now (`None`: no such step) and its fencing token.
pub fn refusal(step: Option<(StepState, i64)>, token: i64, duplicate: bool) -> Refusal {
    match step {
        _ if duplicate => Refusal::DuplicateInBatch,
        None => Refusal::UnknownStep,
        Some((StepState::Cancelled, _)) => Refusal::Cancelled,
        Some((_, claim_count)) if claim_count != token => Refusal::StaleToken,
        Some((state, _)) if state != StepState::InProgress => Refusal::NotInProgress,
        Some(_) => Refusal::Other("refused".into()),
    }
}

/// What an accepted failure does to its step: retry while both the failure and the step
/// allow it and attempts are left (`attempts` counts the ones before this failure).
pub fn retry_decision(
    failure_retryable: bool,
    step_retryable: bool,
    attempts: i64,
    max_attempts: i64,
) -> RetryDecision {
    if !(failure_retryable && step_retryable) {
        RetryDecision::Permanent
    } else if attempts.saturating_add(1) >= max_attempts {
        RetryDecision::Exhausted
    } else {
        RetryDecision::Retry
    }
}

/// What a task becomes after its steps changed (None: it stays as it is): complete when no
/// unfinished step is left; error when a step is in error and no other step can move (none
/// in progress, waiting for retry or claimable). Only pending and in-progress tasks finalize.
pub fn finalize(
    state: TaskState,
    unfinished_steps: i64,
    error_steps: i64,
    steps_can_move: bool,
) -> Option<TaskState> {
    if !matches!(state, TaskState::Pending | TaskState::InProgress) {
        None
    } else if unfinished_steps == 0 {
        Some(TaskState::Complete)
    } else if error_steps > 0 && !steps_can_move {
        Some(TaskState::Error)
    } else {
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_last_attempt_is_exhausted_and_a_refused_kind_is_permanent() {
        assert_eq!(retry_decision(true, true, 0, 3), RetryDecision::Retry);
        assert_eq!(retry_decision(true, true, 2, 3), RetryDecision::Exhausted);
        assert_eq!(retry_decision(false, true, 0, 3), RetryDecision::Permanent);
        assert_eq!(retry_decision(true, false, 2, 3), RetryDecision::Permanent);
    }

    #[test]
    fn a_task_ends_in_error_only_when_nothing_else_can_move() {
        assert_eq!(
            finalize(TaskState::InProgress, 0, 0, false),
            Some(TaskState::Complete)
        );
        assert_eq!(
            finalize(TaskState::InProgress, 2, 1, false),
            Some(TaskState::Error)
        );
        assert_eq!(finalize(TaskState::InProgress, 2, 1, true), None);
        assert_eq!(finalize(TaskState::Pending, 2, 0, false), None);
        assert_eq!(finalize(TaskState::Cancelled, 0, 0, false), None);
    }

    #[test]
    fn a_duplicate_is_named_before_anything_else() {
        assert_eq!(
            refusal(Some((StepState::InProgress, 1)), 1, true),
            Refusal::DuplicateInBatch
        );
        assert_eq!(refusal(None, 1, false), Refusal::UnknownStep);
        assert_eq!(
            refusal(Some((StepState::Cancelled, 9)), 1, false),
            Refusal::Cancelled
        );
        assert_eq!(
            refusal(Some((StepState::InProgress, 2)), 1, false),
            Refusal::StaleToken
        );
        assert_eq!(
            refusal(Some((StepState::Complete, 1)), 1, false),
            Refusal::NotInProgress
        );
    }
}
