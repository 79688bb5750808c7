//! A Tasker node: steps, hooks and retry policies run as WASM components, wired into one
//! worker. `tasker run`, `tasker worker` and the engine benchmark start through [`Node`].

pub mod executor;
pub mod hooks;
pub mod node;
pub mod policy;
pub mod prune;
pub mod scheduler;

pub use executor::WasmExecutor;
pub use hooks::WasmHookRunner;
pub use node::{Node, RunningNode, spawn_deliverer};
pub use policy::{WasmPolicyRunner, policies};
pub use prune::{PrunerConfig, PrunerStats, PrunerTotals, spawn_pruner};
pub use scheduler::{SchedulerConfig, SchedulerStats, SchedulerTotals, spawn_scheduler};
