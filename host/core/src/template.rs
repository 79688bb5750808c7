//! Task templates: YAML in, a validated [`Template`] out.
//!
//! Parsing is two stages. The YAML is read into `Raw*` structs that reject unknown fields and
//! keep every setting optional; then the settings are resolved (step, then `defaults:`, then
//! built-in defaults) and every problem is collected with its location. A template that has
//! any problem is refused whole, so nothing is ever registered half-way.

use std::collections::{BTreeMap, HashSet};
use std::fmt;
use std::str::FromStr;

use serde::{Deserialize, Deserializer, Serialize, Serializer};
use serde_json::Value;
use thiserror::Error;

use crate::backoff::{Backoff, DEFAULT_MAX_RETRY_AFTER_MS, MAX_DELAY_MS};
use crate::concurrency::{Concurrency, MAX_LIMIT as MAX_CONCURRENCY_LIMIT, Strategy};
use crate::dag::{Dag, DagError};
use crate::error_kind::ErrorKind;
use crate::http_grant::{HttpPolicy, HttpRule};
use crate::priority::Priority;
use crate::retention::{Retention, Span};

/// Default attempts per step (first run plus retries).
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;
const MAX_NAME_LEN: usize = 64;

/// A validated task template.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub namespace: String,
    pub name: String,
    pub version: semver::Version,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    /// JSON Schema that a task's context must satisfy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub context_schema: Option<Value>,
    pub steps: Vec<StepTemplate>,
    /// Event hooks: components that receive matching lifecycle events (see docs/hooks.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub hooks: Vec<HookTemplate>,
    /// The template-wide retry policy component (steps may override it).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HandlerRef>,
    /// How long its finished tasks are kept, per state, over `tasker.toml`'s `[retention]`.
    #[serde(default, skip_serializing_if = "Retention::is_empty")]
    pub retention: Retention,
    /// Its tasks' priority when the caller gives none (else 3, `priority.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
    /// At most `limit` of its tasks per key run at once (`concurrency.rs`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub concurrency: Option<Concurrency>,
    /// Schedules that create its tasks, registered with it (`schedule.rs`, docs/schedules.md).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub schedules: Vec<crate::schedule::ScheduleTemplate>,
}

/// Default deliveries of one event to one hook before it is parked as dead.
pub const DEFAULT_HOOK_MAX_ATTEMPTS: u32 = 5;

/// One event hook: a component subscribed to event patterns.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookTemplate {
    /// An `event-hook` component.
    pub component: HandlerRef,
    /// Patterns: `*`, `family.*` (`task`, `step`, `custom`), an event name, or `custom.<name>`.
    pub events: Vec<String>,
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    pub delivery: HookDelivery,
}

/// How a failing hook is retried.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HookDelivery {
    /// Deliveries of one event (the first included) before it is dead-lettered.
    pub max_attempts: u32,
    pub backoff: Backoff,
}

impl Default for HookDelivery {
    fn default() -> Self {
        HookDelivery {
            max_attempts: DEFAULT_HOOK_MAX_ATTEMPTS,
            backoff: Backoff::default(),
        }
    }
}

impl HookTemplate {
    /// Does this hook subscribe to the event `name`?
    pub fn wants(&self, name: &str) -> bool {
        self.events.iter().any(|p| crate::events::matches(p, name))
    }
}

/// One step, with every setting resolved.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StepTemplate {
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub description: Option<String>,
    pub handler: HandlerRef,
    #[serde(default)]
    pub depends_on: Vec<String>,
    /// Which plugin a retry runs: the hash of the first attempt, or the newest one.
    #[serde(default)]
    pub pin: Pin,
    pub retry: RetrySettings,
    pub limits: Limits,
    #[serde(default)]
    pub grants: Grants,
    /// Passed to the handler as its `config` JSON.
    #[serde(default)]
    pub config: Value,
    /// The retry policy component deciding this step's retries (step level, else the
    /// template's); `None`: the built-in exponential policy.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub retry_policy: Option<HandlerRef>,
    /// Overrides the task's priority for this step.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub priority: Option<Priority>,
}

/// Which plugin a step runs.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum HandlerRef {
    /// `name@version`, resolved by the plugin registry.
    Named { name: String, version: String },
    /// `blake3:<64 hex>`: exactly this component.
    Hash(String),
}

