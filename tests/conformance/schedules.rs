//! Schedules (issue #19, docs/schedules.md) on both stores: an instant fires exactly once
//! however many schedulers race for it and across a restart, DST gaps and repeats in
//! Europe/Paris, the missed policies after downtime, pause / resume / delete, bad input
//! refused with the field named and nothing written, and a template's `schedules:`
//! registered with it.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Instant;

use tasker_core::clock::ManualClock;
use tasker_engine::testing::InProcessExecutor;
use tasker_runtime::{Node, RunningNode, SchedulerConfig};
use tokio_util::sync::CancellationToken;

use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use tasker_core::schedule::{Missed, identity_key, template_schedule_name};
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

tasker_tests::on_both_backends!(
    an_instant_fires_once_with_three_schedulers_racing,
    a_restart_neither_repeats_nor_loses_an_instant,
    dst_spring_forward_and_fall_back_in_paris,
    missed_instants_follow_skip_or_run_once,
    pause_resume_and_delete,
    bad_input_is_refused_by_field_and_writes_nothing,
    a_templates_schedules_are_registered_with_it,
    three_nodes_started_and_stopped_around_instants_fire_each_once,
    a_refused_task_is_reported_and_the_others_still_fire,
);

const REPORT: &str = "namespace: sched\nname: report\nversion: 1.0.0\n\
context_schema: {type: object, required: [region], properties: {region: {type: string}}}\n\
steps:\n  - {name: only, handler: noop@1.0.0}\n";

fn utc(s: &str) -> DateTime<Utc> {
    DateTime::parse_from_rfc3339(s).unwrap().with_timezone(&Utc)
}

async fn setup<S: Backend>(s: &S, name: &str, cron: &str, tz: &str, missed: Missed) {
    s.register_template(&template(REPORT)).await.unwrap();
    s.create_schedule(
        &NewSchedule::new(name, "sched/report@1.0.0", cron, tz)
            .with_context(json!({"region": "eu"}))
            .with_missed(missed),
        t0(),
    )
    .await
    .unwrap();
}

/// The tasks of schedule `name`, by identity key (each key once: a second row would fail the
/// unique index, so this also counts them).
async fn tasks_of<S: Backend>(s: &S, name: &str) -> BTreeMap<String, i64> {
    let rows = s
        .list_tasks(
            &TaskFilter::default(),
            TaskPageRequest {
                before: None,
                limit: 500,
            },
        )
        .await
        .unwrap();
    let mut out = BTreeMap::new();
    for t in rows.items {
        let Some(key) = t.identity_key.clone() else {
            continue;
        };
        if key.starts_with(&format!("schedule:{name}:")) {
            assert_eq!(t.context, json!({"region": "eu"}));
            *out.entry(key).or_insert(0) += 1;
        }
    }
    out
}

fn keys(name: &str, instants: &[&str]) -> BTreeMap<String, i64> {
    instants
        .iter()
        .map(|i| (identity_key(name, utc(i)), 1))
        .collect()
}

async fn an_instant_fires_once_with_three_schedulers_racing<S: Backend>(s: S) {
    setup(&s, "hourly", "0 * * * *", "UTC", Missed::Skip).await;
    let workers = [
        s.sibling(2).await.unwrap(),
        s.sibling(2).await.unwrap(),
        s.sibling(2).await.unwrap(),
    ];
    // Three schedulers tick around each of five instants (one a little before it, the
    // others at it and after it, each several times), all at once.
    let mut created = 0;
    for hour in 1..=5i64 {
        let instant = t0() + Duration::hours(hour);
        let mut calls = Vec::new();
        for (w, store) in workers.iter().enumerate() {
            for k in 0..4i64 {
                let store = store.clone();
                let now = instant + Duration::milliseconds(w as i64 * 700 + k * 300 - 500);
                calls.push(tokio::spawn(async move {
                    store.fire_due(now, 10).await.unwrap()
                }));
            }
        }
        let mut fired_here = 0;
        for c in calls {
            for f in c.await.unwrap() {
                assert_eq!(f.name, "hourly");
                assert_eq!(f.instant, Some(instant), "{f:?}");
                assert_eq!(f.error, None);
                assert!(f.task_id.is_some());
                if f.created {
                    fired_here += 1;
                }
            }
        }
        assert_eq!(fired_here, 1, "hour {hour}: one task created");
        created += fired_here;
        let row = s.schedule("hourly").await.unwrap().unwrap();
        assert_eq!(row.next_fire_at, Some(instant + Duration::hours(1)));
        assert_eq!(row.last_fired_at, Some(instant));
    }
    assert_eq!(created, 5);
    assert_eq!(
        tasks_of(&s, "hourly").await,
        keys(
            "hourly",
            &[
                "2030-01-01T01:00:00Z",
                "2030-01-01T02:00:00Z",
                "2030-01-01T03:00:00Z",
                "2030-01-01T04:00:00Z",
                "2030-01-01T05:00:00Z",
            ]
        )
    );
    let task = s
        .list_tasks(
            &TaskFilter::default(),
            TaskPageRequest {
                before: None,
                limit: 1,
            },
        )
        .await
        .unwrap()
        .items
        .remove(0);
    assert_eq!(
        task.metadata,
        json!({"schedule": "hourly", "instant": "2030-01-01T05:00:00Z"})
    );
}

