//! Helpers for tests that run the real `tasker` binary against a test database.
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use sqlx::PgPool;

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .ancestors()
        .nth(2)
        .expect("workspace root")
        .to_path_buf()
}

/// Where `scripts/build-plugins.sh` stages well-behaved plugins.
pub fn plugin_dir() -> PathBuf {
    let dir = std::env::var_os("TASKER_TEST_PLUGIN_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| root().join("plugins/dist"));
    assert!(
        dir.join("noop@0.1.0.wasm").is_file(),
        "no plugins in {}: run scripts/build-plugins.sh first",
        dir.display()
    );
    dir
}

pub fn hostile_plugin_dir() -> PathBuf {
    let dir = root().join("plugins/dist-hostile");
    assert!(
        dir.join("hostile_loop@0.1.0.wasm").is_file(),
        "no hostile plugins in {}: run scripts/build-plugins.sh first",
        dir.display()
    );
    dir
}

/// A precompiled cache shared by the tests of this crate.
pub fn cache_dir() -> PathBuf {
    let d = root().join("target/tmp/tasker-cli-test-cache");
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// A fresh scratch directory under target/tmp.
pub fn scratch(name: &str) -> PathBuf {
    let d = root()
        .join("target/tmp/tasker-cli-tests")
        .join(format!("{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&d);
    std::fs::create_dir_all(&d).unwrap();
    d
}

/// The URL of the test database behind `pool`.
pub fn database_url(pool: &PgPool) -> String {
    let opts = pool.connect_options();
    let db = opts.get_database().expect("test database name");
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into());
    let (prefix, _) = base.rsplit_once('/').expect("url with a database");
    format!("{prefix}/{db}")
}

/// A `tasker` command wired to the test database and plugin directory.
pub fn tasker(pool: &PgPool, plugin_dir: &Path) -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_tasker"));
    c.current_dir(root())
        .env("DATABASE_URL", database_url(pool))
        .env("TASKER_PLUGIN_DIR", plugin_dir)
        .env("TASKER_CACHE_DIR", cache_dir())
        .env_remove("TASKER_CONFIG")
        .env_remove("RUST_BACKTRACE");
    c
}

/// Runs and returns the output, printing it when the test fails.
pub fn run(mut c: Command) -> Output {
    let out = c.output().expect("tasker runs");
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One number from the test database.
pub async fn count(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// Polls `sql` until it reaches `at_least`, failing the test after `limit`.
pub async fn wait_for(pool: &PgPool, sql: &str, at_least: i64, limit: Duration) {
    let t = Instant::now();
    loop {
        let n = count(pool, sql).await;
        if n >= at_least {
            return;
        }
        assert!(
            t.elapsed() < limit,
            "{sql}: {n} < {at_least} after {limit:?}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}
