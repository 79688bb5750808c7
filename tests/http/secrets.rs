//! Host-held secrets: `{{secret:NAME}}` in a header becomes the value on the wire to a
//! granted URL only, and the value is nowhere in what the attempt reports (the server echoes
//! it back, so the guest's output holds it until the host redacts it), nor, through the
//! engine, in any row of either store.

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use chrono::Utc;
use serde_json::{Value, json};
use tasker_core::state::StepState;
use tasker_core::template::Template;
use tasker_sandbox::AttemptLimits;
use tasker_store::{NewTask, PgStore, SqliteStore, Store};
use tasker_tests::http_server::TestHttp;
use tasker_tests::{Backend, on_both_backends, wait_until_done, worker_config};
use tokio_util::sync::CancellationToken;

use crate::*;

/// The variable the grants read the secret from.
const VAR: &str = "TASKER_TEST_HTTP_SECRET";
const PLACEHOLDER: &str = "{{secret:API_KEY}}";

/// The secret's value: random per run, so no other text can match it, and set in this
/// process's environment (where the sandbox and the in-process worker read it) once.
fn secret() -> &'static str {
    static S: OnceLock<String> = OnceLock::new();
    S.get_or_init(|| {
        let v = format!("tk-secret-{:032x}", rand::random::<u128>());
        // SAFETY: set once, before any attempt reads this variable (every test granting
        // it gets its grants through `secret_grants` or calls this first).
        unsafe { std::env::set_var(VAR, &v) };
        v
    })
}

fn secret_grants(s: &TestHttp, paths: &[&str]) -> tasker_sandbox::AttemptGrants {
    secret();
    let mut g = grants(vec![rule(&s.http_url(""), &[], paths)]);
    g.secrets.insert("API_KEY".into(), format!("env:{VAR}"));
    g
}

/// Whether `text` holds the secret, as text or as the hex a database shows a blob in.
fn holds_secret(text: &str) -> bool {
    let hex: String = secret().bytes().map(|b| format!("{b:02X}")).collect();
    text.contains(secret()) || text.to_ascii_uppercase().contains(&hex)
}

#[tokio::test]
async fn the_secret_reaches_the_server_and_nothing_the_attempt_reports() {
    let s = TestHttp::start().await;
    let out = run_ok(
        sandbox(),
        request(
            "http_probe",
            json!({
                "url": s.http_url("/echo"),
                "headers": { "authorization": format!("Bearer {PLACEHOLDER}") },
            }),
            AttemptLimits::default(),
            secret_grants(&s, &["/echo"]),
        ),
    )
    .await;
    assert_eq!(
        s.headers_seen("authorization"),
        vec![format!("Bearer {}", secret())]
    );
    // The server echoed it into the body; the host put the placeholder back.
    let body = out.output["body"].as_str().unwrap();
    assert!(
        body.contains(&format!("Bearer {PLACEHOLDER}")),
        "the echoed header is redacted to the placeholder: {body}"
    );
    let output = serde_json::to_string(&out.output).unwrap();
    let report = serde_json::to_string(&out.report).unwrap();
    assert!(
        !holds_secret(&output),
        "the output holds the secret: {output}"
    );
    assert!(
        !holds_secret(&report),
        "the report holds the secret: {report}"
    );
    assert_eq!(only_record(&out.report.http).status, Some(200));
}

#[tokio::test]
async fn a_placeholder_to_an_ungranted_url_or_an_unknown_secret_sends_nothing() {
    let s = TestHttp::start().await;
    let cases = [
        // A path the grant does not cover.
        (s.http_url("/status/200"), PLACEHOLDER, "/status/200"),
        // Another origin.
        (
            format!("http://127.0.0.1:{}/echo", s.tls_port()),
            PLACEHOLDER,
            "no http grant",
        ),
        // A secret the step was not given.
        (s.http_url("/echo"), "{{secret:OTHER_KEY}}", "OTHER_KEY"),
    ];
    for (url, placeholder, why) in cases {
        let f = run_err(
            sandbox(),
            request(
                "http_probe",
                json!({ "url": url, "headers": { "authorization": format!("Bearer {placeholder}") } }),
                AttemptLimits::default(),
                secret_grants(&s, &["/echo"]),
            ),
        )
        .await;
        assert_kind(&f, "capability_denied");
        assert_http_denial(&f, &[why]);
        assert!(only_record(&f.report.http).refused);
        let report = serde_json::to_string(&f.report).unwrap();
        assert!(!holds_secret(&report), "{report}");
        assert!(!holds_secret(&f.error.to_string()), "{}", f.error);
    }
    assert_eq!((s.count(), s.connections()), (0, 0), "nothing was sent");
    assert!(s.headers_seen("authorization").is_empty());
}

#[tokio::test]
async fn a_secret_from_a_missing_variable_is_a_config_error_naming_it() {
    let s = TestHttp::start().await;
    let mut g = grants(vec![rule(&s.http_url(""), &[], &[])]);
    g.secrets.insert(
        "API_KEY".into(),
        "env:TASKER_TEST_HTTP_SECRET_NOT_SET".into(),
    );
    let f = run_err(
        sandbox(),
        request(
            "http_probe",
            json!({ "url": s.http_url("/echo"), "headers": { "authorization": PLACEHOLDER } }),
            AttemptLimits::default(),
            g,
        ),
    )
    .await;
    assert_kind(&f, "config");
    let msg = f.error.to_string();
    assert!(msg.contains("TASKER_TEST_HTTP_SECRET_NOT_SET"), "{msg}");
    assert!(msg.contains("API_KEY"), "{msg}");
    assert_eq!(s.count(), 0);
}

/// Every row of every table, as text, with its table's name: what a store could leak.
trait Dump {
    fn dump(&self) -> impl Future<Output = Vec<(String, String)>> + Send;
}

