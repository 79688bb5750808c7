//! Each surprise a new user met, as a test named after it (issue #18, "no surprises").
//!
//! Databases are never created or migrated by surprise: only `tasker migrate` does it (and
//! `run`/`dev` on the embedded store); a schema other than this build's is refused; a failed
//! connection says why (a wrong password against a stand-in server that refuses it, TLS
//! against the test server's certificate); `tasker run` runs only its own task.
//!
//! Tests that need a database that does not exist yet use a throwaway PostgreSQL database
//! of their own (dropped at the end) or a SQLite path under target/tmp, never the shared
//! `postgres` database.

use std::path::PathBuf;
use std::process::Command;

use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use sqlx::{ConnectOptions, Executor};
use tasker_tests::cli::*;

/// The server the tests run against.
fn base_url() -> String {
    std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// `base_url()` with another database name.
fn pg_url(name: &str) -> String {
    let base = base_url();
    let (prefix, _) = base.rsplit_once('/').expect("a URL with a database");
    format!("{prefix}/{name}")
}

async fn pg_database_exists(name: &str) -> bool {
    let mut admin = base_url()
        .parse::<PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .expect("the test server");
    sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)")
        .bind(name)
        .fetch_one(&mut admin)
        .await
        .unwrap()
}

async fn drop_pg_database(name: &str) {
    let mut admin = base_url()
        .parse::<PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .expect("the test server");
    admin
        .execute(format!("DROP DATABASE IF EXISTS \"{name}\" WITH (FORCE)").as_str())
        .await
        .unwrap();
}

/// A database that does not exist when the test starts: a PostgreSQL name of its own
/// (dropped when this is dropped) or a SQLite path.
enum Fresh {
    Postgres(String),
    Sqlite(PathBuf),
}

impl Fresh {
    async fn postgres(test: &str) -> Fresh {
        let name = format!("tasker_surprise_{test}_{}", std::process::id());
        drop_pg_database(&name).await;
        Fresh::Postgres(name)
    }

    fn sqlite(test: &str) -> Fresh {
        Fresh::Sqlite(scratch(test).join("store/tasker.db"))
    }

    fn url(&self) -> String {
        match self {
            Fresh::Postgres(name) => pg_url(name),
            Fresh::Sqlite(path) => format!("sqlite:{}", path.display()),
        }
    }

    /// `tasker ARGS` on this database.
    fn tasker(&self, args: &[&str]) -> Command {
        let mut c = Command::new(tasker_bin());
        c.current_dir(root())
            .env("DATABASE_URL", self.url())
            .env("TASKER_PLUGIN_DIR", plugin_dir())
            .env("TASKER_CACHE_DIR", cache_dir())
            .env_remove("TASKER_CONFIG")
            .env_remove("RUST_BACKTRACE")
            .args(args);
        c
    }

    async fn exists(&self) -> bool {
        match self {
            Fresh::Postgres(name) => pg_database_exists(name).await,
            Fresh::Sqlite(path) => path.exists(),
        }
    }

    /// The test harness's handle on it, once it exists.
    async fn db(&self) -> Db {
        match self {
            Fresh::Postgres(name) => Db::Postgres(
                PgPoolOptions::new()
                    .max_connections(2)
                    .connect(&pg_url(name))
                    .await
                    .expect("the database exists"),
            ),
            Fresh::Sqlite(path) => Db::Sqlite(path.clone()),
        }
    }

    /// This backend's migrations directory.
    fn migrations(&self) -> PathBuf {
        match self {
            Fresh::Postgres(_) => root().join("migrations"),
            Fresh::Sqlite(_) => root().join("migrations/sqlite"),
        }
    }

    /// Creates the database with every migration but the last: a schema one version behind.
    async fn migrate_all_but_the_last(&self) -> (i64, String) {
        let dir = scratch("older-migrations");
        let mut files: Vec<PathBuf> = std::fs::read_dir(self.migrations())
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "sql"))
            .collect();
        files.sort();
        let last = files.pop().expect("migrations");
        for f in &files {
            std::fs::copy(f, dir.join(f.file_name().unwrap())).unwrap();
        }
        let migrator = sqlx::migrate::Migrator::new(dir.as_path()).await.unwrap();
        match self {
            Fresh::Postgres(name) => {
                let mut admin = base_url()
                    .parse::<PgConnectOptions>()
                    .unwrap()
                    .connect()
                    .await
                    .unwrap();
                admin
                    .execute(format!("CREATE DATABASE \"{name}\"").as_str())
                    .await
                    .unwrap();
                let pool = PgPoolOptions::new().connect(&pg_url(name)).await.unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
            Fresh::Sqlite(path) => {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let pool = sqlx::SqlitePool::connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new()
                        .filename(path)
                        .create_if_missing(true),
                )
                .await
                .unwrap();
                migrator.run(&pool).await.unwrap();
                pool.close().await;
            }
        }
        let name = last.file_name().unwrap().to_string_lossy().into_owned();
        let (version, rest) = name.split_once('_').unwrap();
        (
            version.parse().unwrap(),
            rest.trim_end_matches(".sql").replace('_', " "),
        )
    }
}

