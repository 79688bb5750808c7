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
use std::sync::{Arc, Mutex, OnceLock};

use serde_json::Value;
use tasker_core::trace::{METADATA_KEY, TraceParent};
use tasker_store::{Store, TaskId};
use tokio::sync::OnceCell;

pub use tasker_core::trace::TARGET;

/// The OpenTelemetry side, installed once by the binary.
pub trait Tracer: Send + Sync + 'static {
    /// Makes `span` (not yet entered) a child of `parent`.
    fn set_parent(&self, span: &tracing::Span, parent: &TraceParent);
    /// The context of `span`, to store as a parent for later spans.
    fn context_of(&self, span: &tracing::Span) -> Option<TraceParent>;
    /// Whether spans are exported now (a benchmark pauses its tracer).
    fn enabled(&self) -> bool {
        true
    }
}

static TRACER: OnceLock<Box<dyn Tracer>> = OnceLock::new();

/// Installs the tracer; false when one was installed already.
pub fn install(t: Box<dyn Tracer>) -> bool {
    TRACER.set(t).is_ok()
}

/// The installed tracer, while it is enabled.
pub fn tracer() -> Option<&'static dyn Tracer> {
    TRACER.get().map(|t| &**t).filter(|t| t.enabled())
}

/// The traceparent stored in a task's metadata, if it is one.
pub fn stored(metadata: &Value) -> Option<TraceParent> {
    metadata.get(METADATA_KEY)?.as_str()?.parse().ok()
}

/// Parents of the tasks a worker has run steps of (bounded: emptied when full). The steps
/// of one claim batch mostly share a few tasks and start at once: each task is read once,
/// the others wait for that read (a read per step would queue on the connection pool).
#[derive(Default)]
pub struct ParentCache(Mutex<HashMap<TaskId, Arc<OnceCell<TraceParent>>>>);

const CACHE_CAP: usize = 10_000;

impl ParentCache {
    /// `task`'s parent: stored with it, or derived; `None` when the task cannot be read (not
    /// remembered: the next step of the task reads again).
    pub async fn get<S: Store>(&self, store: &S, task: TaskId) -> Option<TraceParent> {
        let cell = {
            let mut m = self.0.lock().expect("parent cache");
            if m.len() >= CACHE_CAP && !m.contains_key(&task) {
                m.clear();
            }
            m.entry(task).or_default().clone()
        };
        cell.get_or_try_init(|| async {
            let row = store.task(task).await.ok().flatten().ok_or(())?;
            Ok::<_, ()>(stored(&row.metadata).unwrap_or_else(|| {
                TraceParent::derived(task.get(), row.created_at.timestamp_micros())
            }))
        })
        .await
        .ok()
        .copied()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::Utc;
    use serde_json::json;
    use tasker_core::fixtures;
    use tasker_store::{NewTask, SqliteStore};

    #[tokio::test]
    async fn a_parent_is_stored_or_derived_and_a_failed_read_is_not_remembered() {
        let store = SqliteStore::temporary().await.unwrap();
        let t = fixtures::linear(1, fixtures::NOOP);
        store.register_template(&t).await.unwrap();
        let cache = ParentCache::default();
        // No such task yet: no parent, and nothing remembered for it.
        assert_eq!(cache.get(&store, TaskId::new(1)).await, None);
        let plain = store
            .create_task(&NewTask::new(t.key(), json!({})), Utc::now())
            .await
            .unwrap()
            .task_id;
        assert_eq!(plain, TaskId::new(1));
        let row = store.task(plain).await.unwrap().unwrap();
        assert_eq!(
            cache.get(&store, plain).await,
            Some(TraceParent::derived(1, row.created_at.timestamp_micros()))
        );
        let given = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let mut req = NewTask::new(t.key(), json!({}));
        req.metadata = json!({ METADATA_KEY: given });
        let traced = store.create_task(&req, Utc::now()).await.unwrap().task_id;
        assert_eq!(cache.get(&store, traced).await, given.parse().ok());
    }
}
