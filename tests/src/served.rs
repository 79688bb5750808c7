//! A `tasker serve` or `tasker dev` child process on a free loopback port, and a small
//! client of its JSON API: what the end-to-end and browser suites talk to.

use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::Stdio;
use std::sync::mpsc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::cli::{CALL_BOUND, Db, KillOnDrop, tasker};

/// The longest a wait for a served task (or a page, in the browser suite) takes before it
/// fails.
pub const WAIT: Duration = Duration::from_secs(60);
/// How often a wait looks again.
pub(crate) const POLL: Duration = Duration::from_millis(100);

/// `tasker <command> --listen 127.0.0.1:0 <args>` on `db` with the plugins of `plugins`,
/// once it prints where it listens: the child (killed on drop) and its base URL. Its
/// stderr goes to the test's, prefixed.
pub fn listening(db: &Db, plugins: &Path, command: &str, args: &[&str]) -> (KillOnDrop, String) {
    let mut c = tasker(db, plugins);
    c.args([command, "--listen", "127.0.0.1:0"])
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("tasker starts");
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    let tag = command.to_owned();
    // Keeps draining stderr after the address line, so the server never blocks on it.
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("{tag}: {line}");
            if let Some(rest) = line.strip_prefix("serving ") {
                let _ = tx.send(rest.split_whitespace().next().unwrap_or("").to_owned());
            }
        }
    });
    let base = rx
        .recv_timeout(CALL_BOUND)
        .unwrap_or_else(|_| panic!("tasker {command} prints the address it listens on"));
    (KillOnDrop(child), base)
}

/// A client of the JSON API, with a bearer token or none (auth off).
#[derive(Clone)]
pub struct Api {
    pub base: String,
    pub token: Option<String>,
    http: reqwest::Client,
}

impl Api {
    pub fn new(base: &str, token: Option<&str>) -> Api {
        Api {
            base: base.to_owned(),
            token: token.map(str::to_owned),
            http: reqwest::Client::new(),
        }
    }

    fn request(&self, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
        let r = self.http.request(method, format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.bearer_auth(t),
            None => r,
        }
    }

    async fn answer(r: reqwest::RequestBuilder, what: &str) -> (reqwest::StatusCode, Value) {
        let res = r.send().await.unwrap_or_else(|e| panic!("{what}: {e}"));
        let status = res.status();
        (status, res.json().await.unwrap_or(Value::Null))
    }

    pub async fn get(&self, path: &str) -> Value {
        let (s, v) = Self::answer(self.request(reqwest::Method::GET, path), path).await;
        assert!(s.is_success(), "GET {path}: {s} {v}");
        v
    }

    pub async fn post(&self, path: &str, body: Value) -> (reqwest::StatusCode, Value) {
        Self::answer(self.request(reqwest::Method::POST, path).json(&body), path).await
    }

    /// Registers a template (YAML).
    pub async fn register(&self, yaml: &str) {
        let r = self
            .request(reqwest::Method::POST, "/v1/templates")
            .header("content-type", "application/yaml")
            .body(yaml.to_owned());
        let (s, v) = Self::answer(r, "POST /v1/templates").await;
        assert!(s.is_success(), "registering a template: {s} {v}\n{yaml}");
    }

    /// Submits a task of `template` (`ns/name@version`) with `context`; its id.
    pub async fn submit(&self, template: &str, context: Value) -> i64 {
        let (s, v) = self
            .post(
                "/v1/tasks",
                json!({"template": template, "context": context}),
            )
            .await;
        assert!(s.is_success(), "submitting {template}: {s} {v}");
        v["id"].as_i64().expect("a task id")
    }

    /// The task's detail (`GET /v1/tasks/{id}`).
    pub async fn task(&self, id: i64) -> Value {
        self.get(&format!("/v1/tasks/{id}")).await
    }

    /// The id of the task's step `name`.
    pub async fn step_id(&self, task: i64, name: &str) -> i64 {
        let t = self.task(task).await;
        t["steps"]
            .as_array()
            .into_iter()
            .flatten()
            .find(|s| s["name"] == name)
            .and_then(|s| s["id"].as_i64())
            .unwrap_or_else(|| panic!("no step {name} in {t}"))
    }

    /// Polls until the task is in `state`, failing after [`WAIT`].
    pub async fn wait_task(&self, id: i64, state: &str) -> Value {
        let t0 = Instant::now();
        loop {
            let t = self.task(id).await;
            if t["state"] == state {
                return t;
            }
            assert!(
                t0.elapsed() < WAIT,
                "task {id} is not {state} after {WAIT:?}: {t}"
            );
            tokio::time::sleep(POLL).await;
        }
    }
}
