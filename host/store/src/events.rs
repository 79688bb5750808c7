//! The event log: every task transition, every step transition and every custom event a
//! handler emitted, in one total order, readable from a cursor ([`crate::Store::events_after`],
//! docs/store.md, "The event log").
//!
//! An event's place is its order key `(tx, src, entity, seq)`: `tx` is the writing
//! transaction's position (PostgreSQL: its `xid8`; SQLite: `tasker_ctx.tx_seq`), `src` the
//! source ([`Source`]: within one transaction a step's change comes before the custom events
//! and the task change it causes), `entity` the step id, custom event id or task id, `seq`
//! the transition's `sort_key` (0 for a custom event). The cursor is the key as text,
//! `"{tx}-{src}-{entity}-{seq}"`. Both stores return the same events in the same order for
//! the same history; their cursors differ in `tx` only.
//!
//! The statements are built here once for both stores ([`events_sql`], [`latest_sql`]), with
//! what differs between them in a [`Dialect`], so that the filters, bounds and order cannot
//! drift apart.

use std::fmt;

use chrono::{DateTime, Utc};
use serde_json::Value;

use crate::error::StoreError;
use crate::ids::{StepId, TaskId};
use crate::listing::{Bind, TemplateMatch, template_filter};

/// The name of a task's state change in the event log.
pub const TASK_TRANSITION: &str = "task.transition";
/// The name of a step's state change in the event log.
pub const STEP_TRANSITION: &str = "step.transition";

/// Which events to read. Empty fields match every event; the fields combine with AND.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EventFilter {
    /// Events of this task.
    pub task_id: Option<TaskId>,
    /// Events of tasks of this template: `namespace/name@version` exactly, or
    /// `namespace/name` for every version (as [`crate::TaskFilter::template`]).
    pub template: Option<String>,
}

/// One event of the log.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredEvent {
    /// Where the event is in the log: pass it back as `after` (an SSE `Last-Event-ID`) to
    /// read on from here.
    pub cursor: String,
    pub task_id: TaskId,
    /// The step of a step transition or custom event.
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    /// [`TASK_TRANSITION`], [`STEP_TRANSITION`], or a custom event's name as the event bus
    /// names it (`custom.<name>`).
    pub name: String,
    /// A transition's states (None for a custom event).
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    /// A step transition's claim token (the `attempt` of its metadata), or the step's
    /// attempt that emitted a custom event; None for a task transition.
    pub attempt: Option<i32>,
    /// A transition's metadata (`reason`, `worker`, `attempt`, `error_kind`), or a custom
    /// event's payload.
    pub payload: Value,
    /// When the change happened (the operation's `now`).
    pub at: DateTime<Utc>,
}

/// The sources of the log, in their order within one transaction.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) enum Source {
    /// `step_transitions`.
    Step = 0,
    /// `task_events_custom`.
    Custom = 1,
    /// `task_transitions`.
    Task = 2,
}

impl Source {
    const ALL: [Source; 3] = [Source::Step, Source::Custom, Source::Task];

    pub(crate) fn from_stored(v: i64) -> Result<Source, StoreError> {
        Source::ALL
            .into_iter()
            .find(|s| *s as i64 == v)
            .ok_or_else(|| StoreError::decode("event source", v))
    }
}

/// Whether `cursor` is the place in the log of `task`'s transition number `sort_key`: how a
/// reader tells that a client resumed right after a task's last transition.
pub fn is_task_transition(cursor: &str, task: TaskId, sort_key: u32) -> bool {
    Cursor::parse(cursor).is_ok_and(|c| {
        c.src == Source::Task && c.entity == task.get() && i64::from(c.seq) == i64::from(sort_key)
    })
}

/// An order key; its text form is the cursor.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub(crate) struct Cursor {
    pub tx: i64,
    pub src: Source,
    pub entity: i64,
    pub seq: i32,
}

/// How much of a refused cursor an error repeats (it comes from a client's header).
const CURSOR_ECHO: usize = 64;

