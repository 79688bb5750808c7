//! What the API answers: the store's rows as JSON documents (instants in RFC 3339, ids as
//! numbers, states and kinds as their snake_case names).

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use tasker_core::error_kind::ErrorKind;
use tasker_core::state::{StepState, TaskState};
use tasker_core::template::Template;
use tasker_store::{
    AttemptLogRow, AttemptRow, ExecutionContext, ReadinessRow, StepId, StepRow, TaskCounts, TaskId,
    TaskRow, TemplateSummary, TokenRow, TransitionRow,
};
use utoipa::ToSchema;

use crate::openapi::{
    AttemptOutcomeName, ErrorKindName, LogLevelName, RetryDecisionName, StepStateName,
    TaskStateName, TemplateDefinition,
};

/// A page of a listing. `next_cursor` is given back as `?cursor=` for the next page; it is
/// absent on the last one.
#[derive(Debug, Serialize, ToSchema)]
pub struct PageView<T> {
    pub items: Vec<T>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_cursor: Option<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateView {
    pub key: String,
    pub namespace: String,
    pub name: String,
    pub version: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub description: Option<String>,
    pub step_count: u32,
    pub created_at: DateTime<Utc>,
}

impl From<TemplateSummary> for TemplateView {
    fn from(t: TemplateSummary) -> Self {
        TemplateView {
            key: t.key,
            namespace: t.namespace,
            name: t.name,
            version: t.version,
            description: t.description,
            step_count: t.step_count,
            created_at: t.created_at,
        }
    }
}

/// A template version with its definition and its graph.
#[derive(Debug, Serialize, ToSchema)]
pub struct TemplateDetail {
    pub key: String,
    #[schema(value_type = TemplateDefinition)]
    pub definition: Template,
    pub graph: GraphView,
}

/// A DAG: nodes with their longest-path level, edges parent → child, and the steps of each
/// level (level 0 first).
#[derive(Debug, Serialize, ToSchema)]
pub struct GraphView {
    pub nodes: Vec<NodeView>,
    pub edges: Vec<EdgeView>,
    pub levels: Vec<Vec<String>>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct NodeView {
    pub name: String,
    pub handler: String,
    pub level: u32,
    pub depends_on: Vec<String>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct EdgeView {
    pub from: String,
    pub to: String,
}

impl GraphView {
    /// The graph of a validated template (its DAG cannot fail to build).
    pub fn of(t: &Template) -> GraphView {
        let levels_of: Vec<u32> = t.dag().map(|d| d.levels()).unwrap_or_default();
        let mut nodes = Vec::with_capacity(t.steps.len());
        let mut edges = Vec::new();
        let mut levels: Vec<Vec<String>> = Vec::new();
        for (i, s) in t.steps.iter().enumerate() {
            let level = levels_of.get(i).copied().unwrap_or(0);
            for p in &s.depends_on {
                edges.push(EdgeView {
                    from: p.clone(),
                    to: s.name.clone(),
                });
            }
            let l = level as usize;
            if levels.len() <= l {
                levels.resize(l + 1, Vec::new());
            }
            levels[l].push(s.name.clone());
            nodes.push(NodeView {
                name: s.name.clone(),
                handler: s.handler.to_string(),
                level,
                depends_on: s.depends_on.clone(),
            });
        }
        GraphView {
            nodes,
            edges,
            levels,
        }
    }
}

/// A task. `tags`, `initiator`, `source_system` and `reason` are what its creator said.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskView {
    #[schema(value_type = i64)]
    pub id: TaskId,
    /// `namespace/name@version`.
    pub template: String,
    #[schema(value_type = TaskStateName)]
    pub state: TaskState,
    #[schema(value_type = Object)]
    pub context: Value,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub identity_key: Option<String>,
    pub tags: Vec<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub initiator: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub source_system: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub reason: Option<String>,
    /// The W3C trace context the task's spans are children of (the creator's, or its
    /// creation span's when the server exports traces).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub traceparent: Option<String>,
    pub step_count: u32,
    pub unfinished_steps: u32,
    pub error_steps: u32,
    pub created_at: DateTime<Utc>,
    pub updated_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub started_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<DateTime<Utc>>,
}

impl From<TaskRow> for TaskView {
    fn from(t: TaskRow) -> Self {
        let text = |k: &str| t.metadata.get(k).and_then(Value::as_str).map(str::to_owned);
        let tags = t
            .metadata
            .get("tags")
            .and_then(Value::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(Value::as_str)
                    .map(str::to_owned)
                    .collect()
            })
            .unwrap_or_default();
        TaskView {
            initiator: text("initiator"),
            source_system: text("source_system"),
            reason: text("reason"),
            traceparent: text(tasker_core::trace::METADATA_KEY),
            tags,
            id: t.id,
            template: t.template_key,
            state: t.state,
            context: t.context,
            identity_key: t.identity_key,
            step_count: t.step_count,
            unfinished_steps: t.unfinished_steps,
            error_steps: t.error_steps,
            created_at: t.created_at,
            updated_at: t.updated_at,
            started_at: t.started_at,
            finished_at: t.finished_at,
        }
    }
}

/// A task with its steps, their readiness, and its execution context.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskDetail {
    #[serde(flatten)]
    pub task: TaskView,
    pub steps: Vec<StepSummary>,
    #[schema(required = true)]
    pub execution: Option<ExecutionView>,
}

