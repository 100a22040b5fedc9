//! Artifacts and caches on the server's disk ([`DiskFiles`], the `FileStore` port), and the
//! copying of files out of and into workspaces that are directories of this machine
//! ([`workspace`], for the local and Docker providers).
//!
//! ## Layout, under the files directory (`DATA/files`)
//! ```text
//! scratch/<n>/                          what callers fill before keeping or saving it
//! artifacts/run-<R>/job-<J>/files/...   a job's artifacts, at their workspace paths
//! artifacts/run-<R>/job-<J>/manifest.json   its job name, and each file's size and SHA-256
//! caches/<pipeline>/<branch>/<sha256(key)>.tar   one cache entry (a tar of its paths)
//! caches/<pipeline>/<branch>/<sha256(key)>.key   the entry's key, for prefix matches
//! ```
//! Pipeline and branch names are hex-encoded into directory names. Everything is renamed into
//! place from `scratch/` (the same file system): a job's artifacts appear whole or not at all,
//! and two saves of one cache key leave one whole entry (the later rename wins).
//!
//! Artifacts of jobs on agents travel as tar archives ([`archive`]): the server unpacks an
//! agent's upload into `scratch/` and keeps it as above, and packs the artifacts a job on an
//! agent needs.
//!
//! ## Limits
//! [`FileLimits`]: the bytes one job may keep as artifacts, the bytes of one cache entry, and
//! how long artifacts and caches are kept ([`DiskFiles::prune`]).

pub mod archive;
pub mod workspace;

use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime};

use hodei_domain::ids::{JobId, RunId};
use hodei_domain::ports::{Artifact, BoxFuture, CacheHit, CacheScope, Cause, FileError, FileStore};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

/// What the files directory may hold.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileLimits {
    /// The most bytes one job attempt may keep as artifacts (`artifacts_max_job_mib`).
    pub artifacts_per_job: u64,
    /// The most bytes one cache entry may hold (`caches_max_entry_mib`).
    pub cache_entry: u64,
    /// How long a run's artifacts are kept (`artifacts.retention`).
    pub artifact_retention: Duration,
    /// How long a cache entry is kept after it was last saved or restored
    /// (`caches.retention`).
    pub cache_retention: Duration,
}

impl Default for FileLimits {
    fn default() -> FileLimits {
        FileLimits {
            artifacts_per_job: 1 << 30,
            cache_entry: 2 << 30,
            artifact_retention: Duration::from_secs(30 * 24 * 3600),
            cache_retention: Duration::from_secs(7 * 24 * 3600),
        }
    }
}

/// Artifacts and caches in a directory of this machine.
#[derive(Clone)]
pub struct DiskFiles {
    inner: Arc<Inner>,
}

struct Inner {
    root: PathBuf,
    limits: FileLimits,
    /// The branch whose caches a job of another branch falls back to.
    default_branch: String,
    next_scratch: AtomicU64,
}

#[derive(Serialize, Deserialize)]
struct Manifest {
    job_name: String,
    files: Vec<ManifestFile>,
}

#[derive(Serialize, Deserialize)]
struct ManifestFile {
    path: String,
    size: u64,
    sha256: String,
}

fn io_error(what: impl Into<String>, err: io::Error) -> FileError {
    FileError::Io {
        what: what.into(),
        reason: err.to_string(),
        cause: Cause::of(err),
    }
}

/// Makes a directory and its missing parents, private to Hodei's user (0700).
fn make_dir(path: &Path) -> io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
}

/// Writes a file of Hodei's own, private to its user (0600).
fn write_private(path: &Path, bytes: &[u8]) -> io::Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(path)?
        .write_all(bytes)
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// SHA-256 of a file, in hex.
pub fn file_sha256(path: &Path) -> io::Result<String> {
    let mut hasher = Sha256::new();
    let mut file = fs::File::open(path)?;
    io::copy(&mut file, &mut hasher)?;
    Ok(hex(&hasher.finalize()))
}

/// The regular files under `dir`, as (relative path with `/`, size), sorted.
fn files_under(dir: &Path) -> io::Result<Vec<(String, u64)>> {
    Ok(workspace::files_in(dir)?
        .into_iter()
        .map(|f| (f.rel, f.size))
        .collect())
}

/// Runs blocking file work off the async threads.
async fn blocking<T: Send + 'static>(
    what: &'static str,
    work: impl FnOnce() -> Result<T, FileError> + Send + 'static,
) -> Result<T, FileError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|err| FileError::Io {
            what: what.into(),
            reason: format!("the file task stopped: {err}"),
            cause: None,
        })?
}

