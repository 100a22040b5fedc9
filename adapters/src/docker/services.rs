//! A job's services: containers started on the job's network before its first step, reachable
//! from the steps by their service names (network aliases), and waited for until ready.
//!
//! ## Readiness
//! A service is ready when its image declares a health check and the engine reports it
//! `healthy`; else, when it declares `ports`, when each accepts a TCP connection on the
//! container's address on the job network (checked from Hodei's host: on Linux the host
//! reaches the bridge networks' addresses; a Hodei that runs inside a container of another
//! network does not, see `docs/docker.md`); else as soon as it runs. A service that stops, or
//! whose health check reports `unhealthy`, or that is not ready in time fails the set-up with
//! its last lines of output.
//!
//! ## Logs
//! A service's output stays in the engine until `tear_down`; read it with
//! [`DockerProvider::service_logs`](super::DockerProvider::service_logs).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bollard::Docker;
use bollard::models::{ContainerInspectResponse, HealthStatusEnum};
use hodei_domain::model::{Name, Service};
use tokio::net::TcpStream;
use tokio::time::Instant;

use super::convert::{self, JobKey};
use super::error::DockerError;
use super::{engine, logs};

/// How often readiness is checked.
const POLL: Duration = Duration::from_millis(100);
/// How long one TCP connection attempt may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How many lines of a failed service's output its error quotes.
const TAIL_LINES: u32 = 20;

/// Starts the job's services on `network` (an id), then waits until each is ready, at most
/// `ready_timeout` for all of them.
pub async fn start(
    docker: &Docker,
    instance: &str,
    key: JobKey,
    services: &[(Name, Service)],
    network: &str,
    ready_timeout: Duration,
) -> Result<(), DockerError> {
    let mut started = Vec::with_capacity(services.len());
    for (name, service) in services {
        let body = convert::service_container(instance, key, name, service, network)?;
        let container_name = convert::service_name(instance, key, name);
        let id = engine::run(docker, &container_name, body)
            .await
            .map_err(|err| not_ready(name, service, format!("cannot start: {err}")))?;
        tracing::debug!(job_id = %key.job, service = %name, container = %id, "Started a service.");
        started.push((name, service, id));
    }
    let deadline = Instant::now() + ready_timeout;
    for (name, service, id) in started {
        wait_ready(docker, name, service, &id, deadline, ready_timeout).await?;
    }
    Ok(())
}

/// How one readiness check of a service came out; the texts say what is missing or wrong.
enum Check {
    Ready,
    Waiting(String),
    Failed(String),
}

async fn wait_ready(
    docker: &Docker,
    name: &Name,
    service: &Service,
    id: &str,
    deadline: Instant,
    ready_timeout: Duration,
) -> Result<(), DockerError> {
    loop {
        let record = engine::inspect(docker, id).await?;
        let problem = match check(&record, &service.ports).await {
            Check::Ready => return Ok(()),
            Check::Failed(problem) => problem,
            Check::Waiting(what) if Instant::now() >= deadline => format!(
                "is not ready after {} s ({what})",
                ready_timeout.as_secs_f32()
            ),
            Check::Waiting(_) => {
                tokio::time::sleep(POLL).await;
                continue;
            }
        };
        let output = match logs::read(docker, id, Some(TAIL_LINES)).await {
            Ok(bytes) if bytes.is_empty() => "no output".to_owned(),
            Ok(bytes) => format!(
                "its last output:\n{}",
                String::from_utf8_lossy(&bytes).trim_end()
            ),
            Err(err) => format!("its output cannot be read: {err}"),
        };
        return Err(not_ready(name, service, format!("{problem}; {output}")));
    }
}

async fn check(record: &ContainerInspectResponse, ports: &[u16]) -> Check {
    let state = record.state.clone().unwrap_or_default();
    if state.running != Some(true) {
        return Check::Failed(format!(
            "stopped with exit code {} before it was ready",
            state.exit_code.unwrap_or(-1)
        ));
    }
    if let Some(status) = state.health.and_then(|health| health.status) {
        return match status {
            HealthStatusEnum::HEALTHY => Check::Ready,
            HealthStatusEnum::UNHEALTHY => {
                Check::Failed("reports `unhealthy` from its image's health check".to_owned())
            }
            other => Check::Waiting(format!("its health check reports `{other}`")),
        };
    }
    if ports.is_empty() {
        return Check::Ready;
    }
    let Some(address) = address(record) else {
        return Check::Waiting("it has no address on the job network yet".to_owned());
    };
    for &port in ports {
        let target = SocketAddr::new(address, port);
        let connected = tokio::time::timeout(CONNECT_TIMEOUT, TcpStream::connect(target)).await;
        if !matches!(connected, Ok(Ok(_))) {
            return Check::Waiting(format!("port {port} at {address} accepts no connection"));
        }
    }
    Check::Ready
}

/// The container's address on its (only) network.
fn address(record: &ContainerInspectResponse) -> Option<IpAddr> {
    let networks = record.network_settings.as_ref()?.networks.as_ref()?;
    networks
        .values()
        .filter_map(|endpoint| endpoint.ip_address.as_deref())
        .find_map(|ip| ip.parse().ok())
}

fn not_ready(name: &Name, service: &Service, problem: String) -> DockerError {
    DockerError::ServiceNotReady {
        service: name.as_str().to_owned(),
        image: service.image.as_str().to_owned(),
        problem,
    }
}
