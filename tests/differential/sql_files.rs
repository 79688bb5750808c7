//! `host/store/sql` (the current schema, functions and triggers, readable in one place) equals
//! what the migrations leave in a database.
//!
//! The files are loaded into a second, empty database and both catalogs are compared through
//! PostgreSQL's own printers (`pg_get_functiondef`, `pg_get_triggerdef`, ...): PostgreSQL
//! normalises a function's header but keeps its body verbatim, so a file's body must equal
//! the migrated one byte for byte, comments included, and nothing here normalises text.
//!
//! PostgreSQL only: the files are PostgreSQL's; the embedded store has its own migrations.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use sqlx::postgres::{PgConnectOptions, PgConnection};
use sqlx::{Connection, Executor, PgPool};

/// Catalog queries compared between the two databases: each returns (key, definition).
const CATALOG: &[(&str, &str)] = &[
    (
        "function",
        "SELECT p.proname || '(' || pg_get_function_identity_arguments(p.oid) || ')',
                pg_get_functiondef(p.oid)
         FROM pg_proc p
         WHERE p.pronamespace = 'public'::regnamespace
           AND NOT EXISTS (SELECT 1 FROM pg_depend d
                           WHERE d.classid = 'pg_proc'::regclass AND d.objid = p.oid
                             AND d.deptype = 'e')",
    ),
    (
        "trigger",
        "SELECT t.tgrelid::regclass || '.' || t.tgname, pg_get_triggerdef(t.oid)
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid
         WHERE c.relnamespace = 'public'::regnamespace AND NOT t.tgisinternal",
    ),
    (
        "column",
        "SELECT table_name || '.' || column_name,
                concat_ws(' ', ordinal_position, format_type(a.atttypid, a.atttypmod),
                          CASE WHEN is_nullable = 'NO' THEN 'NOT NULL' END,
                          'DEFAULT ' || column_default,
                          'IDENTITY ' || identity_generation)
         FROM information_schema.columns c
         JOIN pg_attribute a ON a.attrelid = format('%I', c.table_name)::regclass
                            AND a.attname = c.column_name
         WHERE c.table_schema = 'public'",
    ),
    (
        "constraint",
        "SELECT conrelid::regclass || '.' || conname, pg_get_constraintdef(oid)
         FROM pg_constraint WHERE connamespace = 'public'::regnamespace",
    ),
    (
        "index",
        "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = 'public'",
    ),
    (
        "relation",
        "SELECT relname, relkind::text || ' ' || coalesce(array_to_string(reloptions, ', '), '')
         FROM pg_class WHERE relnamespace = 'public'::regnamespace",
    ),
    (
        "type",
        "SELECT typname, typtype::text FROM pg_type t
         WHERE typnamespace = 'public'::regnamespace
           AND NOT EXISTS (SELECT 1 FROM pg_class c WHERE c.reltype = t.oid)
           AND typelem = 0",
    ),
    (
        "state table row",
        "SELECT 'step ' || from_state || ' -> ' || to_state, '' FROM step_state_transitions
         UNION ALL
         SELECT 'task ' || from_state || ' -> ' || to_state, '' FROM task_state_transitions",
    ),
];

fn sql_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../host/store/sql")
}

/// `functions/*.sql`, by function name (the file's stem).
fn function_files() -> BTreeMap<String, PathBuf> {
    let mut files = BTreeMap::new();
    for entry in std::fs::read_dir(sql_dir().join("functions")).expect("sql/functions") {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "sql") {
            let stem = path.file_stem().unwrap().to_string_lossy().into_owned();
            files.insert(stem, path);
        }
    }
    files
}

async fn catalog(conn: &mut PgConnection, query: &str) -> BTreeMap<String, String> {
    sqlx::query_as::<_, (String, String)>(query)
        .fetch_all(conn)
        .await
        .unwrap_or_else(|e| panic!("{query}: {e}"))
        .into_iter()
        // sqlx's own bookkeeping, not part of the schema.
        .filter(|(key, _)| !key.starts_with("_sqlx_migrations"))
        .collect()
}

async fn function_names(conn: &mut PgConnection) -> BTreeSet<String> {
    catalog(conn, CATALOG[0].1)
        .await
        .into_keys()
        .map(|k| k[..k.find('(').unwrap()].to_owned())
        .collect()
}

async fn run(conn: &mut PgConnection, path: &Path) -> Result<(), String> {
    let text = std::fs::read_to_string(path).unwrap();
    sqlx::raw_sql(&text)
        .execute(conn)
        .await
        .map(drop)
        .map_err(|e| format!("{} does not load: {e}", path.display()))
}

/// Loads schema.sql, every function file and triggers.sql into `conn`'s (empty) database;
/// returns what went wrong.
async fn load_files(conn: &mut PgConnection) -> Vec<String> {
    let mut failures = Vec::new();
    // Functions are loaded in file-name order, before some of what their bodies name.
    conn.execute("SET check_function_bodies = off")
        .await
        .unwrap();
    if let Err(e) = run(conn, &sql_dir().join("schema.sql")).await {
        failures.push(e);
    }
    for (name, path) in function_files() {
        let before = function_names(conn).await;
        if let Err(e) = run(conn, &path).await {
            failures.push(e);
            continue;
        }
        let added: BTreeSet<_> = function_names(conn)
            .await
            .difference(&before)
            .cloned()
            .collect();
        if added != BTreeSet::from([name.clone()]) {
            failures.push(format!(
                "functions/{name}.sql must define function(s) named {name} only; it defined {added:?}"
            ));
        }
    }
    if let Err(e) = run(conn, &sql_dir().join("triggers.sql")).await {
        failures.push(e);
    }
    failures
}

