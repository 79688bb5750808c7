//! Registry: hot reload, pinned hashes, retirement, precompiled cache, compile-once, lazy
//! compiles, and work only on change (debounced watch, memo of refused files).

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use serde_json::json;
use tasker_sandbox::{
    AttemptGrants, AttemptLimits, EngineConfig, PluginHash, PluginRef, RegistryEvent,
    RegistryStats, Sandbox, SandboxConfig,
};
use tokio::sync::broadcast::Receiver;
use tokio::sync::broadcast::error::TryRecvError;

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
                AttemptLimits::default(),
                AttemptGrants::default(),
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
            AttemptLimits::default(),
            AttemptGrants::default(),
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
            AttemptLimits::default(),
            AttemptGrants::default(),
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
            AttemptLimits::default(),
            AttemptGrants::default(),
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
        request(
            "svc",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
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
            ..request(
                "svc",
                json!({}),
                AttemptLimits::default(),
                AttemptGrants::default(),
            )
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
        request(
            "tool",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
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
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(out.output, json!(null));
    let f = run_err(
        &sb,
        request(
            "failer@2.0.0",
            json!({ "mode": "permanent" }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "handler_error");
    let f = run_err(
        &sb,
        request(
            "tool@9.9.9",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
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

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
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
    assert_eq!(
        (s.compiles, s.cache_loads),
        (0, 0),
        "nothing compiles at start: {s:?}"
    );
    // Four concurrent first uses of one hash share one compile.
    let runs: Vec<_> = ["a", "b", "c", "d"]
        .into_iter()
        .map(|n| {
            let sb = first.clone();
            tokio::spawn(async move {
                run_ok(
                    &sb,
                    request(
                        n,
                        json!({}),
                        AttemptLimits::default(),
                        AttemptGrants::default(),
                    ),
                )
                .await
            })
        })
        .collect();
    for r in runs {
        r.await.unwrap();
    }
    let s = first.registry().stats();
    assert_eq!((s.compiles, s.cache_loads), (1, 0), "{s:?}");
    let cached: Vec<_> = std::fs::read_dir(cache.path()).unwrap().collect();
    assert_eq!(cached.len(), 1, "one .cwasm per hash");
    // A second process-like start loads from the cache (cheap, so at the scan) instead of
    // compiling.
    let second = build(cfg);
    let s = second.registry().stats();
    assert_eq!((s.compiles, s.cache_loads), (0, 1), "{s:?}");
    assert!(second.registry().plugins().iter().all(|p| p.from_cache));
    run_ok(
        &second,
        request(
            "a",
            json!({ "k": 1 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
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
    let first = build(cfg.clone());
    run_ok(
        &first,
        request(
            "noop",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    drop(first);
    let entry = std::fs::read_dir(cache.path())
        .unwrap()
        .next()
        .unwrap()
        .unwrap()
        .path();
    std::fs::write(&entry, b"not a cwasm").unwrap();
    let sb = build(cfg);
    let s = sb.registry().stats();
    assert_eq!((s.compiles, s.cache_loads), (0, 0), "{s:?}");
    run_ok(
        &sb,
        request(
            "noop",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(sb.registry().stats().compiles, 1);
    assert!(
        std::fs::read(&entry).unwrap().len() > 1000,
        "cache file rewritten"
    );
}

/// `base` with a custom section appended: another hash, the same code. A component may
/// carry custom sections anywhere at its top level.
fn variant(base: &[u8], n: usize) -> Vec<u8> {
    use wasm_encoder::ComponentSection;
    let mut bytes = base.to_vec();
    wasm_encoder::CustomSection {
        name: "tasker-test-variant".into(),
        data: n.to_le_bytes().to_vec().into(),
    }
    .append_to_component(&mut bytes);
    bytes
}

/// `base` with the middle of its first core module's code overwritten: the component's own
/// sections (exports included) still read fine, compiling it fails.
fn corrupt_code(base: &[u8]) -> Vec<u8> {
    use wasmparser::{Parser, Payload};
    let module = Parser::new(0)
        .parse_all(base)
        .find_map(|p| match p.unwrap() {
            Payload::ModuleSection {
                unchecked_range, ..
            } => Some(unchecked_range),
            _ => None,
        })
        .expect("a nested core module");
    let code = Parser::new(0)
        .parse_all(&base[module.clone()])
        .find_map(|p| match p.unwrap() {
            Payload::CodeSectionStart { range, .. } => Some(range),
            _ => None,
        })
        .expect("a code section");
    let mut bytes = base.to_vec();
    let mid = module.start + (code.start + code.end) / 2;
    bytes[mid..mid + 64].fill(0xff);
    bytes
}

/// Poll until the counters have not moved for a while (bounded): what a burst of events
/// led to has settled.
async fn settled(sb: &Sandbox) -> RegistryStats {
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut last = sb.registry().stats();
    let mut since = Instant::now();
    loop {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let s = sb.registry().stats();
        if s != last {
            (last, since) = (s, Instant::now());
        } else if since.elapsed() >= Duration::from_millis(2500) {
            return s;
        }
        assert!(
            Instant::now() < deadline,
            "registry never went quiet: {s:?}"
        );
    }
}

#[test]
fn fifty_plugins_start_without_compiling_and_a_first_attempt_compiles_one() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let dir = tempfile::tempdir().unwrap();
        let cache = tempfile::tempdir().unwrap();
        let noop = std::fs::read(plugin_file("noop")).unwrap();
        for n in 0..50 {
            std::fs::write(dir.path().join(format!("p{n:02}.wasm")), variant(&noop, n)).unwrap();
        }
        let mut cfg = config(dir.path(), true);
        cfg.cache_dir = Some(cache.path().to_path_buf());

        let t = Instant::now();
        let sb = Sandbox::new(cfg).await.unwrap().0;
        let started = t.elapsed();
        let s = sb.registry().stats();
        assert_eq!(
            (s.scans, s.files_hashed, s.compiles, s.cache_loads),
            (1, 50, 0, 0),
            "{s:?}"
        );
        let hashes: HashSet<_> = sb.registry().plugins().iter().map(|p| p.hash).collect();
        assert_eq!(hashes.len(), 50, "50 distinct components");

        let out = run_ok(
            &sb,
            request(
                "p07",
                json!({}),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        let first = t.elapsed();
        assert_eq!(out.output, json!(null));
        assert_eq!(
            out.report.accounting.plugin.as_ref().unwrap().hash,
            PluginHash::of(&variant(&noop, 7))
        );
        // The robust check: one compile, whatever the machine's load. The wall bound only
        // catches a gross regression (compiling all 50 in a debug build takes far longer).
        let s = sb.registry().stats();
        assert_eq!((s.compiles, s.cache_loads), (1, 0), "{s:?}");
        eprintln!("start {started:?}, first attempt done {first:?}");
        assert!(
            first < Duration::from_secs(15),
            "first attempt after {first:?}"
        );

        // A scan of the unchanged directory reads nothing and compiles nothing.
        sb.registry().rescan().await.unwrap();
        let s = sb.registry().stats();
        assert_eq!((s.scans, s.files_hashed, s.compiles), (2, 50, 1), "{s:?}");
    });
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_watched_directory_rescans_once_per_change_and_reads_only_what_changed() {
    let dir = tempfile::tempdir().unwrap();
    let files: Vec<_> = ["a", "b", "c", "d", "e"]
        .map(|n| dir.path().join(format!("{n}.wasm")))
        .into();
    for f in &files {
        std::fs::copy(plugin_file("noop"), f).unwrap();
    }
    let sb = Sandbox::new(config(dir.path(), true)).await.unwrap().0;
    let s0 = sb.registry().stats();
    assert_eq!((s0.scans, s0.files_hashed), (1, 5), "{s0:?}");

    // Reads, opens, closes after reading and metadata changes are not content changes;
    // neither are the registry's own reads when an attempt compiles.
    for _ in 0..20 {
        for f in &files {
            std::fs::read(f).unwrap();
        }
    }
    let mut perms = std::fs::metadata(&files[0]).unwrap().permissions();
    perms.set_readonly(true);
    std::fs::set_permissions(&files[0], perms).unwrap();
    run_ok(
        &sb,
        request(
            "a",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;

    // One plain (not atomic) copy.
    let mut rx = sb.registry().subscribe();
    let new = dir.path().join("new.wasm");
    std::fs::copy(plugin_file("echo"), &new).unwrap();
    match next_event(&mut rx, &new).await {
        RegistryEvent::Loaded { hash, .. } => assert_eq!(hash, hash_of("echo")),
        other => panic!("expected the copy to load, got {other:?}"),
    }
    let s = settled(&sb).await;
    let (scans, hashed) = (s.scans - s0.scans, s.files_hashed - s0.files_hashed);
    assert!((1..=3).contains(&scans), "{scans} rescans: {s:?}");
    // Only the new file (twice at most: a scan may catch it mid-copy and discard the read).
    assert!((1..=2).contains(&hashed), "{hashed} files hashed: {s:?}");
    assert_eq!(s.rejections_logged, 0, "{s:?}");
    run_ok(
        &sb,
        request(
            "new",
            json!({ "k": 1 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
}

#[tokio::test]
async fn a_refused_file_is_read_and_logged_once_until_it_changes() {
    let dir = tempfile::tempdir().unwrap();
    std::fs::copy(plugin_file("noop"), dir.path().join("good.wasm")).unwrap();
    let bad = dir.path().join("bad.wasm");
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0 truncated garbage").unwrap();
    // Sparse: over the size limit without using the disk; refused without being read.
    let huge = dir.path().join("huge.wasm");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(1 << 30)
        .unwrap();
    let sb = build(config(dir.path(), false));
    let reg = sb.registry();
    let s = reg.stats();
    assert_eq!((s.files_hashed, s.rejections_logged), (2, 2), "{s:?}");
    let rejected = reg.rejected();
    assert_eq!(rejected.len(), 2, "{rejected:?}");
    for (path, e) in &rejected {
        assert_eq!(e.kind(), "load", "{e}");
        assert!(e.to_string().contains(&path.display().to_string()), "{e}");
    }
    assert!(
        rejected[1].1.to_string().contains("limit"),
        "{:?}",
        rejected[1]
    );

    for _ in 0..10 {
        let report = reg.rescan().await.unwrap();
        assert!(
            report.rejected.is_empty() && report.loaded.is_empty(),
            "{report:?}"
        );
    }
    let s = reg.stats();
    assert_eq!(
        (s.scans, s.files_hashed, s.rejections_logged),
        (11, 2, 2),
        "{s:?}"
    );
    assert_eq!(reg.rejected().len(), 2, "still refused, quietly");
    let f = run_err(
        &sb,
        request(
            "bad",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "load", "{}", f.error);
    assert!(f.error.to_string().contains("bad.wasm"), "{}", f.error);

    // Changed, still corrupt: read, refused and logged again, once.
    std::fs::write(&bad, b"\0asm\x0d\0\x01\0 other garbage, longer").unwrap();
    let report = reg.rescan().await.unwrap();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].0, bad);
    reg.rescan().await.unwrap();
    let s = reg.stats();
    assert_eq!((s.files_hashed, s.rejections_logged), (3, 3), "{s:?}");

    // Fixed: loaded (and compiled by the scan, since start is over).
    install(&std::fs::read(plugin_file("echo")).unwrap(), &bad);
    let report = reg.rescan().await.unwrap();
    assert_eq!(report.loaded, vec![(bad.clone(), hash_of("echo"))]);
    assert_eq!(reg.rejected().len(), 1, "only the huge file is left");
    run_ok(
        &sb,
        request(
            "bad",
            json!({ "n": 1 }),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_failed_first_use_is_typed_remembered_and_retried_only_after_a_change() {
    let dir = tempfile::tempdir().unwrap();
    // A fresh cache: what compiles, and when, is exact.
    let cache = tempfile::tempdir().unwrap();
    let missing = std::fs::read(plugin_file("hostile_missing_import")).unwrap();
    let noop = std::fs::read(plugin_file("noop")).unwrap();
    let mi = dir.path().join("mi.wasm");
    std::fs::write(&mi, &missing).unwrap();
    std::fs::write(dir.path().join("broken.wasm"), corrupt_code(&noop)).unwrap();
    std::fs::write(dir.path().join("tool@1.0.0.wasm"), &noop).unwrap();
    std::fs::write(dir.path().join("tool@2.0.0.wasm"), variant(&missing, 2)).unwrap();
    let mut cfg = config(dir.path(), false);
    cfg.cache_dir = Some(cache.path().to_path_buf());
    let sb = build(cfg);
    let reg = sb.registry();
    assert!(reg.rejected().is_empty(), "{:?}", reg.rejected());
    assert_eq!(reg.stats().compiles, 0);

    let mut rx = reg.subscribe();
    for _ in 0..5 {
        let f = run_err(
            &sb,
            request(
                "mi",
                json!({}),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "incompatible", "{}", f.error);
        let msg = f.error.to_string();
        assert!(
            msg.contains("tasker:backdoor/shell") && msg.contains("mi.wasm"),
            "{msg}"
        );
    }
    for _ in 0..3 {
        let f = run_err(
            &sb,
            request(
                "broken",
                json!({}),
                AttemptLimits::default(),
                AttemptGrants::default(),
            ),
        )
        .await;
        assert_eq!(f.kind(), "load", "{}", f.error);
        assert!(
            f.error
                .to_string()
                .contains("not a valid WebAssembly component"),
            "{}",
            f.error
        );
    }
    let s = reg.stats();
    assert_eq!(
        (s.compiles, s.rejections_logged),
        (2, 2),
        "once each: {s:?}"
    );
    let mut announced = Vec::new();
    loop {
        match rx.try_recv() {
            Ok(RegistryEvent::Rejected { path, error }) => announced.push((path, error.kind())),
            Ok(other) => panic!("unexpected {other:?}"),
            Err(TryRecvError::Empty) => break,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!(
        announced,
        vec![
            (mi.clone(), "incompatible"),
            (dir.path().join("broken.wasm"), "load")
        ]
    );
    let rejected: Vec<_> = reg.rejected().into_iter().map(|(p, _)| p).collect();
    assert_eq!(rejected, vec![dir.path().join("broken.wasm"), mi.clone()]);

    // An unversioned name skips a version that cannot load; the exact one says why.
    let out = run_ok(
        &sb,
        request(
            "tool",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(
        out.report.accounting.plugin.as_ref().unwrap().version,
        "1.0.0"
    );
    let f = run_err(
        &sb,
        request(
            "tool@2.0.0",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(f.kind(), "incompatible", "{}", f.error);
    // Scans do not retry unchanged files either.
    for _ in 0..3 {
        reg.rescan().await.unwrap();
    }
    assert_eq!(reg.stats().compiles, 4, "{:?}", reg.stats());

    // The file changes: the scan compiles the new content, and it runs.
    install(&variant(&noop, 1), &mi);
    let report = reg.rescan().await.unwrap();
    assert_eq!(report.loaded.len(), 1, "{report:?}");
    run_ok(
        &sb,
        request(
            "mi",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(reg.stats().compiles, 5);

    // A bad replacement of a good file is refused by the scan (its failure is remembered
    // from the first `mi`: no compile), and the good version keeps serving.
    let tool = dir.path().join("tool@1.0.0.wasm");
    install(&missing, &tool);
    let report = reg.rescan().await.unwrap();
    assert_eq!(report.rejected.len(), 1, "{report:?}");
    assert_eq!(report.rejected[0].1.kind(), "incompatible");
    let out = run_ok(
        &sb,
        request(
            "tool@1.0.0",
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
    assert_eq!(
        out.report.accounting.plugin.as_ref().unwrap().hash,
        PluginHash::of(&noop)
    );
    assert_eq!(reg.stats().compiles, 5);
}
