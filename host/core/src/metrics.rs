//! Every metric Tasker records, in one catalogue: its name (Prometheus conventions: a
//! `tasker_` prefix, base units, `_total` on counters), kind, help text and labels. The call
//! sites use these constants; the exporter describes each metric from [`CATALOGUE`]; a test
//! checks the two agree.
//!
//! Labels are bounded: template keys, step names, handlers, error kinds, outcomes, store
//! operations. Never task or step ids.

/// What a metric is.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric of the catalogue.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Metric {
    pub name: &'static str,
    pub kind: Kind,
    pub help: &'static str,
    pub labels: &'static [&'static str],
}

macro_rules! catalogue {
    ($($id:ident = $name:literal, $kind:ident, [$($label:literal),*], $help:literal;)*) => {
        $(
            #[doc = $help]
            pub const $id: &str = $name;
        )*
        /// Every metric, in the order of the README's table.
        pub const CATALOGUE: &[Metric] = &[
            $(Metric { name: $name, kind: Kind::$kind, help: $help, labels: &[$($label),*] },)*
        ];
    };
}

catalogue! {
    STEPS_STARTED = "tasker_steps_started_total", Counter, ["template", "step", "handler"],
        "Step attempts started by this worker.";
    STEPS_COMPLETED = "tasker_steps_completed_total", Counter, ["template", "step", "handler"],
        "Step attempts that succeeded and were recorded.";
    STEPS_FAILED = "tasker_steps_failed_total", Counter, ["template", "step", "handler", "kind"],
        "Step attempts that failed and were recorded, by error kind.";
    STEPS_RETRIED = "tasker_steps_retried_total", Counter, ["template", "step", "handler"],
        "Failed attempts that were scheduled for another attempt.";
    STEPS_EXHAUSTED = "tasker_steps_exhausted_total", Counter, ["template", "step", "handler"],
        "Steps that failed for good: retries exhausted or a permanent error.";
    STEP_DURATION = "tasker_step_duration_seconds", Histogram, ["template", "step", "handler", "outcome"],
        "Wall time of one step attempt on the worker, from start to result.";
    STEP_FUEL = "tasker_sandbox_fuel_consumed", Histogram, ["template", "step", "handler"],
        "Wasmtime fuel one attempt consumed.";
    STEP_MEMORY = "tasker_sandbox_peak_memory_bytes", Histogram, ["template", "step", "handler"],
        "Peak linear memory of one attempt.";
    TASKS_FINISHED = "tasker_tasks_finished_total", Counter, ["state"],
        "Tasks this worker saw finish, by final state.";
    QUEUE_STEPS = "tasker_queue_steps", Gauge, ["state"],
        "Steps by queue state (ready, waiting_for_retry, in_progress), sampled from the store at scrape.";
    QUEUE_OLDEST_READY = "tasker_queue_oldest_ready_age_seconds", Gauge, [],
        "Age of the oldest ready step (0 when none), sampled from the store at scrape.";
    LEASES_EXPIRED = "tasker_leases_expired_total", Counter, [],
        "Leases the sweeper took back from workers that stopped heartbeating.";
    LEASES_LOST = "tasker_lease_lost_total", Counter, [],
        "Results this worker could not record because its lease was gone.";
    HOOK_DELIVERIES = "tasker_hook_deliveries_total", Counter, ["outcome"],
        "Hook deliveries by outcome (delivered, failed, dead).";
    HOOK_LAG = "tasker_hook_delivery_lag_seconds", Histogram, [],
        "Time from an event to its delivery to a hook.";
    EVENTS = "tasker_events_total", Counter, ["event"],
        "Events published on this process's bus.";
    EVENTS_DROPPED = "tasker_events_dropped_total", Counter, [],
        "Events a slow subscriber of the bus missed.";
    RETRY_POLICY_FALLBACKS = "tasker_retry_policy_fallbacks_total", Counter, [],
        "Retry-policy components that failed, so that the template's own rule decided.";
    STORE_CALL = "tasker_store_call_seconds", Histogram, ["op", "backend"],
        "Latency of one store call, by operation.";
    STORE_CALL_ERRORS = "tasker_store_call_errors_total", Counter, ["op", "backend"],
        "Store calls that returned an error, by operation.";
    POOL_CONNECTIONS = "tasker_store_pool_connections", Gauge, ["pool", "state"],
        "Database connections by pool and state (idle, in_use), sampled at scrape.";
    PLUGINS_LOADED = "tasker_plugins_loaded", Gauge, [],
        "Plugin versions active in the registry, sampled at scrape.";
    PLUGIN_COMPILE = "tasker_plugin_compile_seconds", Histogram, ["source"],
        "Time to make a plugin's code ready: compiled, or read from the precompiled cache.";
}

/// The metric of this name.
pub fn find(name: &str) -> Option<&'static Metric> {
    CATALOGUE.iter().find(|m| m.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_follow_prometheus_conventions() {
        let mut seen = std::collections::BTreeSet::new();
        for m in CATALOGUE {
            assert!(seen.insert(m.name), "{} twice", m.name);
            assert!(m.name.starts_with("tasker_"), "{}", m.name);
            assert!(
                m.name.chars().all(|c| c.is_ascii_lowercase() || c == '_'),
                "{}",
                m.name
            );
            assert_eq!(
                m.name.ends_with("_total"),
                m.kind == Kind::Counter,
                "{}: counters and only counters end in _total",
                m.name
            );
            for l in m.labels {
                assert!(!l.contains("id"), "{}: an unbounded label {l}", m.name);
            }
            assert!(m.help.ends_with('.'), "{}", m.name);
        }
        assert_eq!(find(STEP_DURATION).unwrap().kind, Kind::Histogram);
    }

    #[test]
    fn the_readme_table_is_the_catalogue() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<String> = readme
            .lines()
            .filter(|l| l.starts_with("| `tasker_"))
            .map(str::to_owned)
            .collect();
        let want: Vec<String> = CATALOGUE
            .iter()
            .map(|m| {
                let kind = format!("{:?}", m.kind).to_lowercase();
                let labels = if m.labels.is_empty() {
                    "-".to_owned()
                } else {
                    m.labels.join(", ")
                };
                format!("| `{}` | {kind} | {labels} | {} |", m.name, m.help)
            })
            .collect();
        assert_eq!(rows, want, "README.md's metrics table");
    }
}