/// Retry behaviour of one step.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetrySettings {
    /// Total attempts, the first included. At least 1.
    pub max_attempts: u32,
    /// Whether failures retry when nothing more specific decides.
    pub retryable: bool,
    pub backoff: Backoff,
    /// Upper bound for a handler's `retry-after-ms`.
    pub max_retry_after_ms: u64,
    /// Per error kind overrides of the retry decision (see [`ErrorKind::default_retryable`]).
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub by_kind: BTreeMap<ErrorKind, bool>,
}

impl RetrySettings {
    /// Does a failure of this kind retry? `handler_says` is the handler's own verdict, for
    /// `handler_error`. Whether attempts are left is checked separately.
    pub fn should_retry(&self, kind: ErrorKind, handler_says: Option<bool>) -> bool {
        if !self.retryable {
            return false;
        }
        if let Some(v) = self.by_kind.get(&kind) {
            return *v;
        }
        kind.default_retryable().or(handler_says).unwrap_or(true)
    }
}

/// Resource limits of one attempt. `None` means the host's default.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub timeout_ms: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub fuel: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory_mb: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_output_bytes: Option<u64>,
    /// Outbound HTTP requests per attempt.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_requests: Option<u64>,
    /// Outbound HTTP requests in flight at once.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_concurrency: Option<u64>,
    /// Bytes of one request body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_request_bytes: Option<u64>,
    /// Bytes of one response body.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_response_bytes: Option<u64>,
    /// Deadline of one request (connect to last byte); never past the attempt's.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub http_timeout_ms: Option<u64>,
}

/// Capabilities granted to a step. Everything not listed is denied.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Grants {
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub dirs: Vec<DirGrant>,
    /// Names of host environment variables the guest may read.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub env: Vec<String>,
    /// Outbound `host:port` pairs the guest may connect to.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub net: Vec<String>,
    /// Outbound HTTP requests the guest may make (`wasi:http`), see `http_grant`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub http: Vec<HttpRule>,
    /// Secrets the host writes into HTTP headers where the guest put `{{secret:NAME}}`:
    /// name to source (`env:VARIABLE`). The guest never sees the value.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub secrets: BTreeMap<String, String>,
}

/// A host directory preopened for the guest.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DirGrant {
    /// Host path, kept as written: a relative one is resolved by each worker against its
    /// grants base (so a template's identity does not depend on where its file was).
    pub host: String,
    /// Absolute path the guest sees.
    pub guest: String,
    #[serde(default)]
    pub mode: DirMode,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum DirMode {
    #[default]
    #[serde(rename = "ro")]
    ReadOnly,
    #[serde(rename = "rw")]
    ReadWrite,
}

#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Pin {
    /// Retries run the plugin hash that the first attempt ran; a task retry (an operator's,
    /// after the step ended in error) starts the pin again.
    #[default]
    Sticky,
    /// Every attempt resolves `name@version` afresh.
    Latest,
}

/// One thing wrong with a template, and where.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// A path such as `steps[2] (ship).depends_on[0]`, with the YAML line when known.
    pub location: String,
    pub message: String,
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.location, self.message)
    }
}

/// A template that was refused, with every problem found.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct TemplateError {
    /// What was being read: a file path, or `template` when unknown.
    pub source_name: String,
    pub problems: Vec<Problem>,
}

impl fmt::Display for TemplateError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid template {}:", self.source_name)?;
        for p in &self.problems {
            write!(f, "\n  - {p}")?;
        }
        Ok(())
    }
}

impl TemplateError {
    /// Is some problem's message or location containing `needle`? For tests and callers.
    pub fn mentions(&self, needle: &str) -> bool {
        self.problems
            .iter()
            .any(|p| p.message.contains(needle) || p.location.contains(needle))
    }
}

/// A task context that does not satisfy the template's schema.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("task context does not match the schema of {template}:{}", .errors.iter().map(|e| format!("\n  - {e}")).collect::<String>())]
pub struct ContextError {
    pub template: String,
    /// Each with the JSON pointer of the offending value in the context (`/` for the root).
    pub errors: Vec<Problem>,
}

impl Template {
    /// Parses and validates YAML. `source_name` (a file path) prefixes every message.
    pub fn from_yaml_named(yaml: &str, source_name: &str) -> Result<Template, TemplateError> {
        let fail = |problems| TemplateError {
            source_name: source_name.to_owned(),
            problems,
        };
        let raw = parse_raw(yaml).map_err(|p| fail(vec![p]))?;
        raw.resolve().map_err(fail)
    }

