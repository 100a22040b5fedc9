//! The files of an attempt beyond its steps: before the steps, the artifacts of the jobs it
//! needs and its cache are restored into the workspace; after them, on success, its
//! artifacts are kept and its cache is saved. Each move goes through a scratch directory of
//! the [`FileStore`](hodei_domain::ports::FileStore) and the provider's `copy_out` / `copy_in`,
//! so it works wherever the workspace is. Every outcome is a `[hodei]` line in the job's log.
//!
//! Failures: an artifact that cannot be kept (a limit, the disk) fails the job; a restore or a
//! cache that fails is noted and the job goes on (a cache is an optimisation, and a step that
//! needs a missing artifact fails on its own).

use std::path::Path;

use hodei_domain::cache_key::{KeyContext, hashed_files, render};
use hodei_domain::engine::CacheDef;
use hodei_domain::ports::{FileError, Workspace};

use super::attempt::AttemptTask;
use super::step::Outcome;

/// What the restore before the steps found, for the save after them.
#[derive(Debug, Default)]
pub(super) struct Restored {
    /// The cache key rendered before the steps; `None` when the attempt resumed after a
    /// crash (rendered again at the save).
    key: Option<String>,
    /// Whether an entry was found under that very key (then nothing is saved).
    exact_hit: bool,
}

/// Restores the artifacts of the needed jobs, then the cache, into the workspace.
pub(super) async fn before_steps(task: &AttemptTask, workspace: &Workspace) -> Restored {
    let files = &task.def.files;
    if !files.needs.is_empty()
        && let Err(err) = restore_artifacts(task, workspace).await
    {
        task.note(format!(
            "cannot restore the artifacts of the jobs this one needs: {err}"
        ));
    }
    let Some(cache) = &files.cache else {
        return Restored::default();
    };
    match restore_cache(task, workspace, cache).await {
        Ok(restored) => restored,
        Err(err) => {
            task.note(format!("cannot restore the cache: {err}"));
            Restored::default()
        }
    }
}

/// After the steps, on success: keeps the artifacts and saves the cache. `Err` with the
/// reason when the artifacts could not be kept: the job fails.
pub(super) async fn after_steps(
    task: &AttemptTask,
    workspace: &Workspace,
    outcome: &Outcome,
    restored: Restored,
) -> Result<(), String> {
    if *outcome != Outcome::Succeeded {
        return Ok(());
    }
    let files = &task.def.files;
    if !files.artifacts.is_empty()
        && let Err(err) = keep_artifacts(task, workspace).await
    {
        let message = format!("cannot keep the job's artifacts: {err}");
        task.note(message.clone());
        return Err(message);
    }
    if let Some(cache) = &files.cache
        && !restored.exact_hit
        && let Err(err) = save_cache(task, workspace, cache, restored.key).await
    {
        task.note(format!("cannot save the cache: {err}"));
    }
    Ok(())
}

/// Work on a scratch directory of the file store, removed at the end whatever happens.
async fn with_scratch<T, F>(
    task: &AttemptTask,
    work: impl FnOnce(std::path::PathBuf) -> F,
) -> Result<T, String>
where
    F: Future<Output = Result<T, String>>,
{
    let store = task.ports.files.clone();
    let dir = store.scratch().map_err(|err| err.to_string())?;
    let result = work(dir.clone()).await;
    store.discard(&dir);
    result
}

async fn restore_artifacts(task: &AttemptTask, workspace: &Workspace) -> Result<(), String> {
    let def = &task.def;
    with_scratch(task, |dir| async move {
        let count = task
            .ports
            .files
            .stage_artifacts(def.run, &def.files.needs, &dir)
            .await
            .map_err(|err| err.to_string())?;
        if count > 0 {
            task.ports
                .provider
                .copy_in(workspace, &dir)
                .await
                .map_err(|err| err.to_string())?;
            task.note(format!(
                "restored {count} artifact file(s) of the jobs this one needs"
            ));
        }
        Ok(())
    })
    .await
}

