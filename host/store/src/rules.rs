//! The decisions both stores make about one item, written once. The SQLite store calls these;
//! PostgreSQL's functions of the same names (`tasker_refusal`, `tasker_retry_decision`,
//! `tasker_finalize_decision` in `host/store/sql/functions/`) mirror them, and
//! `tests/differential/sql_vs_rust.rs` checks on random inputs that the two agree.
//! `execution_context` mirrors `get_task_execution_context_batch`; `tests/differential/reads.rs`
//! compares the two stores' contexts.

use std::time::Duration;

use tasker_core::state::{StepState, TaskState};

use crate::error::StoreError;
use crate::types::{ExecutionContext, ReadinessRow, Refusal, RetryDecision, TaskId};

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

/// `get_task_execution_context_batch` for one task, from its readiness rows: counts by state
/// and the derived status, action, percentage and health. The SQLite store calls it, and a
/// caller holding a task's readiness rows needs no second read.
pub fn execution_context<'a>(
    task_id: TaskId,
    task_state: TaskState,
    steps: impl IntoIterator<Item = &'a ReadinessRow>,
) -> ExecutionContext {
    let (mut total, mut pending, mut in_progress, mut waiting) = (0u32, 0u32, 0u32, 0u32);
    let (mut complete, mut resolved, mut failed, mut cancelled, mut ready) =
        (0u32, 0u32, 0u32, 0u32, 0u32);
    for r in steps {
        total += 1;
        match r.state {
            StepState::Pending => pending += 1,
            StepState::InProgress => in_progress += 1,
            StepState::WaitingForRetry => waiting += 1,
            StepState::Complete => complete += 1,
            StepState::ResolvedManually => resolved += 1,
            StepState::Error => failed += 1,
            StepState::Cancelled => cancelled += 1,
        }
        if r.ready_for_execution {
            ready += 1;
        }
    }
    let status = if ready > 0 {
        "has_ready_steps"
    } else if in_progress > 0 || waiting > 0 {
        "processing"
    } else if failed > 0 {
        "blocked_by_failures"
    } else if complete + resolved == total {
        "all_complete"
    } else if cancelled > 0 || task_state == TaskState::Cancelled {
        "cancelled"
    } else {
        "waiting_for_dependencies"
    };
    let action = match status {
        "has_ready_steps" => "execute_ready_steps",
        "processing" => "wait_for_completion",
        "blocked_by_failures" => "handle_failures",
        "all_complete" if task_state == TaskState::Complete => "none",
        "all_complete" => "finalize_task",
        "cancelled" => "none",
        _ => "wait_for_dependencies",
    };
    let health = if status == "blocked_by_failures" {
        "blocked"
    } else if status == "cancelled" {
        "unknown"
    } else if waiting > 0 || failed > 0 {
        "recovering"
    } else {
        "healthy"
    };
    ExecutionContext {
        task_id,
        task_state,
        total_steps: total,
        pending_steps: pending,
        in_progress_steps: in_progress,
        waiting_for_retry_steps: waiting,
        completed_steps: complete,
        resolved_steps: resolved,
        failed_steps: failed,
        cancelled_steps: cancelled,
        ready_steps: ready,
        execution_status: status.to_owned(),
        recommended_action: action.to_owned(),
        completion_percentage: percentage(complete + resolved, total),
        health_status: health.to_owned(),
    }
}

/// `round(100.0 * done / total, 2)::float8` (0 without steps). PostgreSQL's numeric division
/// keeps far more digits than a u32 ratio needs to decide the rounding, and rounds half away
/// from zero; in integers that is the quotient of 10000 * done / total rounded half up. The
/// f64 division by 100 is correctly rounded, as the numeric-to-float8 cast is.
fn percentage(done: u32, total: u32) -> f64 {
    if total == 0 {
        return 0.0;
    }
    let q = 10_000 * u64::from(done);
    let total = u64::from(total);
    let hundredths = q / total + u64::from(2 * (q % total) >= total);
    hundredths as f64 / 100.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentage_rounds_like_numeric() {
        assert_eq!(percentage(0, 0), 0.0);
        assert_eq!(percentage(1, 4), 25.0);
        assert_eq!(percentage(1, 3), 33.33);
        assert_eq!(percentage(2, 3), 66.67);
        assert_eq!(percentage(1, 8), 12.5);
        // 100 / 32 = 3.125: half away from zero, as numeric's round.
        assert_eq!(percentage(1, 32), 3.13);
        assert_eq!(percentage(7, 7), 100.0);
    }

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