impl Drop for Fresh {
    fn drop(&mut self) {
        if let Fresh::Postgres(name) = self {
            let name = name.clone();
            // Dropped from a thread of its own: this may run inside the test's runtime.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .unwrap()
                    .block_on(drop_pg_database(&name))
            })
            .join();
        }
    }
}

/// Each `async fn scenario(fresh: Fresh)` on a PostgreSQL database and a SQLite file that do
/// not exist yet.
macro_rules! fresh_on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[::tokio::test]
            async fn postgres() {
                super::$name(super::Fresh::postgres(stringify!($name)).await).await
            }

            #[::tokio::test]
            async fn sqlite() {
                super::$name(super::Fresh::sqlite(stringify!($name))).await
            }
        }
    )+};
}

fresh_on_both_backends!(
    status_on_a_mistyped_database_creates_nothing,
    an_older_schema_asks_for_migrate,
    a_newer_schema_is_refused_with_both_versions,
    migrate_on_a_new_database_lists_what_it_applied,
);

/// Fails with exit code 2 and returns what it said.
fn refused(c: Command) -> String {
    let out = run(c);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    stderr(&out)
}

/// Read-only or not, a command on a database that does not exist says so and creates
/// nothing: not the database (PostgreSQL), not the file or its directory (SQLite).
async fn status_on_a_mistyped_database_creates_nothing(fresh: Fresh) {
    for args in [
        &["status", "1"][..],
        &["templates", "list"],
        &["templates", "register", "examples/order/order.yaml"],
        &["worker"],
        &["serve", "--no-auth", "--listen", "127.0.0.1:0"],
    ] {
        let err = refused(fresh.tasker(args));
        assert!(
            err.contains("does not exist: `tasker migrate` creates it"),
            "{args:?}: {err}"
        );
        assert!(!fresh.exists().await, "{args:?} created the database");
    }
    if let Fresh::Sqlite(path) = &fresh {
        assert!(!path.parent().unwrap().exists(), "no directory either");
    }
}

