//! `wasi:http/outgoing-handler` for attempts: every request is checked against the step's
//! `grants.http` (`tasker_core::http_grant`) before any connection, sent by the host (its
//! own resolver, TLS and connection, `send.rs`) under the attempt's limits, and recorded.
//! Secrets are written into headers here, after the grant matched, and nowhere else.
//!
//! The future a request returns is spawned by wasmtime-wasi-http and outlives the host
//! call, so what it shares with the attempt (records, denials, slots) is behind an `Arc`.

mod send;
mod tls;

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use http::HeaderValue;
use serde::{Deserialize, Serialize};
use tasker_core::http_grant::{self, HttpPolicy, Target};
pub use tasker_core::http_record::HttpRecord;
use tokio::sync::Semaphore;
use wasmtime::component::Linker;
use wasmtime_wasi_http::{Error, RequestOptions, WasiBody, WasiHttpHooks};

use crate::attempt::AttemptState;
use crate::caps::{AttemptGrants, DenialLog};
use crate::error::SandboxError;
use crate::limits::ResolvedLimits;

pub(crate) use tls::TlsRoots;

/// Host-wide outbound HTTP settings.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HttpConfig {
    /// PEM file of extra CA certificates trusted for HTTPS (private APIs, tests).
    pub extra_ca_file: Option<PathBuf>,
    /// Trust the system's certificate store as well as the built-in webpki roots.
    pub system_roots: bool,
}

impl Default for HttpConfig {
    fn default() -> Self {
        Self {
            extra_ca_file: None,
            system_roots: true,
        }
    }
}

/// Records kept per attempt, so a refused flood stays bounded (the denials say why).
const MAX_RECORDS: usize = 256;

/// What a request's future shares with the attempt.
pub(crate) struct Shared {
    records: Mutex<Vec<HttpRecord>>,
    pub(crate) denials: DenialLog,
    started: Instant,
    /// The attempt's wall deadline: no request outlives it.
    pub(crate) deadline: Instant,
    /// A request was cut by the attempt's deadline (the attempt timed out, whatever the
    /// guest made of the error).
    pub(crate) cut_by_deadline: AtomicBool,
}

impl Shared {
    fn push(&self, r: HttpRecord) -> Option<usize> {
        let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
        if v.len() >= MAX_RECORDS {
            return None;
        }
        v.push(r);
        Some(v.len() - 1)
    }

    pub(crate) fn update(&self, at: Option<usize>, f: impl FnOnce(&mut HttpRecord)) {
        if let Some(i) = at {
            let mut v = self.records.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(r) = v.get_mut(i) {
                f(r);
            }
        }
    }

    pub(crate) fn since_start(&self, t: Instant) -> u64 {
        u64::try_from(t.saturating_duration_since(self.started).as_micros()).unwrap_or(u64::MAX)
    }
}

/// The per-attempt `WasiHttpHooks`: policy, counters and the shared state.
pub(crate) struct Outbound {
    policy: Arc<HttpPolicy>,
    secrets: BTreeMap<String, String>,
    roots: Arc<TlsRoots>,
    limits: Arc<ResolvedLimits>,
    shared: Arc<Shared>,
    slots: Arc<Semaphore>,
    made: u32,
}

impl Outbound {
    /// Check the grants and read the secrets (a missing one is a config error naming it).
    pub(crate) fn new(
        grants: &AttemptGrants,
        limits: &ResolvedLimits,
        roots: Arc<TlsRoots>,
        denials: DenialLog,
        started: Instant,
        deadline: Instant,
    ) -> Result<Self, SandboxError> {
        let policy = HttpPolicy::new(&grants.http).map_err(|errors| {
            let what: Vec<String> = errors
                .iter()
                .map(|(i, e)| format!("http[{i}].{}: {}", e.field, e.message))
                .collect();
            SandboxError::Config {
                message: format!("http grant: {}", what.join("; ")),
            }
        })?;
        let secrets = resolve_secrets(&grants.secrets)?;
        Ok(Self {
            policy: Arc::new(policy),
            secrets,
            roots,
            limits: Arc::new(limits.clone()),
            shared: Arc::new(Shared {
                records: Mutex::default(),
                denials,
                started,
                deadline,
                cut_by_deadline: AtomicBool::new(false),
            }),
            slots: Arc::new(Semaphore::new(limits.http_concurrency as usize)),
            made: 0,
        })
    }

    /// The secret values, to redact them from everything the attempt reports.
    pub(crate) fn secrets(&self) -> &BTreeMap<String, String> {
        &self.secrets
    }

    /// The records so far and whether a request was cut by the attempt's deadline.
    pub(crate) fn finish(&self) -> (Vec<HttpRecord>, bool) {
        let records = self
            .shared
            .records
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone();
        (records, self.shared.cut_by_deadline.load(Ordering::Acquire))
    }

