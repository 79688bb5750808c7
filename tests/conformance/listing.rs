//! Listings (tasks by filter, templates, in pages) and API tokens, as a server asks for them.

use std::collections::BTreeSet;

use chrono::{DateTime, Utc};
use serde_json::{Value, json};
use tasker_core::state::TaskState;
use tasker_core::template::Template;
use tasker_store::*;
use tasker_tests::Backend;
use tasker_tests::store::*;

/// A one-step template of namespace `tests` whose step fails for good on its first failure.
fn versioned(name: &str, version: &str) -> Template {
    template(&format!(
        "namespace: tests\nname: {name}\nversion: {version}\ndescription: {name} at {version}\n\
         steps:\n  - name: only\n    handler: noop@1.0.0\n    retry: {{ max_attempts: 1 }}\n"
    ))
}

async fn create<S: Backend>(
    s: &S,
    t: &Template,
    metadata: Value,
    identity_key: Option<&str>,
    now: DateTime<Utc>,
) -> TaskId {
    let mut req = NewTask::new(t.key(), json!({}));
    req.metadata = metadata;
    req.identity_key = identity_key.map(str::to_owned);
    let created = s.create_task(&req, now).await.unwrap();
    assert!(created.created);
    created.task_id
}

/// No task.
const NONE: [TaskId; 0] = [];

fn request(before: Option<TaskId>, limit: u32) -> TaskPageRequest {
    TaskPageRequest { before, limit }
}

/// Every page of a listing, walked through `next`.
async fn pages<S: Backend>(s: &S, filter: &TaskFilter, limit: u32) -> Vec<Page<TaskRow, TaskId>> {
    let mut out = Vec::new();
    let mut before = None;
    loop {
        let page = s.list_tasks(filter, request(before, limit)).await.unwrap();
        before = page.next;
        out.push(page);
        if before.is_none() {
            return out;
        }
        assert!(out.len() < 100, "a listing that never ends: {filter:?}");
    }
}

/// The ids a filter lists (one page of the largest size).
async fn listed<S: Backend>(s: &S, filter: &TaskFilter) -> Vec<TaskId> {
    let page = s.list_tasks(filter, request(None, MAX_PAGE)).await.unwrap();
    assert_eq!(page.next, None, "{filter:?}");
    page.items.into_iter().map(|t| t.id).collect()
}

async fn task_pages_are_gap_free_and_stable<S: Backend>(s: S) {
    let t = versioned("paged", "1.0.0");
    s.register_template(&t).await.unwrap();
    let mut ids = Vec::new();
    for i in 0..7 {
        ids.push(create(&s, &t, json!({}), None, at(i)).await);
    }
    ids.reverse(); // newest first
    let all = TaskFilter::default();

    let walked = pages(&s, &all, 3).await;
    let sizes: Vec<usize> = walked.iter().map(|p| p.items.len()).collect();
    assert_eq!(sizes, [3, 3, 1]);
    let nexts: Vec<Option<TaskId>> = walked.iter().map(|p| p.next).collect();
    assert_eq!(nexts, [Some(ids[2]), Some(ids[5]), None]);
    let seen: Vec<TaskId> = walked
        .iter()
        .flat_map(|p| p.items.iter().map(|t| t.id))
        .collect();
    assert_eq!(seen, ids, "every task once, newest first");
    // The rows are the rows `task` reads.
    for row in walked.iter().flat_map(|p| &p.items) {
        assert_eq!(Some(row), s.task(row.id).await.unwrap().as_ref());
    }

    // A task created meanwhile is on no later page: the cursor is an id, not an offset.
    let newer = create(&s, &t, json!({}), None, at(100)).await;
    let second = s
        .list_tasks(&all, request(walked[0].next, 3))
        .await
        .unwrap();
    assert_eq!(second, walked[1]);
    let first = s.list_tasks(&all, request(None, 3)).await.unwrap();
    assert_eq!(first.items[0].id, newer);

    // Exactly a page left: full, and nothing follows.
    let last = s.list_tasks(&all, request(Some(ids[3]), 3)).await.unwrap();
    let last_ids: Vec<TaskId> = last.items.iter().map(|t| t.id).collect();
    assert_eq!((last_ids.as_slice(), last.next), (&ids[4..], None));
    // Past the oldest task: an empty last page.
    let none = s.list_tasks(&all, request(Some(ids[6]), 3)).await.unwrap();
    assert_eq!((none.items.len(), none.next), (0, None));
    // One page holding everything.
    let one = s.list_tasks(&all, request(None, 8)).await.unwrap();
    assert_eq!((one.items.len(), one.next), (8, None));
}

