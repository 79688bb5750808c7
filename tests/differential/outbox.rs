//! SQLite's hook outbox against PostgreSQL's, side by side.
//!
//! PostgreSQL is driven through its operations; after each one, the rows it changed are
//! replayed into a fresh SQLite store in the order SQLite's operations write them (steps,
//! then their attempts, then task state changes, as host/store/src/sqlite/hooks.rs asks), so
//! SQLite's triggers see the same changes PostgreSQL's did. Both must then hold the same
//! subscriptions and the same outbox, row for row (ids, heads, payloads, instants); and the
//! same sequence of delivery claims and results must give the same answers on both and leave
//! the same outbox behind.

use std::time::Duration;

use serde_json::{Map, Value, json};
use sqlx::PgPool;
use tasker_core::template::Template;
use tasker_store::*;
use tasker_tests::store::*;

const HOOKED: &str = "namespace: tests\nname: hooked\nversion: 1.0.0\n\
hooks:\n\
\x20 - {component: audit@0.1.0, events: ['*']}\n\
\x20 - {component: steps@0.1.0, events: ['step.*', task.failed], limits: {fuel: 1000}, \
delivery: {max_attempts: 3, backoff: {base_ms: 700, multiplier: 3.0, cap_ms: 20000, jitter: 0.3}}}\n\
\x20 - {component: ends@0.1.0, events: [task.completed, task.failed, task.cancelled, step.lease_lost], \
delivery: {max_attempts: 1}}\n\
steps:\n\
\x20 - {name: a, handler: noop@1.0.0, retry: {max_attempts: 3, backoff: {base_ms: 1000, jitter: 0.5}}}\n\
\x20 - {name: b, handler: noop@1.0.0, depends_on: a, retry: {max_attempts: 1}}\n";

/// Tables whose new rows are copied first, in foreign-key order.
const COPIED: &[&str] = &[
    "namespaces",
    "templates",
    "template_steps",
    "tasks",
    "steps",
    "edges",
];

/// Columns of a SQLite table, but the event log's transaction counter `tx` of the
/// transition tables: PostgreSQL's is an xid (`xid`), and the replay writes in transactions
/// of its own, so the two never compare.
async fn columns(lite: &SqliteStore, table: &str) -> Vec<String> {
    sqlx::query_scalar("SELECT name FROM pragma_table_info(?) WHERE name <> 'tx' ORDER BY cid")
        .bind(table)
        .fetch_all(lite.reader())
        .await
        .unwrap()
}

/// PostgreSQL's rows of `table` (SQLite's columns), in SQLite's representation, as JSON
/// objects: instants in µs, JSON as text, booleans 0/1, arrays as JSON text.
async fn pg_rows(pg: &PgPool, lite: &SqliteStore, table: &str, order: &str) -> Vec<Value> {
    let cols = columns(lite, table).await;
    let types: Vec<(String, String)> = sqlx::query_as(
        "SELECT column_name::text, data_type::text FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name = $1",
    )
    .bind(table)
    .fetch_all(pg)
    .await
    .unwrap();
    let exprs: Vec<String> = cols
        .iter()
        .map(|c| {
            let ty = &types
                .iter()
                .find(|(n, _)| n == c)
                .unwrap_or_else(|| panic!("PostgreSQL has no {table}.{c}"))
                .1;
            match ty.as_str() {
                "timestamp with time zone" => {
                    format!("(extract(epoch FROM {c}) * 1000000)::bigint AS {c}")
                }
                "jsonb" => format!("{c}::text AS {c}"),
                "boolean" => format!("{c}::int AS {c}"),
                "ARRAY" => format!("to_jsonb({c})::text AS {c}"),
                _ => c.clone(),
            }
        })
        .collect();
    let rows: Value = sqlx::query_scalar::<_, sqlx::types::Json<Value>>(&format!(
        "SELECT coalesce(json_agg(x ORDER BY {order}), '[]') FROM (SELECT {} FROM {table}) x",
        exprs.join(", ")
    ))
    .fetch_one(pg)
    .await
    .unwrap()
    .0;
    rows.as_array().unwrap().clone()
}

/// SQLite's rows of `table` as JSON objects.
async fn lite_rows(lite: &SqliteStore, table: &str, order: &str) -> Vec<Value> {
    let cols = columns(lite, table).await;
    let pairs: Vec<String> = cols.iter().map(|c| format!("'{c}', {c}")).collect();
    let rows: Vec<String> = sqlx::query_scalar(&format!(
        "SELECT json_object({}) FROM {table} ORDER BY {order}",
        pairs.join(", ")
    ))
    .fetch_all(lite.reader())
    .await
    .unwrap();
    rows.iter()
        .map(|r| serde_json::from_str(r).unwrap())
        .collect()
}