    pub fn from_yaml(yaml: &str) -> Result<Template, TemplateError> {
        Self::from_yaml_named(yaml, "template")
    }

    /// `namespace/name@version`.
    pub fn key(&self) -> String {
        format!("{}/{}@{}", self.namespace, self.name, self.version)
    }

    /// The step graph. Infallible for a template built by [`Template::from_yaml`].
    pub fn dag(&self) -> Result<Dag, DagError> {
        Dag::build(
            self.steps
                .iter()
                .map(|s| (s.name.as_str(), s.depends_on.iter().map(String::as_str))),
        )
    }

    pub fn step(&self, name: &str) -> Option<&StepTemplate> {
        self.steps.iter().find(|s| s.name == name)
    }

    /// Every component this template runs: step handlers, hooks and retry policies, each
    /// once, in order. What a deployment must stage for it.
    pub fn components(&self) -> Vec<&HandlerRef> {
        let mut out: Vec<&HandlerRef> = Vec::new();
        let all = self
            .steps
            .iter()
            .flat_map(|s| std::iter::once(&s.handler).chain(s.retry_policy.as_ref()))
            .chain(self.hooks.iter().map(|h| &h.component))
            .chain(self.retry_policy.as_ref());
        for r in all {
            if !out.contains(&r) {
                out.push(r);
            }
        }
        out
    }

    /// Checks a task context against `context_schema` (anything goes without one).
    pub fn validate_context(&self, context: &Value) -> Result<(), ContextError> {
        let Some(schema) = &self.context_schema else {
            return Ok(());
        };
        let fail = |errors| ContextError {
            template: self.key(),
            errors,
        };
        let validator = jsonschema::validator_for(schema).map_err(|e| {
            fail(vec![Problem {
                location: "context_schema".into(),
                message: e.to_string(),
            }])
        })?;
        let errors: Vec<Problem> = validator
            .iter_errors(context)
            .map(|e| {
                let at = e.instance_path().to_string();
                Problem {
                    location: if at.is_empty() { "/".to_owned() } else { at },
                    message: e.to_string(),
                }
            })
            .collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(fail(errors))
        }
    }
}

// ---------------------------------------------------------------------------------------------
// Handler references

impl fmt::Display for HandlerRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HandlerRef::Named { name, version } => write!(f, "{name}@{version}"),
            HandlerRef::Hash(h) => write!(f, "blake3:{h}"),
        }
    }
}

impl FromStr for HandlerRef {
    type Err = String;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if let Some(hex) = s.strip_prefix("blake3:") {
            if hex.len() == 64 && hex.bytes().all(|b| b.is_ascii_hexdigit()) {
                return Ok(HandlerRef::Hash(hex.to_ascii_lowercase()));
            }
            return Err(format!(
                "'{s}' is not a blake3 hash: expected 'blake3:' and 64 hex digits"
            ));
        }
        let Some((name, version)) = s.rsplit_once('@') else {
            return Err(format!(
                "'{s}' is not a handler reference: expected 'name@version' or 'blake3:<hash>'"
            ));
        };
        check_name(name).map_err(|m| format!("handler name in '{s}' {m}"))?;
        semver::Version::parse(version)
            .map_err(|e| format!("handler version in '{s}' is not semver: {e}"))?;
        Ok(HandlerRef::Named {
            name: name.to_owned(),
            version: version.to_owned(),
        })
    }
}

impl Serialize for HandlerRef {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> Deserialize<'de> for HandlerRef {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = String::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

fn check_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("is empty".into());
    }
    if name.len() > MAX_NAME_LEN {
        return Err(format!("is longer than {MAX_NAME_LEN} characters"));
    }
    let first_ok = name
        .chars()
        .next()
        .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_');
    let rest_ok = name
        .chars()
        .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if first_ok && rest_ok {
        Ok(())
    } else {
        Err(format!(
            "'{name}' may only hold letters, digits, '_', '-' and '.', and must start with a letter, digit or '_'"
        ))
    }
}

// ---------------------------------------------------------------------------------------------
// Raw YAML shape

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTemplate {
    namespace: String,
    name: String,
    version: String,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    context_schema: Option<Value>,
    #[serde(default)]
    defaults: RawDefaults,
    #[serde(default)]
    steps: Vec<RawStep>,
    #[serde(default)]
    hooks: Vec<RawHook>,
    #[serde(default)]
    retry_policy: Option<String>,
    #[serde(default)]
    retention: RawRetention,
    #[serde(default)]
    priority: Option<i64>,
    #[serde(default)]
    concurrency: Option<RawConcurrency>,
    #[serde(default)]
    schedules: Vec<crate::schedule::RawSchedule>,
}