/// Seven tasks covering every filter; returns their ids in creation order.
///
/// | task | template         | created | metadata.tags          | identity | ends              |
/// |------|------------------|---------|------------------------|----------|-------------------|
/// | t1   | tests/alpha@1.0.0 | 0      | [red, blue]            | order-1  | complete at 200   |
/// | t2   | tests/alpha@2.0.0 | 10     | [red]                  |          | error at 300      |
/// | t3   | tests/beta@1.0.0  | 20     | "red" (not an array)   |          | cancelled at 400  |
/// | t4   | tests/beta@1.0.0  | 30     | {red: 1} (not an array)| order-4  | in progress       |
/// | t5   | tests/alpha@1.0.0 | 40     | [blue], other: [red]   |          | in progress       |
/// | t6   | tests/beta@1.0.0  | 500    | [red, 7]               |          | pending           |
/// | t7   | tests/alpha@2.0.0 | 600    | none                   |          | cancelled at 700  |
async fn seven_tasks<S: Backend>(s: &S) -> [TaskId; 7] {
    let alpha1 = versioned("alpha", "1.0.0");
    let alpha2 = versioned("alpha", "2.0.0");
    let beta = versioned("beta", "1.0.0");
    for t in [&alpha1, &alpha2, &beta] {
        s.register_template(t).await.unwrap();
    }
    let t1 = create(
        s,
        &alpha1,
        json!({"tags": ["red", "blue"]}),
        Some("order-1"),
        at(0),
    )
    .await;
    let t2 = create(s, &alpha2, json!({"tags": ["red"]}), None, at(10)).await;
    let t3 = create(s, &beta, json!({"tags": "red"}), None, at(20)).await;
    let t4 = create(
        s,
        &beta,
        json!({"tags": {"red": 1}}),
        Some("order-4"),
        at(30),
    )
    .await;
    let t5 = create(
        s,
        &alpha1,
        json!({"tags": ["blue"], "other": ["red"]}),
        None,
        at(40),
    )
    .await;
    let claimed = claim_all(s, at(100)).await;
    assert_eq!(claimed.len(), 5);
    let of = |task: TaskId| claimed.iter().find(|c| c.task_id == task).unwrap();
    let done = s.complete(&[completion(of(t1))], at(200)).await.unwrap();
    assert_eq!(done[0].task_finalized, Some(TaskState::Complete));
    let failed = s
        .fail(&[failure(of(t2), false, None)], at(300))
        .await
        .unwrap();
    assert_eq!(failed[0].task_finalized, Some(TaskState::Error));
    assert!(s.cancel_task(t3, at(400)).await.unwrap().cancelled);
    let t6 = create(s, &beta, json!({"tags": ["red", 7]}), None, at(500)).await;
    let t7 = create(s, &alpha2, json!({}), None, at(600)).await;
    assert!(s.cancel_task(t7, at(700)).await.unwrap().cancelled);
    [t1, t2, t3, t4, t5, t6, t7]
}