async fn keep_artifacts(task: &AttemptTask, workspace: &Workspace) -> Result<(), String> {
    let def = &task.def;
    let store = task.ports.files.clone();
    let dir = store.scratch().map_err(|err| err.to_string())?;
    let copied = task
        .ports
        .provider
        .copy_out(workspace, &def.files.artifacts, &dir)
        .await;
    let paths = match copied {
        Ok(paths) => paths,
        Err(err) => {
            store.discard(&dir);
            return Err(err.to_string());
        }
    };
    if paths.is_empty() {
        store.discard(&dir);
        task.note(format!(
            "no file matched the job's artifacts ({})",
            def.files.artifacts.join(", ")
        ));
        return Ok(());
    }
    // The store consumes the directory, kept or not.
    let kept = store
        .keep_artifacts(def.run, def.spec.job, &def.spec.name, &dir)
        .await
        .map_err(|err: FileError| err.to_string())?;
    let bytes: u64 = kept.iter().map(|a| a.size).sum();
    task.note(format!(
        "kept {} artifact file(s), {bytes} bytes",
        kept.len()
    ));
    Ok(())
}

/// The cache key and its fallbacks, with the files they hash read from the workspace.
async fn render_keys(
    task: &AttemptTask,
    workspace: &Workspace,
    cache: &CacheDef,
) -> Result<(String, Vec<String>), String> {
    let mut files = hashed_files(&cache.key);
    for fallback in &cache.fallback {
        files.extend(hashed_files(fallback));
    }
    let mut cx: KeyContext = cache.context.clone();
    if !files.is_empty() {
        cx.hashes = with_scratch(task, |dir| async move {
            task.ports
                .provider
                .copy_out(workspace, &files, &dir)
                .await
                .map_err(|err| err.to_string())?;
            Ok(files
                .iter()
                .filter_map(|file| {
                    let path = dir.join(file);
                    path.is_file()
                        .then(|| Some((file.clone(), digest(&path)?)))?
                })
                .collect())
        })
        .await?;
    }
    let key = render(&cache.key, &cx);
    let prefixes = cache
        .fallback
        .iter()
        .map(|parts| render(parts, &cx))
        .collect();
    Ok((key, prefixes))
}

/// A short digest of a file: the first 16 hex digits of its SHA-256 (as `sha256sum` prints).
fn digest(path: &Path) -> Option<String> {
    use sha2::Digest;
    let bytes = std::fs::read(path).ok()?;
    let digest = sha2::Sha256::digest(&bytes);
    Some(digest.iter().take(8).map(|b| format!("{b:02x}")).collect())
}

async fn restore_cache(
    task: &AttemptTask,
    workspace: &Workspace,
    cache: &CacheDef,
) -> Result<Restored, String> {
    let (key, prefixes) = render_keys(task, workspace, cache).await?;
    let hit = with_scratch(task, |dir| {
        let (key, prefixes) = (key.clone(), prefixes.clone());
        async move {
            let hit = task
                .ports
                .files
                .restore_cache(&cache.scope, &key, &prefixes, &dir)
                .await
                .map_err(|err| err.to_string())?;
            if hit.is_some() {
                task.ports
                    .provider
                    .copy_in(workspace, &dir)
                    .await
                    .map_err(|err| err.to_string())?;
            }
            Ok(hit)
        }
    })
    .await?;
    let exact_hit = match &hit {
        Some(hit) => {
            let from = match (hit.key == key, hit.branch == cache.scope.branch) {
                (true, true) => String::new(),
                (true, false) => format!(" (saved on branch `{}`)", hit.branch),
                (false, _) => format!(" from `{}` on branch `{}`", hit.key, hit.branch),
            };
            task.note(format!("cache `{key}` restored{from}, {} bytes", hit.size));
            hit.key == key && hit.branch == cache.scope.branch
        }
        None => {
            task.note(format!("cache `{key}` missed"));
            false
        }
    };
    Ok(Restored {
        key: Some(key),
        exact_hit,
    })
}

async fn save_cache(
    task: &AttemptTask,
    workspace: &Workspace,
    cache: &CacheDef,
    key: Option<String>,
) -> Result<(), String> {
    let key = match key {
        Some(key) => key,
        None => render_keys(task, workspace, cache).await?.0,
    };
    let store = task.ports.files.clone();
    let dir = store.scratch().map_err(|err| err.to_string())?;
    if let Err(err) = task
        .ports
        .provider
        .copy_out(workspace, &cache.paths, &dir)
        .await
    {
        store.discard(&dir);
        return Err(err.to_string());
    }
    // The store consumes the directory, saved or not.
    let size = store
        .save_cache(&cache.scope, &key, &dir)
        .await
        .map_err(|err| err.to_string())?;
    task.note(format!("cache `{key}` saved, {size} bytes"));
    Ok(())
}
