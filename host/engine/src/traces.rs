//! Distributed traces. The engine names the spans (target [`TARGET`]) and carries W3C
//! traceparents; the binary, which holds the OpenTelemetry SDK, installs a [`Tracer`] that
//! links a span to a parent and reads a span's context. Without one, spans are plain
//! `tracing` spans and nothing here costs more than a check.
//!
//! One trace per task: its creation span's context is stored in the task's metadata
//! (`traceparent`, a caller's traceparent as its parent), and every attempt of every step, on
//! any worker, is a child of it. A task created without tracing gets a parent derived from
//! its id and creation instant, so its attempts still share one trace.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};

use serde_json::Value;
use tasker_core::trace::{METADATA_KEY, TraceParent};
use tasker_store::{Store, TaskId};

pub use tasker_core::trace::TARGET;

/// The OpenTelemetry side, installed once by the binary.
pub trait Tracer: Send + Sync + 'static {
    /// Makes `span` (not yet entered) a child of `parent`.
    fn set_parent(&self, span: &tracing::Span, parent: &TraceParent);
    /// The context of `span`, to store as a parent for later spans.
    fn context_of(&self, span: &tracing::Span) -> Option<TraceParent>;
}

static TRACER: OnceLock<Box<dyn Tracer>> = OnceLock::new();

/// Installs the tracer; false when one was installed already.
pub fn install(t: Box<dyn Tracer>) -> bool {
    TRACER.set(t).is_ok()
}

pub fn tracer() -> Option<&'static dyn Tracer> {
    TRACER.get().map(|t| &**t)
}

/// The traceparent stored in a task's metadata, if it is one.
pub fn stored(metadata: &Value) -> Option<TraceParent> {
    metadata.get(METADATA_KEY)?.as_str()?.parse().ok()
}

/// Parents of the tasks a worker has run steps of (bounded: emptied when full).
#[derive(Default)]
pub struct ParentCache(Mutex<HashMap<TaskId, TraceParent>>);

const CACHE_CAP: usize = 10_000;

impl ParentCache {
    /// `task`'s parent: stored with it, or derived; `None` when the task cannot be read.
    pub async fn get<S: Store>(&self, store: &S, task: TaskId) -> Option<TraceParent> {
        if let Some(p) = self.0.lock().expect("parent cache").get(&task) {
            return Some(*p);
        }
        let row = store.task(task).await.ok().flatten()?;
        let parent = stored(&row.metadata)
            .unwrap_or_else(|| TraceParent::derived(task.get(), row.created_at.timestamp_micros()));
        let mut m = self.0.lock().expect("parent cache");
        if m.len() >= CACHE_CAP {
            m.clear();
        }
        m.insert(task, parent);
        Some(parent)
    }
}
