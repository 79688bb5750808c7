//! The commands of the `tasker` binary, one file each; each adds its method to
//! [`App`](crate::app::App), which holds what they share (settings, store, sandbox).

mod cancel;
mod migrate;
mod plugins;
mod resolve;
mod retry;
mod run;
mod status;
mod submit;
mod templates;
mod worker;

pub use run::RunTask;
pub use templates::{Graph, components_of};
