//! The conformance suite's harness: one scenario, run on every backend.
//!
//! A scenario is a generic `async fn name<S: Backend>(store: S)`;
//! `on_both_backends!` turns each named scenario into a module with
//! two tests, `name::postgres` (a fresh database per test, by `#[sqlx::test]`) and
//! `name::sqlite` (a fresh SQLite file per test).

/// Run each named scenario on PostgreSQL and on SQLite (see the module docs).
#[macro_export]
macro_rules! on_both_backends {
    ($($name:ident),+ $(,)?) => {$(
        mod $name {
            #[::sqlx::test(migrator = "::tasker_store::MIGRATOR")]
            async fn postgres(pool: ::sqlx::PgPool) {
                super::$name(::tasker_store::PgStore::new(pool)).await
            }

            #[::tokio::test]
            async fn sqlite() {
                let store = ::tasker_store::SqliteStore::temporary()
                    .await
                    .expect("a temporary SQLite store");
                super::$name(store).await
            }
        }
    )+};
}

use std::future::Future;

use tasker_store::{AnyStore, PgStore, SqliteStore, Store, StoreError};

type Result<T> = std::result::Result<T, StoreError>;

/// What a conformance scenario may ask of a backend beyond [`Store`]: its name, and a count
/// by a plain SQL query that means the same on both (e.g. `SELECT count(*) FROM steps`), for
/// invariants the trait does not expose.
pub trait Backend: Store + Clone + 'static {
    /// `"postgres"` or `"sqlite"`.
    fn backend(&self) -> &'static str;

    /// The single integer a query returns.
    fn count(&self, sql: &str) -> impl Future<Output = Result<i64>> + Send;

    /// Another handle on the same database, as another worker would hold: on PostgreSQL a
    /// pool of its own with `connections` connections (as a separate process has); on SQLite
    /// the same store, which in-process workers share (one writer at a time).
    fn sibling(&self, connections: u32) -> impl Future<Output = Result<Self>> + Send;

    /// The same store as the binaries hold it (the server takes an [`AnyStore`]).
    fn any(&self) -> AnyStore;

    /// The database opened again, as a restarted process opens it: PostgreSQL a new pool,
    /// SQLite the file with pools of its own.
    fn reopen(&self) -> impl Future<Output = Result<Self>> + Send;
}

impl Backend for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    async fn count(&self, sql: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(self.pool()).await?)
    }

    async fn sibling(&self, connections: u32) -> Result<Self> {
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(connections)
            .connect_with((*self.pool().connect_options()).clone())
            .await?;
        Ok(PgStore::new(pool))
    }

    fn any(&self) -> AnyStore {
        self.clone().into()
    }

    async fn reopen(&self) -> Result<Self> {
        self.sibling(2).await
    }
}

impl Backend for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn count(&self, sql: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(sql).fetch_one(self.reader()).await?)
    }

    async fn sibling(&self, _connections: u32) -> Result<Self> {
        Ok(self.clone())
    }

    fn any(&self) -> AnyStore {
        self.clone().into()
    }

    async fn reopen(&self) -> Result<Self> {
        SqliteStore::reopen(self).await
    }
}