impl Cursor {
    /// Parse `"{tx}-{src}-{entity}-{seq}"`: four decimal numbers (no sign), `src` 0, 1 or 2.
    /// Anything else is [`StoreError::InvalidInput`] naming the cursor.
    pub(crate) fn parse(text: &str) -> Result<Cursor, StoreError> {
        let bad = || {
            let shown: String = text.chars().take(CURSOR_ECHO).collect();
            let more = if text.chars().count() > CURSOR_ECHO {
                "…"
            } else {
                ""
            };
            StoreError::InvalidInput(format!(
                "event cursor '{shown}{more}' is malformed: expected tx-src-entity-seq, four \
                 decimal numbers with src 0, 1 or 2, as a previous event's cursor"
            ))
        };
        let parts: Vec<&str> = text.split('-').collect();
        let [tx, src, entity, seq] = parts.as_slice() else {
            return Err(bad());
        };
        fn number<T: std::str::FromStr>(s: &str) -> Option<T> {
            (!s.is_empty() && s.bytes().all(|b| b.is_ascii_digit()))
                .then(|| s.parse().ok())
                .flatten()
        }
        Ok(Cursor {
            tx: number(tx).ok_or_else(bad)?,
            src: number::<i64>(src)
                .and_then(|v| Source::from_stored(v).ok())
                .ok_or_else(bad)?,
            entity: number(entity).ok_or_else(bad)?,
            seq: number(seq).ok_or_else(bad)?,
        })
    }
}

impl fmt::Display for Cursor {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}-{}-{}-{}",
            self.tx, self.src as i64, self.entity, self.seq
        )
    }
}

/// What the two stores spell differently in the event statements.
pub(crate) struct Dialect {
    /// The transaction column (`xid` / `tx`).
    pub tx: &'static str,
    /// The transaction column of alias `a` as a bigint.
    pub tx_out: fn(&str) -> String,
    /// A bound bigint as a value of the transaction column.
    pub tx_in: fn(String) -> String,
    /// The condition that a row of alias `a` is final (PostgreSQL: below the xmin horizon),
    /// if the store needs one.
    pub horizon: Option<fn(&str) -> String>,
    /// The `attempt` of a transition's metadata (alias `a`), as an integer.
    pub attempt: fn(&str) -> String,
    /// The `n`th placeholder (1-based).
    pub placeholder: fn(usize) -> String,
}

/// A statement under construction: its text and its binds.
struct Sql<'d> {
    d: &'d Dialect,
    text: String,
    binds: Vec<Bind>,
}

impl Sql<'_> {
    fn bind(&mut self, b: Bind) -> String {
        self.binds.push(b);
        (self.d.placeholder)(self.binds.len())
    }
}

/// One source table: how to read it as events.
struct Part {
    src: Source,
    /// The row alias.
    a: &'static str,
    from: &'static str,
    /// The task id column.
    task: &'static str,
    /// The entity and seq columns, in the order key (a custom event has no seq).
    entity: &'static str,
    seq: Option<&'static str>,
}

const PARTS: [Part; 3] = [
    Part {
        src: Source::Step,
        a: "tr",
        from: "step_transitions tr JOIN steps s ON s.id = tr.step_id",
        task: "s.task_id",
        entity: "tr.step_id",
        seq: Some("tr.sort_key"),
    },
    Part {
        src: Source::Custom,
        a: "c",
        from: "task_events_custom c",
        task: "c.task_id",
        entity: "c.id",
        seq: None,
    },
    Part {
        src: Source::Task,
        a: "tr",
        from: "task_transitions tr",
        task: "tr.task_id",
        entity: "tr.task_id",
        seq: Some("tr.sort_key"),
    },
];

impl Part {
    /// The event columns, the same names and types for every part.
    fn columns(&self, d: &Dialect) -> String {
        let tx = (d.tx_out)(self.a);
        let src = self.src as i64;
        match self.src {
            Source::Step => format!(
                "{tx} AS tx, CAST({src} AS bigint) AS src, tr.step_id AS entity, \
                 tr.sort_key AS seq, s.task_id AS task_id, tr.step_id AS step_id, \
                 s.name AS step_name, '{STEP_TRANSITION}' AS name, tr.from_state AS from_state, \
                 tr.to_state AS to_state, {} AS attempt, tr.metadata AS payload, \
                 tr.created_at AS at",
                (d.attempt)("tr")
            ),
            Source::Custom => format!(
                "{tx} AS tx, CAST({src} AS bigint) AS src, c.id AS entity, \
                 CAST(0 AS integer) AS seq, c.task_id AS task_id, c.step_id AS step_id, \
                 c.step_name AS step_name, c.name AS name, CAST(NULL AS text) AS from_state, \
                 CAST(NULL AS text) AS to_state, c.attempt AS attempt, c.payload AS payload, \
                 c.created_at AS at"
            ),
            Source::Task => format!(
                "{tx} AS tx, CAST({src} AS bigint) AS src, tr.task_id AS entity, \
                 tr.sort_key AS seq, tr.task_id AS task_id, CAST(NULL AS bigint) AS step_id, \
                 CAST(NULL AS text) AS step_name, '{TASK_TRANSITION}' AS name, \
                 tr.from_state AS from_state, tr.to_state AS to_state, \
                 CAST(NULL AS integer) AS attempt, tr.metadata AS payload, \
                 tr.created_at AS at"
            ),
        }
    }

