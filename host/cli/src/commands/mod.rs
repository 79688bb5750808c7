//! The commands of the `tasker` binary, one file each; each adds its method to
//! [`App`](crate::app::App), which holds what they share (settings, store, sandbox).

mod cancel;
mod dev;
mod export;
pub mod logs;
pub mod metrics;
mod migrate;
mod plugins;
mod prune;
pub mod remote;
mod resolve;
mod retry;
mod run;
pub mod schedules;
mod serve;
mod status;
mod submit;
mod tasks;
mod templates;
mod tokens;
mod worker;

pub use export::EXPORT_FORMAT;
pub use plugins::{upload_args, uploaded};
pub use prune::{FinalState, PRUNE_BATCH, PruneArgs};
pub use run::RunTask;
pub use serve::ServeOptions;
pub use tasks::TaskListArgs;
pub use templates::{Graph, components_of, show as show_template};
pub use tokens::parse_duration;
