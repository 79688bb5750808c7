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

/// How many tasks are in each state (of those a [`TaskFilter`] matches).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct TaskCounts {
    pub pending: u64,
    pub in_progress: u64,
    pub complete: u64,
    pub error: u64,
    pub cancelled: u64,
}

impl TaskCounts {
    pub fn total(&self) -> u64 {
        self.pending + self.in_progress + self.complete + self.error + self.cancelled
    }

    pub fn get(&self, state: TaskState) -> u64 {
        match state {
            TaskState::Pending => self.pending,
            TaskState::InProgress => self.in_progress,
            TaskState::Complete => self.complete,
            TaskState::Error => self.error,
            TaskState::Cancelled => self.cancelled,
        }
    }

    /// Adds `n` tasks in `state` (a row of [`task_counts_sql`]).
    pub(crate) fn add(&mut self, state: TaskState, n: u64) {
        let slot = match state {
            TaskState::Pending => &mut self.pending,
            TaskState::InProgress => &mut self.in_progress,
            TaskState::Complete => &mut self.complete,
            TaskState::Error => &mut self.error,
            TaskState::Cancelled => &mut self.cancelled,
        };
        *slot += n;
    }
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

/// A value bound to a statement built here or in `events.rs`, in placeholder order. Each
/// store binds it its own way (`pg_events.rs` and `sqlite/events.rs`, `query`).
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Bind {
    Int(i64),
    Int4(i32),
    Text(String),
    /// A list of strings: a `text[]` on PostgreSQL, a JSON array (as text) on SQLite.
    Texts(Vec<String>),
    /// An instant: a `timestamptz` on PostgreSQL, microseconds since the epoch on SQLite.
    Instant(DateTime<Utc>),
}

/// What the two stores spell differently in the task listing ([`tasks_sql`]).
pub(crate) struct ListDialect {
    /// The `n`th placeholder (1-based).
    pub placeholder: fn(usize) -> String,
    /// `t.state` is one of the states bound (as [`Bind::Texts`]) at placeholder `p`.
    pub state_in: fn(p: &str) -> String,
    /// The task's `metadata.tags` is an array holding the string bound (as [`Bind::Text`])
    /// at placeholder `p`.
    pub has_tag: fn(p: &str) -> String,
}

impl ListDialect {
    pub(crate) const POSTGRES: ListDialect = ListDialect {
        placeholder: |n| format!("${n}"),
        state_in: |p| format!("t.state = ANY({p})"),
        // A string element of a `tags` array (not an object's key, nor a lone string).
        has_tag: |p| {
            format!("jsonb_typeof(t.metadata->'tags') = 'array' AND t.metadata->'tags' ? {p}")
        },
    };

