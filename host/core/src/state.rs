//! Task and step state machines.
//!
//! The allowed transitions live here and only here; the store refuses anything else (the
//! PL/pgSQL functions mirror this table, and a test checks that they agree).
//!
//! Step: `pending → in_progress` is the claim (an `in_progress` step always holds a lease).
//! A failure goes to `waiting_for_retry` (retryable, attempts left) or `error` (permanent or
//! exhausted). A lost lease goes back to `waiting_for_retry`.
//!
//! Task: `pending → in_progress` on its first claim, then `complete`, `error` (blocked by a
//! failed step and nothing left to run) or `cancelled`. `error → pending` retries the task.

use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Serialize};
use thiserror::Error;

/// The state of one step of a task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum StepState {
    /// Not yet run. Ready once every parent is finished and `ready_at` has passed.
    Pending,
    /// Claimed by a worker that holds a lease on it, and running.
    InProgress,
    /// Failed retryably with attempts left; ready again at its `ready_at`.
    WaitingForRetry,
    /// Ran successfully. Terminal.
    Complete,
    /// Failed permanently or exhausted its attempts. Can be retried (task retry) or resolved.
    Error,
    /// Cancelled with its task. Terminal.
    Cancelled,
    /// Marked done by an operator; counts as complete for its children. Terminal.
    ResolvedManually,
}

/// The state of one task.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum TaskState {
    /// Created, no step claimed yet.
    Pending,
    /// At least one step has been claimed.
    InProgress,
    /// Every step is complete or resolved manually. Terminal.
    Complete,
    /// A step is in `error` and nothing else can run. `retry` moves it back to `pending`.
    Error,
    /// Cancelled by an operator. Terminal.
    Cancelled,
}

/// A transition that the state machine does not allow.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("illegal {entity} transition {from} -> {to}")]
pub struct IllegalTransition {
    pub entity: &'static str,
    pub from: String,
    pub to: String,
}

/// A state name that is not one of ours.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("unknown {entity} state '{name}'")]
pub struct UnknownState {
    pub entity: &'static str,
    pub name: String,
}

impl StepState {
    pub const ALL: [StepState; 7] = [
        StepState::Pending,
        StepState::InProgress,
        StepState::WaitingForRetry,
        StepState::Complete,
        StepState::Error,
        StepState::Cancelled,
        StepState::ResolvedManually,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            StepState::Pending => "pending",
            StepState::InProgress => "in_progress",
            StepState::WaitingForRetry => "waiting_for_retry",
            StepState::Complete => "complete",
            StepState::Error => "error",
            StepState::Cancelled => "cancelled",
            StepState::ResolvedManually => "resolved_manually",
        }
    }

    /// Complete or resolved manually: the step's children may run.
    pub fn is_finished(self) -> bool {
        matches!(self, StepState::Complete | StepState::ResolvedManually)
    }

    /// No transition leaves this state except an operator's retry or resolve.
    pub fn is_terminal(self) -> bool {
        matches!(
            self,
            StepState::Complete | StepState::Cancelled | StepState::ResolvedManually
        )
    }

    pub fn can_transition_to(self, to: StepState) -> bool {
        use StepState::*;
        matches!(
            (self, to),
            (Pending, InProgress)
                | (Pending, Cancelled)
                | (Pending, ResolvedManually)
                | (InProgress, Complete)
                | (InProgress, WaitingForRetry)
                | (InProgress, Error)
                | (InProgress, Cancelled)
                | (WaitingForRetry, InProgress)
                | (WaitingForRetry, Cancelled)
                | (WaitingForRetry, ResolvedManually)
                | (Error, Pending)
                | (Error, Cancelled)
                | (Error, ResolvedManually)
        )
    }

    pub fn check_transition(self, to: StepState) -> Result<(), IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(IllegalTransition {
                entity: "step",
                from: self.as_str().into(),
                to: to.as_str().into(),
            })
        }
    }
}

impl TaskState {
    pub const ALL: [TaskState; 5] = [
        TaskState::Pending,
        TaskState::InProgress,
        TaskState::Complete,
        TaskState::Error,
        TaskState::Cancelled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            TaskState::Pending => "pending",
            TaskState::InProgress => "in_progress",
            TaskState::Complete => "complete",
            TaskState::Error => "error",
            TaskState::Cancelled => "cancelled",
        }
    }

    pub fn is_terminal(self) -> bool {
        matches!(self, TaskState::Complete | TaskState::Cancelled)
    }

    pub fn can_transition_to(self, to: TaskState) -> bool {
        use TaskState::*;
        matches!(
            (self, to),
            (Pending, InProgress)
                | (Pending, Cancelled)
                | (Pending, Complete)
                | (Pending, Error)
                | (InProgress, Complete)
                | (InProgress, Error)
                | (InProgress, Cancelled)
                | (Error, Pending)
                | (Error, Cancelled)
        )
    }

    pub fn check_transition(self, to: TaskState) -> Result<(), IllegalTransition> {
        if self.can_transition_to(to) {
            Ok(())
        } else {
            Err(IllegalTransition {
                entity: "task",
                from: self.as_str().into(),
                to: to.as_str().into(),
            })
        }
    }
}

macro_rules! display_and_parse {
    ($ty:ident, $entity:literal) => {
        impl fmt::Display for $ty {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str(self.as_str())
            }
        }

        impl FromStr for $ty {
            type Err = UnknownState;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                $ty::ALL
                    .into_iter()
                    .find(|st| st.as_str() == s)
                    .ok_or_else(|| UnknownState {
                        entity: $entity,
                        name: s.to_owned(),
                    })
            }
        }
    };
}

display_and_parse!(StepState, "step");
display_and_parse!(TaskState, "task");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for s in StepState::ALL {
            assert_eq!(s.as_str().parse::<StepState>().unwrap(), s);
            assert_eq!(serde_json::to_string(&s).unwrap(), format!("\"{s}\""));
        }
        for s in TaskState::ALL {
            assert_eq!(s.as_str().parse::<TaskState>().unwrap(), s);
        }
        assert!("claimed".parse::<StepState>().is_err());
    }

    #[test]
    fn self_transitions_are_refused() {
        for s in StepState::ALL {
            assert!(s.check_transition(s).is_err(), "{s} -> {s}");
        }
        for s in TaskState::ALL {
            assert!(s.check_transition(s).is_err(), "{s} -> {s}");
        }
    }

    #[test]
    fn terminal_step_states_only_leave_by_nothing() {
        for from in [
            StepState::Complete,
            StepState::Cancelled,
            StepState::ResolvedManually,
        ] {
            for to in StepState::ALL {
                assert!(!from.can_transition_to(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn a_step_runs_only_after_a_claim() {
        for from in StepState::ALL {
            let allowed = from.can_transition_to(StepState::Complete);
            assert_eq!(allowed, from == StepState::InProgress, "{from} -> complete");
        }
        let err = StepState::Pending
            .check_transition(StepState::Complete)
            .unwrap_err();
        assert_eq!(
            err.to_string(),
            "illegal step transition pending -> complete"
        );
    }

    #[test]
    fn task_retry_and_terminals() {
        assert!(TaskState::Error.can_transition_to(TaskState::Pending));
        for to in TaskState::ALL {
            assert!(!TaskState::Complete.can_transition_to(to));
            assert!(!TaskState::Cancelled.can_transition_to(to));
        }
    }
}
