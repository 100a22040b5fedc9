//! A job's workspace from a mirror: the repository at the run's commit, shallow by default.

use std::path::Path;

use hodei_domain::ports::{Checkout, MirrorError};

use super::git;

/// Fills the empty directory `dest` with `checkout.commit` of the mirror at `mirror`: a new
/// repository whose history is the commit's last `depth` commits (all of them without a
/// depth), checked out detached, with its submodules when asked. `origin` is set to
/// `origin_url` (without credentials), for steps that want to fetch more themselves.
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
    git(
        repo,
        "check out",
        Some(dest),
        &["init", "--quiet", &dest_text],
        &[],
    )
    .await?;
    let source = format!("file://{}", mirror.display());
    let depth = checkout.depth.map(|d| format!("--depth={d}"));
    let mut fetch = vec!["fetch", "--quiet", "--no-tags", "--no-write-fetch-head"];
    if let Some(depth) = &depth {
        fetch.push(depth);
    }
    let refspec = format!("{}:refs/hodei/checkout", checkout.commit);
    fetch.extend([source.as_str(), refspec.as_str()]);
    git(
        repo,
        "fetch the commit from the mirror",
        Some(dest),
        &fetch,
        &[],
    )
    .await?;
    git(
        repo,
        "check out the commit",
        Some(dest),
        &["checkout", "--quiet", "--detach", &checkout.commit],
        &[],
    )
    .await?;
    git(
        repo,
        "check out",
        Some(dest),
        &["update-ref", "-d", "refs/hodei/checkout"],
        &[],
    )
    .await?;
    if let Some(url) = origin_url {
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
