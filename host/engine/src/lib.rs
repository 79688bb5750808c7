//! Tasker's orchestrator: workers that claim, run and complete steps, the lifecycle event bus,
//! and a test coordinator that drives a task to its end on a fake clock.

pub mod coordinator;
pub mod event;
pub mod executor;
pub mod ops;
pub mod pg;
pub mod record;
pub mod testing;
pub mod worker;

pub use coordinator::{Coordinator, CoordinatorError, RunReport};
pub use event::{Event, EventBus, Subscription};
pub use executor::{CustomEvent, Execution, Executor, Outcome};
pub use worker::{Worker, WorkerConfig, WorkerTotals};