async fn each_task_filter_alone<S: Backend>(s: S) {
    let [t1, t2, t3, t4, t5, t6, t7] = seven_tasks(&s).await;
    let f = TaskFilter::default;
    assert_eq!(listed(&s, &f()).await, [t7, t6, t5, t4, t3, t2, t1]);

    let states = |states: &[TaskState]| TaskFilter {
        states: states.to_vec(),
        ..f()
    };
    assert_eq!(listed(&s, &states(&[TaskState::Pending])).await, [t6]);
    assert_eq!(
        listed(&s, &states(&[TaskState::InProgress])).await,
        [t5, t4]
    );
    assert_eq!(listed(&s, &states(&[TaskState::Cancelled])).await, [t7, t3]);
    assert_eq!(
        listed(&s, &states(&[TaskState::Complete, TaskState::Error])).await,
        [t2, t1]
    );
    assert_eq!(listed(&s, &states(&[])).await.len(), 7, "no states: any");

    let template = |t: &str| TaskFilter {
        template: Some(t.to_owned()),
        ..f()
    };
    assert_eq!(listed(&s, &template("tests/alpha@1.0.0")).await, [t5, t1]);
    assert_eq!(listed(&s, &template("tests/alpha@2.0.0")).await, [t7, t2]);
    assert_eq!(listed(&s, &template("tests/alpha")).await, [t7, t5, t2, t1]);
    assert_eq!(listed(&s, &template("tests/beta")).await, [t6, t4, t3]);
    for nothing in [
        "tests/alpha@9.9.9",
        "tests/gamma",
        "tests",
        "alpha",
        "tests/alph",
    ] {
        assert_eq!(listed(&s, &template(nothing)).await, NONE, "{nothing}");
    }

    // Only string elements of a `tags` array count.
    let tag = |t: &str| TaskFilter {
        tag: Some(t.to_owned()),
        ..f()
    };
    assert_eq!(listed(&s, &tag("red")).await, [t6, t2, t1]);
    assert_eq!(listed(&s, &tag("blue")).await, [t5, t1]);
    assert_eq!(listed(&s, &tag("7")).await, NONE);
    assert_eq!(listed(&s, &tag("green")).await, NONE);

    let identity = |k: &str| TaskFilter {
        identity_key: Some(k.to_owned()),
        ..f()
    };
    assert_eq!(listed(&s, &identity("order-1")).await, [t1]);
    assert_eq!(listed(&s, &identity("order-4")).await, [t4]);
    assert_eq!(listed(&s, &identity("order-2")).await, NONE);

    // Ranges are [after, before).
    let created = |after: Option<i64>, before: Option<i64>| TaskFilter {
        created_after: after.map(at),
        created_before: before.map(at),
        ..f()
    };
    assert_eq!(listed(&s, &created(Some(10), Some(40))).await, [t4, t3, t2]);
    assert_eq!(listed(&s, &created(Some(500), None)).await, [t7, t6]);
    assert_eq!(listed(&s, &created(None, Some(10))).await, [t1]);
    assert_eq!(listed(&s, &created(Some(40), Some(40))).await, NONE);

    // Unfinished tasks are in no finished range.
    let finished = |after: Option<i64>, before: Option<i64>| TaskFilter {
        finished_after: after.map(at),
        finished_before: before.map(at),
        ..f()
    };
    assert_eq!(listed(&s, &finished(Some(300), Some(700))).await, [t3, t2]);
    assert_eq!(listed(&s, &finished(Some(400), None)).await, [t7, t3]);
    assert_eq!(listed(&s, &finished(None, Some(300))).await, [t1]);
    assert_eq!(listed(&s, &finished(Some(0), None)).await, [t7, t3, t2, t1]);
}

async fn task_filters_combine<S: Backend>(s: S) {
    let [t1, t2, _t3, t4, t5, t6, t7] = seven_tasks(&s).await;
    let alpha_red = TaskFilter {
        template: Some("tests/alpha".into()),
        tag: Some("red".into()),
        ..TaskFilter::default()
    };
    assert_eq!(listed(&s, &alpha_red).await, [t2, t1]);
    let complete = TaskFilter {
        states: vec![TaskState::Complete],
        ..alpha_red.clone()
    };
    assert_eq!(listed(&s, &complete).await, [t1]);
    let blue_running = TaskFilter {
        states: vec![TaskState::InProgress],
        tag: Some("blue".into()),
        ..TaskFilter::default()
    };
    assert_eq!(listed(&s, &blue_running).await, [t5]);
    let recent_beta = TaskFilter {
        states: vec![TaskState::InProgress, TaskState::Pending],
        template: Some("tests/beta".into()),
        created_after: Some(at(25)),
        ..TaskFilter::default()
    };
    assert_eq!(listed(&s, &recent_beta).await, [t6, t4]);
    let alpha_finished = TaskFilter {
        template: Some("tests/alpha".into()),
        finished_after: Some(at(250)),
        finished_before: Some(at(700)),
        ..TaskFilter::default()
    };
    assert_eq!(listed(&s, &alpha_finished).await, [t2]);
    let nothing = TaskFilter {
        identity_key: Some("order-1".into()),
        states: vec![TaskState::Error],
        ..TaskFilter::default()
    };
    assert_eq!(listed(&s, &nothing).await, NONE);

    // Filters and pages together: a cursor continues the same filtered sequence.
    let alpha = TaskFilter {
        template: Some("tests/alpha".into()),
        ..TaskFilter::default()
    };
    let walked = pages(&s, &alpha, 3).await;
    let ids: Vec<Vec<TaskId>> = walked
        .iter()
        .map(|p| p.items.iter().map(|t| t.id).collect())
        .collect();
    assert_eq!(ids, [vec![t7, t5, t2], vec![t1]]);
    assert_eq!(walked[0].next, Some(t2));
    let two = pages(&s, &alpha_red, 1).await;
    assert_eq!(two.len(), 2);
    assert_eq!(two[1].items[0].id, t1);
}

