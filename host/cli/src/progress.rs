//! Live progress of one task: a bar per step on a terminal, one line per event otherwise.

use std::collections::HashMap;
use std::io::IsTerminal;
use std::time::Instant;

use indicatif::{MultiProgress, ProgressBar, ProgressDrawTarget, ProgressStyle};
use tasker_core::events;

use crate::report::guest_text;
use tasker_core::template::Template;
use tasker_engine::{Event, EventBus};
use tasker_store::TaskId;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

pub struct Progress {
    stop: CancellationToken,
    handle: JoinHandle<()>,
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
    pub fn start(bus: &EventBus, task_id: TaskId, template: &Template, plain: bool) -> Progress {
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
        let bars: HashMap<String, ProgressBar> = template
            .steps
            .iter()
            .map(|s| {
                let bar = multi.add(ProgressBar::new_spinner());
                bar.set_style(style.clone());
                bar.set_prefix(s.name.clone());
                bar.set_message("pending");
                (s.name.clone(), bar)
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
