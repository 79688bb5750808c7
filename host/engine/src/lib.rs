//! Tasker's orchestrator: workers that claim, run and complete steps, the lifecycle event bus,
//! and a test coordinator that drives a task to its end on a fake clock.

pub mod component;
pub mod coordinator;
pub mod event;
pub mod executor;
pub mod hooks;
pub mod ops;
pub mod pg;
pub mod policy;
pub mod record;
pub mod telemetry;
pub mod testing;
pub mod traces;
pub mod worker;

pub use component::ComponentError;
pub use coordinator::{Coordinator, CoordinatorError, RunReport};
pub use event::{Event, EventBus, Subscription};
pub use executor::{CustomEvent, Execution, Executor, Outcome};
pub use hooks::{DeliveryConfig, HookDeliverer, HookRunner};
pub use policy::{Policies, PolicyAnswer, PolicyFailure, RetryPolicyRunner};
pub use worker::{Worker, WorkerConfig, WorkerTotals};