async fn page_limits_outside_one_to_500_are_refused<S: Backend>(s: S) {
    let t = versioned("limits", "1.0.0");
    s.register_template(&t).await.unwrap();
    create(&s, &t, json!({}), None, at(0)).await;
    for limit in [0, MAX_PAGE + 1] {
        let err = s
            .list_tasks(&TaskFilter::default(), request(None, limit))
            .await
            .unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains("limit"), "{err}");
        let err = s.list_templates(None, limit).await.unwrap_err();
        assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
        assert!(err.to_string().contains("limit"), "{err}");
    }
    for limit in [1, MAX_PAGE] {
        let page = s
            .list_tasks(&TaskFilter::default(), request(None, limit))
            .await
            .unwrap();
        assert_eq!((page.items.len(), page.next), (1, None));
        assert_eq!(s.list_templates(None, limit).await.unwrap().items.len(), 1);
    }
}

async fn templates_page_in_key_order<S: Backend>(s: S) {
    // Registered out of order; keys compare bytewise (`Zeta` before `alpha`, `1.10.0` before
    // `1.9.0`), whatever the database's collation.
    let registered: Vec<Template> = [
        ("beta", "1.0.0"),
        ("alpha", "1.9.0"),
        ("Zeta", "1.0.0"),
        ("alpha", "1.10.0"),
        ("alpha_b", "1.0.0"),
    ]
    .iter()
    .map(|(n, v)| versioned(n, v))
    .collect();
    let mut ids = std::collections::BTreeMap::new();
    for t in &registered {
        ids.insert(t.key(), s.register_template(t).await.unwrap().template_id);
    }
    let want = [
        "tests/Zeta@1.0.0",
        "tests/alpha@1.10.0",
        "tests/alpha@1.9.0",
        "tests/alpha_b@1.0.0",
        "tests/beta@1.0.0",
    ];

    let mut keys = Vec::new();
    let mut sizes = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = s.list_templates(after.as_deref(), 2).await.unwrap();
        sizes.push(page.items.len());
        for t in &page.items {
            let source = registered.iter().find(|r| r.key() == t.key).unwrap();
            assert_eq!(t.template_id, ids[&t.key]);
            assert_eq!(
                (t.namespace.as_str(), t.name.as_str(), t.version.as_str()),
                (
                    "tests",
                    source.name.as_str(),
                    source.version.to_string().as_str()
                )
            );
            assert_eq!(t.description, source.description);
            assert_eq!(t.step_count, 1);
            keys.push(t.key.clone());
        }
        if let Some(next) = &page.next {
            assert_eq!(Some(next), page.items.last().map(|t| &t.key));
        }
        after = page.next;
        if after.is_none() {
            break;
        }
    }
    assert_eq!(sizes, [2, 2, 1]);
    assert_eq!(keys, want);
    assert_eq!(keys.iter().collect::<BTreeSet<_>>().len(), want.len());

    // `after` is exclusive and need not be a registered key.
    let page = s
        .list_templates(Some("tests/alpha@1.9.0"), 10)
        .await
        .unwrap();
    let got: Vec<&str> = page.items.iter().map(|t| t.key.as_str()).collect();
    assert_eq!((got.as_slice(), page.next), (&want[3..], None));
    let page = s.list_templates(Some("tests/b"), 10).await.unwrap();
    assert_eq!(page.items.len(), 1);
    assert!(
        s.list_templates(Some("tests/zz"), 10)
            .await
            .unwrap()
            .items
            .is_empty()
    );
    // Exactly a full page: nothing follows.
    let page = s.list_templates(None, 5).await.unwrap();
    assert_eq!((page.items.len(), page.next), (5, None));
}

