//! The one lifecycle event bus.
//!
//! Publishing never waits: every event becomes a tracing event and a metrics counter, then is
//! broadcast to in-process subscribers over a bounded channel. A subscriber that falls behind
//! loses the oldest events (counted in `tasker_events_dropped_total`), and one that panics only
//! ends itself. Durable delivery to hooks is a separate outbox.

use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use tasker_core::events;
use tasker_store::{StepId, TaskId};
use tokio::sync::broadcast;
use tokio::task::JoinHandle;

/// One lifecycle or custom event.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Event {
    /// A name from [`tasker_core::events`], or `custom.<name>` from a handler.
    pub name: String,
    pub at: DateTime<Utc>,
    pub task_id: Option<TaskId>,
    pub step_id: Option<StepId>,
    pub step_name: Option<String>,
    pub attempt: Option<i32>,
    pub payload: Value,
}

impl Event {
    pub fn task(name: &str, at: DateTime<Utc>, task_id: impl Into<TaskId>) -> Event {
        Event {
            name: name.to_owned(),
            at,
            task_id: Some(task_id.into()),
            step_id: None,
            step_name: None,
            attempt: None,
            payload: Value::Null,
        }
    }

    pub fn step(
        name: &str,
        at: DateTime<Utc>,
        task_id: impl Into<TaskId>,
        step_id: impl Into<StepId>,
        step_name: &str,
        attempt: i32,
    ) -> Event {
        Event {
            name: name.to_owned(),
            at,
            task_id: Some(task_id.into()),
            step_id: Some(step_id.into()),
            step_name: Some(step_name.to_owned()),
            attempt: Some(attempt),
            payload: Value::Null,
        }
    }

    pub fn with_payload(mut self, payload: Value) -> Event {
        self.payload = payload;
        self
    }
}

/// Fan-out of events to tracing, metrics and subscribers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct EventBus {
    tx: broadcast::Sender<Arc<Event>>,
}

impl Default for EventBus {
    fn default() -> Self {
        EventBus::new(4096)
    }
}

impl EventBus {
    /// `capacity` is how many events a subscriber may fall behind before it loses some.
    pub fn new(capacity: usize) -> EventBus {
        let (tx, _) = broadcast::channel(capacity.max(1));
        EventBus { tx }
    }

    /// Publishes without waiting for anyone.
    pub fn publish(&self, event: Event) {
        tracing::info!(
            target: "tasker::event",
            event = %event.name,
            task_id = event.task_id.map(TaskId::get),
            step_id = event.step_id.map(StepId::get),
            step = event.step_name.as_deref(),
            attempt = event.attempt,
            "{}",
            event.name
        );
        metrics::counter!(tasker_core::metrics::EVENTS, "event" => metric_label(&event.name))
            .increment(1);
        // An error only means nobody is subscribed.
        let _ = self.tx.send(Arc::new(event));
    }

    /// A filtered stream of events matching any of `patterns` (see [`events::matches`]).
    pub fn subscribe(&self, patterns: &[&str]) -> Subscription {
        Subscription {
            rx: self.tx.subscribe(),
            patterns: patterns.iter().map(|p| (*p).to_owned()).collect(),
            dropped: 0,
        }
    }

    /// Runs `f` on every matching event in its own task, so it can be slow or panic without
    /// touching the workflow. The task ends when the bus is dropped or `f` panics.
    pub fn spawn_subscriber<F>(&self, patterns: &[&str], mut f: F) -> JoinHandle<()>
    where
        F: FnMut(&Event) + Send + 'static,
    {
        let mut sub = self.subscribe(patterns);
        tokio::spawn(async move {
            while let Some(ev) = sub.recv().await {
                f(&ev);
            }
        })
    }
}

/// Custom event names are unbounded; metrics get one label for all of them.
fn metric_label(name: &str) -> &'static str {
    events::ALL
        .iter()
        .copied()
        .find(|n| *n == name)
        .unwrap_or("custom")
}

/// The receiving end of [`EventBus::subscribe`].
#[derive(Debug)]
pub struct Subscription {
    rx: broadcast::Receiver<Arc<Event>>,
    patterns: Vec<String>,
    dropped: u64,
}

