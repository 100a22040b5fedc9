//! The files of a job on an agent. Caches are kept on the agent's own disk (a cache belongs to
//! the machine that fills it). Artifacts go to the server, which keeps them with the run as
//! those of jobs on its own worker: when the job's steps succeeded they are packed into a tar
//! and uploaded under the job's token and lease, before the attempt's last report; the
//! artifacts of the jobs it needs come down the same way before its steps.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use hodei_adapters::files::DiskFiles;
use hodei_adapters::files::archive;
use hodei_api::client::{Client, ClientError};
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{Artifact, BoxFuture, CacheHit, CacheScope, FileError, FileStore};

/// How long a transfer of artifacts is tried again while the server is away or busy.
const RETRY_FOR: Duration = Duration::from_secs(300);

/// The files of one job attempt on the agent.
pub struct AgentFiles {
    /// Caches, and scratch directories.
    pub disk: DiskFiles,
    /// Presents the job token of the claim.
    pub client: Client,
    pub job: JobId,
    pub epoch: u64,
}

fn io_error(what: &str, err: impl std::fmt::Display) -> FileError {
    FileError::Io {
        what: what.to_owned(),
        reason: err.to_string(),
        cause: None,
    }
}

/// What the server said, without the request line when it answered a problem.
fn refused(doing: &str, err: &ClientError) -> FileError {
    let reason = match err {
        ClientError::Rejected { problem, .. } => problem.detail.clone(),
        err => err.to_string(),
    };
    FileError::Remote {
        what: format!("{doing}: {reason}"),
    }
}

/// Runs `call` until it succeeds, fails for good, or the server has been away for
/// [`RETRY_FOR`].
async fn with_retries<T, F>(doing: &str, mut call: impl FnMut() -> F) -> Result<T, FileError>
where
    F: Future<Output = Result<T, ClientError>>,
{
    let since = Instant::now();
    let mut wait = Duration::from_millis(200);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(err) if err.is_retryable() && since.elapsed() < RETRY_FOR => {
                tracing::warn!(error = %err, "Cannot {doing} yet; trying again.");
                tokio::time::sleep(wait).await;
                wait = (wait * 2).min(Duration::from_secs(5));
            }
            Err(err) => return Err(refused(&format!("cannot {doing}"), &err)),
        }
    }
}

async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| io_error(what, err))?
}

impl AgentFiles {
    async fn upload(&self, dir: &Path) -> Result<Vec<Artifact>, FileError> {
        let scratch = self.disk.scratch()?;
        let tar = scratch.join("artifacts.tar");
        let packed = {
            let (dir, tar) = (dir.to_owned(), tar.clone());
            blocking("packing the artifacts", move || {
                archive::pack(&dir, &tar).map_err(|err| io_error("packing the artifacts", err))
            })
            .await
        };
        self.disk.discard(dir);
        let result = match packed {
            Ok(packed) => {
                with_retries("send the artifacts to the server", || {
                    self.client.upload_artifacts(
                        self.job,
                        self.epoch,
                        &tar,
                        packed.files as u64,
                        packed.bytes,
                    )
                })
                .await
            }
            Err(err) => Err(err),
        };
        self.disk.discard(&scratch);
        Ok(result?
            .artifacts
            .into_iter()
            .map(|a| Artifact {
                job: JobId(a.job_id),
                job_name: a.job,
                path: a.path,
                size: a.size,
                sha256: a.sha256,
            })
            .collect())
    }

    async fn download(&self, needs: &[JobId], into: &Path) -> Result<usize, FileError> {
        let scratch = self.disk.scratch()?;
        let tar = scratch.join("needs.tar");
        let result = async {
            with_retries("fetch the needed jobs' artifacts from the server", || {
                let tar = tar.clone();
                async move {
                    // A new file at each try: what an interrupted one wrote is dropped.
                    let mut out =
                        std::fs::File::create(&tar).map_err(|err| ClientError::Unexpected {
                            method: "GET",
                            path: tar.display().to_string(),
                            status: 0,
                            reason: format!("cannot write the archive: {err}"),
                        })?;
                    self.client
                        .needed_artifacts(self.job, self.epoch, needs, &mut out)
                        .await
                }
            })
            .await?;
            let (tar, into) = (tar.clone(), into.to_owned());
            blocking("unpacking the needed jobs' artifacts", move || {
                archive::unpack(&tar, &into, u64::MAX)
                    .map(|unpacked| unpacked.files)
                    .map_err(|err| io_error("unpacking the needed jobs' artifacts", err))
            })
            .await
        }
        .await;
        self.disk.discard(&scratch);
        result
    }
}

fn the_servers(what: &str) -> FileError {
    FileError::Unsupported {
        what: format!("{what}: the server does that, not an agent"),
    }
}

impl FileStore for AgentFiles {
    fn scratch(&self) -> Result<PathBuf, FileError> {
        self.disk.scratch()
    }

    fn discard(&self, dir: &Path) {
        self.disk.discard(dir)
    }

    fn keep_artifacts<'a>(
        &'a self,
        _: RunId,
        _: JobId,
        _: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>> {
        Box::pin(self.upload(dir))
    }

    fn artifacts(&self, _: RunId) -> BoxFuture<'_, Result<Vec<Artifact>, FileError>> {
        Box::pin(async { Err(the_servers("listing artifacts")) })
    }

    fn artifact_file(&self, _: RunId, _: JobId, _: &str) -> Option<PathBuf> {
        None
    }

    fn carry_artifacts<'a>(
        &'a self,
        _: (RunId, JobId),
        _: (RunId, JobId),
    ) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(async { Err(the_servers("carrying artifacts over")) })
    }

    fn stage_artifacts<'a>(
        &'a self,
        _: RunId,
        jobs: &'a [JobId],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<usize, FileError>> {
        Box::pin(self.download(jobs, into))
    }

    fn receive_artifacts<'a>(
        &'a self,
        _: RunId,
        _: JobId,
        _: &'a str,
        _: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>> {
        Box::pin(async { Err(the_servers("receiving artifacts")) })
    }

    fn pack_artifacts<'a>(
        &'a self,
        _: RunId,
        _: &'a [JobId],
        _: &'a Path,
    ) -> BoxFuture<'a, Result<usize, FileError>> {
        Box::pin(async { Err(the_servers("packing artifacts")) })
    }

    fn restore_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        prefixes: &'a [String],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Option<CacheHit>, FileError>> {
        self.disk.restore_cache(scope, key, prefixes, into)
    }

    fn save_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<u64, FileError>> {
        self.disk.save_cache(scope, key, dir)
    }
}
