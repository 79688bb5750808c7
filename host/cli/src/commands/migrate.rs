//! `tasker migrate`: create the database (or the embedded store's file) if missing, apply the
//! pending migrations, and say which ones this run applied. The only command that creates or
//! migrates a PostgreSQL database.

use std::process::ExitCode;

use anyhow::Result;
use tasker_store::{AppliedMigration, PgStore, SqliteStore};

use crate::app::App;
use crate::config::StoreLocation;

impl App {
    /// `tasker migrate`.
    pub async fn migrate(&self) -> Result<ExitCode> {
        let (created, applied, total) = match self.settings.store_location()? {
            StoreLocation::Postgres(url) => {
                let (_store, created, applied) = PgStore::create_and_migrate(&url, 1).await?;
                let created = created.then(|| "created the database".to_owned());
                (created, applied, tasker_store::MIGRATOR.iter().count())
            }
            StoreLocation::Sqlite { path, .. } => {
                let existed = path.is_file();
                let (_store, applied) = SqliteStore::open_and_migrate(&path, 1).await?;
                let created =
                    (!existed).then(|| format!("created the embedded store {}", path.display()));
                (
                    created,
                    applied,
                    tasker_store::SQLITE_MIGRATOR.iter().count(),
                )
            }
        };
        print!("{}", report(created.as_deref(), &applied, total));
        Ok(ExitCode::SUCCESS)
    }
}

/// What `tasker migrate` says: what it created, each migration it applied, and "up to date"
/// only when it applied none.
fn report(created: Option<&str>, applied: &[AppliedMigration], total: usize) -> String {
    let mut out = String::new();
    if let Some(c) = created {
        out.push_str(&format!("{c}\n"));
    }
    for m in applied {
        out.push_str(&format!("applied {:04} {}\n", m.version, m.description));
    }
    match applied.len() {
        0 => out.push_str(&format!(
            "already up to date: {total} migrations applied before\n"
        )),
        n => out.push_str(&format!("{n} migrations applied; {total} in all\n")),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn up_to_date_only_when_nothing_was_applied() {
        let applied = [AppliedMigration {
            version: 1,
            description: "schema".into(),
        }];
        let r = report(Some("created the database"), &applied, 1);
        assert_eq!(
            r,
            "created the database\napplied 0001 schema\n1 migrations applied; 1 in all\n"
        );
        assert!(!r.contains("up to date"));
        assert_eq!(
            report(None, &[], 19),
            "already up to date: 19 migrations applied before\n"
        );
    }
}
