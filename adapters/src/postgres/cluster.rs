//! Throwaway PostgreSQL clusters, for tests and benchmarks: `initdb` into a temporary
//! directory, `pg_ctl start` on a free loopback port, a new database per caller.
//!
//! [`TestCluster::shared`] starts one cluster per process (a test binary) on first use and
//! stops it when the process exits; [`TestCluster::database`] makes a fresh database in it.
//! A test that needs PostgreSQL and cannot start it fails with the reason: it never skips.
//!
//! The server binaries are looked for in `HODEI_PG_BIN`, then in Debian's
//! `/usr/lib/postgresql/<version>/bin` (newest first), then on `PATH`. PostgreSQL refuses to
//! run as root: as root, the cluster runs as the `postgres` system user (Debian's package
//! creates it). The cluster is tuned for throwaway use (`fsync=off`): never for real data.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering};

/// The password of the cluster's `postgres` user (the cluster listens on loopback only).
pub const PASSWORD: &str = "hodei-test";

/// A running throwaway cluster.
#[derive(Debug)]
pub struct TestCluster {
    dir: PathBuf,
    bin: PathBuf,
    port: u16,
    /// The system user the server runs as, when this process is root.
    run_as: Option<(u32, u32)>,
}

static SHARED: OnceLock<Result<TestCluster, String>> = OnceLock::new();

extern "C" fn stop_shared() {
    if let Some(Ok(cluster)) = SHARED.get() {
        cluster.stop();
    }
}