/// `concurrency:` as written; checked in `resolve`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConcurrency {
    key: String,
    limit: i64,
    #[serde(default)]
    strategy: Option<String>,
}

/// `retention:` as written; each span is checked in `resolve`, so a bad one is listed with
/// the template's other problems.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetention {
    #[serde(default)]
    complete: Option<String>,
    #[serde(default)]
    cancelled: Option<String>,
    #[serde(default)]
    error: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHook {
    component: String,
    #[serde(default)]
    events: OneOrMany,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    delivery: RawDelivery,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDelivery {
    max_attempts: Option<u32>,
    #[serde(default)]
    backoff: RawBackoff,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawDefaults {
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    limits: RawLimits,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default)]
    description: Option<String>,
    handler: String,
    #[serde(default)]
    depends_on: OneOrMany,
    #[serde(default)]
    pin: Pin,
    #[serde(default)]
    retry: RawRetry,
    #[serde(default)]
    limits: RawLimits,
    #[serde(default)]
    grants: Grants,
    #[serde(default)]
    config: Option<Value>,
    #[serde(default)]
    retry_policy: Option<String>,
    #[serde(default)]
    priority: Option<i64>,
}

/// `depends_on: a` or `depends_on: [a, b]`.
#[derive(Debug, Default, Deserialize)]
#[serde(untagged)]
enum OneOrMany {
    #[default]
    None,
    One(String),
    Many(Vec<String>),
}

impl OneOrMany {
    fn to_vec(&self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s.clone()],
            OneOrMany::Many(v) => v.clone(),
        }
    }

    fn into_vec(self) -> Vec<String> {
        match self {
            OneOrMany::None => Vec::new(),
            OneOrMany::One(s) => vec![s],
            OneOrMany::Many(v) => v,
        }
    }
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawRetry {
    max_attempts: Option<u32>,
    retryable: Option<bool>,
    #[serde(default)]
    backoff: RawBackoff,
    max_retry_after_ms: Option<u64>,
    #[serde(default)]
    by_kind: BTreeMap<String, bool>,
}

#[derive(Debug, Default, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBackoff {
    base_ms: Option<u64>,
    multiplier: Option<f64>,
    cap_ms: Option<u64>,
    jitter: Option<f64>,
}

/// Limits as written: the same shape, every field optional.
type RawLimits = Limits;

impl Limits {
    /// Each limit from `self`, else from `defaults`.
    fn or(&self, defaults: &Limits) -> Limits {
        Limits {
            timeout_ms: self.timeout_ms.or(defaults.timeout_ms),
            fuel: self.fuel.or(defaults.fuel),
            memory_mb: self.memory_mb.or(defaults.memory_mb),
            max_output_bytes: self.max_output_bytes.or(defaults.max_output_bytes),
            http_requests: self.http_requests.or(defaults.http_requests),
            http_concurrency: self.http_concurrency.or(defaults.http_concurrency),
            http_request_bytes: self.http_request_bytes.or(defaults.http_request_bytes),
            http_response_bytes: self.http_response_bytes.or(defaults.http_response_bytes),
            http_timeout_ms: self.http_timeout_ms.or(defaults.http_timeout_ms),
        }
    }
}

fn parse_raw(yaml: &str) -> Result<RawTemplate, Problem> {
    let blank = yaml
        .lines()
        .map(str::trim)
        .all(|l| l.is_empty() || l.starts_with('#') || l == "---");
    if blank {
        return Err(Problem {
            location: "(document)".into(),
            message: "the template is empty".into(),
        });
    }
    let de = serde_yaml_ng::Deserializer::from_str(yaml);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let line = inner
            .location()
            .map(|l| format!(" (line {}, column {})", l.line(), l.column()))
            .unwrap_or_default();
        // serde_yaml_ng appends its own "at line X column Y"; we print the location ourselves.
        let msg = inner.to_string();
        let msg = msg.split(" at line ").next().unwrap_or(&msg).to_owned();
        Problem {
            location: if path == "." {
                format!("(document){line}")
            } else {
                format!("{path}{line}")
            },
            message: msg,
        }
    })
}

struct Collector(Vec<Problem>);