/// A short line diff (longest common subsequence), `-` the database, `+` the file, with a
/// line of context around each change.
fn diff(db: &str, file: &str) -> String {
    let (a, b): (Vec<_>, Vec<_>) = (db.lines().collect(), file.lines().collect());
    let mut lcs = vec![vec![0usize; b.len() + 1]; a.len() + 1];
    for i in (0..a.len()).rev() {
        for j in (0..b.len()).rev() {
            lcs[i][j] = if a[i] == b[j] {
                lcs[i + 1][j + 1] + 1
            } else {
                lcs[i + 1][j].max(lcs[i][j + 1])
            };
        }
    }
    let mut ops = Vec::new(); // (kind, line number in the database's text, line)
    let (mut i, mut j) = (0, 0);
    while i < a.len() || j < b.len() {
        if i < a.len() && j < b.len() && a[i] == b[j] {
            ops.push((' ', i, a[i]));
            (i, j) = (i + 1, j + 1);
        } else if i < a.len() && (j == b.len() || lcs[i + 1][j] >= lcs[i][j + 1]) {
            ops.push(('-', i, a[i]));
            i += 1;
        } else {
            ops.push(('+', i, b[j]));
            j += 1;
        }
    }
    let near = |k: usize| {
        ops[k.saturating_sub(1)..(k + 2).min(ops.len())]
            .iter()
            .any(|o| o.0 != ' ')
    };
    let mut out = String::new();
    let mut last = None;
    for (k, (kind, line_no, line)) in ops.iter().enumerate() {
        if !near(k) {
            continue;
        }
        if last.is_some_and(|l| l + 1 != k) || last.is_none() {
            out.push_str(&format!("    @@ database line {}\n", line_no + 1));
        }
        out.push_str(&format!("    {kind} {line}\n"));
        last = Some(k);
    }
    out
}

/// Compares one catalog query's answers; returns what differs.
fn compare(
    what: &str,
    migrated: &BTreeMap<String, String>,
    files: &BTreeMap<String, String>,
) -> Vec<String> {
    let mut failures = Vec::new();
    let missing: Vec<_> = migrated
        .keys()
        .filter(|k| !files.contains_key(*k))
        .collect();
    let extra: Vec<_> = files
        .keys()
        .filter(|k| !migrated.contains_key(*k))
        .collect();
    if !missing.is_empty() {
        failures.push(format!(
            "{what}: in the migrated database, not in the files: {missing:?}"
        ));
    }
    if !extra.is_empty() {
        failures.push(format!(
            "{what}: in the files, not in the migrated database: {extra:?}"
        ));
    }
    for (key, db) in migrated {
        if let Some(file) = files.get(key).filter(|f| *f != db) {
            failures.push(format!(
                "{what} {key}: the file differs from the migrated database (- database, + file):\n{}",
                diff(db, file)
            ));
        }
    }
    failures
}

/// Loads the files into the scratch database and compares; returns what differs.
async fn check(migrated: PgPool, scratch: PgConnectOptions) -> Vec<String> {
    let mut db = migrated.acquire().await.unwrap();
    let mut files_db = PgConnection::connect_with(&scratch).await.unwrap();
    let mut failures = load_files(&mut files_db).await;
    for (what, query) in CATALOG {
        let m = catalog(&mut db, query).await;
        failures.extend(compare(what, &m, &catalog(&mut files_db, query).await));
    }
    // Every function of the database has a file, and every file a function.
    let names = function_names(&mut db).await;
    let files: BTreeSet<_> = function_files().into_keys().collect();
    let no_file: Vec<_> = names.difference(&files).collect();
    let no_function: Vec<_> = files.difference(&names).collect();
    if !no_file.is_empty() {
        failures.push(format!(
            "functions without a file in sql/functions: {no_file:?}"
        ));
    }
    if !no_function.is_empty() {
        failures.push(format!(
            "files in sql/functions without a function in the database: {no_function:?}"
        ));
    }
    files_db.close().await.unwrap();
    failures
}

/// A scratch database beside the test's own, dropped whatever the outcome, panics included
/// (hence its own thread and runtime: `Drop` cannot await).
struct Scratch {
    name: String,
    admin: PgConnectOptions,
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let (name, admin) = (self.name.clone(), self.admin.clone());
        let dropped = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            rt.block_on(async {
                let mut conn = PgConnection::connect_with(&admin).await?;
                conn.execute(format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)").as_str())
                    .await
                    .map(drop)
            })
        })
        .join();
        if !matches!(dropped, Ok(Ok(()))) && !std::thread::panicking() {
            panic!("could not drop {}: {dropped:?}", self.name);
        }
    }
}

#[sqlx::test(migrator = "tasker_store::MIGRATOR")]
async fn sql_files_match_the_migrated_database(migrated: PgPool) {
    let name = format!(
        "tasker_sql_files_{}_{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos()
    );
    migrated
        .execute(format!("CREATE DATABASE {name}").as_str())
        .await
        .unwrap();
    let admin = (*migrated.connect_options()).clone();
    let scratch = Scratch {
        name: name.clone(),
        admin: admin.clone(),
    };
    let failures = check(migrated, admin.database(&name)).await;
    drop(scratch);
    assert!(failures.is_empty(), "{}", failures.join("\n\n"));
}
