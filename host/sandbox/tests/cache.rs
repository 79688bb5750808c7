//! The precompiled cache: bounded in bytes, least recently used first, never a file in use
//! (by this process or another sharing the directory), and `cache_gc`.

mod common;

use std::path::{Path, PathBuf};

use common::*;
use serde_json::json;
use tasker_sandbox::{
    AttemptGrants, AttemptLimits, EngineConfig, PluginHash, Sandbox, SandboxConfig, cache_bytes,
    cache_gc,
};

fn leb(mut n: usize, out: &mut Vec<u8>) {
    loop {
        let byte = (n & 0x7f) as u8;
        n >>= 7;
        if n == 0 {
            out.push(byte);
            return;
        }
        out.push(byte | 0x80);
    }
}

/// `noop` with a custom section naming `tag` appended: the same code, a distinct content
/// hash, so a distinct cache entry.
fn variant(tag: &str) -> Vec<u8> {
    let mut bytes = std::fs::read(plugin_file("noop")).unwrap();
    let name = b"tasker-test-variant";
    let mut body = Vec::new();
    leb(name.len(), &mut body);
    body.extend_from_slice(name);
    body.extend_from_slice(tag.as_bytes());
    bytes.push(0); // custom section id
    leb(body.len(), &mut bytes);
    bytes.extend_from_slice(&body);
    bytes
}

fn config(plugins: &Path, cache: &Path, max: Option<u64>) -> SandboxConfig {
    let mut cfg = SandboxConfig::new(plugins);
    cfg.cache_dir = Some(cache.to_path_buf());
    cfg.cache_max_bytes = max;
    cfg.engine = EngineConfig {
        max_concurrent_attempts: 4,
        ..EngineConfig::default()
    };
    cfg
}

