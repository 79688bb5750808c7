//! `tasker plugins gc`: deletes every precompiled file no process holds (and temporary
//! files left by a crash), keeps what a running worker has loaded, and says what it did.

use std::path::Path;
use std::time::{Duration, SystemTime};

use tasker_tests::cli::*;

fn cwasm_count(dir: &Path) -> usize {
    std::fs::read_dir(dir)
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "cwasm")
        })
        .count()
}

fn gc(db: &Db, plugins: &Path, cache: &Path) -> String {
    let mut c = tasker(db, plugins);
    c.env("TASKER_CACHE_DIR", cache).args(["plugins", "gc"]);
    let out = run(c);
    assert!(out.status.success(), "plugins gc");
    stdout(&out)
}

#[tokio::test]
async fn gc_removes_what_no_process_uses_and_keeps_a_running_workers_plugins() {
    let db = Db::sqlite("plugins-gc");
    let dir = scratch("plugins-gc");
    let (plugins, cache) = (dir.join("plugins"), dir.join("cache"));
    std::fs::create_dir_all(&plugins).unwrap();
    for p in ["noop@0.1.0.wasm", "echo@0.1.0.wasm"] {
        std::fs::copy(plugin_dir().join(p), plugins.join(p)).unwrap();
    }
    // `plugins list` compiles both, which fills the cache.
    let mut c = tasker(&db, &plugins);
    c.env("TASKER_CACHE_DIR", &cache).args(["plugins", "list"]);
    assert!(run(c).status.success());
    assert_eq!(cwasm_count(&cache), 2);
    // A temporary file a crash left an hour ago.
    let stale = cache.join("0123-abc.tmp42-ThreadId(2)");
    std::fs::write(&stale, b"half a file").unwrap();
    std::fs::File::options()
        .append(true)
        .open(&stale)
        .unwrap()
        .set_modified(SystemTime::now() - Duration::from_secs(3600))
        .unwrap();

    let said = gc(&db, &plugins, &cache);
    assert!(
        said.contains("removed 2 precompiled files and 1 leftover temporary files"),
        "{said}"
    );
    assert!(said.contains("kept 0 in use"), "{said}");
    assert!(
        said.contains(".cwasm ("),
        "each removed file is named: {said}"
    );
    assert_eq!(cwasm_count(&cache), 0);
    assert!(!stale.exists());

    // A worker that ran a noop step holds noop's file; echo's (written by `plugins list`,
    // a process that ended) is unused.
    let template = dir.join("gc.yaml");
    std::fs::write(
        &template,
        "namespace: tests\nname: gc\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop@0.1.0}\n",
    )
    .unwrap();
    let config = dir.join("tasker.toml");
    std::fs::write(&config, "[worker]\nshutdown_grace = \"10s\"\n").unwrap();
    drop(db.store().await);
    let mut c = tasker(&db, &plugins);
    c.env("TASKER_CACHE_DIR", &cache)
        .arg("submit")
        .arg(&template);
    assert!(run(c).status.success());
    let mut worker = KillOnDrop(
        worker_command(&db, &plugins, &config, "gc-worker", 1)
            .env("TASKER_CACHE_DIR", &cache)
            .stderr(std::process::Stdio::inherit())
            .spawn()
            .unwrap(),
    );
    wait_for(
        &db,
        "SELECT count(*) FROM tasks WHERE state = 'complete'",
        1,
        Duration::from_secs(120),
    )
    .await;
    let mut c = tasker(&db, &plugins);
    c.env("TASKER_CACHE_DIR", &cache).args(["plugins", "list"]);
    assert!(run(c).status.success());
    assert_eq!(cwasm_count(&cache), 2);
    let said = gc(&db, &plugins, &cache);
    assert!(said.contains("removed 1 precompiled files"), "{said}");
    assert!(said.contains("kept 1 in use"), "{said}");
    assert_eq!(cwasm_count(&cache), 1);

    // Once the worker is gone, nothing is in use.
    stop_gracefully(&mut worker.0);
    let said = gc(&db, &plugins, &cache);
    assert!(said.contains("removed 1 precompiled files"), "{said}");
    assert_eq!(cwasm_count(&cache), 0);
}
