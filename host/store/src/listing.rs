//! Listings (tasks and templates, filtered, in pages) and API tokens: what a server asks of a
//! store besides the hot path. Backend-neutral, as `types.rs`.

use chrono::{DateTime, Utc};
use tasker_core::state::TaskState;

use crate::ids::TaskId;
use crate::types::DeliveryState;

/// The most items one page may hold.
pub const MAX_PAGE: u32 = 500;

/// Which tasks to list. Empty fields match every task; ranges are `[after, before)`.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct TaskFilter {
    /// Any of these states (empty: any state).
    pub states: Vec<TaskState>,
    /// `namespace/name@version` exactly, or `namespace/name` for every version.
    pub template: Option<String>,
    /// A string in the task's `metadata.tags` array.
    pub tag: Option<String>,
    pub identity_key: Option<String>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    pub finished_after: Option<DateTime<Utc>>,
    pub finished_before: Option<DateTime<Utc>>,
}

/// Which hook deliveries (outbox rows) to list. Empty fields match every row; the fields
/// combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct OutboxFilter {
    /// Rows of this hook (a `template_hooks` id, as in [`crate::HookCounts`]).
    pub hook_id: Option<i64>,
    /// Rows of this task.
    pub task_id: Option<TaskId>,
    /// Any of these states (empty: any state); `[Dead]` lists the dead letters.
    pub states: Vec<DeliveryState>,
}

/// One page of tasks, newest first (descending id, a stable order: ids never change).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TaskPageRequest {
    /// Only tasks with a smaller id: the previous page's `next`.
    pub before: Option<TaskId>,
    /// 1..=[`MAX_PAGE`].
    pub limit: u32,
}

/// A page of a listing and where the next one starts (None: this was the last).
#[derive(Debug, Clone, PartialEq)]
pub struct Page<T, C> {
    pub items: Vec<T>,
    pub next: Option<C>,
}

/// A registered template version, without its definition.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSummary {
    pub template_id: i64,
    /// `namespace/name@version`; listings are in this key's order.
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub version: String,
    pub description: Option<String>,
    pub step_count: u32,
    pub created_at: DateTime<Utc>,
}

/// An API token to store: only the hash of its secret is kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewToken {
    /// Unique among tokens, revoked ones included.
    pub name: String,
    /// Hex blake3 of the secret.
    pub hash: String,
    /// `resource:action` strings or `*`.
    pub permissions: Vec<String>,
    pub expires_at: Option<DateTime<Utc>>,
}

/// A stored token (never its secret).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TokenRow {
    pub id: i64,
    pub name: String,
    pub hash: String,
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
    pub expires_at: Option<DateTime<Utc>>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl TokenRow {
    /// Not revoked and not expired at `now`.
    pub fn is_valid_at(&self, now: DateTime<Utc>) -> bool {
        self.revoked_at.is_none() && self.expires_at.is_none_or(|e| now < e)
    }
}

/// `namespace/name` of a `namespace/name@version` filter, or the key itself when it names no
/// version: the template filter matches a key exactly or every version of a name.
pub(crate) fn template_filter(filter: &str) -> TemplateMatch<'_> {
    if filter.contains('@') {
        TemplateMatch::Key(filter)
    } else {
        TemplateMatch::Name(filter)
    }
}

