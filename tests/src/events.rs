//! Reading the event log (`Store::events_after`) in tests: whole, once it holds what a
//! scenario wrote, and its cursors as order keys.

use std::time::Duration;

use tasker_store::{EventFilter, MAX_PAGE, Store, StoredEvent};

/// How long [`settled`] waits for the log to hold what a scenario wrote.
const PATIENCE: Duration = Duration::from_secs(60);

/// The whole log matching `filter`, page by page from the beginning.
pub async fn read_all<S: Store>(s: &S, filter: &EventFilter, limit: u32) -> Vec<StoredEvent> {
    let mut all: Vec<StoredEvent> = Vec::new();
    loop {
        let after = all.last().map(|e| e.cursor.clone());
        let page = s
            .events_after(filter, after.as_deref(), limit)
            .await
            .expect("events_after");
        assert!(page.len() <= limit as usize, "a page holds at most limit");
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

/// The whole log matching `filter` once it holds at least `n` events.
///
/// PostgreSQL returns an event only once every older transaction has ended, on the whole
/// cluster (its xmin horizon): another test's open transaction, in another database, can
/// hold this one's events back for a moment. So this waits for the condition, polling,
/// and fails after a minute.
pub async fn settled<S: Store>(s: &S, filter: &EventFilter, n: usize) -> Vec<StoredEvent> {
    let deadline = tokio::time::Instant::now() + PATIENCE;
    loop {
        let all = read_all(s, filter, MAX_PAGE).await;
        if all.len() >= n {
            return all;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the event log holds {} of {n} events after {PATIENCE:?}: {all:#?}",
            all.len()
        );
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// A cursor as its order key `(tx, src, entity, seq)`.
pub fn key(cursor: &str) -> (i64, i64, i64, i64) {
    let parts: Vec<i64> = cursor
        .split('-')
        .map(|p| p.parse().unwrap_or_else(|_| panic!("cursor {cursor}")))
        .collect();
    let [tx, src, entity, seq] = parts[..] else {
        panic!("cursor {cursor} has four parts");
    };
    (tx, src, entity, seq)
}

/// The events without their transactions' numbers, which differ between the stores: each
/// cursor's `tx` is replaced by the rank of its transaction in the log (0, 1, ...), so two
/// logs of the same history compare equal, transaction boundaries included.
pub fn ranked(events: &[StoredEvent]) -> Vec<StoredEvent> {
    let mut rank = -1;
    let mut last_tx = None;
    events
        .iter()
        .map(|e| {
            let (tx, src, entity, seq) = key(&e.cursor);
            if last_tx != Some(tx) {
                rank += 1;
                last_tx = Some(tx);
            }
            StoredEvent {
                cursor: format!("{rank}-{src}-{entity}-{seq}"),
                ..e.clone()
            }
        })
        .collect()
}

/// Both stores hold the same event log: the same events in the same order, in the same
/// transactions (cursors compared by [`ranked`]). `pg` is read once it holds as many events
/// as `lite`.
pub async fn assert_same_log<P: Store, L: Store>(pg: &P, lite: &L) {
    let any = EventFilter::default();
    let lite_log = read_all(lite, &any, MAX_PAGE).await;
    let pg_log = settled(pg, &any, lite_log.len()).await;
    assert!(!lite_log.is_empty(), "an empty event log compares nothing");
    let (pg_log, lite_log) = (ranked(&pg_log), ranked(&lite_log));
    for (i, (p, l)) in pg_log.iter().zip(&lite_log).enumerate() {
        assert_eq!(p, l, "event {i} differs (left: PostgreSQL, right: SQLite)");
    }
    assert_eq!(pg_log.len(), lite_log.len(), "the same number of events");
}
