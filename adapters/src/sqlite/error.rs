//! From sqlx errors to [`StoreError`], in one place: what a caller may retry
//! ([`StoreError::Unavailable`]: the database is busy, locked, unreachable or out of space) and
//! what it may not ([`StoreError::Corrupt`]: stored data that cannot be read back, a schema from
//! elsewhere, a broken constraint).

use hodei_domain::ports::Cause;
use hodei_domain::ports::StoreError;
use sqlx::error::{DatabaseError, ErrorKind};
use sqlx::migrate::MigrateError;

/// SQLite's primary result codes that mean "not now" rather than "never".
/// <https://www.sqlite.org/rescode.html>
const SQLITE_BUSY: i32 = 5;
const SQLITE_LOCKED: i32 = 6;
const SQLITE_NOMEM: i32 = 7;
const SQLITE_READONLY: i32 = 8;
const SQLITE_INTERRUPT: i32 = 9;
const SQLITE_IOERR: i32 = 10;
const SQLITE_FULL: i32 = 13;
const SQLITE_CANTOPEN: i32 = 14;
const SQLITE_PROTOCOL: i32 = 15;

/// `err`, raised while doing `what` (e.g. `appending events`), as a [`StoreError`].
pub(super) fn store_error(what: &str, err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => database_error(what, db.as_ref()),
        sqlx::Error::Io(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable {
            reason: format!("{what}: {err}"),
            cause: Cause::of(err),
        },
        sqlx::Error::Migrate(err) => migrate_error(what, *err),
        other => StoreError::Corrupt {
            what: what.to_owned(),
            reason: other.to_string(),
            cause: None,
        },
    }
}

fn database_error(what: &str, err: &dyn DatabaseError) -> StoreError {
    let primary = err
        .code()
        .and_then(|code| code.parse::<i32>().ok())
        .map(|code| code & 0xff);
    let retryable = matches!(
        primary,
        Some(
            SQLITE_BUSY
                | SQLITE_LOCKED
                | SQLITE_NOMEM
                | SQLITE_READONLY
                | SQLITE_INTERRUPT
                | SQLITE_IOERR
                | SQLITE_FULL
                | SQLITE_CANTOPEN
                | SQLITE_PROTOCOL
        )
    );
    if retryable {
        StoreError::Unavailable {
            reason: format!("{what}: {}", err.message()),
            cause: None,
        }
    } else if err.kind() == ErrorKind::ForeignKeyViolation {
        StoreError::NotFound {
            what: format!("a run or job referred to ({what})"),
        }
    } else {
        StoreError::Corrupt {
            what: what.to_owned(),
            reason: err.message().to_owned(),
            cause: None,
        }
    }
}

/// A migration that cannot run: the database is from a newer Hodei, or was changed by hand.
pub(super) fn migrate_error(what: &str, err: MigrateError) -> StoreError {
    match err {
        MigrateError::Execute(err) | MigrateError::ExecuteMigration(err, _) => {
            store_error(what, err)
        }
        other => StoreError::Corrupt {
            what: what.to_owned(),
            reason: other.to_string(),
            cause: None,
        },
    }
}

/// A column that cannot be read back as the domain's type.
pub(crate) fn corrupt(what: impl Into<String>, reason: impl ToString) -> StoreError {
    StoreError::Corrupt {
        what: what.into(),
        reason: reason.to_string(),
        cause: None,
    }
}

/// An id read from the database, which stores them as signed integers.
pub(crate) fn stored_id(what: &str, id: i64) -> Result<u64, StoreError> {
    u64::try_from(id).map_err(|_| corrupt(what, format!("negative id {id}")))
}

#[cfg(test)]
mod tests {
    use std::borrow::Cow;

    use super::*;

    /// A database error as SQLite reports it: an extended result code.
    #[derive(Debug)]
    struct Sqlite {
        code: i32,
        foreign_key: bool,
    }

    impl std::fmt::Display for Sqlite {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            write!(f, "sqlite error {}", self.code)
        }
    }

    impl std::error::Error for Sqlite {}

    impl DatabaseError for Sqlite {
        fn message(&self) -> &str {
            "database says no"
        }
        fn code(&self) -> Option<Cow<'_, str>> {
            Some(self.code.to_string().into())
        }
        fn as_error(&self) -> &(dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn as_error_mut(&mut self) -> &mut (dyn std::error::Error + Send + Sync + 'static) {
            self
        }
        fn into_error(self: Box<Self>) -> Box<dyn std::error::Error + Send + Sync + 'static> {
            self
        }
        fn kind(&self) -> ErrorKind {
            match self.foreign_key {
                true => ErrorKind::ForeignKeyViolation,
                false => ErrorKind::Other,
            }
        }
    }

    fn database(code: i32, foreign_key: bool) -> StoreError {
        let err = Sqlite { code, foreign_key };
        store_error("writing", sqlx::Error::Database(Box::new(err)))
    }

    #[test]
    fn busy_locked_and_io_errors_are_retryable_broken_constraints_are_not() {
        // SQLITE_BUSY_SNAPSHOT (517), SQLITE_LOCKED (6), SQLITE_IOERR_WRITE (778), SQLITE_FULL.
        for code in [5, 517, 6, 778, 13] {
            assert!(database(code, false).is_retryable(), "{code}");
        }
        let fk = database(787, true);
        assert!(matches!(fk, StoreError::NotFound { .. }), "{fk:?}");
        let corrupt = database(11, false);
        assert!(
            matches!(&corrupt, StoreError::Corrupt { what, reason, .. }
                if what == "writing" && reason == "database says no"),
            "{corrupt:?}"
        );
    }

    #[test]
    fn pool_and_io_failures_are_retryable_decoding_failures_are_not() {
        let io = store_error("reading", sqlx::Error::Io(std::io::Error::other("disk")));
        assert!(io.is_retryable(), "{io}");
        assert!(store_error("reading", sqlx::Error::PoolTimedOut).is_retryable());
        let decode = store_error("run-3", sqlx::Error::Decode("bad".into()));
        assert!(
            matches!(&decode, StoreError::Corrupt { what, .. } if what == "run-3"),
            "{decode:?}"
        );
        assert!(matches!(
            stored_id("job id", -1),
            Err(StoreError::Corrupt { .. })
        ));
        assert_eq!(stored_id("job id", 7).ok(), Some(7));
    }
}
