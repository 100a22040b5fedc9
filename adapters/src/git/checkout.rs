//! A job's workspace from a mirror: the repository at the run's commit, shallow by default.

use std::path::Path;

use hodei_domain::ports::{Checkout, MirrorError};

use super::git;

/// How a workspace's clone holds the objects of the mirror it comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Objects {
    /// Hard links to the mirror's files: nothing is copied. Only for a workspace whose steps
    /// run as Hodei's own user, who could write to the mirror anyway.
    Linked,
    /// Copies: what runs in the workspace as another user or in a container cannot change the
    /// mirror (and so the checkouts of later jobs) through a shared file.
    Copied,
}

/// Fills the empty directory `dest` with `checkout.commit` of the mirror at `mirror`: a new
/// repository whose history is the commit's last `depth` commits (all of them without a
/// depth), checked out detached, with its submodules when asked. `origin` is the mirror (for
/// depths of 1 and all), or `origin_url` (without credentials) when given.
pub async fn check_out(
    mirror: &Path,
    checkout: &Checkout,
    dest: &Path,
    origin_url: Option<&str>,
    objects: Objects,
) -> Result<(), MirrorError> {
    let repo = checkout.repository.as_str();
    if !mirror.join("HEAD").exists() {
        return Err(MirrorError::Git {
            repository: repo.to_owned(),
            doing: "check out",
            reason: format!(
                "this machine has no mirror of it at {} (it is made when a webhook of the repository is received)",
                mirror.display()
            ),
        });
    }
    let dest_text = dest.to_string_lossy().into_owned();
    let mirror_text = mirror.to_string_lossy().into_owned();
    match checkout.depth {
        // The common cases: a local clone shares the mirror's objects through hard links (no
        // packing, no copying) or copies them as files, and a depth of 1 is then a shallow
        // boundary at the commit.
        None | Some(1) => {
            let mut args = vec!["clone", "--quiet", "--local", "--no-checkout"];
            if objects == Objects::Copied {
                args.push("--no-hardlinks");
            }
            args.extend([mirror_text.as_str(), dest_text.as_str()]);
            git(repo, "clone the mirror", None, &args, &[]).await?;
            if checkout.depth == Some(1) {
                std::fs::write(
                    dest.join(".git").join("shallow"),
                    format!("{}\n", checkout.commit),
                )
                .map_err(|err| MirrorError::Git {
                    repository: repo.to_owned(),
                    doing: "check out",
                    reason: format!("cannot mark the clone shallow: {err}"),
                })?;
            }
        }
        // A deeper history: fetched through git's transport, which cuts it at that depth.
        Some(depth) => {
            git(
                repo,
                "check out",
                Some(dest),
                &["init", "--quiet", &dest_text],
                &[],
            )
            .await?;
            let source = format!("file://{}", mirror.display());
            let depth = format!("--depth={depth}");
            let fetch = [
                "fetch",
                "--quiet",
                "--no-tags",
                &depth,
                &source,
                &checkout.commit,
            ];
            git(
                repo,
                "fetch the commit from the mirror",
                Some(dest),
                &fetch,
                &[],
            )
            .await?;
        }
    }
    git(
        repo,
        "check out the commit",
        Some(dest),
        &["checkout", "--quiet", "--detach", &checkout.commit],
        &[],
    )
    .await?;
    if let Some(url) = origin_url {
        // A local clone names the mirror `origin`; the given URL replaces it.
        let _ = git(
            repo,
            "check out",
            Some(dest),
            &["remote", "remove", "origin"],
            &[],
        )
        .await;
        git(
            repo,
            "check out",
            Some(dest),
            &["remote", "add", "origin", url],
            &[],
        )
        .await?;
    }
    if checkout.submodules {
        let depth = checkout.depth.map(|d| format!("--depth={d}"));
        let mut update = vec!["submodule", "update", "--init", "--recursive", "--quiet"];
        if let Some(depth) = &depth {
            update.push(depth);
        }
        git(repo, "check out the submodules", Some(dest), &update, &[]).await?;
    }
    Ok(())
}

/// Fills a new, empty workspace `dir` with what `job` checks out, if anything, from the mirrors
/// under `mirrors` (`<repository>.git`).
pub async fn fill_workspace(
    mirrors: Option<&Path>,
    job: &hodei_domain::ports::JobSpec,
    dir: &Path,
    objects: Objects,
) -> Result<(), MirrorError> {
    let Some(checkout) = &job.checkout else {
        return Ok(());
    };
    let Some(mirrors) = mirrors else {
        return Err(MirrorError::Git {
            repository: checkout.repository.clone(),
            doing: "check out",
            reason: "this provider was started without a mirrors directory".into(),
        });
    };
    let mirror = mirrors.join(format!("{}.git", checkout.repository));
    check_out(&mirror, checkout, dir, None, objects).await
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::MetadataExt;
    use std::path::Path;

    use super::*;

    fn run_git(dir: &Path, args: &[&str]) -> String {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=T", "-c", "user.email=t@example.invalid"])
            .args(args)
            .current_dir(dir)
            .env("GIT_CONFIG_NOSYSTEM", "1")
            .env("GIT_CONFIG_GLOBAL", "/dev/null")
            .output()
            .expect("git runs: install Debian's git");
        assert!(out.status.success(), "git {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).trim().to_owned()
    }

    /// The most links any file under `.git/objects` of `repo` has.
    fn most_links(repo: &Path) -> u64 {
        crate::files::workspace::files_in(&repo.join(".git/objects"))
            .unwrap()
            .iter()
            .map(|f| std::fs::metadata(&f.path).unwrap().nlink())
            .max()
            .unwrap_or(0)
    }

    #[tokio::test]
    async fn a_workspace_for_another_user_or_a_container_shares_no_file_with_the_mirror() {
        let tmp = tempfile::tempdir().unwrap();
        let work = tmp.path().join("work");
        std::fs::create_dir_all(&work).unwrap();
        run_git(&work, &["init", "--quiet"]);
        std::fs::write(work.join("a.txt"), "a\n").unwrap();
        run_git(&work, &["add", "a.txt"]);
        run_git(&work, &["commit", "--quiet", "-m", "a"]);
        let commit = run_git(&work, &["rev-parse", "HEAD"]);
        let mirror = tmp.path().join("app.git");
        run_git(
            tmp.path(),
            &["clone", "--quiet", "--bare", "work", "app.git"],
        );
        let checkout = Checkout {
            repository: "app".into(),
            commit: commit.clone(),
            depth: Some(1),
            submodules: false,
        };
        for (objects, shared) in [(Objects::Linked, true), (Objects::Copied, false)] {
            let dest = tmp.path().join(format!("{objects:?}"));
            std::fs::create_dir_all(&dest).unwrap();
            check_out(&mirror, &checkout, &dest, None, objects)
                .await
                .unwrap();
            assert_eq!(run_git(&dest, &["rev-parse", "HEAD"]), commit);
            assert_eq!(std::fs::read_to_string(dest.join("a.txt")).unwrap(), "a\n");
            assert_eq!(most_links(&dest) > 1, shared, "{objects:?}");
        }
    }
}
