//! The store's error type: each error says whether retrying the same call may succeed.

use thiserror::Error;

/// What went wrong talking to the store.
#[derive(Debug, Error)]
pub enum StoreError {
    /// The database could not be reached or the connection broke. Retryable.
    #[error("database unavailable: {0}")]
    Unavailable(#[source] sqlx::Error),

    /// A serialization failure, deadlock, lock timeout or statement timeout: the transaction
    /// was rolled back and nothing was written. Retryable.
    #[error("transient database conflict ({code}): {message}")]
    Conflict { code: String, message: String },

    /// The task, step or template does not exist.
    #[error("not found: {0}")]
    NotFound(String),

    /// The arguments were refused (the message names the argument).
    #[error("invalid input: {0}")]
    InvalidInput(String),

    /// The operation does not apply to the object's current state (e.g. retrying a task that
    /// is not in error).
    #[error("not allowed in the current state: {0}")]
    InvalidState(String),

    /// A constraint refused the write: an illegal state transition, a template version
    /// registered with another definition, or a broken invariant.
    #[error("refused by constraint{}: {message}", constraint.as_deref().map(|c| format!(" {c}")).unwrap_or_default())]
    Constraint {
        constraint: Option<String>,
        message: String,
    },

    /// A value read back from the database does not fit the Rust type.
    #[error("unexpected value in {what}: {message}")]
    Decode { what: String, message: String },

    /// Applying the migrations failed.
    #[error("migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),

    /// Any other database error.
    #[error("database error: {0}")]
    Database(#[source] sqlx::Error),

    /// The database (PostgreSQL) or the embedded store's file does not exist; only
    /// `tasker migrate` creates one (and `run`/`dev` an embedded store).
    #[error("{what} does not exist: `tasker migrate` creates it")]
    DatabaseMissing { what: String },

    /// The database has applied fewer migrations than this build knows (0: none at all).
    #[error("{}", schema_older(*found, *expected, *missing))]
    SchemaOlder {
        found: i64,
        expected: i64,
        missing: usize,
    },

    /// The database was migrated by a newer build (a rolling upgrade that moved ahead): this
    /// one refuses to use a schema it does not know.
    #[error(
        "the database schema is at version {found}, newer than this tasker's {known}: \
         upgrade this tasker (it does not run on a schema it does not know)"
    )]
    SchemaNewer { found: i64, known: i64 },

    /// Connecting failed, and why in words; `detail` is the server's or the driver's own
    /// message.
    #[error("cannot connect to {target}: {failure}: {detail}")]
    Connect {
        target: String,
        failure: ConnectFailure,
        detail: String,
    },
}

/// Why a connection could not be made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Error)]
pub enum ConnectFailure {
    #[error("connection refused (is PostgreSQL running there?)")]
    Refused,
    #[error("unreachable")]
    Unreachable,
    #[error("the role is unknown or not allowed")]
    UnknownRole,
    #[error("wrong password")]
    WrongPassword,
    #[error("TLS failed")]
    Tls,
    #[error("the server refused")]
    Refusal,
}

fn schema_older(found: i64, expected: i64, missing: usize) -> String {
    if found == 0 {
        format!(
            "the database has no tasker schema (this tasker's is version {expected}): run `tasker migrate`"
        )
    } else {
        format!(
            "the database schema is at version {found}, older than this tasker's {expected} \
             ({missing} migration{} to apply): run `tasker migrate`",
            if missing == 1 { "" } else { "s" }
        )
    }
}

/// Errors are equal when they are the same variant with the same text. Every field is in the
/// text, and the wrapped sqlx and migration errors have no equality of their own.
impl PartialEq for StoreError {
    fn eq(&self, other: &Self) -> bool {
        std::mem::discriminant(self) == std::mem::discriminant(other)
            && self.to_string() == other.to_string()
    }
}

impl StoreError {
    /// Whether the same call may succeed if retried (after a reconnect or a short pause).
    pub fn is_retryable(&self) -> bool {
        matches!(
            self,
            StoreError::Unavailable(_)
                | StoreError::Conflict { .. }
                | StoreError::Connect {
                    failure: ConnectFailure::Refused | ConnectFailure::Unreachable,
                    ..
                }
        )
    }

