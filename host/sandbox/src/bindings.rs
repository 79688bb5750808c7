//! The only `bindgen!`s: host bindings for the three `tasker:plugin@0.1.1` worlds.
//! `step-handler` generates the shared `types` and `host` interfaces; the hook and policy
//! worlds reuse them (`with`), so one host implementation serves every world.
//! Exports are async so a call can yield on epoch ticks; host imports are cheap and sync.
//! The WASI interfaces the worlds import (`wasi:http` since 0.1.1) are wasmtime-wasi's and
//! wasmtime-wasi-http's own bindings, linked by `guard.rs` and `http/`.

wasmtime::component::bindgen!({
    world: "step-handler",
    path: "../../wit",
    exports: { default: async },
    with: {
        "wasi:http": wasmtime_wasi_http::p2::bindings::http,
        "wasi:io": wasmtime_wasi::p2::bindings::io,
        "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
    },
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
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
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
            "wasi:http": wasmtime_wasi_http::p2::bindings::http,
            "wasi:io": wasmtime_wasi::p2::bindings::io,
            "wasi:clocks": wasmtime_wasi::p2::bindings::clocks,
        },
    });
}