    /// The key columns, for ORDER BY (the index's order: `(tx, entity, seq)`).
    fn order(&self, d: &Dialect, desc: bool) -> String {
        let dir = if desc { " DESC" } else { "" };
        let mut cols = vec![
            format!("{}.{}{dir}", self.a, d.tx),
            format!("{}{dir}", self.entity),
        ];
        if let Some(seq) = self.seq {
            cols.push(format!("{seq}{dir}"));
        }
        cols.join(", ")
    }

    /// This part's rows strictly after `after`. The source is fixed per part, so the key
    /// comparison `(tx, src, entity, seq) > cursor` becomes one on the index's columns.
    fn after(&self, q: &mut Sql<'_>, after: &Cursor) -> String {
        let tx_col = format!("{}.{}", self.a, q.d.tx);
        let tx = (q.d.tx_in)(q.bind(Bind::Int(after.tx)));
        match self.src.cmp(&after.src) {
            // Later sources of the cursor's transaction come after it.
            std::cmp::Ordering::Greater => format!("{tx_col} >= {tx}"),
            std::cmp::Ordering::Less => format!("{tx_col} > {tx}"),
            std::cmp::Ordering::Equal => {
                let entity = q.bind(Bind::Int(after.entity));
                match self.seq {
                    Some(seq_col) => {
                        let seq = q.bind(Bind::Int4(after.seq));
                        format!(
                            "({tx_col}, {}, {seq_col}) > ({tx}, {entity}, {seq})",
                            self.entity
                        )
                    }
                    // A custom event's seq is 0, at or below any cursor's.
                    None => format!("({tx_col}, {}) > ({tx}, {entity})", self.entity),
                }
            }
        }
    }

    /// `SELECT ... FROM ... WHERE ... ORDER BY key LIMIT n` of this part.
    fn select(
        &self,
        q: &mut Sql<'_>,
        filter: &EventFilter,
        after: Option<&Cursor>,
        desc: bool,
        limit: i64,
    ) -> String {
        let mut conds = Vec::new();
        if let Some(after) = after {
            conds.push(self.after(q, after));
        }
        if let Some(horizon) = q.d.horizon {
            conds.push(horizon(self.a));
        }
        if let Some(task) = filter.task_id {
            let p = q.bind(Bind::Int(task.get()));
            conds.push(format!("{} = {p}", self.task));
        }
        match filter.template.as_deref().map(template_filter) {
            None => {}
            Some(TemplateMatch::Key(key)) => {
                let p = q.bind(Bind::Text(key.to_owned()));
                conds.push(format!(
                    "{} IN (SELECT t.id FROM tasks t WHERE t.template_id IN \
                     (SELECT x.id FROM templates x WHERE x.template_key = {p}))",
                    self.task
                ));
            }
            Some(TemplateMatch::Name(name)) => {
                let p = q.bind(Bind::Text(name.to_owned()));
                conds.push(format!(
                    "{} IN (SELECT t.id FROM tasks t WHERE t.template_id IN \
                     (SELECT x.id FROM templates x JOIN namespaces n ON n.id = x.namespace_id \
                      WHERE n.name || '/' || x.name = {p}))",
                    self.task
                ));
            }
        }
        let limit = q.bind(Bind::Int(limit));
        let conds = if conds.is_empty() {
            String::new()
        } else {
            format!(" WHERE {}", conds.join(" AND "))
        };
        format!(
            "SELECT {} FROM {}{conds} ORDER BY {} LIMIT {limit}",
            self.columns(q.d),
            self.from,
            self.order(q.d, desc)
        )
    }
}

/// The three parts, each its first `limit` rows in key order, merged: the first `limit` of
/// the log are among them. Each part reads an index in its own order (the transaction
/// index, or a task's rows).
fn union(
    d: &Dialect,
    filter: &EventFilter,
    after: Option<&Cursor>,
    desc: bool,
    limit: i64,
) -> (String, Vec<Bind>) {
    let mut q = Sql {
        d,
        text: String::new(),
        binds: Vec::new(),
    };
    let parts: Vec<String> = PARTS
        .iter()
        .map(|p| {
            let select = p.select(&mut q, filter, after, desc, limit);
            format!("SELECT * FROM ({select}) p{}", p.src as i64)
        })
        .collect();
    let dir = if desc { " DESC" } else { "" };
    let limit = q.bind(Bind::Int(limit));
    q.text = format!(
        "SELECT * FROM ({}) e ORDER BY e.tx{dir}, e.src{dir}, e.entity{dir}, e.seq{dir} \
         LIMIT {limit}",
        parts.join(" UNION ALL ")
    );
    (q.text, q.binds)
}

