//! Live progress of one task: a bar per step on a terminal, one line per event otherwise.
//! The events come from the worker's bus (`run`) or, when the worker runs elsewhere
//! (`submit --wait`), from the store's event log through [`relay`].

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde_json::Value;
use tasker_core::state::{StepState, TaskState};
use tasker_store::{
    AnyStore, EventFilter, RetryDecision, STEP_TRANSITION, StepId, Store, StoredEvent,
};

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tasker_core::events;

use crate::report::guest_text;
use tasker_engine::{Event, EventBus};
use tasker_store::TaskId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Progress {
    stop: CancellationToken,
    handle: JoinHandle<()>,
}

/// Events [`relay`] reads per call; a full page is followed by another at once.
const RELAY_PAGE: u32 = 500;
/// How often [`relay`] reads the event log.
const RELAY_POLL: Duration = Duration::from_millis(200);
/// How long [`relay`] waits for the log to show an end that the task row already shows
/// (PostgreSQL's log is read below the xmin horizon, so it can lag the rows).
const RELAY_LAG: Duration = Duration::from_secs(5);

/// What a failed attempt's row says, for its progress lines.
pub struct FailureInfo {
    pub message: String,
    pub kind: Option<String>,
    pub next_ready_at: Option<Value>,
    pub exhausted: bool,
}

/// Publishes `task`'s changes from the store's event log on `bus` as the worker's events,
/// until the task ends (complete, error or cancelled); returns that state.
pub async fn relay(store: &AnyStore, task: TaskId, bus: &EventBus) -> Result<TaskState> {
    let filter = EventFilter {
        task_id: Some(task),
        template: None,
    };
    let mut after: Option<String> = None;
    let mut ended: Option<(TaskState, Instant)> = None;
    loop {
        let page = store
            .events_after(&filter, after.as_deref(), RELAY_PAGE)
            .await?;
        for e in &page {
            after = Some(e.cursor.clone());
            let failure = |step, attempt| failure_in_store(store, step, attempt);
            for ev in translate(e, failure).await? {
                bus.publish(ev);
            }
            if e.step_id.is_none()
                && let Some(state) = e.to_state.as_deref().and_then(|s| s.parse().ok())
                && task_ended(state)
            {
                return Ok(state);
            }
        }
        if page.len() == RELAY_PAGE as usize {
            continue;
        }
        match ended {
            Some((state, since)) if since.elapsed() >= RELAY_LAG => return Ok(state),
            Some(_) => {}
            None => {
                let row = store
                    .task(task)
                    .await?
                    .with_context(|| format!("task {task} disappeared"))?;
                if task_ended(row.state) {
                    ended = Some((row.state, Instant::now()));
                }
            }
        }
        tokio::time::sleep(RELAY_POLL).await;
    }
}

fn task_ended(state: TaskState) -> bool {
    matches!(
        state,
        TaskState::Complete | TaskState::Error | TaskState::Cancelled
    )
}

async fn failure_in_store(
    store: &AnyStore,
    step: StepId,
    attempt: i32,
) -> Result<Option<FailureInfo>> {
    let attempts = store.attempts_of_step(step).await?;
    Ok(attempts
        .into_iter()
        .rev()
        .find(|a| a.attempt_no == i64::from(attempt))
        .map(|a| FailureInfo {
            message: a.message.unwrap_or_default(),
            kind: a.error_kind.map(|k| k.as_str().to_owned()),
            next_ready_at: a.next_ready_at.map(|t| serde_json::json!(t)),
            exhausted: a.decision == Some(RetryDecision::Exhausted),
        }))
}

/// The worker's events that one logged change stands for; `failure` reads a failed
/// attempt's message, retry instant and decision (from its attempt row).
pub async fn translate<F, Fut>(e: &StoredEvent, failure: F) -> Result<Vec<Event>>
where
    F: FnOnce(StepId, i32) -> Fut,
    Fut: std::future::Future<Output = Result<Option<FailureInfo>>>,
{
    let Some(step_id) = e.step_id else {
        let name = match e.to_state.as_deref().and_then(|s| s.parse().ok()) {
            Some(TaskState::Complete) => events::TASK_COMPLETED,
            Some(TaskState::Error) => events::TASK_FAILED,
            Some(TaskState::Cancelled) => events::TASK_CANCELLED,
            _ => return Ok(Vec::new()),
        };
        return Ok(vec![Event::task(name, e.at, e.task_id)]);
    };
    let step = e.step_name.as_deref().unwrap_or("?");
    let attempt = e.attempt.unwrap_or(0);
    let at = |name: &str| Event::step(name, e.at, e.task_id, step_id, step, attempt);
    if e.name != STEP_TRANSITION {
        let mut ev = at(&e.name);
        ev.payload = e.payload.clone();
        return Ok(vec![ev]);
    }
    let from = e
        .from_state
        .as_deref()
        .and_then(|s| s.parse::<StepState>().ok());
    let to = e
        .to_state
        .as_deref()
        .and_then(|s| s.parse::<StepState>().ok());
    Ok(match (from, to) {
        (_, Some(StepState::InProgress)) => vec![at(events::STEP_STARTED)],
        (_, Some(StepState::Complete)) => vec![at(events::STEP_COMPLETED)],
        (Some(StepState::InProgress), Some(StepState::Pending)) => {
            vec![at(events::STEP_LEASE_LOST)]
        }
        (
            Some(StepState::InProgress),
            Some(to @ (StepState::WaitingForRetry | StepState::Error)),
        ) => {
            let row = failure(step_id, attempt).await?;
            let mut failed = at(events::STEP_FAILED);
            failed.payload = serde_json::json!({
                "message": row.as_ref().map(|a| a.message.as_str()).unwrap_or_default(),
                "kind": row.as_ref().and_then(|a| a.kind.as_deref()),
            });
            let mut out = vec![failed];
            if to == StepState::WaitingForRetry {
                let mut next = at(events::STEP_RETRY_SCHEDULED);
                next.payload = serde_json::json!({
                    "next_ready_at": row.as_ref().and_then(|a| a.next_ready_at.clone()),
                });
                out.push(next);
            } else if row.as_ref().is_some_and(|a| a.exhausted) {
                out.push(at(events::STEP_EXHAUSTED));
            }
            out
        }
        _ => Vec::new(),
    })
}