/// A database one migration behind: every command but `migrate` asks for `tasker migrate`,
/// workers and servers included; `migrate` applies exactly the missing one, and then the
/// commands run.
async fn an_older_schema_asks_for_migrate(fresh: Fresh) {
    let (last, description) = fresh.migrate_all_but_the_last().await;
    for args in [
        &["status", "1"][..],
        &["worker"],
        &["serve", "--no-auth", "--listen", "127.0.0.1:0"],
    ] {
        let err = refused(fresh.tasker(args));
        assert!(
            err.contains(&format!(
                "older than this tasker's {last} (1 migration to apply): run `tasker migrate`"
            )),
            "{args:?}: {err}"
        );
    }
    let out = run(fresh.tasker(&["migrate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out).lines().next(),
        Some(format!("applied {last:04} {description}").as_str()),
        "{}",
        stdout(&out)
    );
    let out = run(fresh.tasker(&["templates", "list"]));
    assert!(out.status.success(), "{}", stderr(&out));
}

/// A schema a newer tasker migrated (a rolling upgrade that moved ahead) is refused with both
/// versions named, by `migrate` too, which applies nothing.
async fn a_newer_schema_is_refused_with_both_versions(fresh: Fresh) {
    let out = run(fresh.tasker(&["migrate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let db = fresh.db().await;
    let known = count(&db, "SELECT max(version) FROM _sqlx_migrations").await;
    let checksum = match fresh {
        Fresh::Postgres(_) => "'\\x00'::bytea",
        Fresh::Sqlite(_) => "X'00'",
    };
    execute(
        &db,
        &format!(
            "INSERT INTO _sqlx_migrations (version, description, success, checksum, execution_time) \
             VALUES ({}, 'from a newer tasker', true, {checksum}, 0)",
            known + 1
        ),
    )
    .await;
    let expected = format!(
        "the database schema is at version {}, newer than this tasker's {known}",
        known + 1
    );
    for args in [&["status", "1"][..], &["worker"], &["migrate"]] {
        let err = refused(fresh.tasker(args));
        assert!(err.contains(&expected), "{args:?}: {err}");
    }
    assert_eq!(
        count(&db, "SELECT count(*) FROM _sqlx_migrations").await,
        known + 1,
        "migrate applied nothing"
    );
}

/// `tasker migrate` on a new database says it created it and lists each migration it
/// applied; "up to date" only the second time, when it applied none.
async fn migrate_on_a_new_database_lists_what_it_applied(fresh: Fresh) {
    let out = run(fresh.tasker(&["migrate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    let first = stdout(&out);
    let created = match &fresh {
        Fresh::Postgres(_) => "created the database".to_owned(),
        Fresh::Sqlite(path) => format!("created the embedded store {}", path.display()),
    };
    assert_eq!(first.lines().next(), Some(created.as_str()), "{first}");
    let files = std::fs::read_dir(fresh.migrations())
        .unwrap()
        .filter(|e| {
            e.as_ref()
                .unwrap()
                .path()
                .extension()
                .is_some_and(|x| x == "sql")
        })
        .count();
    let applied: Vec<&str> = first
        .lines()
        .filter(|l| l.starts_with("applied "))
        .collect();
    assert_eq!(applied.len(), files, "{first}");
    assert_eq!(applied[0], "applied 0001 schema", "{first}");
    assert!(
        first.ends_with(&format!("{files} migrations applied; {files} in all\n")),
        "{first}"
    );
    assert!(!first.contains("up to date"), "{first}");
    let out = run(fresh.tasker(&["migrate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(
        stdout(&out),
        format!("already up to date: {files} migrations applied before\n")
    );
}

/// A URL without a database name is refused before any connection: PostgreSQL would take the
/// role's name (here `postgres`) and the tables would land in a database nobody chose.
#[tokio::test]
async fn a_url_without_a_database_name_is_refused() {
    let base = base_url();
    let (server, _) = base.rsplit_once('/').unwrap();
    for url in [server.to_owned(), format!("{server}/")] {
        let mut c = Command::new(tasker_bin());
        c.current_dir(root())
            .env("DATABASE_URL", &url)
            .env_remove("TASKER_CONFIG")
            .arg("migrate");
        let err = refused(c);
        assert!(
            err.contains(&format!("database URL {url} names no database")),
            "{err}"
        );
    }
}

/// What a failed connection says (PostgreSQL only: the embedded store has no server).
fn status_with_url(url: &str) -> String {
    let mut c = Command::new(tasker_bin());
    c.current_dir(root())
        .env("DATABASE_URL", url)
        .env_remove("TASKER_CONFIG")
        .args(["status", "1"]);
    refused(c)
}

fn server_part() -> String {
    base_url()
        .split('@')
        .nth(1)
        .and_then(|h| h.split('/').next())
        .unwrap_or("127.0.0.1:5432")
        .to_owned()
}

/// An unknown role is named as such, in the server's own words, not "is PostgreSQL running?".
#[tokio::test]
async fn an_unknown_role_is_named() {
    let err = status_with_url(&format!(
        "postgres://tasker_no_such_role@{}/postgres",
        server_part()
    ));
    assert!(
        err.contains("the role is unknown or not allowed: role \"tasker_no_such_role\""),
        "{err}"
    );
    assert!(!err.contains("is PostgreSQL running"), "{err}");
}

/// A port nobody listens on is a refused connection, said at once (the pool's retries
/// would take its acquire timeout).
#[tokio::test]
async fn a_refused_connection_is_named() {
    let t = std::time::Instant::now();
    let err = status_with_url("postgres://postgres@127.0.0.1:1/tasker");
    assert!(
        err.contains(
            "cannot connect to postgres://postgres@127.0.0.1:1/tasker: connection refused"
        ),
        "{err}"
    );
    assert!(t.elapsed() < std::time::Duration::from_secs(20), "{t:?}");
}

/// Whether the test server offers TLS (`ssl = on`; Debian's snakeoil certificate here).
async fn server_has_tls() -> bool {
    let mut admin = base_url()
        .parse::<PgConnectOptions>()
        .unwrap()
        .connect()
        .await
        .expect("the test server");
    let ssl: String = sqlx::query_scalar("SHOW ssl")
        .fetch_one(&mut admin)
        .await
        .unwrap();
    ssl == "on"
}

/// `sslmode=require` connects over TLS (sqlx is built with rustls): `migrate` and `status`
/// work, and the server sees the session encrypted.
#[tokio::test]
async fn sslmode_require_connects_over_tls() {
    if !server_has_tls().await {
        eprintln!("skipped: the test server has ssl = off");
        return;
    }
    let fresh = Fresh::postgres("tls_require").await;
    let Fresh::Postgres(name) = &fresh else {
        unreachable!()
    };
    let url = format!("{}?sslmode=require", pg_url(name));
    let tasker = |args: &[&str]| {
        let mut c = fresh.tasker(args);
        c.env("DATABASE_URL", &url);
        c
    };
    let out = run(tasker(&["migrate"]));
    assert!(out.status.success(), "{}", stderr(&out));
    assert!(
        stdout(&out).starts_with("created the database"),
        "{}",
        stdout(&out)
    );
    // Status of a task that does not exist: the store answered, over TLS.
    let out = run(tasker(&["status", "1"]));
    assert!(stderr(&out).contains("no task 1"), "{}", stderr(&out));
    assert!(!stderr(&out).contains("cannot connect"), "{}", stderr(&out));
    let pool = PgPoolOptions::new()
        .max_connections(1)
        .connect(&url)
        .await
        .expect("connects with sslmode=require");
    let ssl: bool = sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert!(ssl, "the session is encrypted");
    pool.close().await;
}

/// A certificate that does not verify (the snakeoil certificate is for `localhost`, not
/// 127.0.0.1) is a TLS failure, said so with the certificate's fault, not "unreachable".
#[tokio::test]
async fn a_tls_failure_is_named() {
    if !server_has_tls().await {
        eprintln!("skipped: the test server has ssl = off");
        return;
    }
    let port = server_part()
        .rsplit_once(':')
        .map_or("5432".to_owned(), |(_, p)| p.to_owned());
    let err = status_with_url(&format!(
        "postgres://postgres@127.0.0.1:{port}/postgres?sslmode=verify-full"
    ));
    assert!(err.contains(": TLS failed: "), "{err}");
    assert!(err.contains("certificate"), "{err}");
    assert!(!err.contains("unreachable"), "{err}");
    assert!(!err.contains("is PostgreSQL running"), "{err}");
}

/// A stand-in PostgreSQL server on 127.0.0.1:0 that refuses every login as a wrong password
/// (the test server trusts every local login, so it cannot): it declines TLS, asks for a
/// cleartext password, and answers it with SQLSTATE 28P01. Returns its port and the
/// passwords it was sent.
fn password_refusing_server() -> (u16, std::sync::mpsc::Receiver<String>) {
    use std::io::{Read, Write};
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let (tx, rx) = std::sync::mpsc::channel();
    let read_u32 = |s: &mut std::net::TcpStream| -> std::io::Result<u32> {
        let mut b = [0u8; 4];
        s.read_exact(&mut b)?;
        Ok(u32::from_be_bytes(b))
    };
    let session = move |mut s: std::net::TcpStream| -> std::io::Result<String> {
        s.set_read_timeout(Some(std::time::Duration::from_secs(30)))?;
        // SSLRequest (80877103) first, unless sslmode=disable; then the startup message.
        let mut len = read_u32(&mut s)?;
        let mut code = read_u32(&mut s)?;
        if len == 8 && code == 80877103 {
            s.write_all(b"N")?;
            len = read_u32(&mut s)?;
            code = read_u32(&mut s)?;
        }
        assert_eq!(code, 196608, "protocol 3.0");
        let mut rest = vec![0u8; len as usize - 8];
        s.read_exact(&mut rest)?;
        // AuthenticationCleartextPassword.
        s.write_all(&[b'R', 0, 0, 0, 8, 0, 0, 0, 3])?;
        let mut tag = [0u8; 1];
        s.read_exact(&mut tag)?;
        assert_eq!(tag[0], b'p', "a password message");
        let mut pw = vec![0u8; read_u32(&mut s)? as usize - 4];
        s.read_exact(&mut pw)?;
        let password = String::from_utf8_lossy(pw.strip_suffix(&[0]).unwrap_or(&pw)).into_owned();
        let mut fields = Vec::new();
        for (k, v) in [
            (b'S', "FATAL"),
            (b'V', "FATAL"),
            (b'C', "28P01"),
            (b'M', "password authentication failed for user \"someone\""),
        ] {
            fields.push(k);
            fields.extend_from_slice(v.as_bytes());
            fields.push(0);
        }
        fields.push(0);
        let mut msg = vec![b'E'];
        msg.extend_from_slice(&(fields.len() as u32 + 4).to_be_bytes());
        msg.extend_from_slice(&fields);
        s.write_all(&msg)?;
        s.flush()?;
        Ok(password)
    };
    std::thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { break };
            match session(conn) {
                Ok(pw) => {
                    if tx.send(pw).is_err() {
                        break;
                    }
                }
                Err(e) => eprintln!("fake server: {e}"),
            }
        }
    });
    (port, rx)
}

/// A wrong password is named as such, with the user the server refused, not "is
/// PostgreSQL running?", and the password itself is never printed.
#[tokio::test]
async fn a_wrong_password_is_named() {
    let (port, passwords) = password_refusing_server();
    let url = format!("postgres://someone:not-my-pw@127.0.0.1:{port}/db");
    let mut c = Command::new(tasker_bin());
    c.current_dir(root())
        .env_remove("DATABASE_URL")
        .env_remove("TASKER_CONFIG")
        .arg("--database-url")
        .arg(&url)
        .args(["status", "1"]);
    let err = refused(c);
    assert!(
        err.contains(&format!(
            "cannot connect to postgres://someone@127.0.0.1:{port}/db: wrong password: \
             password authentication failed for user \"someone\""
        )),
        "{err}"
    );
    assert!(!err.contains("is PostgreSQL running"), "{err}");
    assert!(!err.contains("not-my-pw"), "{err}");
    // The server did ask, and got the URL's password.
    let sent = passwords
        .recv_timeout(std::time::Duration::from_secs(30))
        .expect("the fake server was asked");
    assert_eq!(sent, "not-my-pw");
}

tasker_tests::cli_on_both_backends!(run_claims_only_its_own_task);

/// `tasker run` on a shared store runs its own task only: another task's ready step is not
/// claimed (nor abandoned half-run when `run` exits), and `run` says the other task waits.
async fn run_claims_only_its_own_task(db: Db) {
    let dir = scratch("run-scope");
    let template = |name: &str| {
        format!(
            "namespace: e2e\nname: {name}\nversion: 1.0.0\nsteps:\n  - {{name: a, handler: noop@0.1.0}}\n  - {{name: b, handler: noop@0.1.0, depends_on: a}}\n"
        )
    };
    std::fs::write(dir.join("other.yaml"), template("other")).unwrap();
    std::fs::write(dir.join("mine.yaml"), template("mine")).unwrap();
    let mut c = tasker(&db, &plugin_dir());
    c.arg("submit").arg(dir.join("other.yaml"));
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));

    let mut c = tasker(&db, &plugin_dir());
    c.arg("run").arg(dir.join("mine.yaml")).arg("--plain");
    let out = run(c);
    assert!(out.status.success(), "{}", stderr(&out));
    let err = stderr(&out);
    assert!(
        err.contains("1 other unfinished task on this store waits for a worker"),
        "{err}"
    );

    let mine = "(SELECT t.id FROM tasks t JOIN templates tp ON tp.id = t.template_id \
                WHERE tp.template_key = 'e2e/mine@1.0.0')";
    let other = "(SELECT t.id FROM tasks t JOIN templates tp ON tp.id = t.template_id \
                 WHERE tp.template_key = 'e2e/other@1.0.0')";
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM tasks WHERE id = {mine} AND state = 'complete'")
        )
        .await,
        1
    );
    // The other task as it was submitted: pending, its first step still ready and unclaimed.
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM tasks WHERE id = {other} AND state = 'pending'")
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM steps WHERE task_id = {other} AND state = 'pending' \
                 AND claim_count = 0"
            )
        )
        .await,
        2
    );
    assert_eq!(
        count(
            &db,
            &format!(
                "SELECT count(*) FROM steps WHERE task_id = {other} AND name = 'a' \
                 AND ready_at IS NOT NULL"
            )
        )
        .await,
        1
    );
    assert_eq!(
        count(
            &db,
            &format!("SELECT count(*) FROM attempts WHERE task_id = {other}")
        )
        .await,
        0
    );
}