impl TestCluster {
    /// The cluster of this process, started on first use and stopped at exit.
    ///
    /// # Panics
    /// When no cluster can be started: with what was tried and what PostgreSQL said.
    pub fn shared() -> &'static TestCluster {
        let cluster = SHARED.get_or_init(|| {
            let cluster = TestCluster::start();
            if cluster.is_ok() {
                // SAFETY: registers a plain function with no arguments to run at exit.
                unsafe { libc::atexit(stop_shared) };
            }
            cluster
        });
        match cluster {
            Ok(cluster) => cluster,
            Err(reason) => panic!(
                "this test needs PostgreSQL and cannot start it: {reason}\n\
                 (install Debian's `postgresql` package, or set HODEI_PG_BIN to the directory \
                 of initdb and pg_ctl)"
            ),
        }
    }

    /// Starts a new cluster in a temporary directory, tuned for tests (no fsync).
    ///
    /// # Errors
    /// What failed, with PostgreSQL's own words.
    pub fn start() -> Result<TestCluster, String> {
        TestCluster::start_with(false)
    }

    /// Starts a new cluster with PostgreSQL's durable defaults (fsync, synchronous commit,
    /// full-page writes): for benchmarks whose figures must mean durable writes.
    ///
    /// # Errors
    /// What failed, with PostgreSQL's own words.
    pub fn start_durable() -> Result<TestCluster, String> {
        TestCluster::start_with(true)
    }

    fn start_with(durable: bool) -> Result<TestCluster, String> {
        let bin = find_bin()?;
        let run_as = run_as()?;
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let dir = std::env::temp_dir().join(format!(
            "hodei-pg-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
        let pwfile = dir.join("pwfile");
        std::fs::write(&pwfile, PASSWORD)
            .map_err(|e| format!("cannot write {}: {e}", pwfile.display()))?;
        if let Some((uid, gid)) = run_as {
            chown_all(&dir, uid, gid)?;
        }
        let port = free_port()?;
        let mut cluster = TestCluster {
            dir,
            bin,
            port,
            run_as,
        };
        let data = cluster.data_dir();
        cluster.run(
            "initdb",
            &[
                "-D",
                &data.to_string_lossy(),
                "-U",
                "postgres",
                "--auth=scram-sha-256",
                &format!("--pwfile={}", pwfile.display()),
                "--encoding=UTF8",
                "--locale=C",
                "--no-sync",
            ],
        )?;
        let tuning = match durable {
            true => "",
            false => " -c fsync=off -c synchronous_commit=off -c full_page_writes=off",
        };
        let options = format!(
            "-p {port} -k {} -c listen_addresses=127.0.0.1 -c max_connections=300{tuning}",
            cluster.dir.display()
        );
        let started = cluster.run(
            "pg_ctl",
            &[
                "-D",
                &data.to_string_lossy(),
                "-o",
                &options,
                "-l",
                &cluster.dir.join("server.log").to_string_lossy(),
                "-w",
                "-t",
                "60",
                "start",
            ],
        );
        if let Err(err) = started {
            let log = std::fs::read_to_string(cluster.dir.join("server.log")).unwrap_or_default();
            cluster.port = 0;
            return Err(format!("{err}\nserver log:\n{log}"));
        }
        Ok(cluster)
    }

    fn data_dir(&self) -> PathBuf {
        self.dir.join("data")
    }

    /// The loopback port it listens on.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The URL of database `name` as the `postgres` user.
    pub fn url(&self, name: &str) -> String {
        format!(
            "postgres://postgres:{PASSWORD}@127.0.0.1:{}/{name}",
            self.port
        )
    }

    /// A new, empty database; answers its URL.
    ///
    /// # Panics
    /// When the database cannot be created.
    pub fn database(&self) -> String {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let name = format!(
            "hodei_{}_{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let created = self.run(
            "createdb",
            &[
                "-h",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-U",
                "postgres",
                &name,
            ],
        );
        if let Err(err) = created {
            panic!("cannot create a PostgreSQL database for a test: {err}");
        }
        self.url(&name)
    }

    /// Runs `sql` with `psql` on the database at `url`; answers what it printed (unaligned,
    /// tuples only).
    ///
    /// # Errors
    /// What `psql` said when it failed.
    pub fn psql(&self, url: &str, sql: &str) -> Result<String, String> {
        let output = self.run("psql", &[url, "-v", "ON_ERROR_STOP=1", "-tA", "-c", sql])?;
        Ok(String::from_utf8_lossy(&output.stdout).trim().to_owned())
    }

    /// Stops the server at once and removes its directory. Idempotent.
    pub fn stop(&self) {
        if self.port != 0 {
            let _ = self.run(
                "pg_ctl",
                &[
                    "-D",
                    &self.data_dir().to_string_lossy(),
                    "-m",
                    "immediate",
                    "-w",
                    "stop",
                ],
            );
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }

    /// Runs one of the server's programs, as the cluster's user.
    fn run(&self, program: &str, args: &[&str]) -> Result<Output, String> {
        use std::os::unix::process::CommandExt;
        let path = self.bin.join(program);
        let mut command = Command::new(&path);
        command
            .args(args)
            .env("PGPASSWORD", PASSWORD)
            .current_dir(&self.dir);
        if let Some((uid, gid)) = self.run_as {
            command.uid(uid).gid(gid);
        }
        let output = command
            .output()
            .map_err(|e| format!("cannot run {}: {e}", path.display()))?;
        if !output.status.success() {
            return Err(format!(
                "{} {} failed ({}): {}{}",
                path.display(),
                args.join(" "),
                output.status,
                String::from_utf8_lossy(&output.stdout),
                String::from_utf8_lossy(&output.stderr)
            ));
        }
        Ok(output)
    }
}

impl Drop for TestCluster {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The raw commit rate of the database at `url`: `transactions` one-row INSERTs, each its own
/// transaction, from `parallel` connections at once; answers commits per second. The baseline
/// that benchmarks print beside the figures of the PostgreSQL store.
///
/// # Errors
/// What the database said.
pub async fn commit_rate(url: &str, transactions: usize, parallel: usize) -> Result<f64, String> {
    use sqlx::postgres::PgPoolOptions;
    let pool = PgPoolOptions::new()
        .max_connections(u32::try_from(parallel.max(1)).unwrap_or(1))
        .connect(url)
        .await
        .map_err(|e| e.to_string())?;
    sqlx::query("CREATE TABLE IF NOT EXISTS commit_baseline (id BIGSERIAL PRIMARY KEY, at BIGINT)")
        .execute(&pool)
        .await
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..parallel.max(1) {
        let pool = pool.clone();
        let each = transactions / parallel.max(1);
        tasks.push(tokio::spawn(async move {
            for i in 0..each {
                sqlx::query("INSERT INTO commit_baseline (at) VALUES ($1)")
                    .bind(i as i64)
                    .execute(&pool)
                    .await
                    .map_err(|e| e.to_string())?;
            }
            Ok::<_, String>(each)
        }));
    }
    let mut done = 0;
    for task in tasks {
        done += task.await.map_err(|e| e.to_string())??;
    }
    let rate = done as f64 / started.elapsed().as_secs_f64();
    pool.close().await;
    Ok(rate)
}

/// The directory of `initdb` and `pg_ctl`.
fn find_bin() -> Result<PathBuf, String> {
    if let Ok(dir) = std::env::var("HODEI_PG_BIN") {
        return Ok(PathBuf::from(dir));
    }
    let mut versions: Vec<(u32, PathBuf)> = std::fs::read_dir("/usr/lib/postgresql")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|entry| {
            let version = entry.file_name().to_string_lossy().parse::<u32>().ok()?;
            let bin = entry.path().join("bin");
            bin.join("initdb").exists().then_some((version, bin))
        })
        .collect();
    versions.sort();
    if let Some((_, bin)) = versions.pop() {
        return Ok(bin);
    }
    std::env::var_os("PATH")
        .into_iter()
        .flat_map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .find(|dir| dir.join("initdb").exists() && dir.join("pg_ctl").exists())
        .ok_or_else(|| {
            "no initdb found (in HODEI_PG_BIN, /usr/lib/postgresql/*/bin or PATH)".to_owned()
        })
}

/// As root: the uid and gid of the `postgres` user; otherwise this process's own user.
fn run_as() -> Result<Option<(u32, u32)>, String> {
    // SAFETY: getuid has no preconditions.
    if unsafe { libc::getuid() } != 0 {
        return Ok(None);
    }
    let name = c"postgres";
    // SAFETY: getpwnam reads a static entry; its fields are copied out before any other call.
    let entry = unsafe { libc::getpwnam(name.as_ptr()) };
    if entry.is_null() {
        return Err(
            "running as root, and there is no `postgres` user to run PostgreSQL as".to_owned(),
        );
    }
    // SAFETY: `entry` is non-null and points to a valid passwd entry.
    let (uid, gid) = unsafe { ((*entry).pw_uid, (*entry).pw_gid) };
    Ok(Some((uid, gid)))
}

fn chown_all(dir: &Path, uid: u32, gid: u32) -> Result<(), String> {
    for path in std::iter::once(dir.to_path_buf()).chain(
        std::fs::read_dir(dir)
            .map_err(|e| format!("cannot list {}: {e}", dir.display()))?
            .flatten()
            .map(|entry| entry.path()),
    ) {
        std::os::unix::fs::chown(&path, Some(uid), Some(gid))
            .map_err(|e| format!("cannot give {} to the postgres user: {e}", path.display()))?;
    }
    Ok(())
}

fn free_port() -> Result<u16, String> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .map(|addr| addr.port())
        .map_err(|e| format!("no free loopback port: {e}"))
}
