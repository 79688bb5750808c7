//! Helpers for tests that run the real `tasker` binary against a test database, on either
//! backend: `cli_on_both_backends!(scenario, ...)` runs each `async fn scenario(db: Db)` once
//! on a fresh PostgreSQL database and once on a fresh SQLite file, each as `tasker migrate`
//! leaves it (only `migrate` creates or migrates a database).

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use tasker_store::{AnyStore, PgStore, SqliteStore};

/// The database a test's `tasker` commands use.
pub enum Db {
    /// A fresh PostgreSQL database (without a schema until [`Db::prepare`]).
    Postgres(PgPool),
    /// A SQLite file (that does not exist until [`Db::prepare`]).
    Sqlite(PathBuf),
}

impl Db {
    /// A new SQLite location under target/tmp, unique to this test.
    pub fn sqlite(test: &str) -> Db {
        Db::Sqlite(scratch(test).join("tasker.db"))
    }

    /// The DATABASE_URL that selects this database.
    pub fn url(&self) -> String {
        match self {
            Db::Postgres(pool) => database_url(pool),
            Db::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }

    /// The store, for checks through the `Store` trait.
    pub async fn store(&self) -> AnyStore {
        match self {
            Db::Postgres(pool) => {
                let store = PgStore::new(pool.clone());
                store.migrate().await.expect("migrations apply");
                store.into()
            }
            Db::Sqlite(path) => SqliteStore::open(path, 2)
                .await
                .expect("the SQLite file opens")
                .into(),
        }
    }

    /// Creates and migrates the database, as `tasker migrate` does.
    pub async fn prepare(&self) {
        drop(self.store().await);
    }

    /// Whether the binary wrote nothing: no template, task or token (and no schema beyond
    /// what [`Db::prepare`] made).
    pub async fn untouched(&self) -> bool {
        const WRITTEN: &str = "SELECT (SELECT count(*) FROM templates) + (SELECT count(*) FROM tasks) \
                               + (SELECT count(*) FROM api_tokens)";
        match self {
            Db::Postgres(pool) => {
                let tables = count_pg(
                    pool,
                    "SELECT count(*) FROM information_schema.tables WHERE table_schema = 'public'",
                )
                .await;
                tables == 0 || count_pg(pool, WRITTEN).await == 0
            }
            Db::Sqlite(path) => !path.exists() || count(self, WRITTEN).await == 0,
        }
    }
}

/// Defines `scenario::postgres` and `scenario::sqlite` for each `async fn scenario(db: Db)`,
/// on a migrated database.
#[macro_export]
macro_rules! cli_on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[::sqlx::test(migrations = false)]
            async fn postgres(pool: ::sqlx::PgPool) {
                let db = $crate::cli::Db::Postgres(pool);
                db.prepare().await;
                super::$name(db).await
            }

            #[::tokio::test]
            async fn sqlite() {
                let db = $crate::cli::Db::sqlite(stringify!($name));
                db.prepare().await;
                super::$name(db).await
            }
        }
    )+};
}