fn cwasm_files(cache: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = std::fs::read_dir(cache)
        .map(|r| {
            r.filter_map(|e| e.ok().map(|e| e.path()))
                .filter(|p| p.extension().is_some_and(|x| x == "cwasm"))
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

/// The cache file of this content, if there is one.
fn cache_file_of(cache: &Path, bytes: &[u8]) -> Option<PathBuf> {
    let prefix = format!("{}-", PluginHash::of(bytes));
    cwasm_files(cache).into_iter().find(|p| {
        p.file_name()
            .and_then(|n| n.to_str())
            .is_some_and(|n| n.starts_with(&prefix))
    })
}

async fn run(sb: &Sandbox, plugin: &str) {
    run_ok(
        sb,
        request(
            plugin,
            json!({}),
            AttemptLimits::default(),
            AttemptGrants::default(),
        ),
    )
    .await;
}

/// Install `bytes` as `name@version` alone in `dir` (a deploy replacing the last version),
/// rescan and run it.
async fn deploy_and_run(sb: &Sandbox, dir: &Path, version: &str, bytes: &[u8]) {
    for old in std::fs::read_dir(dir).unwrap() {
        std::fs::remove_file(old.unwrap().path()).unwrap();
    }
    std::fs::write(dir.join(format!("noop@{version}.wasm")), bytes).unwrap();
    sb.registry().rescan().await.unwrap();
    run(sb, &format!("noop@{version}")).await;
}

/// The size of one variant's precompiled file.
async fn entry_size() -> u64 {
    let (plugins, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sb = Sandbox::new(config(plugins.path(), cache.path(), None))
        .await
        .unwrap()
        .0;
    deploy_and_run(&sb, plugins.path(), "0.0.1", &variant("probe")).await;
    cache_bytes(cache.path()).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cache_stays_under_its_bound_while_20_versions_load_in_turn() {
    let one = entry_size().await;
    assert!(one > 0, "the probe wrote no precompiled file");
    // Room for three entries and a half.
    let max = one * 3 + one / 2;
    let (plugins, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let sb = Sandbox::new(config(plugins.path(), cache.path(), Some(max)))
        .await
        .unwrap()
        .0;
    let mut seen_over = 0;
    for i in 0..20 {
        let bytes = variant(&format!("v{i}"));
        deploy_and_run(&sb, plugins.path(), &format!("1.0.{i}"), &bytes).await;
        let total = cache_bytes(cache.path()).unwrap();
        if total > max {
            seen_over += 1;
        }
        assert!(
            total <= max,
            "after version {i}: cache holds {total} bytes, bound {max}"
        );
        // The version in use keeps its file.
        assert!(
            cache_file_of(cache.path(), &bytes).is_some(),
            "version {i}'s own precompiled file was evicted while in use"
        );
    }
    assert_eq!(seen_over, 0);
    assert_eq!(sb.registry().stats().compiles, 20);
    let left = cwasm_files(cache.path());
    assert_eq!(left.len(), 3, "{left:?}");
    // The most recent ones are what is left.
    for i in 17..20 {
        assert!(cache_file_of(cache.path(), &variant(&format!("v{i}"))).is_some());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_another_process_holds_is_never_evicted() {
    let cache = tempfile::tempdir().unwrap();
    let (dir_a, dir_b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    // Two registries sharing one cache directory stand for two processes: their locks are
    // on separate open files, as another process's would be. A 1-byte bound evicts
    // everything that is not held.
    let a = Sandbox::new(config(dir_a.path(), cache.path(), Some(1)))
        .await
        .unwrap()
        .0;
    let b = Sandbox::new(config(dir_b.path(), cache.path(), Some(1)))
        .await
        .unwrap()
        .0;
    let (va, vb, vc) = (variant("a"), variant("b"), variant("c"));
    deploy_and_run(&a, dir_a.path(), "1.0.0", &va).await;
    deploy_and_run(&b, dir_b.path(), "2.0.0", &vb).await;
    // Over the bound, because both files are in use.
    assert!(
        cache_file_of(cache.path(), &va).is_some(),
        "A's file was evicted"
    );
    assert!(cache_file_of(cache.path(), &vb).is_some());
    // gc deletes neither.
    let r = cache_gc(cache.path()).unwrap();
    assert!(r.removed.is_empty(), "{r:?}");
    assert_eq!(r.in_use.len(), 2, "{r:?}");

    // A moves on to another version: its old file is no longer held, and goes at the next
    // write, while B's stays.
    deploy_and_run(&a, dir_a.path(), "1.0.1", &vc).await;
    assert!(
        cache_file_of(cache.path(), &va).is_none(),
        "A's retired file stayed"
    );
    assert!(
        cache_file_of(cache.path(), &vb).is_some(),
        "B's file was evicted"
    );
    assert!(cache_file_of(cache.path(), &vc).is_some());

    // A third process starting later loads B's version from the cache (held by B, so
    // there), and still runs it after B is gone and a gc ran.
    let dir_c = tempfile::tempdir().unwrap();
    let c = Sandbox::new(config(dir_c.path(), cache.path(), Some(1)))
        .await
        .unwrap()
        .0;
    std::fs::write(dir_c.path().join("noop@2.0.0.wasm"), &vb).unwrap();
    c.registry().rescan().await.unwrap();
    run(&c, "noop@2.0.0").await;
    assert_eq!(
        c.registry().stats().compiles,
        0,
        "C compiled instead of using the cache"
    );
    drop(b);
    let r = cache_gc(cache.path()).unwrap();
    assert_eq!(r.removed.len(), 0, "B's file is still held by C: {r:?}");
    run(&c, "noop@2.0.0").await;
    drop((a, c));
    let r = cache_gc(cache.path()).unwrap();
    assert_eq!(r.removed.len(), 2, "{r:?}");
    assert_eq!(cache_bytes(cache.path()).unwrap(), 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gc_empties_what_no_process_uses() {
    let (plugins, cache) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    let (old, current) = (variant("old"), variant("current"));
    {
        let gone = Sandbox::new(config(plugins.path(), cache.path(), None))
            .await
            .unwrap()
            .0;
        deploy_and_run(&gone, plugins.path(), "0.1.0", &old).await;
    }
    let sb = Sandbox::new(config(plugins.path(), cache.path(), None))
        .await
        .unwrap()
        .0;
    deploy_and_run(&sb, plugins.path(), "0.2.0", &current).await;
    let r = cache_gc(cache.path()).unwrap();
    let old_file = r.removed.first().map(|e| e.path.clone());
    assert_eq!(r.removed.len(), 1, "{r:?}");
    assert!(
        old_file
            .and_then(|p| p.file_name().map(|n| n.to_string_lossy().into_owned()))
            .is_some_and(|n| n.starts_with(&PluginHash::of(&old).to_string())),
        "{r:?}"
    );
    assert_eq!(r.in_use.len(), 1, "{r:?}");
    assert!(cache_file_of(cache.path(), &current).is_some());
    // The loaded version keeps running.
    run(&sb, "noop@0.2.0").await;
}
