//! `tasker-wasi-adapter <out.wasm>`: write the preview1 reactor adapter to a file.
use wasi_preview1_component_adapter_provider::WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER;

fn main() {
    let out = std::env::args_os()
        .nth(1)
        .expect("usage: tasker-wasi-adapter <out.wasm>");
    if let Err(e) = std::fs::write(&out, WASI_SNAPSHOT_PREVIEW1_REACTOR_ADAPTER) {
        eprintln!("cannot write {}: {e}", std::path::Path::new(&out).display());
        std::process::exit(1);
    }
}