impl Dump for PgStore {
    async fn dump(&self) -> Vec<(String, String)> {
        let tables: Vec<String> = sqlx::query_scalar(
            "SELECT table_name::text FROM information_schema.tables \
             WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'",
        )
        .fetch_all(self.pool())
        .await
        .unwrap();
        let mut rows = Vec::new();
        for t in tables {
            let all: Vec<String> = sqlx::query_scalar(&format!("SELECT r::text FROM \"{t}\" r"))
                .fetch_all(self.pool())
                .await
                .unwrap();
            rows.extend(all.into_iter().map(|r| (t.clone(), r)));
        }
        rows
    }
}

impl Dump for SqliteStore {
    async fn dump(&self) -> Vec<(String, String)> {
        let tables: Vec<String> =
            sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'table'")
                .fetch_all(self.reader())
                .await
                .unwrap();
        let mut rows = Vec::new();
        for t in tables {
            let columns: Vec<String> =
                sqlx::query_scalar(&format!("SELECT name FROM pragma_table_info('{t}')"))
                    .fetch_all(self.reader())
                    .await
                    .unwrap();
            if columns.is_empty() {
                continue;
            }
            // quote(): text as text, blobs (JSONB) as hex; NULL as NULL.
            let row = columns
                .iter()
                .map(|c| format!("quote(\"{c}\")"))
                .collect::<Vec<_>>()
                .join(" || ' | ' || ");
            let all: Vec<String> = sqlx::query_scalar(&format!("SELECT {row} FROM \"{t}\""))
                .fetch_all(self.reader())
                .await
                .unwrap();
            rows.extend(all.into_iter().map(|r| (t.clone(), r)));
        }
        rows
    }
}

/// Through the engine: one step calls the echo endpoint with the secret, one is rate
/// limited once (a failed attempt, then a retry) with it; the task completes, the server saw
/// the value every time, and no row of the store holds it.
async fn the_secret_is_in_no_row_of_the_store<S: Backend + Dump>(store: S) {
    let s = TestHttp::start().await;
    let secret = secret();
    let auth = format!("Bearer {PLACEHOLDER}");
    let grants = format!(
        "{{http: [{{url: \"{}\"}}], secrets: {{API_KEY: \"env:{VAR}\"}}}}",
        s.http_url("")
    );
    let yaml = format!(
        "namespace: tests\nname: http_secret\nversion: 1.0.0\nsteps:\n\
         \x20 - name: call\n    handler: http_probe@0.1.0\n    grants: {grants}\n\
         \x20   config: {{url: \"{echo}\", headers: {{authorization: \"{auth}\"}}}}\n\
         \x20 - name: limited\n    handler: http_probe@0.1.0\n    grants: {grants}\n\
         \x20   retry: {{max_attempts: 3, max_retry_after_ms: 5000}}\n\
         \x20   config: {{url: \"{flaky}\", check_status: true, headers: {{authorization: \"{auth}\"}}}}\n",
        echo = s.http_url("/echo"),
        flaky = s.http_url("/flaky/engine?fail=1&retry_after=1"),
    );
    let template = Template::from_yaml(&yaml).unwrap_or_else(|e| panic!("{e}\n{yaml}"));
    let any = Arc::new(store.any());
    any.register_template(&template).await.unwrap();

    let stop = CancellationToken::new();
    let node = tasker_runtime::Node::wasm(any.clone(), sandbox(), worker_config("http"))
        .start(stop.clone());
    let task = any
        .create_task(&NewTask::new(template.key(), json!({})), Utc::now())
        .await
        .unwrap()
        .task_id;
    wait_until_done(&store, &[task], Duration::from_secs(120)).await;
    stop.cancel();
    node.join().await;

    let steps = any.steps_of_task(task).await.unwrap();
    for st in &steps {
        assert_eq!(st.state, StepState::Complete, "{st:?}");
    }
    let attempts = any.attempts_of_task(task).await.unwrap();
    assert_eq!(attempts.len(), 3, "{attempts:?}");
    assert_eq!(
        s.headers_seen("authorization"),
        vec![format!("Bearer {secret}"); 3],
        "the server saw the secret on every request"
    );

    let rows = store.dump().await;
    let leaks: Vec<&(String, String)> = rows.iter().filter(|(_, r)| holds_secret(r)).collect();
    assert!(leaks.is_empty(), "rows holding the secret: {leaks:#?}");
    // The check read the rows that matter: the rate-limited attempt's failure is there.
    assert!(
        rows.iter()
            .any(|(t, r)| t == "attempts" && r.contains("429")),
        "the 429 attempt is not in the attempts table"
    );
    // The server echoed the header into the step's result; it was stored redacted.
    let echoed = format!("Bearer {PLACEHOLDER}");
    // Every request is recorded with its attempt: the rate-limited step's two attempts
    // saw 429 and then 200.
    let limited = steps.iter().find(|st| st.name == "limited").unwrap();
    let logs = any.attempt_logs(limited.id, None).await.unwrap();
    let statuses: Vec<Vec<Option<u16>>> = logs
        .iter()
        .map(|l| l.log.http.iter().map(|h| h.status).collect())
        .collect();
    assert_eq!(statuses, vec![vec![Some(429)], vec![Some(200)]]);
    assert_eq!(logs[0].log.http[0].url, s.http_url("/flaky/engine"));
    let call = steps.iter().find(|st| st.name == "call").unwrap();
    let body = call.result.as_ref().unwrap()["body"].as_str().unwrap();
    let echo: Value = serde_json::from_str(body).unwrap();
    assert_eq!(echo["headers"]["authorization"], echoed.as_str());
}

on_both_backends!(the_secret_is_in_no_row_of_the_store);