impl DiskFiles {
    /// Artifacts and caches under `root` (created if missing), within `limits`; jobs of other
    /// branches fall back to the caches of `default_branch`.
    pub fn open(
        root: PathBuf,
        limits: FileLimits,
        default_branch: String,
    ) -> Result<DiskFiles, FileError> {
        for dir in ["scratch", "artifacts", "caches"] {
            make_dir(&root.join(dir))
                .map_err(|err| io_error(format!("creating {}", root.join(dir).display()), err))?;
        }
        // Scratch directories of an earlier life are left-overs of interrupted work.
        if let Ok(entries) = fs::read_dir(root.join("scratch")) {
            for entry in entries.flatten() {
                let _ = fs::remove_dir_all(entry.path());
            }
        }
        Ok(DiskFiles {
            inner: Arc::new(Inner {
                root,
                limits,
                default_branch,
                next_scratch: AtomicU64::new(0),
            }),
        })
    }

    /// The directory everything is kept under.
    pub fn root(&self) -> &Path {
        &self.inner.root
    }

    fn job_dir(&self, run: RunId, job: JobId) -> PathBuf {
        self.inner
            .root
            .join("artifacts")
            .join(format!("run-{}", run.0))
            .join(format!("job-{}", job.0))
    }

    fn cache_dir(&self, pipeline: &str, branch: &str) -> PathBuf {
        self.inner
            .root
            .join("caches")
            .join(format!("p{}", hex(pipeline.as_bytes())))
            .join(format!("b{}", hex(branch.as_bytes())))
    }

    fn read_manifest(dir: &Path) -> Option<Manifest> {
        let text = fs::read(dir.join("manifest.json")).ok()?;
        serde_json::from_slice(&text).ok()
    }

    /// Removes the artifacts of runs older than the retention, and the cache entries not saved
    /// or restored within theirs; answers how many of each it removed.
    pub fn prune(&self, now: SystemTime) -> (usize, usize) {
        let limits = self.inner.limits;
        let old = |path: &Path, keep: Duration| {
            fs::metadata(path)
                .and_then(|m| m.modified())
                .is_ok_and(|at| now.duration_since(at).is_ok_and(|age| age > keep))
        };
        let mut runs = 0;
        if let Ok(entries) = fs::read_dir(self.inner.root.join("artifacts")) {
            for entry in entries.flatten() {
                if old(&entry.path(), limits.artifact_retention)
                    && fs::remove_dir_all(entry.path()).is_ok()
                {
                    runs += 1;
                }
            }
        }
        let mut caches = 0;
        let pipelines = fs::read_dir(self.inner.root.join("caches"))
            .into_iter()
            .flatten();
        let branches = pipelines
            .flatten()
            .flat_map(|p| fs::read_dir(p.path()).into_iter().flatten().flatten());
        for branch in branches {
            for entry in fs::read_dir(branch.path()).into_iter().flatten().flatten() {
                let path = entry.path();
                if path.extension().is_some_and(|e| e == "tar")
                    && old(&path, limits.cache_retention)
                {
                    let _ = fs::remove_file(path.with_extension("key"));
                    if fs::remove_file(&path).is_ok() {
                        caches += 1;
                    }
                }
            }
        }
        (runs, caches)
    }

    fn keep(
        &self,
        run: RunId,
        job: JobId,
        job_name: &str,
        dir: &Path,
    ) -> Result<Vec<Artifact>, FileError> {
        let what = format!("keeping the artifacts of job {job}");
        let files = files_under(dir).map_err(|err| io_error(&what, err))?;
        let size: u64 = files.iter().map(|(_, size)| size).sum();
        let limit = self.inner.limits.artifacts_per_job;
        if size > limit {
            self.discard(dir);
            return Err(FileError::TooLarge {
                what: format!("the job's artifacts ({} files)", files.len()),
                size,
                limit,
                setting: "artifacts_max_job_mib",
            });
        }
        let mut kept = Vec::with_capacity(files.len());
        for (path, size) in files {
            let sha256 = file_sha256(&dir.join(&path)).map_err(|err| io_error(&what, err))?;
            kept.push(ManifestFile { path, size, sha256 });
        }
        let manifest = Manifest {
            job_name: job_name.to_owned(),
            files: kept,
        };
        let text = serde_json::to_vec_pretty(&manifest).map_err(|err| FileError::Io {
            what: what.clone(),
            reason: err.to_string(),
            cause: None,
        })?;
        // The scratch directory becomes the job's: files/ plus the manifest, renamed in whole.
        let staged = self.scratch()?;
        fs::rename(dir, staged.join("files")).map_err(|err| io_error(&what, err))?;
        write_private(&staged.join("manifest.json"), &text).map_err(|err| io_error(&what, err))?;
        let target = self.job_dir(run, job);
        if let Some(parent) = target.parent() {
            make_dir(parent).map_err(|err| io_error(&what, err))?;
        }
        // An earlier attempt of the job kept its own: the latest attempt's replace them.
        if target.exists() {
            fs::remove_dir_all(&target).map_err(|err| io_error(&what, err))?;
        }
        fs::rename(&staged, &target).map_err(|err| io_error(&what, err))?;
        Ok(manifest
            .files
            .into_iter()
            .map(|f| Artifact {
                job,
                job_name: manifest.job_name.clone(),
                path: f.path,
                size: f.size,
                sha256: f.sha256,
            })
            .collect())
    }

