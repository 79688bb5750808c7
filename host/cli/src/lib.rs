//! The `tasker` binary's library: settings, the WASM executor and the commands.

pub mod app;
pub mod config;
pub mod hooks;
pub mod progress;
pub mod report;
pub mod wasm;
