//! A real `tasker serve` router on a loopback port, on either store, with a real HTTP
//! client: what the server suite talks to.

use std::sync::Arc;
use std::time::Duration;

use chrono::Utc;
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tasker_engine::EventBus;
use tasker_runtime::Node;
use tasker_sandbox::{Sandbox, SandboxConfig};
use tasker_server::{AppState, AuthMode, ServerConfig};
use tasker_store::AnyStore;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::cli::{cache_dir, plugin_dir};

/// The body limit of test servers: small, so the over-limit case is cheap.
pub const TEST_BODY_LIMIT: usize = 64 * 1024;

/// A running server. Stops (gracefully) when dropped.
pub struct TestServer {
    pub base: String,
    pub store: AnyStore,
    pub client: reqwest::Client,
    /// A token holding `*`.
    pub admin: String,
    stop: CancellationToken,
    serving: Option<JoinHandle<()>>,
    workers: Option<tasker_runtime::RunningNode>,
}

/// An answer: status, headers and the body as JSON (Null when empty or not JSON).
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    /// The `pointer`s of a problem's `errors`.
    pub fn pointers(&self) -> Vec<String> {
        self.body["errors"]
            .as_array()
            .map(|a| {
                a.iter()
                    .filter_map(|e| e["pointer"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default()
    }
}

/// What a test server runs besides the API.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum With {
    ApiOnly,
    /// An in-process worker running the real plugins (plugins/dist).
    Workers,
}

impl TestServer {
    /// A server with token auth on `store`, and an admin token.
    pub async fn start(store: impl Into<AnyStore>, with: With) -> TestServer {
        Self::start_in(store, with, &plugin_dir()).await
    }

    /// The same on another plugin directory (one a test may write into).
    pub async fn start_in(
        store: impl Into<AnyStore>,
        with: With,
        plugins: &std::path::Path,
    ) -> TestServer {
        let store: AnyStore = store.into();
        let mut cfg = SandboxConfig::new(plugins);
        cfg.cache_dir = Some(cache_dir());
        let (sandbox, _) = Sandbox::new(cfg).await.expect("a sandbox on plugins/dist");
        let bus = EventBus::default();
        // The process's recorder, before any worker is built (their handles reach it).
        let metrics = tasker_server::metrics::install().expect("a metrics recorder");
        let state = AppState::new(
            Arc::new(store.clone()),
            sandbox.clone(),
            bus.clone(),
            ServerConfig {
                auth: AuthMode::Tokens,
                max_body_bytes: TEST_BODY_LIMIT,
                ..ServerConfig::default()
            },
        )
        .with_metrics(metrics);
        // Unique: several test servers may share one database.
        static SERVERS: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!(
            "admin-{}",
            SERVERS.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
        );
        let (_, admin) =
            tasker_server::issue_token(&store, &name, vec!["*".into()], None, Utc::now())
                .await
                .expect("an admin token");
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("a loopback port");
        let base = format!("http://{}", listener.local_addr().unwrap());
        let stop = CancellationToken::new();
        let serving = tokio::spawn({
            let stop = stop.clone();
            async move {
                tasker_server::serve(listener, state, async move { stop.cancelled().await })
                    .await
                    .expect("the server runs");
            }
        });
        let workers = (with == With::Workers).then(|| {
            Node::wasm(
                Arc::new(store.clone()),
                &sandbox,
                crate::worker_config("server-test"),
            )
            .with_bus(bus)
            .start(stop.clone())
        });
        TestServer {
            base,
            store,
            client: reqwest::Client::new(),
            admin,
            stop,
            serving: Some(serving),
            workers,
        }
    }

    /// A new token with exactly these permissions.
    pub async fn token(&self, permissions: &[&str]) -> String {
        static N: std::sync::atomic::AtomicUsize = std::sync::atomic::AtomicUsize::new(0);
        let name = format!("t{}", N.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        tasker_server::issue_token(
            &self.store,
            &name,
            permissions.iter().map(|p| p.to_string()).collect(),
            None,
            Utc::now(),
        )
        .await
        .expect("a token")
        .1
    }

    /// A request with `token` (None: no Authorization header) and an optional body, JSON
    /// unless `content_type` says otherwise.
    pub async fn call(
        &self,
        method: Method,
        path: &str,
        token: Option<&str>,
        body: Option<Body<'_>>,
    ) -> Answer {
        let mut req = self.client.request(method, format!("{}{path}", self.base));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        match body {
            Some(Body::Json(v)) => req = req.json(v),
            Some(Body::Raw(ct, bytes)) => {
                req = req.header("content-type", ct).body(bytes.to_vec());
            }
            None => {}
        }
        let res = req.send().await.expect("the server answers");
        let status = res.status();
        let headers = res.headers().clone();
        // An event stream may never end: its body is read with `sse`, not here.
        let streaming = headers
            .get("content-type")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|ct| ct.starts_with("text/event-stream"));
        if streaming {
            return Answer {
                status,
                headers,
                body: Value::Null,
            };
        }
        let bytes = res.bytes().await.expect("a body");
        let body = serde_json::from_slice(&bytes).unwrap_or(Value::Null);
        Answer {
            status,
            headers,
            body,
        }
    }

    /// GET as admin.
    pub async fn get(&self, path: &str) -> Answer {
        self.call(Method::GET, path, Some(&self.admin.clone()), None)
            .await
    }

    /// POST a JSON body as admin.
    pub async fn post(&self, path: &str, body: &Value) -> Answer {
        self.call(
            Method::POST,
            path,
            Some(&self.admin.clone()),
            Some(Body::Json(body)),
        )
        .await
    }

    /// Register a YAML template as admin; panics unless it is accepted.
    pub async fn register(&self, yaml: &str) -> Answer {
        let a = self
            .call(
                Method::POST,
                "/v1/templates",
                Some(&self.admin.clone()),
                Some(Body::Raw("application/yaml", yaml.as_bytes())),
            )
            .await;
        assert!(a.status.is_success(), "{a:?}");
        a
    }

    /// Polls `GET path` until `done` holds for its body, failing after `limit`.
    pub async fn wait_for(
        &self,
        path: &str,
        limit: Duration,
        done: impl Fn(&Value) -> bool,
    ) -> Value {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let a = self.get(path).await;
            if a.status == StatusCode::OK && done(&a.body) {
                return a.body;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "GET {path} did not reach the condition within {limit:?}: {a:?}"
            );
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
    }

    /// Stop: the server finishes its requests, the workers their steps.
    pub async fn stop(mut self) {
        self.stop.cancel();
        if let Some(s) = self.serving.take() {
            s.await.expect("the server stops");
        }
        if let Some(w) = self.workers.take() {
            w.join().await;
        }
    }
}

impl Drop for TestServer {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// A request body.
pub enum Body<'a> {
    Json(&'a Value),
    /// Content type and bytes, as given.
    Raw(&'a str, &'a [u8]),
}

/// One Server-Sent Event.
#[derive(Debug, Clone, PartialEq)]
pub struct SseEvent {
    pub id: String,
    pub event: String,
    pub data: Value,
}

/// An open SSE stream, read event by event.
pub struct SseStream {
    response: reqwest::Response,
    buf: String,
}

impl SseStream {
    /// The next event (comments and keep-alives skipped); None when the server ended the
    /// stream. Fails the test if nothing comes within `limit`.
    pub async fn next(&mut self, limit: Duration) -> Option<SseEvent> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            if let Some(end) = self.buf.find("\n\n") {
                let block: String = self.buf.drain(..end + 2).collect();
                let (mut id, mut event, mut data) = (String::new(), String::new(), String::new());
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("id:") {
                        id = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("event:") {
                        event = v.trim_start().to_owned();
                    } else if let Some(v) = line.strip_prefix("data:") {
                        data.push_str(v.trim_start());
                    }
                }
                if data.is_empty() {
                    continue;
                }
                return Some(SseEvent {
                    id,
                    event,
                    data: serde_json::from_str(&data).expect("SSE data is JSON"),
                });
            }
            let chunk = tokio::time::timeout_at(deadline, self.response.chunk())
                .await
                .unwrap_or_else(|_| panic!("no event within {limit:?}"))
                .expect("the stream reads");
            match chunk {
                Some(bytes) => self.buf.push_str(&String::from_utf8_lossy(&bytes)),
                None => return None,
            }
        }
    }
}

impl TestServer {
    /// Opens an SSE stream as admin, resuming after `last_event_id` when given.
    pub async fn sse(&self, path: &str, last_event_id: Option<&str>) -> SseStream {
        let mut req = self
            .client
            .get(format!("{}{path}", self.base))
            .bearer_auth(&self.admin);
        if let Some(id) = last_event_id {
            req = req.header("last-event-id", id);
        }
        let response = req.send().await.expect("the server answers");
        assert_eq!(response.status(), StatusCode::OK, "GET {path}");
        assert!(
            response.headers()["content-type"]
                .to_str()
                .unwrap()
                .starts_with("text/event-stream")
        );
        SseStream {
            response,
            buf: String::new(),
        }
    }
}
