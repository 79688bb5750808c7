//! The SQL copies of tasker-core's tables and formulas agree with the Rust originals, and
//! the database refuses what the state machines refuse.
//!
//! PostgreSQL only: these are the PL/pgSQL copies (the embedded store computes backoff with
//! tasker-core itself; its state tables and triggers are checked in sqlite_schema.rs).

use sqlx::PgPool;
use tasker_core::backoff::{Backoff, jitter_unit};
use tasker_core::state::{StepState, TaskState};
use tasker_store::{PgStore, StoreError};
use tasker_tests::store::*;

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn step_transition_table_matches_rust(pool: PgPool) {
    let mut checked = 0;
    for from in StepState::ALL {
        for to in StepState::ALL {
            let sql: bool = sqlx::query_scalar("SELECT tasker_step_transition_allowed($1, $2)")
                .bind(from.as_str())
                .bind(to.as_str())
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(sql, from.can_transition_to(to), "step {from} -> {to}");
            checked += 1;
        }
    }
    assert_eq!(checked, 49);
    // No pair in SQL names a state Rust does not know.
    let pairs: Vec<(String, String)> =
        sqlx::query_as("SELECT from_state, to_state FROM step_state_transitions")
            .fetch_all(&pool)
            .await
            .unwrap();
    for (f, t) in pairs {
        assert!(
            f.parse::<StepState>().is_ok() && t.parse::<StepState>().is_ok(),
            "{f}->{t}"
        );
    }
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn task_transition_table_matches_rust(pool: PgPool) {
    for from in TaskState::ALL {
        for to in TaskState::ALL {
            let sql: bool = sqlx::query_scalar("SELECT tasker_task_transition_allowed($1, $2)")
                .bind(from.as_str())
                .bind(to.as_str())
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(sql, from.can_transition_to(to), "task {from} -> {to}");
        }
    }
    let n: i64 = sqlx::query_scalar("SELECT count(*) FROM task_state_transitions")
        .fetch_one(&pool)
        .await
        .unwrap();
    let rust = TaskState::ALL
        .iter()
        .flat_map(|f| TaskState::ALL.iter().map(move |t| f.can_transition_to(*t)))
        .filter(|x| *x)
        .count();
    assert_eq!(n as usize, rust);
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn backoff_formula_matches_rust_on_a_grid(pool: PgPool) {
    let params = [
        Backoff::default(),
        Backoff {
            base_ms: 1_000,
            multiplier: 2.0,
            cap_ms: 10_000,
            jitter: 0.0,
        },
        Backoff {
            base_ms: 250,
            multiplier: 1.5,
            cap_ms: 3_600_000,
            jitter: 0.25,
        },
        Backoff {
            base_ms: 1,
            multiplier: 1.0,
            cap_ms: 1,
            jitter: 1.0,
        },
        Backoff {
            base_ms: 0,
            multiplier: 3.0,
            cap_ms: 5_000,
            jitter: 0.5,
        },
        Backoff {
            base_ms: 777,
            multiplier: 10.0,
            cap_ms: 9_000_000_000_000,
            jitter: 0.1,
        },
    ];
    let seeds = [0i64, 1, 2, 42, 1_000_003, -7, i64::MAX, i64::MIN];
    let failures = [0u32, 1, 2, 3, 5, 8, 13, 40, 1_000, 100_000, u32::MAX];
    let mut checked = 0;
    for b in &params {
        for &seed in &seeds {
            for &n in &failures {
                let sql: i64 =
                    sqlx::query_scalar("SELECT tasker_backoff_ms($1, $2, $3, $4, $5, $6)")
                        .bind(b.base_ms as i64)
                        .bind(b.multiplier)
                        .bind(b.cap_ms as i64)
                        .bind(b.jitter)
                        .bind(seed)
                        .bind(i64::from(n))
                        .fetch_one(&pool)
                        .await
                        .unwrap();
                assert_eq!(
                    sql as u64,
                    b.delay_ms(seed, n),
                    "{b:?} seed {seed} failure {n}"
                );
                checked += 1;
            }
            let u: f64 = sqlx::query_scalar("SELECT tasker_jitter_unit($1, $2)")
                .bind(seed)
                .bind(7i64)
                .fetch_one(&pool)
                .await
                .unwrap();
            assert_eq!(u, jitter_unit(seed, 7), "jitter seed {seed}");
        }
    }
    assert_eq!(checked, params.len() * seeds.len() * failures.len());
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn illegal_transitions_are_refused_by_sql(pool: PgPool) {
    let s = PgStore::new(pool.clone());
    let task = start(&s, &tasker_core::fixtures::diamond("noop@1.0.0"), at(0)).await;
    let ids = ids(&s, task).await;

    // pending -> complete skips the claim.
    let err = sqlx::query("UPDATE steps SET state = 'complete', ready_at = NULL WHERE id = $1")
        .bind(ids["a"])
        .execute(&pool)
        .await
        .unwrap_err();
    let err = StoreError::from(err);
    assert!(matches!(err, StoreError::Constraint { .. }), "{err}");
    assert!(
        err.to_string()
            .contains("illegal step transition pending -> complete"),
        "{err}"
    );
    assert!(!err.is_retryable());

    // Tasks too: in_progress -> pending is not a transition.
    sqlx::query("UPDATE tasks SET state = 'in_progress' WHERE id = $1")
        .bind(task)
        .execute(&pool)
        .await
        .unwrap();
    let before = snapshot(&s).await;
    let err = sqlx::query("UPDATE tasks SET state = 'pending' WHERE id = $1")
        .bind(task)
        .execute(&pool)
        .await
        .unwrap_err();
    assert!(
        err.to_string()
            .contains("illegal task transition in_progress -> pending"),
        "{err}"
    );

    // Every refused pair, for steps, through the real table.
    for from in StepState::ALL {
        for to in StepState::ALL {
            if from == to || from.can_transition_to(to) {
                continue;
            }
            let mut tx = pool.begin().await.unwrap();
            // Put the step into `from` without the trigger, then try the move.
            sqlx::query("ALTER TABLE steps DISABLE TRIGGER steps_audit")
                .execute(&mut *tx)
                .await
                .unwrap();
            sqlx::query(
                "UPDATE steps SET state = $2, ready_at = NULL, lease_expires_at = \
                 CASE WHEN $2 = 'in_progress' THEN now() END, unfinished_parents = 1 WHERE id = $1",
            )
            .bind(ids["d"])
            .bind(from.as_str())
            .execute(&mut *tx)
            .await
            .unwrap();
            sqlx::query("ALTER TABLE steps ENABLE TRIGGER steps_audit")
                .execute(&mut *tx)
                .await
                .unwrap();
            let r = sqlx::query(
                "UPDATE steps SET state = $2, ready_at = NULL, lease_expires_at = \
                 CASE WHEN $2 = 'in_progress' THEN now() END WHERE id = $1",
            )
            .bind(ids["d"])
            .bind(to.as_str())
            .execute(&mut *tx)
            .await;
            let err = r.expect_err(&format!("{from} -> {to} must be refused"));
            assert!(
                err.to_string()
                    .contains(&format!("illegal step transition {from} -> {to}")),
                "{err}"
            );
            tx.rollback().await.unwrap();
        }
    }
    // Nothing the refused statements tried was kept.
    let after = snapshot(&s).await;
    assert_eq!(before, after);
}

/// Random inputs of the two per-item rules, in one round trip each: PostgreSQL's answers
/// (`tasker_refusal`, `tasker_retry_decision`) must equal `tasker_store::rules`' on every one.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn refusal_and_retry_decision_match_rust_on_random_inputs(pool: PgPool) {
    use rand::{Rng, SeedableRng};
    use tasker_store::rules;
    use tasker_store::{Refusal, RetryDecision};

    const CASES: usize = 5000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x07a5_ce12);
    // Small numbers, so tokens and claim counts often coincide; now and then a large one.
    let small = |rng: &mut rand::rngs::StdRng| -> i64 {
        if rng.random_bool(0.05) {
            rng.random_range(0..=i64::from(i32::MAX))
        } else {
            rng.random_range(0..4)
        }
    };

    let (mut states, mut counts, mut tokens, mut dups) = (vec![], vec![], vec![], vec![]);
    for _ in 0..CASES {
        let state = rng
            .random_bool(0.9)
            .then(|| StepState::ALL[rng.random_range(0..StepState::ALL.len())]);
        states.push(state);
        counts.push(small(&mut rng));
        tokens.push(small(&mut rng));
        dups.push(rng.random_bool(0.1));
    }
    let sql: Vec<String> = sqlx::query_scalar(
        "SELECT tasker_refusal(s, c::int, t, d) \
         FROM unnest($1::text[], $2::bigint[], $3::bigint[], $4::boolean[]) \
              WITH ORDINALITY AS x(s, c, t, d, n) ORDER BY n",
    )
    .bind(
        states
            .iter()
            .map(|s| s.map(StepState::as_str))
            .collect::<Vec<_>>(),
    )
    .bind(&counts)
    .bind(&tokens)
    .bind(&dups)
    .fetch_all(&pool)
    .await
    .unwrap();
    for i in 0..CASES {
        let rust = rules::refusal(states[i].map(|s| (s, counts[i])), tokens[i], dups[i]);
        assert_eq!(
            Refusal::parse(&sql[i]),
            rust,
            "refusal of state {:?}, claim_count {}, token {}, duplicate {}",
            states[i],
            counts[i],
            tokens[i],
            dups[i]
        );
    }

    let (mut fr, mut sr, mut att, mut max) = (vec![], vec![], vec![], vec![]);
    for _ in 0..CASES {
        fr.push(rng.random_bool(0.8));
        sr.push(rng.random_bool(0.8));
        let m = rng.random_range(1..=12_i64);
        max.push(m);
        att.push(rng.random_range(0..=m + 1));
    }
    let sql: Vec<String> = sqlx::query_scalar(
        "SELECT tasker_retry_decision(f, s, a::int, m::int) \
         FROM unnest($1::boolean[], $2::boolean[], $3::bigint[], $4::bigint[]) \
              WITH ORDINALITY AS x(f, s, a, m, n) ORDER BY n",
    )
    .bind(&fr)
    .bind(&sr)
    .bind(&att)
    .bind(&max)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..CASES {
        let rust = rules::retry_decision(fr[i], sr[i], att[i], max[i]);
        seen.insert(format!("{rust:?}"));
        assert_eq!(
            RetryDecision::parse(&sql[i]),
            Ok(rust),
            "decision of failure retryable {}, step retryable {}, attempts {}, max {}",
            fr[i],
            sr[i],
            att[i],
            max[i]
        );
    }
    // The inputs reach every answer.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// Random task states and counts: PostgreSQL's `tasker_finalize_decision` must equal
/// `tasker_store::rules::finalize` on every one.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn finalize_decision_matches_rust_on_random_inputs(pool: PgPool) {
    use rand::{Rng, SeedableRng};
    use tasker_core::state::TaskState;
    use tasker_store::rules;

    const CASES: usize = 5000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0xf1_a11e);
    let (mut states, mut unfinished, mut errors, mut moving) = (vec![], vec![], vec![], vec![]);
    for _ in 0..CASES {
        states.push(TaskState::ALL[rng.random_range(0..TaskState::ALL.len())]);
        unfinished.push(rng.random_range(0..4_i32));
        errors.push(rng.random_range(0..3_i32));
        moving.push(rng.random_bool(0.5));
    }
    let sql: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT tasker_finalize_decision(s, u, e, m) \
         FROM unnest($1::text[], $2::int[], $3::int[], $4::boolean[]) \
              WITH ORDINALITY AS x(s, u, e, m, n) ORDER BY n",
    )
    .bind(states.iter().map(|s| s.as_str()).collect::<Vec<_>>())
    .bind(&unfinished)
    .bind(&errors)
    .bind(&moving)
    .fetch_all(&pool)
    .await
    .unwrap();
    let mut seen = std::collections::BTreeSet::new();
    for i in 0..CASES {
        let rust = rules::finalize(
            states[i],
            i64::from(unfinished[i]),
            i64::from(errors[i]),
            moving[i],
        );
        seen.insert(format!("{rust:?}"));
        assert_eq!(
            sql[i].as_deref(),
            rust.map(TaskState::as_str),
            "finalize of {:?} with {} unfinished, {} in error, steps can move: {}",
            states[i],
            unfinished[i],
            errors[i],
            moving[i]
        );
    }
    // The inputs reach every answer: complete, error, no change.
    assert_eq!(seen.len(), 3, "{seen:?}");
}

