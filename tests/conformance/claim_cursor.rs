//! The claim's per-session cursor never hides a ready step: a step that becomes ready behind
//! the cursor is found by the same claim's second scan from the head.
//!
//! PostgreSQL only: the cursor is a PostgreSQL session setting of `claim_ready_steps`; the
//! embedded store's claim reads the queue from its head every time.

use sqlx::PgPool;
use sqlx::postgres::PgPoolOptions;
use tasker_core::fixtures;
use tasker_store::{PgStore, Store};
use tasker_tests::store::*;

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn a_step_ready_behind_the_cursor_is_still_claimed(pool: PgPool) {
    // One connection, so every call shares the session that holds the cursor.
    let one = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let s = PgStore::new(one);
    let t = fixtures::parallel_merge(fixtures::NOOP);
    start(&s, &t, at(0)).await;
    start(&s, &t, at(0)).await; // six roots, all ready at t0

    // A full claim of 2 leaves the cursor after the second root.
    let first = s.claim("w", 2, LEASE, at(10)).await.unwrap();
    assert_eq!(first.len(), 2);
    // Give the first one back with a ready_at before the cursor.
    let back = &first[0];
    s.release("w", &[back.lease()], at(-5)).await.unwrap();

    // The next claim scans on from the cursor (four roots), comes up short of 10, and scans
    // again from the head: it must find the released step too.
    let rest = s.claim("w", 10, LEASE, at(20)).await.unwrap();
    let ids: Vec<_> = rest.iter().map(|c| c.step_id).collect();
    assert_eq!(rest.len(), 5, "{ids:?}");
    assert!(ids.contains(&back.step_id), "{ids:?}");
    // And nothing is claimable any more.
    assert!(s.claim("w", 10, LEASE, at(30)).await.unwrap().is_empty());
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn full_claims_resume_after_the_cursor_in_queue_order(pool: PgPool) {
    let one = PgPoolOptions::new()
        .max_connections(1)
        .connect_with((*pool.connect_options()).clone())
        .await
        .unwrap();
    let s = PgStore::new(one);
    let t = fixtures::parallel_merge(fixtures::NOOP);
    for _ in 0..4 {
        start(&s, &t, at(0)).await;
    }
    let mut seen = Vec::new();
    for _ in 0..4 {
        let batch = s.claim("w", 3, LEASE, at(10)).await.unwrap();
        assert_eq!(batch.len(), 3);
        seen.extend(batch.into_iter().map(|c| c.step_id));
    }
    // Twelve roots, each claimed once, in id order (they share one ready_at).
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), 12);
    assert_eq!(seen, sorted);
}
