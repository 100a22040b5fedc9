//! The files of jobs on an agent: caches are kept on the agent's own disk (a cache belongs to
//! the machine that fills it); artifacts are refused with a clear error, since the server,
//! which lists and gives them out, cannot reach the agent's disk.

use std::path::{Path, PathBuf};

use hodei_adapters::files::DiskFiles;
use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{Artifact, BoxFuture, CacheHit, CacheScope, FileError, FileStore};

/// Caches on the agent's disk; no artifacts.
pub struct AgentFiles(pub DiskFiles);

fn on_agents(what: &str) -> FileError {
    FileError::Unsupported {
        what: format!(
            "{what} on an agent: artifacts are kept by jobs on the server's own worker only for now (run this job there with `runs_on`)"
        ),
    }
}

impl FileStore for AgentFiles {
    fn scratch(&self) -> Result<PathBuf, FileError> {
        self.0.scratch()
    }

    fn discard(&self, dir: &Path) {
        self.0.discard(dir)
    }

    fn keep_artifacts<'a>(
        &'a self,
        _: RunId,
        _: JobId,
        _: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>> {
        self.0.discard(dir);
        Box::pin(async { Err(on_agents("cannot keep artifacts")) })
    }

    fn artifacts(&self, _: RunId) -> BoxFuture<'_, Result<Vec<Artifact>, FileError>> {
        Box::pin(async { Ok(Vec::new()) })
    }

    fn artifact_file(&self, _: RunId, _: JobId, _: &str) -> Option<PathBuf> {
        None
    }

    fn carry_artifacts<'a>(
        &'a self,
        _: (RunId, JobId),
        _: (RunId, JobId),
    ) -> BoxFuture<'a, Result<(), FileError>> {
        Box::pin(async { Ok(()) })
    }

    fn stage_artifacts<'a>(
        &'a self,
        _: RunId,
        _: &'a [JobId],
        _: &'a Path,
    ) -> BoxFuture<'a, Result<usize, FileError>> {
        Box::pin(async { Err(on_agents("cannot fetch the needed jobs' artifacts")) })
    }

    fn restore_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        prefixes: &'a [String],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Option<CacheHit>, FileError>> {
        self.0.restore_cache(scope, key, prefixes, into)
    }

    fn save_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<u64, FileError>> {
        self.0.save_cache(scope, key, dir)
    }
}