impl Collector {
    fn push(&mut self, location: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            location: location.into(),
            message: message.into(),
        });
    }
}

impl RawTemplate {
    fn resolve(self) -> Result<Template, Vec<Problem>> {
        let mut c = Collector(Vec::new());
        for (field, value) in [("namespace", &self.namespace), ("name", &self.name)] {
            if let Err(m) = check_name(value) {
                c.push(field, m);
            }
        }
        let version = match semver::Version::parse(&self.version) {
            Ok(v) => Some(v),
            Err(e) => {
                c.push(
                    "version",
                    format!(
                        "'{}' is not a semantic version (like 1.2.0): {e}",
                        self.version
                    ),
                );
                None
            }
        };
        if let Some(schema) = &self.context_schema
            && let Err(e) = jsonschema::validator_for(schema)
        {
            c.push("context_schema", format!("not a valid JSON Schema: {e}"));
        }
        if self.steps.is_empty() {
            c.push("steps", "the template has no steps");
        }

        let defaults = self.defaults;
        check_retry(&mut c, "defaults.retry", &defaults.retry);
        let retry_policy = self
            .retry_policy
            .as_deref()
            .and_then(|p| parse_policy(&mut c, "retry_policy", p));
        let mut span = |state: &str, raw: &Option<String>| {
            raw.as_deref().and_then(|text| match text.parse::<Span>() {
                Ok(span) => Some(span),
                Err(m) => {
                    c.push(format!("retention.{state}"), m);
                    None
                }
            })
        };
        let retention = Retention {
            complete: span("complete", &self.retention.complete),
            cancelled: span("cancelled", &self.retention.cancelled),
            error: span("error", &self.retention.error),
        };
        let priority = self
            .priority
            .and_then(|v| check_priority(&mut c, "priority", v));
        let concurrency = self
            .concurrency
            .and_then(|raw| check_concurrency(&mut c, "concurrency", raw));
        let mut schedules = Vec::with_capacity(self.schedules.len());
        let mut schedule_names = HashSet::new();
        for (i, raw) in self.schedules.into_iter().enumerate() {
            let at = format!("schedules[{i}] ({})", raw.name());
            if !schedule_names.insert(raw.name().to_owned()) {
                c.push(
                    format!("{at}.name"),
                    format!("schedule '{}' is defined more than once", raw.name()),
                );
            }
            match raw.resolve(&at, self.context_schema.as_ref()) {
                Ok(s) => schedules.push(s),
                Err(problems) => {
                    for (location, message) in problems {
                        c.push(location, message);
                    }
                }
            }
        }
        let mut hooks = Vec::with_capacity(self.hooks.len());
        for (i, raw) in self.hooks.into_iter().enumerate() {
            if let Some(h) = resolve_hook(&mut c, &format!("hooks[{i}]"), raw) {
                hooks.push(h);
            }
        }
        let graph: Vec<(String, Vec<String>)> = self
            .steps
            .iter()
            .map(|raw| (raw.name.clone(), raw.depends_on.to_vec()))
            .collect();
        let mut steps = Vec::with_capacity(self.steps.len());
        let mut seen = HashSet::new();
        for (i, raw) in self.steps.into_iter().enumerate() {
            let at = format!("steps[{i}] ({})", raw.name);
            if let Err(m) = check_name(&raw.name) {
                c.push(format!("{at}.name"), format!("step name {m}"));
            }
            if !seen.insert(raw.name.clone()) {
                c.push(
                    format!("{at}.name"),
                    format!("step '{}' is defined more than once", raw.name),
                );
            }
            let step_policy = match raw.retry_policy.as_deref() {
                None => retry_policy.clone(),
                Some(p) => parse_policy(&mut c, &format!("{at}.retry_policy"), p),
            };
            if let Some(mut step) = resolve_step(&mut c, &at, raw, &defaults) {
                step.retry_policy = step_policy;
                steps.push(step);
            }
        }

        // The graph is checked from the names as written, so that its problems are listed
        // beside every other one, even when a step failed to resolve.
        if !graph.is_empty() {
            let problems = Dag::problems(
                graph
                    .iter()
                    .map(|(name, deps)| (name.as_str(), deps.iter().map(String::as_str))),
            );
            for problem in problems {
                let location = match &problem {
                    // Reported above, with its step's location.
                    DagError::DuplicateStep { .. } | DagError::Empty => continue,
                    DagError::UnknownDependency { step, .. }
                    | DagError::DuplicateDependency { step, .. } => {
                        let i = graph.iter().position(|(n, _)| n == step).unwrap_or(0);
                        format!("steps[{i}] ({step}).depends_on")
                    }
                    DagError::Cycle { .. } => "steps".to_owned(),
                };
                c.push(location, problem.to_string());
            }
        }

        match (c.0.is_empty(), version) {
            (true, Some(version)) => Ok(Template {
                namespace: self.namespace,
                name: self.name,
                version,
                description: self.description,
                context_schema: self.context_schema,
                steps,
                hooks,
                retry_policy,
                retention,
                priority,
                concurrency,
                schedules,
            }),
            _ => Err(c.0),
        }
    }
}

