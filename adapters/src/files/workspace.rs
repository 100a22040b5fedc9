//! Copying files out of and into a workspace that is a directory of this machine (the local
//! provider's, and the Docker provider's, which its containers mount): the providers'
//! `copy_out` and `copy_in`.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use hodei_domain::forge::glob_match;

/// Whether the workspace path `path` (segments joined by `/`) is taken by `pattern`: the
/// pattern matches it, or one of its directories.
pub fn is_taken(pattern: &str, path: &str) -> bool {
    let pattern = pattern.trim_end_matches('/');
    let pattern = pattern.strip_prefix("./").unwrap_or(pattern);
    if glob_match(pattern, path) {
        return true;
    }
    path.match_indices('/')
        .any(|(at, _)| glob_match(pattern, &path[..at]))
}

/// A regular file under a directory.
pub struct Found {
    /// Its path from the directory, segments joined by `/`.
    pub rel: String,
    pub path: PathBuf,
    pub size: u64,
}

/// The regular files under `root`, sorted by relative path; nothing when `root` is missing.
/// Symbolic links are skipped, never followed.
pub fn files_in(root: &Path) -> io::Result<Vec<Found>> {
    let mut found = Vec::new();
    let mut stack = vec![(root.to_path_buf(), String::new())];
    while let Some((dir, prefix)) = stack.pop() {
        let entries = match fs::read_dir(&dir) {
            Ok(entries) => entries,
            Err(err) if err.kind() == io::ErrorKind::NotFound => continue,
            Err(err) => return Err(err),
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name().to_string_lossy().into_owned();
            let rel = match prefix.is_empty() {
                true => name,
                false => format!("{prefix}/{name}"),
            };
            let kind = entry.file_type()?;
            if kind.is_dir() {
                stack.push((entry.path(), rel));
            } else if kind.is_file() {
                let size = entry.metadata()?.len();
                found.push(Found {
                    rel,
                    path: entry.path(),
                    size,
                });
            }
        }
    }
    found.sort_by(|a, b| a.rel.cmp(&b.rel));
    Ok(found)
}

/// Copies the regular files under `root` that one of `patterns` takes into `into`, at the same
/// relative paths; answers those paths, sorted. Symbolic links are skipped.
pub fn copy_matching(root: &Path, patterns: &[String], into: &Path) -> io::Result<Vec<String>> {
    let mut taken = Vec::new();
    for file in files_in(root)? {
        if patterns.iter().any(|p| is_taken(p, &file.rel)) {
            let to = into.join(&file.rel);
            if let Some(parent) = to.parent() {
                fs::create_dir_all(parent)?;
            }
            fs::copy(&file.path, &to)?;
            taken.push(file.rel);
        }
    }
    Ok(taken)
}

/// Copies every file under `from` into `root`, at the same relative paths, replacing files of
/// the same path.
pub fn copy_tree(from: &Path, root: &Path) -> io::Result<()> {
    let mut stack: Vec<(PathBuf, PathBuf)> = vec![(from.to_path_buf(), root.to_path_buf())];
    while let Some((src, dst)) = stack.pop() {
        fs::create_dir_all(&dst)?;
        for entry in fs::read_dir(&src)? {
            let entry = entry?;
            let kind = entry.file_type()?;
            let to = dst.join(entry.file_name());
            if kind.is_dir() {
                stack.push((entry.path(), to));
            } else if kind.is_file() {
                if to.is_dir() {
                    fs::remove_dir_all(&to)?;
                }
                fs::copy(entry.path(), &to)?;
            }
        }
    }
    Ok(())
}

fn failed(
    provider: &'static str,
    what: String,
    err: io::Error,
) -> hodei_domain::ports::ProviderError {
    hodei_domain::ports::ProviderError::Other {
        provider,
        reason: format!("{what}: {err}"),
        cause: hodei_domain::ports::Cause::of(err),
    }
}

/// [`copy_matching`] off the async threads, as a provider's `copy_out` of the workspace `dir`.
pub async fn copy_out_of(
    dir: PathBuf,
    patterns: Vec<String>,
    into: PathBuf,
    provider: &'static str,
) -> Result<Vec<String>, hodei_domain::ports::ProviderError> {
    tokio::task::spawn_blocking(move || {
        copy_matching(&dir, &patterns, &into).map_err(|err| {
            failed(
                provider,
                format!("cannot copy files out of {}", dir.display()),
                err,
            )
        })
    })
    .await
    .map_err(|err| {
        failed(
            provider,
            "copying files out of a workspace stopped".into(),
            io::Error::other(err),
        )
    })?
}

/// [`copy_tree`] off the async threads, as a provider's `copy_in` to the workspace `dir`.
pub async fn copy_into(
    from: PathBuf,
    dir: PathBuf,
    provider: &'static str,
) -> Result<(), hodei_domain::ports::ProviderError> {
    tokio::task::spawn_blocking(move || {
        copy_tree(&from, &dir).map_err(|err| {
            failed(
                provider,
                format!("cannot copy files into {}", dir.display()),
                err,
            )
        })
    })
    .await
    .map_err(|err| {
        failed(
            provider,
            "copying files into a workspace stopped".into(),
            io::Error::other(err),
        )
    })?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pattern_takes_matching_files_and_everything_under_matching_directories() {
        let cases = [
            ("dist", "dist/app.js", true),
            ("dist/", "dist/a/b.css", true),
            ("./dist", "dist/app.js", true),
            ("dist", "distant.txt", false),
            ("reports/*.xml", "reports/junit.xml", true),
            ("reports/*.xml", "reports/sub/junit.xml", false),
            ("**/*.xml", "reports/sub/junit.xml", true),
            ("target/debug/web", "target/debug/web", true),
            ("target/debug/web", "target/debug/webby", false),
        ];
        for (pattern, path, taken) in cases {
            assert_eq!(is_taken(pattern, path), taken, "{pattern} {path}");
        }
    }

    #[test]
    fn copy_matching_copies_the_taken_files_and_copy_tree_puts_them_back() {
        let ws = tempfile::tempdir().unwrap();
        fs::create_dir_all(ws.path().join("dist/css")).unwrap();
        fs::write(ws.path().join("dist/app.js"), "js").unwrap();
        fs::write(ws.path().join("dist/css/a.css"), "css").unwrap();
        fs::write(ws.path().join("README"), "no").unwrap();
        std::os::unix::fs::symlink("/etc/passwd", ws.path().join("dist/link")).unwrap();
        let out = tempfile::tempdir().unwrap();
        let taken = copy_matching(ws.path(), &["dist".into()], out.path()).unwrap();
        assert_eq!(taken, ["dist/app.js", "dist/css/a.css"]);
        assert!(!out.path().join("README").exists());
        let other = tempfile::tempdir().unwrap();
        fs::create_dir_all(other.path().join("dist")).unwrap();
        fs::write(other.path().join("dist/app.js"), "old").unwrap();
        copy_tree(out.path(), other.path()).unwrap();
        assert_eq!(
            fs::read_to_string(other.path().join("dist/app.js")).unwrap(),
            "js"
        );
        assert_eq!(
            fs::read_to_string(other.path().join("dist/css/a.css")).unwrap(),
            "css"
        );
    }
}