/// One step of a task, and why it is not running when it is not.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepSummary {
    #[schema(value_type = i64)]
    pub id: StepId,
    pub name: String,
    #[schema(value_type = StepStateName)]
    pub state: StepState,
    pub level: u32,
    pub attempts: u32,
    pub max_attempts: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ErrorKindName)]
    pub last_error_kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<DateTime<Utc>>,
    #[schema(required = true)]
    pub readiness: Option<ReadinessView>,
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ReadinessView {
    pub ready: bool,
    /// In words: "ready", "ready: priority 1 behind 300 ready steps of higher priority",
    /// "waiting for parents (1 of 2 done)", "scheduled for …", "retry at …", "failed (…)";
    /// empty while the step runs or after it ended.
    pub reason: String,
    /// The step's priority in effect, 1 (lowest) to 5 (highest).
    pub priority: u8,
    /// A delayed start: when the step becomes ready.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub not_before: Option<DateTime<Utc>>,
    pub dependencies_satisfied: bool,
    pub total_parents: u32,
    pub completed_parents: u32,
    pub retry_eligible: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_retry_at: Option<DateTime<Utc>>,
    /// Set while the step's task waits for a slot of its concurrency key.
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub concurrency: Option<ConcurrencyWaitView>,
}

/// A task waiting in its concurrency key's line.
#[derive(Debug, Serialize, ToSchema)]
pub struct ConcurrencyWaitView {
    /// The resolved key, e.g. `/customer_id=42`.
    pub key: String,
    /// Slots the key's tasks hold now.
    pub holding: u32,
    /// The waiting task's limit for the key.
    pub limit: u32,
}

impl ReadinessView {
    pub fn of(r: &ReadinessRow, now: DateTime<Utc>) -> ReadinessView {
        ReadinessView {
            ready: r.ready_for_execution,
            reason: r.reason(now),
            priority: r.priority.get(),
            not_before: r.not_before,
            dependencies_satisfied: r.dependencies_satisfied,
            total_parents: r.total_parents,
            completed_parents: r.completed_parents,
            retry_eligible: r.retry_eligible,
            next_retry_at: r.next_retry_at,
            concurrency: r.concurrency.as_ref().map(|w| ConcurrencyWaitView {
                key: w.key.clone(),
                holding: w.holding,
                limit: w.limit,
            }),
        }
    }
}

#[derive(Debug, Serialize, ToSchema)]
pub struct ExecutionView {
    pub total_steps: u32,
    pub pending_steps: u32,
    pub in_progress_steps: u32,
    pub waiting_for_retry_steps: u32,
    pub completed_steps: u32,
    pub resolved_steps: u32,
    pub failed_steps: u32,
    pub cancelled_steps: u32,
    pub ready_steps: u32,
    pub execution_status: String,
    pub recommended_action: String,
    pub completion_percentage: f64,
    pub health_status: String,
}

impl From<ExecutionContext> for ExecutionView {
    fn from(c: ExecutionContext) -> Self {
        ExecutionView {
            total_steps: c.total_steps,
            pending_steps: c.pending_steps,
            in_progress_steps: c.in_progress_steps,
            waiting_for_retry_steps: c.waiting_for_retry_steps,
            completed_steps: c.completed_steps,
            resolved_steps: c.resolved_steps,
            failed_steps: c.failed_steps,
            cancelled_steps: c.cancelled_steps,
            ready_steps: c.ready_steps,
            execution_status: c.execution_status,
            recommended_action: c.recommended_action,
            completion_percentage: c.completion_percentage,
            health_status: c.health_status,
        }
    }
}