async fn api_tokens_are_created_found_and_revoked<S: Backend>(s: S) {
    let ci = NewToken {
        name: "ci".into(),
        hash: "aa".repeat(32),
        permissions: vec!["tasks:read".into(), "tasks:write".into()],
        expires_at: Some(at(1_000)),
    };
    let admin = NewToken {
        name: "admin".into(),
        hash: "bb".repeat(32),
        permissions: vec!["*".into()],
        expires_at: None,
    };
    let ci_row = s.create_token(&ci, at(0)).await.unwrap();
    assert_eq!(
        (
            ci_row.name.as_str(),
            ci_row.hash.as_str(),
            &ci_row.permissions,
            ci_row.created_at,
            ci_row.expires_at,
            ci_row.revoked_at
        ),
        (
            "ci",
            ci.hash.as_str(),
            &ci.permissions,
            at(0),
            Some(at(1_000)),
            None
        )
    );
    let admin_row = s.create_token(&admin, at(5)).await.unwrap();
    assert!(admin_row.id > ci_row.id);
    assert_eq!((admin_row.expires_at, admin_row.created_at), (None, at(5)));

    // A name in use is refused by name, and nothing is written.
    let again = NewToken {
        hash: "cc".repeat(32),
        ..ci.clone()
    };
    let err = s.create_token(&again, at(6)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::InvalidInput("a token named 'ci' exists".into())
    );
    assert_eq!(s.token_by_hash(&again.hash).await.unwrap(), None);
    let nameless = NewToken {
        name: String::new(),
        hash: "dd".repeat(32),
        ..ci.clone()
    };
    let err = s.create_token(&nameless, at(6)).await.unwrap_err();
    assert!(matches!(err, StoreError::InvalidInput(_)), "{err}");
    assert!(err.to_string().contains("token name"), "{err}");
    // A hash in use is refused too, without repeating it.
    let same_secret = NewToken {
        name: "ci-2".into(),
        ..ci.clone()
    };
    let err = s.create_token(&same_secret, at(6)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::InvalidInput("token 'ci-2': another token has the same hash".into())
    );
    assert_eq!(s.count("SELECT count(*) FROM api_tokens").await.unwrap(), 2);

    assert_eq!(
        s.token_by_hash(&ci.hash).await.unwrap(),
        Some(ci_row.clone())
    );
    assert_eq!(s.token_by_hash("ff").await.unwrap(), None);
    assert_eq!(
        s.list_tokens().await.unwrap(),
        [ci_row.clone(), admin_row.clone()]
    );
    assert!(ci_row.is_valid_at(at(999)));
    assert!(!ci_row.is_valid_at(at(1_000)), "expired at expires_at");
    assert!(admin_row.is_valid_at(at(10_000_000)));

    assert!(s.revoke_token("ci", at(50)).await.unwrap());
    assert!(
        !s.revoke_token("ci", at(60)).await.unwrap(),
        "already revoked"
    );
    assert!(!s.revoke_token("nobody", at(60)).await.unwrap());
    let revoked = s.token_by_hash(&ci.hash).await.unwrap().unwrap();
    assert_eq!(
        revoked.revoked_at,
        Some(at(50)),
        "the first revocation's instant"
    );
    assert_eq!(
        revoked,
        TokenRow {
            revoked_at: Some(at(50)),
            ..ci_row.clone()
        }
    );
    assert!(!revoked.is_valid_at(at(51)));
    assert_eq!(s.token_by_hash(&admin.hash).await.unwrap(), Some(admin_row));
    // A revoked token's name stays taken.
    let err = s.create_token(&again, at(70)).await.unwrap_err();
    assert_eq!(
        err,
        StoreError::InvalidInput("a token named 'ci' exists".into())
    );
    assert_eq!(s.list_tokens().await.unwrap().len(), 2);
}

