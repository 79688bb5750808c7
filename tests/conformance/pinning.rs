//! Sticky plugin pinning: a retry is told the hash its step's first attempt ran, and a task
//! retry starts the pin again (a fix deployed before it must be able to run).

use tasker_store::Accounting;
use tasker_tests::Backend;
use tasker_tests::store::*;

fn with_hash(mut f: tasker_store::StepFailure, hash: &str) -> tasker_store::StepFailure {
    f.accounting = Accounting {
        plugin_hash: Some(hash.into()),
        ..Accounting::default()
    };
    f
}

async fn a_retry_is_pinned_to_the_first_attempts_hash_unless_latest<S: Backend>(s: S) {
    let sticky = one_step(
        "sticky",
        "{ max_attempts: 3, backoff: { base_ms: 100, jitter: 0 } }",
    );
    let latest = template(
        "namespace: tests\nname: latest\nversion: 1.0.0\nsteps:\n  - name: only\n    handler: noop@1.0.0\n    pin: latest\n    retry: { max_attempts: 3, backoff: { base_ms: 100, jitter: 0 } }\n",
    );
    start(&s, &sticky, at(0)).await;
    start(&s, &latest, at(0)).await;

    let first = claim_all(&s, at(0)).await;
    assert_eq!(first.len(), 2);
    assert!(
        first.iter().all(|c| c.pinned_hash.is_none()),
        "nothing ran yet"
    );
    let fails: Vec<_> = first
        .iter()
        .map(|c| with_hash(failure(c, true, None), "aaaa"))
        .collect();
    s.fail(&fails, at(0)).await.unwrap();

    let second = claim_all(&s, at(100)).await;
    assert_eq!(second.len(), 2);
    for c in &second {
        let want = (c.template_key == sticky.key()).then(|| "aaaa".to_owned());
        assert_eq!(c.pinned_hash, want, "{}", c.template_key);
    }
    // The pin is the FIRST attempt's hash even if a later attempt ran something else.
    let fails: Vec<_> = second
        .iter()
        .map(|c| with_hash(failure(c, true, None), "bbbb"))
        .collect();
    s.fail(&fails, at(100)).await.unwrap();
    let third = claim_all(&s, at(300)).await;
    let pinned: Vec<_> = third
        .iter()
        .filter(|c| c.template_key == sticky.key())
        .map(|c| c.pinned_hash.clone())
        .collect();
    assert_eq!(pinned, vec![Some("aaaa".to_owned())]);
}

async fn a_task_retry_starts_a_new_pin<S: Backend>(s: S) {
    let sticky = one_step(
        "sticky",
        "{ max_attempts: 2, backoff: { base_ms: 100, jitter: 0 } }",
    );
    let task = start(&s, &sticky, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    s.fail(&[with_hash(failure(&c[0], true, None), "aaaa")], at(0))
        .await
        .unwrap();
    let c = claim_all(&s, at(100)).await;
    assert_eq!(c[0].pinned_hash.as_deref(), Some("aaaa"));
    // Exhausted: the task is in error.
    s.fail(&[with_hash(failure(&c[0], true, None), "aaaa")], at(100))
        .await
        .unwrap();
    assert_eq!(
        s.task(task).await.unwrap().unwrap().state,
        tasker_core::state::TaskState::Error
    );

    s.retry_task(task, at(200)).await.unwrap();
    let c = claim_all(&s, at(200)).await;
    assert_eq!(c.len(), 1);
    assert_eq!(
        c[0].pinned_hash, None,
        "the retry resolves its plugin afresh"
    );
    s.fail(&[with_hash(failure(&c[0], true, None), "cccc")], at(200))
        .await
        .unwrap();
    let c = claim_all(&s, at(300)).await;
    assert_eq!(
        c[0].pinned_hash.as_deref(),
        Some("cccc"),
        "pinned to the first attempt since the retry"
    );
}

tasker_tests::on_both_backends!(
    a_retry_is_pinned_to_the_first_attempts_hash_unless_latest,
    a_task_retry_starts_a_new_pin,
);