/// One state change of a task or a step.
#[derive(Debug, Serialize, ToSchema)]
pub struct TransitionView<S> {
    pub sort_key: u32,
    pub from_state: S,
    pub to_state: S,
    pub at: DateTime<Utc>,
    #[schema(value_type = Value)]
    pub metadata: Value,
}

impl<S> From<TransitionRow<S>> for TransitionView<S> {
    fn from(t: TransitionRow<S>) -> Self {
        TransitionView {
            sort_key: t.sort_key,
            from_state: t.from_state,
            to_state: t.to_state,
            at: t.created_at,
            metadata: t.metadata,
        }
    }
}

/// A step with every attempt and its history.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepDetail {
    #[schema(value_type = i64)]
    pub id: StepId,
    #[schema(value_type = i64)]
    pub task_id: TaskId,
    pub name: String,
    #[schema(value_type = StepStateName)]
    pub state: StepState,
    pub attempts: u32,
    pub max_attempts: u32,
    pub retryable: bool,
    pub lease_losses: u32,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub worker: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub ready_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ErrorKindName)]
    pub last_error_kind: Option<ErrorKind>,
    /// What the step returned (or what resolved it by hand).
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = Value)]
    pub result: Option<Value>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub finished_at: Option<DateTime<Utc>>,
    pub attempt_history: Vec<AttemptView>,
    #[schema(value_type = Vec<TransitionView<StepStateName>>)]
    pub transitions: Vec<TransitionView<StepState>>,
}

impl StepDetail {
    pub fn of(
        s: StepRow,
        attempts: Vec<AttemptRow>,
        transitions: Vec<TransitionRow<StepState>>,
    ) -> StepDetail {
        StepDetail {
            id: s.id,
            task_id: s.task_id,
            name: s.name,
            state: s.state,
            attempts: s.attempts,
            max_attempts: s.max_attempts,
            retryable: s.retryable,
            lease_losses: s.lease_losses,
            worker: s.worker,
            ready_at: s.ready_at,
            last_error_kind: s.last_error_kind,
            result: s.result,
            finished_at: s.finished_at,
            attempt_history: attempts.into_iter().map(AttemptView::from).collect(),
            transitions: transitions.into_iter().map(TransitionView::from).collect(),
        }
    }
}

/// One `log` call of a handler.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogLineView {
    /// Microseconds since the attempt started.
    pub at_us: u64,
    #[schema(value_type = LogLevelName)]
    pub level: &'static str,
    pub message: String,
}

/// What the attempt's bounds (`[limits] max_logs`, `log_bytes`, `stdio_bytes`) threw away.
#[derive(Debug, Serialize, ToSchema)]
pub struct LogDroppedView {
    pub lines: u32,
    pub stdout_bytes: u64,
    pub stderr_bytes: u64,
}

/// One outbound HTTP request of an attempt, granted or refused by the host.
#[derive(Debug, Serialize, ToSchema)]
pub struct HttpCallView {
    /// Microseconds since the attempt started.
    pub at_us: u64,
    pub method: String,
    /// Without the query.
    pub url: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub status: Option<u16>,
    pub request_bytes: u64,
    pub response_bytes: u64,
    pub duration_us: u64,
    /// The host refused it before any connection (see `grants.http`).
    pub refused: bool,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub error: Option<String>,
}

/// What one attempt's handler said: its log records, stdout and stderr, and the HTTP
/// requests it made.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptLogView {
    /// As in the step's `attempt_history`.
    pub attempt: i64,
    #[schema(value_type = AttemptOutcomeName)]
    pub outcome: &'static str,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
    pub lines: Vec<LogLineView>,
    pub stdout: String,
    pub stderr: String,
    pub dropped: LogDroppedView,
    pub http: Vec<HttpCallView>,
}

