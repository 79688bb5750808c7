//! The `tasker` binary's library: settings, the commands and what they print.

pub mod api;
pub mod app;
pub mod commands;
pub mod config;
pub mod hooks;
pub mod output;
pub mod progress;
pub mod report;
pub mod traces;