/// The CLI's surface: handlers checked at register and submit, grant paths independent of
/// where a template file lives, closed pipes, error chains (issue #18, point 5).
mod cli_surface {
    use std::io::BufRead;
    use std::path::Path;
    use std::process::Stdio;

    use tasker_store::{Store, TaskId};
    use tasker_tests::cli::{
        CALL_BOUND, Db, count, plugin_dir, run, scratch, stderr, stdout, tasker, wait_bounded,
    };

    tasker_tests::cli_on_both_backends!(
        a_template_naming_an_unknown_handler_is_refused_at_register,
        a_template_naming_an_unknown_handler_is_refused_at_submit,
        registering_ahead_of_a_deploy_warns,
        the_same_template_from_two_directories_is_one_template,
        a_table_piped_into_head_ends_quietly,
        an_error_prints_its_cause_once,
    );

    /// A template whose second step names a version of `echo` that is not built and whose
    /// third names a plugin that does not exist.
    const UNKNOWN: &str = "namespace: e2e\nname: unknown\nversion: 1.0.0\nsteps:\n\
        \x20 - {name: a, handler: echo@0.1.0}\n\
        \x20 - {name: b, handler: echo@0.9.9, depends_on: a}\n\
        \x20 - {name: c, handler: nowhere@1.0.0, depends_on: a}\n";

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    /// `tasker migrate` first: only it creates a schema.
    fn migrate(db: &Db) {
        let mut c = tasker(db, &plugin_dir());
        c.arg("migrate");
        assert!(run(c).status.success());
    }