/// `tasker_concurrency_key` (PL/pgSQL) and `tasker_core::concurrency::resolve_key` give the
/// same key, or refuse with the same message, on random contexts and pointers: escapes
/// (`~0`, `~1`), array indexes, every JSON type, integers at and past the i64/u64 edges.
#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn concurrency_key_matches_rust_on_random_inputs(pool: PgPool) {
    use rand::{Rng, SeedableRng};
    use serde_json::{Value, json};
    use tasker_core::concurrency::resolve_key;

    const CASES: usize = 3000;
    let mut rng = rand::rngs::StdRng::seed_from_u64(0x00c0_4c01);
    let names = ["a", "b", "customer_id", "a/b", "~x", "", "0", "ü"];
    let leaf = |rng: &mut rand::rngs::StdRng| -> Value {
        match rng.random_range(0..11) {
            0 => Value::Null,
            1 => json!(rng.random_bool(0.5)),
            2 => json!(rng.random_range(-1000i64..1000)),
            3 => json!(i64::MIN),
            4 => json!(u64::MAX),
            5 => json!(u64::MAX as f64 * 4.0),
            6 => json!(rng.random_range(-10.0f64..10.0)),
            7 => json!(["x", 1]),
            8 => json!({}),
            9 => json!(format!("v{}", rng.random_range(0..5))),
            _ => json!(""),
        }
    };
    let (mut specs, mut contexts) = (Vec::new(), Vec::new());
    for _ in 0..CASES {
        // A two-level context, a pointer of one to three segments into it (or a constant).
        let mut ctx = serde_json::Map::new();
        for n in names {
            if rng.random_bool(0.5) {
                let v = if rng.random_bool(0.3) {
                    let mut inner = serde_json::Map::new();
                    for m in names.iter().take(3) {
                        inner.insert((*m).to_owned(), leaf(&mut rng));
                    }
                    Value::Object(inner)
                } else if rng.random_bool(0.1) {
                    json!([leaf(&mut rng), leaf(&mut rng)])
                } else {
                    leaf(&mut rng)
                };
                ctx.insert(n.to_owned(), v);
            }
        }
        let spec = if rng.random_bool(0.05) {
            "stripe".to_owned()
        } else {
            let mut p = String::new();
            for _ in 0..rng.random_range(1..=3) {
                let seg = match rng.random_range(0..4) {
                    0 => "1".to_owned(),
                    _ => names[rng.random_range(0..names.len())]
                        .replace('~', "~0")
                        .replace('/', "~1"),
                };
                p.push('/');
                p.push_str(&seg);
            }
            p
        };
        specs.push(spec);
        contexts.push(Value::Object(ctx));
    }
    let mut agreed = (0, 0);
    for (spec, ctx) in specs.iter().zip(&contexts) {
        let sql: Result<String, String> =
            sqlx::query_scalar("SELECT tasker_concurrency_key($1, $2)")
                .bind(spec)
                .bind(ctx)
                .fetch_one(&pool)
                .await
                .map_err(|e| match e {
                    sqlx::Error::Database(d) => d.message().to_owned(),
                    other => panic!("{other}"),
                });
        let rust = resolve_key(spec, ctx).map_err(|e| e.to_string());
        assert_eq!(sql, rust, "spec {spec:?} in {ctx}");
        match rust {
            Ok(_) => agreed.0 += 1,
            Err(_) => agreed.1 += 1,
        }
    }
    // Both outcomes occur often enough for the comparison to mean something.
    assert!(agreed.0 > CASES / 10 && agreed.1 > CASES / 10, "{agreed:?}");
}