async fn a_restart_neither_repeats_nor_loses_an_instant<S: Backend>(s: S) {
    setup(&s, "hourly", "0 * * * *", "UTC", Missed::Skip).await;
    let fired = s.fire_due(utc("2030-01-01T01:00:05Z"), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert!(fired[0].created);
    // The process goes away and another opens the database.
    let again = s.reopen().await.unwrap();
    drop(s);
    assert!(
        again
            .fire_due(utc("2030-01-01T01:00:30Z"), 10)
            .await
            .unwrap()
            .is_empty(),
        "01:00 fired before the restart"
    );
    // The next instant fires on the new handle, within its grace after a short outage.
    let fired = again
        .fire_due(utc("2030-01-01T02:00:40Z"), 10)
        .await
        .unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].instant, Some(utc("2030-01-01T02:00:00Z")));
    assert!(fired[0].created);
    // Once more: a third handle, a tick at the same instant.
    let third = again.reopen().await.unwrap();
    drop(again);
    assert!(
        third
            .fire_due(utc("2030-01-01T02:00:40Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        tasks_of(&third, "hourly").await,
        keys("hourly", &["2030-01-01T01:00:00Z", "2030-01-01T02:00:00Z"])
    );
}

/// Tick every `step` from `from` to `to`, returning the instants fired.
async fn drive<S: Backend>(s: &S, from: &str, to: &str, step: Duration) -> Vec<DateTime<Utc>> {
    let (mut now, end) = (utc(from), utc(to));
    let mut out = Vec::new();
    while now <= end {
        for f in s.fire_due(now, 10).await.unwrap() {
            assert_eq!(f.error, None);
            assert!(f.created, "{f:?}");
            out.push(f.instant.expect("on time: fired"));
        }
        now += step;
    }
    out
}

async fn dst_spring_forward_and_fall_back_in_paris<S: Backend>(s: S) {
    s.register_template(&template(REPORT)).await.unwrap();
    let ctx = json!({"region": "eu"});
    // Created just before each day.
    s.create_schedule(
        &NewSchedule::new(
            "nightly",
            "sched/report@1.0.0",
            "30 2 * * *",
            "Europe/Paris",
        )
        .with_context(ctx.clone()),
        utc("2030-03-30T20:00:00Z"),
    )
    .await
    .unwrap();
    s.create_schedule(
        &NewSchedule::new("hourly", "sched/report@1.0.0", "0 * * * *", "Europe/Paris")
            .with_context(ctx.clone()),
        utc("2030-03-30T22:59:00Z"),
    )
    .await
    .unwrap();
    // 2030-03-31: at 02:00 CET clocks go to 03:00 CEST (01:00 UTC). 02:30 does not exist:
    // it fires at the end of the gap, 03:00 CEST; the next day at 02:30 CEST.
    let fired = drive(
        &s,
        "2030-03-30T22:59:00Z",
        "2030-04-01T01:00:00Z",
        Duration::minutes(1),
    )
    .await;
    let nightly: Vec<_> = tasks_of(&s, "nightly").await.into_keys().collect();
    assert_eq!(
        nightly,
        [
            identity_key("nightly", utc("2030-03-31T01:00:00Z")),
            identity_key("nightly", utc("2030-04-01T00:30:00Z")),
        ]
    );
    // The local day of March 31 has 23 hours: 02:00 does not exist and is 03:00 CEST, which
    // fires once. From 23:00 UTC (00:00 CET) to 21:00 UTC (23:00 CEST).
    let hourly_day: Vec<_> = fired
        .iter()
        .filter(|i| **i >= utc("2030-03-30T23:00:00Z") && **i <= utc("2030-03-31T21:00:00Z"))
        .collect();
    assert_eq!(
        hourly_day.len(),
        23 + 1,
        "23 hourly instants and the nightly one"
    );
    let hourly = tasks_of(&s, "hourly").await;
    assert!(hourly.contains_key(&identity_key("hourly", utc("2030-03-31T00:00:00Z"))));
    assert!(hourly.contains_key(&identity_key("hourly", utc("2030-03-31T01:00:00Z"))));
    assert!(!hourly.contains_key(&identity_key("hourly", utc("2030-03-31T00:30:00Z"))));
    assert!(s.delete_schedule("hourly").await.unwrap());
    assert!(s.delete_schedule("nightly").await.unwrap());

    // 2030-10-27: at 03:00 CEST clocks go back to 02:00 CET (01:00 UTC). 02:30 happens twice
    // (00:30 and 01:30 UTC): it fires once, at the first.
    s.create_schedule(
        &NewSchedule::new(
            "nightly",
            "sched/report@1.0.0",
            "30 2 * * *",
            "Europe/Paris",
        )
        .with_context(ctx.clone()),
        utc("2030-10-26T20:00:00Z"),
    )
    .await
    .unwrap();
    let fired = drive(
        &s,
        "2030-10-26T20:00:00Z",
        "2030-10-28T03:00:00Z",
        Duration::minutes(5),
    )
    .await;
    assert_eq!(
        fired,
        [utc("2030-10-27T00:30:00Z"), utc("2030-10-28T01:30:00Z")],
        "02:30 CEST on the 27th (once), 02:30 CET on the 28th"
    );
    let row = s.schedule("nightly").await.unwrap().unwrap();
    assert_eq!(row.next_fire_at, Some(utc("2030-10-29T01:30:00Z")));
}

async fn missed_instants_follow_skip_or_run_once<S: Backend>(s: S) {
    s.register_template(&template(REPORT)).await.unwrap();
    for (name, missed) in [("skips", Missed::Skip), ("catches-up", Missed::RunOnce)] {
        s.create_schedule(
            &NewSchedule::new(name, "sched/report@1.0.0", "0 * * * *", "UTC")
                .with_context(json!({"region": "eu"}))
                .with_missed(missed),
            at(10 * 60_000),
        )
        .await
        .unwrap();
    }
    // Nothing ran from 00:10 to 05:30: 01:00 to 05:00 were due.
    let fired: BTreeMap<String, FiredSchedule> = s
        .fire_due(utc("2030-01-01T05:30:00Z"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
    let skip = &fired["skips"];
    assert_eq!(skip.instant, None);
    assert_eq!(skip.task_id, None);
    assert_eq!(skip.missed, 5);
    assert_eq!(skip.next_fire_at, Some(utc("2030-01-01T06:00:00Z")));
    let once = &fired["catches-up"];
    assert_eq!(once.instant, Some(utc("2030-01-01T05:00:00Z")));
    assert!(once.created);
    assert_eq!(once.missed, 4);
    assert_eq!(once.next_fire_at, Some(utc("2030-01-01T06:00:00Z")));
    assert!(tasks_of(&s, "skips").await.is_empty());
    assert_eq!(
        tasks_of(&s, "catches-up").await,
        keys("catches-up", &["2030-01-01T05:00:00Z"])
    );
    assert_eq!(
        s.schedule("skips").await.unwrap().unwrap().last_fired_at,
        None
    );
    // Back on time: both fire 06:00 within the grace.
    let fired = s.fire_due(utc("2030-01-01T06:00:45Z"), 10).await.unwrap();
    assert_eq!(fired.len(), 2);
    for f in fired {
        assert_eq!(f.instant, Some(utc("2030-01-01T06:00:00Z")));
        assert!(f.created);
        assert_eq!(f.missed, 0);
    }
    // Past the grace (61 s late) skip drops the instant; run_once fires it late.
    let fired: BTreeMap<String, FiredSchedule> = s
        .fire_due(utc("2030-01-01T07:01:01Z"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
    assert_eq!(fired["skips"].instant, None);
    assert_eq!(fired["skips"].missed, 1);
    assert_eq!(
        fired["catches-up"].instant,
        Some(utc("2030-01-01T07:00:00Z"))
    );
    assert_eq!(tasks_of(&s, "skips").await.len(), 1);
    assert_eq!(tasks_of(&s, "catches-up").await.len(), 3);
}

async fn pause_resume_and_delete<S: Backend>(s: S) {
    setup(&s, "hourly", "0 * * * *", "UTC", Missed::RunOnce).await;
    let row = s.schedule("hourly").await.unwrap().unwrap();
    assert!(!row.paused);
    assert_eq!(row.source, ScheduleSource::Api);
    assert_eq!(row.template_key(), "sched/report@1.0.0");
    assert_eq!(row.next_fire_at, Some(utc("2030-01-01T01:00:00Z")));

    let paused = s.pause_schedule("hourly", at(1_000)).await.unwrap();
    assert!(paused.paused);
    assert_eq!(paused.next_fire_at, None);
    // Pausing again changes nothing.
    assert_eq!(s.pause_schedule("hourly", at(2_000)).await.unwrap(), paused);
    // Nothing fires while paused, run_once or not.
    assert!(
        s.fire_due(utc("2030-01-01T03:30:00Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Resumed at 03:30: the instants of the pause never fire; the next is 04:00.
    let resumed = s
        .resume_schedule("hourly", utc("2030-01-01T03:30:00Z"))
        .await
        .unwrap();
    assert!(!resumed.paused);
    assert_eq!(resumed.next_fire_at, Some(utc("2030-01-01T04:00:00Z")));
    assert!(
        s.fire_due(utc("2030-01-01T03:59:59Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    let fired = s.fire_due(utc("2030-01-01T04:00:01Z"), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    assert_eq!(fired[0].instant, Some(utc("2030-01-01T04:00:00Z")));

    // A replacement keeps the pause state.
    s.pause_schedule("hourly", utc("2030-01-01T04:10:00Z"))
        .await
        .unwrap();
    let replaced = s
        .create_schedule(
            &NewSchedule::new("hourly", "sched/report@1.0.0", "*/15 * * * *", "UTC")
                .with_context(json!({"region": "eu"})),
            utc("2030-01-01T04:20:00Z"),
        )
        .await
        .unwrap();
    assert!(replaced.paused);
    assert_eq!(replaced.cron, "*/15 * * * *");
    assert_eq!(replaced.missed, Missed::Skip);
    assert_eq!(replaced.created_at, t0());
    let resumed = s
        .resume_schedule("hourly", utc("2030-01-01T04:20:00Z"))
        .await
        .unwrap();
    assert_eq!(resumed.next_fire_at, Some(utc("2030-01-01T04:30:00Z")));

    // Deleted: gone, nothing fires, its tasks stay.
    assert!(s.delete_schedule("hourly").await.unwrap());
    assert!(!s.delete_schedule("hourly").await.unwrap());
    assert_eq!(s.schedule("hourly").await.unwrap(), None);
    assert!(s.list_schedules().await.unwrap().is_empty());
    assert!(
        s.fire_due(utc("2030-01-02T00:00:00Z"), 10)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(tasks_of(&s, "hourly").await.len(), 1);
    for e in [
        s.pause_schedule("hourly", at(0)).await.unwrap_err(),
        s.resume_schedule("nope", at(0)).await.unwrap_err(),
    ] {
        assert!(matches!(e, StoreError::NotFound(_)), "{e}");
    }
    assert!(matches!(
        s.fire_due(at(0), 0).await.unwrap_err(),
        StoreError::InvalidInput(_)
    ));
}

async fn bad_input_is_refused_by_field_and_writes_nothing<S: Backend>(s: S) {
    s.register_template(&template(REPORT)).await.unwrap();
    let good = NewSchedule::new("hourly", "sched/report@1.0.0", "0 * * * *", "Europe/Paris")
        .with_context(json!({"region": "eu"}));
    let cases: Vec<(NewSchedule, &[&str])> = vec![
        (
            NewSchedule {
                template_key: "sched/missing@1.0.0".into(),
                ..good.clone()
            },
            &["template: unknown template sched/missing@1.0.0"],
        ),
        (
            NewSchedule {
                cron: "61 * * * *".into(),
                ..good.clone()
            },
            &["cron: '61 * * * *' is not a cron pattern"],
        ),
        (
            NewSchedule {
                tz: "Europe/Atlantis".into(),
                ..good.clone()
            },
            &["tz: 'Europe/Atlantis' is not an IANA time zone"],
        ),
        (
            NewSchedule {
                context: json!({"region": 7}),
                ..good.clone()
            },
            &["context/region: does not match the context schema of sched/report@1.0.0"],
        ),
        (
            NewSchedule {
                context: json!({}),
                ..good.clone()
            },
            &["context: does not match the context schema"],
        ),
        (
            NewSchedule {
                context: json!([1]),
                ..good.clone()
            },
            &["context: is not a JSON object"],
        ),
        (
            NewSchedule {
                name: "a/b".into(),
                cron: "0 0 30 2 *".into(),
                ..good.clone()
            },
            &[
                "name: schedule name 'a/b'",
                "cron: '0 0 30 2 *' never fires",
            ],
        ),
    ];
    for (bad, wants) in &cases {
        let e = s.create_schedule(bad, t0()).await.unwrap_err();
        assert!(matches!(e, StoreError::InvalidInput(_)), "{e}");
        for want in *wants {
            assert!(e.to_string().contains(want), "{e}\nwants: {want}");
        }
        // The API reports the same problems field by field.
        let template = s.template(&bad.template_key).await.unwrap();
        let fields: Vec<String> = check_schedule(bad, template.as_ref())
            .into_iter()
            .map(|p| p.field)
            .collect();
        let want_fields: Vec<&str> = wants.iter().map(|w| w.split(':').next().unwrap()).collect();
        assert_eq!(fields, want_fields);
    }
    assert_eq!(s.count("SELECT count(*) FROM schedules").await.unwrap(), 0);
    // A refused replacement leaves the schedule as it was.
    let row = s.create_schedule(&good, t0()).await.unwrap();
    let bad = NewSchedule {
        cron: "nope".into(),
        ..good.clone()
    };
    s.create_schedule(&bad, at(5_000)).await.unwrap_err();
    assert_eq!(s.schedule("hourly").await.unwrap(), Some(row));
    assert_eq!(s.count("SELECT count(*) FROM schedules").await.unwrap(), 1);
    assert_eq!(s.count("SELECT count(*) FROM tasks").await.unwrap(), 0);
}

async fn a_templates_schedules_are_registered_with_it<S: Backend>(s: S) {
    let v1 = "namespace: sched\nname: nightly\nversion: 1.0.0\n\
        context_schema: {type: object, required: [region]}\n\
        steps: [{name: a, handler: noop@1.0.0}]\n\
        schedules:\n\
        \x20 - {name: eu, cron: '30 2 * * *', tz: Europe/Paris, context: {region: eu}, missed: run_once, priority: 4}\n\
        \x20 - {name: us, cron: '0 7 * * *', tz: America/New_York, context: {region: us}}\n";
    let t = template(v1);
    s.register_template_at(&t, t0()).await.unwrap();
    let rows = s.list_schedules().await.unwrap();
    let names: Vec<&str> = rows.iter().map(|r| r.name.as_str()).collect();
    assert_eq!(
        names,
        [
            template_schedule_name("sched", "nightly", "eu"),
            template_schedule_name("sched", "nightly", "us"),
        ]
    );
    let eu = &rows[0];
    assert_eq!(eu.name, "sched/nightly:eu");
    assert_eq!(eu.source, ScheduleSource::Template);
    assert_eq!(eu.template_key(), "sched/nightly@1.0.0");
    assert_eq!(eu.missed, Missed::RunOnce);
    assert_eq!(eu.priority.map(|p| p.get()), Some(4));
    assert_eq!(eu.context, json!({"region": "eu"}));
    assert_eq!(eu.next_fire_at, Some(utc("2030-01-01T01:30:00Z")));
    assert_eq!(rows[1].next_fire_at, Some(utc("2030-01-01T12:00:00Z")));

    // Paused by hand, it stays paused when the template is registered again, and when a
    // new version takes it over.
    s.pause_schedule("sched/nightly:eu", at(1_000))
        .await
        .unwrap();
    let again = s.register_template_at(&t, at(2_000)).await.unwrap();
    assert!(!again.created);
    assert!(
        s.schedule("sched/nightly:eu")
            .await
            .unwrap()
            .unwrap()
            .paused
    );
    let v2 = template(&v1.replace("version: 1.0.0", "version: 1.1.0"));
    s.register_template_at(&v2, at(3_000)).await.unwrap();
    let eu = s.schedule("sched/nightly:eu").await.unwrap().unwrap();
    assert!(eu.paused);
    assert_eq!(eu.version, "1.1.0");
    let us = s.schedule("sched/nightly:us").await.unwrap().unwrap();
    assert!(!us.paused);
    assert_eq!(us.version, "1.1.0");
    assert_eq!(us.next_fire_at, Some(utc("2030-01-01T12:00:00Z")));

    // It fires the new version's task, with its priority.
    let fired = s.fire_due(utc("2030-01-01T12:00:10Z"), 10).await.unwrap();
    assert_eq!(fired.len(), 1);
    let task = s.task(fired[0].task_id.unwrap()).await.unwrap().unwrap();
    assert_eq!(task.template_key, "sched/nightly@1.1.0");
    assert_eq!(task.context, json!({"region": "us"}));
    assert_eq!(
        task.identity_key.as_deref(),
        Some("schedule:sched/nightly:us:2030-01-01T12:00:00Z")
    );
}

/// A node with a scheduler polling every 5 ms of wall time on `clock`.
fn node<S: Backend>(s: &S, clock: &ManualClock, id: &str) -> (RunningNode, CancellationToken) {
    let stop = CancellationToken::new();
    let running = Node::new(
        Arc::new(s.clone()),
        InProcessExecutor::new(),
        tasker_tests::worker_config(id),
    )
    .with_clock(Arc::new(clock.clone()))
    .with_scheduler(Some(SchedulerConfig {
        poll: std::time::Duration::from_millis(5),
        batch: 10,
    }))
    .start(stop.clone());
    (running, stop)
}

/// Waits (up to 60 s: a loaded machine) until every node's scheduler has ticked at least
/// `ticks` more times.
async fn ticked(nodes: &[(RunningNode, CancellationToken)], ticks: u64) {
    let before: Vec<u64> = nodes
        .iter()
        .map(|(n, _)| n.scheduler_stats().unwrap().totals().ticks)
        .collect();
    let deadline = Instant::now() + std::time::Duration::from_secs(60);
    loop {
        let done = nodes
            .iter()
            .zip(&before)
            .all(|((n, _), b)| n.scheduler_stats().unwrap().totals().ticks >= b + ticks);
        if done {
            return;
        }
        let totals: Vec<_> = nodes
            .iter()
            .map(|(n, _)| n.scheduler_stats().unwrap().totals())
            .collect();
        assert!(
            Instant::now() < deadline,
            "the schedulers did not tick: {totals:?}, before {before:?}"
        );
        tokio::time::sleep(std::time::Duration::from_millis(2)).await;
    }
}

async fn three_nodes_started_and_stopped_around_instants_fire_each_once<S: Backend>(s: S) {
    setup(&s, "every5", "*/5 * * * *", "UTC", Missed::Skip).await;
    let clock = ManualClock::new(t0() + Duration::seconds(290));
    let mut nodes = Vec::new();
    for i in 0..3 {
        nodes.push(node(&s.sibling(3).await.unwrap(), &clock, &format!("n{i}")));
    }
    let mut created = 0;
    for round in 1..=4i64 {
        let instant = t0() + Duration::minutes(5 * round);
        // Just before the instant: nothing fires.
        clock.set(instant - Duration::seconds(1));
        ticked(&nodes, 2).await;
        // The instant comes while all three poll; each ticks several times after it.
        clock.set(instant + Duration::milliseconds(500));
        ticked(&nodes, 3).await;
        clock.set(instant + Duration::seconds(20));
        ticked(&nodes, 3).await;
        // One node stops and a new one starts, around the next instant.
        let (old, stop) = nodes.remove(0);
        stop.cancel();
        old.join().await;
        nodes.push(node(
            &s.sibling(3).await.unwrap(),
            &clock,
            &format!("r{round}"),
        ));
        clock.set(instant + Duration::minutes(4) + Duration::seconds(59));
        ticked(&nodes, 2).await;
        created = tasks_of(&s, "every5").await.len();
        assert_eq!(created as i64, round, "round {round}");
    }
    let mut fired = 0;
    for (n, stop) in nodes {
        fired += n.scheduler_stats().unwrap().totals().created;
        assert_eq!(n.scheduler_stats().unwrap().totals().errors, 0);
        stop.cancel();
        n.join().await;
    }
    assert_eq!(created, 4);
    assert!(fired <= 4, "the live nodes created at most the four");
    assert_eq!(
        tasks_of(&s, "every5").await,
        keys(
            "every5",
            &[
                "2030-01-01T00:05:00Z",
                "2030-01-01T00:10:00Z",
                "2030-01-01T00:15:00Z",
                "2030-01-01T00:20:00Z",
            ]
        )
    );
    // The workers ran them.
    let deadline = Instant::now() + std::time::Duration::from_secs(30);
    while s
        .count("SELECT count(*) FROM tasks WHERE state = 'complete'")
        .await
        .unwrap()
        < 4
    {
        assert!(Instant::now() < deadline, "the tasks did not finish");
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
}

/// An instant whose task the store refuses (its template's concurrency key, strategy
/// cancel_newest, is at its limit) is reported and passed over; the same call fires the other
/// schedules (the refusal is rolled back to a savepoint, not the whole transaction).
async fn a_refused_task_is_reported_and_the_others_still_fire<S: Backend>(s: S) {
    setup(&s, "fine", "0 * * * *", "UTC", Missed::Skip).await;
    let limited = template(
        "namespace: sched\nname: limited\nversion: 1.0.0\n\
         concurrency: {key: one, limit: 1, strategy: cancel_newest}\n\
         steps:\n  - {name: only, handler: noop@1.0.0}\n",
    );
    s.register_template(&limited).await.unwrap();
    // A task holds the key's one slot.
    s.create_task(&NewTask::new(limited.key(), json!({})), t0())
        .await
        .unwrap();
    for name in ["a-refused", "z-refused"] {
        s.create_schedule(
            &NewSchedule::new(name, limited.key(), "0 * * * *", "UTC"),
            t0(),
        )
        .await
        .unwrap();
    }
    let fired: BTreeMap<String, FiredSchedule> = s
        .fire_due(utc("2030-01-01T01:00:05Z"), 10)
        .await
        .unwrap()
        .into_iter()
        .map(|f| (f.name.clone(), f))
        .collect();
    assert_eq!(fired.len(), 3, "{fired:?}");
    for name in ["a-refused", "z-refused"] {
        let f = &fired[name];
        assert_eq!(f.instant, Some(utc("2030-01-01T01:00:00Z")));
        assert_eq!(f.task_id, None);
        let e = f.error.as_deref().unwrap_or_default();
        assert!(e.contains("cancel_newest"), "{name}: {e}");
        assert_eq!(f.next_fire_at, Some(utc("2030-01-01T02:00:00Z")));
        let row = s.schedule(name).await.unwrap().unwrap();
        assert_eq!(row.last_fired_at, None);
        assert_eq!(row.next_fire_at, Some(utc("2030-01-01T02:00:00Z")));
    }
    assert!(fired["fine"].created);
    assert_eq!(
        tasks_of(&s, "fine").await,
        keys("fine", &["2030-01-01T01:00:00Z"])
    );
    assert_eq!(s.count("SELECT count(*) FROM tasks").await.unwrap(), 2);
}
