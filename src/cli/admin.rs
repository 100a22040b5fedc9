//! `hodei admin`: operations on a server's store, run on the server's machine rather than
//! through its API. `copy-store` moves an embedded database to PostgreSQL.

use std::path::{Path, PathBuf};

use clap::Subcommand;
use hodei_adapters::postgres::copy::{CopyError, copy_store};
use hodei_adapters::postgres::{is_postgres_url, redact};

use super::{EXIT_INTERNAL, EXIT_OK, EXIT_USAGE, outln};

/// Operations on a server's store (on its machine, with the server stopped).
#[derive(Debug, Subcommand)]
pub enum AdminCommand {
    /// Copy an embedded SQLite store and its job logs into an empty PostgreSQL database, and
    /// verify the copy (row counts and checksums of every table, every log's SHA-256) before
    /// committing it.
    #[command(
        after_help = "Examples:\n  hodei admin copy-store --from sqlite:hodei-data/hodei.db --to postgres://hodei:PASSWORD@db.example/hodei\n  hodei admin copy-store --from sqlite:.hodei/runs.db --logs .hodei/runs.db.logs --to \"$HODEI_DATABASE_URL\"\n\nStop the server first: the source is locked while it is copied. The target must be a\nnew, empty database (createdb); a copy that does not verify is rolled back whole.\nThen start the server with --database URL (see docs/operations.md, PostgreSQL)."
    )]
    CopyStore(CopyStoreArgs),
}

#[derive(Debug, clap::Args)]
pub struct CopyStoreArgs {
    /// The source: `sqlite:PATH`, the database file (`DIR/hodei.db` of a data directory).
    #[arg(long, value_name = "sqlite:PATH")]
    from: String,
    /// The target: an empty PostgreSQL database, `postgres://USER:PASSWORD@HOST:PORT/NAME`.
    #[arg(long, value_name = "URL")]
    to: String,
    /// The job logs to copy (default: `DIR/logs` beside `DIR/hodei.db`, else `PATH.logs`).
    #[arg(long, value_name = "DIR")]
    logs: Option<PathBuf>,
}

/// Runs the command; returns the exit code.
pub fn run(command: &AdminCommand) -> u8 {
    match command {
        AdminCommand::CopyStore(args) => copy(args),
    }
}

/// The database file a `sqlite:PATH` source names.
fn source_path(from: &str) -> Result<PathBuf, String> {
    let path = from
        .strip_prefix("sqlite://")
        .or_else(|| from.strip_prefix("sqlite:"))
        .filter(|p| !p.is_empty())
        .ok_or_else(|| {
            format!("--from is `{from}`: expected `sqlite:PATH`, the path of a Hodei database file")
        })?;
    let path = PathBuf::from(path);
    if !path.is_file() {
        return Err(format!(
            "--from: {} is not a database file (a server's is DIR/hodei.db)",
            path.display()
        ));
    }
    Ok(path)
}

/// Where the logs of the database at `db` are: `DIR/logs` in a data directory (`DIR/hodei.db`),
/// `PATH.logs` beside a `hodei run --store PATH` database.
fn logs_beside(db: &Path) -> PathBuf {
    let dir = db.parent().unwrap_or(Path::new("."));
    if db.file_name().is_some_and(|n| n == "hodei.db") && dir.join("logs").is_dir() {
        return dir.join("logs");
    }
    let mut name = db.as_os_str().to_owned();
    name.push(".logs");
    PathBuf::from(name)
}

fn copy(args: &CopyStoreArgs) -> u8 {
    let db = match source_path(&args.from) {
        Ok(db) => db,
        Err(err) => {
            eprintln!("error: {err}");
            return EXIT_USAGE;
        }
    };
    if !is_postgres_url(&args.to) {
        eprintln!(
            "error: --to is `{}`: expected a PostgreSQL URL such as postgres://hodei:PASSWORD@db.example:5432/hodei",
            redact(&args.to)
        );
        return EXIT_USAGE;
    }
    let logs = args.logs.clone().unwrap_or_else(|| logs_beside(&db));
    if !logs.is_dir() {
        eprintln!(
            "error: the logs directory {} does not exist: name it with --logs",
            logs.display()
        );
        return EXIT_USAGE;
    }
    if let Err(err) = crate::wiring::lock_store(&db) {
        eprintln!("error: {err}");
        return EXIT_USAGE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start: {err}");
            return EXIT_INTERNAL;
        }
    };
    let shown = redact(&args.to);
    eprintln!(
        "Copying {} and the logs in {} to {shown}...",
        db.display(),
        logs.display()
    );
    match runtime.block_on(copy_store(&db, &logs, &args.to)) {
        Ok(report) => {
            outln!(
                "{:<16} {:>10}  sha256 (rows as canonical JSON)",
                "table",
                "rows"
            );
            for (table, rows, checksum) in &report.tables {
                outln!("{table:<16} {rows:>10}  {checksum}");
            }
            outln!(
                "{:<16} {:>10}  {} ({} bytes)",
                "logs",
                report.logs,
                report.logs_checksum,
                report.log_bytes
            );
            outln!(
                "Copied and verified: every table's rows and checksum, every log's length and SHA-256, read back from {shown}."
            );
            EXIT_OK
        }
        Err(err @ CopyError::Mismatch { .. }) => {
            eprintln!("error: {err}");
            EXIT_INTERNAL
        }
        Err(err) => {
            eprintln!("error: {err}");
            EXIT_USAGE
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_is_an_existing_database_file_named_sqlite_path() {
        let dir = tempfile_dir();
        let db = dir.join("hodei.db");
        std::fs::write(&db, b"").unwrap();
        let named = format!("sqlite:{}", db.display());
        assert_eq!(source_path(&named).unwrap(), db);
        assert!(
            source_path(&db.display().to_string())
                .unwrap_err()
                .contains("sqlite:PATH")
        );
        let missing = format!("sqlite:{}", dir.join("nope.db").display());
        assert!(
            source_path(&missing)
                .unwrap_err()
                .contains("not a database file")
        );
        assert_eq!(logs_beside(&dir.join("runs.db")), dir.join("runs.db.logs"));
        std::fs::create_dir_all(dir.join("logs")).unwrap();
        assert_eq!(logs_beside(&db), dir.join("logs"));
        let _ = std::fs::remove_dir_all(&dir);
    }

    fn tempfile_dir() -> PathBuf {
        let dir = std::env::temp_dir().join(format!("hodei-admin-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        dir
    }
}
