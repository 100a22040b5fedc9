//! A job's workspace from a mirror: the repository at the run's commit, shallow by default.

use std::path::Path;

use hodei_domain::ports::{Checkout, MirrorError};

use super::git;

/// Fills the empty directory `dest` with `checkout.commit` of the mirror at `mirror`: a new
/// repository whose history is the commit's last `depth` commits (all of them without a
/// depth), checked out detached, with its submodules when asked. `origin` is the mirror (for
/// depths of 1 and all), or `origin_url` (without credentials) when given.
pub async fn check_out(
    mirror: &Path,
    checkout: &Checkout,
    dest: &Path,
    origin_url: Option<&str>,
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
        // packing, no copying), and a depth of 1 is then a shallow boundary at the commit.
        None | Some(1) => {
            git(
                repo,
                "clone the mirror",
                None,
                &[
                    "clone",
                    "--quiet",
                    "--local",
                    "--no-checkout",
                    &mirror_text,
                    &dest_text,
                ],
                &[],
            )
            .await?;
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
    check_out(&mirror, checkout, dir, None).await
}
