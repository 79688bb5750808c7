//! The real `tasker` binary end to end, on both backends: the examples, operations, hooks
//! and policies, the four guest languages, crashes (kill -9, a poisoned plugin, Ctrl-C),
//! `tasker serve`, `tasker logs`, metrics scraped by a real Prometheus and traces received over
//! OTLP.

mod crash;
mod dead_letters;
mod examples;
mod flow;
mod hooks;
mod logs;
mod metrics;
mod plugins_gc;
mod polyglot;
mod prune;
mod schedules;
mod serve;
mod shutdown;
mod surprises;
mod traces;