/// The events matching `filter` strictly after `after`, at most `limit`, in key order.
pub(crate) fn events_sql(
    d: &Dialect,
    filter: &EventFilter,
    after: Option<&Cursor>,
    limit: u32,
) -> (String, Vec<Bind>) {
    union(d, filter, after, false, i64::from(limit))
}

/// The last event matching `filter` (PostgreSQL: the last below the horizon).
pub(crate) fn latest_sql(d: &Dialect, filter: &EventFilter) -> (String, Vec<Bind>) {
    union(d, filter, None, true, 1)
}

/// The parts of an event row both stores decode the same way, and the event made of them.
pub(crate) struct EventRow {
    pub tx: i64,
    pub src: i64,
    pub entity: i64,
    pub seq: i64,
    pub task_id: TaskId,
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    pub name: String,
    pub from_state: Option<String>,
    pub to_state: Option<String>,
    pub attempt: Option<i64>,
    pub payload: Value,
    pub at: DateTime<Utc>,
}

impl EventRow {
    pub(crate) fn cursor(&self) -> Result<Cursor, StoreError> {
        Ok(Cursor {
            tx: self.tx,
            src: Source::from_stored(self.src)?,
            entity: self.entity,
            seq: i32::try_from(self.seq).map_err(|_| StoreError::decode("event seq", self.seq))?,
        })
    }

    pub(crate) fn into_event(self) -> Result<StoredEvent, StoreError> {
        let cursor = self.cursor()?.to_string();
        let attempt = self
            .attempt
            .map(|a| i32::try_from(a).map_err(|_| StoreError::decode("event attempt", a)))
            .transpose()?;
        Ok(StoredEvent {
            cursor,
            task_id: self.task_id,
            step_id: self.step_id,
            step_name: self.step_name,
            name: self.name,
            from_state: self.from_state,
            to_state: self.to_state,
            attempt,
            payload: self.payload,
            at: self.at,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_and_order_as_keys() {
        let c = Cursor::parse("812-1-44-0").unwrap();
        assert_eq!(
            c,
            Cursor {
                tx: 812,
                src: Source::Custom,
                entity: 44,
                seq: 0
            }
        );
        assert_eq!(c.to_string(), "812-1-44-0");
        let later_source = Cursor::parse("812-2-3-1").unwrap();
        let later_tx = Cursor::parse("813-0-1-1").unwrap();
        assert!(c < later_source && later_source < later_tx);
    }

    #[test]
    fn malformed_cursors_are_refused_naming_the_cursor() {
        let long = "9".repeat(200);
        for bad in [
            "",
            "1-2-3",
            "1-2-3-4-5",
            "1-3-1-1",
            "a-0-1-1",
            "-1-0-1-1",
            "1--0-1",
            "+1-0-1-1",
            "1-0-1-99999999999",
            "1 -0-1-1",
            &long,
        ] {
            let e = Cursor::parse(bad).unwrap_err();
            assert!(matches!(e, StoreError::InvalidInput(_)), "{bad}: {e}");
            assert!(e.to_string().contains("event cursor"), "{e}");
            assert!(e.to_string().len() < 300, "the echo is bounded: {e}");
        }
    }

    fn lite() -> Dialect {
        Dialect {
            tx: "tx",
            tx_out: |a| format!("{a}.tx"),
            tx_in: |p| p,
            horizon: None,
            attempt: |a| format!("json_extract({a}.metadata, '$.attempt')"),
            placeholder: |n| format!("?{n}"),
        }
    }

    #[test]
    fn each_source_is_bounded_on_its_index_columns() {
        let after = Cursor::parse("7-1-5-0").unwrap();
        let (sql, binds) = events_sql(&lite(), &EventFilter::default(), Some(&after), 10);
        // Steps (source 0 < 1): later transactions only; custom: after (7, 5); tasks
        // (source 2 > 1): the cursor's transaction too.
        assert!(sql.contains("tr.tx > ?1"), "{sql}");
        assert!(sql.contains("(c.tx, c.id) > (?3, ?4)"), "{sql}");
        assert!(sql.contains("tr.tx >= ?6"), "{sql}");
        assert_eq!(binds.len(), 8, "{binds:?}");
        assert!(sql.ends_with("LIMIT ?8"), "{sql}");
    }
}