impl From<AttemptLogRow> for AttemptLogView {
    fn from(r: AttemptLogRow) -> Self {
        let log = r.log;
        AttemptLogView {
            attempt: r.attempt_no,
            outcome: r.outcome.as_str(),
            started_at: r.started_at,
            finished_at: r.finished_at,
            lines: log
                .lines
                .into_iter()
                .map(|l| LogLineView {
                    at_us: l.at_us,
                    level: l.level.as_str(),
                    message: l.message,
                })
                .collect(),
            stdout: log.stdout,
            stderr: log.stderr,
            dropped: LogDroppedView {
                lines: log.dropped.lines,
                stdout_bytes: log.dropped.stdout_bytes,
                stderr_bytes: log.dropped.stderr_bytes,
            },
            http: log
                .http
                .into_iter()
                .map(|h| HttpCallView {
                    at_us: h.at_us,
                    method: h.method,
                    url: h.url,
                    status: h.status,
                    request_bytes: h.request_bytes,
                    response_bytes: h.response_bytes,
                    duration_us: h.duration_us,
                    refused: h.refused,
                    error: h.error,
                })
                .collect(),
        }
    }
}

/// A step's attempts with what each said, oldest first.
#[derive(Debug, Serialize, ToSchema)]
pub struct StepLogs {
    #[schema(value_type = i64)]
    pub step_id: StepId,
    #[schema(value_type = StepStateName)]
    pub state: StepState,
    /// Attempts that ran (completed or failed); lost leases and releases ran no handler to
    /// its end.
    pub attempts: Vec<AttemptLogView>,
}

/// One attempt: how it ended, what the retry decision was, and what it cost in the sandbox.
#[derive(Debug, Serialize, ToSchema)]
pub struct AttemptView {
    pub attempt: i64,
    #[schema(value_type = AttemptOutcomeName)]
    pub outcome: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = ErrorKindName)]
    pub error_kind: Option<ErrorKind>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub message: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(value_type = RetryDecisionName)]
    pub decision: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub decided_by: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub next_ready_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub fuel: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub peak_memory_bytes: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub wall_us: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub plugin_hash: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub worker: Option<String>,
    pub started_at: DateTime<Utc>,
    pub finished_at: DateTime<Utc>,
}

impl From<AttemptRow> for AttemptView {
    fn from(a: AttemptRow) -> Self {
        AttemptView {
            attempt: a.attempt_no,
            outcome: a.outcome.as_str(),
            error_kind: a.error_kind,
            message: a.message,
            decision: a.decision.map(|d| d.as_str().to_owned()),
            decided_by: a.decided_by,
            next_ready_at: a.next_ready_at,
            fuel: a.fuel,
            peak_memory_bytes: a.peak_memory_bytes,
            wall_us: a.wall_us,
            plugin_hash: a.plugin_hash,
            worker: a.worker,
            started_at: a.started_at,
            finished_at: a.finished_at,
        }
    }
}

/// How many tasks are in each state.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskCountsView {
    pub pending: u64,
    pub in_progress: u64,
    pub complete: u64,
    pub error: u64,
    pub cancelled: u64,
    pub total: u64,
}

impl From<TaskCounts> for TaskCountsView {
    fn from(c: TaskCounts) -> Self {
        TaskCountsView {
            pending: c.pending,
            in_progress: c.in_progress,
            complete: c.complete,
            error: c.error,
            cancelled: c.cancelled,
            total: c.total(),
        }
    }
}

/// One attempt of one of a task's steps.
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskAttemptView {
    #[schema(value_type = i64)]
    pub step_id: StepId,
    pub step_name: String,
    #[serde(flatten)]
    pub attempt: AttemptView,
}

/// A task's attempts, in start order (a timeline).
#[derive(Debug, Serialize, ToSchema)]
pub struct TaskAttempts {
    pub attempts: Vec<TaskAttemptView>,
}

/// A token as listed (never its secret).
#[derive(Debug, Serialize, ToSchema)]
pub struct TokenView {
    pub name: String,
    /// Permissions (`resource:action`), `resource:*` or `*`.
    #[schema(example = json!(["tasks:read", "templates:*"]))]
    pub permissions: Vec<String>,
    pub created_at: DateTime<Utc>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub expires_at: Option<DateTime<Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    #[schema(nullable = false)]
    pub revoked_at: Option<DateTime<Utc>>,
}

impl From<TokenRow> for TokenView {
    fn from(t: TokenRow) -> Self {
        TokenView {
            name: t.name,
            permissions: t.permissions,
            created_at: t.created_at,
            expires_at: t.expires_at,
            revoked_at: t.revoked_at,
        }
    }
}