/// The workspace root.
pub fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The `tasker` binary under test: `$TASKER_BIN`, or the one cargo built into this test
/// binary's target directory (`scripts/test.sh` builds it before the tests; by hand:
/// `cargo build -p tasker-cli`).
pub fn tasker_bin() -> PathBuf {
    if let Some(bin) = std::env::var_os("TASKER_BIN") {
        return PathBuf::from(bin);
    }
    // This test binary is <target>/<profile>/deps/<name>-<hash>.
    let exe = std::env::current_exe().expect("the test binary's path");
    let bin = exe
        .parent()
        .and_then(Path::parent)
        .expect("a target directory")
        .join("tasker");
    assert!(
        bin.is_file(),
        "no tasker binary at {}: build it first (cargo build -p tasker-cli) or set TASKER_BIN",
        bin.display()
    );
    bin
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
/// Unique per call: a scenario's two backends run at the same time in one process.
pub fn scratch(name: &str) -> PathBuf {
    static N: AtomicUsize = AtomicUsize::new(0);
    let d = root().join("target/tmp/tasker-cli-tests").join(format!(
        "{name}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    ));
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
pub fn tasker(db: &Db, plugin_dir: &Path) -> Command {
    let mut c = Command::new(tasker_bin());
    c.current_dir(root())
        .env("DATABASE_URL", db.url())
        .env("TASKER_PLUGIN_DIR", plugin_dir)
        .env("TASKER_CACHE_DIR", cache_dir())
        .env_remove("TASKER_CONFIG")
        .env_remove("RUST_BACKTRACE");
    c
}

/// Runs and returns the output, printing it when the test fails.
pub fn run(mut c: Command) -> Output {
    c.stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = c.spawn().expect("tasker runs");
    let drain = |pipe: Option<Box<dyn std::io::Read + Send>>| {
        std::thread::spawn(move || {
            let mut buf = Vec::new();
            if let Some(mut p) = pipe {
                let _ = p.read_to_end(&mut buf);
            }
            buf
        })
    };
    let out_reader = drain(child.stdout.take().map(|p| Box::new(p) as _));
    let err_reader = drain(child.stderr.take().map(|p| Box::new(p) as _));
    let status = wait_bounded(&mut child, CALL_BOUND);
    let out = Output {
        status: status.unwrap_or_else(|| {
            let _ = child.kill();
            child.wait().expect("a killed child is reaped")
        }),
        stdout: out_reader.join().expect("stdout reader"),
        stderr: err_reader.join().expect("stderr reader"),
    };
    eprintln!(
        "--- stdout\n{}\n--- stderr\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        status.is_some(),
        "{c:?} did not finish within {CALL_BOUND:?} and was killed (output above)"
    );
    out
}

/// How long one `tasker` call in a test may take: far above a busy CI machine's worst, so
/// that a hang fails its own test instead of stalling the whole run.
pub const CALL_BOUND: Duration = Duration::from_secs(600);

/// The child's exit status, or `None` if it is still running after `bound`.
pub fn wait_bounded(child: &mut Child, bound: Duration) -> Option<std::process::ExitStatus> {
    let t = Instant::now();
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            return Some(status);
        }
        if t.elapsed() >= bound {
            return None;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

pub fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

pub fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

async fn count_pg(pool: &PgPool, sql: &str) -> i64 {
    sqlx::query_scalar(sql).fetch_one(pool).await.unwrap()
}

/// One number from the test database (SQL both backends understand).
pub async fn count(db: &Db, sql: &str) -> i64 {
    match db {
        Db::Postgres(pool) => count_pg(pool, sql).await,
        Db::Sqlite(path) => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true);
            let mut conn = sqlx::ConnectOptions::connect(&opts).await.unwrap();
            sqlx::query_scalar(sql).fetch_one(&mut conn).await.unwrap()
        }
    }
}

/// Runs one statement on the test database (for a test that sets up a state no command
/// reaches directly); returns the rows it changed.
pub async fn execute(db: &Db, sql: &str) -> u64 {
    match db {
        Db::Postgres(pool) => sqlx::query(sql)
            .execute(pool)
            .await
            .unwrap()
            .rows_affected(),
        Db::Sqlite(path) => {
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .busy_timeout(Duration::from_secs(60));
            let mut conn = sqlx::ConnectOptions::connect(&opts).await.unwrap();
            sqlx::query(sql)
                .execute(&mut conn)
                .await
                .unwrap()
                .rows_affected()
        }
    }
}

/// Polls `sql` until it reaches `at_least`, failing the test after `limit`.
pub async fn wait_for(db: &Db, sql: &str, at_least: i64, limit: Duration) {
    let t = Instant::now();
    loop {
        let n = count(db, sql).await;
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

/// A `tasker worker` process with the given config file running `concurrency` steps at
/// once, killed if the test ends before stopping it.
pub fn spawn_worker(db: &Db, config: &Path, id: &str, concurrency: u32) -> KillOnDrop {
    KillOnDrop(
        worker_command(db, &plugin_dir(), config, id, concurrency)
            .stderr(Stdio::inherit())
            .spawn()
            .expect("worker starts"),
    )
}

/// The command of [`spawn_worker`], on any plugin directory; stderr is the caller's choice.
pub fn worker_command(
    db: &Db,
    plugins: &Path,
    config: &Path,
    id: &str,
    concurrency: u32,
) -> Command {
    let mut c = tasker(db, plugins);
    c.arg("--config")
        .arg(config)
        .args([
            "worker",
            "--id",
            id,
            "--concurrency",
            &concurrency.to_string(),
        ])
        .stdout(Stdio::null());
    c
}

/// A child process killed when the test ends early (a failed assertion), so that no worker
/// outlives its test and holds on to its database.
pub struct KillOnDrop(pub Child);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Every one of the `steps` steps in the database completed, each with exactly one
/// successful attempt.
pub async fn assert_each_step_completed_once(db: &Db, steps: i64) {
    let once = count(
        db,
        "SELECT count(*) FROM (SELECT step_id FROM attempts WHERE outcome = 'completed'
         GROUP BY step_id HAVING count(*) = 1) x",
    )
    .await;
    let all = count(
        db,
        "SELECT count(*) FROM attempts WHERE outcome = 'completed'",
    )
    .await;
    assert_eq!(
        (once, all),
        (steps, steps),
        "one successful attempt per step"
    );
    let unfinished = count(db, "SELECT count(*) FROM steps WHERE state <> 'complete'").await;
    assert_eq!(unfinished, 0);
}

/// Stops a worker with SIGTERM, which must end it cleanly.
pub fn stop_gracefully(worker: &mut Child) {
    let status = Command::new("kill")
        .args(["-TERM", &worker.id().to_string()])
        .status()
        .unwrap();
    assert!(status.success());
    let stopped = wait_bounded(worker, CALL_BOUND);
    assert!(
        stopped.is_some_and(|s| s.success()),
        "SIGTERM stops it cleanly: {stopped:?}"
    );
}

/// Restarts the PostgreSQL server of the test database in immediate mode (a crash, then
/// recovery from the WAL): `$TASKER_TEST_PG_RESTART` (run by `sh -c`) or else
/// `pg_ctlcluster` on the newest cluster under /etc/postgresql. Only for a test that is
/// alone in its binary.
pub fn restart_postgres() {
    let command = std::env::var("TASKER_TEST_PG_RESTART").unwrap_or_else(|_| {
        let newest = std::fs::read_dir("/etc/postgresql")
            .expect(
                "no /etc/postgresql: set TASKER_TEST_PG_RESTART to a command that restarts \
                 the server of DATABASE_URL",
            )
            .filter_map(|e| e.ok()?.file_name().into_string().ok())
            .max_by_key(|v| v.parse::<u32>().unwrap_or(0))
            .expect("a cluster under /etc/postgresql");
        format!("pg_ctlcluster --skip-systemctl-redirect --mode=immediate {newest} main restart")
    });
    let status = std::process::Command::new("sh")
        .args(["-c", &command])
        .status()
        .expect("the restart command runs");
    assert!(status.success(), "{command}: {status}");
}

/// When the server last started; retried while it is coming back up.
pub async fn started_at(pool: &PgPool, limit: Duration) -> DateTime<Utc> {
    let t = Instant::now();
    loop {
        match sqlx::query_scalar("SELECT pg_postmaster_start_time()")
            .fetch_one(pool)
            .await
        {
            Ok(at) => return at,
            Err(e) => assert!(t.elapsed() < limit, "the server is not back: {e}"),
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
