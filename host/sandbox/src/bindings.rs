//! The only `bindgen!`s: host bindings for the three `tasker:plugin@0.1.0` worlds.
//! `step-handler` generates the shared `types` and `host` interfaces; the hook and policy
//! worlds reuse them (`with`), so one host implementation serves every world.
//! Exports are async so a call can yield on epoch ticks; host imports are cheap and sync.

wasmtime::component::bindgen!({
    world: "step-handler",
    path: "../../wit",
    exports: { default: async },
});

/// `tasker:plugin/event-hook`.
pub mod hook {
    wasmtime::component::bindgen!({
        world: "event-hook",
        path: "../../wit",
        exports: { default: async },
        with: {
            "tasker:plugin/types": super::tasker::plugin::types,
            "tasker:plugin/host": super::tasker::plugin::host,
        },
    });
}

/// `tasker:plugin/retry-policy`.
pub mod policy {
    wasmtime::component::bindgen!({
        world: "retry-policy",
        path: "../../wit",
        exports: { default: async },
        with: {
            "tasker:plugin/types": super::tasker::plugin::types,
            "tasker:plugin/host": super::tasker::plugin::host,
        },
    });
}