/// A row for comparison: JSON-text columns parsed, top-level numbers as f64 (an INTEGER
/// and a float8 column print differently), so that only meaning is compared.
fn normalized(row: &Value, json_cols: &[&str]) -> Map<String, Value> {
    row.as_object()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                Value::String(s) if json_cols.contains(&k.as_str()) => {
                    serde_json::from_str(s).unwrap()
                }
                Value::Number(n) => json!(n.as_f64().unwrap()),
                other => other.clone(),
            };
            (k.clone(), v)
        })
        .collect()
}

async fn assert_same_table(
    pg: &PgPool,
    lite: &SqliteStore,
    table: &str,
    order: &str,
    json_cols: &[&str],
) {
    let p: Vec<_> = pg_rows(pg, lite, table, order)
        .await
        .iter()
        .map(|r| normalized(r, json_cols))
        .collect();
    let l: Vec<_> = lite_rows(lite, table, order)
        .await
        .iter()
        .map(|r| normalized(r, json_cols))
        .collect();
    assert_eq!(
        p.len(),
        l.len(),
        "{table}: row counts\npg: {p:#?}\nsqlite: {l:#?}"
    );
    for (p, l) in p.iter().zip(&l) {
        assert_eq!(p, l, "{table} differs");
    }
}

/// Write one row (a JSON object of SQLite values) into `table`.
async fn insert(tx: &mut sqlx::SqliteConnection, table: &str, row: &Value, or_ignore: bool) {
    let cols: Vec<&String> = row.as_object().unwrap().keys().collect();
    let names: Vec<&str> = cols.iter().map(|c| c.as_str()).collect();
    let values: Vec<String> = cols
        .iter()
        .map(|c| format!("json_extract(?1, '$.\"{c}\"')"))
        .collect();
    sqlx::query(&format!(
        "INSERT {} INTO {table} ({}) VALUES ({})",
        if or_ignore { "OR IGNORE" } else { "" },
        names.join(", "),
        values.join(", ")
    ))
    .bind(row.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
}

/// Set every column of the row with this `id` (no state change: done before, on its own).
async fn update(tx: &mut sqlx::SqliteConnection, table: &str, row: &Value) {
    let sets: Vec<String> = row
        .as_object()
        .unwrap()
        .keys()
        .filter(|c| *c != "id")
        .map(|c| format!("{c} = json_extract(?1, '$.\"{c}\"')"))
        .collect();
    sqlx::query(&format!(
        "UPDATE {table} SET {} WHERE id = json_extract(?1, '$.id')",
        sets.join(", ")
    ))
    .bind(row.to_string())
    .execute(&mut *tx)
    .await
    .unwrap();
}

async fn set_reason(tx: &mut sqlx::SqliteConnection, metadata: &str) {
    let m: Value = serde_json::from_str(metadata).unwrap();
    sqlx::query("UPDATE tasker_ctx SET reason = ? WHERE id = 1")
        .bind(m["reason"].as_str())
        .execute(&mut *tx)
        .await
        .unwrap();
}

/// PostgreSQL and a SQLite store kept in step with it by replaying its changes.
struct Pair {
    pg: PgStore,
    lite: SqliteStore,
}

impl Pair {
    async fn new(pool: PgPool) -> Pair {
        Pair {
            pg: PgStore::new(pool),
            lite: SqliteStore::temporary().await.unwrap(),
        }
    }

    /// Replay into SQLite what PostgreSQL's last operation changed, in one transaction.
    async fn sync(&self) {
        let pg = self.pg.pool();
        let lite = &self.lite;
        let mut tx = lite.writer().begin().await.unwrap();
        // New rows (a new task is still pending: creating one changes nothing else).
        for table in COPIED {
            let order = match *table {
                "template_steps" => "template_id, position",
                "edges" => "parent_id, child_id",
                _ => "id",
            };
            for row in pg_rows(pg, lite, table, order).await {
                insert(&mut tx, table, &row, true).await;
            }
        }
        // Steps, each with the reason of its newest transition (the audit trigger writes
        // the transition rows).
        for row in pg_rows(pg, lite, "steps", "id").await {
            let newest: Option<String> = sqlx::query_scalar(
                "SELECT metadata::text FROM step_transitions WHERE step_id = $1 \
                 ORDER BY sort_key DESC LIMIT 1",
            )
            .bind(row["id"].as_i64())
            .fetch_optional(pg)
            .await
            .unwrap();
            set_reason(&mut tx, newest.as_deref().unwrap_or("{}")).await;
            update(&mut tx, "steps", &row).await;
        }
        // Then their attempts, by (task, step, attempt); decisions are set afterwards.
        for row in pg_rows(pg, lite, "attempts", "task_id, step_id, attempt_no").await {
            insert(&mut tx, "attempts", &row, true).await;
            sqlx::query(
                "UPDATE attempts SET decided_by = json_extract(?1, '$.decided_by'), \
                     decision_detail = json_extract(?1, '$.decision_detail'), \
                     policy_warning = json_extract(?1, '$.policy_warning') \
                 WHERE step_id = json_extract(?1, '$.step_id') \
                   AND attempt_no = json_extract(?1, '$.attempt_no')",
            )
            .bind(row.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        }
        // Task state changes one transition at a time, by (task, sort_key), then the rest.
        let known: Value = serde_json::from_str(
            &sqlx::query_scalar::<_, String>(
                "SELECT json_group_object(task_id, n) FROM \
                 (SELECT task_id, max(sort_key) AS n FROM task_transitions GROUP BY task_id)",
            )
            .fetch_one(&mut *tx)
            .await
            .unwrap(),
        )
        .unwrap();
        let fresh: Vec<(i64, String, String, i64)> = sqlx::query_as(
            "SELECT t.task_id, t.to_state, t.metadata::text, \
                    (extract(epoch FROM t.created_at) * 1000000)::bigint \
             FROM task_transitions t \
             WHERE t.sort_key > coalesce(($1::jsonb ->> t.task_id::text)::int, 0) \
             ORDER BY t.task_id, t.sort_key",
        )
        .bind(known.to_string())
        .fetch_all(pg)
        .await
        .unwrap();
        for (task, to, metadata, at) in fresh {
            set_reason(&mut tx, &metadata).await;
            sqlx::query("UPDATE tasks SET state = ?, updated_at = ? WHERE id = ?")
                .bind(to)
                .bind(at)
                .bind(task)
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        for row in pg_rows(pg, lite, "tasks", "id").await {
            update(&mut tx, "tasks", &row).await;
        }
        tx.commit().await.unwrap();
        // The replay is faithful: the same audit rows on both.
        assert_same_table(
            pg,
            lite,
            "step_transitions",
            "step_id, sort_key",
            &["metadata"],
        )
        .await;
        assert_same_table(
            pg,
            lite,
            "task_transitions",
            "task_id, sort_key",
            &["metadata"],
        )
        .await;
    }

    async fn assert_same_outbox(&self) {
        let (pg, lite) = (self.pg.pool(), &self.lite);
        assert_same_table(
            pg,
            lite,
            "template_hooks",
            "id",
            &["patterns", "limits", "grants"],
        )
        .await;
        assert_same_table(pg, lite, "hook_outbox", "id", &["payload"]).await;
        for task in 1..=3 {
            assert_eq!(
                self.pg
                    .hook_outbox_of_task(TaskId::new(task))
                    .await
                    .unwrap(),
                self.lite
                    .hook_outbox_of_task(TaskId::new(task))
                    .await
                    .unwrap()
            );
            assert_eq!(
                self.pg.hook_counts(Some(TaskId::new(task))).await.unwrap(),
                self.lite
                    .hook_counts(Some(TaskId::new(task)))
                    .await
                    .unwrap()
            );
        }
        assert_eq!(
            self.pg.hook_counts(None).await.unwrap(),
            self.lite.hook_counts(None).await.unwrap()
        );
    }

    async fn claim_hooks(
        &self,
        worker: &str,
        limit: u32,
        lease: Duration,
        ms: i64,
    ) -> Vec<HookDeliveryJob> {
        let p = self
            .pg
            .claim_hook_deliveries(worker, limit, lease, at(ms))
            .await
            .unwrap();
        let l = self
            .lite
            .claim_hook_deliveries(worker, limit, lease, at(ms))
            .await
            .unwrap();
        assert_eq!(p, l, "claim_hook_deliveries at {ms}");
        p
    }

    async fn finish_hooks(
        &self,
        results: &[HookDeliveryResult],
        ms: i64,
    ) -> Vec<HookFinishOutcome> {
        let p = self
            .pg
            .finish_hook_deliveries(results, at(ms))
            .await
            .unwrap();
        let l = self
            .lite
            .finish_hook_deliveries(results, at(ms))
            .await
            .unwrap();
        assert_eq!(p, l, "finish_hook_deliveries at {ms}");
        p
    }

    /// `n` delivery rounds of 3 s from `now` (ms): claims of up to 5 with a 2.5 s lease, every
    /// third round's claims abandoned (their leases expire), the others finished as
    /// [`result`] says. Returns the last round's instant.
    async fn rounds(&self, mut now: i64, n: u32) -> i64 {
        let lease = Duration::from_millis(2500);
        for round in 0..n {
            now += 3000;
            let jobs = self.claim_hooks("d2", 5, lease, now).await;
            if round % 3 == 2 {
                continue; // d2 "dies": these leases expire.
            }
            let results: Vec<HookDeliveryResult> = jobs.iter().map(|j| result(j, round)).collect();
            self.finish_hooks(&results, now + 1).await;
            assert_hook_heads(&self.lite).await;
        }
        now
    }

    async fn list(
        &self,
        filter: &OutboxFilter,
        after: Option<i64>,
        limit: u32,
    ) -> Result<Page<OutboxRow, i64>> {
        let p = self.pg.list_hook_outbox(filter, after, limit).await;
        let l = self.lite.list_hook_outbox(filter, after, limit).await;
        assert_eq!(p, l, "list_hook_outbox({filter:?}, {after:?}, {limit})");
        p
    }

    async fn redeliver(
        &self,
        hook: Option<i64>,
        ids: Option<&[i64]>,
        ms: i64,
    ) -> Result<Vec<Redelivered>> {
        let p = self.pg.redeliver_dead_letters(hook, ids, at(ms)).await;
        let l = self.lite.redeliver_dead_letters(hook, ids, at(ms)).await;
        assert_eq!(p, l, "redeliver_dead_letters({hook:?}, {ids:?}) at {ms}");
        p
    }
}

fn claimed<'a>(c: &'a [ClaimedStep], task: TaskId, name: &str) -> &'a ClaimedStep {
    c.iter()
        .find(|c| c.task_id == task && c.step_name == name)
        .unwrap_or_else(|| panic!("{name} of task {task} not claimed: {c:?}"))
}

/// Drive PostgreSQL through every kind of event (two hooked tasks and one without hooks),
/// replaying into SQLite after each operation. Returns the hooked tasks.
async fn scenario(p: &Pair) -> (TaskId, TaskId) {
    let s = &p.pg;
    let hooked = template(HOOKED);
    let plain: Template = one_step("plain", "{}");
    s.register_template(&hooked).await.unwrap();
    s.register_template(&plain).await.unwrap();
    p.sync().await;

    let mut new = NewTask::new(hooked.key(), json!({"n": 1}));
    new.metadata = json!({"initiator": "ci", "ratio": 1.5, "tags": ["x", "é"], "none": null});
    let t1 = s.create_task(&new, at(0)).await.unwrap().task_id;
    p.sync().await;
    let t2 = s
        .create_task(&NewTask::new(hooked.key(), json!({})), at(1))
        .await
        .unwrap()
        .task_id;
    let t3 = s
        .create_task(&NewTask::new(plain.key(), json!({})), at(1))
        .await
        .unwrap()
        .task_id;
    p.sync().await;

    // Both hooked tasks start in one claim; t1.a fails (retry, jittered backoff), t2.a fails
    // for good in the same batch, which fails t2.
    let c = s.claim("w1", 10, LEASE, at(100)).await.unwrap();
    p.sync().await;
    let out = s
        .fail(
            &[
                failure(claimed(&c, t1, "a"), true, None),
                failure(claimed(&c, t2, "a"), false, None),
            ],
            at(110),
        )
        .await
        .unwrap();
    assert!(out.iter().all(|o| o.accepted()), "{out:?}");
    s.complete(&[completion(claimed(&c, t3, "only"))], at(111))
        .await
        .unwrap();
    p.sync().await;

    // t1.a loses its lease, is claimed again and fails again (a retry-after this time).
    let ready = out[0].next_ready_at.unwrap();
    let c = s.claim("w2", 10, LEASE, ready).await.unwrap();
    assert_eq!(c.len(), 1);
    p.sync().await;
    let later =
        ready + chrono::Duration::from_std(LEASE).unwrap() + chrono::Duration::milliseconds(1);
    s.expire_leases(later, 100).await.unwrap();
    p.sync().await;
    let c = s.claim("w3", 10, LEASE, later).await.unwrap();
    p.sync().await;
    let mut f = failure(&c[0], true, Some(1234));
    f.retryable = true;
    s.fail_decided(
        &[f],
        &[FailureDecision {
            decided_by: "policy:smart@1.0.0".into(),
            detail: Some("retry after 1234 ms".into()),
            warning: None,
        }],
        &[],
        later + chrono::Duration::milliseconds(5),
    )
    .await
    .unwrap();
    p.sync().await;

    // Third attempt of t1.a succeeds; t1.b exhausts its single attempt: t1 fails.
    let when = later + chrono::Duration::milliseconds(5000);
    let c = s.claim("w1", 10, LEASE, when).await.unwrap();
    p.sync().await;
    s.complete(&[completion(&c[0])], when).await.unwrap();
    p.sync().await;
    let c = s.claim("w1", 10, LEASE, when).await.unwrap();
    p.sync().await;
    s.fail(&[failure(&c[0], true, None)], when).await.unwrap();
    p.sync().await;

    // Operators: t2 retried, its a resolved by hand, b completed (t2 completes); t1 retried
    // and cancelled.
    let op = when + chrono::Duration::milliseconds(100);
    s.retry_task(t2, op).await.unwrap();
    p.sync().await;
    let a2 = ids(s, t2).await["a"];
    s.resolve_step(a2, Some(json!({"by": "hand"})), op)
        .await
        .unwrap();
    p.sync().await;
    let c = s.claim("w1", 10, LEASE, op).await.unwrap();
    p.sync().await;
    assert_eq!(c.len(), 1);
    s.complete(&[completion(&c[0])], op).await.unwrap();
    p.sync().await;
    s.retry_task(t1, op).await.unwrap();
    p.sync().await;
    s.cancel_task(t1, op + chrono::Duration::microseconds(1))
        .await
        .unwrap();
    p.sync().await;
    assert!(p.lite.hook_outbox_of_task(t3).await.unwrap().is_empty());
    (t1, t2)
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_triggers_write_postgres_outbox(pool: PgPool) {
    let p = Pair::new(pool).await;
    let (t1, t2) = scenario(&p).await;
    p.assert_same_outbox().await;
    assert_hook_heads(&p.pg).await;
    assert_hook_heads(&p.lite).await;

    // The events themselves, to be sure the comparison is not between two empty tables.
    let rows = p.lite.hook_outbox_of_task(t1).await.unwrap();
    let audit: Vec<&str> = rows
        .iter()
        .filter(|r| r.hook_id == 1)
        .map(|r| r.event_name.as_str())
        .collect();
    assert_eq!(
        audit,
        [
            "task.created",
            "task.started",
            "step.failed",
            "step.retry_scheduled",
            "step.lease_lost",
            "step.failed",
            "step.retry_scheduled",
            "step.completed",
            "step.failed",
            "step.exhausted",
            "task.failed",
            "task.retry_requested",
            "task.cancelled",
        ]
    );
    assert_eq!(
        rows[0].payload,
        json!({"metadata": {"initiator": "ci", "ratio": 1.5, "tags": ["x", "é"], "none": null}})
    );
    let t2_rows = p.lite.hook_outbox_of_task(t2).await.unwrap();
    assert!(
        t2_rows
            .iter()
            .any(|r| r.event_name == "step.resolved_manually" && r.hook_id == 2)
    );
    let ends: Vec<&str> = t2_rows
        .iter()
        .filter(|r| r.hook_id == 3)
        .map(|r| r.event_name.as_str())
        .collect();
    assert_eq!(ends, ["task.failed", "task.completed"]);
}

/// How a delivery ends in the delivery test: the audit hook always takes it; the steps hook
/// fails twice before it does; the ends hook (one attempt) fails every other event for good.
fn result(j: &HookDeliveryJob, round: u32) -> HookDeliveryResult {
    let fails = match j.hook_id {
        2 => j.delivery_no < 3,
        3 => j.delivery_id % 2 == 0,
        _ => false,
    };
    HookDeliveryResult {
        delivery_id: j.delivery_id,
        token: j.token,
        error: fails.then(|| format!("{} refused in round {round}", j.event_name)),
    }
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_deliveries_match_postgres(pool: PgPool) {
    let p = Pair::new(pool).await;
    scenario(&p).await;
    let lease = Duration::from_millis(2500);
    let base = 1_000_000;

    // A few at a time, oldest due first; nothing more while the heads are leased.
    let first = p.claim_hooks("d1", 4, lease, base).await;
    assert_eq!(first.len(), 4);
    let all = p.claim_hooks("d1", 1000, lease, base).await;
    assert!(!all.is_empty());
    assert!(p.claim_hooks("d2", 1000, lease, base + 1).await.is_empty());
    assert_hook_heads(&p.lite).await;

    // Results: delivered, failed (a long error, cut to 4000 characters), a repeated id whose
    // first item decides, a stale token, an unknown id.
    let long = "é".repeat(5000);
    let mut results = vec![
        HookDeliveryResult {
            delivery_id: first[0].delivery_id,
            token: first[0].token,
            error: None,
        },
        HookDeliveryResult {
            delivery_id: first[1].delivery_id,
            token: first[1].token,
            error: Some(long),
        },
        HookDeliveryResult {
            delivery_id: first[2].delivery_id,
            token: first[2].token + 1,
            error: None,
        },
        HookDeliveryResult {
            delivery_id: first[2].delivery_id,
            token: first[2].token,
            error: None,
        },
        HookDeliveryResult {
            delivery_id: first[0].delivery_id,
            token: first[0].token,
            error: Some("again".into()),
        },
        HookDeliveryResult {
            delivery_id: 999_999,
            token: 1,
            error: None,
        },
    ];
    results.extend(all.iter().map(|j| result(j, 0)));
    let out = p.finish_hooks(&results, base + 10).await;
    assert!(out[0].accepted && !out[2].accepted && !out[5].accepted);
    assert_eq!(out[4], out[0]);
    assert_hook_heads(&p.lite).await;
    p.assert_same_outbox().await;

    // Leases expire; retries come due with their (jittered) backoff; failing hooks run out of
    // attempts and are dead-lettered, the queues move on behind them.
    let now = p.rounds(base + 10, 40).await;
    p.assert_same_outbox().await;
    let counts = p.lite.hook_counts(None).await.unwrap();
    assert_eq!(counts.len(), 3);
    assert!(counts.iter().any(|c| c.dead > 0), "{counts:?}");
    assert!(counts.iter().all(|c| c.delivered > 0), "{counts:?}");

    // Sub-microsecond leases are refused as PostgreSQL's interval conversion refuses them.
    let odd = Duration::from_nanos(1_500);
    let p_err = p.pg.claim_hook_deliveries("d3", 1, odd, at(now)).await;
    let l_err = p.lite.claim_hook_deliveries("d3", 1, odd, at(now)).await;
    assert!(
        matches!(p_err, Err(StoreError::InvalidInput(_))),
        "{p_err:?}"
    );
    assert_eq!(
        p_err.unwrap_err().to_string(),
        l_err.unwrap_err().to_string()
    );
}

/// The outbox listed in pages and by filter, and dead letters redelivered (refused ids, one
/// id, a hook, all), give the same answers on both and leave the same outbox; so do the
/// deliveries after them.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_lists_and_redelivers_as_postgres(pool: PgPool) {
    let p = Pair::new(pool).await;
    scenario(&p).await;
    let mut now = p.rounds(1_000_000, 40).await;
    p.assert_same_outbox().await;

    let dead = |hook: Option<i64>| OutboxFilter {
        hook_id: hook,
        task_id: None,
        states: vec![DeliveryState::Dead],
    };
    let all = p
        .list(&OutboxFilter::default(), None, MAX_PAGE)
        .await
        .unwrap();
    assert!(all.next.is_none() && all.items.len() > 20);
    let mut after = None;
    loop {
        let page = p.list(&OutboxFilter::default(), after, 7).await.unwrap();
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    for filter in [
        dead(None),
        dead(Some(3)),
        OutboxFilter {
            hook_id: Some(2),
            task_id: Some(TaskId::new(1)),
            states: vec![DeliveryState::Delivered, DeliveryState::Pending],
        },
        OutboxFilter {
            task_id: Some(TaskId::new(2)),
            ..OutboxFilter::default()
        },
    ] {
        p.list(&filter, None, 3).await.unwrap();
        p.list(&filter, Some(5), MAX_PAGE).await.unwrap();
    }
    p.list(&OutboxFilter::default(), None, 0).await.unwrap_err();

    let letters = p.list(&dead(None), None, MAX_PAGE).await.unwrap().items;
    assert!(letters.len() >= 2, "{letters:?}");
    let delivered = all
        .items
        .iter()
        .find(|r| r.state == DeliveryState::Delivered)
        .unwrap()
        .id;
    // Refused: the same error on both, nothing written.
    for (hook, ids) in [
        (None, vec![letters[0].id, delivered]),
        (None, vec![1_000_000]),
        (Some(1), vec![letters[0].id]),
    ] {
        let err = p.redeliver(hook, Some(&ids), now).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    }
    p.assert_same_outbox().await;

    // One id, then a hook's, then all, each followed by deliveries (the ends hook fails
    // every other event for good, so some die again): the same new ids, heads and outcomes
    // on both.
    now += 10;
    let one = p
        .redeliver(None, Some(&[letters[0].id]), now)
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    p.assert_same_outbox().await;
    now = p.rounds(now, 5).await;
    let hooks = p
        .redeliver(Some(letters[1].hook_id), None, now)
        .await
        .unwrap();
    assert!(!hooks.is_empty());
    p.assert_same_outbox().await;
    now = p.rounds(now, 5).await;
    p.redeliver(None, None, now).await.unwrap();
    assert_hook_heads(&p.pg).await;
    assert_hook_heads(&p.lite).await;
    p.assert_same_outbox().await;
    p.rounds(now, 20).await;
    p.assert_same_outbox().await;
}

fn event(c: &ClaimedStep, token_offset: i64, name: &str, payload: Value) -> CustomEventRecord {
    CustomEventRecord {
        step_id: c.step_id,
        token: c.token + token_offset,
        name: name.into(),
        payload,
    }
}

/// The same calls on any store; every answer is logged for comparison.
async fn drive<S: Store>(s: &S) -> Vec<String> {
    let mut log = Vec::new();
    let hooked = template(HOOKED);
    let plain = one_step("plain", "{}");
    log.push(format!("{:?}", s.register_template(&hooked).await.unwrap()));
    log.push(format!("{:?}", s.register_template(&plain).await.unwrap()));
    let mut new = NewTask::new(hooked.key(), json!({"n": 1}));
    new.metadata = json!({"initiator": "ci", "ratio": 1.5});
    let t1 = s.create_task(&new, at(0)).await.unwrap().task_id;
    let keyed = NewTask::new(hooked.key(), json!({})).with_identity_key("k");
    let t2 = s.create_task(&keyed, at(1)).await.unwrap().task_id;
    let t4 = s
        .create_task(&NewTask::new(hooked.key(), json!({})), at(3))
        .await
        .unwrap()
        .task_id;
    let t3 = s
        .create_task(&NewTask::new(plain.key(), json!({})), at(3))
        .await
        .unwrap()
        .task_id;

    // The same identity key: the first task, and no second task.created. (Last: on
    // PostgreSQL the refused insert uses up a task id.)
    log.push(format!("{:?}", s.create_task(&keyed, at(4)).await.unwrap()));

    let c = s.claim("w1", 10, LEASE, at(100)).await.unwrap();
    log.push(format!("{c:?}"));
    let (a1, a2, a4, only) = (
        claimed(&c, t1, "a"),
        claimed(&c, t2, "a"),
        claimed(&c, t4, "a"),
        claimed(&c, t3, "only"),
    );
    // t2.a fails for good (t2 fails), with its events (a null payload is written as {});
    // an event of t1.a, whose attempt did not end here, is dropped.
    let out = s
        .fail_decided(
            &[failure(a2, false, None)],
            &[FailureDecision {
                decided_by: "builtin".into(),
                detail: None,
                warning: Some("policy trapped".into()),
            }],
            &[
                event(a2, 0, "oops", Value::Null),
                event(a1, 0, "early", json!({})),
                event(a2, 0, "after", json!({"n": [1, 2.5, "x"]})),
            ],
            at(150),
        )
        .await
        .unwrap();
    log.push(format!("{out:?}"));
    // t1.a, t4.a and t3.only complete in one batch; events by task, in input order within
    // each, the stale token's and the hookless task's dropped.
    let out = s
        .complete_with_events(
            &[completion(only), completion(a4), completion(a1)],
            &[
                event(a4, 0, "fourth", json!({})),
                event(only, 0, "plain", json!({})),
                event(a1, 0, "charged", json!({"amount": 12.5})),
                event(a1, 3, "ghost", json!({})),
                event(
                    a1,
                    0,
                    "second",
                    json!({"big": 18_446_744_073_709_551_615_u64}),
                ),
            ],
            at(200),
        )
        .await
        .unwrap();
    log.push(format!("{out:?}"));
    // A repeated completion at the same instant is refused; PostgreSQL still keeps its
    // events (the attempt it names ended at that instant), and so must SQLite.
    let out = s
        .complete_with_events(
            &[completion(a1)],
            &[event(a1, 0, "repeated", json!({}))],
            at(200),
        )
        .await
        .unwrap();
    log.push(format!("{out:?}"));

    // t1.b: claimed, lease lost, claimed again, fails (exhausted) with events: t1 fails.
    let c = s.claim("w1", 10, LEASE, at(300)).await.unwrap();
    log.push(format!("{c:?}"));
    let expired = s.expire_leases(at(300) + LEASE * 2, 10).await.unwrap();
    log.push(format!("{expired:?}"));
    let c = s.claim("w2", 10, LEASE, at(300) + LEASE * 2).await.unwrap();
    log.push(format!("{c:?}"));
    let out = s
        .fail_decided(
            &[failure(&c[0], true, None)],
            &[FailureDecision {
                decided_by: "policy:smart@1.0.0".into(),
                detail: Some("give up".into()),
                warning: None,
            }],
            // t1.a's attempt was accepted, but not here: its event is dropped.
            &[
                event(&c[0], 0, "last_words", json!({"why": "é"})),
                event(a1, 0, "too_late", json!({})),
            ],
            at(400) + LEASE * 2,
        )
        .await
        .unwrap();
    log.push(format!("{out:?}"));

    // Operators.
    let later = at(500) + LEASE * 2;
    log.push(format!("{:?}", s.retry_task(t1, later).await.unwrap()));
    let b1 = ids(s, t1).await["b"];
    log.push(format!(
        "{:?}",
        s.resolve_step(b1, None, later).await.unwrap()
    ));
    log.push(format!("{:?}", s.retry_task(t2, later).await.unwrap()));
    log.push(format!("{:?}", s.cancel_task(t2, later).await.unwrap()));
    for task in [t1, t2, t3, t4] {
        log.push(format!("{:?}", s.hook_outbox_of_task(task).await.unwrap()));
        log.push(format!("{:?}", s.task_transitions(task).await.unwrap()));
    }
    log.push(format!("{:?}", s.hook_counts(None).await.unwrap()));
    log
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_writes_the_same_outbox_as_postgres(pool: PgPool) {
    let pg = PgStore::new(pool.clone());
    let lite = SqliteStore::temporary().await.unwrap();
    let p = drive(&pg).await;
    let l = drive(&lite).await;
    for (i, (p, l)) in p.iter().zip(&l).enumerate() {
        assert_eq!(p, l, "answer {i} differs");
    }
    assert_eq!(p.len(), l.len());
    assert_same_table(
        &pool,
        &lite,
        "template_hooks",
        "id",
        &["patterns", "limits", "grants"],
    )
    .await;
    assert_same_table(&pool, &lite, "hook_outbox", "id", &["payload"]).await;
    assert_hook_heads(&lite).await;

    let names: Vec<String> = lite
        .hook_outbox_of_task(TaskId::new(1))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.hook_id == 1 && r.event_name.starts_with("custom."))
        .map(|r| r.event_name)
        .collect();
    assert_eq!(
        names,
        [
            "custom.charged",
            "custom.second",
            "custom.repeated",
            "custom.last_words"
        ]
    );
    let t2: Vec<(String, Value)> = lite
        .hook_outbox_of_task(TaskId::new(2))
        .await
        .unwrap()
        .into_iter()
        .filter(|r| r.hook_id == 1 && r.event_name.starts_with("custom."))
        .map(|r| (r.event_name, r.payload))
        .collect();
    assert_eq!(
        t2,
        [
            ("custom.oops".to_string(), json!({})),
            ("custom.after".to_string(), json!({"n": [1, 2.5, "x"]})),
        ]
    );
}

/// The trigger's pattern matching is PostgreSQL's tasker_event_matches, and agrees with
/// tasker_core::events::matches on every name without a `*` in it (PostgreSQL and SQLite
/// also let a pattern equal such a name literally).
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sqlite_patterns_match_as_in_postgres(pool: PgPool) {
    let patterns = [
        "*",
        "step.*",
        "task.*",
        "custom.*",
        "step.failed",
        "step*",
        "*.*",
        ".*",
        "step.",
        "é.*",
        "a.b.*",
        "",
        "**",
        "x.*.*",
    ];
    let names = [
        "step.failed",
        "step.",
        "step",
        "stepx.failed",
        "task.created",
        "custom.é",
        "é.x",
        "éx",
        "a.b.c",
        "a.b",
        "*",
        "step*",
        ".x",
        "",
        "*.y",
        "x.*.z",
        "STEP.failed",
    ];
    let lite = SqliteStore::temporary().await.unwrap();
    let hooks: Vec<Value> = patterns
        .iter()
        .map(|p| json!({"component": "c@1.0.0", "events": [p]}))
        .collect();
    let w = lite.writer();
    sqlx::query("INSERT INTO namespaces (id, name, created_at) VALUES (1, 'm', 0)")
        .execute(w)
        .await
        .unwrap();
    sqlx::query(
        "INSERT INTO templates (id, namespace_id, name, version, template_key, definition, \
                                step_count, created_at) \
         VALUES (1, 1, 'm', '1', 'm/m@1', ?, 1, 0)",
    )
    .bind(json!({ "hooks": hooks }).to_string())
    .execute(w)
    .await
    .unwrap();
    sqlx::query(
        "INSERT INTO tasks (id, namespace_id, template_id, step_count, unfinished_steps, \
                            created_at, updated_at) VALUES (1, 1, 1, 1, 1, 0, 0)",
    )
    .execute(w)
    .await
    .unwrap();
    for name in names {
        sqlx::query("DELETE FROM hook_outbox")
            .execute(w)
            .await
            .unwrap();
        sqlx::query("INSERT INTO hook_events (task_id, name, at) VALUES (1, ?, 0)")
            .bind(name)
            .execute(w)
            .await
            .unwrap();
        let hit: Vec<i64> = sqlx::query_scalar(
            "SELECT h.position FROM hook_outbox o JOIN template_hooks h ON h.id = o.hook_id \
             ORDER BY o.id",
        )
        .fetch_all(w)
        .await
        .unwrap();
        for (i, p) in patterns.iter().enumerate() {
            let sqlite = hit.contains(&(i as i64));
            let pg: bool = sqlx::query_scalar("SELECT tasker_event_matches(ARRAY[$1], $2)")
                .bind(p)
                .bind(name)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(sqlite, pg, "pattern {p:?}, event {name:?}");
            if !name.contains('*') {
                let rust = tasker_core::events::matches(p, name);
                assert_eq!(sqlite, rust, "pattern {p:?}, event {name:?}");
            }
        }
    }
}
