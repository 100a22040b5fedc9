//! The code of scheduled runs: the head of a repository's default branch, fetched into this
//! machine's mirror when a tick fires ([`Heads`]).

use std::sync::Arc;

use hodei_domain::ports::{
    BoxFuture, Head, HeadError, Heads, MirrorSource, Mirrors, RepoStore, RunFilter, SecretScope,
    SecretStore, Store,
};

use super::{GitMirrors, git};

/// The branch a repository's scheduled runs take when no webhook named its default one.
const FALLBACK_BRANCH: &str = "main";
/// How many of a pipeline's latest runs are looked through for the one a webhook started.
const LOOK_BACK: u32 = 50;

/// Heads of the registered repositories' default branches, from their mirrors.
pub struct RepoHeads {
    pub store: Arc<dyn Store>,
    pub repos: Arc<dyn RepoStore>,
    pub secrets: Arc<dyn SecretStore>,
    pub mirrors: Arc<GitMirrors>,
}

impl Heads for RepoHeads {
    fn head<'a>(&'a self, pipeline: &'a str) -> BoxFuture<'a, Result<Option<Head>, HeadError>> {
        Box::pin(async move {
            let filter = RunFilter {
                pipeline: Some(pipeline.to_owned()),
                ..RunFilter::default()
            };
            let runs = self.store.runs(&filter, None, LOOK_BACK).await?;
            let Some(latest) = runs
                .iter()
                .find(|r| r.inputs.repository().is_some() && !r.inputs.commit.is_empty())
            else {
                return Ok(None);
            };
            let inputs = &latest.inputs;
            let name = inputs.repository.as_str();
            let Some(repo) = self.repos.repository(name).await? else {
                return Ok(None);
            };
            let credentials = match &repo.credentials {
                Some(secret) => {
                    let scope = [SecretScope::Repository(repo.name.clone())];
                    let value = self.secrets.get(&scope, secret).await?;
                    Some(value.ok_or_else(|| HeadError::MissingCredentials {
                        repository: repo.name.clone(),
                        secret: secret.clone(),
                    })?)
                }
                None => None,
            };
            let branch = match inputs.default_branch.as_str() {
                "" => FALLBACK_BRANCH.to_owned(),
                branch => branch.to_owned(),
            };
            let source = MirrorSource {
                repository: repo.name.clone(),
                forge: repo.forge,
                url: repo.clone_url.clone(),
                credentials,
            };
            let refname = format!("refs/heads/{branch}");
            self.mirrors
                .fetch(&source, std::slice::from_ref(&refname))
                .await?;
            let commit = git(
                name,
                "read the head of the default branch",
                Some(&self.mirrors.path(name)),
                &["rev-parse", "--verify", &format!("{refname}^{{commit}}")],
                &[],
            )
            .await?;
            Ok(Some(Head {
                repository: repo.name,
                branch,
                commit: String::from_utf8_lossy(&commit).trim().to_owned(),
                server_url: inputs.server_url.clone(),
            }))
        })
    }
}
