//! Registry: hot reload, pinned hashes, retirement, precompiled cache, compile-once.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use serde_json::json;
use tasker_sandbox::{
    EngineConfig, Grants, Limits, PluginHash, PluginRef, RegistryEvent, SandboxConfig,
};
use tokio::sync::broadcast::Receiver;

fn hash_of(name: &str) -> PluginHash {
    PluginHash::of(&std::fs::read(plugin_file(name)).unwrap())
}

/// Replace `dest` atomically (write aside, rename), as a deploy should.
fn install(bytes: &[u8], dest: &Path) {
    let tmp = dest.with_extension("partial");
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dest).unwrap();
}

fn config(dir: &Path, watch: bool) -> SandboxConfig {
    let mut cfg = SandboxConfig::new(dir);
    cfg.cache_dir = Some(cache_dir());
    cfg.watch = watch;
    cfg.engine = EngineConfig {
        max_concurrent_attempts: 16,
        ..EngineConfig::default()
    };
    cfg
}

async fn next_event(rx: &mut Receiver<RegistryEvent>, path: &Path) -> RegistryEvent {
    tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            let ev = rx.recv().await.unwrap();
            let p = match &ev {
                RegistryEvent::Loaded { path, .. }
                | RegistryEvent::Rejected { path, .. }
                | RegistryEvent::Retired { path, .. } => path.clone(),
            };
            if p == path {
                return ev;
            }
        }
    })
    .await
    .expect("registry event within 20 s")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn hot_reload_keeps_in_flight_calls_and_refuses_corrupt_files() {
    let dir = tempfile::tempdir().unwrap();
    let svc = dir.path().join("svc@1.0.0.wasm");
    // v1 is the `slow` handler, v2 the `echo` handler, both as `svc@1.0.0`.
    std::fs::copy(plugin_file("slow"), &svc).unwrap();
    let (v1, v2) = (hash_of("slow"), hash_of("echo"));
    let sb = tasker_sandbox::Sandbox::new(config(dir.path(), true))
        .await
        .unwrap()
        .0;
    let mut rx = sb.registry().subscribe();

    // A call in flight on v1.
    let in_flight = {
        let sb = sb.clone();
        tokio::spawn(async move {
            sb.run(request(
                "svc@1.0.0",
                json!({ "ms": 3000 }),
                Limits::default(),
                Grants::default(),
            ))
            .await
        })
    };
    tokio::time::sleep(Duration::from_millis(200)).await;

    install(&std::fs::read(plugin_file("echo")).unwrap(), &svc);
    match next_event(&mut rx, &svc).await {
        RegistryEvent::Loaded { hash, .. } => assert_eq!(hash, v2),
        other => panic!("expected v2 to load, got {other:?}"),
    }
    // New calls get v2 while v1 is still running.
    let out = run_ok(
        &sb,
        request(
            "svc",
            json!({ "n": 1 }),
            Limits::default(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(out.report.accounting.plugin.as_ref().unwrap().hash, v2);
    assert_eq!(out.output["config"], json!({ "n": 1 }));
    assert!(!in_flight.is_finished(), "v1 call should still be sleeping");

    let old = in_flight
        .await
        .unwrap()
        .expect("the in-flight call finishes on v1");
    assert_eq!(old.output, json!({ "slept_ms": 3000 }));
    assert_eq!(old.report.accounting.plugin.as_ref().unwrap().hash, v1);

    // A pinned retry still runs v1.
    let pinned = tasker_sandbox::AttemptRequest {
        plugin: PluginRef::Hash(v1),
        ..request(
            "svc",
            json!({ "ms": 1 }),
            Limits::default(),
            Grants::default(),
        )
    };
    let out = run_ok(&sb, pinned).await;
    assert_eq!(out.output, json!({ "slept_ms": 1 }));

    // A corrupt replacement is refused with a clear error; v2 keeps serving.
    install(b"\0asm\x0d\0\x01\0 truncated garbage", &svc);
    match next_event(&mut rx, &svc).await {
        RegistryEvent::Rejected { error, .. } => {
            assert_eq!(error.kind(), "load");
            let msg = error.to_string();
            assert!(
                msg.contains("svc@1.0.0.wasm") && msg.contains("not a valid WebAssembly component"),
                "{msg}"
            );
        }
        other => panic!("expected a rejection, got {other:?}"),
    }
    let out = run_ok(
        &sb,
        request(
            "svc@1.0.0",
            json!({ "n": 2 }),
            Limits::default(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(out.report.accounting.plugin.as_ref().unwrap().hash, v2);
    assert_eq!(sb.registry().rejected().len(), 1);

    // Removing the file retires it: by name and by hash.
    std::fs::remove_file(&svc).unwrap();
    match next_event(&mut rx, &svc).await {
        RegistryEvent::Retired { hash, .. } => assert_eq!(hash, v2),
        other => panic!("expected retirement, got {other:?}"),
    }
    let f = run_err(
        &sb,
        request("svc", json!({}), Limits::default(), Grants::default()),
    )
    .await;
    assert_eq!(f.kind(), "load", "{}", f.error);
    assert!(
        f.error.to_string().contains("no plugin named \"svc\""),
        "{}",
        f.error
    );
    let f = run_err(
        &sb,
        tasker_sandbox::AttemptRequest {
            plugin: PluginRef::Hash(v2),
            ..request("svc", json!({}), Limits::default(), Grants::default())
        },
    )
    .await;
    assert_eq!(f.kind(), "load");
}

#[tokio::test]
async fn versions_and_sidecar_manifests() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_file("noop"), dir.path().join("tool@1.2.0.wasm")).unwrap();
    std::fs::copy(plugin_file("echo"), dir.path().join("tool@1.10.0.wasm")).unwrap();
    std::fs::copy(plugin_file("fail"), dir.path().join("anything.wasm")).unwrap();
    std::fs::write(
        dir.path().join("anything.plugin.json"),
        r#"{"name": "failer", "version": "2.0.0"}"#,
    )
    .unwrap();
    let sb = build(config(dir.path(), false));
    // Highest version wins when none is named (numeric, not textual, order).
    let out = run_ok(
        &sb,
        request("tool", json!({}), Limits::default(), Grants::default()),
    )
    .await;
    assert_eq!(
        out.report.accounting.plugin.as_ref().unwrap().version,
        "1.10.0"
    );
    let out = run_ok(
        &sb,
        request(
            "tool@1.2.0",
            json!({}),
            Limits::default(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(out.output, json!(null));
    let f = run_err(
        &sb,
        request(
            "failer@2.0.0",
            json!({ "mode": "permanent" }),
            Limits::default(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "handler_error");
    let f = run_err(
        &sb,
        request(
            "tool@9.9.9",
            json!({}),
            Limits::default(),
            Grants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "load");
    assert!(
        f.error
            .to_string()
            .contains("loaded versions: 1.2.0, 1.10.0"),
        "{}",
        f.error
    );
}

#[tokio::test]
async fn precompiled_cache_and_compile_once() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    // Four files with the same bytes: one hash, loaded concurrently, compiled once.
    for n in ["a", "b", "c", "d"] {
        std::fs::copy(plugin_file("echo"), dir.path().join(format!("{n}.wasm"))).unwrap();
    }
    let mut cfg = config(dir.path(), false);
    cfg.cache_dir = Some(cache.path().to_path_buf());
    let first = build(cfg.clone());
    assert_eq!(first.registry().plugins().len(), 4);
    let s = first.registry().stats();
    assert_eq!((s.compiles, s.cache_loads), (1, 0), "{s:?}");
    let cached: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(cached.len(), 1, "one .cwasm per hash");
    for n in ["a", "b", "c", "d"] {
        run_ok(
            &first,
            request(n, json!({}), Limits::default(), Grants::default()),
        )
        .await;
    }
    // A second process-like start loads from the cache instead of compiling.
    let second = build(cfg);
    let s = second.registry().stats();
    assert_eq!((s.compiles, s.cache_loads), (0, 1), "{s:?}");
    assert!(second.registry().plugins().iter().all(|p| p.from_cache));
    run_ok(
        &second,
        request("a", json!({ "k": 1 }), Limits::default(), Grants::default()),
    )
    .await;
}

#[tokio::test]
async fn a_corrupt_cache_file_is_replaced_by_a_compile() {
    let dir = tempfile::tempdir().unwrap();
    let cache = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_file("noop"), dir.path().join("noop.wasm")).unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.cache_dir = Some(cache.path().to_path_buf());
    drop(build(cfg.clone()));
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"not a cwasm").unwrap();
    let sb = build(cfg);
    assert_eq!(sb.registry().stats().compiles, 1);
    run_ok(
        &sb,
        request("noop", json!({}), Limits::default(), Grants::default()),
    )
    .await;
    assert!(
        std::fs::read(&entry).unwrap().len() > 1000,
        "cache file rewritten"
    );
}