fn check_retry(c: &mut Collector, at: &str, r: &RawRetry) {
    match r.max_attempts {
        Some(0) => c.push(
            format!("{at}.max_attempts"),
            "must be at least 1 (it counts the first attempt)",
        ),
        Some(n) if n > MAX_ATTEMPTS => c.push(
            format!("{at}.max_attempts"),
            format!("{n} is over the maximum of {MAX_ATTEMPTS}"),
        ),
        _ => {}
    }
    if let Some(ms) = r.max_retry_after_ms
        && ms > MAX_DELAY_MS
    {
        c.push(
            format!("{at}.max_retry_after_ms"),
            format!("{ms} is over the maximum of {MAX_DELAY_MS} (30 days)"),
        );
    }
    for kind in r.by_kind.keys() {
        if let Err(m) = kind.parse::<ErrorKind>() {
            c.push(format!("{at}.by_kind"), m);
        }
    }
}

fn resolve_step(
    c: &mut Collector,
    at: &str,
    raw: RawStep,
    defaults: &RawDefaults,
) -> Option<StepTemplate> {
    let handler = match raw.handler.parse::<HandlerRef>() {
        Ok(h) => Some(h),
        Err(m) => {
            c.push(format!("{at}.handler"), m);
            None
        }
    };

    check_retry(c, &format!("{at}.retry"), &raw.retry);
    let (r, d) = (&raw.retry, &defaults.retry);
    let builtin = Backoff::default();
    let backoff = Backoff {
        base_ms: r
            .backoff
            .base_ms
            .or(d.backoff.base_ms)
            .unwrap_or(builtin.base_ms),
        multiplier: r
            .backoff
            .multiplier
            .or(d.backoff.multiplier)
            .unwrap_or(builtin.multiplier),
        cap_ms: r
            .backoff
            .cap_ms
            .or(d.backoff.cap_ms)
            .unwrap_or(builtin.cap_ms),
        jitter: r
            .backoff
            .jitter
            .or(d.backoff.jitter)
            .unwrap_or(builtin.jitter),
    };
    for (field, m) in backoff.problems() {
        c.push(format!("{at}.retry.backoff.{field}"), m);
    }
    let mut by_kind: BTreeMap<ErrorKind, bool> = BTreeMap::new();
    for (k, v) in d.by_kind.iter().chain(r.by_kind.iter()) {
        if let Ok(kind) = k.parse() {
            by_kind.insert(kind, *v);
        }
    }
    let retry = RetrySettings {
        max_attempts: r
            .max_attempts
            .or(d.max_attempts)
            .unwrap_or(DEFAULT_MAX_ATTEMPTS)
            .max(1),
        retryable: r.retryable.or(d.retryable).unwrap_or(true),
        backoff,
        max_retry_after_ms: r
            .max_retry_after_ms
            .or(d.max_retry_after_ms)
            .unwrap_or(DEFAULT_MAX_RETRY_AFTER_MS),
        by_kind,
    };

    let (l, dl) = (&raw.limits, &defaults.limits);
    let limits = l.or(dl);
    check_limits(c, at, &limits);
    check_grants(c, at, &raw.grants);

    let priority = raw
        .priority
        .and_then(|v| check_priority(c, &format!("{at}.priority"), v));
    let depends_on = raw.depends_on.into_vec();
    Some(StepTemplate {
        name: raw.name,
        description: raw.description,
        handler: handler?,
        depends_on,
        pin: raw.pin,
        retry,
        limits,
        grants: raw.grants,
        config: raw.config.unwrap_or(Value::Object(Default::default())),
        retry_policy: None,
        priority,
    })
}