    async fn a_template_naming_an_unknown_handler_is_refused_at_register(db: Db) {
        let dir = scratch("unknown-at-register");
        let file = write(&dir, "t.yaml", UNKNOWN);
        let mut c = tasker(&db, &plugin_dir());
        c.args(["templates", "register"]).arg(&file);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        // Each missing component at its place, the same name's versions first in the list.
        assert!(
            err.contains(
                "steps[1] (b).handler: echo@0.9.9: no such version; the directory has echo 0.1.0"
            ),
            "{err}"
        );
        assert!(
            err.contains("steps[2] (c).handler: nowhere@1.0.0: ")
                && err.contains("no plugin named \"nowhere\""),
            "{err}"
        );
        assert!(
            err.contains("available (closest first): echo@0.1.0 (step-handler), "),
            "{err}"
        );
        assert!(err.contains("--allow-missing-handlers"), "{err}");
        assert!(!err.contains("steps[0]"), "echo@0.1.0 is there: {err}");
        // Refused before the store was even opened.
        assert!(db.untouched().await, "the refusal wrote nothing");
    }

    async fn a_template_naming_an_unknown_handler_is_refused_at_submit(db: Db) {
        migrate(&db);
        let dir = scratch("unknown-at-submit");
        let file = write(&dir, "t.yaml", UNKNOWN);
        // A file: refused before it is registered.
        let mut c = tasker(&db, &plugin_dir());
        c.arg("submit").arg(&file);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2));
        assert!(
            stderr(&out).contains("steps[2] (c).handler: nowhere@1.0.0"),
            "{}",
            stderr(&out)
        );
        assert_eq!(count(&db, "SELECT count(*) FROM templates").await, 0);
        // A registered key (registered on purpose ahead of a deploy): refused too.
        let mut c = tasker(&db, &plugin_dir());
        c.args(["templates", "register", "--allow-missing-handlers"])
            .arg(&file);
        assert!(run(c).status.success());
        let mut c = tasker(&db, &plugin_dir());
        c.args(["submit", "e2e/unknown@1.0.0"]);
        let out = run(c);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains("steps[1] (b).handler: echo@0.9.9") && err.contains("available"),
            "{err}"
        );
        assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 0);
    }

    async fn registering_ahead_of_a_deploy_warns(db: Db) {
        migrate(&db);
        // A plugin directory of the test's own, into which the handler is deployed later.
        let plugins = scratch("ahead-of-deploy-plugins");
        std::fs::copy(
            plugin_dir().join("noop@0.1.0.wasm"),
            plugins.join("noop@0.1.0.wasm"),
        )
        .unwrap();
        let dir = scratch("ahead-of-deploy");
        let file = write(
            &dir,
            "t.yaml",
            "namespace: e2e\nname: later\nversion: 1.0.0\nsteps:\n\
             \x20 - {name: a, handler: noop@0.1.0}\n\
             \x20 - {name: b, handler: greet_later@0.1.0, depends_on: a}\n",
        );
        let mut c = tasker(&db, &plugins);
        c.args(["templates", "register", "--allow-missing-handlers"])
            .arg(&file);
        let out = run(c);
        assert!(out.status.success());
        assert_eq!(stdout(&out).trim(), "registered e2e/later@1.0.0 (2 steps)");
        let err = stderr(&out);
        assert!(
            err.contains("warning: template e2e/later@1.0.0 names components")
                && err.contains("steps[1] (b).handler: greet_later@0.1.0")
                && err.contains("going ahead (--allow-missing-handlers)"),
            "{err}"
        );
        // Until the deploy, a task of it is refused; after it, accepted.
        let submit = || {
            let mut c = tasker(&db, &plugins);
            c.args(["submit", "e2e/later@1.0.0"]);
            run(c)
        };
        assert_eq!(submit().status.code(), Some(2));
        std::fs::copy(
            plugin_dir().join("noop@0.1.0.wasm"),
            plugins.join("greet_later@0.1.0.wasm"),
        )
        .unwrap();
        let out = submit();
        assert!(out.status.success());
        assert!(!stderr(&out).contains("warning"), "{}", stderr(&out));
        assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 1);
    }

    /// The template of the grant tests: counts the words of the granted `data` directory.
    const WORDS: &str = "namespace: e2e\nname: words\nversion: 1.0.0\nsteps:\n\
        \x20 - name: count\n\
        \x20   handler: wordcount@0.1.0\n\
        \x20   config: {input: /in}\n\
        \x20   grants: {dirs: [{host: data, guest: /in}]}\n";

    async fn the_same_template_from_two_directories_is_one_template(db: Db) {
        migrate(&db);
        let (one, two) = (scratch("same-template-1"), scratch("same-template-2"));
        let register = |dir: &Path| {
            let mut c = tasker(&db, &plugin_dir());
            c.args(["templates", "register"])
                .arg(write(dir, "words.yaml", WORDS));
            let out = run(c);
            assert!(out.status.success());
            stdout(&out)
        };
        assert_eq!(
            register(&one).trim(),
            "registered e2e/words@1.0.0 (1 steps)"
        );
        assert_eq!(
            register(&two).trim(),
            "already registered e2e/words@1.0.0 (1 steps)"
        );
        assert_eq!(count(&db, "SELECT count(*) FROM templates").await, 1);

        // A worker resolves `data` against its grants base.
        let base = scratch("same-template-base");
        std::fs::create_dir_all(base.join("data")).unwrap();
        std::fs::write(base.join("data/a.txt"), "one two three").unwrap();
        let mut c = tasker(&db, &plugin_dir());
        c.arg("--grants-base")
            .arg(&base)
            .arg("run")
            .arg(two.join("words.yaml"))
            .arg("--plain");
        assert!(run(c).status.success());
        let store = db.store().await;
        let task = TaskId::new(count(&db, "SELECT min(id) FROM tasks").await);
        let steps = store.steps_of_task(task).await.unwrap();
        assert_eq!(steps[0].result.as_ref().unwrap()["total"], 3);
        // Where the base has no such directory, `run` says so before anything runs.
        let mut c = tasker(&db, &plugin_dir());
        c.arg("--grants-base")
            .arg(&one)
            .arg("run")
            .arg(one.join("words.yaml"));
        let out = run(c);
        assert_eq!(out.status.code(), Some(2));
        let err = stderr(&out);
        assert!(
            err.contains(&format!(
                "step 'count': granted directory data ({}) does not exist",
                one.join("data").display()
            )),
            "{err}"
        );
        assert_eq!(count(&db, "SELECT count(*) FROM tasks").await, 1);
    }

    async fn a_table_piped_into_head_ends_quietly(db: Db) {
        migrate(&db);
        let dir = scratch("piped-into-head");
        // `tasker run … | head`: its summary goes to a closed pipe once the task is done.
        let (reader, writer) = std::io::pipe().unwrap();
        drop(reader);
        let small = write(
            &dir,
            "small.yaml",
            "namespace: e2e\nname: small\nversion: 1.0.0\nsteps:\n  - {name: a, handler: noop@0.1.0}\n",
        );
        let mut c = tasker(&db, &plugin_dir());
        c.arg("run")
            .arg(&small)
            .arg("--plain")
            .stdin(Stdio::null())
            .stdout(writer)
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let status = wait_bounded(&mut child, CALL_BOUND).expect("it ends");
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_quiet(status, &err);
        assert_eq!(
            count(&db, "SELECT count(*) FROM tasks WHERE state = 'complete'").await,
            1,
            "the run finished its task before the pipe ended it: {err}"
        );

        // Over 64 KiB of status table: more than a pipe holds once its reader has gone.
        let mut yaml = "namespace: e2e\nname: wide\nversion: 1.0.0\nsteps:\n".to_owned();
        for i in 0..1500 {
            yaml.push_str(&format!("  - {{name: step_{i:04}, handler: noop@0.1.0}}\n"));
        }
        let file = write(&dir, "wide.yaml", &yaml);
        let mut c = tasker(&db, &plugin_dir());
        c.arg("submit").arg(&file);
        let out = run(c);
        assert!(out.status.success());
        let task = stdout(&out).trim().to_owned();

        // `tasker status <task> | head -1`: one line read, then the reader is gone.
        let mut c = tasker(&db, &plugin_dir());
        c.args(["status", &task])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = c.spawn().unwrap();
        let mut first = String::new();
        std::io::BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        assert!(!first.is_empty());
        let status = wait_bounded(&mut child, CALL_BOUND).expect("it ends");
        let mut err = String::new();
        std::io::Read::read_to_string(child.stderr.as_mut().unwrap(), &mut err).unwrap();
        assert_quiet(status, &err);
    }

    /// Ended by the pipe as any Unix tool is (or done before it noticed), without a panic.
    #[track_caller]
    fn assert_quiet(status: std::process::ExitStatus, err: &str) {
        use std::os::unix::process::ExitStatusExt;
        assert!(
            !err.contains("panicked") && !err.contains("Broken pipe"),
            "{err}"
        );
        assert!(
            // SIGPIPE is 13.
            status.success() || status.signal() == Some(13),
            "{status:?}: {err}"
        );
    }

    /// No part of an error's text says the same thing twice.
    #[track_caller]
    fn assert_said_once(err: &str) {
        let err = err.trim();
        assert!(err.starts_with("error: "), "{err}");
        for part in err.split([':', '\n']).map(str::trim) {
            // Short parts ("error", a port) may well recur; sentences may not.
            if part.len() >= 12 {
                assert_eq!(err.matches(part).count(), 1, "{part:?} repeats in {err:?}");
            }
        }
    }

    async fn an_error_prints_its_cause_once(db: Db) {
        migrate(&db);
        let dir = scratch("cause-once");
        let fail = |args: &[&str], env: Option<(&str, String)>| {
            let mut c = tasker(&db, &plugin_dir());
            c.args(args);
            if let Some((k, v)) = env {
                c.env(k, v);
            }
            let out = run(c);
            assert_eq!(out.status.code(), Some(2), "{args:?}");
            stderr(&out)
        };
        let missing = dir.join("missing.yaml").display().to_string();
        let err = fail(&["templates", "register", &missing], None);
        assert!(err.contains("cannot read template"), "{err}");
        assert_said_once(&err);
        let bad_config = write(&dir, "tasker.toml", "[worker]\nconcurrency = \"many\"\n");
        let err = fail(
            &["--config", bad_config.to_str().unwrap(), "tasks", "list"],
            None,
        );
        assert!(err.contains("invalid config file"), "{err}");
        assert_said_once(&err);
        let err = fail(
            &[
                "run",
                "examples/order/order.yaml",
                "--context",
                "@/nonexistent/ctx.json",
            ],
            None,
        );
        assert!(err.contains("cannot read context file"), "{err}");
        assert_said_once(&err);
        // The store cannot be reached: sqlx's and std's errors carry their causes too.
        let unreachable = match &db {
            Db::Postgres(_) => "postgres://postgres@127.0.0.1:1/postgres".to_owned(),
            // Under a file: no directory can be made there.
            Db::Sqlite(_) => format!("sqlite:{}", bad_config.join("t.db").display()),
        };
        let err = fail(&["status", "1"], Some(("DATABASE_URL", unreachable)));
        assert_said_once(&err);
        // A role without privileges: the store's error, sqlx's and the server's each wrap
        // the one below, and each writes it into its own text too.
        if let Db::Postgres(pool) = &db {
            let role = format!("tasker_no_privileges_{}", std::process::id());
            sqlx::query(&format!("CREATE ROLE {role} LOGIN"))
                .execute(pool)
                .await
                .unwrap();
            let url = db.url();
            let (scheme, rest) = url.split_once("://").unwrap();
            let host = rest.rsplit_once('@').map_or(rest, |(_, h)| h);
            let err = fail(
                &["tasks", "list"],
                Some(("DATABASE_URL", format!("{scheme}://{role}@{host}"))),
            );
            sqlx::query(&format!("DROP ROLE {role}"))
                .execute(pool)
                .await
                .unwrap();
            assert!(err.contains("permission denied"), "{err}");
            assert_said_once(&err);
        }
    }
}