    /// Refuse before any connection: recorded as a denial and a refused request.
    fn refuse(&self, method: &str, url: &str, why: String, code: Error) -> Response {
        self.shared.denials.record("http", why.clone());
        self.shared.push(HttpRecord {
            at_us: self.shared.since_start(Instant::now()),
            method: method.to_string(),
            url: url.to_string(),
            refused: true,
            error: Some(why),
            ..HttpRecord::default()
        });
        Box::new(async move { Err(code) })
    }

    /// Write granted secrets into header values; `Err` names an unknown one.
    fn fill_secrets(&self, headers: &mut http::HeaderMap) -> Result<(), String> {
        for (name, value) in headers.iter_mut() {
            let Ok(text) = value.to_str() else { continue };
            if let Some(filled) = http_grant::substitute(text, &self.secrets)
                .map_err(|e| format!("header {name}: {e}"))?
            {
                let mut v = HeaderValue::from_str(&filled).map_err(|_| {
                    format!("header {name}: the secret is not a valid header value")
                })?;
                // Kept out of hyper's debug output.
                v.set_sensitive(true);
                *value = v;
            }
        }
        Ok(())
    }
}

fn resolve_secrets(
    sources: &BTreeMap<String, String>,
) -> Result<BTreeMap<String, String>, SandboxError> {
    let mut out = BTreeMap::new();
    for (name, source) in sources {
        let bad = |why: String| SandboxError::Config {
            message: format!("secret {name}: {why}"),
        };
        if !http_grant::is_secret_name(name) {
            return Err(bad("is not a secret name (letters, digits and _)".into()));
        }
        let var = http_grant::secret_source(source).map_err(bad)?;
        match std::env::var(var) {
            Ok(v) if !v.is_empty() => out.insert(name.clone(), v),
            _ => {
                return Err(bad(format!(
                    "the environment variable {var} is not set on the worker"
                )));
            }
        };
    }
    Ok(out)
}

type Response = Box<
    dyn Future<
            Output = Result<
                (
                    http::Response<WasiBody>,
                    Box<dyn Future<Output = Result<(), Error>> + Send>,
                ),
                Error,
            >,
        > + Send,
>;

impl WasiHttpHooks for Outbound {
    fn send_request(
        &mut self,
        mut request: http::Request<WasiBody>,
        options: Option<RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Response {
        let method = request.method().as_str().to_string();
        let uri = request.uri();
        let (scheme, authority) = (
            uri.scheme_str().unwrap_or(""),
            uri.authority().map_or("", |a| a.as_str()),
        );
        let target = match Target::new(
            &method,
            scheme,
            authority,
            uri.path_and_query().map_or("/", |p| p.as_str()),
        ) {
            Ok(t) => t,
            Err(why) => {
                let shown = format!("{scheme}://{authority}{}", uri.path());
                let why = format!("{method} {shown}: {why}");
                return self.refuse(&method, &shown, why, Error::HttpRequestUriInvalid);
            }
        };
        let url = target.url();
        let rule = match self.policy.decide(&target) {
            Ok(rule) => rule,
            Err(refusal) => {
                return self.refuse(&method, &url, refusal.to_string(), Error::HttpRequestDenied);
            }
        };
        if self.made >= self.limits.http_requests {
            let why = format!(
                "{method} {url}: the attempt made its {} requests, the http_requests cap",
                self.limits.http_requests
            );
            return self.refuse(&method, &url, why, Error::HttpRequestDenied);
        }
        if let Err(why) = self.fill_secrets(request.headers_mut()) {
            let why = format!("{method} {url}: {why}");
            return self.refuse(&method, &url, why, Error::HttpRequestDenied);
        }
        self.made += 1;
        let now = Instant::now();
        let record = self.shared.push(HttpRecord {
            at_us: self.shared.since_start(now),
            method,
            url,
            ..HttpRecord::default()
        });
        let job = send::Job {
            request: Some(request),
            target,
            rule,
            policy: self.policy.clone(),
            roots: self.roots.clone(),
            limits: self.limits.clone(),
            shared: self.shared.clone(),
            slots: self.slots.clone(),
            options,
            record,
            sent_at: now,
        };
        Box::new(job.spawn())
    }
}

impl wasmtime_wasi_http::WasiHttpView for AttemptState {
    fn http(&mut self) -> wasmtime_wasi_http::WasiHttpCtxView<'_> {
        let (table, ctx, hooks) = self.http_parts();
        wasmtime_wasi_http::WasiHttpCtxView { hooks, table, ctx }
    }
}

/// Link `wasi:http` (types and outgoing-handler) for attempts.
pub(crate) fn add_to_linker(linker: &mut Linker<AttemptState>) -> wasmtime::Result<()> {
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)
}

/// The per-request deadline: the guest's timeouts and the step's, never past the attempt.
pub(crate) fn request_deadline(
    limits: &ResolvedLimits,
    attempt_deadline: Instant,
    from: Instant,
) -> (Instant, bool) {
    let own = from
        .checked_add(Duration::from_millis(limits.http_timeout_ms))
        .unwrap_or(attempt_deadline);
    if own < attempt_deadline {
        (own, false)
    } else {
        (attempt_deadline, true)
    }
}