    fn list(&self, run: RunId) -> Result<Vec<Artifact>, FileError> {
        let dir = self
            .inner
            .root
            .join("artifacts")
            .join(format!("run-{}", run.0));
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(err) => return Err(io_error(format!("listing the artifacts of run {run}"), err)),
        };
        let mut out = Vec::new();
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some(job) = name.strip_prefix("job-").and_then(|n| n.parse().ok()) else {
                continue;
            };
            let Some(manifest) = Self::read_manifest(&entry.path()) else {
                continue;
            };
            out.extend(manifest.files.into_iter().map(|f| Artifact {
                job: JobId(job),
                job_name: manifest.job_name.clone(),
                path: f.path,
                size: f.size,
                sha256: f.sha256,
            }));
        }
        out.sort_by(|a, b| (a.job, &a.path).cmp(&(b.job, &b.path)));
        Ok(out)
    }

    fn carry(&self, from: (RunId, JobId), to: (RunId, JobId)) -> Result<(), FileError> {
        let source = self.job_dir(from.0, from.1);
        if !source.join("manifest.json").is_file() {
            return Ok(());
        }
        let what = format!(
            "carrying the artifacts of job {} over to job {}",
            from.1, to.1
        );
        // Hard links where the file system allows (the files never change), copies elsewhere.
        let staged = self.scratch()?;
        for file in workspace::files_in(&source).map_err(|err| io_error(&what, err))? {
            let target = staged.join(&file.rel);
            if let Some(parent) = target.parent() {
                make_dir(parent).map_err(|err| io_error(&what, err))?;
            }
            fs::hard_link(&file.path, &target)
                .or_else(|_| fs::copy(&file.path, &target).map(drop))
                .map_err(|err| io_error(&what, err))?;
        }
        let target = self.job_dir(to.0, to.1);
        if let Some(parent) = target.parent() {
            make_dir(parent).map_err(|err| io_error(&what, err))?;
        }
        if target.exists() {
            fs::remove_dir_all(&target).map_err(|err| io_error(&what, err))?;
        }
        fs::rename(&staged, &target).map_err(|err| io_error(&what, err))
    }

    fn stage(&self, run: RunId, jobs: &[JobId], into: &Path) -> Result<usize, FileError> {
        let mut count = 0;
        for job in jobs {
            let files = self.job_dir(run, *job).join("files");
            if !files.is_dir() {
                continue;
            }
            workspace::copy_tree(&files, into)
                .map_err(|err| io_error(format!("giving out the artifacts of job {job}"), err))?;
            count += files_under(&files).map(|f| f.len()).unwrap_or(0);
        }
        Ok(count)
    }

    fn receive(
        &self,
        run: RunId,
        job: JobId,
        job_name: &str,
        archive: &Path,
    ) -> Result<Vec<Artifact>, FileError> {
        let dir = self.scratch()?;
        let limit = self.inner.limits.artifacts_per_job;
        let unpacked = archive::unpack(archive, &dir, limit);
        let _ = fs::remove_file(archive);
        match unpacked {
            Ok(_) => self.keep(run, job, job_name, &dir),
            Err(err) => {
                self.discard(&dir);
                Err(match err {
                    archive::Refused::TooLarge { bytes, .. } => FileError::TooLarge {
                        what: "the job's artifacts (at least)".into(),
                        size: bytes,
                        limit,
                        setting: "artifacts_max_job_mib",
                    },
                    archive::Refused::Entry { .. } => FileError::Malformed {
                        what: format!("the artifacts of job {job}: {err}"),
                    },
                    archive::Refused::Io(err) => {
                        io_error(format!("unpacking the artifacts of job {job}"), err)
                    }
                })
            }
        }
    }

    fn pack_staged(&self, run: RunId, jobs: &[JobId], out: &Path) -> Result<usize, FileError> {
        let dir = self.scratch()?;
        let packed = self.stage(run, jobs, &dir).and_then(|_| {
            archive::pack(&dir, out)
                .map_err(|err| io_error(format!("packing the artifacts of run {run}"), err))
        });
        self.discard(&dir);
        Ok(packed?.files)
    }

    fn restore(
        &self,
        scope: &CacheScope,
        key: &str,
        prefixes: &[String],
        into: &Path,
    ) -> Result<Option<CacheHit>, FileError> {
        let default = match scope.default_branch.as_str() {
            "" => self.inner.default_branch.as_str(),
            theirs => theirs,
        };
        let mut branches = vec![scope.branch.as_str()];
        if scope.branch != default {
            branches.push(default);
        }
        let hit = branches.iter().find_map(|branch| {
            let dir = self.cache_dir(&scope.pipeline, branch);
            let exact = dir.join(format!("{}.tar", hex(&Sha256::digest(key.as_bytes()))));
            if exact.is_file() {
                return Some((exact, key.to_owned(), branch.to_string()));
            }
            let keys = Self::keys_in(&dir);
            prefixes.iter().find_map(|prefix| {
                keys.iter()
                    .filter(|(k, _, _)| k.starts_with(prefix.as_str()))
                    .max_by_key(|(_, _, modified)| *modified)
                    .map(|(k, tar, _)| (tar.clone(), k.clone(), branch.to_string()))
            })
        });
        let Some((tar, key, branch)) = hit else {
            return Ok(None);
        };
        let what = format!("restoring the cache `{key}`");
        let file = match fs::File::open(&tar) {
            Ok(file) => file,
            // Pruned meanwhile: a miss.
            Err(err) if err.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(err) => return Err(io_error(&what, err)),
        };
        let size = file.metadata().map(|m| m.len()).unwrap_or(0);
        tar::Archive::new(file)
            .unpack(into)
            .map_err(|err| io_error(&what, err))?;
        // Restored: kept for another retention period.
        let _ = fs::File::options()
            .append(true)
            .open(&tar)
            .and_then(|f| f.set_modified(SystemTime::now()));
        Ok(Some(CacheHit { key, branch, size }))
    }

    /// The keys saved in a branch's cache directory: (key, tar file, last saved or restored).
    fn keys_in(dir: &Path) -> Vec<(String, PathBuf, SystemTime)> {
        let Ok(entries) = fs::read_dir(dir) else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter(|e| e.path().extension().is_some_and(|x| x == "key"))
            .filter_map(|e| {
                let key = fs::read_to_string(e.path()).ok()?;
                let tar = e.path().with_extension("tar");
                let modified = fs::metadata(&tar).and_then(|m| m.modified()).ok()?;
                Some((key, tar, modified))
            })
            .collect()
    }

    fn save(&self, scope: &CacheScope, key: &str, dir: &Path) -> Result<u64, FileError> {
        let what = format!("saving the cache `{key}`");
        let result = (|| {
            let files = files_under(dir).map_err(|err| io_error(&what, err))?;
            let size: u64 = files.iter().map(|(_, size)| size).sum();
            let limit = self.inner.limits.cache_entry;
            if size > limit {
                return Err(FileError::TooLarge {
                    what: format!("the cache entry `{key}` ({} files)", files.len()),
                    size,
                    limit,
                    setting: "caches_max_entry_mib",
                });
            }
            let staged = self.scratch()?;
            let tar_path = staged.join("entry.tar");
            let file = {
                use std::os::unix::fs::OpenOptionsExt;
                fs::OpenOptions::new()
                    .write(true)
                    .create_new(true)
                    .mode(0o600)
                    .open(&tar_path)
                    .map_err(|err| io_error(&what, err))?
            };
            let mut builder = tar::Builder::new(io::BufWriter::new(file));
            builder.follow_symlinks(false);
            builder
                .append_dir_all(".", dir)
                .and_then(|()| builder.into_inner())
                .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                .and_then(|f| f.sync_all())
                .map_err(|err| io_error(&what, err))?;
            let target = self.cache_dir(&scope.pipeline, &scope.branch);
            make_dir(&target).map_err(|err| io_error(&what, err))?;
            let name = hex(&Sha256::digest(key.as_bytes()));
            // The key first: a tar without its key file is found by exact key only.
            let key_tmp = staged.join("entry.key");
            write_private(&key_tmp, key.as_bytes()).map_err(|err| io_error(&what, err))?;
            fs::rename(&key_tmp, target.join(format!("{name}.key")))
                .map_err(|err| io_error(&what, err))?;
            fs::rename(&tar_path, target.join(format!("{name}.tar")))
                .map_err(|err| io_error(&what, err))?;
            self.discard(&staged);
            Ok(size)
        })();
        self.discard(dir);
        result
    }
}

