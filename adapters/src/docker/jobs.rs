//! The workspace of a job attempt: set up (image, directory, network, services) and torn
//! down, found by its labels.

use std::io::ErrorKind;
use std::path::Path;
use std::sync::Arc;

use hodei_domain::ports::{JobSpec, Workspace};

use super::convert::{self, JobKey, JobSettings};
use super::error::{self, DockerError};
use super::{DockerProvider, engine, images, services};

impl DockerProvider {
    pub(super) async fn set_up_job(&self, job: &JobSpec) -> Result<Workspace, DockerError> {
        let key = JobKey {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
        };
        let dir = convert::workspace_dir(&self.base, key);
        // Refuse a job without image before touching anything.
        JobSettings::of(job, String::new(), None)?;
        self.forget(key);
        let leftovers =
            engine::remove_labelled(&self.docker, &convert::job_labels(&self.instance, key))
                .await?;
        if !leftovers.is_empty() {
            tracing::info!(
                job_id = %job.job, count = leftovers.len(),
                "Removed leftover containers of the job."
            );
        }
        if let Some(image) = &job.image {
            images::ensure(&self.docker, image.as_str(), job.pull).await?;
        }
        for (_, service) in &job.services {
            images::ensure(&self.docker, service.image.as_str(), job.pull).await?;
        }
        make_workspace(&dir, job.user.is_some()).await?;
        // The workspace is mounted into containers: the mirror's files are never shared with
        // them.
        let objects = crate::git::Objects::Copied;
        crate::git::fill_workspace(self.mirrors.as_deref(), job, &dir, objects).await?;
        let network = if job.services.is_empty() {
            None
        } else {
            let request = convert::network(&self.instance, key);
            let created = error::engine(self.docker.create_network(request).await, || {
                format!("create the network of {key}")
            })?;
            Some(created.id)
        };
        let settings = JobSettings::of(job, dir.to_string_lossy().into_owned(), network.clone())?;
        self.jobs().insert(key, Arc::new(settings));
        if let Some(network) = &network {
            services::start(
                &self.docker,
                &self.instance,
                key,
                &job.services,
                network,
                self.ready_timeout,
            )
            .await?;
        }
        Ok(Workspace {
            run: job.run,
            job: job.job,
            attempt: job.attempt,
            id: dir.to_string_lossy().into_owned(),
        })
    }

    /// Forgets a job attempt's steps (stopping their readers) and settings.
    pub(super) fn forget(&self, key: JobKey) {
        self.jobs().remove(&key);
        self.registry().retain(|(step, _), entry| {
            let ours = step.job == key;
            if ours {
                entry.stop_following();
            }
            !ours
        });
    }

    pub(super) async fn tear_down_job(&self, key: JobKey) -> Result<(), DockerError> {
        self.forget(key);
        engine::remove_labelled(&self.docker, &convert::job_labels(&self.instance, key)).await?;
        remove_workspace(&convert::workspace_dir(&self.base, key)).await
    }
}

/// A fresh workspace directory; writable by any user when the job runs as a chosen user (the
/// directory is the job's own, under the provider's base).
async fn make_workspace(dir: &Path, any_user: bool) -> Result<(), DockerError> {
    let fail = |action, source| DockerError::Workspace {
        action,
        path: dir.to_path_buf(),
        source,
    };
    remove_workspace(dir).await?;
    tokio::fs::create_dir_all(dir)
        .await
        .map_err(|err| fail("create", err))?;
    if any_user {
        use std::os::unix::fs::PermissionsExt;
        tokio::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o777))
            .await
            .map_err(|err| fail("open to the job's user", err))?;
    }
    Ok(())
}

pub(super) async fn remove_workspace(dir: &Path) -> Result<(), DockerError> {
    match tokio::fs::remove_dir_all(dir).await {
        Ok(()) => Ok(()),
        Err(err) if matches!(err.kind(), ErrorKind::NotFound | ErrorKind::NotADirectory) => Ok(()),
        Err(err) => Err(DockerError::Workspace {
            action: "remove",
            path: dir.to_path_buf(),
            source: err,
        }),
    }
}
