//! The few engine calls the provider makes, each with its failure named: create and start a
//! container (replacing a leftover of the same name), kill, inspect, and remove the containers
//! and networks that carry given labels.

use std::collections::HashMap;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, ContainerInspectResponse, ContainerSummary, Network};
use bollard::query_parameters::{
    CreateContainerOptions, KillContainerOptions, ListContainersOptions, ListNetworksOptions,
    RemoveContainerOptions,
};

use super::convert::label_filter;
use super::error::{DockerError, engine};

/// Creates the container `name` and starts it; returns its id. A container of the same name
/// (a leftover of an earlier life, which carries our labels since the name has our instance)
/// is removed first.
pub async fn run(
    docker: &Docker,
    name: &str,
    body: ContainerCreateBody,
) -> Result<String, DockerError> {
    let options = || CreateContainerOptions {
        name: Some(name.to_owned()),
        ..Default::default()
    };
    let action = || format!("create the container {name}");
    let created = match docker.create_container(Some(options()), body.clone()).await {
        Err(err) => {
            let err = DockerError::engine(action(), err);
            if !err.is_conflict() {
                return Err(err);
            }
            tracing::info!(container = name, "Replacing a leftover container.");
            remove(docker, name).await?;
            engine(docker.create_container(Some(options()), body).await, action)?
        }
        Ok(created) => created,
    };
    if let Err(err) = docker.start_container(&created.id, None).await {
        let err = DockerError::engine(format!("start the container {name}"), err);
        // Best effort: the caller reports the start's failure, not this one's.
        let _ = remove(docker, &created.id).await;
        return Err(err);
    }
    Ok(created.id)
}

/// Kills a container with `SIGKILL`; a container that is gone or already stopped is fine.
pub async fn kill(docker: &Docker, container: &str) -> Result<(), DockerError> {
    let options = KillContainerOptions {
        signal: "KILL".to_owned(),
    };
    match docker.kill_container(container, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let err = DockerError::engine(format!("kill the container {container}"), err);
            // 404: gone; 409: not running.
            if err.is_not_found() || err.is_conflict() {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// Removes a container, killing it first if it runs; a container that is gone is fine.
pub async fn remove(docker: &Docker, container: &str) -> Result<(), DockerError> {
    let options = RemoveContainerOptions {
        force: true,
        v: true,
        ..Default::default()
    };
    match docker.remove_container(container, Some(options)).await {
        Ok(()) => Ok(()),
        Err(err) => {
            let err = DockerError::engine(format!("remove the container {container}"), err);
            // 404: gone; 409: its removal is already under way.
            if err.is_not_found() || err.is_conflict() {
                Ok(())
            } else {
                Err(err)
            }
        }
    }
}

/// The engine's record of a container.
pub async fn inspect(
    docker: &Docker,
    container: &str,
) -> Result<ContainerInspectResponse, DockerError> {
    engine(docker.inspect_container(container, None).await, || {
        format!("inspect the container {container}")
    })
}

/// Every container, running or not, that carries all of `labels`.
pub async fn containers(
    docker: &Docker,
    labels: &HashMap<String, String>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let options = ListContainersOptions {
        all: true,
        filters: Some(label_filter(labels)),
        ..Default::default()
    };
    engine(docker.list_containers(Some(options)).await, || {
        "list the containers".to_owned()
    })
}

/// Every network that carries all of `labels`.
pub async fn networks(
    docker: &Docker,
    labels: &HashMap<String, String>,
) -> Result<Vec<Network>, DockerError> {
    let options = ListNetworksOptions {
        filters: Some(label_filter(labels)),
    };
    engine(docker.list_networks(Some(options)).await, || {
        "list the networks".to_owned()
    })
}

/// Removes every container, then every network, that carries all of `labels`; returns the
/// containers removed, as they were listed.
pub async fn remove_labelled(
    docker: &Docker,
    labels: &HashMap<String, String>,
) -> Result<Vec<ContainerSummary>, DockerError> {
    let found = containers(docker, labels).await?;
    for container in &found {
        if let Some(id) = &container.id {
            remove(docker, id).await?;
        }
    }
    for network in networks(docker, labels).await? {
        let Some(id) = network.id else { continue };
        if let Err(err) = docker.remove_network(&id).await {
            let err = DockerError::engine(format!("remove the network {id}"), err);
            if !err.is_not_found() {
                return Err(err);
            }
        }
    }
    Ok(found)
}