    pub(crate) const SQLITE: ListDialect = ListDialect {
        placeholder: |n| format!("?{n}"),
        state_in: |p| format!("t.state IN (SELECT value FROM json_each({p}))"),
        // A string element of a `tags` array (not an object's value, nor a lone string), as
        // PostgreSQL's `jsonb_typeof(...) = 'array' AND metadata->'tags' ? tag`.
        has_tag: |p| {
            format!(
                "json_type(t.metadata, '$.tags') = 'array' AND EXISTS (SELECT 1 FROM \
                 json_each(t.metadata, '$.tags') WHERE type = 'text' AND value = {p})"
            )
        },
    };
}

/// The binds of a statement under construction.
struct Binds {
    placeholder: fn(usize) -> String,
    list: Vec<Bind>,
}

impl Binds {
    /// Binds `b` next; its placeholder.
    fn push(&mut self, b: Bind) -> String {
        self.list.push(b);
        (self.placeholder)(self.list.len())
    }
}

/// The page `page` of the tasks matching `filter`, as `columns` of tasks `t` joined to their
/// templates `tp`, newest first, with one row more than the page's limit (see [`page`]).
///
/// One statement per combination of filters, so each is planned for what it asks (a rare
/// state is read from `tasks_state`, a template's tasks from `tasks_template`; a common one
/// walks the primary key backwards until the page is full).
pub(crate) fn tasks_sql(
    d: &ListDialect,
    columns: &str,
    filter: &TaskFilter,
    page: TaskPageRequest,
) -> (String, Vec<Bind>) {
    let mut b = Binds {
        placeholder: d.placeholder,
        list: Vec::new(),
    };
    let mut conds = Vec::new();
    if let Some(before) = page.before {
        conds.push(format!("t.id < {}", b.push(Bind::Int(before.get()))));
    }
    filter_conditions(d, filter, true, &mut b, &mut conds);
    let limit = b.push(Bind::Int(i64::from(page.limit) + 1));
    let sql = format!(
        "SELECT {columns} FROM tasks t JOIN templates tp ON tp.id = t.template_id{} \
         ORDER BY t.id DESC LIMIT {limit}",
        where_clause(&conds)
    );
    (sql, b.list)
}

/// How many tasks match `filter` in each state (its `states` are ignored: every state is
/// counted), as rows `(state, n)`.
pub(crate) fn task_counts_sql(d: &ListDialect, filter: &TaskFilter) -> (String, Vec<Bind>) {
    let mut b = Binds {
        placeholder: d.placeholder,
        list: Vec::new(),
    };
    let mut conds = Vec::new();
    filter_conditions(d, filter, false, &mut b, &mut conds);
    let sql = format!(
        "SELECT t.state, count(*) AS n FROM tasks t JOIN templates tp ON tp.id = t.template_id{} \
         GROUP BY t.state",
        where_clause(&conds)
    );
    (sql, b.list)
}

fn where_clause(conds: &[String]) -> String {
    if conds.is_empty() {
        String::new()
    } else {
        format!(" WHERE {}", conds.join(" AND "))
    }
}

/// The conditions of `filter` on tasks `t` joined to templates `tp` (its states too when
/// `with_states`).
fn filter_conditions(
    d: &ListDialect,
    filter: &TaskFilter,
    with_states: bool,
    b: &mut Binds,
    conds: &mut Vec<String>,
) {
    let states: &[TaskState] = if with_states { &filter.states } else { &[] };
    match states {
        [] => {}
        // One state reads `tasks_state` backwards, already in the listing's order.
        [one] => {
            let p = b.push(Bind::Text(one.as_str().to_owned()));
            conds.push(format!("t.state = {p}"));
        }
        many => {
            let states = many.iter().map(|s| s.as_str().to_owned()).collect();
            conds.push((d.state_in)(&b.push(Bind::Texts(states))));
        }
    }
    match filter.template.as_deref().map(template_filter) {
        None => {}
        Some(TemplateMatch::Key(key)) => {
            let p = b.push(Bind::Text(key.to_owned()));
            conds.push(format!("tp.template_key = {p}"));
        }
        Some(TemplateMatch::Name(name)) => {
            let p = b.push(Bind::Text(name.to_owned()));
            conds.push(format!(
                "t.template_id IN (SELECT x.id FROM templates x \
                 JOIN namespaces n ON n.id = x.namespace_id WHERE n.name || '/' || x.name = {p})"
            ));
        }
    }
    if let Some(tag) = &filter.tag {
        conds.push((d.has_tag)(&b.push(Bind::Text(tag.clone()))));
    }
    if let Some(key) = &filter.identity_key {
        conds.push(format!(
            "t.identity_key = {}",
            b.push(Bind::Text(key.clone()))
        ));
    }
    // `[after, before)` on a column of instants (a NULL instant is in no range).
    for (column, after, before) in [
        ("t.created_at", filter.created_after, filter.created_before),
        (
            "t.finished_at",
            filter.finished_after,
            filter.finished_before,
        ),
    ] {
        if let Some(after) = after {
            conds.push(format!("{column} >= {}", b.push(Bind::Instant(after))));
        }
        if let Some(before) = before {
            conds.push(format!("{column} < {}", b.push(Bind::Instant(before))));
        }
    }
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

    /// The numbers of the placeholders (`$n` / `?n`) in `sql`, in order of appearance.
    fn placeholders(sql: &str) -> Vec<usize> {
        let mut out = Vec::new();
        let mut chars = sql.char_indices().peekable();
        while let Some((_, c)) = chars.next() {
            if c == '$' || c == '?' {
                let mut digits = String::new();
                while let Some((_, d)) = chars.peek().filter(|(_, d)| d.is_ascii_digit()) {
                    digits.push(*d);
                    chars.next();
                }
                if let Ok(n) = digits.parse() {
                    out.push(n);
                }
            }
        }
        out
    }

    #[test]
    fn a_task_listing_binds_every_filter_in_placeholder_order() {
        let t = |s| DateTime::from_timestamp(s, 0).unwrap();
        let filter = TaskFilter {
            states: vec![TaskState::Pending, TaskState::Error],
            template: Some("a/b".into()),
            tag: Some("nightly".into()),
            identity_key: Some("k1".into()),
            created_after: Some(t(1)),
            created_before: Some(t(2)),
            finished_after: Some(t(3)),
            finished_before: Some(t(4)),
        };
        let page = TaskPageRequest {
            before: Some(TaskId::new(99)),
            limit: 20,
        };
        let expected = vec![
            Bind::Int(99),
            Bind::Texts(vec!["pending".into(), "error".into()]),
            Bind::Text("a/b".into()),
            Bind::Text("nightly".into()),
            Bind::Text("k1".into()),
            Bind::Instant(t(1)),
            Bind::Instant(t(2)),
            Bind::Instant(t(3)),
            Bind::Instant(t(4)),
            Bind::Int(21),
        ];
        for (d, state_in, tag) in [
            (
                &ListDialect::POSTGRES,
                "t.state = ANY($2)",
                "t.metadata->'tags' ? $4",
            ),
            (
                &ListDialect::SQLITE,
                "t.state IN (SELECT value FROM json_each(?2))",
                "WHERE type = 'text' AND value = ?4)",
            ),
        ] {
            let (sql, binds) = tasks_sql(d, "t.id", &filter, page);
            assert_eq!(placeholders(&sql), (1..=10).collect::<Vec<_>>(), "{sql}");
            assert_eq!(binds, expected);
            assert!(sql.contains(state_in) && sql.contains(tag), "{sql}");
            let limit = (d.placeholder)(10);
            assert!(
                sql.ends_with(&format!("ORDER BY t.id DESC LIMIT {limit}")),
                "{sql}"
            );
        }
        // Nothing set: no conditions, only the limit.
        let (sql, binds) = tasks_sql(
            &ListDialect::SQLITE,
            "t.id",
            &TaskFilter::default(),
            TaskPageRequest {
                before: None,
                limit: 1,
            },
        );
        assert!(!sql.contains("WHERE"), "{sql}");
        assert_eq!(binds, vec![Bind::Int(2)]);
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