pub(crate) enum TemplateMatch<'a> {
    Key(&'a str),
    Name(&'a str),
}

/// Refuses a page size outside 1..=[`MAX_PAGE`].
pub(crate) fn check_limit(limit: u32) -> Result<(), crate::StoreError> {
    if (1..=MAX_PAGE).contains(&limit) {
        Ok(())
    } else {
        Err(crate::StoreError::InvalidInput(format!(
            "limit is {limit}, not within 1..={MAX_PAGE}"
        )))
    }
}

/// The page of a listing fetched with one row more than `limit` (which says whether another
/// page follows): at most `limit` items, and the cursor of the last one when more follow.
pub(crate) fn page<T, C>(mut items: Vec<T>, limit: u32, cursor: impl Fn(&T) -> C) -> Page<T, C> {
    let limit = usize::try_from(limit).unwrap_or(usize::MAX);
    let next = if items.len() > limit {
        items.truncate(limit);
        items.last().map(cursor)
    } else {
        None
    };
    Page { items, next }
}

/// `(o.state = 'pending' OR o.state = 'dead')`: `column` in any of `states`, the same SQL on
/// both stores. The states are written into the statement rather than bound (they are
/// [`DeliveryState`] names, never input text) so that a listing of dead letters is planned
/// on the partial index `hook_outbox_dead` (both stores) rather than over the outbox's whole
/// history, and as an OR so that PostgreSQL also combines it with `hook_outbox_head` for
/// pending rows.
pub(crate) fn state_is_any(column: &str, states: &[DeliveryState]) -> String {
    let terms: Vec<String> = states
        .iter()
        .map(|s| format!("{column} = '{}'", s.as_str()))
        .collect();
    format!("({})", terms.join(" OR "))
}

/// Refuses a token the stores would refuse by constraint, naming the field.
pub(crate) fn check_new_token(token: &NewToken) -> Result<(), crate::StoreError> {
    if token.name.is_empty() {
        return Err(crate::StoreError::InvalidInput(
            "token name must be non-empty".into(),
        ));
    }
    if token.hash.is_empty() {
        return Err(crate::StoreError::InvalidInput(format!(
            "token '{}': hash must be non-empty",
            token.name
        )));
    }
    Ok(())
}

/// A new token whose name (`name_taken`) or else hash is already another token's, live or
/// revoked. The hash is not repeated: it stands for a secret.
pub(crate) fn token_conflict(name: &str, name_taken: bool) -> crate::StoreError {
    crate::StoreError::InvalidInput(if name_taken {
        format!("a token named '{name}' exists")
    } else {
        format!("token '{name}': another token has the same hash")
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_page_has_a_next_cursor_only_when_more_follow() {
        let p = page(vec![9, 8, 7, 6], 3, |x| *x);
        assert_eq!((p.items, p.next), (vec![9, 8, 7], Some(7)));
        let p = page(vec![9, 8, 7], 3, |x| *x);
        assert_eq!((p.items, p.next), (vec![9, 8, 7], None));
        let p = page(Vec::<i32>::new(), 3, |x| *x);
        assert_eq!((p.items, p.next), (vec![], None));
    }

    #[test]
    fn limits_outside_one_to_max_page_are_refused_by_name() {
        assert!(check_limit(1).is_ok() && check_limit(MAX_PAGE).is_ok());
        for bad in [0, MAX_PAGE + 1] {
            let e = check_limit(bad).unwrap_err();
            assert!(matches!(e, crate::StoreError::InvalidInput(_)), "{e}");
            assert!(e.to_string().contains("limit"), "{e}");
        }
    }

    #[test]
    fn a_state_filter_is_an_or_of_literals() {
        assert_eq!(
            state_is_any("o.state", &[DeliveryState::Dead]),
            "(o.state = 'dead')"
        );
        assert_eq!(
            state_is_any(
                "o.state",
                &[DeliveryState::Pending, DeliveryState::Delivered]
            ),
            "(o.state = 'pending' OR o.state = 'delivered')"
        );
    }

    #[test]
    fn template_filters_are_keys_or_names() {
        assert!(matches!(
            template_filter("a/b@1.0.0"),
            TemplateMatch::Key("a/b@1.0.0")
        ));
        assert!(matches!(template_filter("a/b"), TemplateMatch::Name("a/b")));
    }

    #[test]
    fn validity_is_revocation_and_expiry() {
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        let mut row = TokenRow {
            id: 1,
            name: "ci".into(),
            hash: "00".into(),
            permissions: vec!["*".into()],
            created_at: t(0),
            expires_at: Some(t(10)),
            revoked_at: None,
        };
        assert!(row.is_valid_at(t(9)));
        assert!(!row.is_valid_at(t(10)));
        row.expires_at = None;
        assert!(row.is_valid_at(t(1_000_000)));
        row.revoked_at = Some(t(5));
        assert!(!row.is_valid_at(t(1)));
    }
}