impl Subscription {
    /// The next matching event; `None` once the bus is gone.
    pub async fn recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.recv().await {
                Ok(ev) if self.wants(&ev.name) => return Some(ev),
                Ok(_) => {}
                Err(broadcast::error::RecvError::Lagged(n)) => {
                    self.dropped += n;
                    metrics::counter!(tasker_core::metrics::EVENTS_DROPPED).increment(n);
                    tracing::warn!(dropped = n, "event subscriber fell behind; events dropped");
                }
                Err(broadcast::error::RecvError::Closed) => return None,
            }
        }
    }

    /// A matching event if one is already queued.
    pub fn try_recv(&mut self) -> Option<Arc<Event>> {
        loop {
            match self.rx.try_recv() {
                Ok(ev) if self.wants(&ev.name) => return Some(ev),
                Ok(_) => {}
                Err(broadcast::error::TryRecvError::Lagged(n)) => {
                    self.dropped += n;
                    metrics::counter!(tasker_core::metrics::EVENTS_DROPPED).increment(n);
                }
                Err(_) => return None,
            }
        }
    }

    /// Events this subscriber lost by falling behind.
    pub fn dropped(&self) -> u64 {
        self.dropped
    }

    fn wants(&self, name: &str) -> bool {
        self.patterns.iter().any(|p| events::matches(p, name))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tasker_core::events::{STEP_COMPLETED, STEP_FAILED, TASK_COMPLETED};

    fn at() -> DateTime<Utc> {
        DateTime::from_timestamp(1_893_456_000, 0).unwrap()
    }

    #[tokio::test]
    async fn subscribers_get_matching_events_in_order() {
        let bus = EventBus::new(16);
        let mut steps = bus.subscribe(&["step.*"]);
        let mut all = bus.subscribe(&["*"]);
        bus.publish(Event::step(STEP_COMPLETED, at(), 1, 10, "a", 1));
        bus.publish(Event::task(TASK_COMPLETED, at(), 1));
        bus.publish(Event::step(STEP_FAILED, at(), 1, 11, "b", 2));
        assert_eq!(steps.recv().await.unwrap().name, STEP_COMPLETED);
        assert_eq!(steps.recv().await.unwrap().name, STEP_FAILED);
        assert!(steps.try_recv().is_none());
        let names: Vec<String> = (0..3)
            .map(|_| all.try_recv().unwrap().name.clone())
            .collect();
        assert_eq!(names, vec![STEP_COMPLETED, TASK_COMPLETED, STEP_FAILED]);
    }

    #[tokio::test]
    async fn a_slow_subscriber_loses_old_events_but_never_blocks_publishing() {
        let bus = EventBus::new(4);
        let mut slow = bus.subscribe(&["*"]);
        for i in 0..100 {
            bus.publish(Event::task(TASK_COMPLETED, at(), i));
        }
        // Publishing 100 events into a 4-slot channel returned at once; the reader sees the
        // newest 4 and counts the rest as dropped.
        let mut seen = Vec::new();
        while let Some(ev) = slow.try_recv() {
            seen.push(ev.task_id.unwrap());
        }
        assert_eq!(seen, vec![96, 97, 98, 99]);
        assert_eq!(slow.dropped(), 96);
    }

    #[tokio::test]
    async fn a_panicking_subscriber_does_not_break_the_bus() {
        let bus = EventBus::new(16);
        let bad = bus.spawn_subscriber(&["*"], |_| panic!("subscriber bug"));
        let mut good = bus.subscribe(&["task.*"]);
        bus.publish(Event::task(TASK_COMPLETED, at(), 1));
        let err = tokio::time::timeout(Duration::from_secs(5), bad)
            .await
            .unwrap()
            .unwrap_err();
        assert!(err.is_panic());
        bus.publish(Event::task(TASK_COMPLETED, at(), 2));
        assert_eq!(good.recv().await.unwrap().task_id, Some(TaskId::new(1)));
        assert_eq!(good.recv().await.unwrap().task_id, Some(TaskId::new(2)));
    }

    #[test]
    fn events_reach_metrics() {
        let recorder = metrics_util::debugging::DebuggingRecorder::new();
        let snapshotter = recorder.snapshotter();
        metrics::with_local_recorder(&recorder, || {
            let bus = EventBus::new(4);
            bus.publish(Event::task(TASK_COMPLETED, at(), 1));
            bus.publish(Event::task("custom.payment_charged", at(), 1));
            bus.publish(Event::task(TASK_COMPLETED, at(), 2));
        });
        let mut counts = std::collections::BTreeMap::new();
        for (key, _, _, value) in snapshotter.snapshot().into_vec() {
            if let metrics_util::debugging::DebugValue::Counter(n) = value {
                let label = key.key().labels().next().unwrap().value().to_owned();
                counts.insert(label, n);
            }
        }
        assert_eq!(counts.get(TASK_COMPLETED), Some(&2));
        assert_eq!(counts.get("custom"), Some(&1));
    }
}
