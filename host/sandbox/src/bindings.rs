//! The only `bindgen!`: host bindings for `tasker:plugin/step-handler@0.1.0`.
//! Exports are async so a call can yield on epoch ticks; host imports are cheap and sync.

wasmtime::component::bindgen!({
    world: "step-handler",
    path: "../../wit",
    exports: { default: async },
});