fn check_concurrency(c: &mut Collector, at: &str, raw: RawConcurrency) -> Option<Concurrency> {
    let strategy = match raw.strategy.as_deref() {
        None => Some(Strategy::default()),
        Some(s) => Strategy::parse(s).or_else(|| {
            let all: Vec<_> = Strategy::ALL.iter().map(|s| s.as_str()).collect();
            c.push(
                format!("{at}.strategy"),
                format!("unknown strategy '{s}': expected one of {}", all.join(", ")),
            );
            None
        }),
    };
    let limit = u32::try_from(raw.limit).unwrap_or(0);
    let spec = Concurrency {
        key: raw.key,
        limit,
        strategy: strategy.unwrap_or_default(),
    };
    let problems = spec.problems();
    let ok = problems.is_empty() && strategy.is_some();
    for (field, m) in problems {
        let m = if field == "limit" {
            format!(
                "{} is not a limit: expected 1 to {MAX_CONCURRENCY_LIMIT}",
                raw.limit
            )
        } else {
            m
        };
        c.push(format!("{at}.{field}"), m);
    }
    ok.then_some(spec)
}

fn check_priority(c: &mut Collector, at: &str, v: i64) -> Option<Priority> {
    let p = Priority::new(v);
    if p.is_none() {
        c.push(
            at,
            format!(
                "{v} is not a priority: expected a whole number from 1 (lowest) to 5 (highest)"
            ),
        );
    }
    p
}

/// `retry_policy: name@version` (or `blake3:<hash>`); `builtin` means the built-in policy.
fn parse_policy(c: &mut Collector, at: &str, raw: &str) -> Option<HandlerRef> {
    if raw == "builtin" {
        return None;
    }
    match raw.parse::<HandlerRef>() {
        Ok(h) => Some(h),
        Err(m) => {
            c.push(at, m.replace("handler", "retry policy"));
            None
        }
    }
}

/// The largest value each limit may take: a day of wall time, a WebAssembly memory's 4 GiB,
/// a 64 MiB result.
pub const LIMIT_MAXIMA: [(&str, u64); 9] = [
    ("timeout_ms", 86_400_000),
    ("fuel", 1_000_000_000_000_000),
    ("memory_mb", 4_096),
    ("max_output_bytes", 64 << 20),
    ("http_requests", 100_000),
    ("http_concurrency", 256),
    ("http_request_bytes", 1 << 30),
    ("http_response_bytes", 1 << 30),
    ("http_timeout_ms", 86_400_000),
];

/// The most attempts a step (or deliveries a hook) may be given.
pub const MAX_ATTEMPTS: u32 = 10_000;

fn check_limits(c: &mut Collector, at: &str, limits: &Limits) {
    let values = [
        limits.timeout_ms,
        limits.fuel,
        limits.memory_mb,
        limits.max_output_bytes,
        limits.http_requests,
        limits.http_concurrency,
        limits.http_request_bytes,
        limits.http_response_bytes,
        limits.http_timeout_ms,
    ];
    for ((field, max), v) in LIMIT_MAXIMA.into_iter().zip(values) {
        match v {
            Some(0) => c.push(format!("{at}.limits.{field}"), "must be greater than 0"),
            Some(v) if v > max => c.push(
                format!("{at}.limits.{field}"),
                format!("{v} is over the maximum of {max}"),
            ),
            _ => {}
        }
    }
}

/// Is `pattern` a subscription that can ever match? Exact names must be known built-in
/// events or `custom.<name>`; families must be `task`, `step` or `custom`.
fn check_pattern(pattern: &str) -> Result<(), String> {
    if !crate::events::is_valid_pattern(pattern) {
        return Err(format!(
            "'{pattern}' is not an event pattern: use '*', 'family.*' or an event name such as step.failed"
        ));
    }
    if pattern == "*" {
        return Ok(());
    }
    if let Some(family) = pattern.strip_suffix(".*") {
        return if matches!(family, "task" | "step" | "custom") {
            Ok(())
        } else {
            Err(format!(
                "'{pattern}' names no event family: use task.*, step.* or custom.*"
            ))
        };
    }
    if pattern
        .strip_prefix(crate::events::CUSTOM_PREFIX)
        .is_some_and(|rest| !rest.is_empty())
        || crate::events::ALL.contains(&pattern)
    {
        Ok(())
    } else {
        Err(format!(
            "'{pattern}' is not a known event (custom events are named custom.<name>)"
        ))
    }
}

