//! From sqlx errors to [`StoreError`] for PostgreSQL, in one place: what a caller may retry
//! ([`StoreError::Unavailable`]: the server is unreachable, shutting down, out of connections or
//! resources, or a transaction lost a serialization race) and what it may not.

use hodei_domain::ports::{Cause, StoreError};
use sqlx::error::{DatabaseError, ErrorKind};

/// `err`, raised while doing `what`, as a [`StoreError`].
pub(super) fn store_error(what: &str, err: sqlx::Error) -> StoreError {
    match err {
        sqlx::Error::Database(db) => database_error(what, db.as_ref()),
        sqlx::Error::Io(_)
        | sqlx::Error::Tls(_)
        | sqlx::Error::Protocol(_)
        | sqlx::Error::PoolTimedOut
        | sqlx::Error::PoolClosed
        | sqlx::Error::WorkerCrashed => StoreError::Unavailable {
            reason: format!("{what}: {err}"),
            cause: Cause::of(err),
        },
        other => StoreError::Corrupt {
            what: what.to_owned(),
            reason: other.to_string(),
            cause: None,
        },
    }
}

/// SQLSTATE classes and codes that mean "not now" rather than "never".
/// <https://www.postgresql.org/docs/current/errcodes-appendix.html>
fn retryable(code: &str) -> bool {
    // 08: connection exception; 53: insufficient resources; 57: operator intervention (admin
    // shutdown, crash shutdown, cannot connect now); 40001 serialization failure, 40P01
    // deadlock; 28: invalid authorization (a password changed on the server, fixable there).
    ["08", "53", "57", "28"]
        .iter()
        .any(|class| code.starts_with(class))
        || code == "40001"
        || code == "40P01"
}

fn database_error(what: &str, err: &dyn DatabaseError) -> StoreError {
    let code = err.code().map(|c| c.into_owned()).unwrap_or_default();
    if retryable(&code) {
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

/// A value that PostgreSQL stores as a signed 64-bit integer.
pub(super) fn id_of(value: u64) -> Result<i64, StoreError> {
    i64::try_from(value).map_err(|_| {
        crate::sqlite::error::corrupt("an id to store", format!("{value} is too large"))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_shutdown_and_serialization_codes_are_retryable_others_not() {
        for code in ["08006", "57P01", "53300", "40001", "40P01", "28P01"] {
            assert!(retryable(code), "{code}");
        }
        for code in ["23505", "23503", "42P01", "22P02"] {
            assert!(!retryable(code), "{code}");
        }
        let io = store_error("reading", sqlx::Error::Io(std::io::Error::other("reset")));
        assert!(io.is_retryable(), "{io}");
        assert!(id_of(u64::MAX).is_err());
    }
}
