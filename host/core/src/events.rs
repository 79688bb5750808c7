//! Lifecycle event names: the one place they are defined.
//!
//! Names are `family.verb`. Subscribers match them exactly or by `family.*`. Handlers' custom
//! events are published as `custom.<name>`.

pub const TASK_CREATED: &str = "task.created";
pub const TASK_STARTED: &str = "task.started";
pub const TASK_COMPLETED: &str = "task.completed";
pub const TASK_FAILED: &str = "task.failed";
pub const TASK_CANCELLED: &str = "task.cancelled";
pub const TASK_RETRY_REQUESTED: &str = "task.retry_requested";

pub const STEP_CLAIMED: &str = "step.claimed";
pub const STEP_STARTED: &str = "step.started";
pub const STEP_COMPLETED: &str = "step.completed";
pub const STEP_FAILED: &str = "step.failed";
pub const STEP_RETRY_SCHEDULED: &str = "step.retry_scheduled";
pub const STEP_EXHAUSTED: &str = "step.exhausted";
pub const STEP_LEASE_LOST: &str = "step.lease_lost";
pub const STEP_RESOLVED_MANUALLY: &str = "step.resolved_manually";

/// Prefix of events emitted by handlers.
pub const CUSTOM_PREFIX: &str = "custom.";

/// Every built-in event name, for docs, validation and tests.
pub const ALL: &[&str] = &[
    TASK_CREATED,
    TASK_STARTED,
    TASK_COMPLETED,
    TASK_FAILED,
    TASK_CANCELLED,
    TASK_RETRY_REQUESTED,
    STEP_CLAIMED,
    STEP_STARTED,
    STEP_COMPLETED,
    STEP_FAILED,
    STEP_RETRY_SCHEDULED,
    STEP_EXHAUSTED,
    STEP_LEASE_LOST,
    STEP_RESOLVED_MANUALLY,
];

/// Does `pattern` (`*`, `family.*`, or an exact name) match the event `name`?
pub fn matches(pattern: &str, name: &str) -> bool {
    match pattern.strip_suffix('*') {
        Some("") => true,
        Some(prefix) if prefix.ends_with('.') => name.starts_with(prefix),
        Some(_) => false,
        None => pattern == name,
    }
}

/// Is `pattern` something [`matches`] understands? Used to validate subscriptions.
pub fn is_valid_pattern(pattern: &str) -> bool {
    let body = pattern.strip_suffix(".*").unwrap_or(pattern);
    pattern == "*"
        || (!body.is_empty()
            && !body.contains('*')
            && body.split('.').all(|seg| {
                !seg.is_empty()
                    && seg
                        .chars()
                        .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
            }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_well_formed() {
        let mut seen = std::collections::HashSet::new();
        for n in ALL {
            assert!(seen.insert(n), "duplicate {n}");
            assert!(is_valid_pattern(n), "{n}");
            assert!(n.starts_with("task.") || n.starts_with("step."));
        }
    }

    #[test]
    fn patterns() {
        assert!(matches("*", STEP_FAILED));
        assert!(matches("step.*", STEP_FAILED));
        assert!(!matches("task.*", STEP_FAILED));
        assert!(matches(STEP_FAILED, STEP_FAILED));
        assert!(!matches("step.fail*", STEP_FAILED));
        assert!(matches("custom.*", "custom.payment_charged"));
        assert!(!is_valid_pattern("step.fail*"));
        assert!(!is_valid_pattern(""));
        assert!(!is_valid_pattern("step..x"));
    }
}