/// What one line or bar says about an event, or `None` to skip it.
pub fn describe(ev: &Event) -> Option<String> {
    let p = &ev.payload;
    let attempt = ev.attempt.unwrap_or(0);
    Some(match ev.name.as_str() {
        events::STEP_STARTED => format!("running (attempt {attempt})"),
        events::STEP_COMPLETED => format!("complete (attempt {attempt})"),
        events::STEP_FAILED => format!(
            "attempt {attempt} failed: {}",
            guest_text(p["message"].as_str().unwrap_or("?"), 500)
        ),
        events::STEP_RETRY_SCHEDULED => format!(
            "waiting for retry at {}",
            p["next_ready_at"].as_str().unwrap_or("?")
        ),
        events::STEP_EXHAUSTED => format!("gave up after {attempt} attempts"),
        events::STEP_LEASE_LOST => "lease lost; the step will run again".to_owned(),
        events::TASK_COMPLETED => "task complete".to_owned(),
        events::TASK_FAILED => "task failed".to_owned(),
        events::TASK_CANCELLED => "task cancelled".to_owned(),
        n if n.starts_with(events::CUSTOM_PREFIX) => {
            format!(
                "event {} {}",
                guest_text(n, 120),
                guest_text(&p.to_string(), 500)
            )
        }
        _ => return None,
    })
}

impl Progress {
    /// A bar (or lines) for each of `steps`.
    pub fn start(bus: &EventBus, task_id: TaskId, steps: &[String], plain: bool) -> Progress {
        let mut sub = bus.subscribe(&["step.*", "task.*", "custom.*"]);
        let stop = CancellationToken::new();
        let fancy = !plain && std::io::stderr().is_terminal();
        let multi = MultiProgress::with_draw_target(if fancy {
            ProgressDrawTarget::stderr()
        } else {
            ProgressDrawTarget::hidden()
        });
        let style = ProgressStyle::with_template("{spinner} {prefix:<24} {msg}")
            .expect("valid template")
            .tick_chars("◐◓◑◒✓");
        let bars: HashMap<String, ProgressBar> = steps
            .iter()
            .map(|name| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(name.clone());
                bar.set_message("pending");
                (name.clone(), bar)
            })
            .collect();
        let started = Instant::now();
        let handle = tokio::spawn({
            let stop = stop.clone();
            async move {
                let show = |ev: &Event| {
                    if ev.task_id != Some(task_id) {
                        return;
                    }
                    let Some(text) = describe(ev) else { return };
                    let step = ev.step_name.as_deref();
                    if fancy {
                        if let Some(bar) = step.and_then(|s| bars.get(s)) {
                            bar.set_message(text);
                            if ev.name == events::STEP_COMPLETED {
                                bar.finish();
                            } else {
                                bar.tick();
                            }
                        }
                    } else {
                        let at = started.elapsed().as_secs_f64();
                        match step {
                            Some(s) => eprintln!("[{at:7.3}s] {s}: {text}"),
                            None => eprintln!("[{at:7.3}s] {text}"),
                        }
                    }
                };
                loop {
                    tokio::select! {
                        ev = sub.recv() => match ev {
                            Some(ev) => show(&ev),
                            None => break,
                        },
                        _ = stop.cancelled() => break,
                    }
                }
                // Show what was published before the stop.
                while let Some(ev) = sub.try_recv() {
                    show(&ev);
                }
                for bar in bars.values() {
                    bar.finish();
                }
            }
        });
        Progress { stop, handle }
    }

    /// Stops after the events already published are shown.
    pub async fn finish(self) {
        self.stop.cancel();
        let _ = self.handle.await;
    }
}
