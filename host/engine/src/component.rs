//! Why a hook or retry-policy component gave no answer: the error of [`HookRunner`] and
//! [`RetryPolicyRunner`]. Its text is what a dead letter or a policy fallback records.
//!
//! [`HookRunner`]: crate::HookRunner
//! [`RetryPolicyRunner`]: crate::RetryPolicyRunner

use std::time::Duration;

use tasker_core::error_kind::ErrorKind;
use thiserror::Error;

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ComponentError {
    /// The template names the component in a way no registry can resolve.
    #[error("{0}")]
    BadReference(String),
    /// The component ran and failed: trapped, timed out, used up its fuel, returned its own
    /// error, or could not be loaded.
    #[error("{kind}: {message}")]
    Failed { kind: ErrorKind, message: String },
    /// The call did not return within the host's bound.
    #[error("no answer within {} ms", .0.as_millis())]
    NoAnswer(Duration),
    /// This host has no runner for components of this kind.
    #[error("no {0} runner on this host")]
    NoRunner(&'static str),
}
