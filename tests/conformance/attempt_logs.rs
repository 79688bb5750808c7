//! What attempts said (log records, stdout, stderr, HTTP requests) is kept with each attempt row, by every
//! recording path (fail, complete, complete-and-claim), read back exactly, and only for
//! attempts that ran.

use std::time::Duration;

use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

fn said(tag: &str) -> AttemptLog {
    AttemptLog {
        lines: vec![
            LogLine {
                at_us: 10,
                level: LogLevel::Debug,
                message: format!("{tag}: starting"),
            },
            LogLine {
                at_us: 2_500,
                level: LogLevel::Error,
                // Quotes, backslashes, JSON-looking and multi-byte text survive both stores.
                message: format!("{tag}: \"quoted\" \\ {{\"not\": \"json\"}} é ✓"),
            },
        ],
        stdout: format!("{tag} out\nsecond line\n"),
        stderr: format!("{tag} err\n"),
        dropped: LogDropped {
            lines: 7,
            stdout_bytes: 0,
            stderr_bytes: 123,
        },
        // HTTP records ride in the same column on both stores.
        http: vec![
            HttpRecord {
                at_us: 40,
                method: "POST".into(),
                url: format!("https://api.test/{tag}"),
                status: Some(429),
                request_bytes: 12,
                response_bytes: 3,
                duration_us: 900,
                refused: false,
                error: None,
            },
            HttpRecord {
                method: "GET".into(),
                url: "https://evil.test/".into(),
                refused: true,
                error: Some("no http grant names https://evil.test:443".into()),
                ..HttpRecord::default()
            },
        ],
    }
}

async fn every_recording_path_keeps_what_the_attempt_said<S: Backend>(s: S) {
    let t = one_step(
        "logged",
        "{ max_attempts: 3, backoff: { base_ms: 100, jitter: 0 } }",
    );
    start(&s, &t, at(0)).await;
    start(&s, &fixtures_two(), at(0)).await;
    let first = claim_all(&s, at(0)).await;
    assert_eq!(first.len(), 2);
    let logged = first.iter().find(|c| c.template_key == t.key()).unwrap();
    let quiet = first.iter().find(|c| c.template_key != t.key()).unwrap();

    // fail: the first attempt of `logged`.
    let mut f = failure(logged, true, None);
    f.log = said("first");
    let out = s.fail(&[f], at(0)).await.unwrap();
    assert_eq!(out[0].decision, Some(RetryDecision::Retry));
    // complete: the quiet step, which said nothing.
    s.complete(&[completion(quiet)], at(0)).await.unwrap();

    // complete_and_claim: the retry of `logged` completes in a worker's hop.
    let retry = claim_all(&s, at(100)).await;
    let retry: Vec<_> = retry
        .iter()
        .filter(|c| c.step_id == logged.step_id)
        .collect();
    assert_eq!(retry.len(), 1);
    let mut c = completion(retry[0]);
    c.log = said("second");
    let (outcomes, _) = s
        .complete_and_claim(&[c], &[], "w1", 10, Duration::from_secs(30), at(100))
        .await
        .unwrap();
    assert!(outcomes[0].accepted());

    let all = s.attempt_logs(logged.step_id, None).await.unwrap();
    let shape: Vec<_> = all.iter().map(|a| (a.attempt_no, a.outcome)).collect();
    assert_eq!(
        shape,
        vec![
            (logged.token, AttemptOutcome::Failed),
            (retry[0].token, AttemptOutcome::Completed)
        ]
    );
    assert_eq!(all[0].log, said("first"));
    assert_eq!(all[1].log, said("second"));
    assert_eq!(all[1].step_id, logged.step_id);
    assert_eq!(all[0].finished_at, at(0));
    assert_eq!(all[1].finished_at, at(100));

    let one = s
        .attempt_logs(logged.step_id, Some(retry[0].token))
        .await
        .unwrap();
    assert_eq!(one.len(), 1);
    assert_eq!(one[0].log, said("second"));
    assert!(
        s.attempt_logs(logged.step_id, Some(99))
            .await
            .unwrap()
            .is_empty(),
        "no such attempt"
    );

    // A quiet attempt is listed, with nothing said, and stores no log at all.
    let q = s.attempt_logs(quiet.step_id, None).await.unwrap();
    assert_eq!(q.len(), 1);
    assert_eq!(q[0].log, AttemptLog::default());
    assert_eq!(
        s.count("SELECT count(*) FROM attempts WHERE logs IS NOT NULL")
            .await
            .unwrap(),
        2,
        "only the two attempts that said something store a log"
    );
    // The status listing does not carry the output, and still lists every attempt.
    assert_eq!(s.attempts_of_step(logged.step_id).await.unwrap().len(), 2);
}

fn fixtures_two() -> tasker_core::template::Template {
    template(
        "namespace: tests\nname: quiet\nversion: 1.0.0\nsteps:\n  - name: only\n    handler: noop@1.0.0\n",
    )
}

async fn a_refused_or_lost_attempt_keeps_no_output<S: Backend>(s: S) {
    let t = one_step(
        "lost",
        "{ max_attempts: 3, backoff: { base_ms: 100, jitter: 0 } }",
    );
    start(&s, &t, at(0)).await;
    let c = claim_all(&s, at(0)).await;
    // A stale token's output is refused with its completion.
    let mut stale = completion(&c[0]);
    stale.token += 1;
    stale.log = said("stale");
    let out = s.complete(&[stale], at(1)).await.unwrap();
    assert_eq!(out[0].refusal, Some(Refusal::StaleToken));
    // The lease runs out: the attempt is recorded as lost, with no handler output.
    let lost = s
        .expire_leases(at(0) + chrono::Duration::seconds(31), 100)
        .await
        .unwrap();
    assert_eq!(lost.len(), 1);
    assert_eq!(s.attempts_of_step(c[0].step_id).await.unwrap().len(), 1);
    assert!(s.attempt_logs(c[0].step_id, None).await.unwrap().is_empty());
    assert_eq!(
        s.count("SELECT count(*) FROM attempts WHERE logs IS NOT NULL")
            .await
            .unwrap(),
        0
    );
}

tasker_tests::on_both_backends!(
    every_recording_path_keeps_what_the_attempt_said,
    a_refused_or_lost_attempt_keeps_no_output,
);
