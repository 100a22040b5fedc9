//! Images by pull policy: `never` uses the image on this machine or fails, `if-not-present`
//! (the default) pulls it when it is missing, `always` pulls it every time (and fails when the
//! registry cannot be reached, even with a copy on this machine, so that a job never runs an
//! image older than the user asked for).

use bollard::Docker;
use bollard::query_parameters::CreateImageOptions;
use futures_util::StreamExt;
use hodei_domain::model::PullPolicy;

use super::error::DockerError;

/// Makes `image` present on the engine as `policy` says.
pub async fn ensure(docker: &Docker, image: &str, policy: PullPolicy) -> Result<(), DockerError> {
    match policy {
        PullPolicy::Always => pull(docker, image).await,
        PullPolicy::Never | PullPolicy::IfNotPresent => match docker.inspect_image(image).await {
            Ok(_) => Ok(()),
            Err(err) => {
                let err = DockerError::engine(format!("inspect the image `{image}`"), err);
                match (err.is_not_found(), policy) {
                    (true, PullPolicy::Never) => Err(DockerError::ImageAbsent {
                        image: image.to_owned(),
                    }),
                    (true, _) => pull(docker, image).await,
                    (false, _) => Err(err),
                }
            }
        },
    }
}

/// Pulls `image` from its registry, to the end of the engine's progress stream.
async fn pull(docker: &Docker, image: &str) -> Result<(), DockerError> {
    let (from_image, tag) = pull_reference(image);
    let options = CreateImageOptions {
        from_image: Some(from_image.to_owned()),
        tag: Some(tag.to_owned()),
        ..Default::default()
    };
    tracing::info!(image, "Pulling an image.");
    let mut progress = docker.create_image(Some(options), None, None);
    while let Some(item) = progress.next().await {
        if let Err(err) = item {
            return Err(
                match DockerError::engine(format!("pull the image `{image}`"), err) {
                    DockerError::Refused { message, .. } => DockerError::PullFailed {
                        image: image.to_owned(),
                        reason: message,
                    },
                    other => other,
                },
            );
        }
    }
    Ok(())
}

/// The repository and the tag (or digest) the engine's pull takes: without either, the engine
/// would pull every tag of the repository, so an untagged reference means `latest`.
pub fn pull_reference(image: &str) -> (&str, &str) {
    if let Some((name, digest)) = image.split_once('@') {
        return (name, digest);
    }
    let last_slash = image.rfind('/').map_or(0, |i| i + 1);
    match image[last_slash..].rfind(':') {
        Some(colon) => {
            let colon = last_slash + colon;
            (&image[..colon], &image[colon + 1..])
        }
        None => (image, "latest"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn references_split_into_repository_and_tag() {
        let cases = [
            ("busybox", ("busybox", "latest")),
            ("rust:1", ("rust", "1")),
            ("library/postgres:16.2", ("library/postgres", "16.2")),
            (
                "registry.local:5000/team/app",
                ("registry.local:5000/team/app", "latest"),
            ),
            (
                "registry.local:5000/team/app:2.1",
                ("registry.local:5000/team/app", "2.1"),
            ),
            (
                "registry.local:5000/team/app@sha256:abc",
                ("registry.local:5000/team/app", "sha256:abc"),
            ),
        ];
        for (image, expected) in cases {
            assert_eq!(pull_reference(image), expected, "{image}");
        }
    }
}