impl FileStore for DiskFiles {
    fn scratch(&self) -> Result<PathBuf, FileError> {
        let n = self.inner.next_scratch.fetch_add(1, Ordering::Relaxed);
        let dir = self
            .inner
            .root
            .join("scratch")
            .join(format!("{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        make_dir(&dir).map_err(|err| io_error(format!("creating {}", dir.display()), err))?;
        Ok(dir)
    }

    fn discard(&self, dir: &Path) {
        if let Err(err) = fs::remove_dir_all(dir)
            && err.kind() != io::ErrorKind::NotFound
        {
            tracing::warn!(path = %dir.display(), error = %err, "Cannot remove a scratch directory.");
        }
    }

    fn keep_artifacts<'a>(
        &'a self,
        run: RunId,
        job: JobId,
        job_name: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>> {
        let (me, name, dir) = (self.clone(), job_name.to_owned(), dir.to_owned());
        Box::pin(blocking("keeping artifacts", move || {
            me.keep(run, job, &name, &dir)
        }))
    }

    fn artifacts(&self, run: RunId) -> BoxFuture<'_, Result<Vec<Artifact>, FileError>> {
        let me = self.clone();
        Box::pin(blocking("listing artifacts", move || me.list(run)))
    }

    fn artifact_file(&self, run: RunId, job: JobId, path: &str) -> Option<PathBuf> {
        let dir = self.job_dir(run, job);
        let manifest = Self::read_manifest(&dir)?;
        manifest
            .files
            .iter()
            .any(|f| f.path == path)
            .then(|| dir.join("files").join(path))
    }

    fn carry_artifacts<'a>(
        &'a self,
        from: (RunId, JobId),
        to: (RunId, JobId),
    ) -> BoxFuture<'a, Result<(), FileError>> {
        let me = self.clone();
        Box::pin(blocking("carrying artifacts over", move || {
            me.carry(from, to)
        }))
    }

    fn stage_artifacts<'a>(
        &'a self,
        run: RunId,
        jobs: &'a [JobId],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<usize, FileError>> {
        let (me, jobs, into) = (self.clone(), jobs.to_vec(), into.to_owned());
        Box::pin(blocking("giving out artifacts", move || {
            me.stage(run, &jobs, &into)
        }))
    }

    fn receive_artifacts<'a>(
        &'a self,
        run: RunId,
        job: JobId,
        job_name: &'a str,
        archive: &'a Path,
    ) -> BoxFuture<'a, Result<Vec<Artifact>, FileError>> {
        let (me, name, archive) = (self.clone(), job_name.to_owned(), archive.to_owned());
        Box::pin(blocking("receiving artifacts", move || {
            me.receive(run, job, &name, &archive)
        }))
    }

    fn pack_artifacts<'a>(
        &'a self,
        run: RunId,
        jobs: &'a [JobId],
        out: &'a Path,
    ) -> BoxFuture<'a, Result<usize, FileError>> {
        let (me, jobs, out) = (self.clone(), jobs.to_vec(), out.to_owned());
        Box::pin(blocking("packing artifacts", move || {
            me.pack_staged(run, &jobs, &out)
        }))
    }

    fn restore_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        prefixes: &'a [String],
        into: &'a Path,
    ) -> BoxFuture<'a, Result<Option<CacheHit>, FileError>> {
        let (me, scope, key, prefixes, into) = (
            self.clone(),
            scope.clone(),
            key.to_owned(),
            prefixes.to_vec(),
            into.to_owned(),
        );
        Box::pin(blocking("restoring a cache", move || {
            me.restore(&scope, &key, &prefixes, &into)
        }))
    }

    fn save_cache<'a>(
        &'a self,
        scope: &'a CacheScope,
        key: &'a str,
        dir: &'a Path,
    ) -> BoxFuture<'a, Result<u64, FileError>> {
        let (me, scope, key, dir) = (self.clone(), scope.clone(), key.to_owned(), dir.to_owned());
        Box::pin(blocking("saving a cache", move || {
            me.save(&scope, &key, &dir)
        }))
    }
}

#[cfg(test)]
mod tests;