/// The counts by state are the listing's, filter by filter (a filter's states aside).
async fn counts_by_state_match_the_listing<S: Backend>(s: S) {
    let [t1, ..] = seven_tasks(&s).await;
    let all = s.count_tasks(&TaskFilter::default()).await.unwrap();
    assert_eq!(
        all,
        TaskCounts {
            pending: 1,
            in_progress: 2,
            complete: 1,
            error: 1,
            cancelled: 2
        }
    );
    assert_eq!(all.total(), 7);
    let filters = [
        TaskFilter::default(),
        TaskFilter {
            template: Some("tests/alpha".into()),
            ..TaskFilter::default()
        },
        TaskFilter {
            template: Some("tests/beta@1.0.0".into()),
            tag: Some("red".into()),
            ..TaskFilter::default()
        },
        TaskFilter {
            created_after: Some(at(10)),
            created_before: Some(at(600)),
            ..TaskFilter::default()
        },
        TaskFilter {
            finished_after: Some(at(0)),
            ..TaskFilter::default()
        },
        TaskFilter {
            identity_key: Some("order-1".into()),
            // Ignored: every state is counted.
            states: vec![TaskState::Pending],
            ..TaskFilter::default()
        },
        TaskFilter {
            identity_key: Some("nobody".into()),
            ..TaskFilter::default()
        },
    ];
    for filter in filters {
        let counts = s.count_tasks(&filter).await.unwrap();
        for state in TaskState::ALL {
            let one = TaskFilter {
                states: vec![state],
                ..filter.clone()
            };
            let n = listed(&s, &one).await.len() as u64;
            assert_eq!(counts.get(state), n, "{state:?} of {filter:?}");
        }
    }
    let t1_only = TaskFilter {
        identity_key: Some("order-1".into()),
        ..TaskFilter::default()
    };
    assert_eq!(s.count_tasks(&t1_only).await.unwrap().complete, 1, "{t1}");
}

/// A task's attempts are its steps' attempts, in start order.
async fn a_tasks_attempts_are_its_steps_in_start_order<S: Backend>(s: S) {
    let tasks = seven_tasks(&s).await;
    let t = template(
        "namespace: tests\nname: chain\nversion: 1.0.0\nsteps:\n  - { name: a, handler: noop@1.0.0 }\n  \
         - { name: b, handler: noop@1.0.0, depends_on: [a] }\n",
    );
    s.register_template(&t).await.unwrap();
    let chain = create(&s, &t, json!({}), None, at(1000)).await;
    // Other tasks' steps are claimed too: keep the chain's.
    let of_chain = |claimed: Vec<ClaimedStep>| -> Vec<ClaimedStep> {
        claimed.into_iter().filter(|c| c.task_id == chain).collect()
    };
    let a = of_chain(claim_all(&s, at(1100)).await);
    assert_eq!(a.len(), 1);
    s.complete(&[completion(&a[0])], at(1200)).await.unwrap();
    let b = of_chain(claim_all(&s, at(1300)).await);
    assert_eq!(b.len(), 1);
    s.complete(&[completion(&b[0])], at(1400)).await.unwrap();
    let attempts = s.attempts_of_task(chain).await.unwrap();
    let order: Vec<(StepId, DateTime<Utc>)> =
        attempts.iter().map(|a| (a.step_id, a.started_at)).collect();
    assert_eq!(
        order,
        [(a[0].step_id, at(1100)), (b[0].step_id, at(1300))],
        "{attempts:?}"
    );
    for task in tasks.into_iter().chain([chain]) {
        let mut expected = Vec::new();
        for step in s.steps_of_task(task).await.unwrap() {
            expected.extend(s.attempts_of_step(step.id).await.unwrap());
        }
        expected.sort_by_key(|a| (a.started_at, a.step_id, a.attempt_no));
        assert_eq!(s.attempts_of_task(task).await.unwrap(), expected, "{task}");
    }
    assert_eq!(s.attempts_of_task(TaskId::new(1 << 40)).await.unwrap(), []);
}

tasker_tests::on_both_backends!(
    counts_by_state_match_the_listing,
    a_tasks_attempts_are_its_steps_in_start_order,
    task_pages_are_gap_free_and_stable,
    each_task_filter_alone,
    task_filters_combine,
    page_limits_outside_one_to_500_are_refused,
    templates_page_in_key_order,
    api_tokens_are_created_found_and_revoked,
);