fn resolve_hook(c: &mut Collector, at: &str, raw: RawHook) -> Option<HookTemplate> {
    let component = match raw.component.parse::<HandlerRef>() {
        Ok(h) => Some(h),
        Err(m) => {
            c.push(format!("{at}.component"), m.replace("handler", "hook"));
            None
        }
    };
    let events = raw.events.into_vec();
    if events.is_empty() {
        c.push(
            format!("{at}.events"),
            "subscribes to no events: list patterns such as step.failed or task.*",
        );
    }
    for (i, p) in events.iter().enumerate() {
        if let Err(m) = check_pattern(p) {
            c.push(format!("{at}.events[{i}]"), m);
        }
    }
    let limits = raw.limits.clone();
    check_limits(c, at, &limits);
    check_grants(c, at, &raw.grants);
    let d = &raw.delivery;
    match d.max_attempts {
        Some(0) => c.push(
            format!("{at}.delivery.max_attempts"),
            "must be at least 1 (it counts the first delivery)",
        ),
        Some(n) if n > MAX_ATTEMPTS => c.push(
            format!("{at}.delivery.max_attempts"),
            format!("{n} is over the maximum of {MAX_ATTEMPTS}"),
        ),
        _ => {}
    }
    let builtin = Backoff::default();
    let backoff = Backoff {
        base_ms: d.backoff.base_ms.unwrap_or(builtin.base_ms),
        multiplier: d.backoff.multiplier.unwrap_or(builtin.multiplier),
        cap_ms: d.backoff.cap_ms.unwrap_or(builtin.cap_ms),
        jitter: d.backoff.jitter.unwrap_or(builtin.jitter),
    };
    for (field, m) in backoff.problems() {
        c.push(format!("{at}.delivery.backoff.{field}"), m);
    }
    Some(HookTemplate {
        component: component?,
        events,
        limits,
        grants: raw.grants,
        delivery: HookDelivery {
            max_attempts: d.max_attempts.unwrap_or(DEFAULT_HOOK_MAX_ATTEMPTS).max(1),
            backoff,
        },
    })
}

fn check_grants(c: &mut Collector, at: &str, g: &Grants) {
    let mut guests = HashSet::new();
    for (i, d) in g.dirs.iter().enumerate() {
        let loc = format!("{at}.grants.dirs[{i}]");
        if d.host.trim().is_empty() {
            c.push(format!("{loc}.host"), "is empty");
        }
        if !d.guest.starts_with('/') {
            c.push(
                format!("{loc}.guest"),
                format!("'{}' must be an absolute path such as /data", d.guest),
            );
        }
        if d.guest.split('/').any(|seg| seg == "..") {
            c.push(
                format!("{loc}.guest"),
                format!("'{}' may not contain '..'", d.guest),
            );
        }
        if !guests.insert(d.guest.trim_end_matches('/')) {
            c.push(
                format!("{loc}.guest"),
                format!("'{}' is granted more than once", d.guest),
            );
        }
    }
    for (i, e) in g.env.iter().enumerate() {
        let ok = !e.is_empty()
            && !e.starts_with(|ch: char| ch.is_ascii_digit())
            && e.chars().all(|ch| ch.is_ascii_alphanumeric() || ch == '_');
        if !ok {
            c.push(
                format!("{at}.grants.env[{i}]"),
                format!("'{e}' is not an environment variable name"),
            );
        }
    }
    for (i, n) in g.net.iter().enumerate() {
        let ok = n
            .rsplit_once(':')
            .is_some_and(|(h, p)| !h.is_empty() && p.parse::<u16>().is_ok_and(|p| p > 0));
        if !ok {
            c.push(
                format!("{at}.grants.net[{i}]"),
                format!("'{n}' must be host:port, such as api.example.com:443"),
            );
        }
    }
    if let Err(errors) = HttpPolicy::new(&g.http) {
        for (i, e) in errors {
            c.push(format!("{at}.grants.http[{i}].{}", e.field), e.message);
        }
    }
    for (name, source) in &g.secrets {
        let loc = format!("{at}.grants.secrets.{name}");
        if !crate::http_grant::is_secret_name(name) {
            c.push(
                loc,
                format!("'{name}' is not a secret name (letters, digits and _)"),
            );
        } else if let Err(m) = crate::http_grant::secret_source(source) {
            c.push(loc, m);
        }
    }
    if !g.secrets.is_empty() && g.http.is_empty() {
        c.push(
            format!("{at}.grants.secrets"),
            "secrets are only written into HTTP requests: grant some with grants.http",
        );
    }
}

#[cfg(test)]
mod tests;
