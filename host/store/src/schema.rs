//! The schema version of a database against the migrations this build knows, the one rule
//! both stores apply before a process uses a database it did not migrate itself: an older
//! schema asks for `tasker migrate`, a newer one (a rolling upgrade that moved ahead) is
//! refused with both versions named.

use sqlx::migrate::Migrator;

use crate::error::StoreError;
use crate::store::Result;

/// A migration, as `tasker migrate` reports the ones it applied.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AppliedMigration {
    pub version: i64,
    pub description: String,
}

/// The versions a migrator knows (up migrations only).
fn known(migrator: &Migrator) -> impl Iterator<Item = i64> + '_ {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration())
        .map(|m| m.version)
}

/// Whether a database that applied `applied` (successful versions) can be used by this
/// build: every known migration applied and none beyond them.
pub(crate) fn check(applied: &[i64], migrator: &Migrator) -> Result<()> {
    let expected = known(migrator).max().unwrap_or(0);
    let found = applied.iter().copied().max().unwrap_or(0);
    if found > expected {
        return Err(StoreError::SchemaNewer {
            found,
            known: expected,
        });
    }
    let missing = known(migrator).filter(|v| !applied.contains(v)).count();
    if missing > 0 {
        return Err(StoreError::SchemaOlder {
            found,
            expected,
            missing,
        });
    }
    Ok(())
}

/// Refuses to migrate a database a newer build migrated (its migrations are unknown here);
/// an older one is what migrating is for.
pub(crate) fn check_not_newer(applied: &[i64], migrator: &Migrator) -> Result<()> {
    match check(applied, migrator) {
        Err(StoreError::SchemaOlder { .. }) => Ok(()),
        other => other,
    }
}

/// The migrations a run applied: those known here that were not applied before it.
pub(crate) fn newly_applied(before: &[i64], migrator: &Migrator) -> Vec<AppliedMigration> {
    migrator
        .iter()
        .filter(|m| !m.migration_type.is_down_migration() && !before.contains(&m.version))
        .map(|m| AppliedMigration {
            version: m.version,
            description: m.description.to_string(),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn all() -> Vec<i64> {
        known(&crate::MIGRATOR).collect()
    }

    #[test]
    fn every_migration_applied_is_current() {
        assert!(check(&all(), &crate::MIGRATOR).is_ok());
        assert!(newly_applied(&all(), &crate::MIGRATOR).is_empty());
    }

    #[test]
    fn an_empty_database_has_no_schema() {
        let e = check(&[], &crate::MIGRATOR).unwrap_err();
        assert!(matches!(e, StoreError::SchemaOlder { found: 0, .. }), "{e}");
        assert!(e.to_string().contains("no tasker schema"), "{e}");
        assert!(e.to_string().contains("run `tasker migrate`"), "{e}");
    }

    #[test]
    fn a_missing_migration_is_older_and_an_unknown_one_newer() {
        let mut some = all();
        let last = some.pop().unwrap();
        let e = check(&some, &crate::MIGRATOR).unwrap_err();
        assert!(
            matches!(e, StoreError::SchemaOlder { expected, missing: 1, .. } if expected == last),
            "{e}"
        );
        assert!(check_not_newer(&some, &crate::MIGRATOR).is_ok());
        assert_eq!(newly_applied(&some, &crate::MIGRATOR).len(), 1);

        let mut more = all();
        more.push(last + 1);
        let e = check(&more, &crate::MIGRATOR).unwrap_err();
        assert_eq!(
            e,
            StoreError::SchemaNewer {
                found: last + 1,
                known: last
            }
        );
        assert!(
            e.to_string().contains(&format!("{}", last + 1))
                && e.to_string().contains(&format!("tasker's {last}")),
            "{e}"
        );
        assert!(check_not_newer(&more, &crate::MIGRATOR).is_err());
    }
}
