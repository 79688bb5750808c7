//! The real `tasker` binary end to end, on both backends: the examples, operations, hooks
//! and policies, the four guest languages, crashes (kill -9, a poisoned plugin, Ctrl-C),
//! `tasker serve`, and metrics scraped by a real Prometheus.

mod crash;
mod examples;
mod hooks;
mod metrics;
mod polyglot;
mod serve;