    pub(crate) fn decode(what: impl Into<String>, message: impl ToString) -> Self {
        StoreError::Decode {
            what: what.into(),
            message: message.to_string(),
        }
    }
}

impl From<sqlx::Error> for StoreError {
    fn from(e: sqlx::Error) -> Self {
        match e {
            sqlx::Error::Io(_)
            | sqlx::Error::Tls(_)
            | sqlx::Error::PoolTimedOut
            | sqlx::Error::PoolClosed
            | sqlx::Error::WorkerCrashed
            | sqlx::Error::Protocol(_) => StoreError::Unavailable(e),
            sqlx::Error::Database(ref db) => {
                let code = db.code().map(|c| c.into_owned()).unwrap_or_default();
                let message = db.message().to_owned();
                if db.try_downcast_ref::<sqlx::sqlite::SqliteError>().is_some() {
                    return sqlite_error(e, code, message);
                }
                match code.as_str() {
                    // serialization_failure, deadlock_detected, lock_not_available,
                    // query_canceled (statement timeout)
                    "40001" | "40P01" | "55P03" | "57014" => StoreError::Conflict { code, message },
                    // admin / crash shutdown, cannot connect now, too many connections
                    "57P01" | "57P02" | "57P03" | "53300" => StoreError::Unavailable(e),
                    c if c.starts_with("08") => StoreError::Unavailable(e),
                    "P0002" => StoreError::NotFound(message),
                    "55000" => StoreError::InvalidState(message),
                    c if c.starts_with("22") => StoreError::InvalidInput(message),
                    c if c.starts_with("23") => StoreError::Constraint {
                        constraint: db.constraint().map(str::to_owned),
                        message,
                    },
                    _ => StoreError::Database(e),
                }
            }
            sqlx::Error::ColumnDecode { index, source } => StoreError::Decode {
                what: format!("column {index}"),
                message: source.to_string(),
            },
            other => StoreError::Database(other),
        }
    }
}

/// SQLite's (extended) result codes: busy and locked are conflicts to retry; constraint
/// failures (CHECK, UNIQUE, foreign key, a trigger's RAISE) are refusals.
fn sqlite_error(e: sqlx::Error, code: String, message: String) -> StoreError {
    let primary = code.parse::<i32>().map(|c| c & 0xff).unwrap_or(-1);
    match primary {
        // SQLITE_BUSY, SQLITE_LOCKED
        5 | 6 => StoreError::Conflict { code, message },
        // SQLITE_CONSTRAINT
        19 => {
            let constraint = match &e {
                sqlx::Error::Database(db) => db.constraint().map(str::to_owned),
                _ => None,
            };
            StoreError::Constraint {
                constraint,
                message,
            }
        }
        // SQLITE_CANTOPEN, SQLITE_IOERR, SQLITE_FULL, SQLITE_READONLY
        14 | 10 | 13 | 8 => StoreError::Unavailable(e),
        _ => StoreError::Database(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retryable_classification() {
        assert!(StoreError::Unavailable(sqlx::Error::PoolTimedOut).is_retryable());
        assert!(
            StoreError::Conflict {
                code: "40P01".into(),
                message: "deadlock detected".into()
            }
            .is_retryable()
        );
        assert!(!StoreError::NotFound("task 1".into()).is_retryable());
        assert!(!StoreError::InvalidInput("limit".into()).is_retryable());
        assert!(
            !StoreError::Constraint {
                constraint: None,
                message: "illegal step transition".into()
            }
            .is_retryable()
        );
        assert!(StoreError::from(sqlx::Error::PoolClosed).is_retryable());
        assert!(!StoreError::from(sqlx::Error::RowNotFound).is_retryable());
    }

    #[test]
    fn equality_is_kind_and_text() {
        assert_eq!(
            StoreError::NotFound("task 1".into()),
            StoreError::NotFound("task 1".into())
        );
        assert_ne!(
            StoreError::NotFound("task 1".into()),
            StoreError::InvalidInput("task 1".into())
        );
        assert_eq!(
            StoreError::Unavailable(sqlx::Error::PoolClosed),
            StoreError::Unavailable(sqlx::Error::PoolClosed)
        );
        assert_ne!(
            StoreError::Unavailable(sqlx::Error::PoolClosed),
            StoreError::Unavailable(sqlx::Error::PoolTimedOut)
        );
    }
}
