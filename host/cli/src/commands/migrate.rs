//! `tasker migrate`: create the database if missing, apply the migrations, and say which
//! ones this run applied.

use std::process::ExitCode;

use anyhow::Result;
use sqlx::ConnectOptions;

use crate::app::App;
use crate::config::StoreLocation;

/// The migrations a database has applied: (version, description), oldest first. A database
/// or file that does not exist yet, or has no migration table, has applied none.
async fn applied(location: &StoreLocation) -> Vec<(i64, String)> {
    const SQL: &str =
        "SELECT version, description FROM _sqlx_migrations WHERE success ORDER BY version";
    match location {
        StoreLocation::Postgres(url) => {
            let Ok(opts) = url.parse::<sqlx::postgres::PgConnectOptions>() else {
                return Vec::new();
            };
            let Ok(mut conn) = opts.disable_statement_logging().connect().await else {
                return Vec::new();
            };
            sqlx::query_as(SQL)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default()
        }
        StoreLocation::Sqlite { path, .. } => {
            if !path.exists() {
                return Vec::new();
            }
            let opts = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(path)
                .read_only(true);
            let Ok(mut conn) = opts.connect().await else {
                return Vec::new();
            };
            sqlx::query_as(SQL)
                .fetch_all(&mut conn)
                .await
                .unwrap_or_default()
        }
    }
}

impl App {
    /// `tasker migrate`.
    pub async fn migrate(&self) -> Result<ExitCode> {
        let location = self.settings.store_location()?;
        let before = applied(&location).await;
        self.store(1).await?;
        let after = applied(&location).await;
        let new: Vec<_> = after.iter().filter(|m| !before.contains(m)).collect();
        for (version, description) in &new {
            println!("applied {version:04} {description}");
        }
        match new.len() {
            0 => println!(
                "already up to date: {} migrations applied before",
                after.len()
            ),
            n => println!("{n} migrations applied; {} in all", after.len()),
        }
        Ok(ExitCode::SUCCESS)
    }
}
